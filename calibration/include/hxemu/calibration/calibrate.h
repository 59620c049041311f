// File: hxemu/calibration/calibrate.h
//
// calix-style spiking-neuron calibration of one emulated chip
// (bss2-spec.md §4.1, docs/calibration.md): per-neuron parallel binary
// searches, each measuring the chip only the way calix measures a real one
// (measurement.h). The result holds, per circuit, the raw parameters that
// reach the targets, what was measured with them, and a success flag.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hxemu/calibration/measurement.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/emulator/parameters.h"
#include "hxemu/v1/calibration.pb.h"

namespace hxemu::calibration {

struct CalibrationOptions {
  // Circuits to calibrate (distinct, 0..511), e.g. a few for a quick test;
  // empty = all 512.
  std::vector<uint32_t> circuits;
  // Seed of the first measurement run; later runs count up from it.
  uint64_t seed = 1;
  // Polled between measurements; once true, Calibrate returns CANCELLED.
  const std::atomic<bool>* cancel_requested = nullptr;
};

// Version of the emulated chip model the calibration measures: the project
// version plus a digest of the emulator's model sources (set at configure
// time), so that a cached calibration is never applied to a changed model.
const std::string& EmulatorVersion();

// The parameters a calibration sets on every circuit (the COBA ones stay at
// their defaults in a CUBA calibration).
const std::vector<emulator::NeuronParameter>& CalibratedParameters();

// Calibrates `chip` to `targets`. Errors: INVALID_ARGUMENT / UNIMPLEMENTED
// for bad targets (targets.h) or circuits, CANCELLED, and whatever a
// measurement run returns. Neurons that miss a target are not an error: they
// have success = false, and Calibration.warning says "calibration failed for
// N neurons".
absl::StatusOr<hxemu::v1::Calibration> Calibrate(
    emulator::Chip& chip, const hxemu::v1::CalibrationTargets& targets,
    const CalibrationOptions& options = {});

// Full parameter sets of `circuits` from a calibration (table defaults plus
// the calibrated values; circuits it does not cover keep the defaults).
std::vector<ParameterValues> ConfigsFromCalibration(
    const hxemu::v1::Calibration& calibration,
    const std::vector<uint32_t>& circuits);

struct MeasureOptions {
  // Seed of the first measurement run.
  uint64_t seed = 1000;
  // Also the MADC time-constant fits (two circuits per run, the slow part).
  bool time_constants = true;
};

// Measures `circuits` configured with `configs` (one per circuit) exactly as
// the calibration measures them for `targets` (same protocols and temporary
// settings), e.g. to compare the spread before and after a calibration.
// CircuitMeasurement.synin_* are the raw steps (not matched). Errors as for
// Calibrate.
absl::StatusOr<std::vector<hxemu::v1::CircuitMeasurement>> MeasureCircuits(
    emulator::Chip& chip, const std::vector<uint32_t>& circuits,
    const std::vector<ParameterValues>& configs,
    const hxemu::v1::CalibrationTargets& targets,
    const MeasureOptions& options = {});

}  // namespace hxemu::calibration
