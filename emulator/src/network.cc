// File: network.cc
//
// Lowering: DAC codes -> physical quantities (nominal transfer functions of
// model_constants.h, times this chip's fixed-pattern mismatch) -> per-step
// propagators of the exact linear integration; connection lists -> CSR;
// spike sources -> one sorted input spike list.
#include "network.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "hxemu/emulator/chip_constants.h"
#include "hxemu/emulator/parameters.h"
#include "model_constants.h"
#include "random.h"
#include "vector_clones.h"

namespace hxemu::emulator {

double ExpKernelIntegral(double lambda, double mu, double dt,
                         double exp_lambda_dt) {
  const double diff = lambda - mu;
  if (std::abs(diff) * dt < 1e-9) return dt * exp_lambda_dt;
  return exp_lambda_dt * std::expm1(diff * dt) / diff;
}

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
  kExpVoltOffset = 14,
  kExpVoltGain = 15,
  kExpSlope = 16,
  kAdaptRefVoltOffset = 17,
  kAdaptRefVoltGain = 18,
  kAdaptTau = 19,
  kAdaptA = 20,
  kAdaptB = 21,
  kExcCobaVoltOffset = 22,
  kExcCobaVoltGain = 23,
  kInhCobaVoltOffset = 24,
  kInhCobaVoltGain = 25,
  kExcCoba = 26,
  kInhCoba = 27,
  kCadcGain = 28,
  kCadcOffset = 29,
};

static_assert(static_cast<int>(Quantity::kCadcOffset) + 1 ==
              FixedPattern::kNumCircuitQuantities);

// The chip's clipped standard normal of (circuit, quantity).
double MismatchNormal(const FixedPattern& mm, int circuit, Quantity q) {
  return mm.CircuitNormal(circuit, static_cast<int>(q));
}

double GainFactor(const FixedPattern& mm, int circuit, Quantity q,
                  double sigma) {
  return 1.0 + sigma * MismatchNormal(mm, circuit, q);
}

// Nominal voltage DAC transfer with per-circuit gain (on the code-dependent
// part) and offset mismatch [V].
double VoltageDac(const FixedPattern& mm, int circuit, int32_t code,
                  double offset_volt, double volt_per_lsb, Quantity offset_q,
                  Quantity gain_q) {
  return offset_volt +
         code * volt_per_lsb *
             GainFactor(mm, circuit, gain_q, model::kVoltageGainSigma) +
         model::kVoltageOffsetSigmaVolt * MismatchNormal(mm, circuit, offset_q);
}

double SwitchFactor(bool multiply, bool divide) {
  double f = 1.0;
  if (multiply) f *= model::kConductanceSwitchFactor;
  if (divide) f /= model::kConductanceSwitchFactor;
  return f;
}

using ParameterValues = std::array<int32_t, kNumNeuronParameters>;

// A parameter an HX population sets, its name resolved once per population
// (not per neuron: a full chip's 512 neurons times a few dozen names, each a
// scan of the parameter table, cost ~0.1 ms per job).
struct GivenParameter {
  int id;                                                  // NeuronParameter
  const google::protobuf::RepeatedField<int32_t>* values;  // 1 or size()
};
std::vector<GivenParameter> ResolveParameters(const Population& pop) {
  std::vector<GivenParameter> out;
  out.reserve(pop.parameters_size());
  for (const hxemu::v1::NeuronParameter& np : pop.parameters()) {
    // Validation has checked every name.
    out.push_back(
        {static_cast<int>(*FindNeuronParameter(np.name())), &np.values()});
  }
  return out;
}

