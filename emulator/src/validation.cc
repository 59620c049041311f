// File: validation.cc
//
// All experiment rules, checked up front. Every message starts with the path
// of the offending field ("populations[0].parameters[leak_v_leak].values[3]")
// and, for ranges, states the allowed range. Messages that PyNN users know
// from the real BrainScaleS-2 stack are quoted verbatim.
#include "validation.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "hxemu/emulator/chip_constants.h"
#include "hxemu/emulator/parameters.h"
#include "model_constants.h"
#include "rounding.h"
#include "status_macros.h"

namespace hxemu::emulator {
namespace {

using ::hxemu::v1::CellType;
using ::hxemu::v1::Experiment;
using ::hxemu::v1::Observable;
using ::hxemu::v1::Population;
using ::hxemu::v1::Projection;
using ::hxemu::v1::Recording;

// absl::string_view is not std::string_view in Debian's Abseil build.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

template <typename... Args>
absl::Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

std::string PopulationPath(int p) {
  return absl::StrCat("populations[", p, "]");
}

bool IsHxNeuron(const Population& pop) {
  return pop.cell_type() == hxemu::v1::CELL_TYPE_HX_NEURON;
}

bool IsKnownCellType(int type) {
  return type == hxemu::v1::CELL_TYPE_HX_NEURON ||
         type == hxemu::v1::CELL_TYPE_SPIKE_SOURCE_ARRAY ||
         type == hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON ||
         type == hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP;
}

bool IsAnalogObservable(Observable o) {
  return o == hxemu::v1::OBSERVABLE_V || o == hxemu::v1::OBSERVABLE_EXC_SYNIN ||
         o == hxemu::v1::OBSERVABLE_INH_SYNIN ||
         o == hxemu::v1::OBSERVABLE_ADAPTATION;
}

// Parameters whose feature the emulator does not model (multicompartment,
// bayesian): any value but the default is rejected with UNIMPLEMENTED instead
// of being ignored.
bool IsUnimplementedUnlessDefault(NeuronParameter p) {
  const std::string_view name = Info(p).name;
  if (name.starts_with("multicompartment_") || name.starts_with("bayesian_")) {
    return true;
  }
  return false;
}

bool IsFiniteNonNegative(double x) { return std::isfinite(x) && x >= 0.0; }

// Walks the experiment once; keeps the first UNIMPLEMENTED finding aside so
// that INVALID_ARGUMENT findings anywhere take precedence.
class Validator {
 public:
  Validator(const Experiment& experiment, const ExperimentLimits& limits,
            RoutingCache* routing_cache)
      : e_(experiment), limits_(limits), routing_cache_(routing_cache) {}

  absl::StatusOr<MappedExperiment> Run() {
    MappedExperiment mapped;
    if (e_.populations_size() == 0) {
      return Invalid("populations: at least one population is required");
    }
    input_spikes_.assign(e_.populations_size(), 0.0);
    int64_t hx_neurons = 0;
    for (int p = 0; p < e_.populations_size(); ++p) {
      HXEMU_RETURN_IF_ERROR(CheckPopulation(p, &hx_neurons));
    }
    HXEMU_ASSIGN_OR_RETURN(mapped.circuits, Place());
    for (int j = 0; j < e_.projections_size(); ++j) {
      HXEMU_RETURN_IF_ERROR(CheckProjection(j));
    }
    for (int r = 0; r < e_.recordings_size(); ++r) {
      HXEMU_RETURN_IF_ERROR(CheckRecording(r, mapped));
    }
    HXEMU_RETURN_IF_ERROR(CheckMadcPair(mapped));
    std::sort(spikes_.begin(), spikes_.end());
    spikes_.erase(std::unique(spikes_.begin(), spikes_.end()), spikes_.end());
    for (const auto& [pop, neuron] : spikes_) {
      mapped.spikes.push_back({pop, neuron});
    }
    HXEMU_RETURN_IF_ERROR(CheckRuntime());
    HXEMU_RETURN_IF_ERROR(CheckSynapseDacBias());
    mapped.runtime_ticks = RuntimeTicks(e_.runtime_ms());
    HXEMU_RETURN_IF_ERROR(CheckCadc(mapped));
    if (!unimplemented_.ok()) return unimplemented_;
    HXEMU_RETURN_IF_ERROR(CheckResources(mapped));
    if (routing_cache_ != nullptr) {
      HXEMU_ASSIGN_OR_RETURN(mapped.routing,
                             routing_cache_->Route(e_, mapped.circuits));
    } else {
      HXEMU_ASSIGN_OR_RETURN(Routing routing,
                             RouteProjections(e_, mapped.circuits));
      mapped.routing = std::make_shared<const Routing>(std::move(routing));
    }
    return mapped;
  }

