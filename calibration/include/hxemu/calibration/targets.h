// File: hxemu/calibration/targets.h
//
// The calix spiking-neuron targets (bss2-spec.md §4.2) with their defaults and
// allowed ranges, defined once here. ResolveTargets fills in the defaults of a
// hxemu.v1.CalibrationTargets and checks every range at the API edge.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "hxemu/v1/calibration.pb.h"

namespace hxemu::calibration {

// Every target with a value (calix defaults filled in).
struct ResolvedTargets {
  double leak_cadc = 80.0;            // [CADC LSB], 50..160
  double reset_cadc = 70.0;           // [CADC LSB], 50..160
  double threshold_cadc = 125.0;      // [CADC LSB], 50..220
  double tau_mem_us = 10.0;           // [us hardware], 0.5..60
  double tau_syn_exc_us = 10.0;       // [us hardware], 0.3..30
  double tau_syn_inh_us = 10.0;       // [us hardware], 0.3..30
  int32_t i_synin_gm_exc = 500;       // [CapMem LSB], 30..800
  int32_t i_synin_gm_inh = 500;       // [CapMem LSB], 30..800
  int32_t membrane_capacitance = 63;  // [capacitance LSB], 0..63
  double refractory_time_us = 2.0;    // [us hardware], 0.04..32
  double holdoff_time_us = 0.0;       // [us hardware], 0..4
  int32_t synapse_dac_bias = 600;     // [CapMem LSB], 30..1022
  // COBA (unset = CUBA) [CADC LSB].
  std::optional<double> e_coba_reversal_exc;
  std::optional<double> e_coba_reversal_inh;
  std::optional<double> e_coba_reference_exc;  // 60..160
  std::optional<double> e_coba_reference_inh;  // 60..160
};

// Fills in the calix defaults and checks the ranges. Errors:
// INVALID_ARGUMENT naming the field and its range, e.g.
// "targets.leak: 200 is out of range 50..160 [CADC LSB]"; UNIMPLEMENTED for
// targets the emulator cannot honour (a synapse DAC bias other than 600: the
// emulator has no synapse DAC bias cell). A COBA reference needs its
// reversal potential; it defaults to the midpoint of leak and threshold.
absl::StatusOr<ResolvedTargets> ResolveTargets(
    const hxemu::v1::CalibrationTargets& targets);

// The same targets with every field set (what a Calibration reports and what
// the cache keys on).
hxemu::v1::CalibrationTargets ToProto(const ResolvedTargets& targets);

}  // namespace hxemu::calibration
