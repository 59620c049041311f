// File: network.cc
//
// Lowering: DAC codes -> physical quantities (nominal transfer functions of
// model_constants.h, times this chip's fixed-pattern mismatch) -> per-step
// propagators of the exact linear integration; connection lists -> CSR;
// spike sources -> one sorted input spike list.
#include "network.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "hxemu/emulator/chip_constants.h"
#include "hxemu/emulator/parameters.h"
#include "model_constants.h"
#include "random.h"

namespace hxemu::emulator {
namespace {

using ::hxemu::v1::Experiment;
using ::hxemu::v1::Population;

// Quantities with their own per-circuit mismatch. The values are part of the
// key of every chip's fixed pattern: never renumber, only append.
enum class Quantity : uint64_t {
  kLeakVoltOffset = 0,
  kLeakVoltGain = 1,
  kResetVoltOffset = 2,
  kResetVoltGain = 3,
  kThresholdVoltOffset = 4,
  kThresholdVoltGain = 5,
  kLeakConductance = 6,
  kResetConductance = 7,
  kCapacitance = 8,
  kExcTau = 9,
  kInhTau = 10,
  kExcGm = 11,
  kInhGm = 12,
  kOffsetCurrent = 13,
};

// Clipped standard normal of (chip, circuit, quantity): the chip's fixed
// pattern. Independent of the experiment, the seed and the other circuits.
double MismatchNormal(uint32_t chip_id, int circuit, Quantity q) {
  const double z = random::Gaussian(
      random::Hash(random::Key(random::Domain::kMismatch), chip_id,
                   static_cast<uint64_t>(circuit), static_cast<uint64_t>(q)));
  return std::clamp(z, -model::kMismatchClipSigma, model::kMismatchClipSigma);
}

double GainFactor(uint32_t chip_id, int circuit, Quantity q, double sigma) {
  return 1.0 + sigma * MismatchNormal(chip_id, circuit, q);
}

// Nominal voltage DAC transfer with per-circuit gain (on the code-dependent
// part) and offset mismatch [V].
double VoltageDac(uint32_t chip_id, int circuit, int32_t code,
                  double offset_volt, double volt_per_lsb, Quantity offset_q,
                  Quantity gain_q) {
  return offset_volt +
         code * volt_per_lsb *
             GainFactor(chip_id, circuit, gain_q, model::kVoltageGainSigma) +
         model::kVoltageOffsetSigmaVolt *
             MismatchNormal(chip_id, circuit, offset_q);
}

double SwitchFactor(bool multiply, bool divide) {
  double f = 1.0;
  if (multiply) f *= model::kConductanceSwitchFactor;
  if (divide) f /= model::kConductanceSwitchFactor;
  return f;
}

// (exp(-mu dt) - exp(-lambda dt)) / (lambda - mu): the membrane response at
// dt to a unit current decaying with rate mu, per unit charge-rate [s].
double ExpKernelIntegral(double lambda, double mu, double dt) {
  const double diff = lambda - mu;
  if (std::abs(diff) * dt < 1e-9) return dt * std::exp(-lambda * dt);
  return std::exp(-lambda * dt) * std::expm1(diff * dt) / diff;
}

using ParameterValues = std::array<int32_t, kNumNeuronParameters>;

// Parameter values of neuron n of HX population `pop` (defaults + overrides).
ParameterValues NeuronValues(const Population& pop, int n) {
  ParameterValues values;
  for (int i = 0; i < kNumNeuronParameters; ++i) {
    values[i] = NeuronParameterTable()[i].default_value;
  }
  for (const hxemu::v1::NeuronParameter& np : pop.parameters()) {
    const int id = static_cast<int>(*FindNeuronParameter(np.name()));
    values[id] = np.values_size() == 1 ? np.values(0) : np.values(n);
  }
  return values;
}

// Per-receptor synaptic input of one circuit.
struct SynapticInput {
  double tau_s;
  double amp_per_weight;  // peak current per weight LSB [A]; 0 if disabled
};

struct SynInParameters {
  NeuronParameter enable, i_bias_tau, i_bias_gm, small_capacitance,
      high_resistance;
  Quantity tau_q, gm_q;
};

constexpr SynInParameters kExcitatoryInput = {
    NeuronParameter::excitatory_input_enable,
    NeuronParameter::excitatory_input_i_bias_tau,
    NeuronParameter::excitatory_input_i_bias_gm,
    NeuronParameter::excitatory_input_enable_small_capacitance,
    NeuronParameter::excitatory_input_enable_high_resistance,
    Quantity::kExcTau,
    Quantity::kExcGm};
constexpr SynInParameters kInhibitoryInput = {
    NeuronParameter::inhibitory_input_enable,
    NeuronParameter::inhibitory_input_i_bias_tau,
    NeuronParameter::inhibitory_input_i_bias_gm,
    NeuronParameter::inhibitory_input_enable_small_capacitance,
    NeuronParameter::inhibitory_input_enable_high_resistance,
    Quantity::kInhTau,
    Quantity::kInhGm};

SynapticInput LowerSynapticInput(const ParameterValues& v,
                                 const SynInParameters& p, uint32_t chip_id,
                                 int circuit) {
  auto get = [&](NeuronParameter q) { return v[static_cast<int>(q)]; };
  // Without the small-capacitance switch the line has a larger capacitor:
  // tau_syn grows and the voltage (so current) step per event shrinks by the
  // same factor, so the charge per event is unchanged.
  const double cap_factor =
      get(p.small_capacitance) ? 1.0 : model::kSynLargeCapacitanceFactor;
  SynapticInput in;
  in.tau_s = model::kSynTauSecondLsb / std::max(get(p.i_bias_tau), 1) *
             (get(p.high_resistance) ? model::kSynHighResistanceFactor : 1.0) *
             cap_factor *
             GainFactor(chip_id, circuit, p.tau_q, model::kSynTauSigma);
  in.amp_per_weight =
      get(p.enable)
          ? model::kSynAmpPerWeightGm * get(p.i_bias_gm) *
                GainFactor(chip_id, circuit, p.gm_q, model::kSynGmSigma) /
                cap_factor
          : 0.0;
  return in;
}

struct LoweredNeuron {
  SynapticInput exc, inh;
};

// Fills slot `s` of `nc` for neuron values `v` on `circuit`.
LoweredNeuron LowerNeuron(const ParameterValues& v, uint32_t chip_id,
                          int circuit, int s, NeuronConstants& nc) {
  auto get = [&](NeuronParameter q) { return v[static_cast<int>(q)]; };
  using P = NeuronParameter;
  const double v_leak =
      VoltageDac(chip_id, circuit, get(P::leak_v_leak), model::kLeakOffsetVolt,
                 model::kLeakVoltPerLsb, Quantity::kLeakVoltOffset,
                 Quantity::kLeakVoltGain);
  const double v_reset =
      VoltageDac(chip_id, circuit, get(P::reset_v_reset),
                 model::kResetOffsetVolt, model::kResetVoltPerLsb,
                 Quantity::kResetVoltOffset, Quantity::kResetVoltGain);
  const double v_threshold =
      VoltageDac(chip_id, circuit, get(P::threshold_v_threshold),
                 model::kThresholdOffsetVolt, model::kThresholdVoltPerLsb,
                 Quantity::kThresholdVoltOffset, Quantity::kThresholdVoltGain);
  const double g_leak_siemens =
      get(P::leak_i_bias) * model::kLeakSiemensPerLsb *
      SwitchFactor(get(P::leak_enable_multiplication),
                   get(P::leak_enable_division)) *
      GainFactor(chip_id, circuit, Quantity::kLeakConductance,
                 model::kConductanceSigma);
  const double g_reset_siemens =
      get(P::reset_i_bias) * model::kResetSiemensPerLsb *
      SwitchFactor(get(P::reset_enable_multiplication),
                   get(P::reset_enable_division)) *
      GainFactor(chip_id, circuit, Quantity::kResetConductance,
                 model::kConductanceSigma);
  const double c_farad =
      (model::kCapacitanceBaseFarad + get(P::membrane_capacitance_capacitance) *
                                          model::kCapacitanceFaradPerLsb) *
      GainFactor(chip_id, circuit, Quantity::kCapacitance,
                 model::kCapacitanceSigma);
  double i_offset_amp = 0.0;
  if (get(P::constant_current_enable)) {
    i_offset_amp = get(P::constant_current_i_offset) * model::kOffsetAmpPerLsb *
                   GainFactor(chip_id, circuit, Quantity::kOffsetCurrent,
                              model::kOffsetCurrentSigma) *
                   (get(P::constant_current_type) == 1 ? -1.0 : 1.0);
  }
  LoweredNeuron out;
  out.exc = LowerSynapticInput(v, kExcitatoryInput, chip_id, circuit);
  out.inh = LowerSynapticInput(v, kInhibitoryInput, chip_id, circuit);

  const double dt = model::kStepS;
  const bool pause = get(P::refractory_period_enable_pause);
  for (int k = 0; k < kNumRegimes; ++k) {
    const double g_reset = k == kReset ? g_reset_siemens : 0.0;
    const double g = g_leak_siemens + g_reset;
    const double lambda = g / c_farad;  // [1/s]
    nc.decay[k][s] = static_cast<float>(-std::expm1(-lambda * dt));
    if (g > 0.0) {
      nc.v_inf_volt[k][s] = static_cast<float>(
          (g_leak_siemens * v_leak + g_reset * v_reset + i_offset_amp) / g);
      nc.drift_volt[k][s] = 0.0f;
    } else {
      nc.v_inf_volt[k][s] = 0.0f;
      nc.drift_volt[k][s] = static_cast<float>(i_offset_amp * dt / c_farad);
    }
    // enable_pause gates the synaptic input while the reset is on.
    const bool gated = pause && k == kReset;
    nc.exc_gain_volt_per_amp[k][s] =
        gated
            ? 0.0f
            : static_cast<float>(
                  ExpKernelIntegral(lambda, 1.0 / out.exc.tau_s, dt) / c_farad);
    nc.inh_gain_volt_per_amp[k][s] =
        gated
            ? 0.0f
            : static_cast<float>(
                  ExpKernelIntegral(lambda, 1.0 / out.inh.tau_s, dt) / c_farad);
  }
  nc.exc_decay[s] = static_cast<float>(std::exp(-dt / out.exc.tau_s));
  nc.inh_decay[s] = static_cast<float>(std::exp(-dt / out.inh.tau_s));
  nc.v_threshold_volt[s] = get(P::threshold_enable)
                               ? static_cast<float>(v_threshold)
                               : std::numeric_limits<float>::infinity();
  const int32_t ticks_per_count =
      model::kRefractoryTicksPerCount * model::kStepsPerTick;
  nc.refractory_steps[s] =
      get(P::refractory_period_refractory_time) * ticks_per_count;
  nc.reset_release_steps[s] =
      std::max(0, model::kHoldoffBase -
                      2 * get(P::refractory_period_reset_holdoff)) *
      ticks_per_count;

  const double tau_mem_s = g_leak_siemens > 0.0
                               ? c_farad / g_leak_siemens
                               : std::numeric_limits<double>::infinity();
  const double tau_noise_s = std::min(tau_mem_s, model::kNoiseMaxTauS);
  nc.noise_step_volt[s] =
      static_cast<float>(model::kMembraneNoiseVolt *
                         std::sqrt(-std::expm1(-2.0 * dt / tau_noise_s)));
  nc.v_leak_volt[s] = v_leak;
  nc.v_reset_volt[s] = v_reset;
  nc.tau_mem_s[s] = tau_mem_s;
  return out;
}

void ResizeNeuronConstants(int n, NeuronConstants& nc) {
  nc.num_slots = n;
  nc.circuit.resize(n);
  nc.node.resize(n);
  for (int k = 0; k < kNumRegimes; ++k) {
    nc.decay[k].resize(n);
    nc.v_inf_volt[k].resize(n);
    nc.drift_volt[k].resize(n);
    nc.exc_gain_volt_per_amp[k].resize(n);
    nc.inh_gain_volt_per_amp[k].resize(n);
  }
  nc.exc_decay.resize(n);
  nc.inh_decay.resize(n);
  nc.v_threshold_volt.resize(n);
  nc.refractory_steps.resize(n);
  nc.reset_release_steps.resize(n);
  nc.noise_step_volt.resize(n);
  nc.v_start_volt.resize(n);
  nc.noise_seed.resize(n);
  nc.v_leak_volt.resize(n);
  nc.v_reset_volt.resize(n);
  nc.tau_mem_s.resize(n);
}

// Spike times of the source neurons of population p, appended to `out` as
// steps of the whole run (warm-up included). Only spikes inside the recorded
// run are delivered.
absl::Status AppendSourceSpikes(const Experiment& e, int p, int64_t node_begin,
                                const Network& net, int64_t max_spikes,
                                std::vector<InputSpike>& out) {
  const Population& pop = e.populations(p);
  auto push = [&](int64_t tick, int64_t node) {
    if (tick < 0 || tick >= net.runtime_ticks) return;
    out.push_back({(model::kWarmupTicks + tick) * model::kStepsPerTick,
                   static_cast<int32_t>(node)});
  };
  if (pop.cell_type() == hxemu::v1::CELL_TYPE_SPIKE_SOURCE_ARRAY) {
    const auto& trains = pop.spike_source_array().spike_times();
    for (uint32_t n = 0; n < pop.size(); ++n) {
      const auto& times = trains[trains.size() == 1 ? 0 : n].times_ms();
      for (double t : times) push(SpikeTick(t), node_begin + n);
    }
    return absl::OkStatus();
  }
  // Poisson: exponential inter-spike intervals from a counter-based stream
  // per (seed, population, neuron); independent of the chip.
  const hxemu::v1::SpikeSourcePoisson& s = pop.spike_source_poisson();
  if (s.rate_hz() <= 0.0) return absl::OkStatus();
  const double runtime_ms = e.runtime_ms();
  const double end_ms =
      s.duration_ms() > 0.0
          ? std::min(runtime_ms, s.start_ms() + s.duration_ms())
          : runtime_ms;
  const double mean_isi_ms = 1e3 / s.rate_hz();
  for (uint32_t n = 0; n < pop.size(); ++n) {
    const uint64_t stream = random::Hash(random::Key(random::Domain::kPoisson),
                                         net.seed, static_cast<uint64_t>(p), n);
    double t_ms = s.start_ms();
    for (uint64_t k = 0;; ++k) {
      t_ms += -std::log(random::Uniform(random::Hash(stream, k))) * mean_isi_ms;
      if (t_ms >= end_ms) break;
      push(SpikeTick(t_ms), node_begin + n);
      if (static_cast<int64_t>(out.size()) > max_spikes) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "populations[", p, "].spike_source_poisson: the generated input ",
            "spikes exceed the limit max_input_spikes"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Network> LowerNetwork(const Experiment& e,
                                     const MappedExperiment& mapped,
                                     const ExperimentLimits& limits,
                                     uint32_t chip_id) {
  Network net;
  net.chip_id = chip_id;
  net.seed = e.seed();
  net.runtime_ticks = mapped.runtime_ticks;
  net.warmup_steps = model::kWarmupTicks * model::kStepsPerTick;

  const int num_pops = e.populations_size();
  net.node_begin.resize(num_pops + 1);
  net.node_begin[0] = 0;
  for (int p = 0; p < num_pops; ++p) {
    net.node_begin[p + 1] = net.node_begin[p] + e.populations(p).size();
  }
  const int64_t num_nodes = net.node_begin[num_pops];

  // Slots in increasing circuit order.
  std::array<int64_t, kNumNeuronCircuits> node_of_circuit;
  node_of_circuit.fill(-1);
  for (int p = 0; p < num_pops; ++p) {
    for (size_t n = 0; n < mapped.circuits[p].size(); ++n) {
      node_of_circuit[mapped.circuits[p][n]] = net.node_begin[p] + n;
    }
  }
  std::vector<int32_t> slot_of_node(num_nodes, -1);
  NeuronConstants& nc = net.neurons;
  int num_slots = 0;
  for (int64_t node : node_of_circuit) num_slots += node >= 0;
  ResizeNeuronConstants(num_slots, nc);
  std::vector<LoweredNeuron> lowered(num_slots);
  int s = 0;
  for (int c = 0; c < kNumNeuronCircuits; ++c) {
    const int64_t node = node_of_circuit[c];
    if (node < 0) continue;
    const int p = static_cast<int>(
        std::upper_bound(net.node_begin.begin(), net.node_begin.end(), node) -
        net.node_begin.begin() - 1);
    const int n = static_cast<int>(node - net.node_begin[p]);
    nc.circuit[s] = c;
    nc.node[s] = static_cast<int>(node);
    slot_of_node[node] = s;
    lowered[s] =
        LowerNeuron(NeuronValues(e.populations(p), n), chip_id, c, s, nc);
    // Free-running start: uniform between reset and leak potential, drawn
    // from (seed, chip, circuit).
    const double u = random::Uniform(
        random::Hash(random::Key(random::Domain::kInitialState), e.seed(),
                     chip_id, static_cast<uint64_t>(c)));
    nc.v_start_volt[s] = static_cast<float>(
        nc.v_reset_volt[s] + u * (nc.v_leak_volt[s] - nc.v_reset_volt[s]));
    nc.noise_seed[s] = static_cast<uint32_t>(random::Hash(
                           random::Key(random::Domain::kMembraneNoise),
                           e.seed(), chip_id, static_cast<uint64_t>(c))) |
                       1u;
    ++s;
  }

  // Connectivity (CSR by pre node), two passes: count, then fill.
  Connectivity& conn = net.connectivity;
  conn.row_begin.assign(num_nodes + 1, 0);
  for (const hxemu::v1::Projection& proj : e.projections()) {
    for (uint32_t pre : proj.pre_indices()) {
      ++conn.row_begin[net.node_begin[proj.pre_population()] + pre + 1];
    }
  }
  for (int64_t u = 0; u < num_nodes; ++u) {
    conn.row_begin[u + 1] += conn.row_begin[u];
  }
  conn.target.resize(conn.row_begin[num_nodes]);
  conn.amplitude_amp.resize(conn.row_begin[num_nodes]);
  std::vector<int64_t> fill(conn.row_begin.begin(), conn.row_begin.end() - 1);
  for (const hxemu::v1::Projection& proj : e.projections()) {
    const bool inhibitory =
        proj.receptor_type() == hxemu::v1::RECEPTOR_TYPE_INHIBITORY;
    for (int k = 0; k < proj.pre_indices_size(); ++k) {
      const int64_t pre =
          net.node_begin[proj.pre_population()] + proj.pre_indices(k);
      const int32_t post_slot =
          slot_of_node[net.node_begin[proj.post_population()] +
                       proj.post_indices(k)];
      const SynapticInput& in =
          inhibitory ? lowered[post_slot].inh : lowered[post_slot].exc;
      // |w| > 63 is spread over several 6-bit synapses on the chip; their
      // currents add up, so the amplitude stays linear in |w|.
      const double abs_weight = std::abs(static_cast<double>(proj.weights(k)));
      const int64_t e_index = fill[pre]++;
      conn.target[e_index] = inhibitory ? post_slot + num_slots : post_slot;
      conn.amplitude_amp[e_index] =
          static_cast<float>(abs_weight * in.amp_per_weight);
    }
  }

  // Input spikes of all sources, sorted by (step, node).
  for (int p = 0; p < num_pops; ++p) {
    if (e.populations(p).cell_type() == hxemu::v1::CELL_TYPE_HX_NEURON)
      continue;
    // Validation bounds the expected count; this bounds the actual one
    // (Poisson fluctuations) with a wide margin.
    const int64_t max_generated =
        limits.max_input_spikes < std::numeric_limits<int64_t>::max() / 4
            ? 2 * limits.max_input_spikes + 1024
            : std::numeric_limits<int64_t>::max();
    if (absl::Status st = AppendSourceSpikes(e, p, net.node_begin[p], net,
                                             max_generated, net.input_spikes);
        !st.ok()) {
      return st;
    }
  }
  std::sort(net.input_spikes.begin(), net.input_spikes.end());

  net.spike_train_of_node.assign(num_nodes, -1);
  for (size_t i = 0; i < mapped.spikes.size(); ++i) {
    net.spike_train_of_node[net.node_begin[mapped.spikes[i].population] +
                            mapped.spikes[i].neuron] = static_cast<int32_t>(i);
  }
  for (const MadcRecording& m : mapped.madc) {
    net.madc.push_back(
        {slot_of_node[net.node_begin[m.population] + m.neuron], m.observable});
  }
  // Chip-level readout mismatch (not per circuit).
  const uint64_t readout_key =
      random::Hash(random::Key(random::Domain::kReadoutMismatch), chip_id);
  const double gain_z =
      std::clamp(random::Gaussian(random::Hash(readout_key, 0)),
                 -model::kMismatchClipSigma, model::kMismatchClipSigma);
  const double offset_z =
      std::clamp(random::Gaussian(random::Hash(readout_key, 1)),
                 -model::kMismatchClipSigma, model::kMismatchClipSigma);
  net.madc_lsb_per_volt = kMadcMaxCode / model::kMadcFullScaleVolt *
                          (1.0 + model::kMadcGainSigma * gain_z);
  net.madc_offset_lsb = model::kMadcOffsetSigmaLsb * offset_z;
  return net;
}

}  // namespace hxemu::emulator