  // The population rules and the placement only (PlaceNeurons).
  absl::StatusOr<std::vector<std::vector<int>>> PlaceOnly() {
    if (e_.populations_size() == 0) {
      return Invalid("populations: at least one population is required");
    }
    input_spikes_.assign(e_.populations_size(), 0.0);
    int64_t hx_neurons = 0;
    for (int p = 0; p < e_.populations_size(); ++p) {
      HXEMU_RETURN_IF_ERROR(CheckPopulation(p, &hx_neurons));
    }
    return Place();
  }

 private:
  template <typename... Args>
  void NoteUnimplemented(const Args&... args) {
    if (unimplemented_.ok()) {
      unimplemented_ = absl::UnimplementedError(absl::StrCat(args...));
    }
  }

  absl::Status CheckPopulation(int p, int64_t* hx_neurons) {
    const Population& pop = e_.populations(p);
    const std::string path = PopulationPath(p);
    const int64_t size = pop.size();
    if (size < 1)
      return Invalid(path, ".size: 0 is out of range, must be >= 1");
    if (!IsKnownCellType(pop.cell_type())) {
      return Invalid(path, ".cell_type: must be CELL_TYPE_HX_NEURON, ",
                     "CELL_TYPE_SPIKE_SOURCE_ARRAY, ",
                     "CELL_TYPE_SPIKE_SOURCE_POISSON or ",
                     "CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP (got ",
                     static_cast<int>(pop.cell_type()), ")");
    }
    if (IsHxNeuron(pop)) {
      if (*hx_neurons + size > kNumNeuronCircuits) {
        return Invalid(path, ".size: Cannot register more than ",
                       kNumNeuronCircuits, " neuron circuits. (", size,
                       " requested, ", kNumNeuronCircuits - *hx_neurons,
                       " free)");
      }
      *hx_neurons += size;
      HXEMU_RETURN_IF_ERROR(CheckParameters(p));
      HXEMU_RETURN_IF_ERROR(CheckCircuitList(p));
      return absl::OkStatus();
    }
    source_neurons_ += size;
    // Checked here, not with the other limits: everything after this
    // (recordings, lowering) allocates per source neuron.
    if (source_neurons_ > limits_.max_source_neurons) {
      return absl::ResourceExhaustedError(absl::StrCat(
          path, ".size: the spike-source populations up to here have ",
          source_neurons_,
          " neurons, more than the limit max_source_neurons = ",
          limits_.max_source_neurons));
    }
    if (pop.parameters_size() > 0) {
      return Invalid(path, ".parameters: only CELL_TYPE_HX_NEURON populations ",
                     "have neuron parameters");
    }
    if (pop.circuits_size() > 0) {
      return Invalid(path, ".circuits: only CELL_TYPE_HX_NEURON populations ",
                     "are placed on neuron circuits");
    }
    if (pop.cell_type() == hxemu::v1::CELL_TYPE_SPIKE_SOURCE_ARRAY) {
      return CheckSpikeSourceArray(p);
    }
    if (pop.cell_type() == hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP) {
      return CheckSpikeSourcePoissonOnChip(p);
    }
    return CheckSpikeSourcePoisson(p);
  }

