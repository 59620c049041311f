// File: hxemu/calibration/apply.h
//
// Experiment.initial_config (contract C3): rewrites an experiment so that
// every placed HX neuron carries its circuit's calibrated parameters as
// explicit per-neuron values. The server calls this before a job runs; the
// emulator itself never sees a Calibration.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::calibration {

// Without initial_config: returns the experiment unchanged. With it: for
// every placed HX neuron (placement by emulator::PlaceNeurons, the rule Chip::
// Run uses) the calibrated parameters of its circuit replace the table
// defaults; parameters the population sets explicitly still win; circuits the
// calibration does not cover keep the table defaults. chip_id is set to
// initial_config.chip_id if unset (an explicit other chip is kept). The
// result has no initial_config. Errors: INVALID_ARGUMENT naming the field
// for a malformed calibration ("initial_config.circuits[2].parameters[0]:
// ...") and whatever placement reports.
absl::StatusOr<hxemu::v1::Experiment> ApplyInitialConfig(
    const hxemu::v1::Experiment& experiment);

// Checks a calibration's structure and values (circuit range and
// uniqueness, known parameter names, one value each, in the parameter's
// range). `path` prefixes the error messages, e.g. "initial_config".
absl::Status ValidateCalibration(const hxemu::v1::Calibration& calibration,
                                 absl::string_view path);

}  // namespace hxemu::calibration
