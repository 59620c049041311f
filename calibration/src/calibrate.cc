// File: calibrate.cc
//
// The "what" of the calibration: for each target, which parameter is
// searched, how the neuron is configured while it is measured and which
// measurement is compared with the target. The "how" (the search) is
// algorithm.h; the measurements are measurement.h.
//
// Order (calix spiking/neuron.py, adapted to what the emulator models):
//   refractory time (spikes) -> tau_syn exc, inh (MADC fits) -> leak
//   potential (CADC) -> tau_mem (MADC fit) -> reset potential (CADC) ->
//   threshold (CADC maximum) -> synaptic input strength exc, inh (CADC,
//   matched to the median at the target bias).
#include "hxemu/calibration/calibrate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <optional>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "hxemu/calibration/algorithm.h"
#include "hxemu/calibration/measurement.h"
#include "hxemu/calibration/targets.h"
#include "hxemu/emulator/chip_constants.h"
#include "status_macros.h"

#ifndef HXEMU_CALIBRATION_EMULATOR_VERSION
#error "HXEMU_CALIBRATION_EMULATOR_VERSION must be set by the build"
#endif

namespace hxemu::calibration {
namespace {

using P = ::hxemu::emulator::NeuronParameter;
using ::hxemu::v1::Calibration;
using ::hxemu::v1::CircuitMeasurement;

using Configs = std::vector<ParameterValues>;

// ---- Measurement protocols [ms hardware] -----------------------------------
// CADC reads of a settled potential: the warm-up (20 us) plus 15 us is more
// than 7 membrane time constants at the fast leak used for the leak search,
// and 5 us between reads decorrelates the membrane noise.
constexpr double kSettledFromMs = 0.015;
constexpr double kSettledStepMs = 0.005;
constexpr int kSettledReads = 9;
// Threshold: dense reads of the spiking neuron, every 2 ticks (16 ns) for
// 40 us (several spike cycles); the largest read is the threshold.
constexpr double kThresholdFromMs = 0.002;
constexpr double kThresholdStepMs = 2 * emulator::kTickNs * 1e-6;
constexpr double kThresholdWindowMs = 0.040;
// The threshold is the mean of this many largest reads.
constexpr int kThresholdTopReads = 10;
// Refractory time: a neuron whose reset lies above its threshold fires as
// soon as its refractory period ends; 30 us give >= 14 intervals.
constexpr double kRefractoryRunMs = 0.030;
// Stimulus time of the MADC and step measurements; the samples before it
// are the baseline.
constexpr double kStimulusMs = 0.002;
constexpr double kBaselineFromMs = 0.0002;

// ---- Fixed settings during measurements ------------------------------------
// A strong reset (calix: reset bias high, multiplication on): tau_reset is
// ~0.14 us, so the membrane sits at the reset potential during the reset.
constexpr int32_t kResetBias = 1022;
// Fast leak for potential searches (settles in ~5 us).
constexpr int32_t kFastLeakBias = 1022;
// High leak / reset code for "reset above threshold" (refractory search) and
// "leak above threshold" (threshold search).
constexpr int32_t kHighPotentialCode = 1000;
// Bias of the synaptic OTA while tau_syn is measured (its readout stays well
// inside the MADC range at weight 63).
constexpr int32_t kTauSynGm = 400;
constexpr int32_t kTauSynWeight = 63;
// tau_mem is measured from a train of kicks: fast (tau_syn ~2 us at the
// largest bias), strong excitatory events; the fit of each decay starts
// 11 us (> 5 tau_syn) after the kick, when the kick's own synaptic current
// is over.
constexpr int32_t kKickTauCode = 1022;
constexpr int32_t kKickGm = 1022;
constexpr double kKickFitDelayMs = 0.011;
// Kicks per measurement: the membrane noise (correlated over tau_mem) of one
// decay gives ~4 % error on tau_mem; the pooled fit over 40 kicks ~0.5 %.
constexpr int kKicks = 40;
// The fit uses read[j] - read[j + lag] (lag x read step = tau_mem target),
// which does not depend on the baseline (see KickTrainProtocol).
constexpr int kKickDifferenceLag = 20;
// Kick weight at C = 63 (scaled with the capacitance code): 1100 x 1022 x
// 0.8 pA x 1.96 us = 1.76 pC, about 0.77 V on 2.3 pF, of which the membrane
// reaches ~0.5 V above the leak (with the leak at 80 CADC LSB = 0.42 V it
// stays below the 1.2 V rail).
constexpr int32_t kKickWeightAt63 = 1100;
// Weight of the synaptic-strength test input at gm 500, tau_syn 10 us,
// C = 63 (scaled inversely with gm target and tau_syn target): a step of
// some 30 CADC LSB.
constexpr double kStepWeightNominal = 75.0;

// COBA modulation bias while the reversal potential is searched (V_coba =
// 90 / 300 = 0.3 V nominal; the reversal potential does not depend on it).
constexpr int32_t kCobaStartBias = 300;
// A step smaller than this means "no input": the start lies beyond the
// reversal potential [CADC LSB]. 5 sigma of the step's noise (~0.5 LSB: the
// CADC read noise over 8 reads, and the membrane noise, a random walk with
// the leak off, over the 80 us between the reads). At 1 LSB, about one
// measurement in twenty took noise for input, and the fitted line then sent
// the search the wrong way (circuit 0 of chip 0 missed e_rev_inh by 14 LSB).
constexpr double kCobaQuietLsb = 2.5;
// Highest excitatory reversal potential that is calibrated as asked [CADC
// LSB]: every circuit reaches it within 3 LSB (v_rev_coba 1022 gives ~190
// LSB, less with mismatch; at 175 a few circuits miss). calix's rule
// (ccalix neuron_calib_target.h): a target beyond it is calibrated at this
// lower value.
constexpr double kCobaMaxReversalExcCadc = 170.0;

// ---- Success tolerances ----------------------------------------------------
constexpr double kCobaReversalToleranceCadc = 3.0;
constexpr double kPotentialToleranceCadc = 1.0;
constexpr double kTauRelTolerance = 0.02;
constexpr double kStrengthRelTolerance = 0.03;
constexpr double kRefractoryToleranceUs = 0.5 * emulator::kTickNs * 1e-3;

std::vector<double> Times(double from_ms, double step_ms, int n) {
  std::vector<double> t(n);
  for (int i = 0; i < n; ++i) t[i] = from_ms + i * step_ms;
  return t;
}

// Weight scaled from C = 63 to the target capacitance code (charge per
// voltage step is proportional to C = 0.1 pF + code x 2.2 pF / 63).
double CapacitanceScale(int32_t cap_code) {
  return (0.1 + cap_code * 2.2 / 63.0) / 2.3;
}

// Every measurement runs under the target synapse DAC bias (as calix sets
// it before the neuron calibration), which scales the current per weight
// LSB by bias / 600. Stimulus weights are scaled by the inverse so that the
// responses keep their nominal size; exactly 1.0 at the default 600, so the
// default calibration is unchanged.
double DacBiasScale(const ResolvedTargets& t) {
  return 600.0 / t.synapse_dac_bias;
}

// A stimulus weight `nominal` (for bias 600) under the target bias
// [hardware LSB], >= 1. A low bias raises it at most to what one source
// reaches one neuron with (64 rows of one PADI bus x 63), never below the
// nominal weight (so bias 600 keeps exactly the nominal weight).
int32_t BiasedWeight(double nominal, const ResolvedTargets& t) {
  constexpr int64_t kMaxStimulusWeight =
      int64_t{emulator::kSynapseRowsPerPadiBus} * emulator::kMaxSynapseWeight;
  const int64_t unbiased = std::lround(nominal);
  const int64_t biased = std::lround(nominal * DacBiasScale(t));
  return static_cast<int32_t>(std::max<int64_t>(
      1, std::min(biased, std::max(unbiased, kMaxStimulusWeight))));
}

using MeasureConfigs = std::function<absl::StatusOr<std::vector<double>>(
    Measurer&, const Configs&)>;

// One calibration target: a parameter, how to configure the neuron while
// measuring it, what to measure and when a result counts as a success.
struct Calib {
  absl::string_view target;  // reported in failed_targets
  P parameter;
  SearchSpace space;
  BinarySearchOptions search;
  // Absolute tolerance, or relative to the target if `relative`.
  double tolerance = 0.0;
  bool relative = false;
  // Temporary settings for the measurement (applied to a copy).
  std::function<void(ParameterValues&)> prepare;
  MeasureConfigs measure;
  // The target value (strength: replaced by the median at the target bias).
  double target_value = 0.0;
};

enum class Quantity {
  kRefractory,
  kTauSynExc,
  kTauSynInh,
  kLeak,
  kTauMem,
  kReset,
  kThreshold,
  kStrengthExc,
  kStrengthInh,
};

Calib RefractoryCalib(const ResolvedTargets& t) {
  Calib c;
  c.target = "refractory_time_us";
  c.parameter = P::refractory_period_refractory_time;
  c.space = {0, 255, Slope::kIncreasing};
  c.tolerance = kRefractoryToleranceUs + 1e-9;
  c.target_value = t.refractory_time_us;
  c.prepare = [](ParameterValues& v) {
    At(v, P::threshold_enable) = 1;
    At(v, P::threshold_v_threshold) = 0;
    At(v, P::reset_v_reset) = kHighPotentialCode;
    At(v, P::leak_v_leak) = kHighPotentialCode;
  };
  c.measure = [](Measurer& m, const Configs& cfg) {
    return m.MeanIsiUs(cfg, kRefractoryRunMs);
  };
  return c;
}

Calib TauSynCalib(const ResolvedTargets& t, bool excitatory) {
  const double target = excitatory ? t.tau_syn_exc_us : t.tau_syn_inh_us;
  const P gm = excitatory ? P::excitatory_input_i_bias_gm
                          : P::inhibitory_input_i_bias_gm;
  Calib c;
  c.target = excitatory ? "tau_syn_exc_us" : "tau_syn_inh_us";
  c.parameter = excitatory ? P::excitatory_input_i_bias_tau
                           : P::inhibitory_input_i_bias_tau;
  // Code 0 would disconnect the RC bias; higher code = shorter tau_syn.
  c.space = {1, 1022, Slope::kDecreasing};
  c.tolerance = kTauRelTolerance;
  c.relative = true;
  c.target_value = target;
  c.prepare = [gm](ParameterValues& v) { At(v, gm) = kTauSynGm; };
  DecayProtocol protocol;
  protocol.observable = excitatory ? hxemu::v1::OBSERVABLE_EXC_SYNIN
                                   : hxemu::v1::OBSERVABLE_INH_SYNIN;
  protocol.stimulus = {excitatory ? hxemu::v1::RECEPTOR_TYPE_EXCITATORY
                                  : hxemu::v1::RECEPTOR_TYPE_INHIBITORY,
                       BiasedWeight(kTauSynWeight, t), kStimulusMs};
  protocol.baseline_from_ms = kBaselineFromMs;
  protocol.fit_from_ms = kStimulusMs + 0.0001;
  protocol.fit_to_ms = kStimulusMs + 3.0 * target * 1e-3;
  protocol.min_amplitude_lsb = 4.0;
  protocol.runtime_ms = protocol.fit_to_ms + 0.0005;
  c.measure = [protocol](Measurer& m, const Configs& cfg) {
    return m.MadcDecayTauUs(cfg, protocol);
  };
  return c;
}

Calib LeakCalib(const ResolvedTargets& t) {
  Calib c;
  c.target = "leak";
  c.parameter = P::leak_v_leak;
  c.space = {0, 1022, Slope::kIncreasing};
  c.tolerance = kPotentialToleranceCadc;
  c.target_value = t.leak_cadc;
  c.prepare = [](ParameterValues& v) {
    At(v, P::threshold_enable) = 0;
    At(v, P::leak_i_bias) = kFastLeakBias;
    At(v, P::leak_enable_division) = 0;
    At(v, P::leak_enable_multiplication) = 0;
  };
  const std::vector<double> times =
      Times(kSettledFromMs, kSettledStepMs, kSettledReads);
  const double runtime = times.back() + 0.001;
  c.measure = [times, runtime](Measurer& m, const Configs& cfg) {
    return m.CadcMean(cfg, times, runtime);
  };
  return c;
}

Calib TauMemCalib(const ResolvedTargets& t) {
  Calib c;
  c.target = "tau_mem_us";
  c.parameter = P::leak_i_bias;
  c.space = {0, 1022, Slope::kDecreasing};
  c.tolerance = kTauRelTolerance;
  c.relative = true;
  c.target_value = t.tau_mem_us;
  const int32_t weight = BiasedWeight(
      kKickWeightAt63 * CapacitanceScale(t.membrane_capacitance), t);
  c.prepare = [](ParameterValues& v) {
    At(v, P::threshold_enable) = 0;
    At(v, P::excitatory_input_enable) = 1;
    At(v, P::excitatory_input_i_bias_tau) = kKickTauCode;
    At(v, P::excitatory_input_i_bias_gm) = kKickGm;
    At(v, P::excitatory_input_enable_high_resistance) = 0;
    At(v, P::excitatory_input_enable_small_capacitance) = 1;
  };
  KickTrainProtocol protocol;
  const double tau_ms = t.tau_mem_us * 1e-3;
  // The differences need no baseline: a few reads of the settled membrane
  // (warm-up + 3 tau_mem) before the first kick are only reported.
  protocol.baseline_from_ms = std::max(0.01, 3.0 * tau_ms);
  protocol.baseline_reads = 4;
  protocol.fit_from_ms = kKickFitDelayMs;
  protocol.fit_to_ms = kKickFitDelayMs + 2.5 * tau_ms;
  // 50 reads per kick, at least one tick apart.
  protocol.read_step_ms = std::max(emulator::kTickNs * 1e-6, 0.05 * tau_ms);
  protocol.min_amplitude_lsb = 2.0;
  protocol.difference_lag = kKickDifferenceLag;
  protocol.stimulus = {hxemu::v1::RECEPTOR_TYPE_EXCITATORY, weight,
                       protocol.baseline_from_ms + tau_ms, kKicks,
                       protocol.fit_to_ms + 0.001};
  c.measure = [protocol](Measurer& m, const Configs& cfg) {
    return m.CadcKickTauUs(cfg, protocol);
  };
  return c;
}

Calib ResetCalib(const ResolvedTargets& t) {
  Calib c;
  c.target = "reset";
  c.parameter = P::reset_v_reset;
  c.space = {0, 1022, Slope::kIncreasing};
  c.tolerance = kPotentialToleranceCadc;
  c.target_value = t.reset_cadc;
  // Threshold below the reset: the neuron fires again as soon as its
  // refractory period ends, so it sits at the reset potential (with the
  // calibrated leak pulling as it will in use).
  c.prepare = [](ParameterValues& v) {
    At(v, P::threshold_enable) = 1;
    At(v, P::threshold_v_threshold) = 0;
    At(v, P::refractory_period_refractory_time) = 255;
  };
  const std::vector<double> times =
      Times(kSettledFromMs, kSettledStepMs, kSettledReads);
  const double runtime = times.back() + 0.001;
  c.measure = [times, runtime](Measurer& m, const Configs& cfg) {
    return m.CadcMean(cfg, times, runtime);
  };
  return c;
}

Calib ThresholdCalib(const ResolvedTargets& t, uint64_t seed) {
  Calib c;
  c.target = "threshold";
  c.parameter = P::threshold_v_threshold;
  c.space = {0, 1022, Slope::kIncreasing};
  c.tolerance = kPotentialToleranceCadc;
  c.target_value = t.threshold_cadc;
  // calix NoisyBinarySearch.
  c.search.initial_noise = 5;
  c.search.seed = seed;
  // Leak far above the threshold: the neuron fires regularly and the top
  // CADC reads are the threshold (calix ThresholdCalibCADC).
  c.prepare = [](ParameterValues& v) {
    At(v, P::threshold_enable) = 1;
    At(v, P::leak_v_leak) = kHighPotentialCode;
  };
  const int n = static_cast<int>(kThresholdWindowMs / kThresholdStepMs);
  const std::vector<double> times =
      Times(kThresholdFromMs, kThresholdStepMs, n);
  const double runtime = times.back() + 0.0005;
  c.measure = [times, runtime](Measurer& m, const Configs& cfg) {
    return m.CadcMax(cfg, times, runtime, kThresholdTopReads);
  };
  return c;
}

// Weight of the synaptic-strength test input: the same expected step for
// every target (the charge per event grows with gm and tau_syn).
int32_t StrengthWeight(const ResolvedTargets& t, bool excitatory) {
  const int32_t gm_target = excitatory ? t.i_synin_gm_exc : t.i_synin_gm_inh;
  const double tau_us = excitatory ? t.tau_syn_exc_us : t.tau_syn_inh_us;
  return BiasedWeight(kStepWeightNominal * (500.0 / gm_target) *
                          (10.0 / tau_us) *
                          CapacitanceScale(t.membrane_capacitance),
                      t);
}

Calib StrengthCalib(const ResolvedTargets& t, bool excitatory) {
  const double tau_us = excitatory ? t.tau_syn_exc_us : t.tau_syn_inh_us;
  const int32_t weight = StrengthWeight(t, excitatory);
  Calib c;
  c.target = excitatory ? "i_synin_gm_exc" : "i_synin_gm_inh";
  c.parameter = excitatory ? P::excitatory_input_i_bias_gm
                           : P::inhibitory_input_i_bias_gm;
  c.space = {0, 1022, Slope::kIncreasing};
  c.tolerance = kStrengthRelTolerance;
  c.relative = true;
  // No leak: the membrane integrates the whole charge of the event.
  c.prepare = [](ParameterValues& v) {
    At(v, P::threshold_enable) = 0;
    At(v, P::leak_i_bias) = 0;
    At(v, P::leak_enable_division) = 0;
    At(v, P::leak_enable_multiplication) = 0;
  };
  const Stimulus stim{excitatory ? hxemu::v1::RECEPTOR_TYPE_EXCITATORY
                                 : hxemu::v1::RECEPTOR_TYPE_INHIBITORY,
                      weight, kStimulusMs};
  const std::vector<double> before = Times(kBaselineFromMs, 0.0004, 4);
  // 8 tau_syn later 0.03 % of the charge is still to come.
  const std::vector<double> after =
      Times(kStimulusMs + 8.0 * tau_us * 1e-3, 0.001, 4);
  const double runtime = after.back() + 0.001;
  c.measure = [stim, before, after, runtime, excitatory](
                  Measurer& m,
                  const Configs& cfg) -> absl::StatusOr<std::vector<double>> {
    CAL_ASSIGN_OR_RETURN(std::vector<double> step,
                         m.CadcStep(cfg, stim, before, after, runtime));
    if (!excitatory) {
      for (double& s : step) s = -s;
    }
    return step;
  };
  return c;
}

Calib MakeCalib(Quantity q, const ResolvedTargets& t, uint64_t seed) {
  switch (q) {
    case Quantity::kRefractory:
      return RefractoryCalib(t);
    case Quantity::kTauSynExc:
      return TauSynCalib(t, true);
    case Quantity::kTauSynInh:
      return TauSynCalib(t, false);
    case Quantity::kLeak:
      return LeakCalib(t);
    case Quantity::kTauMem:
      return TauMemCalib(t);
    case Quantity::kReset:
      return ResetCalib(t);
    case Quantity::kThreshold:
      return ThresholdCalib(t, seed);
    case Quantity::kStrengthExc:
      return StrengthCalib(t, true);
    case Quantity::kStrengthInh:
      return StrengthCalib(t, false);
  }
  return LeakCalib(t);
}

// Measures `calib`'s quantity once on `configs` (its temporary settings
// applied to a copy).
absl::StatusOr<std::vector<double>> MeasureOnce(const Calib& calib, Measurer& m,
                                                Configs configs) {
  for (ParameterValues& v : configs) {
    if (calib.prepare) calib.prepare(v);
  }
  return calib.measure(m, configs);
}

struct Outcome {
  std::vector<int32_t> codes;
  std::vector<double> measured;
  std::vector<bool> ok;
};

class Calibrator {
 public:
  Calibrator(emulator::Chip& chip, std::vector<uint32_t> circuits,
             const ResolvedTargets& t, const CalibrationOptions& options)
      : chip_(chip),
        circuits_(std::move(circuits)),
        t_(t),
        options_(options),
        measurer_(&chip, circuits_, options.seed) {
    measurer_.set_synapse_dac_bias(t.synapse_dac_bias);
  }

