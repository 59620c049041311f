// File: hxemu/calibration/measurement.h
//
// How the calibration (and its tests and benchmark) look at an emulated chip:
// only through hxemu.v1.Experiment runs on hxemu::emulator::Chip, reading what
// the real system would read - CADC codes of all placed circuits at once
// (contract C1), MADC traces of at most two circuits per run, spike times.
// Nothing here reads the emulator's mismatch tables.
//
// Every run uses a fresh seed (seed, seed + 1, ...), as repeated
// measurements on hardware see fresh noise.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/emulator/parameters.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::calibration {

// Every hardware parameter of one circuit, indexed by
// static_cast<int>(emulator::NeuronParameter).
using ParameterValues = std::array<int32_t, emulator::kNumNeuronParameters>;

// The parameter table's defaults.
ParameterValues DefaultParameterValues();

inline int32_t& At(ParameterValues& v, emulator::NeuronParameter p) {
  return v[static_cast<int>(p)];
}
inline int32_t At(const ParameterValues& v, emulator::NeuronParameter p) {
  return v[static_cast<int>(p)];
}

// One input spike, sent to every measured circuit.
struct Stimulus {
  hxemu::v1::ReceptorType receptor = hxemu::v1::RECEPTOR_TYPE_EXCITATORY;
  // |weight| [hardware LSB]; > 63 is spread over several synapses.
  int32_t weight = 0;
  double time_ms = 0.0;  // [ms hardware]
  // A train: `count` spikes at time_ms + k x period_ms.
  int count = 1;
  double period_ms = 0.0;
};

// The membrane's decay after a train of identical kicks, read by the CADC
// for all circuits at once (calix MembraneTimeConstCalibCADC-like). The
// response to every kick, and to the sum of the previous kicks' tails, decays
// with tau_mem, so each kick's samples are a pure exponential above the
// baseline (the settled membrane before the first kick).
struct KickTrainProtocol {
  // Kicks: stimulus.count spikes, period stimulus.period_ms.
  Stimulus stimulus;
  // Baseline reads: `baseline_reads` evenly spread over [baseline_from_ms,
  // stimulus.time_ms) [ms hardware].
  double baseline_from_ms = 0.0;
  int baseline_reads = 0;
  // Reads after every kick at offsets fit_from_ms, fit_from_ms + step, ...
  // below fit_to_ms [ms hardware after the kick]; a kick's samples are used
  // up to the first one closer than min_amplitude_lsb to the baseline.
  double fit_from_ms = 0.0;
  double fit_to_ms = 0.0;
  double read_step_ms = 0.0;
  double min_amplitude_lsb = 2.0;
  // > 0: fit the differences read[j] - read[j + difference_lag] of each
  // kick's reads instead of read[j] - baseline. They decay with the same
  // tau_mem and do not depend on the baseline, whose error would be common
  // to all kicks.
  int difference_lag = 0;
};

// Fit window of an exponential decay after a stimulus (MADC).
struct DecayProtocol {
  hxemu::v1::Observable observable = hxemu::v1::OBSERVABLE_V;
  Stimulus stimulus;
  // The baseline is the mean of the samples in [baseline_from_ms,
  // stimulus.time_ms) [ms hardware].
  double baseline_from_ms = 0.0;
  // Samples in [fit_from_ms, fit_to_ms) are fitted, up to the first one
  // whose distance to the baseline falls below min_amplitude_lsb.
  double fit_from_ms = 0.0;
  double fit_to_ms = 0.0;
  double min_amplitude_lsb = 4.0;
  double runtime_ms = 0.0;
};

class Measurer {
 public:
  // Measures `circuits` (distinct, 0..511) of `chip` (not owned, must
  // outlive the Measurer). `seed` is the first run's seed.
  Measurer(emulator::Chip* chip, std::vector<uint32_t> circuits, uint64_t seed);

