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
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "aligned_vector.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/v1/experiment.pb.h"
#include "model_constants.h"
#include "validation.h"

namespace hxemu::emulator {

// Model regime of a neuron during one step.
enum Regime : int {
  kFree = 0,   // leak only
  kReset = 1,  // leak + reset conductance (first part of the refractory time)
  kNumRegimes = 2,
};

// Continuous-time constants of one slot in double precision, for the refined
// integration of stiff steps (engine.cc RefineStep: the exponential upswing
// is integrated with adaptive sub-steps, which need rates, not the per-step
// propagators). Read only for slots in the stiff region, so an array of
// structures is fine here.
//   dV/dt = lambda[k] (v_inf[k] - V) + drift[k] + exc_gain[k] I_exc
//           - inh_gain[k] I_inh + N(V, w, I)           (N as below)
//   dI/dt = -mu I,   dw/dt = adapt_rate (a (V - V_ref) - w)
struct StiffConstants {
  double lambda_per_s[kNumRegimes];             // g / C [1/s]
  double v_inf_volt[kNumRegimes];               // 0 if g == 0 [V]
  double drift_volt_per_s[kNumRegimes];         // I_off / C if g == 0 [V/s]
  double exc_gain_volt_per_amp_s[kNumRegimes];  // 1 / C, 0 if gated/COBA
  double inh_gain_volt_per_amp_s[kNumRegimes];
  double exp_pref_volt_per_s[kNumRegimes];  // g_leak Delta_T / C (0: off)
  double coba_exc[kNumRegimes];             // [1/(F V)]
  double coba_inh[kNumRegimes];
  double mu_exc_per_s, mu_inh_per_s;  // 1 / tau_syn
  double exp_v_t_volt, exp_inv_slope_per_volt, exp_arg_max;
  double e_exc_volt, e_inh_volt;
  double adapt_a_siemens, adapt_v_ref_volt;
  double adapt_rate_per_s;  // 1 / tau_w, 0 without adaptation
  double inv_c_per_farad;
};

// Per-slot constants, structure of arrays (one std::vector per quantity).
//
// One step of the membrane (exact for the linear model, see
// docs/emulator-model.md "Integration"):
//   V' = V + decay[k] * (v_inf[k] - V) + drift[k]
//          + exc_gain[k] * I_exc - inh_gain[k] * I_inh + noise * z
//   I_exc' = I_exc * exc_decay,  I_inh' = I_inh * inh_decay
// with k the regime of the step, plus the non-linear currents (exponential
// term, adaptation, COBA synapses) by a second-order exponential time
// differencing predictor-corrector (ETD2, Cox & Matthews 2002):
//   N(V, w, I) = exp_pref[k] exp(min((V - V_T) / Delta_T, arg_max)) - w / C
//              + coba_exc[k] I_exc max(0, E_exc - V)
//              - coba_inh[k] I_inh max(0, V - E_inh)              [V/s]
//   V_pred = V_lin + etd1[k] N(V, w, I);  V' = V_pred + etd2[k] (N' - N)
//   w' = w w_decay + a (V - V_ref) w_q1 + a (V' - V) w_q2
// N is 0 for a neuron without these features, and V' = V_lin bit-exactly.
struct NeuronConstants {
  int num_slots = 0;
  std::vector<int> circuit;  // slot -> circuit
  std::vector<int> node;     // slot -> node

