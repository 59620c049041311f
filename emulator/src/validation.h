// File: validation.h
//
// Checks an experiment against the chip's rules and limits and, on success,
// returns what mapping needs: the placement of every on-chip neuron and the
// normalised recording requests. ValidateExperiment (chip.h) is this without
// the result. Internal header.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/emulator/chip_constants.h"
#include "hxemu/v1/experiment.pb.h"
#include "rounding.h"
#include "routing.h"

namespace hxemu::emulator {

// One neuron recorded through the MADC.
struct MadcRecording {
  int population;
  int neuron;
  int circuit;
  hxemu::v1::Observable observable;
};

// One neuron whose spikes are recorded.
struct SpikeRecording {
  int population;
  int neuron;
};

struct MappedExperiment {
  // circuits[p][n]: neuron circuit of neuron n of population p (HX neuron
  // populations only; empty for spike sources).
  std::vector<std::vector<int>> circuits;
  // At most two; in the order they were first requested (= MADC channel
  // order: with two, sample k goes to madc[k % 2]).
  std::vector<MadcRecording> madc;
  // Unique, sorted by (population, neuron).
  std::vector<SpikeRecording> spikes;
  // Recorded duration [8 ns ticks], >= 1.
  int64_t runtime_ticks = 0;
  // CADC read times [ticks of the recorded run], ascending, each in
  // [0, runtime_ticks).
  std::vector<int64_t> cadc_ticks;
  // Expected number of input spikes of all spike sources (Poisson: rate x
  // window x neurons), as checked against max_input_spikes.
  double expected_input_spikes = 0.0;
  // Synapses of every connection (routing.h); never null.
  std::shared_ptr<const Routing> routing;
};

// Validates `experiment` (all rules, all-or-nothing) and places it.
// Error codes: INVALID_ARGUMENT for broken rules, UNIMPLEMENTED for features
// the emulator does not model yet, RESOURCE_EXHAUSTED for `limits`. When
// several rules are broken, INVALID_ARGUMENT wins over UNIMPLEMENTED over
// RESOURCE_EXHAUSTED, then the first in message order. Exception: too many
// spike-source neurons (max_source_neurons) is reported as soon as it is
// found, before anything allocates per neuron.
// `routing_cache`: where the routing of the last network is kept (the
// Chip's), or null to route anew.
absl::StatusOr<MappedExperiment> MapExperiment(
    const hxemu::v1::Experiment& experiment, const ExperimentLimits& limits,
    RoutingCache* routing_cache = nullptr);

// Recorded duration of `runtime_ms` [8 ns ticks] (rounded, at least 1).
int64_t RuntimeTicks(double runtime_ms);

// Time of a spike given in ms [8 ns ticks] (rounded to the nearest tick).
// Inline: the lowering converts every generated input spike (~1 % of a
// benchmark run as a call into validation.cc).
inline int64_t SpikeTick(double time_ms) {
  const double ticks = time_ms * kTicksPerMs;
  // Far beyond any runtime: saturate instead of overflowing llround.
  if (!(ticks < 9e18)) return std::numeric_limits<int64_t>::max();
  return ticks >= 0.0 ? RoundNonNegative(ticks) : std::llround(ticks);
}

// MADC samples (over all traces) of a run of `runtime_ticks`: one every 34 ns.
int64_t EstimatedMadcSamples(int64_t runtime_ticks);

}  // namespace hxemu::emulator
