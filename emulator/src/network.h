// File: network.h
//
// The experiment lowered onto the chip for one run: per-circuit constants of
// the linear membrane/synapse model (with this chip's fixed-pattern mismatch
// folded in), the connectivity as a compressed sparse row table, the input
// spike list and what to record. Everything here is computed once before the
// time loop; the loop (engine.h) only reads it. Internal header.
//
// Indexing: the placed circuits are numbered by "slot" 0..num_slots-1 in
// increasing circuit order; every per-neuron array is indexed by slot, so the
// time loop touches only placed circuits. Every neuron of every population
// (on-chip or spike source) is a "node": node = node_begin[population] +
// neuron.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/v1/experiment.pb.h"
#include "validation.h"

namespace hxemu::emulator {

// Model regime of a neuron during one step.
enum Regime : int {
  kFree = 0,   // leak only
  kReset = 1,  // leak + reset conductance (first part of the refractory time)
  kNumRegimes = 2,
};

// Per-slot constants, structure of arrays (one std::vector per quantity).
//
// One step of the membrane (exact for the linear model, see
// docs/emulator-model.md "Integration"):
//   V' = V + decay[k] * (v_inf[k] - V) + drift[k]
//          + exc_gain[k] * I_exc - inh_gain[k] * I_inh + noise * z
//   I_exc' = I_exc * exc_decay,  I_inh' = I_inh * inh_decay
// with k the regime of the step.
struct NeuronConstants {
  int num_slots = 0;
  std::vector<int> circuit;  // slot -> circuit
  std::vector<int> node;     // slot -> node

  std::vector<float> decay[kNumRegimes];       // 1 - exp(-dt g / C) [1]
  std::vector<float> v_inf_volt[kNumRegimes];  // (sum g E + I_off) / g [V]
  std::vector<float> drift_volt[kNumRegimes];  // I_off dt / C if g == 0 [V]
  std::vector<float> exc_gain_volt_per_amp[kNumRegimes];  // [V/A]
  std::vector<float> inh_gain_volt_per_amp[kNumRegimes];  // [V/A]
  std::vector<float> exc_decay;  // exp(-dt / tau_syn_exc) [1]
  std::vector<float> inh_decay;  // exp(-dt / tau_syn_inh) [1]
  // Spike threshold [V]; +infinity when threshold_enable is off.
  std::vector<float> v_threshold_volt;
  // Refractory time [steps]; the reset conductance is on while more than
  // reset_release_steps of it remain.
  std::vector<int32_t> refractory_steps;
  std::vector<int32_t> reset_release_steps;
  // Standard deviation of the per-step membrane noise increment [V].
  std::vector<float> noise_step_volt;

  // Start of the free-running warm-up: V(0) is uniform in
  // [min(v_reset, v_leak), max(...)] [V]; noise generator seeds (non-zero).
  std::vector<float> v_start_volt;
  std::vector<uint32_t> noise_seed;

  // Effective (mismatched) model values, kept for tests and debugging.
  std::vector<double> v_leak_volt;
  std::vector<double> v_reset_volt;
  std::vector<double> tau_mem_s;  // C / g_leak (infinity without leak)
};

// Outgoing synapses of every node, CSR: the synapses of node u are
// [row_begin[u], row_begin[u+1]). target < num_slots: excitatory input of
// slot target; else inhibitory input of slot target - num_slots.
struct Connectivity {
  std::vector<int64_t> row_begin;
  std::vector<int32_t> target;
  std::vector<float> amplitude_amp;  // peak current per event [A], >= 0
};

// One spike of a source neuron, delivered at the start of `step`.
struct InputSpike {
  int64_t step;
  int32_t node;
  friend bool operator<(const InputSpike& a, const InputSpike& b) {
    return a.step != b.step ? a.step < b.step : a.node < b.node;
  }
};

struct MadcChannel {
  int slot;
  hxemu::v1::Observable observable;
};

struct Network {
  NeuronConstants neurons;
  Connectivity connectivity;
  std::vector<int64_t> node_begin;  // per population; last = number of nodes
  std::vector<InputSpike> input_spikes;  // sorted
  // Per node: index of its spike train in the result, or -1.
  std::vector<int32_t> spike_train_of_node;
  std::vector<MadcChannel> madc;  // result trace i = madc[i]
  // Chip-level MADC readout: code = volt * madc_lsb_per_volt + offset_lsb.
  double madc_lsb_per_volt = 0.0;
  double madc_offset_lsb = 0.0;

  int64_t warmup_steps = 0;
  int64_t runtime_ticks = 0;
  uint32_t chip_id = 0;
  uint64_t seed = 0;
};

// Lowers a validated experiment onto chip `chip_id`. May fail only with
// RESOURCE_EXHAUSTED (Poisson sources producing far more spikes than the
// limit allows).
absl::StatusOr<Network> LowerNetwork(const hxemu::v1::Experiment& experiment,
                                     const MappedExperiment& mapped,
                                     const ExperimentLimits& limits,
                                     uint32_t chip_id);

}  // namespace hxemu::emulator