  SlotArray<float> decay[kNumRegimes];       // 1 - exp(-dt g / C) [1]
  SlotArray<float> v_inf_volt[kNumRegimes];  // (sum g E + I_off) / g [V]
  SlotArray<float> drift_volt[kNumRegimes];  // I_off dt / C if g == 0 [V]
  SlotArray<float> exc_gain_volt_per_amp[kNumRegimes];  // [V/A]
  SlotArray<float> inh_gain_volt_per_amp[kNumRegimes];  // [V/A]
  SlotArray<float> etd1_s[kNumRegimes];  // (1 - exp(-lambda dt)) / lambda
  SlotArray<float> etd2_s[kNumRegimes];  // (exp(-x) - 1 + x) / (x lambda)
  // Exponential term: prefactor g_leak Delta_T / C [V/s] (0 if off or gated
  // by enable_pause in the reset regime), V_T [V], 1 / Delta_T [1/V].
  SlotArray<float> exp_pref_volt_per_s[kNumRegimes];
  SlotArray<float> exp_v_t_volt;
  SlotArray<float> exp_inv_slope_per_volt;
  SlotArray<float> exp_slope_volt;  // Delta_T, 0 without the term [V]
  // Upper clamp of the exponent: min(kExpArgMax, (V_th - V_T) / Delta_T).
  SlotArray<float> exp_arg_max;
  // COBA: k / C [1/(V s) per A... = 1/(F V)] (0 for CUBA or gated), E_rev [V].
  SlotArray<float> coba_exc[kNumRegimes];
  SlotArray<float> coba_inh[kNumRegimes];
  SlotArray<float> coba_exc_rev_volt;
  SlotArray<float> coba_inh_rev_volt;
  // Adaptation: a [S] (0 if off), V_ref [V], exp(-dt / tau_w), the ETD2
  // weights, b [A] (0 unless the pulse is on), 1 / C [1/F].
  SlotArray<float> adapt_a_siemens;
  SlotArray<float> adapt_v_ref_volt;
  SlotArray<float> adapt_decay;
  SlotArray<float> adapt_q1;
  SlotArray<float> adapt_q2;
  SlotArray<float> adapt_b_amp;
  SlotArray<float> inv_c_per_farad;
  // A step that starts with V above this is stiff (the exponential term's
  // rate g_leak / C exp((V - V_T) / Delta_T) exceeds model::kStiffRate) and
  // is recomputed by adaptive sub-steps (+infinity: never).
  SlotArray<float> v_stiff_volt;
  std::vector<StiffConstants> stiff;
  // Macro-step tables for m = 1..kMacroTicks ticks, index (m - 1) * n + slot:
  // the same propagators as above for a step of m ticks (decay, drift,
  // current gains, ETD weights; current decays, adaptation weights, noise).
  SlotArray<float> m_decay[kNumRegimes];
  SlotArray<float> m_drift_volt[kNumRegimes];
  SlotArray<float> m_exc_gain[kNumRegimes];
  SlotArray<float> m_inh_gain[kNumRegimes];
  SlotArray<float> m_etd1_s[kNumRegimes];
  SlotArray<float> m_etd2_s[kNumRegimes];
  SlotArray<float> m_exc_decay;
  SlotArray<float> m_inh_decay;
  SlotArray<float> m_adapt_decay;
  SlotArray<float> m_adapt_q1;
  SlotArray<float> m_adapt_q2;
  SlotArray<float> m_noise_volt;
  // Macro steps: allowed at all for this slot (not for COBA, bypass, MADC
  // recorded), and the highest V at both ends of a free one [V].
  SlotArray<int32_t> coarse_ok;  // 0 / 1 (int32: see engine.cc spiked)
  SlotArray<float> v_guard_volt;
  // Bypass: the neuron fires on every event of that receptor.
  SlotArray<uint8_t> bypass_exc;
  SlotArray<uint8_t> bypass_inh;
  // Whether any slot has an exponential term, adaptation or COBA input
  // (else the loop skips the non-linear part).
  bool non_linear = false;
  // Whether any slot has adaptation or COBA input (else N is the exponential
  // term alone and w stays 0; the loop skips the rest).
  bool adapt_or_coba = false;
  // Whether any synapse targets an inhibitory input (else I_inh stays 0 and
  // the loop skips it).
  bool inhibitory_input = false;
  // RefineStep's sub-steps: rate x sub-step at most substep_rate, at most
  // max_substep_s long; refine_every_step: every step of every slot is
  // refined (ModelOptions::fine_substeps), not only the stiff ones.
  double substep_rate = model::kSubStepRate;
  double max_substep_s = model::kStepS;
  bool refine_every_step = false;
  SlotArray<float> exc_decay;  // exp(-dt / tau_syn_exc) [1]
  SlotArray<float> inh_decay;  // exp(-dt / tau_syn_inh) [1]
  // Spike threshold [V]; +infinity when threshold_enable is off.
  SlotArray<float> v_threshold_volt;
  // Refractory time [steps]; the reset conductance is on while more than
  // reset_release_steps of it remain.
  SlotArray<int32_t> refractory_steps;
  SlotArray<int32_t> reset_release_steps;
  // Standard deviation of the per-step membrane noise increment [V].
  SlotArray<float> noise_step_volt;

