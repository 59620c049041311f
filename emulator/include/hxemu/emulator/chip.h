// File: hxemu/emulator/chip.h
//
// One emulated BrainScaleS-2 (HICANN-X) chip. A Chip is identified by its id,
// which fully determines its fixed-pattern mismatch; it maps a network-level
// hxemu.v1.Experiment onto its circuits, emulates it and reads it out into a
// hxemu.v1.Result.
//
// Thread safety: a Chip runs one experiment at a time (one worker thread per
// chip); different Chip objects are independent and may run in parallel.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::emulator {

class FixedPattern;  // (internal: src/network.h)
class RoutingCache;  // (internal: src/routing.h)

// Limits that the embedding service may tighten (all inclusive).
struct ExperimentLimits {
  // Longest allowed runtime [ms hardware].
  double max_runtime_ms = 10000.0;
  // Most MADC samples a job may record over all traces.
  int64_t max_madc_samples = 64 * 1024 * 1024;
  // Most spike times over all spike-source neurons.
  int64_t max_input_spikes = 16 * 1024 * 1024;
  // Most neurons over all spike-source populations.
  int64_t max_source_neurons = 1024 * 1024;
  // Most recorded output spikes a run may produce (checked while running).
  int64_t max_recorded_spikes = 64 * 1024 * 1024;
  // Most CADC reads (Experiment.cadc.times_ms) per job; each reads every
  // placed circuit.
  int64_t max_cadc_reads = 100000;
};

// Wall time of the phases of one Chip::Run [ms wall]: what a job costs
// besides its emulated time, for benchmarks and the server's metrics.
struct RunPhases {
  // Validation, placement and routing (MapExperiment; a chip reuses its
  // last network's routing).
  double map_ms = 0.0;
  // Lowering onto the chip: fixed-pattern mismatch, the circuits' constants,
  // the synapses, the input spikes' generation and sort.
  double lower_ms = 0.0;
  // Emulation: the 20 us warm-up, the run, the recorded data.
  double emulate_ms = 0.0;
};

// Hooks from the running emulation back to its caller. All may be empty.
struct RunControl {
  // Polled regularly; once true, Run returns CANCELLED promptly.
  const std::atomic<bool>* cancel_requested = nullptr;
  // Called now and then with the emulated time done so far [ms hardware].
  std::function<void(double done_ms)> on_progress;
  // If set, Run writes the wall time of the phases it completed (a phase
  // that failed or did not run keeps 0).
  RunPhases* phases = nullptr;
};

// Checks an experiment against the chip's rules and the limits without
// running it. Errors are INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for limits)
// with a message that names the field, e.g.
// "populations[0].parameters[leak_v_leak].values[3]: 1100 is out of range
// 0..1022".
absl::Status ValidateExperiment(const hxemu::v1::Experiment& experiment,
                                const ExperimentLimits& limits);

// The neuron circuit (AtomicNeuronOnDLS enum, 0..511) of every neuron of
// every population, by the same rule Chip::Run places them: explicit
// `circuits` lists first, then every other HX population takes the lowest
// free circuits in creation order. Spike-source populations get an empty
// vector. Checks only the population rules (INVALID_ARGUMENT naming the
// field, e.g. overlapping circuits or more than 512 neurons), not
// projections, recordings or the runtime.
absl::StatusOr<std::vector<std::vector<uint32_t>>> PlaceNeurons(
    const hxemu::v1::Experiment& experiment);

// Switches of the model's random parts, for tests that compare the emulator
// against a reference integration of the same equations. Production code
// keeps the defaults (a real chip has all of them).
struct ModelOptions {
  // Per-circuit fixed-pattern mismatch and the MADC readout mismatch; off:
  // every circuit has the nominal transfer functions.
  bool mismatch = true;
  // Membrane noise and MADC noise.
  bool noise = true;
  // Free-running start (V uniform between reset and leak); off: every neuron
  // starts the warm-up at its reset potential.
  bool random_start = true;
  // Macro steps for neurons far from threshold (docs/emulator-model.md
  // section 6); off: every neuron steps every 8 ns tick (reference mode).
  bool macro_steps = true;
  // High-accuracy reference (no macro steps): every 8 ns step of every
  // neuron integrated in double-precision ETD2 sub-steps of at most 1 ns,
  // shorter where the exponential term or the drive is fast (rate x
  // sub-step <= 0.02), with the same clocked logic (spikes, refractory
  // counter and reset at tick boundaries). About 500x slower than tick by
  // tick: for judging the faster modes (emulator_bench --reference).
  bool fine_substeps = false;
};

class Chip {
 public:
  explicit Chip(uint32_t chip_id, const ModelOptions& options = {});
  ~Chip();
  Chip(const Chip&) = delete;
  Chip& operator=(const Chip&) = delete;

  uint32_t id() const { return id_; }

  // Validates, maps and emulates `experiment`. Same chip id + same experiment
  // (including its seed) gives a bit-identical result, whatever ran on this
  // Chip before. May be called from several threads at once.
  absl::StatusOr<hxemu::v1::Result> Run(const hxemu::v1::Experiment& experiment,
                                        const ExperimentLimits& limits,
                                        const RunControl& control);

 private:
  uint32_t id_;
  ModelOptions options_;
  // This chip's fixed-pattern mismatch, computed as jobs first need it and
  // kept for the next ones (it depends on the chip id alone).
  std::unique_ptr<FixedPattern> fixed_pattern_;
  // The routing of the last network this chip ran, for the next job of the
  // same network.
  std::unique_ptr<RoutingCache> routing_cache_;
};

// For a process that runs many jobs (the server, the benchmarks): makes the
// C library's allocator keep freed memory for the next job instead of
// returning it to the kernel (glibc mallopt: no trimming below 256 MiB, no
// separate mappings below 32 MiB). A full-chip job allocates tens of MiB;
// handed back and faulted in again each time, that cost ~5 % of a 2 ms
// job. Call once at start-up, before threads start; the emulator itself
// never calls it. Returns false where the allocator does not support it.
bool RetainFreedMemoryForReuse();

}  // namespace hxemu::emulator
