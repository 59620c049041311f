// File: measurement.cc
//
// Measurement experiments: build an hxemu.v1.Experiment, run it on the chip,
// reduce the readout (CADC codes, MADC traces, spikes) to one number per
// circuit.
#include "hxemu/calibration/measurement.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "hxemu/emulator/chip_constants.h"
#include "status_macros.h"

namespace hxemu::calibration {
namespace {

using ::hxemu::emulator::kNumNeuronParameters;
using ::hxemu::emulator::NeuronParameterTable;
using ::hxemu::v1::Experiment;
using ::hxemu::v1::Result;

constexpr double kInf = std::numeric_limits<double>::infinity();

absl::Status CheckConfigs(absl::Span<const ParameterValues> configs,
                          size_t circuits) {
  if (configs.size() != circuits) {
    return absl::InvalidArgumentError(
        absl::StrCat("measurement: ", configs.size(), " configs for ", circuits,
                     " circuits"));
  }
  return absl::OkStatus();
}

}  // namespace

ParameterValues DefaultParameterValues() {
  ParameterValues v;
  for (int i = 0; i < kNumNeuronParameters; ++i) {
    v[i] = NeuronParameterTable()[i].default_value;
  }
  return v;
}

Measurer::Measurer(emulator::Chip* chip, std::vector<uint32_t> circuits,
                   uint64_t seed)
    : chip_(chip), circuits_(std::move(circuits)), next_seed_(seed) {}

Experiment Measurer::Build(absl::Span<const ParameterValues> configs,
                           absl::Span<const int> subset,
                           const Stimulus* stimulus, double runtime_ms) const {
  Experiment e;
  e.set_runtime_ms(runtime_ms);
  e.set_chip_id(chip_->id());
  if (synapse_dac_bias_ != 600) {
    e.set_synapse_dac_bias(static_cast<uint32_t>(synapse_dac_bias_));
  }
  hxemu::v1::Population* pop = e.add_populations();
  pop->set_label("calibration");
  pop->set_size(static_cast<uint32_t>(subset.size()));
  pop->set_cell_type(hxemu::v1::CELL_TYPE_HX_NEURON);
  for (int s : subset) pop->add_circuits(circuits_[s]);
  // Only parameters that differ from the table default somewhere; one value
  // if all circuits agree.
  const ParameterValues defaults = DefaultParameterValues();
  for (int p = 0; p < kNumNeuronParameters; ++p) {
    bool differs = false;
    bool uniform = true;
    for (int s : subset) {
      differs = differs || configs[s][p] != defaults[p];
      uniform = uniform && configs[s][p] == configs[subset[0]][p];
    }
    if (!differs) continue;
    hxemu::v1::NeuronParameter* np = pop->add_parameters();
    np->set_name(std::string(NeuronParameterTable()[p].name));
    if (uniform) {
      np->add_values(configs[subset[0]][p]);
    } else {
      for (int s : subset) np->add_values(configs[s][p]);
    }
  }
  if (stimulus != nullptr && stimulus->weight != 0) {
    hxemu::v1::Population* src = e.add_populations();
    src->set_label("stimulus");
    src->set_size(1);
    src->set_cell_type(hxemu::v1::CELL_TYPE_SPIKE_SOURCE_ARRAY);
    hxemu::v1::SpikeTimes* times =
        src->mutable_spike_source_array()->add_spike_times();
    for (int k = 0; k < stimulus->count; ++k) {
      times->add_times_ms(stimulus->time_ms + k * stimulus->period_ms);
    }
    hxemu::v1::Projection* proj = e.add_projections();
    proj->set_label("stimulus");
    proj->set_pre_population(1);
    proj->set_post_population(0);
    proj->set_receptor_type(stimulus->receptor);
    const bool exc = stimulus->receptor == hxemu::v1::RECEPTOR_TYPE_EXCITATORY;
    for (size_t k = 0; k < subset.size(); ++k) {
      proj->add_pre_indices(0);
      proj->add_post_indices(static_cast<uint32_t>(k));
      proj->add_weights(exc ? stimulus->weight : -stimulus->weight);
    }
  }
  return e;
}

absl::StatusOr<Result> Measurer::Run(Experiment experiment) {
  experiment.set_seed(next_seed_++);
  ++runs_;
  return chip_->Run(experiment, emulator::ExperimentLimits{},
                    emulator::RunControl{});
}

absl::StatusOr<std::vector<std::vector<uint32_t>>> Measurer::CadcReads(
    absl::Span<const ParameterValues> configs, const Stimulus* stimulus,
    absl::Span<const double> times_ms, double runtime_ms) {
  CAL_RETURN_IF_ERROR(CheckConfigs(configs, circuits_.size()));
  std::vector<int> all(circuits_.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  Experiment e = Build(configs, all, stimulus, runtime_ms);
  for (double t : times_ms) e.mutable_cadc()->add_times_ms(t);
  CAL_ASSIGN_OR_RETURN(const Result r, Run(std::move(e)));
  // Column of each measured circuit in the reads.
  std::vector<int> column(circuits_.size(), -1);
  for (int j = 0; j < r.cadc_circuits_size(); ++j) {
    for (size_t i = 0; i < circuits_.size(); ++i) {
      if (circuits_[i] == r.cadc_circuits(j)) column[i] = j;
    }
  }
  for (size_t i = 0; i < circuits_.size(); ++i) {
    if (column[i] < 0) {
      return absl::InternalError(
          absl::StrCat("CADC result has no column for circuit ", circuits_[i]));
    }
  }
  std::vector<std::vector<uint32_t>> codes(r.cadc_reads_size());
  for (int k = 0; k < r.cadc_reads_size(); ++k) {
    const hxemu::v1::CadcRead& read = r.cadc_reads(k);
    codes[k].resize(circuits_.size());
    for (size_t i = 0; i < circuits_.size(); ++i) {
      if (column[i] >= read.codes_size()) {
        return absl::InternalError("CADC read shorter than cadc_circuits");
      }
      codes[k][i] = read.codes(column[i]);
    }
  }
  return codes;
}

absl::StatusOr<std::vector<double>> Measurer::CadcMean(
    absl::Span<const ParameterValues> configs,
    absl::Span<const double> times_ms, double runtime_ms) {
  CAL_ASSIGN_OR_RETURN(const auto reads,
                       CadcReads(configs, nullptr, times_ms, runtime_ms));
  std::vector<double> mean(circuits_.size(), 0.0);
  for (const auto& read : reads) {
    for (size_t i = 0; i < mean.size(); ++i) mean[i] += read[i];
  }
  for (double& m : mean) m /= std::max<size_t>(reads.size(), 1);
  return mean;
}

absl::StatusOr<std::vector<double>> Measurer::CadcMax(
    absl::Span<const ParameterValues> configs,
    absl::Span<const double> times_ms, double runtime_ms, int top) {
  CAL_ASSIGN_OR_RETURN(const auto reads,
                       CadcReads(configs, nullptr, times_ms, runtime_ms));
  const size_t k =
      std::clamp<size_t>(top, 1, std::max<size_t>(reads.size(), 1));
  std::vector<double> result(circuits_.size(), 0.0);
  std::vector<uint32_t> column(reads.size());
  for (size_t i = 0; i < circuits_.size(); ++i) {
    for (size_t r = 0; r < reads.size(); ++r) column[r] = reads[r][i];
    if (column.empty()) continue;
    std::nth_element(column.begin(), column.begin() + (k - 1), column.end(),
                     std::greater<uint32_t>());
    double sum = 0.0;
    for (size_t r = 0; r < k; ++r) sum += column[r];
    result[i] = sum / k;
  }
  return result;
}

absl::StatusOr<std::vector<double>> Measurer::CadcStep(
    absl::Span<const ParameterValues> configs, const Stimulus& stimulus,
    absl::Span<const double> before_ms, absl::Span<const double> after_ms,
    double runtime_ms, std::vector<double>* before_mean) {
  std::vector<double> times(before_ms.begin(), before_ms.end());
  times.insert(times.end(), after_ms.begin(), after_ms.end());
  std::sort(times.begin(), times.end());
  CAL_ASSIGN_OR_RETURN(const auto reads,
                       CadcReads(configs, &stimulus, times, runtime_ms));
  if (reads.size() != times.size()) {
    return absl::InternalError(absl::StrCat("asked for ", times.size(),
                                            " CADC reads, got ", reads.size()));
  }
  std::vector<double> before(circuits_.size(), 0.0);
  std::vector<double> after(circuits_.size(), 0.0);
  for (size_t k = 0; k < times.size(); ++k) {
    const bool is_after = times[k] > stimulus.time_ms;
    std::vector<double>& sum = is_after ? after : before;
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += reads[k][i];
  }
  std::vector<double> step(circuits_.size());
  for (size_t i = 0; i < step.size(); ++i) {
    before[i] /= std::max<size_t>(before_ms.size(), 1);
    step[i] = after[i] / std::max<size_t>(after_ms.size(), 1) - before[i];
  }
  if (before_mean != nullptr) *before_mean = std::move(before);
  return step;
}

absl::StatusOr<std::vector<double>> Measurer::MeanIsiUs(
    absl::Span<const ParameterValues> configs, double runtime_ms) {
  CAL_RETURN_IF_ERROR(CheckConfigs(configs, circuits_.size()));
  std::vector<int> all(circuits_.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  Experiment e = Build(configs, all, nullptr, runtime_ms);
  hxemu::v1::Recording* rec = e.add_recordings();
  rec->set_population(0);
  rec->set_observable(hxemu::v1::OBSERVABLE_SPIKES);
  CAL_ASSIGN_OR_RETURN(const Result r, Run(std::move(e)));
  std::vector<double> isi(circuits_.size(), kInf);
  for (const hxemu::v1::SpikeTrain& train : r.spike_trains()) {
    if (train.population() != 0 || train.neuron() >= isi.size()) continue;
    const int n = train.times_ticks_size();
    if (n < 2) continue;
    const double span_ticks =
        static_cast<double>(train.times_ticks(n - 1) - train.times_ticks(0));
    isi[train.neuron()] =
        span_ticks / (n - 1) * emulator::kTickNs * 1e-3;  // [us]
  }
  return isi;
}

namespace {

// Weighted least squares of ln(a) = c - t / tau over the samples with
// weights a^2 (the variance of ln(a) is sigma^2 / a^2) [us hardware].
double FitDecayTauUs(const hxemu::v1::Trace& trace,
                     const DecayProtocol& protocol) {
  const double ticks_per_ms = emulator::kTicksPerMs;
  double base_sum = 0.0;
  int base_n = 0;
  for (int k = 0; k < trace.codes_size(); ++k) {
    const double t_ms = trace.times_ticks(k) / ticks_per_ms;
    if (t_ms >= protocol.baseline_from_ms && t_ms < protocol.stimulus.time_ms) {
      base_sum += trace.codes(k);
      ++base_n;
    }
  }
  if (base_n == 0) return std::numeric_limits<double>::quiet_NaN();
  const double baseline = base_sum / base_n;
  // Excitatory input raises V and the synaptic-input readout; an inhibitory
  // one lowers V but raises its own synaptic-input readout.
  const bool downwards =
      protocol.observable == hxemu::v1::OBSERVABLE_V &&
      protocol.stimulus.receptor == hxemu::v1::RECEPTOR_TYPE_INHIBITORY;
  double sw = 0, swt = 0, swy = 0, swtt = 0, swty = 0;
  int used = 0;
  for (int k = 0; k < trace.codes_size(); ++k) {
    const double t_ms = trace.times_ticks(k) / ticks_per_ms;
    if (t_ms < protocol.fit_from_ms) continue;
    if (t_ms >= protocol.fit_to_ms) break;
    const double a =
        downwards ? baseline - trace.codes(k) : trace.codes(k) - baseline;
    if (a < protocol.min_amplitude_lsb) break;
    const double t_us = t_ms * 1e3;
    const double y = std::log(a);
    const double w = a * a;
    sw += w;
    swt += w * t_us;
    swy += w * y;
    swtt += w * t_us * t_us;
    swty += w * t_us * y;
    ++used;
  }
  if (used < 3) return 0.0;  // gone before the window: very short
  const double denom = sw * swtt - swt * swt;
  if (denom <= 0.0) return 0.0;
  const double slope = (sw * swty - swt * swy) / denom;  // [1/us]
  if (slope >= 0.0) return kInf;
  return -1.0 / slope;
}

}  // namespace

absl::StatusOr<std::vector<double>> Measurer::MadcDecayTauUs(
    absl::Span<const ParameterValues> configs, const DecayProtocol& protocol) {
  CAL_RETURN_IF_ERROR(CheckConfigs(configs, circuits_.size()));
  // The MADC records at most two circuits per run, in columns of different
  // parity: pair even with odd circuits, the rest alone.
  std::vector<int> even, odd;
  for (size_t i = 0; i < circuits_.size(); ++i) {
    (circuits_[i] % 2 == 0 ? even : odd).push_back(static_cast<int>(i));
  }
  std::vector<std::vector<int>> groups;
  for (size_t k = 0; k < std::max(even.size(), odd.size()); ++k) {
    std::vector<int> g;
    if (k < even.size()) g.push_back(even[k]);
    if (k < odd.size()) g.push_back(odd[k]);
    groups.push_back(std::move(g));
  }
  std::vector<double> tau(circuits_.size(),
                          std::numeric_limits<double>::quiet_NaN());
  for (const std::vector<int>& g : groups) {
    Experiment e = Build(configs, g, &protocol.stimulus, protocol.runtime_ms);
    hxemu::v1::Recording* rec = e.add_recordings();
    rec->set_population(0);
    rec->set_observable(protocol.observable);
    for (size_t k = 0; k < g.size(); ++k) {
      rec->add_neurons(static_cast<uint32_t>(k));
    }
    CAL_ASSIGN_OR_RETURN(const Result r, Run(std::move(e)));
    for (const hxemu::v1::Trace& trace : r.traces()) {
      if (trace.population() != 0 || trace.neuron() >= g.size()) continue;
      tau[g[trace.neuron()]] = FitDecayTauUs(trace, protocol);
    }
  }
  return tau;
}

absl::StatusOr<std::vector<double>> Measurer::CadcKickTauUs(
    absl::Span<const ParameterValues> configs,
    const KickTrainProtocol& protocol) {
  const Stimulus& stim = protocol.stimulus;
  std::vector<double> times;
  const double base_step = (stim.time_ms - protocol.baseline_from_ms) /
                           std::max(protocol.baseline_reads, 1);
  for (int k = 0; k < protocol.baseline_reads; ++k) {
    times.push_back(protocol.baseline_from_ms + k * base_step);
  }
  const int per_kick = static_cast<int>(std::ceil(
      (protocol.fit_to_ms - protocol.fit_from_ms) / protocol.read_step_ms));
  for (int k = 0; k < stim.count; ++k) {
    for (int j = 0; j < per_kick; ++j) {
      times.push_back(stim.time_ms + k * stim.period_ms + protocol.fit_from_ms +
                      j * protocol.read_step_ms);
    }
  }
  const double runtime_ms = times.back() + 0.0005;
  CAL_ASSIGN_OR_RETURN(const auto reads,
                       CadcReads(configs, &stim, times, runtime_ms));
  if (reads.size() != times.size()) {
    return absl::InternalError(absl::StrCat("asked for ", times.size(),
                                            " CADC reads, got ", reads.size()));
  }
  const int nb = protocol.baseline_reads;
  const int lag = std::clamp(protocol.difference_lag, 0, per_kick - 1);
  std::vector<double> tau(circuits_.size());
  for (size_t i = 0; i < circuits_.size(); ++i) {
    double baseline = 0.0;
    for (int k = 0; k < nb; ++k) baseline += reads[k][i];
    baseline /= std::max(nb, 1);
    // Pooled within-kick regression: sums over kicks of the centred
    // weighted moments.
    double sxy = 0.0, sxx = 0.0;
    int used = 0;
    for (int k = 0; k < stim.count; ++k) {
      double sw = 0, st = 0, sy = 0, stt = 0, sty = 0;
      for (int j = 0; j + lag < per_kick; ++j) {
        const size_t r = nb + k * per_kick + j;
        const double a = lag > 0 ? static_cast<double>(reads[r][i]) -
                                       static_cast<double>(reads[r + lag][i])
                                 : reads[r][i] - baseline;
        if (a < protocol.min_amplitude_lsb) break;
        const double t_us =
            (protocol.fit_from_ms + j * protocol.read_step_ms) * 1e3;
        const double y = std::log(a);
        const double w = a * a;
        sw += w;
        st += w * t_us;
        sy += w * y;
        stt += w * t_us * t_us;
        sty += w * t_us * y;
        ++used;
      }
      if (sw > 0.0) {
        sxy += sty - st * sy / sw;
        sxx += stt - st * st / sw;
      }
    }
    if (used < 3 || sxx <= 0.0) {
      tau[i] = 0.0;  // gone before the window: very short
      continue;
    }
    const double slope = sxy / sxx;  // [1/us]
    tau[i] = slope >= 0.0 ? kInf : -1.0 / slope;
  }
  return tau;
}

Spread ComputeSpread(absl::Span<const double> values) {
  Spread s{std::numeric_limits<double>::quiet_NaN(),
           std::numeric_limits<double>::quiet_NaN(), kInf, -kInf};
  double sum = 0.0;
  int n = 0;
  for (double v : values) {
    if (!std::isfinite(v)) continue;
    sum += v;
    ++n;
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
  }
  if (n == 0) return s;
  s.mean = sum / n;
  if (n < 2) return s;
  double ss = 0.0;
  for (double v : values) {
    if (std::isfinite(v)) ss += (v - s.mean) * (v - s.mean);
  }
  s.sd = std::sqrt(ss / (n - 1));
  return s;
}

}  // namespace hxemu::calibration