  // On-chip Poisson: rate x size within the background clock, size within
  // the 8-bit label randomisation, at most kMaxOnChipPoissonPopulations.
  absl::Status CheckSpikeSourcePoissonOnChip(int p) {
    const Population& pop = e_.populations(p);
    const std::string path =
        absl::StrCat(PopulationPath(p), ".spike_source_poisson_on_chip.");
    const double rate = pop.spike_source_poisson_on_chip().rate_hz();
    if (!IsFiniteNonNegative(rate)) {
      return Invalid(path, "rate_hz: ", rate, " must be finite and >= 0");
    }
    if (rate * pop.size() > kBackgroundClockHz) {
      return Invalid(path, "rate_hz: The chosen Poisson rate can not be ",
                     "realized on hardware: rate_hz x size = ",
                     rate * pop.size(), " Hz exceeds the background source ",
                     "clock of ", kBackgroundClockHz / 1e6, " MHz");
    }
    if (pop.size() > kMaxOnChipPoissonSize) {
      return Invalid(PopulationPath(p), ".size: ", pop.size(),
                     " is out of range 1..", kMaxOnChipPoissonSize,
                     " for CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP (8-bit ",
                     "label randomisation)");
    }
    if (++on_chip_poisson_ > kMaxOnChipPoissonPopulations && resource_.ok()) {
      resource_ = absl::ResourceExhaustedError(absl::StrCat(
          PopulationPath(p), ".cell_type: Cannot register more than ",
          kMaxOnChipPoissonPopulations, " ID sets: at most ",
          kMaxOnChipPoissonPopulations,
          " CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP populations (one per PADI ",
          "bus, each using one background source per hemisphere)"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckParameters(int p) {
    const Population& pop = e_.populations(p);
    const std::string path = PopulationPath(p);
    std::array<bool, kNumNeuronParameters> seen{};
    for (int k = 0; k < pop.parameters_size(); ++k) {
      const hxemu::v1::NeuronParameter& np = pop.parameters(k);
      const std::optional<NeuronParameter> id = FindNeuronParameter(np.name());
      if (!id.has_value()) {
        return Invalid(path, ".parameters[", k,
                       "]: unknown neuron parameter \"", np.name(), "\"");
      }
      const NeuronParameterInfo& info = Info(*id);
      const std::string ppath =
          absl::StrCat(path, ".parameters[", np.name(), "]");
      if (seen[static_cast<int>(*id)]) {
        return Invalid(ppath, ": parameter is given more than once");
      }
      seen[static_cast<int>(*id)] = true;
      if (np.values_size() != 1 &&
          static_cast<int64_t>(np.values_size()) != pop.size()) {
        return Invalid(ppath, ".values: has ", np.values_size(),
                       " entries, expected 1 or the population size (",
                       pop.size(), ")");
      }
      for (int i = 0; i < np.values_size(); ++i) {
        const int32_t v = np.values(i);
        if (v < info.min || v > info.max) {
          return Invalid(ppath, ".values[", i, "]: ", v, " is out of range ",
                         info.min, "..", info.max);
        }
        if (v != info.default_value && IsUnimplementedUnlessDefault(*id)) {
          NoteUnimplemented(ppath, ".values[", i, "]: ", v,
                            " is not supported: the emulator does not model ",
                            Sv(info.name), " yet (only the default ",
                            info.default_value, " is accepted)");
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckCircuitList(int p) {
    const Population& pop = e_.populations(p);
    if (pop.circuits_size() == 0) return absl::OkStatus();
    const std::string path = PopulationPath(p);
    if (static_cast<int64_t>(pop.circuits_size()) != pop.size()) {
      return Invalid(path, ".circuits: has ", pop.circuits_size(),
                     " entries, expected 0 (automatic placement) or the ",
                     "population size (", pop.size(), ")");
    }
    for (int i = 0; i < pop.circuits_size(); ++i) {
      if (pop.circuits(i) >= static_cast<uint32_t>(kNumNeuronCircuits)) {
        return Invalid(path, ".circuits[", i, "]: ", pop.circuits(i),
                       " is out of range 0..", kNumNeuronCircuits - 1);
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckSpikeSourceArray(int p) {
    const Population& pop = e_.populations(p);
    const std::string path =
        absl::StrCat(PopulationPath(p), ".spike_source_array.spike_times");
    const auto& trains = pop.spike_source_array().spike_times();
    if (trains.size() != 1 &&
        static_cast<int64_t>(trains.size()) != pop.size()) {
      return Invalid(path, ": has ", trains.size(),
                     " entries, expected 1 (shared by all neurons) or the ",
                     "population size (", pop.size(), ")");
    }
    double count = 0.0;
    for (int i = 0; i < trains.size(); ++i) {
      const auto& times = trains[i].times_ms();
      for (int k = 0; k < times.size(); ++k) {
        if (!IsFiniteNonNegative(times[k])) {
          return Invalid(path, "[", i, "].times_ms[", k, "]: ", times[k],
                         " must be finite and >= 0");
        }
      }
      count += times.size();
    }
    if (trains.size() == 1) count *= static_cast<double>(pop.size());
    input_spikes_[p] = count;
    return absl::OkStatus();
  }

  absl::Status CheckSpikeSourcePoisson(int p) {
    const hxemu::v1::SpikeSourcePoisson& s =
        e_.populations(p).spike_source_poisson();
    const std::string path =
        absl::StrCat(PopulationPath(p), ".spike_source_poisson.");
    const std::pair<const char*, double> fields[] = {
        {"rate_hz", s.rate_hz()},
        {"start_ms", s.start_ms()},
        {"duration_ms", s.duration_ms()}};
    for (const auto& [name, value] : fields) {
      if (!IsFiniteNonNegative(value)) {
        return Invalid(path, name, ": ", value, " must be finite and >= 0");
      }
    }
    return absl::OkStatus();
  }

  // Explicit circuits first (they must not collide), then every population
  // without an explicit list takes the lowest free circuits, in creation
  // order.
  absl::StatusOr<std::vector<std::vector<int>>> Place() {
    std::vector<std::vector<int>> circuits(e_.populations_size());
    // owner[c] = {population, index in its circuits list} or {-1, -1}.
    std::array<std::pair<int, int>, kNumNeuronCircuits> owner;
    owner.fill({-1, -1});
    for (int p = 0; p < e_.populations_size(); ++p) {
      const Population& pop = e_.populations(p);
      if (!IsHxNeuron(pop)) continue;
      for (int i = 0; i < pop.circuits_size(); ++i) {
        const int c = static_cast<int>(pop.circuits(i));
        if (owner[c].first >= 0) {
          return Invalid(PopulationPath(p), ".circuits[", i, "]: circuit ", c,
                         " is already used by ", PopulationPath(owner[c].first),
                         ".circuits[", owner[c].second, "]");
        }
        owner[c] = {p, i};
        circuits[p].push_back(c);
      }
    }
    int next_free = 0;
    for (int p = 0; p < e_.populations_size(); ++p) {
      const Population& pop = e_.populations(p);
      if (!IsHxNeuron(pop) || pop.circuits_size() > 0) continue;
      for (uint32_t n = 0; n < pop.size(); ++n) {
        while (owner[next_free].first >= 0) ++next_free;  // total <= 512
        owner[next_free] = {p, static_cast<int>(n)};
        circuits[p].push_back(next_free);
      }
    }
    return circuits;
  }

  absl::Status CheckProjection(int j) {
    const Projection& proj = e_.projections(j);
    const std::string path = absl::StrCat("projections[", j, "]");
    const uint32_t num_pops = static_cast<uint32_t>(e_.populations_size());
    if (proj.pre_population() >= num_pops) {
      return Invalid(path, ".pre_population: ", proj.pre_population(),
                     " is out of range 0..", num_pops - 1);
    }
    if (proj.post_population() >= num_pops) {
      return Invalid(path, ".post_population: ", proj.post_population(),
                     " is out of range 0..", num_pops - 1);
    }
    const Population& pre = e_.populations(proj.pre_population());
    const Population& post = e_.populations(proj.post_population());
    if (!IsHxNeuron(post)) {
      return Invalid(path, ".post_population: Only projections with on-chip ",
                     "neuron population are supported.");
    }
    const bool excitatory =
        proj.receptor_type() == hxemu::v1::RECEPTOR_TYPE_EXCITATORY;
    if (!excitatory &&
        proj.receptor_type() != hxemu::v1::RECEPTOR_TYPE_INHIBITORY) {
      return Invalid(path, ".receptor_type: must be RECEPTOR_TYPE_EXCITATORY ",
                     "or RECEPTOR_TYPE_INHIBITORY (got ",
                     static_cast<int>(proj.receptor_type()), ")");
    }
    if (proj.pre_indices_size() != proj.post_indices_size() ||
        proj.pre_indices_size() != proj.weights_size()) {
      return Invalid(path, ": pre_indices, post_indices and weights must ",
                     "have the same length (got ", proj.pre_indices_size(),
                     ", ", proj.post_indices_size(), ", ", proj.weights_size(),
                     ")");
    }
    for (int k = 0; k < proj.pre_indices_size(); ++k) {
      if (proj.pre_indices(k) >= pre.size()) {
        return Invalid(path, ".pre_indices[", k, "]: ", proj.pre_indices(k),
                       " is out of range 0..", pre.size() - 1);
      }
      if (proj.post_indices(k) >= post.size()) {
        return Invalid(path, ".post_indices[", k, "]: ", proj.post_indices(k),
                       " is out of range 0..", post.size() - 1);
      }
      const int32_t w = proj.weights(k);
      if ((excitatory && w < 0) || (!excitatory && w > 0)) {
        return Invalid(path, ".weights[", k, "]: ", w, " (receptor_type ",
                       excitatory ? "RECEPTOR_TYPE_EXCITATORY"
                                  : "RECEPTOR_TYPE_INHIBITORY",
                       "): Weights must be positive for conductance-based ",
                       "and/or excitatory synapses and negative for ",
                       "inhibitory synapses");
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckRecording(int r, MappedExperiment& mapped) {
    const Recording& rec = e_.recordings(r);
    const std::string path = absl::StrCat("recordings[", r, "]");
    const uint32_t num_pops = static_cast<uint32_t>(e_.populations_size());
    if (rec.population() >= num_pops) {
      return Invalid(path, ".population: ", rec.population(),
                     " is out of range 0..", num_pops - 1);
    }
    const int p = static_cast<int>(rec.population());
    const Population& pop = e_.populations(p);
    const Observable obs = rec.observable();
    if (obs != hxemu::v1::OBSERVABLE_SPIKES && !IsAnalogObservable(obs)) {
      return Invalid(
          path, ".observable: must be OBSERVABLE_SPIKES, ",
          "OBSERVABLE_V, OBSERVABLE_EXC_SYNIN, OBSERVABLE_INH_SYNIN ",
          "or OBSERVABLE_ADAPTATION (got ", static_cast<int>(obs), ")");
    }
    for (int i = 0; i < rec.neurons_size(); ++i) {
      if (rec.neurons(i) >= pop.size()) {
        return Invalid(path, ".neurons[", i, "]: ", rec.neurons(i),
                       " is out of range 0..", pop.size() - 1);
      }
    }
    if (obs == hxemu::v1::OBSERVABLE_SPIKES) {
      if (rec.neurons_size() == 0) {
        for (uint32_t n = 0; n < pop.size(); ++n) {
          spikes_.push_back({p, static_cast<int>(n)});
        }
      }
      for (uint32_t n : rec.neurons()) {
        spikes_.push_back({p, static_cast<int>(n)});
      }
      return absl::OkStatus();
    }
    if (!IsHxNeuron(pop)) {
      return Invalid(path, ".observable: spike sources can only record ",
                     "OBSERVABLE_SPIKES");
    }
    const int64_t count =
        rec.neurons_size() > 0 ? rec.neurons_size() : pop.size();
    for (int64_t i = 0; i < count; ++i) {
      const int n = rec.neurons_size() > 0 ? static_cast<int>(rec.neurons(i))
                                           : static_cast<int>(i);
      const std::string npath = rec.neurons_size() > 0
                                    ? absl::StrCat(path, ".neurons[", i, "]")
                                    : path;
      auto it = std::find_if(mapped.madc.begin(), mapped.madc.end(),
                             [&](const MadcRecording& m) {
                               return m.population == p && m.neuron == n;
                             });
      if (it != mapped.madc.end()) {
        if (it->observable == obs) continue;  // requested twice: same trace
        return Invalid(npath, ": Only one source can be recorded per neuron. ",
                       "(", PopulationPath(p), " neuron ", n, " already ",
                       "records ", hxemu::v1::Observable_Name(it->observable),
                       ")");
      }
      if (mapped.madc.size() == 2) {
        return Invalid(npath, ": MADC recording supports recording at most ",
                       "two neurons.");
      }
      mapped.madc.push_back({p, n, mapped.circuits[p][n], obs});
      madc_paths_.push_back(npath);
    }
    return absl::OkStatus();
  }

  absl::Status CheckMadcPair(const MappedExperiment& mapped) {
    if (mapped.madc.size() != 2) return absl::OkStatus();
    const int c0 = mapped.madc[0].circuit;
    const int c1 = mapped.madc[1].circuit;
    if ((c0 % kNumNeuronColumns) % 2 == (c1 % kNumNeuronColumns) % 2) {
      return Invalid(madc_paths_[1], ": MADC recording neurons are required ",
                     "to reside in columns with unique parity (even/odd). ",
                     "(circuits ", c0, " and ", c1, ")");
    }
    return absl::OkStatus();
  }

  absl::Status CheckRuntime() {
    const double max_ms = std::min(limits_.max_runtime_ms, kMaxTimerRuntimeMs);
    const double t = e_.runtime_ms();
    if (!std::isfinite(t) || t <= 0.0 || t > max_ms) {
      return Invalid("runtime_ms: ", t, " is out of range (0, ", max_ms,
                     "] ms");
    }
    return absl::OkStatus();
  }

  absl::Status CheckSynapseDacBias() {
    if (!e_.has_synapse_dac_bias()) return absl::OkStatus();
    const uint32_t bias = e_.synapse_dac_bias();
    if (bias < static_cast<uint32_t>(model::kSynapseDacBiasMin) ||
        bias > static_cast<uint32_t>(model::kSynapseDacBiasMax)) {
      return Invalid("synapse_dac_bias: ", bias, " is out of range ",
                     model::kSynapseDacBiasMin, "..", model::kSynapseDacBiasMax,
                     " [CapMem LSB]");
    }
    return absl::OkStatus();
  }

  // CADC read times: finite, in [0, runtime_ms); sorted into ticks.
  absl::Status CheckCadc(MappedExperiment& mapped) {
    const auto& times = e_.cadc().times_ms();
    const double runtime_ms = e_.runtime_ms();
    for (int i = 0; i < times.size(); ++i) {
      const double t = times[i];
      if (!std::isfinite(t) || t < 0.0 || t >= runtime_ms) {
        return Invalid("cadc.times_ms[", i, "]: ", t,
                       " is out of range [0, runtime_ms = ", runtime_ms,
                       ") ms");
      }
    }
    if (times.size() > limits_.max_cadc_reads) {
      resource_ = absl::ResourceExhaustedError(absl::StrCat(
          "cadc.times_ms: ", times.size(),
          " reads requested, more than the limit max_cadc_reads = ",
          limits_.max_cadc_reads));
      return absl::OkStatus();
    }
    mapped.cadc_ticks.reserve(times.size());
    for (double t : times) {
      // A time just below runtime_ms may round to runtime_ticks: read the
      // last tick then.
      mapped.cadc_ticks.push_back(
          std::min(SpikeTick(t), mapped.runtime_ticks - 1));
    }
    std::sort(mapped.cadc_ticks.begin(), mapped.cadc_ticks.end());
    return absl::OkStatus();
  }

  absl::Status CheckResources(MappedExperiment& mapped) {
    HXEMU_RETURN_IF_ERROR(resource_);
    if (!mapped.madc.empty()) {
      const int64_t samples = EstimatedMadcSamples(mapped.runtime_ticks);
      if (samples > limits_.max_madc_samples) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "recordings: MADC recording over runtime_ms = ", e_.runtime_ms(),
            " takes ", samples, " samples, more than the limit ",
            "max_madc_samples = ", limits_.max_madc_samples));
      }
    }
    const double runtime_ms = e_.runtime_ms();
    double total = 0.0;
    for (int p = 0; p < e_.populations_size(); ++p) {
      const Population& pop = e_.populations(p);
      if (pop.cell_type() == hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON) {
        const auto& s = pop.spike_source_poisson();
        const double end_ms =
            s.duration_ms() > 0.0
                ? std::min(runtime_ms, s.start_ms() + s.duration_ms())
                : runtime_ms;
        const double window_s = std::max(0.0, end_ms - s.start_ms()) * 1e-3;
        input_spikes_[p] =
            s.rate_hz() * window_s * static_cast<double>(pop.size());
      }
      if (pop.cell_type() ==
          hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP) {
        input_spikes_[p] = pop.spike_source_poisson_on_chip().rate_hz() *
                           runtime_ms * 1e-3 * static_cast<double>(pop.size());
      }
      total += input_spikes_[p];
      if (total > static_cast<double>(limits_.max_input_spikes)) {
        return absl::ResourceExhaustedError(absl::StrCat(
            PopulationPath(p), ": the spike sources up to here have ",
            static_cast<int64_t>(std::ceil(total)),
            " input spikes (expected), ",
            "more than the limit max_input_spikes = ",
            limits_.max_input_spikes));
      }
    }
    mapped.expected_input_spikes = total;
    return absl::OkStatus();
  }

  const Experiment& e_;
  const ExperimentLimits& limits_;
  RoutingCache* const routing_cache_;  // may be null
  absl::Status unimplemented_;
  absl::Status resource_;    // first limit finding outside CheckResources
  int on_chip_poisson_ = 0;  // CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP seen
  std::vector<double> input_spikes_;  // per population (sources only)
  int64_t source_neurons_ = 0;
  std::vector<std::pair<int, int>> spikes_;  // (population, neuron)
  std::vector<std::string> madc_paths_;      // field path per madc entry
};

}  // namespace

int64_t RuntimeTicks(double runtime_ms) {
  return std::max<int64_t>(1, std::llround(runtime_ms * kTicksPerMs));
}

int64_t EstimatedMadcSamples(int64_t runtime_ticks) {
  // Samples at k * 34 ns for every k with k * 34 ns < runtime.
  const int64_t runtime_ns = runtime_ticks * kTickNs;
  return (runtime_ns + kMadcSamplePeriodNs - 1) / kMadcSamplePeriodNs;
}

absl::StatusOr<MappedExperiment> MapExperiment(
    const hxemu::v1::Experiment& experiment, const ExperimentLimits& limits,
    RoutingCache* routing_cache) {
  return Validator(experiment, limits, routing_cache).Run();
}

absl::Status ValidateExperiment(const hxemu::v1::Experiment& experiment,
                                const ExperimentLimits& limits) {
  return MapExperiment(experiment, limits).status();
}

absl::StatusOr<std::vector<std::vector<uint32_t>>> PlaceNeurons(
    const hxemu::v1::Experiment& experiment) {
  const ExperimentLimits limits;
  HXEMU_ASSIGN_OR_RETURN(const std::vector<std::vector<int>> circuits,
                         Validator(experiment, limits, nullptr).PlaceOnly());
  std::vector<std::vector<uint32_t>> out(circuits.size());
  for (size_t p = 0; p < circuits.size(); ++p) {
    out[p].assign(circuits[p].begin(), circuits[p].end());
  }
  return out;
}

}  // namespace hxemu::emulator