// Parameter values of neuron n of a population (defaults + overrides).
ParameterValues NeuronValues(const std::vector<GivenParameter>& given, int n) {
  ParameterValues values;
  for (int i = 0; i < kNumNeuronParameters; ++i) {
    values[i] = NeuronParameterTable()[i].default_value;
  }
  for (const GivenParameter& g : given) {
    values[g.id] = g.values->size() == 1 ? g.values->Get(0) : g.values->Get(n);
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
                                 const SynInParameters& p,
                                 const FixedPattern& mm, int circuit) {
  auto get = [&](NeuronParameter q) { return v[static_cast<int>(q)]; };
  // Without the small-capacitance switch the line has a larger capacitor:
  // tau_syn grows and the voltage (so current) step per event shrinks by the
  // same factor, so the charge per event is unchanged.
  const double cap_factor =
      get(p.small_capacitance) ? 1.0 : model::kSynLargeCapacitanceFactor;
  SynapticInput in;
  in.tau_s = model::kSynTauSecondLsb / std::max(get(p.i_bias_tau), 1) *
             (get(p.high_resistance) ? model::kSynHighResistanceFactor : 1.0) *
             cap_factor * GainFactor(mm, circuit, p.tau_q, model::kSynTauSigma);
  in.amp_per_weight =
      get(p.enable)
          ? model::kSynAmpPerWeightGm * get(p.i_bias_gm) *
                GainFactor(mm, circuit, p.gm_q, model::kSynGmSigma) / cap_factor
          : 0.0;
  return in;
}

struct LoweredNeuron {
  SynapticInput exc, inh;
};

// Fills slot `s` of `nc` for neuron values `v` on `circuit`.
LoweredNeuron LowerNeuron(const ParameterValues& v, const FixedPattern& mm,
                          int circuit, int s, NeuronConstants& nc) {
  auto get = [&](NeuronParameter q) { return v[static_cast<int>(q)]; };
  using P = NeuronParameter;
  const double v_leak =
      VoltageDac(mm, circuit, get(P::leak_v_leak), model::kLeakOffsetVolt,
                 model::kLeakVoltPerLsb, Quantity::kLeakVoltOffset,
                 Quantity::kLeakVoltGain);
  const double v_reset =
      VoltageDac(mm, circuit, get(P::reset_v_reset), model::kResetOffsetVolt,
                 model::kResetVoltPerLsb, Quantity::kResetVoltOffset,
                 Quantity::kResetVoltGain);
  const double v_threshold =
      VoltageDac(mm, circuit, get(P::threshold_v_threshold),
                 model::kThresholdOffsetVolt, model::kThresholdVoltPerLsb,
                 Quantity::kThresholdVoltOffset, Quantity::kThresholdVoltGain);
  const double g_leak_siemens =
      get(P::leak_i_bias) * model::kLeakSiemensPerLsb *
      SwitchFactor(get(P::leak_enable_multiplication),
                   get(P::leak_enable_division)) *
      GainFactor(mm, circuit, Quantity::kLeakConductance,
                 model::kConductanceSigma);
  const double g_reset_siemens =
      get(P::reset_i_bias) * model::kResetSiemensPerLsb *
      SwitchFactor(get(P::reset_enable_multiplication),
                   get(P::reset_enable_division)) *
      GainFactor(mm, circuit, Quantity::kResetConductance,
                 model::kConductanceSigma);
  const double c_farad =
      (model::kCapacitanceBaseFarad + get(P::membrane_capacitance_capacitance) *
                                          model::kCapacitanceFaradPerLsb) *
      GainFactor(mm, circuit, Quantity::kCapacitance, model::kCapacitanceSigma);
  double i_offset_amp = 0.0;
  if (get(P::constant_current_enable)) {
    i_offset_amp = get(P::constant_current_i_offset) * model::kOffsetAmpPerLsb *
                   GainFactor(mm, circuit, Quantity::kOffsetCurrent,
                              model::kOffsetCurrentSigma) *
                   (get(P::constant_current_type) == 1 ? -1.0 : 1.0);
  }
  LoweredNeuron out;
  out.exc = LowerSynapticInput(v, kExcitatoryInput, mm, circuit);
  out.inh = LowerSynapticInput(v, kInhibitoryInput, mm, circuit);

  // Exponential term: V_T through the threshold transfer, Delta_T from the
  // bias (0: no term).
  const double v_exp =
      VoltageDac(mm, circuit, get(P::exponential_v_exp),
                 model::kThresholdOffsetVolt, model::kThresholdVoltPerLsb,
                 Quantity::kExpVoltOffset, Quantity::kExpVoltGain);
  const double delta_t = get(P::exponential_enable)
                             ? get(P::exponential_i_bias) *
                                   model::kExpSlopeVoltPerLsb *
                                   GainFactor(mm, circuit, Quantity::kExpSlope,
                                              model::kExpSlopeSigma)
                             : 0.0;
  // Adaptation.
  const bool adapt = get(P::adaptation_enable);
  const double v_adapt_ref =
      VoltageDac(mm, circuit, get(P::adaptation_v_ref), model::kLeakOffsetVolt,
                 model::kLeakVoltPerLsb, Quantity::kAdaptRefVoltOffset,
                 Quantity::kAdaptRefVoltGain);
  const double tau_w_s =
      model::kAdaptTauSecondLsb / std::max(get(P::adaptation_i_bias_tau), 1) *
      GainFactor(mm, circuit, Quantity::kAdaptTau, model::kAdaptTauSigma);
  const double adapt_a_siemens =
      adapt ? get(P::adaptation_i_bias_a) * model::kAdaptSiemensPerLsb *
                  GainFactor(mm, circuit, Quantity::kAdaptA,
                             model::kAdaptStrengthSigma) *
                  (get(P::adaptation_invert_a) ? -1.0 : 1.0)
            : 0.0;
  const double adapt_b_amp =
      adapt && get(P::adaptation_enable_pulse)
          ? get(P::adaptation_i_bias_b) * model::kAdaptAmpPerLsb *
                GainFactor(mm, circuit, Quantity::kAdaptB,
                           model::kAdaptStrengthSigma) *
                (get(P::adaptation_invert_b) ? -1.0 : 1.0)
          : 0.0;
  // COBA: modulation slope 1 / V_coba [1/V] and reversal potentials.
  auto coba_slope = [&](NeuronParameter mode, NeuronParameter bias,
                        Quantity q) {
    return get(mode) ? get(bias) / model::kCobaVoltLsb *
                           GainFactor(mm, circuit, q, model::kCobaSigma)
                     : 0.0;
  };
  const double coba_exc_per_volt =
      coba_slope(P::excitatory_input_enable_coba_mode,
                 P::excitatory_input_i_bias_coba, Quantity::kExcCoba);
  const double coba_inh_per_volt =
      coba_slope(P::inhibitory_input_enable_coba_mode,
                 P::inhibitory_input_i_bias_coba, Quantity::kInhCoba);
  const double e_rev_exc =
      VoltageDac(mm, circuit, get(P::excitatory_input_v_rev_coba),
                 model::kLeakOffsetVolt, model::kLeakVoltPerLsb,
                 Quantity::kExcCobaVoltOffset, Quantity::kExcCobaVoltGain);
  const double e_rev_inh =
      VoltageDac(mm, circuit, get(P::inhibitory_input_v_rev_coba),
                 model::kLeakOffsetVolt, model::kLeakVoltPerLsb,
                 Quantity::kInhCobaVoltOffset, Quantity::kInhCobaVoltGain);

  const double dt = model::kStepS;
  const bool pause = get(P::refractory_period_enable_pause);
  StiffConstants& sc = nc.stiff[s];
  for (int k = 0; k < kNumRegimes; ++k) {
    const double g_reset = k == kReset ? g_reset_siemens : 0.0;
    const double g = g_leak_siemens + g_reset;
    const double lambda = g / c_farad;  // [1/s]
    sc.lambda_per_s[k] = lambda;
    sc.v_inf_volt[k] =
        g > 0.0
            ? (g_leak_siemens * v_leak + g_reset * v_reset + i_offset_amp) / g
            : 0.0;
    sc.drift_volt_per_s[k] = g > 0.0 ? 0.0 : i_offset_amp / c_farad;
    nc.decay[k][s] = static_cast<float>(-std::expm1(-lambda * dt));
    if (g > 0.0) {
      nc.v_inf_volt[k][s] = static_cast<float>(
          (g_leak_siemens * v_leak + g_reset * v_reset + i_offset_amp) / g);
      nc.drift_volt[k][s] = 0.0f;
    } else {
      nc.v_inf_volt[k][s] = 0.0f;
      nc.drift_volt[k][s] = static_cast<float>(i_offset_amp * dt / c_farad);
    }
    // ETD weights of the non-linear currents: phi_1 and phi_2 of -lambda dt
    // (times dt).
    const double x = lambda * dt;
    nc.etd1_s[k][s] =
        static_cast<float>(x > 1e-6 ? -std::expm1(-x) / lambda : dt);
    nc.etd2_s[k][s] = static_cast<float>(
        x > 1e-4 ? dt * (std::expm1(-x) + x) / (x * x) : dt * (0.5 - x / 6.0));
    // enable_pause gates the synaptic input and the exponential term while
    // the reset is on.
    const bool gated = pause && k == kReset;
    const double exp_minus_x = std::exp(-x);
    // COBA inputs go through the non-linear part instead of the exact
    // kernel.
    nc.exc_gain_volt_per_amp[k][s] =
        gated || get(P::excitatory_input_enable_coba_mode)
            ? 0.0f
            : static_cast<float>(ExpKernelIntegral(lambda, 1.0 / out.exc.tau_s,
                                                   dt, exp_minus_x) /
                                 c_farad);
    nc.inh_gain_volt_per_amp[k][s] =
        gated || get(P::inhibitory_input_enable_coba_mode)
            ? 0.0f
            : static_cast<float>(ExpKernelIntegral(lambda, 1.0 / out.inh.tau_s,
                                                   dt, exp_minus_x) /
                                 c_farad);
    nc.coba_exc[k][s] =
        gated ? 0.0f : static_cast<float>(coba_exc_per_volt / c_farad);
    nc.coba_inh[k][s] =
        gated ? 0.0f : static_cast<float>(coba_inh_per_volt / c_farad);
    nc.exp_pref_volt_per_s[k][s] =
        gated || delta_t <= 0.0
            ? 0.0f
            : static_cast<float>(g_leak_siemens * delta_t / c_farad);
    sc.exc_gain_volt_per_amp_s[k] =
        gated || get(P::excitatory_input_enable_coba_mode) ? 0.0
                                                           : 1.0 / c_farad;
    sc.inh_gain_volt_per_amp_s[k] =
        gated || get(P::inhibitory_input_enable_coba_mode) ? 0.0
                                                           : 1.0 / c_farad;
    sc.exp_pref_volt_per_s[k] =
        gated || delta_t <= 0.0 ? 0.0 : g_leak_siemens * delta_t / c_farad;
    sc.coba_exc[k] = gated ? 0.0 : coba_exc_per_volt / c_farad;
    sc.coba_inh[k] = gated ? 0.0 : coba_inh_per_volt / c_farad;
  }
  sc.mu_exc_per_s = 1.0 / out.exc.tau_s;
  sc.mu_inh_per_s = 1.0 / out.inh.tau_s;
  sc.exp_v_t_volt = v_exp;
  sc.exp_inv_slope_per_volt = delta_t > 0.0 ? 1.0 / delta_t : 0.0;
  sc.e_exc_volt = e_rev_exc;
  sc.e_inh_volt = e_rev_inh;
  sc.adapt_a_siemens = adapt_a_siemens;
  sc.adapt_v_ref_volt = v_adapt_ref;
  sc.adapt_rate_per_s = adapt ? 1.0 / tau_w_s : 0.0;
  sc.inv_c_per_farad = 1.0 / c_farad;
  // Stiff region: g_leak / C exp(arg) dt > kStiffRatePerStep, i.e. arg >
  // log(kStiffRatePerStep C / (g_leak dt)). Above the exponent's clamp the
  // term is constant (not stiff), so no refinement is needed there.
  nc.v_stiff_volt[s] = std::numeric_limits<float>::infinity();
  if (delta_t > 0.0 && g_leak_siemens > 0.0) {
    const double arg_stiff =
        std::log(model::kStiffRatePerStep * c_farad / (g_leak_siemens * dt));
    const double arg_max =
        get(P::threshold_enable)
            ? std::min<double>(model::kExpArgMax,
                               (v_threshold - v_exp) / delta_t)
            : model::kExpArgMax;
    sc.exp_arg_max = arg_max;
    if (arg_stiff < arg_max) {
      nc.v_stiff_volt[s] = static_cast<float>(v_exp + arg_stiff * delta_t);
    }
  } else {
    sc.exp_arg_max = model::kExpArgMax;
  }
  nc.exp_v_t_volt[s] = static_cast<float>(v_exp);
  nc.exp_slope_volt[s] = delta_t > 0.0 ? static_cast<float>(delta_t) : 0.0f;
  nc.exp_inv_slope_per_volt[s] =
      delta_t > 0.0 ? static_cast<float>(1.0 / delta_t) : 0.0f;
  // NEST-style numerical safety: V enters the exponent at most at the
  // threshold (V_peak = V_th), and the exponent is at most kExpArgMax.
  nc.exp_arg_max[s] =
      delta_t > 0.0 && get(P::threshold_enable)
          ? static_cast<float>(std::min<double>(
                model::kExpArgMax, (v_threshold - v_exp) / delta_t))
          : model::kExpArgMax;
  nc.coba_exc_rev_volt[s] = static_cast<float>(e_rev_exc);
  nc.coba_inh_rev_volt[s] = static_cast<float>(e_rev_inh);
  // w' = w e^-alpha + a (V - V_ref) (1 - e^-alpha)
  //      + a (V' - V) (e^-alpha - 1 + alpha) / alpha,   alpha = dt / tau_w.
  const double alpha = dt / tau_w_s;
  nc.adapt_a_siemens[s] = static_cast<float>(adapt_a_siemens);
  nc.adapt_v_ref_volt[s] = static_cast<float>(v_adapt_ref);
  nc.adapt_decay[s] = adapt ? static_cast<float>(std::exp(-alpha)) : 1.0f;
  nc.adapt_q1[s] = static_cast<float>(-std::expm1(-alpha));
  nc.adapt_q2[s] =
      static_cast<float>(alpha > 1e-4 ? (std::expm1(-alpha) + alpha) / alpha
                                      : alpha * (0.5 - alpha / 6.0));
  nc.adapt_b_amp[s] = static_cast<float>(adapt_b_amp);
  nc.inv_c_per_farad[s] = static_cast<float>(1.0 / c_farad);
  nc.adapt_or_coba = nc.adapt_or_coba || adapt ||
                     get(P::excitatory_input_enable_coba_mode) ||
                     get(P::inhibitory_input_enable_coba_mode);
  nc.non_linear = nc.non_linear || delta_t > 0.0 || adapt ||
                  get(P::excitatory_input_enable_coba_mode) ||
                  get(P::inhibitory_input_enable_coba_mode);
  nc.bypass_exc[s] = get(P::event_routing_enable_bypass_excitatory) ? 1 : 0;
  nc.bypass_inh[s] = get(P::event_routing_enable_bypass_inhibitory) ? 1 : 0;
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

  // Macro-step tables, for m = 1 .. kMacroTicks ticks, by recurrences over
  // m from the one-tick values (a few library exps per circuit instead of
  // ~400, which were most of a full chip's lowering time). With p =
  // exp(-rate dt), P_m = p^m, and the complements D_m = 1 - P_m, sums of
  // positive terms without cancellation:
  //   P_{m+1} = P_m p,  D_{m+1} = D_m + P_m D_1,
  // and the membrane's response to a decaying current, K(h) =
  // int_0^h exp(-lambda (h - s)) exp(-mu s) ds:
  //   K_{m+1} = exp(-lambda dt) K_m + exp(-mu m dt) K_1.
  // Each step rounds once in double (relative error ~m 1e-16, far below
  // the tables' float resolution).
  struct Decaying {  // P_m and D_m of one rate
    double power = 1.0, complement = 0.0, one_power, one_complement;
    explicit Decaying(double rate_dt)
        : one_power(std::exp(-rate_dt)),
          one_complement(-std::expm1(-rate_dt)) {}
    void Next() {  // m -> m + 1
      complement += power * one_complement;
      power *= one_power;
    }
  };
  const int n = nc.num_slots;
  std::array<Decaying, kNumRegimes> leak = {
      Decaying(sc.lambda_per_s[kFree] * dt),
      Decaying(sc.lambda_per_s[kReset] * dt)};
  Decaying exc(sc.mu_exc_per_s * dt), inh(sc.mu_inh_per_s * dt);
  Decaying adapt_w(dt / tau_w_s), noise(2.0 * dt / tau_noise_s);
  std::array<double, kNumRegimes> exc_kernel1, inh_kernel1, exc_kernel,
      inh_kernel;
  for (int k = 0; k < kNumRegimes; ++k) {
    exc_kernel1[k] = ExpKernelIntegral(sc.lambda_per_s[k], sc.mu_exc_per_s, dt,
                                       leak[k].one_power);
    inh_kernel1[k] = ExpKernelIntegral(sc.lambda_per_s[k], sc.mu_inh_per_s, dt,
                                       leak[k].one_power);
    exc_kernel[k] = 0.0;
    inh_kernel[k] = 0.0;
  }
  for (int m = 1; m <= model::kMacroTicks; ++m) {
    const size_t at = static_cast<size_t>(m - 1) * n + s;
    const double h = m * dt;
    for (int k = 0; k < kNumRegimes; ++k) {
      // (exc.power, inh.power: exp(-mu (m - 1) dt) here.)
      exc_kernel[k] =
          leak[k].one_power * exc_kernel[k] + exc.power * exc_kernel1[k];
      inh_kernel[k] =
          leak[k].one_power * inh_kernel[k] + inh.power * inh_kernel1[k];
    }
    for (Decaying* d :
         {&leak[kFree], &leak[kReset], &exc, &inh, &adapt_w, &noise}) {
      d->Next();
    }
    for (int k = 0; k < kNumRegimes; ++k) {
      const double lambda = sc.lambda_per_s[k];
      const double x = lambda * h;
      const double decay = leak[k].complement;  // 1 - exp(-x)
      nc.m_decay[k][at] = static_cast<float>(decay);
      nc.m_drift_volt[k][at] = static_cast<float>(sc.drift_volt_per_s[k] * h);
      nc.m_exc_gain[k][at] =
          static_cast<float>(exc_kernel[k] * sc.exc_gain_volt_per_amp_s[k]);
      nc.m_inh_gain[k][at] =
          static_cast<float>(inh_kernel[k] * sc.inh_gain_volt_per_amp_s[k]);
      nc.m_etd1_s[k][at] = static_cast<float>(x > 1e-6 ? decay / lambda : h);
      nc.m_etd2_s[k][at] = static_cast<float>(
          x > 1e-4 ? h * (x - decay) / (x * x) : h * (0.5 - x / 6.0));
    }
    nc.m_exc_decay[at] = static_cast<float>(exc.power);
    nc.m_inh_decay[at] = static_cast<float>(inh.power);
    const double alpha_m = h / tau_w_s;
    nc.m_adapt_decay[at] = adapt ? static_cast<float>(adapt_w.power) : 1.0f;
    nc.m_adapt_q1[at] = static_cast<float>(adapt_w.complement);
    nc.m_adapt_q2[at] = static_cast<float>(
        alpha_m > 1e-4 ? (alpha_m - adapt_w.complement) / alpha_m
                       : alpha_m * (0.5 - alpha_m / 6.0));
    nc.m_noise_volt[at] = static_cast<float>(model::kMembraneNoiseVolt *
                                             std::sqrt(noise.complement));
  }
  nc.coarse_ok[s] = !(get(P::excitatory_input_enable_coba_mode) ||
                      get(P::inhibitory_input_enable_coba_mode) ||
                      nc.bypass_exc[s] || nc.bypass_inh[s]);
  double v_guard = static_cast<double>(nc.v_threshold_volt[s]) -
                   model::kCoarseThresholdMarginVolt;
  if (delta_t > 0.0 && g_leak_siemens > 0.0) {
    // The exponential term's rate g_leak / C exp(arg) times a macro step
    // stays below model::kCoarseRate.
    v_guard = std::min(
        v_guard,
        v_exp + delta_t * std::log(model::kCoarseRate * c_farad /
                                   (g_leak_siemens * model::kMacroTicks * dt)));
  }
  nc.v_guard_volt[s] = static_cast<float>(v_guard);
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
    nc.etd1_s[k].resize(n);
    nc.etd2_s[k].resize(n);
    nc.exp_pref_volt_per_s[k].resize(n);
    nc.coba_exc[k].resize(n);
    nc.coba_inh[k].resize(n);
  }
  nc.exp_v_t_volt.resize(n);
  nc.exp_inv_slope_per_volt.resize(n);
  nc.exp_slope_volt.resize(n);
  nc.exp_arg_max.resize(n);
  nc.coba_exc_rev_volt.resize(n);
  nc.coba_inh_rev_volt.resize(n);
  nc.adapt_a_siemens.resize(n);
  nc.adapt_v_ref_volt.resize(n);
  nc.adapt_decay.resize(n);
  nc.adapt_q1.resize(n);
  nc.adapt_q2.resize(n);
  nc.adapt_b_amp.resize(n);
  nc.inv_c_per_farad.resize(n);
  nc.v_stiff_volt.resize(n);
  nc.stiff.resize(n);
  const size_t tables = static_cast<size_t>(model::kMacroTicks) * n;
  for (int k = 0; k < kNumRegimes; ++k) {
    nc.m_decay[k].resize(tables);
    nc.m_drift_volt[k].resize(tables);
    nc.m_exc_gain[k].resize(tables);
    nc.m_inh_gain[k].resize(tables);
    nc.m_etd1_s[k].resize(tables);
    nc.m_etd2_s[k].resize(tables);
  }
  nc.m_exc_decay.resize(tables);
  nc.m_inh_decay.resize(tables);
  nc.m_adapt_decay.resize(tables);
  nc.m_adapt_q1.resize(tables);
  nc.m_adapt_q2.resize(tables);
  nc.m_noise_volt.resize(tables);
  nc.coarse_ok.resize(n);
  nc.v_guard_volt.resize(n);
  nc.bypass_exc.resize(n);
  nc.bypass_inh.resize(n);
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

// -log(u) for 0 < u < 1, branch-free so that a loop of them vectorises
// (std::log is a call per value): u = m 2^e with m in [sqrt(1/2),
// sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716, by
// its series to s^21 (truncation < 3e-17 relative; over 2e7 uniforms the
// result was within 2 units in the last place of std::log's, and the
// benchmark's input spikes, all fingerprints, are unchanged).
inline double MinusLogUnit(double u) {
  const uint64_t bits = std::bit_cast<uint64_t>(u);  // u > 0: sign bit 0
  double m = std::bit_cast<double>((bits & 0x000FFFFFFFFFFFFFull) |
                                   0x3FF0000000000000ull);  // [1, 2)
  // The exponent as a double without an integer conversion: 2^52 + e_biased
  // as the bits of a double, minus 2^52.
  double e = std::bit_cast<double>((bits >> 52) | 0x4330000000000000ull) -
             (0x1.0p52 + 1023.0);
  const bool above = m > 1.4142135623730951;
  m = above ? 0.5 * m : m;
  e = above ? e + 1.0 : e;
  const double s = (m - 1.0) / (m + 1.0);
  const double z = s * s;
  // 1 + z / 3 + z^2 / 5 + ... + z^10 / 21 (Horner).
  double series = 1.0 / 21.0;
  series = series * z + 1.0 / 19.0;
  series = series * z + 1.0 / 17.0;
  series = series * z + 1.0 / 15.0;
  series = series * z + 1.0 / 13.0;
  series = series * z + 1.0 / 11.0;
  series = series * z + 1.0 / 9.0;
  series = series * z + 1.0 / 7.0;
  series = series * z + 1.0 / 5.0;
  series = series * z + 1.0 / 3.0;
  series = series * z + 1.0;
  constexpr double kLn2 = 0.6931471805599453;
  return -(e * kLn2 + 2.0 * s * series);
}

// Draws k0 + i for i < kDrawBatch of a Poisson source's stream (its
// interspike intervals in units of the mean): -log(Uniform(Hash(stream, k)))
// for stream_mixed = Mix64(stream), vectorised (hash, uniform and log of a
// batch at once; one std::log per spike was ~40 % of the input spikes'
// generation).
constexpr int kDrawBatch = 32;
HXEMU_VECTOR_CLONES void ExponentialDraws(uint64_t stream_mixed, uint64_t k0,
                                          double* __restrict out) {
  for (int i = 0; i < kDrawBatch; ++i) {
    const uint64_t h = random::Mix64(
        random::Fold(stream_mixed, k0 + static_cast<uint64_t>(i)));
    out[i] = MinusLogUnit(random::Uniform(h));
  }
}

// On-chip Poisson (background spike source), as pynn_brainscales configures
// it: hwrate = rate x size, Rate = round(255 hwrate / f_bg), Period =
// round(f_bg / hwrate x (Rate + 1) / 256) - 1 (clamped to 16 bit). Every
// Period + 1 cycles of the 250 MHz clock the source fires with probability
// (Rate + 1) / 256 and labels the spike with a uniformly random neuron of
// the population. The gaps between firing periods are drawn geometrically
// (same distribution, one draw per spike). The stream depends only on the
// population's seed, like the chip's generator.
absl::Status AppendOnChipPoissonSpikes(const Population& pop,
                                       int64_t node_begin, const Network& net,
                                       int64_t max_spikes, int p,
                                       std::vector<InputSpike>& out) {
  const hxemu::v1::SpikeSourcePoissonOnChip& s =
      pop.spike_source_poisson_on_chip();
  const double hwrate = s.rate_hz() * pop.size();
  if (hwrate <= 0.0) return absl::OkStatus();
  const double rate_code =
      std::clamp(std::round(255.0 * hwrate / kBackgroundClockHz), 0.0, 255.0);
  const double period = std::clamp(
      std::round(kBackgroundClockHz / hwrate * (rate_code + 1.0) / 256.0) - 1.0,
      0.0, 65535.0);
  const double p_fire = (rate_code + 1.0) / 256.0;
  // Background clock cycles per 8 ns tick.
  const double cycles_per_tick = kBackgroundClockHz * model::kTickS;
  const double end_cycle =
      static_cast<double>(net.runtime_ticks) * cycles_per_tick;
  const uint64_t stream =
      random::Hash(random::Key(random::Domain::kOnChipPoisson), s.seed());
  const double log_miss = std::log1p(-std::min(p_fire, 1.0 - 1e-12));
  double period_index = 0.0;
  for (uint64_t k = 0;; ++k) {
    // Periods without a spike before the next one: geometric(p_fire).
    if (p_fire < 1.0) {
      period_index += std::floor(
          std::log(random::Uniform(random::Hash(stream, 2 * k))) / log_miss);
    }
    const double cycle = period_index * (period + 1.0);
    if (cycle >= end_cycle) break;
    const int64_t tick = static_cast<int64_t>(cycle / cycles_per_tick);
    const int64_t neuron = std::min<int64_t>(
        static_cast<int64_t>(random::Uniform(random::Hash(stream, 2 * k + 1)) *
                             pop.size()),
        pop.size() - 1);
    out.push_back({static_cast<uint32_t>(tick),
                   static_cast<int32_t>(node_begin + neuron)});
    if (static_cast<int64_t>(out.size()) > max_spikes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "populations[", p, "].spike_source_poisson_on_chip: the generated ",
          "input spikes exceed the limit max_input_spikes"));
    }
    period_index += 1.0;
  }
  return absl::OkStatus();
}

