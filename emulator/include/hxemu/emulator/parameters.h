// File: hxemu/emulator/parameters.h
//
// The neuron parameter table (neuron_parameters.def) as C++: an enum with one
// entry per parameter, and the metadata (kind, range, default, unit) that
// validation, the server and the clients read.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/types/span.h"

namespace hxemu::emulator {

// What kind of hardware cell a parameter is; decides its transfer function.
enum class ParameterKind {
  kBool,         // a switch, 0 or 1
  kVoltageDac,   // 10-bit CapMem voltage cell, 0..1022
  kCurrentDac,   // 10-bit CapMem current cell, 0..1022
  kCapacitance,  // 6-bit membrane capacitance, 0..63
  kCounter,      // digital counter or address
  kEnum,         // digital selector
};

// One entry per parameter, in table order. kCount is the number of entries.
enum class NeuronParameter : int {
#define HXEMU_NEURON_PARAMETER(name, kind, min, max, def, unit, doc) name,
#include "hxemu/emulator/neuron_parameters.def"
#undef HXEMU_NEURON_PARAMETER
  kCount
};

inline constexpr int kNumNeuronParameters =
    static_cast<int>(NeuronParameter::kCount);

struct NeuronParameterInfo {
  std::string_view name;
  ParameterKind kind;
  int32_t min;
  int32_t max;
  int32_t default_value;
  std::string_view unit;  // unit of the controlled physical quantity
  std::string_view description;
};

// The whole table, indexed by static_cast<int>(NeuronParameter).
absl::Span<const NeuronParameterInfo> NeuronParameterTable();

inline const NeuronParameterInfo& Info(NeuronParameter p) {
  return NeuronParameterTable()[static_cast<int>(p)];
}

// Looks a parameter up by its name ("leak_v_leak"); nullopt if unknown.
std::optional<NeuronParameter> FindNeuronParameter(std::string_view name);

// "bool", "voltage_dac", "current_dac", "capacitance", "counter", "enum".
std::string_view ParameterKindName(ParameterKind kind);

}  // namespace hxemu::emulator
