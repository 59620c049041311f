#include "hxemu/client/experiment_builder.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace hxemu::client {
namespace {

std::string PopulationPath(uint32_t index) {
  return absl::StrCat("experiment.populations[", index, "]");
}

std::string ProjectionPath(uint32_t index) {
  return absl::StrCat("experiment.projections[", index, "]");
}

}  // namespace

// --- PopulationBuilder -------------------------------------------------------

hxemu::v1::Population* PopulationBuilder::proto() const {
  return builder_->experiment_.mutable_populations(static_cast<int>(index_));
}

uint32_t PopulationBuilder::size() const { return proto()->size(); }

PopulationBuilder& PopulationBuilder::Set(absl::string_view name,
                                          int32_t value) {
  return Set(name, std::vector<int32_t>{value});
}

PopulationBuilder& PopulationBuilder::Set(absl::string_view name,
                                          std::vector<int32_t> values) {
  hxemu::v1::Population* pop = proto();
  const std::string path =
      absl::StrCat(PopulationPath(index_), ".parameters[", name, "]");
  if (pop->cell_type() != hxemu::v1::CELL_TYPE_HX_NEURON) {
    builder_->Fail(absl::StrCat(
        path, ": only HX neuron populations have neuron parameters"));
    return *this;
  }
  if (values.size() != 1 && values.size() != pop->size()) {
    builder_->Fail(absl::StrCat(path, ".values: has ", values.size(),
                                " entries, expected 1 or the population size (",
                                pop->size(), ")"));
    return *this;
  }
  hxemu::v1::NeuronParameter* parameter = nullptr;
  for (hxemu::v1::NeuronParameter& existing : *pop->mutable_parameters()) {
    if (existing.name() == name) parameter = &existing;
  }
  if (parameter == nullptr) {
    parameter = pop->add_parameters();
    parameter->set_name(std::string(name));
  }
  parameter->mutable_values()->Assign(values.begin(), values.end());
  return *this;
}

PopulationBuilder& PopulationBuilder::Circuits(std::vector<uint32_t> circuits) {
  hxemu::v1::Population* pop = proto();
  const std::string path = absl::StrCat(PopulationPath(index_), ".circuits");
  if (pop->cell_type() != hxemu::v1::CELL_TYPE_HX_NEURON) {
    builder_->Fail(absl::StrCat(
        path, ": only HX neuron populations are placed on circuits"));
  } else if (circuits.size() != pop->size()) {
    builder_->Fail(absl::StrCat(path, ": has ", circuits.size(),
                                " entries, expected the population size (",
                                pop->size(), ")"));
  } else {
    pop->mutable_circuits()->Assign(circuits.begin(), circuits.end());
  }
  return *this;
}

PopulationBuilder& PopulationBuilder::Record(hxemu::v1::Observable observable,
                                             std::vector<uint32_t> neurons) {
  hxemu::v1::Experiment& e = builder_->experiment_;
  const std::string path =
      absl::StrCat("experiment.recordings[", e.recordings_size(), "]");
  if (observable == hxemu::v1::OBSERVABLE_UNSPECIFIED) {
    builder_->Fail(absl::StrCat(path, ".observable: must be given"));
    return *this;
  }
  for (size_t i = 0; i < neurons.size(); ++i) {
    if (neurons[i] >= size()) {
      builder_->Fail(absl::StrCat(path, ".neurons[", i, "]: ", neurons[i],
                                  " is out of range 0..", size() - 1));
      return *this;
    }
  }
  hxemu::v1::Recording* recording = e.add_recordings();
  recording->set_population(index_);
  recording->set_observable(observable);
  recording->mutable_neurons()->Assign(neurons.begin(), neurons.end());
  return *this;
}

// --- ProjectionBuilder -------------------------------------------------------

hxemu::v1::Projection* ProjectionBuilder::proto() const {
  return builder_->experiment_.mutable_projections(static_cast<int>(index_));
}