// The digits of an LSD radix sort on keys of `key_bits` bits: as few passes
// as digits of at most 13 bits allow (the counts, at most 32 KiB, stay in
// L1 / L2).
struct RadixDigits {
  explicit RadixDigits(int key_bits)
      : passes((key_bits + 12) / 13),
        bits(passes > 0 ? (key_bits + passes - 1) / passes : 0),
        buckets(size_t{1} << bits) {}
  size_t Bucket(uint64_t key, int pass) const {
    return pass * buckets + ((key >> (pass * bits)) & (buckets - 1));
  }
  int passes, bits;
  size_t buckets;
};

// The scatter passes of the radix sort, `counts` holding every pass's
// digit counts (RadixDigits::Bucket): stable, in place in `spikes`.
template <typename Key>
void RadixScatter(std::vector<InputSpike>& spikes, const RadixDigits& digits,
                  Key key, std::vector<uint32_t>& counts) {
  for (int pass = 0; pass < digits.passes; ++pass) {
    uint32_t sum = 0;  // counts -> first positions
    for (size_t d = 0; d < digits.buckets; ++d) {
      uint32_t& c = counts[pass * digits.buckets + d];
      const uint32_t here = c;
      c = sum;
      sum += here;
    }
  }
  // (Not a std::vector: its value-initialisation was a tenth of the sort.)
  std::unique_ptr<InputSpike[]> buffer(new InputSpike[spikes.size()]);
  InputSpike* from = spikes.data();
  InputSpike* to = buffer.get();
  for (int pass = 0; pass < digits.passes; ++pass) {
    uint32_t* first = counts.data() + pass * digits.buckets;
    const int shift = pass * digits.bits;
    const size_t mask = digits.buckets - 1;
    for (size_t i = 0; i < spikes.size(); ++i) {
      to[first[(key(from[i]) >> shift) & mask]++] = from[i];
    }
    std::swap(from, to);
  }
  if (from != spikes.data())
    std::copy(from, from + spikes.size(), spikes.data());
}

