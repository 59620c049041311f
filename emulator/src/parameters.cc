// File: parameters.cc
//
// The neuron parameter table, expanded once from neuron_parameters.def.
#include "hxemu/emulator/parameters.h"

#include <array>

namespace hxemu::emulator {
namespace {

constexpr std::array<NeuronParameterInfo, kNumNeuronParameters> kTable = {{
#define HXEMU_NEURON_PARAMETER(name, kind, min, max, def, unit, doc) \
  {#name, ParameterKind::kind, min, max, def, unit, doc},
#include "hxemu/emulator/neuron_parameters.def"
#undef HXEMU_NEURON_PARAMETER
}};

}  // namespace

absl::Span<const NeuronParameterInfo> NeuronParameterTable() { return kTable; }

std::optional<NeuronParameter> FindNeuronParameter(std::string_view name) {
  // ~70 entries, looked up only while validating: a linear scan is enough.
  for (int i = 0; i < kNumNeuronParameters; ++i) {
    if (kTable[i].name == name) return static_cast<NeuronParameter>(i);
  }
  return std::nullopt;
}

std::string_view ParameterKindName(ParameterKind kind) {
  switch (kind) {
    case ParameterKind::kBool:
      return "bool";
    case ParameterKind::kVoltageDac:
      return "voltage_dac";
    case ParameterKind::kCurrentDac:
      return "current_dac";
    case ParameterKind::kCapacitance:
      return "capacitance";
    case ParameterKind::kCounter:
      return "counter";
    case ParameterKind::kEnum:
      return "enum";
  }
  return "unknown";
}

}  // namespace hxemu::emulator
