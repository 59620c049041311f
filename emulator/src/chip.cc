// File: chip.cc
//
// Chip::Run = validate and place (validation.h) -> lower onto this chip
// (network.h) -> emulate (engine.h) -> Result.
#include "hxemu/emulator/chip.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine.h"
#include "network.h"
#include "status_macros.h"
#include "validation.h"

namespace hxemu::emulator {

Chip::Chip(uint32_t chip_id, const ModelOptions& options)
    : id_(chip_id),
      options_(options),
      fixed_pattern_(std::make_unique<FixedPattern>(chip_id, options.mismatch)),
      routing_cache_(std::make_unique<RoutingCache>()) {}

Chip::~Chip() = default;

absl::StatusOr<hxemu::v1::Result> Chip::Run(
    const hxemu::v1::Experiment& experiment, const ExperimentLimits& limits,
    const RunControl& control) {
  if (experiment.has_chip_id() && experiment.chip_id() != id_) {
    return absl::FailedPreconditionError(
        absl::StrCat("chip_id: the experiment asks for chip ",
                     experiment.chip_id(), " but runs on chip ", id_));
  }
  RunPhases phases;
  // Writes the phases done so far to the caller's RunPhases (if any) when
  // Run returns, whichever way.
  const absl::Cleanup report_phases = [&phases, &control] {
    if (control.phases != nullptr) *control.phases = phases;
  };
  using Clock = std::chrono::steady_clock;
  const auto ms_since = [](Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start)
        .count();
  };
  const Clock::time_point map_start = Clock::now();
  HXEMU_ASSIGN_OR_RETURN(
      const MappedExperiment mapped,
      MapExperiment(experiment, limits, routing_cache_.get()));
  phases.map_ms = ms_since(map_start);
  const Clock::time_point lower_start = Clock::now();
  fixed_pattern_->Prepare(mapped);
  HXEMU_ASSIGN_OR_RETURN(
      const Network net,
      LowerNetwork(experiment, mapped, limits, *fixed_pattern_, options_));
  phases.lower_ms = ms_since(lower_start);
  const Clock::time_point emulate_start = Clock::now();

  hxemu::v1::Result result;
  result.set_chip_id(id_);
  result.set_runtime_ms(experiment.runtime_ms());
  for (const hxemu::v1::Population& pop : experiment.populations()) {
    result.add_population_labels(pop.label());
  }
  for (const SpikeRecording& s : mapped.spikes) {
    hxemu::v1::SpikeTrain* train = result.add_spike_trains();
    train->set_population(static_cast<uint32_t>(s.population));
    train->set_neuron(static_cast<uint32_t>(s.neuron));
    // Spike sources have no circuit; 0 is the proto default.
    if (!mapped.circuits[s.population].empty()) {
      train->set_circuit(
          static_cast<uint32_t>(mapped.circuits[s.population][s.neuron]));
    }
  }
  if (!mapped.cadc_ticks.empty()) {
    for (const std::vector<int>& circuits : mapped.circuits) {
      for (int c : circuits) result.add_cadc_circuits(static_cast<uint32_t>(c));
    }
    std::sort(result.mutable_cadc_circuits()->begin(),
              result.mutable_cadc_circuits()->end());
  }
  for (const MadcRecording& m : mapped.madc) {
    hxemu::v1::Trace* trace = result.add_traces();
    trace->set_population(static_cast<uint32_t>(m.population));
    trace->set_neuron(static_cast<uint32_t>(m.neuron));
    trace->set_circuit(static_cast<uint32_t>(m.circuit));
    trace->set_observable(m.observable);
  }
  HXEMU_RETURN_IF_ERROR(Emulate(net, limits, control, result));
  phases.emulate_ms = ms_since(emulate_start);
  return result;
}

bool RetainFreedMemoryForReuse() {
#if defined(__GLIBC__)
  // (Blocks above 32 MiB keep their own mappings: a full-chip job's largest
  // arrays are a few MiB.)
  constexpr int kTrimThresholdBytes = 256 << 20;
  constexpr int kMmapThresholdBytes = 32 << 20;
  return mallopt(M_TRIM_THRESHOLD, kTrimThresholdBytes) == 1 &&
         mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes) == 1;
#else
  return false;
#endif
}

}  // namespace hxemu::emulator