// Sorts by (tick, node), as std::sort with InputSpike's operator< would
// (ticks in [0, tick_bound)), by an LSD radix sort: linear in the number of
// spikes (a 2 ms run of the benchmark load has 100 000, where std::sort took
// 4 % of the run). Sources append their spikes node by node, each in the
// order of time: in that (node, tick) order a stable sort by the tick alone
// gives the (tick, node) order, with a key of the tick's bits only (a full
// chip's 256 sources over 2 to 8 ms: 2 passes), counted in the same read
// that checks the order. Otherwise (on-chip Poisson sources, spike times
// given out of order) the key is tick * 2^b + node (b = bits of the largest
// node).
void SortInputSpikes(std::vector<InputSpike>& spikes, int64_t tick_bound) {
  const size_t n = spikes.size();
  if (n < 2) return;
  const int tick_bits = std::bit_width(
      static_cast<uint64_t>(std::max<int64_t>(tick_bound, 1) - 1));
  if (n > std::numeric_limits<uint32_t>::max()) {
    std::sort(spikes.begin(), spikes.end());  // (not with validated limits)
    return;
  }
  const RadixDigits by_tick(tick_bits);
  std::vector<uint32_t> counts(by_tick.passes * by_tick.buckets, 0);
  // (Bitwise, not && and ||: one branch-free read.)
  int node_major = 1;
  int in_bound = 1;
  for (size_t i = 0; i < n; ++i) {
    const InputSpike& s = spikes[i];
    const InputSpike& before = spikes[i > 0 ? i - 1 : 0];
    node_major &= static_cast<int>(i == 0) |
                  static_cast<int>(before.node < s.node) |
                  (static_cast<int>(before.node == s.node) &
                   static_cast<int>(before.tick <= s.tick));
    in_bound &= static_cast<int>(s.tick < tick_bound);
    const uint64_t key = s.tick;
    for (int pass = 0; pass < by_tick.passes; ++pass) {
      ++counts[by_tick.Bucket(key, pass)];
    }
  }
  if (!in_bound) {
    std::sort(spikes.begin(), spikes.end());
    return;
  }
  if (node_major) {
    RadixScatter(
        spikes, by_tick,
        [](const InputSpike& s) { return static_cast<uint64_t>(s.tick); },
        counts);
    return;
  }
  int32_t max_node = 0;
  for (const InputSpike& s : spikes) max_node = std::max(max_node, s.node);
  const int node_bits = std::bit_width(static_cast<uint64_t>(max_node));
  auto key = [node_bits](const InputSpike& s) {
    return (static_cast<uint64_t>(s.tick) << node_bits) |
           static_cast<uint64_t>(s.node);
  };
  const RadixDigits by_key(node_bits + tick_bits);
  counts.assign(by_key.passes * by_key.buckets, 0);
  for (const InputSpike& s : spikes) {
    for (int pass = 0; pass < by_key.passes; ++pass) {
      ++counts[by_key.Bucket(key(s), pass)];
    }
  }
  RadixScatter(spikes, by_key, key, counts);
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
    out.push_back({static_cast<uint32_t>(tick), static_cast<int32_t>(node)});
  };
  if (pop.cell_type() == hxemu::v1::CELL_TYPE_SPIKE_SOURCE_ARRAY) {
    const auto& trains = pop.spike_source_array().spike_times();
    for (uint32_t n = 0; n < pop.size(); ++n) {
      const auto& times = trains[trains.size() == 1 ? 0 : n].times_ms();
      for (double t : times) push(SpikeTick(t), node_begin + n);
    }
    return absl::OkStatus();
  }
  if (pop.cell_type() == hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP) {
    return AppendOnChipPoissonSpikes(pop, node_begin, net, max_spikes, p, out);
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
  alignas(64) std::array<double, kDrawBatch> draws;
  for (uint32_t n = 0; n < pop.size(); ++n) {
    const uint64_t stream = random::Hash(random::Key(random::Domain::kPoisson),
                                         net.seed, static_cast<uint64_t>(p), n);
    const uint64_t stream_mixed = random::Mix64(stream);
    double t_ms = s.start_ms();
    for (uint64_t k = 0;; k += kDrawBatch) {
      // Draw k + i is -log(Uniform(Hash(stream, k + i))).
      ExponentialDraws(stream_mixed, k, draws.data());
      int i = 0;
      for (; i < kDrawBatch; ++i) {
        t_ms += draws[i] * mean_isi_ms;
        if (t_ms >= end_ms) break;
        push(SpikeTick(t_ms), node_begin + n);
        if (static_cast<int64_t>(out.size()) > max_spikes) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "populations[", p, "].spike_source_poisson: the generated ",
              "input spikes exceed the limit max_input_spikes"));
        }
      }
      if (i < kDrawBatch) break;
    }
  }
  return absl::OkStatus();
}

}  // namespace