  const std::vector<uint32_t>& circuits() const { return circuits_; }
  // Synapse DAC bias of every run [CapMem LSB], 30..1022 (checked by
  // ResolveTargets); 600 (the default) leaves Experiment.synapse_dac_bias
  // unset.
  void set_synapse_dac_bias(int32_t bias) { synapse_dac_bias_ = bias; }
  // Experiments run so far.
  int64_t runs() const { return runs_; }

  // Mean of the CADC reads at `times_ms` per circuit [CADC LSB]. `configs`
  // has one entry per circuit, in the order of circuits().
  absl::StatusOr<std::vector<double>> CadcMean(
      absl::Span<const ParameterValues> configs,
      absl::Span<const double> times_ms, double runtime_ms);

  // Mean of the `top` largest CADC reads at `times_ms` per circuit (the
  // mean of a few, not the single largest, so that the 8-bit codes and their
  // noise average out) [CADC LSB].
  absl::StatusOr<std::vector<double>> CadcMax(
      absl::Span<const ParameterValues> configs,
      absl::Span<const double> times_ms, double runtime_ms, int top);

  // Mean of the reads at `after_ms` minus mean of the reads at `before_ms`
  // per circuit, with `stimulus` sent to every circuit in between [CADC
  // LSB]. `before_mean` (optional) receives the mean of the reads before.
  absl::StatusOr<std::vector<double>> CadcStep(
      absl::Span<const ParameterValues> configs, const Stimulus& stimulus,
      absl::Span<const double> before_ms, absl::Span<const double> after_ms,
      double runtime_ms, std::vector<double>* before_mean = nullptr);

  // Mean inter-spike interval per circuit over a run of `runtime_ms` [us
  // hardware]; +infinity with fewer than two spikes.
  absl::StatusOr<std::vector<double>> MeanIsiUs(
      absl::Span<const ParameterValues> configs, double runtime_ms);

  // Time constant of the exponential decay of `protocol.observable` after
  // the stimulus, per circuit, from a weighted log-linear least-squares fit
  // of the MADC trace [us hardware]. Two circuits (of different column
  // parity) per run. 0 if the response decayed below min_amplitude_lsb
  // before the fit window; +infinity if it did not decay.
  // tau_mem per circuit from a kick train (KickTrainProtocol): weighted
  // log-linear least squares of all kicks' samples with one slope and one
  // intercept per kick [us hardware]; 0 / +infinity as for MadcDecayTauUs.
  absl::StatusOr<std::vector<double>> CadcKickTauUs(
      absl::Span<const ParameterValues> configs,
      const KickTrainProtocol& protocol);

  absl::StatusOr<std::vector<double>> MadcDecayTauUs(
      absl::Span<const ParameterValues> configs, const DecayProtocol& protocol);

 private:
  // One HX population of circuits `subset` (indices into circuits_) with
  // their configs; plus a one-neuron spike source if `stimulus` has weight.
  hxemu::v1::Experiment Build(absl::Span<const ParameterValues> configs,
                              absl::Span<const int> subset,
                              const Stimulus* stimulus,
                              double runtime_ms) const;
  absl::StatusOr<hxemu::v1::Result> Run(hxemu::v1::Experiment experiment);
  // Codes of every read, per circuit of circuits_ (reads x circuits).
  absl::StatusOr<std::vector<std::vector<uint32_t>>> CadcReads(
      absl::Span<const ParameterValues> configs, const Stimulus* stimulus,
      absl::Span<const double> times_ms, double runtime_ms);

  emulator::Chip* chip_;
  std::vector<uint32_t> circuits_;
  uint64_t next_seed_;
  int64_t runs_ = 0;
  int32_t synapse_dac_bias_ = 600;
};

// Standard deviation and mean of finite values (NaN if fewer than 2).
struct Spread {
  double mean;
  double sd;
  double min;
  double max;
};
Spread ComputeSpread(absl::Span<const double> values);

}  // namespace hxemu::calibration