ProjectionBuilder& ProjectionBuilder::Connect(uint32_t pre, uint32_t post,
                                              int32_t weight) {
  // After a mistake (e.g. populations of another builder) the indices may
  // be meaningless: Build() fails anyway.
  if (!builder_->error_.ok()) return *this;
  hxemu::v1::Projection* projection = proto();
  const hxemu::v1::Experiment& e = builder_->experiment_;
  const uint32_t pre_size =
      e.populations(static_cast<int>(projection->pre_population())).size();
  const uint32_t post_size =
      e.populations(static_cast<int>(projection->post_population())).size();
  const std::string path = ProjectionPath(index_);
  const int k = projection->weights_size();
  if (pre >= pre_size) {
    builder_->Fail(absl::StrCat(path, ".pre_indices[", k, "]: ", pre,
                                " is out of range 0..", pre_size - 1));
  } else if (post >= post_size) {
    builder_->Fail(absl::StrCat(path, ".post_indices[", k, "]: ", post,
                                " is out of range 0..", post_size - 1));
  } else if (projection->receptor_type() ==
                 hxemu::v1::RECEPTOR_TYPE_EXCITATORY &&
             weight < 0) {
    builder_->Fail(absl::StrCat(path, ".weights[", k, "]: ", weight,
                                " must be >= 0 for an excitatory receptor"));
  } else if (projection->receptor_type() ==
                 hxemu::v1::RECEPTOR_TYPE_INHIBITORY &&
             weight > 0) {
    builder_->Fail(absl::StrCat(path, ".weights[", k, "]: ", weight,
                                " must be <= 0 for an inhibitory receptor"));
  } else {
    projection->add_pre_indices(pre);
    projection->add_post_indices(post);
    projection->add_weights(weight);
  }
  return *this;
}

ProjectionBuilder& ProjectionBuilder::AllToAll(int32_t weight) {
  if (!builder_->error_.ok()) return *this;
  const hxemu::v1::Experiment& e = builder_->experiment_;
  const uint32_t pre_size =
      e.populations(static_cast<int>(proto()->pre_population())).size();
  const uint32_t post_size =
      e.populations(static_cast<int>(proto()->post_population())).size();
  for (uint32_t pre = 0; pre < pre_size; ++pre) {
    for (uint32_t post = 0; post < post_size; ++post) {
      Connect(pre, post, weight);
    }
  }
  return *this;
}

ProjectionBuilder& ProjectionBuilder::OneToOne(int32_t weight) {
  if (!builder_->error_.ok()) return *this;
  const hxemu::v1::Experiment& e = builder_->experiment_;
  const uint32_t pre_size =
      e.populations(static_cast<int>(proto()->pre_population())).size();
  const uint32_t post_size =
      e.populations(static_cast<int>(proto()->post_population())).size();
  if (pre_size != post_size) {
    builder_->Fail(
        absl::StrCat(ProjectionPath(index_),
                     ": one-to-one needs populations of equal size (", pre_size,
                     " and ", post_size, ")"));
    return *this;
  }
  for (uint32_t i = 0; i < pre_size; ++i) Connect(i, i, weight);
  return *this;
}

// --- ExperimentBuilder -------------------------------------------------------

void ExperimentBuilder::Fail(std::string message) {
  if (error_.ok()) error_ = absl::InvalidArgumentError(std::move(message));
}

PopulationBuilder ExperimentBuilder::AddPopulation(
    uint32_t size, std::string label, hxemu::v1::CellType cell_type) {
  const auto index = static_cast<uint32_t>(experiment_.populations_size());
  if (size == 0) {
    Fail(absl::StrCat(PopulationPath(index),
                      ".size: 0 is out of range, must be >= 1"));
  }
  hxemu::v1::Population* pop = experiment_.add_populations();
  pop->set_label(std::move(label));
  pop->set_size(size);
  pop->set_cell_type(cell_type);
  return PopulationBuilder(this, index);
}

PopulationBuilder ExperimentBuilder::AddHxNeurons(uint32_t size,
                                                  std::string label) {
  return AddPopulation(size, std::move(label), hxemu::v1::CELL_TYPE_HX_NEURON);
}

PopulationBuilder ExperimentBuilder::AddSpikeSourceArray(
    uint32_t size, std::vector<double> times_ms, std::string label) {
  PopulationBuilder pop = AddPopulation(
      size, std::move(label), hxemu::v1::CELL_TYPE_SPIKE_SOURCE_ARRAY);
  // One shared entry: the server gives it to every source.
  pop.proto()
      ->mutable_spike_source_array()
      ->add_spike_times()
      ->mutable_times_ms()
      ->Assign(times_ms.begin(), times_ms.end());
  return pop;
}

PopulationBuilder ExperimentBuilder::AddSpikeSourceArray(
    std::vector<std::vector<double>> times_ms_per_source, std::string label) {
  PopulationBuilder pop =
      AddPopulation(static_cast<uint32_t>(times_ms_per_source.size()),
                    std::move(label), hxemu::v1::CELL_TYPE_SPIKE_SOURCE_ARRAY);
  hxemu::v1::SpikeSourceArray* array =
      pop.proto()->mutable_spike_source_array();
  for (const std::vector<double>& times : times_ms_per_source) {
    array->add_spike_times()->mutable_times_ms()->Assign(times.begin(),
                                                         times.end());
  }
  return pop;
}