FixedPattern::FixedPattern(uint32_t chip_id, bool enabled)
    : chip_id_(chip_id), enabled_(enabled) {
  if (!enabled_) return;
  circuit_normal_.resize(static_cast<size_t>(kNumNeuronCircuits) *
                         kNumCircuitQuantities);
  circuit_ready_.assign(kNumNeuronCircuits, 0);
  synapse_gain_.resize(SynapseIndex(kNumNeuronRows, 0));
  row_ready_.assign(
      static_cast<size_t>(kNumNeuronRows) * kSynapseRowsPerHemisphere, 0);
}

void FixedPattern::Prepare(const MappedExperiment& mapped) {
  if (!enabled_) return;
  const std::lock_guard<std::mutex> lock(mu_);
  const auto clipped_normal = [](uint64_t key) {
    return std::clamp(random::Gaussian(key), -model::kMismatchClipSigma,
                      model::kMismatchClipSigma);
  };
  for (const std::vector<int>& circuits : mapped.circuits) {
    for (const int c : circuits) {
      if (circuit_ready_[c]) continue;
      for (int q = 0; q < kNumCircuitQuantities; ++q) {
        circuit_normal_[static_cast<size_t>(c) * kNumCircuitQuantities + q] =
            clipped_normal(random::Hash(random::Key(random::Domain::kMismatch),
                                        chip_id_, static_cast<uint64_t>(c),
                                        static_cast<uint64_t>(q)));
      }
      circuit_ready_[c] = 1;
    }
  }
  const uint64_t synapse_key =
      random::Hash(random::Key(random::Domain::kSynapseMismatch), chip_id_);
  for (const PlacedSynapse& ps : mapped.routing->synapses) {
    const size_t row =
        static_cast<size_t>(ps.hemisphere) * kSynapseRowsPerHemisphere + ps.row;
    if (row_ready_[row]) continue;
    double* gains = synapse_gain_.data() + SynapseIndex(ps.hemisphere, ps.row);
    for (int column = 0; column < kNumNeuronColumns; ++column) {
      gains[column] = 1.0 + model::kSynapseWeightSigma *
                                clipped_normal(random::Hash(
                                    synapse_key, ps.hemisphere, ps.row,
                                    static_cast<uint64_t>(column)));
    }
    row_ready_[row] = 1;
  }
}