  absl::StatusOr<Calibration> Run();

 private:
  absl::Status CheckCancel() const {
    if (options_.cancel_requested != nullptr &&
        options_.cancel_requested->load()) {
      return absl::CancelledError("calibration cancelled");
    }
    return absl::OkStatus();
  }

  // Searches `calib` on the circuits `subset` (indices into circuits_) of
  // configs_ with the given per-circuit targets and writes the found codes
  // into configs_.
  absl::StatusOr<Outcome> Search(const Calib& calib,
                                 const std::vector<double>& targets,
                                 const std::vector<int>& subset);
  absl::StatusOr<Outcome> SearchAll(const Calib& calib,
                                    const std::vector<double>& targets) {
    std::vector<int> all(circuits_.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
    return Search(calib, targets, all);
  }
  // Searches again, with switch `sw` on, the circuits of `o` for which
  // `redo` holds, keeping the better result.
  absl::StatusOr<Outcome> SearchWithSwitch(
      const Calib& calib, const std::vector<double>& targets, Outcome o, P sw,
      const std::function<bool(int32_t code, bool ok)>& redo);
  void Record(absl::string_view target, const Outcome& o,
              void (CircuitMeasurement::*set)(double));

  absl::Status CalibrateRefractory();
  absl::Status CalibrateTauSyn(bool excitatory);
  absl::Status CalibrateTauMem();
  absl::Status CalibrateSimple(Quantity q,
                               void (CircuitMeasurement::*set)(double));
  absl::Status CalibrateStrength(bool excitatory);
  absl::Status CalibrateCoba(bool excitatory);

  emulator::Chip& chip_;
  std::vector<uint32_t> circuits_;
  ResolvedTargets t_;
  CalibrationOptions options_;
  Measurer measurer_;
  uint64_t subsets_ = 0;
  Configs configs_;
  std::vector<CircuitMeasurement> measured_;
  std::vector<std::vector<std::string>> failed_;
  // Why a target was calibrated at another value than asked (for the
  // calibration's warning), or empty.
  std::string lowered_target_;
};

absl::StatusOr<Outcome> Calibrator::Search(const Calib& calib,
                                           const std::vector<double>& targets,
                                           const std::vector<int>& subset) {
  Configs base(subset.size());
  std::vector<uint32_t> sub_circuits(subset.size());
  std::vector<double> sub_targets(subset.size());
  for (size_t k = 0; k < subset.size(); ++k) {
    base[k] = configs_[subset[k]];
    if (calib.prepare) calib.prepare(base[k]);
    sub_circuits[k] = circuits_[subset[k]];
    sub_targets[k] = targets[subset[k]];
  }
  // A subset gets its own measurer (with seeds far from the main runs').
  std::optional<Measurer> own;
  Measurer* m = &measurer_;
  if (subset.size() != circuits_.size()) {
    own.emplace(&chip_, sub_circuits,
                options_.seed + 0x9E3779B9ull * ++subsets_);
    m = &*own;
  }
  MeasureFunction measure = [&](absl::Span<const int32_t> codes)
      -> absl::StatusOr<std::vector<double>> {
    CAL_RETURN_IF_ERROR(CheckCancel());
    Configs trial = base;
    for (size_t k = 0; k < trial.size(); ++k) {
      At(trial[k], calib.parameter) = codes[k];
    }
    return calib.measure(*m, trial);
  };
  CAL_ASSIGN_OR_RETURN(SearchResult r, BinarySearch(measure, sub_targets,
                                                    calib.space, calib.search));
  Outcome o;
  o.codes = r.codes;
  o.measured = r.measured;
  o.ok.resize(subset.size());
  for (size_t k = 0; k < subset.size(); ++k) {
    At(configs_[subset[k]], calib.parameter) = r.codes[k];
    const double tol = calib.relative
                           ? calib.tolerance * std::abs(sub_targets[k])
                           : calib.tolerance;
    o.ok[k] = std::abs(r.measured[k] - sub_targets[k]) <= tol;
  }
  return o;
}

absl::StatusOr<Outcome> Calibrator::SearchWithSwitch(
    const Calib& calib, const std::vector<double>& targets, Outcome o, P sw,
    const std::function<bool(int32_t code, bool ok)>& redo) {
  std::vector<int> subset;
  for (size_t i = 0; i < circuits_.size(); ++i) {
    if (redo(o.codes[i], o.ok[i])) subset.push_back(static_cast<int>(i));
  }
  if (subset.empty()) return o;
  for (int i : subset) At(configs_[i], sw) = 1;
  CAL_ASSIGN_OR_RETURN(Outcome o2, Search(calib, targets, subset));
  for (size_t k = 0; k < subset.size(); ++k) {
    const int i = subset[k];
    const double e1 = std::abs(o.measured[i] - targets[i]);
    const double e2 = std::abs(o2.measured[k] - targets[i]);
    if ((o2.ok[k] && e2 <= 2.0 * e1) || !o.ok[i]) {
      o.codes[i] = o2.codes[k];
      o.measured[i] = o2.measured[k];
      o.ok[i] = o2.ok[k];
    } else {  // keep the first result
      At(configs_[i], sw) = 0;
      At(configs_[i], calib.parameter) = o.codes[i];
    }
  }
  return o;
}

void Calibrator::Record(absl::string_view target, const Outcome& o,
                        void (CircuitMeasurement::*set)(double)) {
  for (size_t i = 0; i < o.codes.size(); ++i) {
    (measured_[i].*set)(o.measured[i]);
    if (!o.ok[i]) failed_[i].emplace_back(target);
  }
}

absl::Status Calibrator::CalibrateRefractory() {
  const Calib c = RefractoryCalib(t_);
  CAL_ASSIGN_OR_RETURN(
      Outcome o,
      SearchAll(c, std::vector<double>(circuits_.size(), c.target_value)));
  Record(c.target, o, &CircuitMeasurement::set_refractory_time_us);
  // Holdoff: digital, set from the documented rule (the reset is released
  // (31 - 2 holdoff) clock cycles of 8 ns before the refractory period
  // ends), like calix's analytic refractory settings.
  const double cycles = t_.holdoff_time_us * 1e3 / emulator::kTickNs;
  const int32_t holdoff = static_cast<int32_t>(
      std::clamp<double>(std::round((31.0 - cycles) / 2.0), 0.0, 15.0));
  const double achieved_us = (31 - 2 * holdoff) * emulator::kTickNs * 1e-3;
  const bool holdoff_ok = std::abs(achieved_us - t_.holdoff_time_us) <=
                          2.0 * emulator::kTickNs * 1e-3 + 1e-9;
  for (size_t i = 0; i < circuits_.size(); ++i) {
    At(configs_[i], P::refractory_period_reset_holdoff) = holdoff;
    if (!holdoff_ok) failed_[i].emplace_back("holdoff_time_us");
  }
  return absl::OkStatus();
}

absl::Status Calibrator::CalibrateTauSyn(bool excitatory) {
  const Calib c = TauSynCalib(t_, excitatory);
  const P high_res = excitatory ? P::excitatory_input_enable_high_resistance
                                : P::inhibitory_input_enable_high_resistance;
  const std::vector<double> targets(circuits_.size(), c.target_value);
  for (ParameterValues& v : configs_) At(v, high_res) = 0;
  CAL_ASSIGN_OR_RETURN(Outcome o, SearchAll(c, targets));
  // Circuits that end at a small code (coarse steps: 1 LSB > 1 % of
  // tau_syn) are searched again with high resistance (x5 tau_syn at the
  // same code), as calix toggles it for long targets.
  CAL_ASSIGN_OR_RETURN(
      o, SearchWithSwitch(c, targets, std::move(o), high_res,
                          [](int32_t code, bool) { return code < 100; }));
  Record(c.target, o,
         excitatory ? &CircuitMeasurement::set_tau_syn_exc_us
                    : &CircuitMeasurement::set_tau_syn_inh_us);
  return absl::OkStatus();
}

absl::Status Calibrator::CalibrateTauMem() {
  const Calib c = TauMemCalib(t_);
  const std::vector<double> targets(circuits_.size(), c.target_value);
  for (ParameterValues& v : configs_) {
    At(v, P::leak_enable_division) = 0;
    At(v, P::leak_enable_multiplication) = 0;
  }
  CAL_ASSIGN_OR_RETURN(Outcome o, SearchAll(c, targets));
  // Too slow even at the largest bias: x8 (multiplication). Ending at a
  // small bias (coarse steps): /8 (division).
  CAL_ASSIGN_OR_RETURN(
      o, SearchWithSwitch(
             c, targets, std::move(o), P::leak_enable_multiplication,
             [](int32_t code, bool ok) { return code >= 1000 && !ok; }));
  CAL_ASSIGN_OR_RETURN(
      o, SearchWithSwitch(
             c, targets, std::move(o), P::leak_enable_division,
             [](int32_t code, bool) { return code < 120 && code > 0; }));
  Record(c.target, o, &CircuitMeasurement::set_tau_mem_us);
  return absl::OkStatus();
}

absl::Status Calibrator::CalibrateSimple(
    Quantity q, void (CircuitMeasurement::*set)(double)) {
  const Calib c = MakeCalib(q, t_, options_.seed);
  CAL_ASSIGN_OR_RETURN(
      Outcome o,
      SearchAll(c, std::vector<double>(circuits_.size(), c.target_value)));
  Record(c.target, o, set);
  return absl::OkStatus();
}

absl::Status Calibrator::CalibrateStrength(bool excitatory) {
  const Calib c = StrengthCalib(t_, excitatory);
  const int32_t gm_target = excitatory ? t_.i_synin_gm_exc : t_.i_synin_gm_inh;
  // calix CalibratedMatching: the median strength at the target bias is
  // every circuit's target.
  Configs at_target = configs_;
  for (ParameterValues& v : at_target) At(v, c.parameter) = gm_target;
  CAL_ASSIGN_OR_RETURN(std::vector<double> initial,
                       MeasureOnce(c, measurer_, at_target));
  std::vector<double> sorted = initial;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  CAL_ASSIGN_OR_RETURN(
      Outcome o, SearchAll(c, std::vector<double>(circuits_.size(), median)));
  Record(c.target, o,
         excitatory ? &CircuitMeasurement::set_synin_exc
                    : &CircuitMeasurement::set_synin_inh);
  return absl::OkStatus();
}

absl::Status Calibrator::CalibrateCoba(bool excitatory) {
  const std::optional<double> e_target =
      excitatory ? t_.e_coba_reversal_exc : t_.e_coba_reversal_inh;
  if (!e_target) return absl::OkStatus();
  // calix: beyond the CADC / leak range the reversal potential is
  // calibrated at a lower value (the excitatory one only: the inhibitory
  // range reaches down to the CADC's floor).
  const double e_cal =
      excitatory ? std::min(*e_target, kCobaMaxReversalExcCadc) : *e_target;
  if (e_cal != *e_target) {
    lowered_target_ = absl::StrCat(
        "e_coba_reversal_exc ", *e_target,
        " CADC LSB lies beyond the emulated chip's range, calibrated at ",
        e_cal, " instead");
  }
  // The reference keeps its relative position between the leak and the
  // reversal potential (linear interpolation): matched at the requested
  // reference, a lowered reversal would lie too close to it for any
  // i_bias_coba to give the CUBA step there.
  const double requested_reference =
      excitatory ? *t_.e_coba_reference_exc : *t_.e_coba_reference_inh;
  const double reference =
      e_cal == *e_target ? requested_reference
                         : t_.leak_cadc + (requested_reference - t_.leak_cadc) *
                                              (e_cal - t_.leak_cadc) /
                                              (*e_target - t_.leak_cadc);
  const P mode = excitatory ? P::excitatory_input_enable_coba_mode
                            : P::inhibitory_input_enable_coba_mode;
  const P v_rev = excitatory ? P::excitatory_input_v_rev_coba
                             : P::inhibitory_input_v_rev_coba;
  const P bias = excitatory ? P::excitatory_input_i_bias_coba
                            : P::inhibitory_input_i_bias_coba;
  const size_t n = circuits_.size();
  // Two holding potentials on the active side of the reversal potential
  // (below it for excitatory, above it for inhibitory input), 25 LSB from it (a
  // short extrapolation) and 60 LSB apart (a well-defined slope), inside
  // the CADC's reliable range.
  double lo, hi;
  if (excitatory) {
    hi = std::clamp(e_cal - 25.0, 90.0, 200.0);
    lo = hi - 60.0;
  } else {
    lo = std::clamp(e_cal + 25.0, 30.0, 140.0);
    hi = lo + 60.0;
  }
  // Leak codes that put the membranes there (leak searches; the searches
  // write into configs_, which is restored afterwards).
  const Configs saved = configs_;
  const Calib leak = LeakCalib(t_);
  CAL_ASSIGN_OR_RETURN(const Outcome at_lo,
                       SearchAll(leak, std::vector<double>(n, lo)));
  CAL_ASSIGN_OR_RETURN(const Outcome at_hi,
                       SearchAll(leak, std::vector<double>(n, hi)));
  configs_ = saved;

  // The step of the membrane after one input spike with the leak off is
  // exactly linear in the start potential V0: s = (E - V0)(1 - exp(-q)) (q =
  // charge / (C V_coba)), for either receptor. Two start potentials give the
  // reversal potential E and the slope k = 1 - exp(-q) per circuit.
  const Calib strength = StrengthCalib(t_, excitatory);
  Stimulus stim{excitatory ? hxemu::v1::RECEPTOR_TYPE_EXCITATORY
                           : hxemu::v1::RECEPTOR_TYPE_INHIBITORY,
                StrengthWeight(t_, excitatory), kStimulusMs};
  const double tau_us = excitatory ? t_.tau_syn_exc_us : t_.tau_syn_inh_us;
  const std::vector<double> before = Times(kBaselineFromMs, 0.0002, 8);
  const std::vector<double> after =
      Times(kStimulusMs + 8.0 * tau_us * 1e-3, 0.001, 8);
  const double runtime = after.back() + 0.001;
  struct Line {
    std::vector<double> e, k;
  };
  auto measure_line = [&](Measurer& m,
                          const Configs& cfg) -> absl::StatusOr<Line> {
    Configs a = cfg, b = cfg;
    for (size_t i = 0; i < cfg.size(); ++i) {
      At(a[i], P::leak_v_leak) = At(a[i], P::reset_v_reset) = at_lo.codes[i];
      At(b[i], P::leak_v_leak) = At(b[i], P::reset_v_reset) = at_hi.codes[i];
    }
    std::vector<double> v1, v2;
    CAL_ASSIGN_OR_RETURN(const std::vector<double> s1,
                         m.CadcStep(a, stim, before, after, runtime, &v1));
    CAL_ASSIGN_OR_RETURN(const std::vector<double> s2,
                         m.CadcStep(b, stim, before, after, runtime, &v2));
    Line line{std::vector<double>(cfg.size()), std::vector<double>(cfg.size())};
    for (size_t i = 0; i < cfg.size(); ++i) {
      const double dv = v2[i] - v1[i];
      const double k = std::abs(dv) > 1.0 ? (s1[i] - s2[i]) / dv : 0.0;
      line.k[i] = k;
      // A start beyond E sees no input (the modulation is clipped at 0):
      // with one start clipped E lies between them, with both beyond the
      // nearer one; report such points so that the search moves on.
      const bool quiet1 = std::abs(s1[i]) < kCobaQuietLsb;
      const bool quiet2 = std::abs(s2[i]) < kCobaQuietLsb;
      if (quiet1 && quiet2) {
        line.e[i] = excitatory ? std::min(v1[i], v2[i]) - 10.0
                               : std::max(v1[i], v2[i]) + 10.0;
      } else if (quiet1 || quiet2 || k <= 1e-3) {
        line.e[i] = 0.5 * (v1[i] + v2[i]);
      } else {
        line.e[i] = v1[i] + s1[i] / k;
      }
    }
    return line;
  };
  auto prepare = [mode, &strength](ParameterValues& v) {
    strength.prepare(v);  // leak off, threshold off
    At(v, mode) = 1;
  };

  // 1. Reversal potential: search v_rev_coba for E (CADC LSB).
  for (ParameterValues& v : configs_) At(v, bias) = kCobaStartBias;
  Calib rev;
  rev.target = excitatory ? "e_coba_reversal_exc" : "e_coba_reversal_inh";
  rev.parameter = v_rev;
  rev.space = {0, 1022, Slope::kIncreasing};
  rev.tolerance = kCobaReversalToleranceCadc;
  rev.prepare = prepare;
  rev.measure = [&](Measurer& m,
                    const Configs& cfg) -> absl::StatusOr<std::vector<double>> {
    CAL_ASSIGN_OR_RETURN(Line line, measure_line(m, cfg));
    return line.e;
  };
  CAL_ASSIGN_OR_RETURN(const Outcome o_rev,
                       SearchAll(rev, std::vector<double>(n, e_cal)));
  Record(rev.target, o_rev,
         excitatory ? &CircuitMeasurement::set_e_coba_reversal_exc
                    : &CircuitMeasurement::set_e_coba_reversal_inh);

  // 2. Strength: at the reference potential the COBA step equals the CUBA
  // step of the same input (measured per circuit, CUBA mode).
  Configs cuba = configs_;
  for (ParameterValues& v : cuba) strength.prepare(v);
  CAL_ASSIGN_OR_RETURN(const std::vector<double> cuba_step,
                       measurer_.CadcStep(cuba, stim, before, after, runtime));
  std::vector<double> targets(n);
  for (size_t i = 0; i < n; ++i) targets[i] = std::abs(cuba_step[i]);
  Calib str;
  str.target = excitatory ? "e_coba_reference_exc" : "e_coba_reference_inh";
  str.parameter = bias;
  str.space = {1, 1022, Slope::kIncreasing};
  str.tolerance = kStrengthRelTolerance;
  str.relative = true;
  str.prepare = prepare;
  str.measure = [&](Measurer& m,
                    const Configs& cfg) -> absl::StatusOr<std::vector<double>> {
    CAL_ASSIGN_OR_RETURN(Line line, measure_line(m, cfg));
    std::vector<double> at_ref(cfg.size());
    for (size_t i = 0; i < cfg.size(); ++i) {
      at_ref[i] = std::abs(line.k[i] * (line.e[i] - reference));
    }
    return at_ref;
  };
  CAL_ASSIGN_OR_RETURN(const Outcome o_str, SearchAll(str, targets));
  for (size_t i = 0; i < n; ++i) {
    At(configs_[i], mode) = 1;
    if (!o_str.ok[i]) failed_[i].emplace_back(str.target);
  }
  return absl::OkStatus();
}

ParameterValues StartConfig(const ResolvedTargets& t) {
  // Table defaults plus the settings calix fixes for a spiking neuron.
  ParameterValues base = DefaultParameterValues();
  At(base, P::membrane_capacitance_capacitance) = t.membrane_capacitance;
  At(base, P::leak_v_leak) = 500;
  At(base, P::leak_i_bias) = 500;
  At(base, P::reset_v_reset) = 400;
  At(base, P::reset_i_bias) = kResetBias;
  At(base, P::reset_enable_multiplication) = 1;
  At(base, P::threshold_enable) = 1;
  At(base, P::threshold_v_threshold) = 400;
  At(base, P::refractory_period_refractory_time) = 250;
  At(base, P::excitatory_input_enable) = 1;
  At(base, P::inhibitory_input_enable) = 1;
  At(base, P::excitatory_input_i_bias_tau) = 200;
  At(base, P::inhibitory_input_i_bias_tau) = 200;
  At(base, P::excitatory_input_i_bias_gm) = t.i_synin_gm_exc;
  At(base, P::inhibitory_input_i_bias_gm) = t.i_synin_gm_inh;
  return base;
}

absl::StatusOr<Calibration> Calibrator::Run() {
  const auto start = std::chrono::steady_clock::now();
  const size_t n = circuits_.size();
  measured_.assign(n, CircuitMeasurement());
  failed_.assign(n, {});
  configs_.assign(n, StartConfig(t_));

  CAL_RETURN_IF_ERROR(CalibrateRefractory());
  CAL_RETURN_IF_ERROR(CalibrateTauSyn(true));
  CAL_RETURN_IF_ERROR(CalibrateTauSyn(false));
  CAL_RETURN_IF_ERROR(
      CalibrateSimple(Quantity::kLeak, &CircuitMeasurement::set_leak));
  CAL_RETURN_IF_ERROR(CalibrateTauMem());
  CAL_RETURN_IF_ERROR(
      CalibrateSimple(Quantity::kReset, &CircuitMeasurement::set_reset));
  CAL_RETURN_IF_ERROR(CalibrateSimple(Quantity::kThreshold,
                                      &CircuitMeasurement::set_threshold));
  CAL_RETURN_IF_ERROR(CalibrateStrength(true));
  CAL_RETURN_IF_ERROR(CalibrateStrength(false));
  CAL_RETURN_IF_ERROR(CalibrateCoba(true));
  CAL_RETURN_IF_ERROR(CalibrateCoba(false));

  Calibration cal;
  cal.set_chip_id(chip_.id());
  *cal.mutable_targets() = ToProto(t_);
  cal.set_emulator_version(EmulatorVersion());
  uint32_t failed = 0;
  for (size_t i = 0; i < n; ++i) {
    hxemu::v1::CircuitCalibration* cc = cal.add_circuits();
    cc->set_circuit(circuits_[i]);
    for (P p : CalibratedParameters()) {
      hxemu::v1::NeuronParameter* np = cc->add_parameters();
      np->set_name(std::string(emulator::Info(p).name));
      np->add_values(At(configs_[i], p));
    }
    cc->set_success(failed_[i].empty());
    *cc->mutable_measured() = measured_[i];
    for (const std::string& f : failed_[i]) cc->add_failed_targets(f);
    if (!failed_[i].empty()) ++failed;
  }
  cal.set_num_failed(failed);
  std::string warning =
      failed > 0 ? absl::StrCat("calibration failed for ", failed, " neurons")
                 : "";
  if (!lowered_target_.empty()) {
    absl::StrAppend(&warning, warning.empty() ? "" : "; ", lowered_target_);
  }
  cal.set_warning(warning);
  cal.set_compute_time_s(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count());
  return cal;
}

absl::Status CheckCircuits(const std::vector<uint32_t>& circuits) {
  std::set<uint32_t> seen;
  for (size_t i = 0; i < circuits.size(); ++i) {
    if (circuits[i] >= emulator::kNumNeuronCircuits) {
      return absl::InvalidArgumentError(absl::StrCat(
          "circuits[", i, "]: ", circuits[i], " is out of range 0..",
          emulator::kNumNeuronCircuits - 1));
    }
    if (!seen.insert(circuits[i]).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "circuits[", i, "]: circuit ", circuits[i], " is repeated"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const std::string& EmulatorVersion() {
  static const std::string* const version =
      new std::string(HXEMU_CALIBRATION_EMULATOR_VERSION);
  return *version;
}

const std::vector<emulator::NeuronParameter>& CalibratedParameters() {
  static const std::vector<P>* const params = new std::vector<P>{
      P::excitatory_input_enable,
      P::excitatory_input_i_bias_tau,
      P::excitatory_input_i_bias_gm,
      P::excitatory_input_enable_small_capacitance,
      P::excitatory_input_enable_high_resistance,
      P::inhibitory_input_enable,
      P::inhibitory_input_i_bias_tau,
      P::inhibitory_input_i_bias_gm,
      P::inhibitory_input_enable_small_capacitance,
      P::inhibitory_input_enable_high_resistance,
      P::leak_v_leak,
      P::leak_i_bias,
      P::leak_enable_division,
      P::leak_enable_multiplication,
      P::reset_v_reset,
      P::reset_i_bias,
      P::reset_enable_division,
      P::reset_enable_multiplication,
      P::threshold_enable,
      P::threshold_v_threshold,
      P::membrane_capacitance_capacitance,
      P::refractory_period_reset_holdoff,
      P::refractory_period_refractory_time,
      P::excitatory_input_enable_coba_mode,
      P::excitatory_input_v_rev_coba,
      P::excitatory_input_i_bias_coba,
      P::inhibitory_input_enable_coba_mode,
      P::inhibitory_input_v_rev_coba,
      P::inhibitory_input_i_bias_coba,
  };
  return *params;
}

absl::StatusOr<Calibration> Calibrate(
    emulator::Chip& chip, const hxemu::v1::CalibrationTargets& targets,
    const CalibrationOptions& options) {
  CAL_ASSIGN_OR_RETURN(const ResolvedTargets t, ResolveTargets(targets));
  std::vector<uint32_t> circuits = options.circuits;
  if (circuits.empty()) {
    for (int c = 0; c < emulator::kNumNeuronCircuits; ++c) {
      circuits.push_back(static_cast<uint32_t>(c));
    }
  }
  CAL_RETURN_IF_ERROR(CheckCircuits(circuits));
  std::sort(circuits.begin(), circuits.end());
  Calibrator calibrator(chip, std::move(circuits), t, options);
  return calibrator.Run();
}

std::vector<ParameterValues> ConfigsFromCalibration(
    const Calibration& calibration, const std::vector<uint32_t>& circuits) {
  std::vector<ParameterValues> configs(circuits.size(),
                                       DefaultParameterValues());
  for (size_t i = 0; i < circuits.size(); ++i) {
    for (const hxemu::v1::CircuitCalibration& cc : calibration.circuits()) {
      if (cc.circuit() != circuits[i]) continue;
      for (const hxemu::v1::NeuronParameter& np : cc.parameters()) {
        const auto id = emulator::FindNeuronParameter(np.name());
        if (id && np.values_size() == 1) At(configs[i], *id) = np.values(0);
      }
    }
  }
  return configs;
}

absl::StatusOr<std::vector<CircuitMeasurement>> MeasureCircuits(
    emulator::Chip& chip, const std::vector<uint32_t>& circuits,
    const std::vector<ParameterValues>& configs,
    const hxemu::v1::CalibrationTargets& targets,
    const MeasureOptions& options) {
  CAL_ASSIGN_OR_RETURN(const ResolvedTargets t, ResolveTargets(targets));
  CAL_RETURN_IF_ERROR(CheckCircuits(circuits));
  if (configs.size() != circuits.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("configs: ", configs.size(), " entries for ",
                     circuits.size(), " circuits"));
  }
  Measurer m(&chip, circuits, options.seed);
  m.set_synapse_dac_bias(t.synapse_dac_bias);
  std::vector<CircuitMeasurement> out(circuits.size());
  struct Item {
    Quantity q;
    void (CircuitMeasurement::*set)(double);
    bool madc;
  };
  const Item items[] = {
      {Quantity::kRefractory, &CircuitMeasurement::set_refractory_time_us,
       false},
      {Quantity::kLeak, &CircuitMeasurement::set_leak, false},
      {Quantity::kReset, &CircuitMeasurement::set_reset, false},
      {Quantity::kThreshold, &CircuitMeasurement::set_threshold, false},
      {Quantity::kStrengthExc, &CircuitMeasurement::set_synin_exc, false},
      {Quantity::kStrengthInh, &CircuitMeasurement::set_synin_inh, false},
      {Quantity::kTauMem, &CircuitMeasurement::set_tau_mem_us, true},
      {Quantity::kTauSynExc, &CircuitMeasurement::set_tau_syn_exc_us, true},
      {Quantity::kTauSynInh, &CircuitMeasurement::set_tau_syn_inh_us, true},
  };
  for (const Item& item : items) {
    if (item.madc && !options.time_constants) continue;
    const Calib c = MakeCalib(item.q, t, options.seed);
    CAL_ASSIGN_OR_RETURN(std::vector<double> v, MeasureOnce(c, m, configs));
    for (size_t i = 0; i < v.size(); ++i) (out[i].*item.set)(v[i]);
  }
  return out;
}

}  // namespace hxemu::calibration