PopulationBuilder ExperimentBuilder::AddSpikeSourcePoisson(uint32_t size,
                                                           double rate_hz,
                                                           double start_ms,
                                                           double duration_ms,
                                                           std::string label) {
  PopulationBuilder pop = AddPopulation(
      size, std::move(label), hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON);
  hxemu::v1::SpikeSourcePoisson* poisson =
      pop.proto()->mutable_spike_source_poisson();
  poisson->set_rate_hz(rate_hz);
  poisson->set_start_ms(start_ms);
  poisson->set_duration_ms(duration_ms);
  return pop;
}

ProjectionBuilder ExperimentBuilder::Connect(const PopulationBuilder& pre,
                                             const PopulationBuilder& post,
                                             hxemu::v1::ReceptorType receptor,
                                             std::string label) {
  const auto index = static_cast<uint32_t>(experiment_.projections_size());
  if (pre.builder_ != this || post.builder_ != this) {
    // A handle of another builder would index the wrong populations.
    Fail(absl::StrCat(ProjectionPath(index),
                      ": populations of another ExperimentBuilder"));
  } else if (experiment_.populations(static_cast<int>(post.index()))
                 .cell_type() != hxemu::v1::CELL_TYPE_HX_NEURON) {
    Fail(absl::StrCat(ProjectionPath(index), ".post_population: ", post.index(),
                      " is not an HX neuron population"));
  }
  hxemu::v1::Projection* projection = experiment_.add_projections();
  projection->set_label(std::move(label));
  projection->set_pre_population(pre.builder_ == this ? pre.index() : 0);
  projection->set_post_population(post.builder_ == this ? post.index() : 0);
  projection->set_receptor_type(receptor);
  return ProjectionBuilder(this, index);
}

ExperimentBuilder& ExperimentBuilder::RuntimeMs(double runtime_ms) {
  experiment_.set_runtime_ms(runtime_ms);
  return *this;
}

ExperimentBuilder& ExperimentBuilder::Seed(uint64_t seed) {
  experiment_.set_seed(seed);
  return *this;
}

ExperimentBuilder& ExperimentBuilder::ChipId(uint32_t chip_id) {
  experiment_.set_chip_id(chip_id);
  return *this;
}

ExperimentBuilder& ExperimentBuilder::InitialConfig(
    hxemu::v1::Calibration calibration) {
  *experiment_.mutable_initial_config() = std::move(calibration);
  return *this;
}

ExperimentBuilder& ExperimentBuilder::CadcReadsMs(
    std::vector<double> times_ms) {
  experiment_.mutable_cadc()->mutable_times_ms()->Assign(times_ms.begin(),
                                                         times_ms.end());
  return *this;
}

absl::StatusOr<hxemu::v1::Experiment> ExperimentBuilder::Build() const {
  if (!error_.ok()) return error_;
  if (!(experiment_.runtime_ms() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("experiment.runtime_ms: ", experiment_.runtime_ms(),
                     " is out of range, must be > 0 (call RuntimeMs)"));
  }
  return experiment_;
}

absl::StatusOr<hxemu::v1::Experiment> ExperimentBuilder::Build(
    const hxemu::v1::ServerInfo& info) const {
  absl::StatusOr<hxemu::v1::Experiment> experiment = Build();
  if (!experiment.ok()) return experiment;
  for (int p = 0; p < experiment->populations_size(); ++p) {
    const hxemu::v1::Population& pop = experiment->populations(p);
    for (int k = 0; k < pop.parameters_size(); ++k) {
      const hxemu::v1::NeuronParameter& parameter = pop.parameters(k);
      const hxemu::v1::ParameterInfo* entry = nullptr;
      for (const hxemu::v1::ParameterInfo& candidate :
           info.neuron_parameters()) {
        if (candidate.name() == parameter.name()) entry = &candidate;
      }
      const std::string path = PopulationPath(static_cast<uint32_t>(p));
      if (entry == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ".parameters[", k, "]: unknown neuron parameter \"",
            parameter.name(), "\" (see 'hxemu info')"));
      }
      for (int i = 0; i < parameter.values_size(); ++i) {
        const int32_t v = parameter.values(i);
        if (v < entry->min() || v > entry->max()) {
          return absl::InvalidArgumentError(absl::StrCat(
              path, ".parameters[", parameter.name(), "].values[", i, "]: ", v,
              " is out of range ", entry->min(), "..", entry->max()));
        }
      }
    }
  }
  return experiment;
}

}  // namespace hxemu::client