  // Start of the free-running warm-up: V(0) is uniform in
  // [min(v_reset, v_leak), max(...)] [V]; noise generator seeds (non-zero).
  SlotArray<float> v_start_volt;
  SlotArray<uint32_t> noise_seed;

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
  SlotArray<float> amplitude_amp;  // peak current per event [A], >= 0
  // Per node: its targets are target[row_begin] + 0, 1, 2, ... (ascending,
  // contiguous), so delivery is a vectorised add.
  std::vector<uint8_t> contiguous;
  // Per node: target[row_begin] (-1 if it has none), so that delivery need
  // not read `target`, a large array, at a random row.
  std::vector<int32_t> first_target;
  // Some target has a bypass switch (delivery also sets forced flags).
  bool any_bypass = false;
};

// One spike of a source neuron, delivered at the start of tick `tick` of
// the recorded run (step warmup_steps + tick * kStepsPerTick). 8 bytes, not
// 16 with an int64 step: a full chip's 2 ms job has ~100 000 of them, written
// by the sources, moved twice by the sort and read once by the run.
// (tick < runtime_ticks <= 2^32 - 1: validation bounds runtime_ms by
// kMaxTimerRuntimeMs.)
struct InputSpike {
  uint32_t tick;
  int32_t node;
  friend bool operator<(const InputSpike& a, const InputSpike& b) {
    return a.tick != b.tick ? a.tick < b.tick : a.node < b.node;
  }
};
static_assert(sizeof(InputSpike) == 8);

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
  bool madc_noise = true;
  // Ticks per macro step: model::kMacroTicks, or 1 (every neuron steps every
  // tick) if on-chip neurons drive synapses (their events arrive one tick
  // later, inside a macro step).
  int macro_ticks = 1;
  // CADC: read ticks (ascending, of the recorded run) and per-slot transfer
  // code = (V - kCadcBaseVolt) * lsb_per_volt + offset_lsb (+ noise).
  std::vector<int64_t> cadc_ticks;
  std::vector<double> cadc_lsb_per_volt;
  std::vector<double> cadc_offset_lsb;
  bool cadc_noise = true;
};

// (exp(-mu dt) - exp(-lambda dt)) / (lambda - mu) [s]: the membrane's
// response at dt to a unit current decaying with rate mu [1/s], the leak's
// rate lambda [1/s], per unit charge-rate; exp_lambda_dt = exp(-lambda dt)
// (computed once for both synaptic inputs). For the lowering's tables and
// RefineStep's sub-steps.
double ExpKernelIntegral(double lambda, double mu, double dt,
                         double exp_lambda_dt);

// A chip's fixed-pattern mismatch as the lowering reads it: the clipped
// standard normal of every (circuit, quantity) and the weight gain of every
// synapse, pure functions of the chip id (random.h). A Chip keeps one for
// all its jobs, filled as jobs first use a circuit or a synapse row:
// computed anew for every job, they took ~7 ms of a full-chip job, twice
// the rest of its set-up (131072 synapses, a Box-Muller normal each;
// tests/bench/README.md).
class FixedPattern {
 public:
  static constexpr int kNumCircuitQuantities = 30;  // network.cc Quantity

  FixedPattern(uint32_t chip_id, bool enabled);
  FixedPattern(const FixedPattern&) = delete;
  FixedPattern& operator=(const FixedPattern&) = delete;

  uint32_t chip_id() const { return chip_id_; }
  bool enabled() const { return enabled_; }

  // Computes what `mapped` uses (its placed circuits and synapse rows) that
  // is not there yet. Thread-safe. An entry is written once, before the
  // Prepare that covers it returns, and never again: the readers below need
  // no lock for what their own Prepare covered (and read nothing else).
  void Prepare(const MappedExperiment& mapped);

  // Clipped standard normal of (circuit, quantity); 0 if not enabled.
  // Prepared entries only.
  double CircuitNormal(int circuit, int quantity) const {
    return enabled_ ? circuit_normal_[static_cast<size_t>(circuit) *
                                          kNumCircuitQuantities +
                                      quantity]
                    : 0.0;
  }
  // The synapse's weight gain, 1 + kSynapseWeightSigma z; 1 if not enabled.
  // Prepared rows only.
  double SynapseGain(const PlacedSynapse& s) const {
    return enabled_
               ? synapse_gain_[SynapseIndex(s.hemisphere, s.row) + s.column]
               : 1.0;
  }

 private:
  static size_t SynapseIndex(int hemisphere, int row) {
    return (static_cast<size_t>(hemisphere) * kSynapseRowsPerHemisphere + row) *
           kNumNeuronColumns;
  }

  const uint32_t chip_id_;
  const bool enabled_;
  std::mutex mu_;  // guards the *_ready_ flags and the filling
  std::vector<double> circuit_normal_;  // [circuit][quantity]
  std::vector<uint8_t> circuit_ready_;
  std::vector<double> synapse_gain_;  // [hemisphere][row][column]
  std::vector<uint8_t> row_ready_;    // [hemisphere][row]
};

// Lowers a validated experiment onto the chip of `pattern` (prepared for
// `mapped`). May fail only with RESOURCE_EXHAUSTED (Poisson sources
// producing far more spikes than the limit allows).
absl::StatusOr<Network> LowerNetwork(const hxemu::v1::Experiment& experiment,
                                     const MappedExperiment& mapped,
                                     const ExperimentLimits& limits,
                                     const FixedPattern& pattern,
                                     const ModelOptions& options);

}  // namespace hxemu::emulator