absl::StatusOr<Network> LowerNetwork(const Experiment& e,
                                     const MappedExperiment& mapped,
                                     const ExperimentLimits& limits,
                                     const FixedPattern& mm,
                                     const ModelOptions& options) {
  const uint32_t chip_id = mm.chip_id();
  Network net;
  net.madc_noise = options.noise;
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
  std::vector<std::vector<GivenParameter>> parameters(num_pops);
  for (int p = 0; p < num_pops; ++p) {
    if (!mapped.circuits[p].empty()) {
      parameters[p] = ResolveParameters(e.populations(p));
    }
  }
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
    lowered[s] = LowerNeuron(NeuronValues(parameters[p], n), mm, c, s, nc);
    if (!options.noise) {
      nc.noise_step_volt[s] = 0.0f;
      for (int m = 0; m < model::kMacroTicks; ++m) {
        nc.m_noise_volt[static_cast<size_t>(m) * num_slots + s] = 0.0f;
      }
    }
    // Free-running start: uniform between the reset potential and the leak
    // potential or, if the threshold is below the leak (a neuron that fires
    // on its own), the threshold: where a running membrane can be. (Up to
    // the leak, the neurons that start above their threshold would all fire
    // at once and start in phase.) Drawn from (seed, chip, circuit).
    const double u = !options.random_start
                         ? 0.0
                         : random::Uniform(random::Hash(
                               random::Key(random::Domain::kInitialState),
                               e.seed(), chip_id, static_cast<uint64_t>(c)));
    const double v_top = std::min(
        nc.v_leak_volt[s], std::max(static_cast<double>(nc.v_threshold_volt[s]),
                                    nc.v_reset_volt[s]));
    nc.v_start_volt[s] = static_cast<float>(nc.v_reset_volt[s] +
                                            u * (v_top - nc.v_reset_volt[s]));
    nc.noise_seed[s] = static_cast<uint32_t>(random::Hash(
                           random::Key(random::Domain::kMembraneNoise),
                           e.seed(), chip_id, static_cast<uint64_t>(c))) |
                       1u;
    ++s;
  }

  // Connectivity (CSR by pre node), two passes: count, then fill. A
  // connection without synapses (weight 0) has no effect at all.
  const Routing& routing = *mapped.routing;
  Connectivity& conn = net.connectivity;
  // (The counts and the fill positions of a run of connections from the
  // same source are kept in a register, not incremented in memory entry
  // after entry: each such increment waits for the store before it.)
  conn.row_begin.assign(num_nodes + 1, 0);
  for (int j = 0; j < e.projections_size(); ++j) {
    const hxemu::v1::Projection& proj = e.projections(j);
    const std::vector<int64_t>& syn = routing.synapse_begin[j];
    const int64_t pre_begin = net.node_begin[proj.pre_population()];
    int64_t run_pre = -1;
    int64_t run_count = 0;
    for (int k = 0; k < proj.pre_indices_size(); ++k) {
      if (syn[k + 1] == syn[k]) continue;
      const int64_t pre = pre_begin + proj.pre_indices(k);
      if (pre != run_pre) {
        if (run_pre >= 0) conn.row_begin[run_pre + 1] += run_count;
        run_pre = pre;
        run_count = 0;
      }
      ++run_count;
    }
    if (run_pre >= 0) conn.row_begin[run_pre + 1] += run_count;
  }
  for (int64_t u = 0; u < num_nodes; ++u) {
    conn.row_begin[u + 1] += conn.row_begin[u];
  }
  conn.target.resize(conn.row_begin[num_nodes]);
  conn.amplitude_amp.resize(conn.row_begin[num_nodes]);
  std::vector<int64_t> fill(conn.row_begin.begin(), conn.row_begin.end() - 1);
  // Every synapse DAC mirrors the chip-global synapse DAC bias current, so
  // the current per weight LSB is linear in it. Exactly 1.0 when unset or
  // nominal: the amplitudes are then bit-identical to the model without it.
  const double dac_scale = e.has_synapse_dac_bias()
                               ? static_cast<double>(e.synapse_dac_bias()) /
                                     model::kSynapseDacBiasNominal
                               : 1.0;
  for (int j = 0; j < e.projections_size(); ++j) {
    const hxemu::v1::Projection& proj = e.projections(j);
    const std::vector<int64_t>& syn = routing.synapse_begin[j];
    const bool inhibitory =
        proj.receptor_type() == hxemu::v1::RECEPTOR_TYPE_INHIBITORY;
    const int64_t pre_begin = net.node_begin[proj.pre_population()];
    const int64_t post_begin = net.node_begin[proj.post_population()];
    int64_t run_pre = -1;
    int64_t run_fill = 0;  // fill[run_pre], while in the run
    for (int k = 0; k < proj.pre_indices_size(); ++k) {
      if (syn[k + 1] == syn[k]) continue;
      const int64_t pre = pre_begin + proj.pre_indices(k);
      if (pre != run_pre) {
        if (run_pre >= 0) fill[run_pre] = run_fill;
        run_pre = pre;
        run_fill = fill[pre];
      }
      const int32_t post_slot = slot_of_node[post_begin + proj.post_indices(k)];
      const SynapticInput& in =
          inhibitory ? lowered[post_slot].inh : lowered[post_slot].exc;
      // |w| > 63 is spread over several 6-bit synapses (routing.h); their
      // currents add up, each with its synapse's own DAC gain mismatch.
      double weight_sum = 0.0;
      for (int64_t q = syn[k]; q < syn[k + 1]; ++q) {
        const PlacedSynapse& ps = routing.synapses[q];
        weight_sum += ps.weight * mm.SynapseGain(ps);
      }
      const int64_t e_index = run_fill++;
      conn.target[e_index] = inhibitory ? post_slot + num_slots : post_slot;
      conn.amplitude_amp[e_index] =
          static_cast<float>(weight_sum * in.amp_per_weight * dac_scale);
    }
    if (run_pre >= 0) fill[run_pre] = run_fill;
  }

  conn.contiguous.assign(num_nodes, 0);
  conn.first_target.assign(num_nodes, -1);
  for (int64_t u = 0; u < num_nodes; ++u) {
    if (conn.row_begin[u + 1] > conn.row_begin[u]) {
      conn.first_target[u] = conn.target[conn.row_begin[u]];
    }
    bool run = true;
    for (int64_t q = conn.row_begin[u] + 1; q < conn.row_begin[u + 1] && run;
         ++q) {
      run = conn.target[q] == conn.target[q - 1] + 1;
    }
    conn.contiguous[u] = run ? 1 : 0;
  }
  for (int32_t t : conn.target) {
    nc.inhibitory_input = nc.inhibitory_input || t >= num_slots;
  }
  for (int slot = 0; slot < num_slots; ++slot) {
    conn.any_bypass =
        conn.any_bypass || nc.bypass_exc[slot] != 0 || nc.bypass_inh[slot] != 0;
  }

  // Input spikes of all sources, sorted by (step, node). Validation bounds
  // the expected count; max_generated bounds the actual one (Poisson
  // fluctuations) with a wide margin. Room for the expected count and 6
  // sigma of its fluctuation is reserved up front (growing the array by
  // doubling cost ~2 % of a 2 ms benchmark run).
  const int64_t max_generated =
      limits.max_input_spikes < std::numeric_limits<int64_t>::max() / 4
          ? 2 * limits.max_input_spikes + 1024
          : std::numeric_limits<int64_t>::max();
  const double expected = mapped.expected_input_spikes;
  net.input_spikes.reserve(static_cast<size_t>(
      std::min<double>(expected + 6.0 * std::sqrt(expected) + 1024.0,
                       static_cast<double>(max_generated) + 1.0)));
  for (int p = 0; p < num_pops; ++p) {
    if (e.populations(p).cell_type() == hxemu::v1::CELL_TYPE_HX_NEURON)
      continue;
    if (absl::Status st = AppendSourceSpikes(e, p, net.node_begin[p], net,
                                             max_generated, net.input_spikes);
        !st.ok()) {
      return st;
    }
  }
  SortInputSpikes(net.input_spikes, net.runtime_ticks);

  net.spike_train_of_node.assign(num_nodes, -1);
  for (size_t i = 0; i < mapped.spikes.size(); ++i) {
    net.spike_train_of_node[net.node_begin[mapped.spikes[i].population] +
                            mapped.spikes[i].neuron] = static_cast<int32_t>(i);
  }
  for (const MadcRecording& m : mapped.madc) {
    net.madc.push_back(
        {slot_of_node[net.node_begin[m.population] + m.neuron], m.observable});
    // The MADC samples every 34 ns: its neurons step every tick.
    nc.coarse_ok[net.madc.back().slot] = 0;
  }
  // Macro steps unless an on-chip neuron drives synapses.
  net.macro_ticks =
      options.macro_steps && !options.fine_substeps ? model::kMacroTicks : 1;
  nc.refine_every_step = options.fine_substeps;
  nc.substep_rate = options.fine_substeps ? model::kReferenceSubStepRate
                                          : model::kSubStepRate;
  nc.max_substep_s = options.fine_substeps
                         ? model::kStepS / model::kReferenceSubStepsPerStep
                         : model::kStepS;
  for (int slot = 0; slot < num_slots; ++slot) {
    const int64_t u = nc.node[slot];
    if (conn.row_begin[u + 1] > conn.row_begin[u]) net.macro_ticks = 1;
  }
  // Chip-level readout mismatch (not per circuit).
  const uint64_t readout_key =
      random::Hash(random::Key(random::Domain::kReadoutMismatch), chip_id);
  const double gain_z =
      !mm.enabled()
          ? 0.0
          : std::clamp(random::Gaussian(random::Hash(readout_key, 0)),
                       -model::kMismatchClipSigma, model::kMismatchClipSigma);
  const double offset_z =
      !mm.enabled()
          ? 0.0
          : std::clamp(random::Gaussian(random::Hash(readout_key, 1)),
                       -model::kMismatchClipSigma, model::kMismatchClipSigma);
  net.madc_lsb_per_volt = kMadcMaxCode / model::kMadcFullScaleVolt *
                          (1.0 + model::kMadcGainSigma * gain_z);
  net.madc_offset_lsb = model::kMadcOffsetSigmaLsb * offset_z;

  // CADC: per-circuit transfer, read steps.
  net.cadc_noise = options.noise;
  net.cadc_ticks = mapped.cadc_ticks;
  net.cadc_lsb_per_volt.resize(num_slots);
  net.cadc_offset_lsb.resize(num_slots);
  for (int slot = 0; slot < num_slots; ++slot) {
    const int c = nc.circuit[slot];
    net.cadc_lsb_per_volt[slot] =
        GainFactor(mm, c, Quantity::kCadcGain, model::kCadcGainSigma) /
        model::kCadcVoltPerLsb;
    net.cadc_offset_lsb[slot] = model::kCadcOffsetSigmaLsb *
                                MismatchNormal(mm, c, Quantity::kCadcOffset);
  }
  return net;
}

}  // namespace hxemu::emulator
