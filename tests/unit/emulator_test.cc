// Tests of the emulator library (hxemu_emulator): the parameter table,
// experiment validation (one test per rule, each checking the status code
// and that the message names the field), placement, and the behaviour of the
// emulated neurons at the tutorial's operating points.
//
// Behaviour tests run single neurons for 0.1-0.2 ms emulated time (a few ms
// of wall time each). Numbers in the expectations follow from the model in
// docs/emulator-model.md; the comments give the derivation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/emulator/chip_constants.h"
#include "hxemu/emulator/parameters.h"
#include "hxemu/v1/experiment.pb.h"
#include "support/benchmark_neuron.h"

namespace hxemu::emulator {
namespace {

using ::hxemu::v1::Experiment;
using ::hxemu::v1::Population;
using ::hxemu::v1::Result;
using ::hxemu::v1::Trace;
using ::testing::HasSubstr;

// ---- Helpers
// -----------------------------------------------------------------

using Params = std::vector<std::pair<std::string, int32_t>>;

// Tutorial experiment 1: silent neuron.
const Params kSilent = {{"leak_v_leak", 700}, {"leak_i_bias", 1022}};

// Tutorial experiment 2: leak over threshold.
Params LeakOverThreshold(int32_t leak_i_bias = 150) {
  return {{"leak_v_leak", 1000},
          {"leak_i_bias", leak_i_bias},
          {"threshold_v_threshold", 300},
          {"reset_v_reset", 400},
          {"membrane_capacitance_capacitance", 63},
          {"refractory_period_refractory_time", 255},
          {"threshold_enable", 1},
          {"reset_i_bias", 1022},
          {"reset_enable_multiplication", 1}};
}

// A resting neuron with tau_mem = 2.3 pF / (460 * 0.5 nS) = 10 us and both
// synaptic inputs on (tau_syn = 2 ms / 200 = 10 us, gm 500).
Params PspNeuron() {
  return {{"leak_v_leak", 700},
          {"leak_i_bias", 460},
          {"membrane_capacitance_capacitance", 63},
          {"excitatory_input_enable", 1},
          {"excitatory_input_i_bias_tau", 200},
          {"excitatory_input_i_bias_gm", 500},
          {"inhibitory_input_enable", 1},
          {"inhibitory_input_i_bias_tau", 200},
          {"inhibitory_input_i_bias_gm", 500}};
}

void SetParam(Population* pop, const std::string& name, int32_t value) {
  hxemu::v1::NeuronParameter* p = pop->add_parameters();
  p->set_name(name);
  p->add_values(value);
}

Population* AddNeurons(Experiment& e, uint32_t size, const Params& params) {
  Population* pop = e.add_populations();
  pop->set_size(size);
  pop->set_cell_type(hxemu::v1::CELL_TYPE_HX_NEURON);
  for (const auto& [name, value] : params) SetParam(pop, name, value);
  return pop;
}

Population* AddSpikeSource(Experiment& e, const std::vector<double>& times_ms,
                           uint32_t size = 1) {
  Population* pop = e.add_populations();
  pop->set_size(size);
  pop->set_cell_type(hxemu::v1::CELL_TYPE_SPIKE_SOURCE_ARRAY);
  hxemu::v1::SpikeTimes* t =
      pop->mutable_spike_source_array()->add_spike_times();
  for (double x : times_ms) t->add_times_ms(x);
  return pop;
}

void Record(Experiment& e, uint32_t population, hxemu::v1::Observable obs,
            std::vector<uint32_t> neurons = {}) {
  hxemu::v1::Recording* r = e.add_recordings();
  r->set_population(population);
  r->set_observable(obs);
  for (uint32_t n : neurons) r->add_neurons(n);
}

void Connect(Experiment& e, uint32_t pre, uint32_t post,
             hxemu::v1::ReceptorType receptor,
             std::vector<std::tuple<uint32_t, uint32_t, int32_t>> conns) {
  hxemu::v1::Projection* p = e.add_projections();
  p->set_pre_population(pre);
  p->set_post_population(post);
  p->set_receptor_type(receptor);
  for (const auto& [i, j, w] : conns) {
    p->add_pre_indices(i);
    p->add_post_indices(j);
    p->add_weights(w);
  }
}

// One neuron with `params`, membrane and spikes recorded.
Experiment SingleNeuron(const Params& params, double runtime_ms = 0.2,
                        uint64_t seed = 1) {
  Experiment e;
  AddNeurons(e, 1, params);
  Record(e, 0, hxemu::v1::OBSERVABLE_V);
  Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(runtime_ms);
  e.set_seed(seed);
  return e;
}

// A small valid experiment that the validation tests break one field at a
// time: 2 neurons, a 2-neuron spike source projecting onto them, spikes and
// one membrane recorded.
Experiment ValidBase() {
  Experiment e;
  AddNeurons(e, 2, kSilent);
  AddSpikeSource(e, {0.01, 0.02}, 2);
  Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY,
          {{0, 0, 10}, {1, 1, 0}});
  Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
  Record(e, 0, hxemu::v1::OBSERVABLE_V, {0});
  e.set_runtime_ms(0.1);
  return e;
}

absl::StatusOr<Result> RunOn(uint32_t chip_id, const Experiment& e,
                             const ExperimentLimits& limits = {},
                             const RunControl& control = {}) {
  Chip chip(chip_id);
  return chip.Run(e, limits, control);
}

// Runs on chip 0 and fails the test (returning an empty result) on error.
Result MustRun(const Experiment& e, uint32_t chip_id = 0) {
  absl::StatusOr<Result> r = RunOn(chip_id, e);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : Result();
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// Expects `status` to have `code` and a message containing every fragment.
void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::vector<std::string>& fragments) {
  EXPECT_EQ(status.code(), code) << status;
  for (const std::string& f : fragments) {
    EXPECT_THAT(Message(status), HasSubstr(f));
  }
}

void ExpectInvalid(const Experiment& e,
                   const std::vector<std::string>& fragments,
                   const ExperimentLimits& limits = {}) {
  ExpectError(ValidateExperiment(e, limits), absl::StatusCode::kInvalidArgument,
              fragments);
}

double Mean(const Trace& t, size_t begin = 0,
            size_t end = std::numeric_limits<size_t>::max()) {
  end = std::min<size_t>(end, t.codes_size());
  double sum = 0;
  for (size_t i = begin; i < end; ++i) sum += t.codes(i);
  return sum / static_cast<double>(end - begin);
}

double StdDev(const Trace& t) {
  const double mean = Mean(t);
  double sum = 0;
  for (uint32_t c : t.codes()) sum += (c - mean) * (c - mean);
  return std::sqrt(sum / t.codes_size());
}

// Mean code of the samples with time in [begin_us, end_us).
double MeanBetween(const Trace& t, double begin_us, double end_us) {
  double sum = 0;
  int n = 0;
  for (int i = 0; i < t.codes_size(); ++i) {
    const double us = t.times_ticks(i) * kTickNs * 1e-3;
    if (us >= begin_us && us < end_us) {
      sum += t.codes(i);
      ++n;
    }
  }
  return n > 0 ? sum / n : std::nan("");
}

int SpikeCount(const Result& r, int train = 0) {
  return r.spike_trains(train).times_ticks_size();
}

// ---- Parameter table
// -----------------------------------------------------------

TEST(Parameters, TableHasUniqueNamesAndDefaultsInRange) {
  absl::Span<const NeuronParameterInfo> table = NeuronParameterTable();
  ASSERT_EQ(table.size(), static_cast<size_t>(kNumNeuronParameters));
  std::set<std::string_view> names;
  for (const NeuronParameterInfo& p : table) {
    EXPECT_TRUE(names.insert(p.name).second) << p.name;
    EXPECT_LE(p.min, p.default_value) << p.name;
    EXPECT_LE(p.default_value, p.max) << p.name;
    EXPECT_FALSE(p.description.empty()) << p.name;
  }
}

TEST(Parameters, KindsHaveTheirHardwareRanges) {
  for (const NeuronParameterInfo& p : NeuronParameterTable()) {
    switch (p.kind) {
      case ParameterKind::kBool:
        EXPECT_EQ(p.max, 1) << p.name;
        break;
      case ParameterKind::kVoltageDac:
      case ParameterKind::kCurrentDac:
        EXPECT_EQ(p.max, 1022) << p.name;
        break;
      case ParameterKind::kCapacitance:
        EXPECT_EQ(p.max, 63) << p.name;
        break;
      default:
        break;
    }
    EXPECT_EQ(p.min, 0) << p.name;
  }
}

TEST(Parameters, LookupByNameRoundTrips) {
  for (int i = 0; i < kNumNeuronParameters; ++i) {
    const NeuronParameter p = static_cast<NeuronParameter>(i);
    const std::optional<NeuronParameter> found =
        FindNeuronParameter(Info(p).name);
    ASSERT_TRUE(found.has_value()) << Info(p).name;
    EXPECT_EQ(*found, p);
  }
  EXPECT_FALSE(FindNeuronParameter("leak_v_leek").has_value());
  EXPECT_FALSE(FindNeuronParameter("").has_value());
  EXPECT_EQ(Info(NeuronParameter::leak_v_leak).name, "leak_v_leak");
  EXPECT_EQ(
      Info(NeuronParameter::refractory_period_reset_holdoff).default_value, 15);
  EXPECT_EQ(Info(NeuronParameter::bayesian_to_post_pulse).default_value, 1);
}

TEST(Parameters, KindNames) {
  EXPECT_EQ(ParameterKindName(ParameterKind::kBool), "bool");
  EXPECT_EQ(ParameterKindName(ParameterKind::kVoltageDac), "voltage_dac");
  EXPECT_EQ(ParameterKindName(ParameterKind::kCurrentDac), "current_dac");
  EXPECT_EQ(ParameterKindName(ParameterKind::kCapacitance), "capacitance");
  EXPECT_EQ(ParameterKindName(ParameterKind::kCounter), "counter");
  EXPECT_EQ(ParameterKindName(ParameterKind::kEnum), "enum");
  EXPECT_EQ(Info(NeuronParameter::leak_v_leak).kind,
            ParameterKind::kVoltageDac);
  EXPECT_EQ(Info(NeuronParameter::membrane_capacitance_capacitance).kind,
            ParameterKind::kCapacitance);
}

// ---- Validation: populations and parameters
// -----------------------------------

TEST(Validation, AcceptsTheBaseExperiment) {
  EXPECT_TRUE(ValidateExperiment(ValidBase(), {}).ok())
      << ValidateExperiment(ValidBase(), {});
}

TEST(Validation, RequiresAPopulation) {
  Experiment e;
  e.set_runtime_ms(0.1);
  ExpectInvalid(e, {"populations", "at least one"});
}

TEST(Validation, RejectsEmptyPopulation) {
  Experiment e = ValidBase();
  e.mutable_populations(1)->set_size(0);
  ExpectInvalid(e, {"populations[1].size", ">= 1"});
}

TEST(Validation, RequiresCellType) {
  Experiment e = ValidBase();
  e.mutable_populations(1)->set_cell_type(hxemu::v1::CELL_TYPE_UNSPECIFIED);
  ExpectInvalid(e, {"populations[1].cell_type"});
  e.mutable_populations(1)->set_cell_type(static_cast<hxemu::v1::CellType>(17));
  ExpectInvalid(e, {"populations[1].cell_type", "17"});
}

TEST(Validation, RejectsMoreThan512Neurons) {
  Experiment e = ValidBase();
  AddNeurons(e, 510, {});
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());  // 2 + 510 = 512 fit exactly
  AddNeurons(e, 1, {});
  ExpectInvalid(e, {"populations[3].size",
                    "Cannot register more than 512 neuron circuits."});
}

TEST(Validation, RejectsUnknownParameter) {
  Experiment e = ValidBase();
  SetParam(e.mutable_populations(0), "leak_v_leek", 3);
  ExpectInvalid(e, {"populations[0].parameters[2]", "leak_v_leek"});
}

TEST(Validation, RejectsDuplicateParameter) {
  Experiment e = ValidBase();
  SetParam(e.mutable_populations(0), "leak_v_leak", 3);
  ExpectInvalid(e,
                {"populations[0].parameters[leak_v_leak]", "more than once"});
}

TEST(Validation, RejectsWrongNumberOfValues) {
  Experiment e = ValidBase();
  hxemu::v1::NeuronParameter* p = e.mutable_populations(0)->add_parameters();
  p->set_name("threshold_v_threshold");
  for (int v : {1, 2, 3}) p->add_values(v);
  ExpectInvalid(e, {"populations[0].parameters[threshold_v_threshold].values",
                    "1 or the population size (2)"});
  p->clear_values();
  ExpectInvalid(e, {"populations[0].parameters[threshold_v_threshold].values"});
  p->add_values(1);
  p->add_values(2);
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());  // one value per neuron
}

TEST(Validation, RejectsValueOutOfRange) {
  Experiment e;
  Population* pop = AddNeurons(e, 4, {});
  hxemu::v1::NeuronParameter* p = pop->add_parameters();
  p->set_name("leak_v_leak");
  for (int v : {0, 1, 1022, 1100}) p->add_values(v);
  e.set_runtime_ms(0.1);
  const absl::Status s = ValidateExperiment(e, {});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(s),
            "populations[0].parameters[leak_v_leak].values[3]: 1100 is out of "
            "range 0..1022");
  p->set_values(3, -1);
  ExpectInvalid(e, {"values[3]: -1 is out of range 0..1022"});
  p->set_values(3, 5);
  SetParam(pop, "membrane_capacitance_capacitance", 64);
  ExpectInvalid(
      e, {"parameters[membrane_capacitance_capacitance].values[0]", "0..63"});
}

TEST(Validation, RejectsParametersOnSpikeSources) {
  Experiment e = ValidBase();
  SetParam(e.mutable_populations(1), "leak_v_leak", 3);
  ExpectInvalid(e, {"populations[1].parameters", "CELL_TYPE_HX_NEURON"});
}

TEST(Validation, UnmodelledFeaturesAreUnimplementedNotIgnored) {
  for (const auto& [name, value] : Params{{"multicompartment_connect_soma", 1},
                                          {"multicompartment_i_bias_nmda", 100},
                                          {"bayesian_to_post_pulse", 0},
                                          {"bayesian_operation", 2}}) {
    Experiment e = ValidBase();
    SetParam(e.mutable_populations(0), name, value);
    ExpectError(ValidateExperiment(e, {}), absl::StatusCode::kUnimplemented,
                {"populations[0].parameters[" + name + "]", name});
  }
  // Their defaults are accepted.
  Experiment e = ValidBase();
  SetParam(e.mutable_populations(0), "bayesian_to_post_pulse", 1);
  SetParam(e.mutable_populations(0), "multicompartment_connect_soma", 0);
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());
}

TEST(Validation, AdExCobaAndBypassFeaturesAreAccepted) {
  for (const auto& [name, value] :
       Params{{"adaptation_enable", 1},
              {"adaptation_enable_pulse", 1},
              {"exponential_enable", 1},
              {"excitatory_input_enable_coba_mode", 1},
              {"inhibitory_input_enable_coba_mode", 1},
              {"event_routing_enable_bypass_excitatory", 1},
              {"event_routing_enable_bypass_inhibitory", 1}}) {
    Experiment e = ValidBase();
    SetParam(e.mutable_populations(0), name, value);
    EXPECT_TRUE(ValidateExperiment(e, {}).ok()) << name;
  }
}

TEST(Validation, InvalidArgumentWinsOverUnimplemented) {
  Experiment e = ValidBase();
  SetParam(e.mutable_populations(0), "multicompartment_connect_soma", 1);
  e.set_runtime_ms(-1);
  ExpectInvalid(e, {"runtime_ms"});
}

// ---- Validation: placement
// ------------------------------------------------------

TEST(Validation, RejectsCircuitListOfWrongLength) {
  Experiment e = ValidBase();
  e.mutable_populations(0)->add_circuits(7);
  ExpectInvalid(e, {"populations[0].circuits", "population size (2)"});
}

TEST(Validation, RejectsCircuitOutOfRange) {
  Experiment e = ValidBase();
  e.mutable_populations(0)->add_circuits(7);
  e.mutable_populations(0)->add_circuits(512);
  ExpectInvalid(e, {"populations[0].circuits[1]: 512 is out of range 0..511"});
}

TEST(Validation, RejectsCircuitUsedTwice) {
  Experiment e = ValidBase();
  e.mutable_populations(0)->add_circuits(7);
  e.mutable_populations(0)->add_circuits(7);
  ExpectInvalid(e, {"populations[0].circuits[1]", "circuit 7",
                    "populations[0].circuits[0]"});
  e.mutable_populations(0)->set_circuits(1, 8);
  Population* other = AddNeurons(e, 1, {});
  other->add_circuits(8);
  ExpectInvalid(e, {"populations[2].circuits[0]", "circuit 8",
                    "populations[0].circuits[1]"});
}

TEST(Validation, RejectsCircuitsOnSpikeSources) {
  Experiment e = ValidBase();
  e.mutable_populations(1)->add_circuits(7);
  e.mutable_populations(1)->add_circuits(8);
  ExpectInvalid(e, {"populations[1].circuits"});
}

// ---- Validation: spike sources
// ----------------------------------------------------

TEST(Validation, SpikeSourceArrayNeedsOneOrSizeEntries) {
  Experiment e = ValidBase();
  auto* ssa = e.mutable_populations(1)->mutable_spike_source_array();
  ssa->add_spike_times();
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());  // 2 entries = size
  ssa->add_spike_times();
  ExpectInvalid(
      e, {"populations[1].spike_source_array.spike_times", "has 3 entries"});
  ssa->clear_spike_times();
  ExpectInvalid(
      e, {"populations[1].spike_source_array.spike_times", "has 0 entries"});
}

TEST(Validation, SpikeTimesMustBeFiniteAndNonNegative) {
  for (double bad :
       {-0.001, std::nan(""), std::numeric_limits<double>::infinity()}) {
    Experiment e = ValidBase();
    e.mutable_populations(1)
        ->mutable_spike_source_array()
        ->mutable_spike_times(0)
        ->add_times_ms(bad);
    ExpectInvalid(e, {"populations[1].spike_source_array.spike_times[0]."
                      "times_ms[2]",
                      "finite and >= 0"});
  }
  // Times at or after the runtime are fine (not delivered).
  Experiment e = ValidBase();
  e.mutable_populations(1)
      ->mutable_spike_source_array()
      ->mutable_spike_times(0)
      ->add_times_ms(100.0);
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());
}

TEST(Validation, PoissonParametersMustBeFiniteAndNonNegative) {
  auto make = [](double rate, double start, double duration) {
    Experiment e = ValidBase();
    Population* pop = e.add_populations();
    pop->set_size(3);
    pop->set_cell_type(hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON);
    pop->mutable_spike_source_poisson()->set_rate_hz(rate);
    pop->mutable_spike_source_poisson()->set_start_ms(start);
    pop->mutable_spike_source_poisson()->set_duration_ms(duration);
    return e;
  };
  EXPECT_TRUE(ValidateExperiment(make(1e4, 0, 0), {}).ok());
  ExpectInvalid(make(-1, 0, 0),
                {"populations[2].spike_source_poisson.rate_hz"});
  ExpectInvalid(make(std::numeric_limits<double>::infinity(), 0, 0),
                {"populations[2].spike_source_poisson.rate_hz"});
  ExpectInvalid(make(1, -1, 0),
                {"populations[2].spike_source_poisson.start_ms"});
  ExpectInvalid(make(1, 0, std::nan("")),
                {"populations[2].spike_source_poisson.duration_ms"});
}

// ---- Validation: projections
// -----------------------------------------------------

TEST(Validation, ProjectionPopulationsMustExist) {
  Experiment e = ValidBase();
  e.mutable_projections(0)->set_pre_population(2);
  ExpectInvalid(e, {"projections[0].pre_population: 2 is out of range 0..1"});
  e = ValidBase();
  e.mutable_projections(0)->set_post_population(5);
  ExpectInvalid(e, {"projections[0].post_population: 5 is out of range 0..1"});
}

TEST(Validation, ProjectionTargetMustBeOnChip) {
  Experiment e = ValidBase();
  e.mutable_projections(0)->set_post_population(1);
  e.mutable_projections(0)->set_pre_population(0);
  ExpectInvalid(e, {"projections[0].post_population",
                    "Only projections with on-chip neuron population are "
                    "supported."});
}

TEST(Validation, ProjectionArraysMustHaveEqualLength) {
  Experiment e = ValidBase();
  e.mutable_projections(0)->add_weights(3);
  ExpectInvalid(e, {"projections[0]", "same length", "(got 2, 2, 3)"});
}

TEST(Validation, ProjectionIndicesMustBeInRange) {
  Experiment e = ValidBase();
  e.mutable_projections(0)->set_pre_indices(1, 2);
  ExpectInvalid(e, {"projections[0].pre_indices[1]: 2 is out of range 0..1"});
  e = ValidBase();
  e.mutable_projections(0)->set_post_indices(0, 9);
  ExpectInvalid(e, {"projections[0].post_indices[0]: 9 is out of range 0..1"});
}

TEST(Validation, WeightSignMustMatchReceptor) {
  const std::string kRule =
      "Weights must be positive for conductance-based and/or excitatory "
      "synapses and negative for inhibitory synapses";
  Experiment e = ValidBase();
  e.mutable_projections(0)->set_weights(1, -1);
  ExpectInvalid(e, {"projections[0].weights[1]", kRule});
  e.mutable_projections(0)->set_receptor_type(
      hxemu::v1::RECEPTOR_TYPE_INHIBITORY);
  ExpectInvalid(e, {"projections[0].weights[0]", kRule});  // +10
  e.mutable_projections(0)->set_weights(0, -10);
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());  // -10 and -1
  e.mutable_projections(0)->set_receptor_type(
      static_cast<hxemu::v1::ReceptorType>(4));
  ExpectInvalid(e, {"projections[0].receptor_type"});
}

// ---- Validation: recordings
// -------------------------------------------------------

TEST(Validation, RecordingPopulationMustExist) {
  Experiment e = ValidBase();
  e.mutable_recordings(1)->set_population(2);
  ExpectInvalid(e, {"recordings[1].population: 2 is out of range 0..1"});
}

TEST(Validation, RecordingNeedsObservable) {
  Experiment e = ValidBase();
  e.mutable_recordings(0)->set_observable(hxemu::v1::OBSERVABLE_UNSPECIFIED);
  ExpectInvalid(e, {"recordings[0].observable"});
}

TEST(Validation, RecordingNeuronsMustBeInRange) {
  Experiment e = ValidBase();
  e.mutable_recordings(0)->add_neurons(2);
  ExpectInvalid(e, {"recordings[0].neurons[0]: 2 is out of range 0..1"});
}

TEST(Validation, SpikeSourcesRecordOnlySpikes) {
  Experiment e = ValidBase();
  Record(e, 1, hxemu::v1::OBSERVABLE_SPIKES);
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());
  Record(e, 1, hxemu::v1::OBSERVABLE_V, {0});
  ExpectInvalid(e, {"recordings[3].observable", "OBSERVABLE_SPIKES"});
}

TEST(Validation, OneAnalogObservablePerNeuron) {
  Experiment e = ValidBase();
  Record(e, 0, hxemu::v1::OBSERVABLE_V, {0});  // the same again: fine
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());
  Record(e, 0, hxemu::v1::OBSERVABLE_EXC_SYNIN, {0});
  ExpectInvalid(e, {"recordings[3].neurons[0]",
                    "Only one source can be recorded per neuron."});
}

TEST(Validation, AtMostTwoMadcNeurons) {
  Experiment e;
  AddNeurons(e, 3, {});
  e.set_runtime_ms(0.1);
  Record(e, 0, hxemu::v1::OBSERVABLE_V, {0, 1});
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());
  Record(e, 0, hxemu::v1::OBSERVABLE_V, {2});
  ExpectInvalid(e, {"recordings[1].neurons[0]",
                    "MADC recording supports recording at most two neurons."});
  e.clear_recordings();
  Record(e, 0, hxemu::v1::OBSERVABLE_V);  // all three
  ExpectInvalid(e, {"recordings[0]",
                    "MADC recording supports recording at most two neurons."});
}

TEST(Validation, TwoMadcNeuronsNeedDifferentColumnParity) {
  Experiment e;
  Population* pop = AddNeurons(e, 2, {});
  e.set_runtime_ms(0.1);
  Record(e, 0, hxemu::v1::OBSERVABLE_V);
  pop->add_circuits(4);
  pop->add_circuits(260);  // column 4 in the other hemisphere: even again
  ExpectInvalid(e, {"recordings[0]",
                    "required to reside in columns with unique parity "
                    "(even/odd)."});
  pop->set_circuits(1, 261);
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());
}

TEST(Validation, AdaptationObservableIsAccepted) {
  Experiment e = ValidBase();
  e.mutable_recordings(1)->set_observable(hxemu::v1::OBSERVABLE_ADAPTATION);
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());
}

// ---- Validation: runtime and limits
// -----------------------------------------------

TEST(Validation, RuntimeMustBePositiveFiniteAndWithinLimit) {
  for (double bad : {0.0, -1.0, std::nan(""),
                     std::numeric_limits<double>::infinity(), 10000.5}) {
    Experiment e = ValidBase();
    e.set_runtime_ms(bad);
    ExpectInvalid(e, {"runtime_ms", "out of range (0, 10000] ms"});
  }
  Experiment e = ValidBase();
  e.set_runtime_ms(2.0);
  ExperimentLimits limits;
  limits.max_runtime_ms = 1.0;
  ExpectInvalid(e, {"runtime_ms: 2 is out of range (0, 1] ms"}, limits);
}

TEST(Validation, MadcSampleLimitIsResourceExhausted) {
  Experiment e = ValidBase();  // 0.1 ms -> 2942 samples
  ExperimentLimits limits;
  limits.max_madc_samples = 2942;
  EXPECT_TRUE(ValidateExperiment(e, limits).ok());
  limits.max_madc_samples = 2941;
  ExpectError(ValidateExperiment(e, limits),
              absl::StatusCode::kResourceExhausted,
              {"max_madc_samples", "2942"});
}

TEST(Validation, InputSpikeLimitIsResourceExhausted) {
  Experiment e = ValidBase();  // one shared train of 2 times, 2 neurons: 4
  ExperimentLimits limits;
  limits.max_input_spikes = 4;
  EXPECT_TRUE(ValidateExperiment(e, limits).ok());
  limits.max_input_spikes = 3;
  ExpectError(ValidateExperiment(e, limits),
              absl::StatusCode::kResourceExhausted,
              {"populations[1]", "max_input_spikes"});
  // Poisson: expected 1e6 Hz * 0.1 ms * 10 = 1000 spikes.
  Experiment p = ValidBase();
  Population* pop = p.add_populations();
  pop->set_size(10);
  pop->set_cell_type(hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON);
  pop->mutable_spike_source_poisson()->set_rate_hz(1e6);
  limits.max_input_spikes = 900;
  ExpectError(ValidateExperiment(p, limits),
              absl::StatusCode::kResourceExhausted,
              {"populations[2]", "max_input_spikes"});
}

TEST(Validation, SourceNeuronLimitIsResourceExhausted) {
  Experiment e = ValidBase();
  ExperimentLimits limits;
  limits.max_source_neurons = 1;
  ExpectError(ValidateExperiment(e, limits),
              absl::StatusCode::kResourceExhausted,
              {"populations[1].size", "max_source_neurons"});
  // A huge source recorded in full is refused before anything is allocated.
  Experiment huge = ValidBase();
  AddSpikeSource(huge, {}, 4000000000u);
  Record(huge, 2, hxemu::v1::OBSERVABLE_SPIKES);
  ExpectError(ValidateExperiment(huge, {}),
              absl::StatusCode::kResourceExhausted,
              {"populations[2].size", "max_source_neurons"});
}

// ---- Placement
// ----------------------------------------------------------------------

std::vector<uint32_t> SpikeTrainCircuits(const Result& r, uint32_t population) {
  std::vector<uint32_t> circuits;
  for (const auto& t : r.spike_trains()) {
    if (t.population() == population) circuits.push_back(t.circuit());
  }
  return circuits;
}

TEST(Placement, PopulationsTakeCircuitsInCreationOrder) {
  Experiment e;
  AddNeurons(e, 3, {});
  AddSpikeSource(e, {});
  AddNeurons(e, 2, {});
  Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
  Record(e, 2, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(0.01);
  const Result r = MustRun(e);
  EXPECT_EQ(SpikeTrainCircuits(r, 0), (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(SpikeTrainCircuits(r, 2), (std::vector<uint32_t>{3, 4}));
}

TEST(Placement, ExplicitCircuitsAreSkippedByAutomaticPlacement) {
  Experiment e;
  AddNeurons(e, 3, {});
  Population* fixed = AddNeurons(e, 2, {});
  fixed->add_circuits(1);
  fixed->add_circuits(300);
  Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
  Record(e, 1, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(0.01);
  const Result r = MustRun(e);
  EXPECT_EQ(SpikeTrainCircuits(r, 0), (std::vector<uint32_t>{0, 2, 3}));
  EXPECT_EQ(SpikeTrainCircuits(r, 1), (std::vector<uint32_t>{1, 300}));
}

TEST(Placement, TraceNamesItsCircuit) {
  Experiment e;
  Population* pop = AddNeurons(e, 2, kSilent);
  pop->add_circuits(17);
  pop->add_circuits(42);
  Record(e, 0, hxemu::v1::OBSERVABLE_V, {1});
  e.set_runtime_ms(0.01);
  const Result r = MustRun(e);
  ASSERT_EQ(r.traces_size(), 1);
  EXPECT_EQ(r.traces(0).circuit(), 42u);
  EXPECT_EQ(r.traces(0).neuron(), 1u);
  EXPECT_EQ(r.traces(0).observable(), hxemu::v1::OBSERVABLE_V);
}

// ---- Behaviour: resting level, spiking
// ----------------------------------------------

TEST(Behaviour, SilentNeuronRestsFlatAtTutorialLevel) {
  // leak_v_leak 700 -> 0.1 V + 700 * 0.75 mV = 0.625 V -> 0.625 / 1.2 * 1023
  // = 533 LSB nominal; each circuit deviates by its mismatch (~16 LSB).
  double sum_of_means = 0;
  for (uint32_t chip = 0; chip < 8; ++chip) {
    const Result r = MustRun(SingleNeuron(kSilent), chip);
    ASSERT_EQ(r.traces_size(), 1);
    const double mean = Mean(r.traces(0));
    EXPECT_GT(mean, 470) << "chip " << chip;
    EXPECT_LT(mean, 600) << "chip " << chip;
    EXPECT_LT(StdDev(r.traces(0)), 4.0) << "chip " << chip;  // flat: noise only
    EXPECT_EQ(SpikeCount(r), 0) << "chip " << chip;
    sum_of_means += mean;
  }
  EXPECT_NEAR(sum_of_means / 8, 540, 20);
}

TEST(Behaviour, RestingLevelRisesMonotonicallyWithLeakPotential) {
  double previous = -1;
  for (int32_t leak = 400; leak <= 1000; leak += 50) {
    const Result r =
        MustRun(SingleNeuron({{"leak_v_leak", leak}, {"leak_i_bias", 1022}}));
    const double mean = Mean(r.traces(0));
    EXPECT_GT(mean, previous + 20) << "leak_v_leak " << leak;  // ~32 LSB/step
    previous = mean;
  }
}

TEST(Behaviour, LeakOverThresholdSpikesRegularly) {
  const Result r = MustRun(SingleNeuron(LeakOverThreshold()));
  // tau_mem 30.7 us, reset 0.4 V -> threshold 0.625 V under leak 0.85 V:
  // 30.7 us * ln(2) + 2 us refractory = 23 us period -> 8-9 spikes.
  const auto& t = r.spike_trains(0).times_ticks();
  ASSERT_GE(t.size(), 6);
  ASSERT_LE(t.size(), 12);
  std::vector<double> isi;
  for (int i = 1; i < t.size(); ++i) isi.push_back(t[i] - t[i - 1]);
  const double mean = std::accumulate(isi.begin(), isi.end(), 0.0) / isi.size();
  for (double x : isi) EXPECT_NEAR(x, mean, 0.05 * mean);  // regular
  // Sawtooth: the trace spans reset (~340 LSB) to threshold (~533 LSB).
  const auto& c = r.traces(0).codes();
  const auto [lo, hi] = std::minmax_element(c.begin(), c.end());
  EXPECT_GT(*hi - *lo, 120u);
}

TEST(Behaviour, SpikeTimesAreAscendingTicksWithinTheRun) {
  const Result r = MustRun(SingleNeuron(LeakOverThreshold(500)));
  const auto& t = r.spike_trains(0).times_ticks();
  ASSERT_GT(t.size(), 10);
  EXPECT_TRUE(std::is_sorted(t.begin(), t.end()));
  EXPECT_LT(t[t.size() - 1], 25000u);  // 0.2 ms = 25000 ticks
  for (int i = 1; i < t.size(); ++i) {
    EXPECT_GE(t[i] - t[i - 1], 255u);  // refractory_time 255 ticks
  }
}

TEST(Behaviour, FiringRateRisesWithLeakBias) {
  int previous = -1;
  for (int32_t bias : {100, 200, 400, 800}) {
    const int count =
        SpikeCount(MustRun(SingleNeuron(LeakOverThreshold(bias))));
    EXPECT_GT(count, previous) << "leak_i_bias " << bias;
    previous = count;
  }
}

TEST(Behaviour, NoSpikesWithoutThresholdEnable) {
  Params p = LeakOverThreshold();
  p[6].second = 0;  // threshold_enable
  const Result r = MustRun(SingleNeuron(p));
  EXPECT_EQ(SpikeCount(r), 0);
  // Then the membrane rests at the leak potential, 0.85 V -> ~725 LSB.
  EXPECT_GT(Mean(r.traces(0)), 650);
}

// Area under the normalised deviation from rest after the peak of a strong
// excitatory kick: ~ the time constant of the approach to rest [us].
double RelaxationTimeUs(int32_t leak_i_bias) {
  Experiment e;
  Params p = PspNeuron();
  p[1].second = leak_i_bias;
  // Short synaptic time constant (2 ms / 1022 = 2 us) so the membrane, not
  // the synapse, sets the decay.
  p[4].second = 1022;  // excitatory_input_i_bias_tau
  AddNeurons(e, 1, p);
  AddSpikeSource(e, {0.05});
  Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, {{0, 0, 252}});
  Record(e, 0, hxemu::v1::OBSERVABLE_V);
  e.set_runtime_ms(0.15);
  const Result r = MustRun(e);
  const Trace& t = r.traces(0);
  const double rest = MeanBetween(t, 10, 49);
  size_t peak = 0;
  for (int i = 0; i < t.codes_size(); ++i) {
    if (t.codes(i) > t.codes(peak)) peak = i;
  }
  const double height = t.codes(peak) - rest;
  EXPECT_GT(height, 15) << "leak_i_bias " << leak_i_bias;
  double area_us = 0;
  for (int i = peak; i < t.codes_size(); ++i) {
    area_us += (t.codes(i) - rest) / height * kMadcSamplePeriodNs * 1e-3;
  }
  return area_us;
}

TEST(Behaviour, HigherLeakBiasApproachesRestFaster) {
  // tau_mem = 2.3 pF / (bias * 0.5 nS): 23 us at 200, 5.8 us at 800.
  const double slow = RelaxationTimeUs(200);
  const double fast = RelaxationTimeUs(800);
  EXPECT_GT(slow, 1.5 * fast) << slow << " us vs " << fast << " us";
}

// Mean code from 0.5 to 1.5 us after each spike (within the reset).
double MeanCodeJustAfterSpikes(const Result& r) {
  const Trace& t = r.traces(0);
  double sum = 0;
  int n = 0;
  for (uint64_t spike : r.spike_trains(0).times_ticks()) {
    for (int i = 0; i < t.codes_size(); ++i) {
      const int64_t dt_ns = (static_cast<int64_t>(t.times_ticks(i)) -
                             static_cast<int64_t>(spike)) *
                            kTickNs;
      if (dt_ns >= 500 && dt_ns < 1500) {
        sum += t.codes(i);
        ++n;
      }
    }
  }
  return n > 0 ? sum / n : std::nan("");
}

TEST(Behaviour, ResetMultiplicationGivesFasterReset) {
  // reset_i_bias 200: g_reset 400 nS -> tau = 2.3 pF / 475 nS = 4.8 us
  // (visibly slow, heads for a level between reset and leak and is released
  // after 2 us at ~490 LSB); x8 -> 3.2 uS, 0.7 us (reaches ~350 LSB).
  Params weak = LeakOverThreshold();
  weak[7].second = 200;  // reset_i_bias
  weak[8].second = 0;    // reset_enable_multiplication
  Params strong = weak;
  strong[8].second = 1;
  const Result rw = MustRun(SingleNeuron(weak));
  const Result rs = MustRun(SingleNeuron(strong));
  ASSERT_GT(SpikeCount(rw), 2);
  ASSERT_GT(SpikeCount(rs), 2);
  const double after_weak = MeanCodeJustAfterSpikes(rw);
  const double after_strong = MeanCodeJustAfterSpikes(rs);
  EXPECT_LT(after_strong + 80, after_weak)
      << after_strong << " vs " << after_weak;
  // The weak reset never reaches the reset potential.
  const auto& cw = rw.traces(0).codes();
  const auto& cs = rs.traces(0).codes();
  EXPECT_GT(*std::min_element(cw.begin(), cw.end()),
            *std::min_element(cs.begin(), cs.end()) + 50);
}

TEST(Behaviour, NeuronsRunFreelyAndAreNotAligned) {
  Experiment e;
  AddNeurons(e, 4, LeakOverThreshold());
  Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(0.1);
  const Result r = MustRun(e);
  std::set<uint64_t> first_spikes;
  for (const auto& t : r.spike_trains()) {
    ASSERT_GT(t.times_ticks_size(), 0);
    first_spikes.insert(t.times_ticks(0));
  }
  EXPECT_EQ(first_spikes.size(), 4u);
}

TEST(Behaviour, FreeRunningStartsSpreadThePhasesOfSelfFiringNeurons) {
  // Identical circuits (no mismatch, no noise): only the free-running start
  // sets a neuron's phase. Leak over threshold: a start drawn up to the leak
  // would put a part of them above threshold, all firing at once at the
  // warm-up's start and in phase ever after; drawn up to the threshold,
  // every one has its own phase.
  ModelOptions options;
  options.mismatch = false;
  options.noise = false;
  Chip chip(0, options);
  Experiment e;
  constexpr int kNeurons = 32;
  AddNeurons(e, kNeurons, LeakOverThreshold());
  Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(0.1);
  absl::StatusOr<Result> r = chip.Run(e, {}, {});
  ASSERT_TRUE(r.ok()) << r.status();
  std::map<uint64_t, int> neurons_of_first_tick;
  for (const auto& t : r->spike_trains()) {
    ASSERT_GT(t.times_ticks_size(), 0);
    ++neurons_of_first_tick[t.times_ticks(0)];
  }
  int most_in_phase = 0;
  for (const auto& [tick, count] : neurons_of_first_tick) {
    most_in_phase = std::max(most_in_phase, count);
  }
  EXPECT_LE(most_in_phase, 2) << neurons_of_first_tick.size()
                              << " distinct first spikes of " << kNeurons;
}

// ---- Readout
// ---------------------------------------------------------------------------

TEST(Readout, OneSampleEvery34Ns) {
  const Result r = MustRun(SingleNeuron(kSilent, 0.1));
  const Trace& t = r.traces(0);
  // 0.1 ms / 34 ns = 2941.2 -> samples at 0, 34, ..., 99994 ns.
  ASSERT_EQ(t.codes_size(), 2942);
  ASSERT_EQ(t.times_ticks_size(), 2942);
  for (int k = 0; k < t.times_ticks_size(); ++k) {
    ASSERT_EQ(t.times_ticks(k), static_cast<uint64_t>(k * 34 / 8)) << k;
  }
  for (uint32_t c : t.codes()) ASSERT_LE(c, kMadcMaxCode);
}

TEST(Readout, TwoNeuronsAlternateEvery68Ns) {
  Experiment e;
  Population* pop = AddNeurons(e, 2, {{"leak_i_bias", 1022}});
  hxemu::v1::NeuronParameter* leak = pop->add_parameters();
  leak->set_name("leak_v_leak");
  leak->add_values(500);  // -> ~405 LSB
  leak->add_values(900);  // -> ~665 LSB
  Record(e, 0, hxemu::v1::OBSERVABLE_V);
  e.set_runtime_ms(0.1);
  const Result r = MustRun(e);
  ASSERT_EQ(r.traces_size(), 2);
  // Each trace holds its own neuron's samples.
  EXPECT_LT(Mean(r.traces(0)) + 200, Mean(r.traces(1)));
  EXPECT_LT(StdDev(r.traces(0)), 4.0);
  EXPECT_LT(StdDev(r.traces(1)), 4.0);
  EXPECT_EQ(r.traces(0).circuit(), 0u);
  EXPECT_EQ(r.traces(1).circuit(), 1u);
  ASSERT_EQ(r.traces(0).times_ticks_size(), 1471);
  ASSERT_EQ(r.traces(1).times_ticks_size(), 1471);
  for (int k = 0; k < 1471; ++k) {
    ASSERT_EQ(r.traces(0).times_ticks(k),
              static_cast<uint64_t>(2 * k * 34 / 8));
    ASSERT_EQ(r.traces(1).times_ticks(k),
              static_cast<uint64_t>((2 * k + 1) * 34 / 8));
  }
}

TEST(Readout, CodesClipAt0And1023) {
  // Leak at the top plus a strong source current saturates the membrane at
  // the 1.2 V rail (above the MADC range); a strong sink pulls it to 0 V.
  Params high = {{"leak_v_leak", 1022},
                 {"leak_i_bias", 100},
                 {"membrane_capacitance_capacitance", 63},
                 {"constant_current_enable", 1},
                 {"constant_current_i_offset", 1022}};
  const Result rh = MustRun(SingleNeuron(high, 0.05));
  EXPECT_EQ(*std::max_element(rh.traces(0).codes().begin(),
                              rh.traces(0).codes().end()),
            kMadcMaxCode);
  Params low = high;
  low[0].second = 0;
  low.push_back({"constant_current_type", 1});
  const Result rl = MustRun(SingleNeuron(low, 0.05));
  EXPECT_EQ(*std::min_element(rl.traces(0).codes().begin(),
                              rl.traces(0).codes().end()),
            0u);
}

TEST(Readout, ConstantCurrentShiftsRestingLevel) {
  Params p = {{"leak_v_leak", 500},
              {"leak_i_bias", 460},
              {"membrane_capacitance_capacitance", 63}};
  const double base = Mean(MustRun(SingleNeuron(p, 0.05)).traces(0));
  p.push_back({"constant_current_enable", 1});
  p.push_back({"constant_current_i_offset", 100});
  // 10 nA / 230 nS = +43 mV = +37 LSB.
  const double source = Mean(MustRun(SingleNeuron(p, 0.05)).traces(0));
  p.push_back({"constant_current_type", 1});
  const double sink = Mean(MustRun(SingleNeuron(p, 0.05)).traces(0));
  EXPECT_NEAR(source - base, 37, 12);
  EXPECT_NEAR(base - sink, 37, 12);
}

TEST(Readout, ResultNamesChipRuntimeAndLabels) {
  Experiment e = ValidBase();
  e.mutable_populations(0)->set_label("neurons");
  e.mutable_populations(1)->set_label("stimulus");
  const absl::StatusOr<Result> r = RunOn(3, e);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->chip_id(), 3u);
  EXPECT_EQ(r->runtime_ms(), 0.1);
  ASSERT_EQ(r->population_labels_size(), 2);
  EXPECT_EQ(r->population_labels(0), "neurons");
  EXPECT_EQ(r->population_labels(1), "stimulus");
  // One spike train per recorded neuron, also when empty.
  ASSERT_EQ(r->spike_trains_size(), 2);
  EXPECT_EQ(r->spike_trains(0).times_ticks_size(), 0);
  EXPECT_EQ(r->spike_trains(1).neuron(), 1u);
}

TEST(Readout, SpikeSourceTimesAreRecordedInTicks) {
  Experiment e;
  AddNeurons(e, 1, {});
  // 0.0100001 ms -> 1250.01 -> tick 1250; 0.5 ms is after the run.
  AddSpikeSource(e, {0.02, 0.0100001, 0.5});
  Record(e, 1, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(0.1);
  const Result r = MustRun(e);
  ASSERT_EQ(r.spike_trains_size(), 1);
  EXPECT_EQ(r.spike_trains(0).population(), 1u);
  EXPECT_THAT(r.spike_trains(0).times_ticks(),
              ::testing::ElementsAre(1250u, 2500u));
}

TEST(Readout, RunsWithoutRecordings) {
  Experiment e;
  AddNeurons(e, 5, LeakOverThreshold());
  e.set_runtime_ms(0.01);
  const Result r = MustRun(e);
  EXPECT_EQ(r.spike_trains_size(), 0);
  EXPECT_EQ(r.traces_size(), 0);
}

// ---- Determinism and mismatch
// ------------------------------------------------------------

TEST(Determinism, SameChipAndSeedGiveIdenticalResults) {
  Experiment e = SingleNeuron(LeakOverThreshold(), 0.1, 42);
  const Result a = MustRun(e, 5);
  const Result b = MustRun(e, 5);
  EXPECT_EQ(a.SerializeAsString(), b.SerializeAsString());
}

TEST(Determinism, OtherChipDiffers) {
  Experiment e = SingleNeuron(kSilent, 0.05, 42);
  const Result a = MustRun(e, 5);
  const Result b = MustRun(e, 6);
  // Fixed-pattern mismatch: a different resting level, not just noise.
  EXPECT_GT(std::abs(Mean(a.traces(0)) - Mean(b.traces(0))), 0.5);
  EXPECT_NE(a.SerializeAsString(), b.SerializeAsString());
}

TEST(Determinism, OtherSeedDiffersOnlyByNoise) {
  const Result a = MustRun(SingleNeuron(kSilent, 0.05, 1));
  const Result b = MustRun(SingleNeuron(kSilent, 0.05, 2));
  EXPECT_NE(a.traces(0).SerializeAsString(), b.traces(0).SerializeAsString());
  // Same chip: same resting level within the noise (std 1.5 LSB).
  EXPECT_NEAR(Mean(a.traces(0)), Mean(b.traces(0)), 1.0);
}

TEST(Determinism, MismatchOfACircuitIsIndependentOfTheRestOfTheExperiment) {
  // Circuit 5 alone, then together with 40 unrelated neurons and a source:
  // its trace is bit-identical (mismatch and noise are keyed per circuit).
  Experiment alone;
  Population* p = AddNeurons(alone, 1, kSilent);
  p->add_circuits(5);
  Record(alone, 0, hxemu::v1::OBSERVABLE_V);
  alone.set_runtime_ms(0.02);
  alone.set_seed(9);
  Experiment crowded;
  AddNeurons(crowded, 40, LeakOverThreshold());
  AddSpikeSource(crowded, {0.001});
  *crowded.add_populations() = alone.populations(0);
  Record(crowded, 2, hxemu::v1::OBSERVABLE_V);
  crowded.set_runtime_ms(0.02);
  crowded.set_seed(9);
  const Result a = MustRun(alone, 7);
  const Result b = MustRun(crowded, 7);
  ASSERT_EQ(b.traces(0).circuit(), 5u);
  EXPECT_EQ(a.traces(0).codes().size(), b.traces(0).codes().size());
  EXPECT_TRUE(std::equal(a.traces(0).codes().begin(), a.traces(0).codes().end(),
                         b.traces(0).codes().begin()));
}

TEST(Determinism, CircuitsOfOneChipDiffer) {
  Experiment e;
  Population* pop = AddNeurons(e, 2, kSilent);
  pop->add_circuits(10);
  pop->add_circuits(11);
  Record(e, 0, hxemu::v1::OBSERVABLE_V);
  e.set_runtime_ms(0.05);
  const Result r = MustRun(e);
  EXPECT_GT(std::abs(Mean(r.traces(0)) - Mean(r.traces(1))), 0.5);
}

TEST(Determinism, JobsOnOneChipMatchAFreshChip) {
  // A Chip keeps its fixed pattern (FixedPattern) from job to job, filled
  // as jobs first use a circuit or synapse row: a job's result must not
  // depend on what ran before on the chip, nor on a job running beside it.
  const auto with_synapses = [](uint32_t neurons, uint32_t sources,
                                uint32_t first_circuit) {
    Experiment e;
    Population* pop = AddNeurons(e, neurons, PspNeuron());
    for (uint32_t n = 0; n < neurons; ++n) pop->add_circuits(first_circuit + n);
    AddSpikeSource(e, {0.01, 0.02, 0.03}, sources);
    std::vector<std::tuple<uint32_t, uint32_t, int32_t>> conns;
    for (uint32_t i = 0; i < sources; ++i) {
      for (uint32_t j = 0; j < neurons; ++j) {
        conns.push_back({i, j, static_cast<int32_t>(1 + (5 * i + 3 * j) % 90)});
      }
    }
    Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, conns);
    Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
    Record(e, 0, hxemu::v1::OBSERVABLE_V, {1});
    e.set_runtime_ms(0.05);
    e.set_seed(3);
    return e;
  };
  // `job` on circuits 253..258 (both hemispheres), `other` on 240..279.
  const Experiment job = with_synapses(6, 5, 253);
  const Experiment other = with_synapses(40, 12, 240);
  const std::string fresh = MustRun(job, 4).SerializeAsString();
  const std::string fresh_other = MustRun(other, 4).SerializeAsString();

  // `other` after `job` (it needs rows and circuits `job` did not), then
  // `job` again.
  Chip chip(4);
  for (const Experiment* e : {&job, &other, &job}) {
    absl::StatusOr<Result> r = chip.Run(*e, {}, {});
    ASSERT_TRUE(r.ok()) << r.status();
    // (EXPECT_TRUE: the serialized results are too long to print.)
    EXPECT_TRUE(r->SerializeAsString() == (e == &job ? fresh : fresh_other));
  }

  // Two jobs at once on a new chip (one fills the pattern, the other reads
  // what it has prepared itself).
  Chip shared(4);
  std::string results[2];
  std::thread threads[2];
  for (int t = 0; t < 2; ++t) {
    threads[t] = std::thread([&, t] {
      absl::StatusOr<Result> r = shared.Run(t == 0 ? job : other, {}, {});
      if (r.ok()) results[t] = r->SerializeAsString();
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(results[0] == fresh);
  EXPECT_TRUE(results[1] == fresh_other);
}

// ---- Run control
// --------------------------------------------------------------------------

// The emulation flushes denormal floats to zero while it runs (engine.cc,
// ScopedFlushDenormals); the caller's thread keeps its own mode, also when
// the emulation stops early (here: cancelled).
TEST(RunControl, CallersThreadKeepsGradualUnderflow) {
  volatile float smallest_normal = std::numeric_limits<float>::min();
  ASSERT_GT(smallest_normal * 0.5f, 0.0f);  // the test's premise
  MustRun(SingleNeuron(kSilent));
  EXPECT_GT(smallest_normal * 0.5f, 0.0f);
  std::atomic<bool> cancel{true};
  RunControl control;
  control.cancel_requested = &cancel;
  EXPECT_EQ(RunOn(0, SingleNeuron(kSilent), {}, control).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_GT(smallest_normal * 0.5f, 0.0f);
}

TEST(RunControl, PresetCancelFlagCancels) {
  std::atomic<bool> cancel{true};
  RunControl control;
  control.cancel_requested = &cancel;
  const absl::StatusOr<Result> r =
      RunOn(0, SingleNeuron(kSilent, 100.0), {}, control);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
}

TEST(RunControl, CancelDuringTheRunStopsWithinAMicrosecond) {
  std::atomic<bool> cancel{false};
  double cancelled_at_ms = -1;
  RunControl control;
  control.cancel_requested = &cancel;
  control.on_progress = [&](double done_ms) {
    if (done_ms >= 0.05 && cancelled_at_ms < 0) {
      cancelled_at_ms = done_ms;
      cancel = true;
    }
  };
  // 100 ms emulated would take seconds; cancellation must end it at ~0.05 ms.
  const absl::StatusOr<Result> r =
      RunOn(0, SingleNeuron(kSilent, 100.0), {}, control);
  ExpectError(r.status(), absl::StatusCode::kCancelled,
              {"cancelled after 0.05"});
}

TEST(RunControl, ProgressIsReportedUpToTheRuntime) {
  std::vector<double> progress;
  RunControl control;
  control.on_progress = [&](double done_ms) { progress.push_back(done_ms); };
  ASSERT_TRUE(RunOn(0, SingleNeuron(kSilent, 0.1), {}, control).ok());
  ASSERT_GE(progress.size(), 5u);  // every 10 us
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
  EXPECT_DOUBLE_EQ(progress.back(), 0.1);
}

TEST(RunControl, PhasesAreTimedAndAddUpToAtMostTheWallTime) {
  RunPhases phases;
  RunControl control;
  control.phases = &phases;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(RunOn(0, ValidBase(), {}, control).ok());
  const double wall_ms = std::chrono::duration<double, std::milli>(
                             std::chrono::steady_clock::now() - start)
                             .count();
  EXPECT_GT(phases.map_ms, 0.0);
  EXPECT_GT(phases.lower_ms, 0.0);
  EXPECT_GT(phases.emulate_ms, 0.0);
  EXPECT_LE(phases.map_ms + phases.lower_ms + phases.emulate_ms, wall_ms);
}

TEST(RunControl, PhasesARunDidNotReachStayZero) {
  Experiment e = ValidBase();
  e.set_runtime_ms(-1);  // refused by the validation (map phase)
  RunPhases phases;
  phases.lower_ms = 7.0;  // overwritten: Run reports every phase
  RunControl control;
  control.phases = &phases;
  EXPECT_EQ(RunOn(0, e, {}, control).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(phases.map_ms, 0.0);  // the phase failed
  EXPECT_EQ(phases.lower_ms, 0.0);
  EXPECT_EQ(phases.emulate_ms, 0.0);
}

TEST(RunControl, ExperimentPinnedToAnotherChipIsRefused) {
  Experiment e = ValidBase();
  e.set_chip_id(4);
  EXPECT_EQ(RunOn(3, e).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(RunOn(4, e).ok());
}

TEST(RunControl, RecordedSpikeLimitIsResourceExhausted) {
  ExperimentLimits limits;
  limits.max_recorded_spikes = 3;
  ExpectError(RunOn(0, SingleNeuron(LeakOverThreshold()), limits).status(),
              absl::StatusCode::kResourceExhausted, {"max_recorded_spikes"});
}

// ---- Synaptic input
// -----------------------------------------------------------------------

Result RunPsp(hxemu::v1::ReceptorType receptor, int32_t weight,
              hxemu::v1::Observable observable = hxemu::v1::OBSERVABLE_V) {
  Experiment e;
  AddNeurons(e, 1, PspNeuron());
  AddSpikeSource(e, {0.05});
  Connect(e, 1, 0, receptor, {{0, 0, weight}});
  Record(e, 0, observable);
  e.set_runtime_ms(0.1);
  return MustRun(e);
}

double PeakDeviation(const Trace& t) {
  const double rest = MeanBetween(t, 10, 49);
  double best = 0;
  for (int i = 0; i < t.codes_size(); ++i) {
    const double us = t.times_ticks(i) * kTickNs * 1e-3;
    if (us < 50) continue;
    const double d = t.codes(i) - rest;
    if (std::abs(d) > std::abs(best)) best = d;
  }
  return best;
}

TEST(SynapticInput, ExcitatoryInputRaisesMembrane) {
  // Weight 31, gm 500, tau_mem = tau_syn = 10 us, C = 2.3 pF: PSP ~20 mV
  // = 17 LSB (peak at ~10 us after the spike).
  const Result r = RunPsp(hxemu::v1::RECEPTOR_TYPE_EXCITATORY, 31);
  const Trace& t = r.traces(0);
  EXPECT_NEAR(PeakDeviation(t), 17, 7);
  EXPECT_GT(MeanBetween(t, 55, 70), MeanBetween(t, 10, 49) + 8);
}

TEST(SynapticInput, InhibitoryInputLowersMembrane) {
  const Result r = RunPsp(hxemu::v1::RECEPTOR_TYPE_INHIBITORY, -31);
  const Trace& t = r.traces(0);
  EXPECT_NEAR(PeakDeviation(t), -17, 7);
  EXPECT_LT(MeanBetween(t, 55, 70), MeanBetween(t, 10, 49) - 8);
}

TEST(SynapticInput, PspScalesWithWeight) {
  // Mean deviation around the peak (averages out the MADC noise, unlike a
  // max), less that of the same run with weight 0: same seed, so the same
  // membrane noise and the same relaxation from the start potential (~1 LSB
  // between the two windows), which the linear membrane just adds.
  auto deviation = [](int32_t weight) {
    const Trace t =
        RunPsp(hxemu::v1::RECEPTOR_TYPE_EXCITATORY, weight).traces(0);
    return MeanBetween(t, 55, 70) - MeanBetween(t, 10, 49);
  };
  const double baseline = deviation(0);
  const double small = deviation(10) - baseline;
  const double large = deviation(40) - baseline;
  EXPECT_GT(small, 2.0);
  EXPECT_NEAR(large / small, 4.0, 0.25);
}

// The synapse DAC bias (Experiment.synapse_dac_bias) scales the current per
// weight LSB linearly: bias 900 gives 1.5x the nominal PSP, bias 300 half.
Experiment PspWithBias(std::optional<uint32_t> bias) {
  Experiment e;
  AddNeurons(e, 1, PspNeuron());
  AddSpikeSource(e, {0.05});
  Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, {{0, 0, 20}});
  Record(e, 0, hxemu::v1::OBSERVABLE_V);
  e.set_runtime_ms(0.1);
  if (bias) e.set_synapse_dac_bias(*bias);
  return e;
}

TEST(SynapticInput, SynapseDacBiasScalesPsp) {
  auto psp = [](std::optional<uint32_t> bias) {
    const Trace t = MustRun(PspWithBias(bias)).traces(0);
    return MeanBetween(t, 55, 70) - MeanBetween(t, 10, 49);
  };
  const double nominal = psp(std::nullopt);
  const double low = psp(300);
  const double high = psp(900);
  EXPECT_GT(low, 2.0);
  EXPECT_GT(high, nominal);
  EXPECT_GT(nominal, low);
  EXPECT_NEAR(high / nominal, 1.5, 0.2);
  EXPECT_NEAR(low / nominal, 0.5, 0.1);
}

TEST(SynapticInput, NominalSynapseDacBiasIsBitIdenticalToUnset) {
  const Result unset = MustRun(PspWithBias(std::nullopt));
  const Result nominal = MustRun(PspWithBias(600));
  ASSERT_EQ(unset.traces_size(), 1);
  EXPECT_EQ(unset.SerializeAsString(), nominal.SerializeAsString());
  EXPECT_NE(unset.SerializeAsString(),
            MustRun(PspWithBias(601)).SerializeAsString());
}

TEST(Validation, SynapseDacBiasMustBeInRange) {
  for (uint32_t bias : {0u, 29u, 1023u, 4000000000u}) {
    Experiment e = ValidBase();
    e.set_synapse_dac_bias(bias);
    ExpectInvalid(e, {"synapse_dac_bias", "30..1022"});
  }
  for (uint32_t bias : {30u, 600u, 1022u}) {
    Experiment e = ValidBase();
    e.set_synapse_dac_bias(bias);
    EXPECT_TRUE(ValidateExperiment(e, {}).ok()) << bias;
  }
}

TEST(SynapticInput, DisabledInputHasNoEffect) {
  Experiment e;
  Params p = PspNeuron();
  p[3].second = 0;  // excitatory_input_enable
  AddNeurons(e, 1, p);
  AddSpikeSource(e, {0.05});
  Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, {{0, 0, 63}});
  Record(e, 0, hxemu::v1::OBSERVABLE_V);
  e.set_runtime_ms(0.1);
  EXPECT_NEAR(PeakDeviation(MustRun(e).traces(0)), 0, 6);
}

TEST(SynapticInput, SynInObservablesShowTheirCurrent) {
  const Trace exc = RunPsp(hxemu::v1::RECEPTOR_TYPE_EXCITATORY, 31,
                           hxemu::v1::OBSERVABLE_EXC_SYNIN)
                        .traces(0);
  // Rest 0.3 V -> 256 LSB; 12.4 nA * 20 mV/nA = +0.25 V -> +212 LSB.
  EXPECT_NEAR(MeanBetween(exc, 10, 49), 256, 10);
  EXPECT_NEAR(PeakDeviation(exc), 212, 40);
  const Trace inh = RunPsp(hxemu::v1::RECEPTOR_TYPE_EXCITATORY, 31,
                           hxemu::v1::OBSERVABLE_INH_SYNIN)
                        .traces(0);
  EXPECT_NEAR(PeakDeviation(inh), 0, 6);
}

TEST(SynapticInput, OnChipSpikesDriveTargets) {
  // Neuron 0 (leak over threshold) excites neuron 1 strongly; neuron 1's
  // membrane is higher than without the projection.
  auto run = [](bool connected) {
    Experiment e;
    AddNeurons(e, 1, LeakOverThreshold(500));
    AddNeurons(e, 1, PspNeuron());
    if (connected) {
      Connect(e, 0, 1, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, {{0, 0, 63}});
    }
    Record(e, 1, hxemu::v1::OBSERVABLE_V);
    e.set_runtime_ms(0.1);
    return Mean(MustRun(e).traces(0));
  };
  EXPECT_GT(run(true), run(false) + 20);
}

// A population of `size` Poisson sources at rate_hz, its spikes recorded.
Population* AddRecordedPoisson(Experiment& e, uint32_t size, double rate_hz) {
  Population* pop = e.add_populations();
  pop->set_size(size);
  pop->set_cell_type(hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON);
  pop->mutable_spike_source_poisson()->set_rate_hz(rate_hz);
  Record(e, e.populations_size() - 1, hxemu::v1::OBSERVABLE_SPIKES);
  return pop;
}

TEST(SynapticInput, PoissonSourceFollowsSeedNotChip) {
  auto make = [](uint64_t seed) {
    Experiment e;
    AddNeurons(e, 1, {});
    AddRecordedPoisson(e, 4, 200e3)
        ->mutable_spike_source_poisson()
        ->set_start_ms(0.05);
    e.set_runtime_ms(0.25);
    e.set_seed(seed);
    return e;
  };
  const Result a = MustRun(make(1), 0);
  const Result b = MustRun(make(1), 1);
  const Result c = MustRun(make(2), 0);
  int total = 0;
  for (int i = 0; i < 4; ++i) {
    const auto& t = a.spike_trains(i).times_ticks();
    total += t.size();
    EXPECT_TRUE(std::is_sorted(t.begin(), t.end()));
    if (!t.empty()) {
      EXPECT_GE(t[0], 6250u);  // start_ms 0.05
    }
    EXPECT_EQ(a.spike_trains(i).SerializeAsString(),
              b.spike_trains(i).SerializeAsString());
  }
  // 4 * 200 kHz * 0.2 ms = 160 expected; 5 sigma = 63.
  EXPECT_NEAR(total, 160, 63);
  EXPECT_NE(a.SerializeAsString(), c.SerializeAsString());
}

TEST(SynapticInput, PoissonSourceIntervalsAreExponential) {
  // 16 sources at 50 kHz for 4 ms: 3200 expected spikes; the intervals of a
  // Poisson process are exponential: mean 1 / rate (20 us = 2500 ticks),
  // standard deviation = mean, P(interval > mean) = 1 / e. (The generation
  // computes -log(u) by its own series, network.cc MinusLogUnit: a wrong
  // term would move these.)
  Experiment e;
  AddNeurons(e, 1, {});
  AddRecordedPoisson(e, 16, 50e3);
  e.set_runtime_ms(4.0);
  e.set_seed(20261206);
  const Result r = MustRun(e);
  std::vector<double> intervals;
  int total = 0;
  for (const hxemu::v1::SpikeTrain& t : r.spike_trains()) {
    total += t.times_ticks_size();
    for (int k = 1; k < t.times_ticks_size(); ++k) {
      intervals.push_back(static_cast<double>(t.times_ticks(k)) -
                          static_cast<double>(t.times_ticks(k - 1)));
    }
  }
  EXPECT_NEAR(total, 3200, 5 * std::sqrt(3200.0));
  const double n = static_cast<double>(intervals.size());
  double sum = 0.0, sum_sq = 0.0, above_mean = 0.0;
  for (double x : intervals) {
    sum += x;
    sum_sq += x * x;
    above_mean += x > 2500.0;
  }
  const double mean = sum / n;
  const double sd = std::sqrt(sum_sq / n - mean * mean);
  // 5 sigma of each estimate over ~3200 intervals: mean 2500 / sqrt(n),
  // sd ~ 2500 / sqrt(n) (the exponential's fourth moment), the fraction
  // sqrt(p (1 - p) / n).
  EXPECT_NEAR(mean, 2500.0, 5 * 2500.0 / std::sqrt(n));
  EXPECT_NEAR(sd, 2500.0, 5 * 2500.0 / std::sqrt(n));
  EXPECT_NEAR(above_mean / n, std::exp(-1.0),
              5 * std::sqrt(std::exp(-1.0) * (1 - std::exp(-1.0)) / n));
}

// ---- AdEx: exponential term, adaptation; COBA; bypass
// -------------------------------------------------

std::vector<int64_t> SpikeTicks(const Result& r, int train = 0) {
  const auto& t = r.spike_trains(train).times_ticks();
  return std::vector<int64_t>(t.begin(), t.end());
}

std::vector<int64_t> Isis(const std::vector<int64_t>& ticks) {
  std::vector<int64_t> isi;
  for (size_t k = 1; k < ticks.size(); ++k) {
    isi.push_back(ticks[k] - ticks[k - 1]);
  }
  return isi;
}

Params With(Params p, const Params& extra) {
  p.insert(p.end(), extra.begin(), extra.end());
  return p;
}

// Largest rise between consecutive MADC samples [LSB].
int MaxRise(const Trace& t) {
  int best = 0;
  for (int i = 1; i < t.codes_size(); ++i) {
    best = std::max(
        best, static_cast<int>(t.codes(i)) - static_cast<int>(t.codes(i - 1)));
  }
  return best;
}

// Exponential term with V_T = 0.25 V + code x 1.25 mV and Delta_T = code x
// 20 uV.
Params ExpTerm(int32_t v_exp, int32_t i_bias = 500) {
  return {{"exponential_enable", 1},
          {"exponential_v_exp", v_exp},
          {"exponential_i_bias", i_bias}};
}

TEST(AdEx, ExponentialTermMakesASubthresholdNeuronFire) {
  // Leak 500 (0.475 V) below threshold 300 (0.625 V): silent. With V_T =
  // 0.425 V (code 140) and Delta_T = 10 mV, E_leak - V_T + Delta_T > 0: the
  // membrane has no fixed point left and runs away (the AdEx rheobase).
  Params p = LeakOverThreshold();
  p[0].second = 500;
  EXPECT_EQ(SpikeCount(MustRun(SingleNeuron(p))), 0);
  EXPECT_GT(SpikeCount(MustRun(SingleNeuron(With(p, ExpTerm(140))))), 3);
  // Disabled, the exponential parameters have no effect.
  const Params off =
      With(p, {{"exponential_v_exp", 140}, {"exponential_i_bias", 500}});
  EXPECT_EQ(SpikeCount(MustRun(SingleNeuron(off))), 0);
}

TEST(AdEx, ExponentialTermGivesEarlierSpikesAndASharperUpswing) {
  // Leak over threshold (9 spikes in 0.2 ms); V_T = 0.55 V (code 240), 75 mV
  // below the threshold: the last part of every rise is exponential.
  const Result lif = MustRun(SingleNeuron(LeakOverThreshold()));
  const Result adex =
      MustRun(SingleNeuron(With(LeakOverThreshold(), ExpTerm(240))));
  ASSERT_GT(SpikeCount(lif), 3);
  ASSERT_GT(SpikeCount(adex), 3);
  EXPECT_GT(SpikeCount(adex), SpikeCount(lif));
  const std::vector<int64_t> isi_lif = Isis(SpikeTicks(lif, 0));
  const std::vector<int64_t> isi_adex = Isis(SpikeTicks(adex, 0));
  EXPECT_LT(isi_adex[1], isi_lif[1]);
  // Largest rise between two samples (34 ns apart): a few LSB for the leak
  // alone, much steeper at the exponential upswing.
  EXPECT_GT(MaxRise(adex.traces(0)), 2 * MaxRise(lif.traces(0)));
}

TEST(AdEx, ExponentIsClampedSoExtremeSettingsStayFinite) {
  // V_T = 0.25 V and Delta_T = 20 uV: (V - V_T) / Delta_T ~ 10^4 at rest,
  // clamped to 10: a constant 75 nS x 20 uV x e^10 = 33 nA more drive, and
  // every code is a valid code.
  const Result r =
      MustRun(SingleNeuron(With(LeakOverThreshold(), ExpTerm(0, 1))));
  EXPECT_GT(SpikeCount(r),
            SpikeCount(MustRun(SingleNeuron(LeakOverThreshold()))));
  for (uint32_t c : r.traces(0).codes()) EXPECT_LE(c, kMadcMaxCode);
}

// Spike-triggered adaptation: b = code x 10 pA, tau_w = 20 ms / code.
Params Adaptation(int32_t b, bool invert_b = false, int32_t tau = 100) {
  return {{"adaptation_enable", 1},
          {"adaptation_enable_pulse", 1},
          {"adaptation_i_bias_b", b},
          {"adaptation_invert_b", invert_b ? 1 : 0},
          {"adaptation_i_bias_tau", tau}};
}

TEST(AdEx, SpikeTriggeredAdaptationLengthensIntervals) {
  // b = 3 nA (a 40 mV lower fixed point per spike on g_leak = 75 nS), tau_w
  // = 200 us: spike-frequency adaptation.
  const Result lif = MustRun(SingleNeuron(LeakOverThreshold(), 0.3));
  const Result adapting =
      MustRun(SingleNeuron(With(LeakOverThreshold(), Adaptation(300)), 0.3));
  const std::vector<int64_t> isi = Isis(SpikeTicks(adapting));
  ASSERT_GE(isi.size(), 3u);
  EXPECT_GT(isi.back(), isi.front() * 3 / 2);
  EXPECT_LT(SpikeCount(adapting), SpikeCount(lif));
  // Without the pulse switch, b has no effect (and a = 0).
  Params no_pulse = With(LeakOverThreshold(), Adaptation(300));
  no_pulse.push_back({"adaptation_enable_pulse", 0});
  no_pulse.erase(no_pulse.begin() + LeakOverThreshold().size() + 1);
  EXPECT_EQ(SpikeCount(MustRun(SingleNeuron(no_pulse, 0.3))), SpikeCount(lif));
}

TEST(AdEx, InvertedBShortensIntervals) {
  const Result lif = MustRun(SingleNeuron(LeakOverThreshold(), 0.3));
  const Result r = MustRun(
      SingleNeuron(With(LeakOverThreshold(), Adaptation(100, true)), 0.3));
  const std::vector<int64_t> isi = Isis(SpikeTicks(r));
  ASSERT_GE(isi.size(), 3u);
  EXPECT_LT(isi.back(), isi.front());
  EXPECT_GT(SpikeCount(r), SpikeCount(lif));
}

TEST(AdEx, SubthresholdAdaptationPullsRestTowardVRef) {
  // Silent neuron (0.625 V, g_leak 511 nS), a = 102 nS (code 1022), V_ref =
  // 0.325 V (code 300): rest (511 x 0.625 + 102 x 0.325) / 613 = 0.575 V,
  // 43 LSB lower. Inverted a: (511 x 0.625 - 102 x 0.325) / 409 = 0.70 V.
  const Params adapt = {{"adaptation_enable", 1},
                        {"adaptation_i_bias_a", 1022},
                        {"adaptation_v_ref", 300},
                        {"adaptation_i_bias_tau", 1022}};
  const double rest = Mean(MustRun(SingleNeuron(kSilent)).traces(0));
  const double lower = MeanBetween(
      MustRun(SingleNeuron(With(kSilent, adapt))).traces(0), 100, 200);
  Params inverted = With(kSilent, adapt);
  inverted.push_back({"adaptation_invert_a", 1});
  const double higher =
      MeanBetween(MustRun(SingleNeuron(inverted)).traces(0), 100, 200);
  EXPECT_NEAR(rest - lower, 43, 12);
  EXPECT_NEAR(higher - rest, 64, 18);
}

TEST(AdEx, AdaptationObservableShowsW) {
  // OBSERVABLE_ADAPTATION: V = 0.6 V + w x 20 mV/nA (w = 0 -> 512 LSB).
  auto run = [](const Params& p) {
    Experiment e;
    AddNeurons(e, 1, p);
    Record(e, 0, hxemu::v1::OBSERVABLE_ADAPTATION);
    e.set_runtime_ms(0.3);
    e.set_seed(1);
    return MustRun(e);
  };
  const Trace off = run(LeakOverThreshold()).traces(0);
  EXPECT_EQ(off.observable(), hxemu::v1::OBSERVABLE_ADAPTATION);
  EXPECT_NEAR(Mean(off), 512, 15);
  EXPECT_LT(StdDev(off), 2);
  const Trace up = run(With(LeakOverThreshold(), Adaptation(300))).traces(0);
  const Trace down =
      run(With(LeakOverThreshold(), Adaptation(300, true))).traces(0);
  // Several 3 nA pulses: w of several nA, i.e. +-100 LSB and more.
  EXPECT_GT(MeanBetween(up, 200, 300), Mean(off) + 50);
  EXPECT_LT(MeanBetween(down, 200, 300), Mean(off) - 50);
  // w jumps at every spike: the trace rises in steps.
  EXPECT_GT(MaxRise(up), 20);
}

Result RunCobaPsp(
    int32_t leak_v_leak, bool coba,
    hxemu::v1::ReceptorType receptor = hxemu::v1::RECEPTOR_TYPE_EXCITATORY,
    int32_t weight_magnitude = 31) {
  const bool exc = receptor == hxemu::v1::RECEPTOR_TYPE_EXCITATORY;
  const std::string prefix = exc ? "excitatory_input_" : "inhibitory_input_";
  Params p = PspNeuron();
  p[0].second = leak_v_leak;
  // E_rev,exc = 0.775 V (code 900), E_rev,inh = 0.25 V (code 200); V_coba =
  // 90 V / 300 = 0.3 V.
  p.push_back({prefix + "enable_coba_mode", coba ? 1 : 0});
  p.push_back({prefix + "v_rev_coba", exc ? 900 : 200});
  p.push_back({prefix + "i_bias_coba", 300});
  Experiment e;
  AddNeurons(e, 1, p);
  AddSpikeSource(e, {0.05});
  Connect(e, 1, 0, receptor,
          {{0, 0, exc ? weight_magnitude : -weight_magnitude}});
  Record(e, 0, hxemu::v1::OBSERVABLE_V);
  e.set_runtime_ms(0.1);
  e.set_seed(1);
  return MustRun(e);
}

// The PSP of RunCobaPsp [MADC LSB]: the largest deviation after the input
// (t >= 50 us) from the same run with weight 0. Same seed, so the same
// membrane and readout noise, which the difference cancels (a PSP of a few
// LSB is smaller than the noise's excursions in one run).
double CobaPsp(
    int32_t leak_v_leak, bool coba,
    hxemu::v1::ReceptorType receptor = hxemu::v1::RECEPTOR_TYPE_EXCITATORY) {
  const Trace t = RunCobaPsp(leak_v_leak, coba, receptor).traces(0);
  const Trace base = RunCobaPsp(leak_v_leak, coba, receptor, 0).traces(0);
  EXPECT_EQ(t.codes_size(), base.codes_size());
  double best = 0;
  for (int i = 0; i < t.codes_size() && i < base.codes_size(); ++i) {
    if (t.times_ticks(i) * kTickNs * 1e-3 < 50) continue;
    const double d = static_cast<double>(t.codes(i)) - base.codes(i);
    if (std::abs(d) > std::abs(best)) best = d;
  }
  return best;
}

TEST(Coba, ExcitatoryPspShrinksAsRestApproachesReversal) {
  // Rest 0.4 V: drive (0.775 - 0.4) / 0.3 = 1.25 x the CUBA current; rest
  // 0.7 V: 0.25 x.
  const double far = CobaPsp(400, true);
  const double near = CobaPsp(800, true);
  EXPECT_GT(far, 10);
  EXPECT_GT(near, 0);
  EXPECT_LT(near, 0.5 * far);
  // Beyond the reversal potential the input has no effect: the trace is the
  // one without it (same seed, so the same noise; comparing windows of one
  // trace instead depended on that noise's realization).
  EXPECT_NEAR(CobaPsp(1000, true), 0, 0.5);
  // CUBA: the same PSP at both rests.
  const double cuba_far = CobaPsp(400, false);
  const double cuba_near = CobaPsp(800, false);
  EXPECT_NEAR(cuba_near / cuba_far, 1.0, 0.15);
}

TEST(Coba, InhibitoryPspShrinksAsRestApproachesReversal) {
  // E_rev,inh = 0.25 V: rest 0.7 V drives 1.5 x, rest 0.325 V 0.25 x.
  const double far = CobaPsp(800, true, hxemu::v1::RECEPTOR_TYPE_INHIBITORY);
  const double near = CobaPsp(300, true, hxemu::v1::RECEPTOR_TYPE_INHIBITORY);
  EXPECT_LT(far, -10);
  EXPECT_LT(near, 0);
  EXPECT_GT(near, 0.5 * far);
}

Result RunBypass(const Params& extra, hxemu::v1::ReceptorType receptor) {
  // Threshold off and the synaptic input disabled: only the bypass can fire.
  Params p = {{"leak_v_leak", 700}, {"leak_i_bias", 1022}};
  p.insert(p.end(), extra.begin(), extra.end());
  Experiment e;
  AddNeurons(e, 1, p);
  AddSpikeSource(e, {0.01, 0.03, 0.0301, 0.05});
  const bool exc = receptor == hxemu::v1::RECEPTOR_TYPE_EXCITATORY;
  Connect(e, 1, 0, receptor, {{0, 0, exc ? 1 : -1}});
  Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(0.1);
  e.set_seed(1);
  return MustRun(e);
}

TEST(Bypass, NeuronFiresOnEveryEventOfItsReceptor) {
  const std::vector<int64_t> input = {1250, 3750, 3763, 6250};
  EXPECT_EQ(
      SpikeTicks(RunBypass({{"event_routing_enable_bypass_excitatory", 1}},
                           hxemu::v1::RECEPTOR_TYPE_EXCITATORY)),
      input);
  EXPECT_EQ(
      SpikeTicks(RunBypass({{"event_routing_enable_bypass_inhibitory", 1}},
                           hxemu::v1::RECEPTOR_TYPE_INHIBITORY)),
      input);
  // Events of the other receptor, or no bypass: no spikes.
  EXPECT_TRUE(
      SpikeTicks(RunBypass({{"event_routing_enable_bypass_excitatory", 1}},
                           hxemu::v1::RECEPTOR_TYPE_INHIBITORY))
          .empty());
  EXPECT_TRUE(
      SpikeTicks(RunBypass({}, hxemu::v1::RECEPTOR_TYPE_EXCITATORY)).empty());
}

TEST(Bypass, BypassSpikesDriveOnChipTargets) {
  // Neuron 0 relays the source; neuron 1 (bypass too) relays neuron 0 one
  // tick later.
  Experiment e;
  AddNeurons(e, 2,
             {{"leak_v_leak", 700},
              {"leak_i_bias", 1022},
              {"event_routing_enable_bypass_excitatory", 1}});
  AddSpikeSource(e, {0.01, 0.05});
  Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, {{0, 0, 1}});
  Connect(e, 0, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, {{0, 1, 1}});
  Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(0.1);
  const Result r = MustRun(e);
  EXPECT_EQ(SpikeTicks(r, 0), (std::vector<int64_t>{1250, 6250}));
  EXPECT_EQ(SpikeTicks(r, 1), (std::vector<int64_t>{1251, 6251}));
}

// ---- Integration accuracy against a fine-step reference
// -----------------------------------------------

// The same model as the emulator (docs/emulator-model.md sections 2-3) with
// nominal transfer functions (no mismatch, no noise, start at V_reset),
// integrated in double with classic RK4 at 0.1 ns (80 sub-steps per 8 ns
// step). The clocked logic (threshold comparator sampled at the end of every
// 8 ns step, refractory counter, reset regime) is the same as in the
// emulator; only the continuous dynamics are integrated differently.
struct AdExReference {
  double c, g_leak, e_leak, g_reset, e_reset, i_offset, v_th;
  double v_t, delta_t;  // exponential term (delta_t 0: off)
  double a, v_ref, tau_w, b;
  int refractory_steps, release_steps;
  bool pause = false;

  // Spike ticks of the recorded run; v_end (if given): V at the end of
  // every step, warm-up included [V].
  std::vector<int64_t> Run(int64_t warmup_steps, int64_t steps,
                           std::vector<double>* v_end = nullptr) const {
    std::vector<int64_t> ticks;
    double v = e_reset, w = 0.0;
    int left = 0;
    constexpr int kSub = 80;
    const double h = 8e-9 / kSub;
    for (int64_t step = 0; step < warmup_steps + steps; ++step) {
      const bool reset = left > release_steps;
      const double gr = reset ? g_reset : 0.0;
      const bool exp_on = delta_t > 0.0 && !(pause && reset);
      auto f = [&](double vv, double ww, double* dv, double* dw) {
        double i = g_leak * (e_leak - vv) + gr * (e_reset - vv) + i_offset - ww;
        if (exp_on) {
          // NEST-style: V in the exponent at most V_th, and at most 10.
          const double arg = std::clamp((vv - v_t) / delta_t, -80.0,
                                        std::min(10.0, (v_th - v_t) / delta_t));
          i += g_leak * delta_t * std::exp(arg);
        }
        *dv = i / c;
        *dw = (a * (vv - v_ref) - ww) / tau_w;
      };
      for (int k = 0; k < kSub; ++k) {
        double k1v, k1w, k2v, k2w, k3v, k3w, k4v, k4w;
        f(v, w, &k1v, &k1w);
        f(v + 0.5 * h * k1v, w + 0.5 * h * k1w, &k2v, &k2w);
        f(v + 0.5 * h * k2v, w + 0.5 * h * k2w, &k3v, &k3w);
        f(v + h * k3v, w + h * k3w, &k4v, &k4w);
        v += h / 6 * (k1v + 2 * k2v + 2 * k3v + k4v);
        w += h / 6 * (k1w + 2 * k2w + 2 * k3w + k4w);
      }
      v = std::clamp(v, 0.0, 1.2);
      if (v_end != nullptr) v_end->push_back(v);
      const int left_next = left > 0 ? left - 1 : 0;
      const bool fire = left_next == 0 && v >= v_th;
      left = fire ? refractory_steps : left_next;
      if (fire) {
        w += b;
        if (step >= warmup_steps) ticks.push_back(step - warmup_steps);
      }
    }
    return ticks;
  }
};

void ExpectSpikeTimesMatch(const Experiment& e,
                           const std::vector<int64_t>& want,
                           bool fine_substeps = false);

void ExpectSpikeTimesMatchReference(const Params& p, const AdExReference& ref) {
  const std::vector<int64_t> want = ref.Run(2500, 125000);
  // With the membrane recorded the neuron steps every tick; with spikes only
  // it takes macro steps far from threshold. The emulator's own
  // high-accuracy mode (ModelOptions::fine_substeps) must agree too.
  for (const bool madc : {true, false}) {
    SCOPED_TRACE(madc ? "tick by tick (MADC recorded)" : "macro steps");
    Experiment e = SingleNeuron(p, 1.0);
    if (!madc) e.mutable_recordings()->DeleteSubrange(0, 1);
    ExpectSpikeTimesMatch(e, want);
  }
  SCOPED_TRACE("sub-steps of at most 1 ns (fine_substeps)");
  ExpectSpikeTimesMatch(SingleNeuron(p, 1.0), want, /*fine_substeps=*/true);
}

void ExpectSpikeTimesMatch(const Experiment& e,
                           const std::vector<int64_t>& want,
                           bool fine_substeps) {
  ModelOptions exact;
  exact.mismatch = false;
  exact.noise = false;
  exact.random_start = false;
  exact.fine_substeps = fine_substeps;
  Chip chip(0, exact);
  absl::StatusOr<Result> r = chip.Run(e, {}, {});
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<int64_t> emu = SpikeTicks(*r);
  ASSERT_GT(want.size(), 10u);
  // The last spike may fall on either side of the end of the run.
  ASSERT_LE(
      std::abs(static_cast<long>(emu.size()) - static_cast<long>(want.size())),
      1);
  int64_t worst = 0;
  for (size_t k = 0; k < std::min(emu.size(), want.size()); ++k) {
    worst = std::max(worst, std::abs(emu[k] - want[k]));
  }
  // Within one 8 ns tick of the reference over 1 ms.
  EXPECT_LE(worst, 1) << "spikes: " << emu.size() << " emu "
                      << ::testing::PrintToString(emu) << " ref "
                      << ::testing::PrintToString(want);
}

// Leak 600 (0.55 V), 75 nS, C 2.3 pF (tau_mem 30.7 us), threshold 400
// (0.75 V), reset 400 (0.4 V) with 16.35 uS, refractory 100 steps (0.8 us)
// released 1 step early, 10 nA offset (V_inf 0.683 V).
Params ReferenceNeuron() {
  return {{"leak_v_leak", 600},
          {"leak_i_bias", 150},
          {"membrane_capacitance_capacitance", 63},
          {"threshold_enable", 1},
          {"threshold_v_threshold", 400},
          {"reset_v_reset", 400},
          {"reset_i_bias", 1022},
          {"reset_enable_multiplication", 1},
          {"refractory_period_refractory_time", 100},
          {"constant_current_enable", 1},
          {"constant_current_i_offset", 100}};
}

// Sets an existing parameter of `p` (With appends, and a parameter may be
// given once).
void SetParam(Params& p, const std::string& name, int32_t value) {
  for (auto& [key, v] : p) {
    if (key == name) v = value;
  }
}

AdExReference ReferenceModel() {
  AdExReference m;
  m.c = 0.1e-12 + 63 * 2.2e-12 / 63;
  m.g_leak = 150 * 0.5e-9;
  m.e_leak = 0.10 + 600 * 0.75e-3;
  m.g_reset = 1022 * 2e-9 * 8;
  m.e_reset = 0.10 + 400 * 0.75e-3;
  m.i_offset = 100 * 0.1e-9;
  m.v_th = 0.25 + 400 * 1.25e-3;
  m.v_t = 0.0;
  m.delta_t = 0.0;
  m.a = 0.0;
  m.v_ref = 0.0;
  m.tau_w = 1.0;
  m.b = 0.0;
  m.refractory_steps = 100;
  m.release_steps = 1;
  return m;
}

TEST(Integration, LifSpikeTimesMatchFineStepReference) {
  // 20 nA offset: V_inf = 0.817 V, over the threshold.
  Params p = ReferenceNeuron();
  p.back().second = 200;
  AdExReference m = ReferenceModel();
  m.i_offset = 200 * 0.1e-9;
  ExpectSpikeTimesMatchReference(p, m);
}

TEST(Integration, AdExSpikeTimesMatchFineStepReference) {
  // Exponential term V_T = 0.65 V (code 320), Delta_T = 10 mV; a = 10 nS
  // toward V_ref = 0.55 V (code 600), tau_w = 100 us (code 200), b = 1 nA.
  const Params p = With(ReferenceNeuron(), {{"exponential_enable", 1},
                                            {"exponential_v_exp", 320},
                                            {"exponential_i_bias", 500},
                                            {"adaptation_enable", 1},
                                            {"adaptation_enable_pulse", 1},
                                            {"adaptation_i_bias_a", 100},
                                            {"adaptation_v_ref", 600},
                                            {"adaptation_i_bias_tau", 200},
                                            {"adaptation_i_bias_b", 100}});
  AdExReference m = ReferenceModel();
  m.v_t = 0.25 + 320 * 1.25e-3;
  m.delta_t = 500 * 20e-6;
  m.a = 100 * 0.1e-9;
  m.v_ref = 0.10 + 600 * 0.75e-3;
  m.tau_w = 20e-3 / 200;
  m.b = 100 * 10e-12;
  ExpectSpikeTimesMatchReference(p, m);
}

TEST(Integration, AdExWithPauseMatchesFineStepReference) {
  // Delta_T = 8 mV, V_T = 0.65 V (code 320), 100 mV below the threshold
  // (the exponent saturates at 10 at V_T + 80 mV); the exponential term is
  // gated during the reset. Refractory 2 us (250 steps): the reset (tau
  // 0.14 us) then forgets the spike's overshoot. With 0.8 us it kept 0.3 % of
  // it, so that a sub-nanosecond difference of one crossing moved the next
  // interval's start by microvolts and the comparison became a matter of
  // luck (intervals coupled with a gain near 1).
  Params p = With(ReferenceNeuron(), {{"exponential_enable", 1},
                                      {"exponential_v_exp", 320},
                                      {"exponential_i_bias", 400},
                                      {"refractory_period_enable_pause", 1},
                                      {"adaptation_enable", 1},
                                      {"adaptation_enable_pulse", 1},
                                      {"adaptation_i_bias_tau", 500},
                                      {"adaptation_i_bias_b", 30}});
  SetParam(p, "refractory_period_refractory_time", 250);
  AdExReference m = ReferenceModel();
  m.refractory_steps = 250;
  m.v_t = 0.25 + 320 * 1.25e-3;
  m.delta_t = 400 * 20e-6;
  m.tau_w = 20e-3 / 500;
  m.b = 30 * 10e-12;
  m.pause = true;
  ExpectSpikeTimesMatchReference(p, m);
}

TEST(Integration, SharpExponentialMatchesFineStepReference) {
  // Delta_T = 2 mV (exponential_i_bias 100, as in the benchmark load), V_T =
  // 0.65 V, 9 nA offset: V_inf = 0.67 V, only 10 Delta_T above V_T, so the
  // membrane slows down through the exponential's knee, where macro steps
  // are hardest (ETD2 alone, with the macro guard of ExpExcess, is 10 ticks
  // off here). Refractory 2 us, as above.
  Params p = With(ReferenceNeuron(), {{"exponential_enable", 1},
                                      {"exponential_v_exp", 320},
                                      {"exponential_i_bias", 100}});
  SetParam(p, "refractory_period_refractory_time", 250);
  SetParam(p, "constant_current_i_offset", 90);
  AdExReference m = ReferenceModel();
  m.refractory_steps = 250;
  m.i_offset = 90 * 0.1e-9;
  m.v_t = 0.25 + 320 * 1.25e-3;
  m.delta_t = 100 * 20e-6;
  ExpectSpikeTimesMatchReference(p, m);
}

// C = 0.1 pF and a 100 nA offset: near V_T the linear part alone moves V by
// ~7 mV per 8 ns tick, several Delta_T (2 mV), beyond the range of the
// series of the exponential term's exact step; those steps are refined.
// The neuron's parameters and its reference model.
std::pair<Params, AdExReference> SteepUpswingNeuron() {
  Params p = With(ReferenceNeuron(), {{"exponential_enable", 1},
                                      {"exponential_v_exp", 360},
                                      {"exponential_i_bias", 100}});
  SetParam(p, "membrane_capacitance_capacitance", 0);
  SetParam(p, "constant_current_i_offset", 1000);
  AdExReference m = ReferenceModel();
  m.c = 0.1e-12;
  m.i_offset = 1000 * 0.1e-9;
  m.v_t = 0.25 + 360 * 1.25e-3;
  m.delta_t = 100 * 20e-6;
  return {p, m};
}

TEST(Integration, SteepUpswingMatchesFineStepReference) {
  const auto [p, m] = SteepUpswingNeuron();
  ExpectSpikeTimesMatchReference(p, m);
}

TEST(Integration, SteepUpswingTraceMatchesFineStepReference) {
  // The neuron above, its membrane recorded, against the reference's
  // membrane sampled the same way (linear within the 8 ns step). Its reset
  // (tau 6 ns, shorter than a step) drags V from above the exponent's clamp
  // through the exponential's range within one step, where an exponential
  // current of microamperes acts. In macro-step mode (the compact pool:
  // that step is refined, in sub-steps that keep V's change under 0.1
  // Delta_T) every sample is within 1 LSB; before that refinement the first
  // reset step was off by ~90 LSB. Tick by tick the step that crosses the
  // threshold starts below the stiff region (so it is not refined) and
  // overshoots by ~5 LSB, which the next step inherits: within 1 LSB except
  // in those two steps and the reset's first, within 6 LSB there.
  const auto [p, m] = SteepUpswingNeuron();
  constexpr int64_t kWarmup = 2500;
  std::vector<double> v_end;
  const std::vector<int64_t> want = m.Run(kWarmup, 25000, &v_end);
  ASSERT_GT(want.size(), 20u);
  const Experiment e = SingleNeuron(p, 0.2);
  for (const bool macro : {true, false}) {
    SCOPED_TRACE(macro ? "macro-step mode" : "tick by tick");
    ModelOptions exact;
    exact.mismatch = false;
    exact.noise = false;
    exact.random_start = false;
    exact.macro_steps = macro;
    absl::StatusOr<Result> r = Chip(0, exact).Run(e, {}, {});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(SpikeTicks(*r), want);
    const Trace& t = r->traces(0);
    int worst = 0, worst_at_spikes = 0;
    int worst_sample = 0;
    for (int k = 0; k < t.codes_size(); ++k) {
      const int64_t ns = int64_t{k} * kMadcSamplePeriodNs;
      const int64_t step = kWarmup + ns / kTickNs;
      const double fraction = static_cast<double>(ns % kTickNs) / kTickNs;
      const double volt =
          v_end[step - 1] + (v_end[step] - v_end[step - 1]) * fraction;
      const int code = static_cast<int>(std::lround(volt * kMadcMaxCode / 1.2));
      const int d = std::abs(static_cast<int>(t.codes(k)) - code);
      bool at_spike = false;
      for (const int64_t spike : want) {
        at_spike |= ns / kTickNs >= spike && ns / kTickNs <= spike + 2;
      }
      if (at_spike && !macro) {
        worst_at_spikes = std::max(worst_at_spikes, d);
      } else if (d > worst) {
        worst = d;
        worst_sample = k;
      }
    }
    EXPECT_LE(worst, 1) << "sample " << worst_sample;
    EXPECT_LE(worst_at_spikes, 6);
  }
}

// ---- Placement API (PlaceNeurons) and CADC readout
// ---------------------------------------------------

TEST(PlaceNeurons, SameCircuitsAsRun) {
  Experiment e;
  AddNeurons(e, 3, {});
  AddSpikeSource(e, {});
  Population* fixed = AddNeurons(e, 2, {});
  fixed->add_circuits(1);
  fixed->add_circuits(300);
  AddNeurons(e, 2, {});
  for (uint32_t p : {0u, 2u, 3u}) Record(e, p, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(0.01);
  absl::StatusOr<std::vector<std::vector<uint32_t>>> placed = PlaceNeurons(e);
  ASSERT_TRUE(placed.ok()) << placed.status();
  ASSERT_EQ(placed->size(), 4u);
  EXPECT_EQ((*placed)[0], (std::vector<uint32_t>{0, 2, 3}));
  EXPECT_TRUE((*placed)[1].empty());
  EXPECT_EQ((*placed)[2], (std::vector<uint32_t>{1, 300}));
  EXPECT_EQ((*placed)[3], (std::vector<uint32_t>{4, 5}));
  const Result r = MustRun(e);
  ASSERT_EQ(r.spike_trains_size(), 7);
  for (const hxemu::v1::SpikeTrain& t : r.spike_trains()) {
    EXPECT_EQ(t.circuit(), (*placed)[t.population()][t.neuron()]);
  }
}

TEST(PlaceNeurons, NeedsOnlyValidPopulations) {
  // No runtime, no recordings: placement still works.
  Experiment e;
  AddNeurons(e, 2, {});
  absl::StatusOr<std::vector<std::vector<uint32_t>>> placed = PlaceNeurons(e);
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_EQ((*placed)[0], (std::vector<uint32_t>{0, 1}));
  // Broken placement rules are INVALID_ARGUMENT naming the field.
  Experiment clash;
  AddNeurons(clash, 1, {})->add_circuits(7);
  AddNeurons(clash, 1, {})->add_circuits(7);
  ExpectError(PlaceNeurons(clash).status(), absl::StatusCode::kInvalidArgument,
              {"populations[1].circuits[0]", "7"});
  Experiment too_many;
  AddNeurons(too_many, 513, {});
  ExpectError(PlaceNeurons(too_many).status(),
              absl::StatusCode::kInvalidArgument, {"populations[0]", "512"});
}

// Resting neurons with a CADC read at each of `times_ms`.
Experiment CadcExperiment(uint32_t neurons, const Params& params,
                          const std::vector<double>& times_ms,
                          double runtime_ms = 0.1) {
  Experiment e;
  AddNeurons(e, neurons, params);
  for (double t : times_ms) e.mutable_cadc()->add_times_ms(t);
  e.set_runtime_ms(runtime_ms);
  e.set_seed(1);
  return e;
}

Result RunExact(const Experiment& e) {
  ModelOptions exact;
  exact.mismatch = false;
  exact.noise = false;
  exact.random_start = false;
  Chip chip(0, exact);
  absl::StatusOr<Result> r = chip.Run(e, {}, {});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : Result();
}

TEST(Cadc, ReadsEveryPlacedCircuitAtEveryRequestedTime) {
  Experiment e = CadcExperiment(3, kSilent, {0.05, 0.01, 0.05, 0.09});
  Population* fixed = AddNeurons(e, 2, kSilent);
  fixed->add_circuits(300);
  fixed->add_circuits(1);
  const Result r = MustRun(e);
  EXPECT_EQ(
      std::vector<uint32_t>(r.cadc_circuits().begin(), r.cadc_circuits().end()),
      (std::vector<uint32_t>{0, 1, 2, 3, 300}));
  ASSERT_EQ(r.cadc_reads_size(), 4);
  const std::vector<uint64_t> want_ticks = {1250, 6250, 6250, 11250};
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(r.cadc_reads(k).time_ticks(), want_ticks[k]);
    ASSERT_EQ(r.cadc_reads(k).codes_size(), 5);
    for (uint32_t c : r.cadc_reads(k).codes()) EXPECT_LE(c, kCadcMaxCode);
  }
  // No reads requested: no CADC data.
  const Result none = MustRun(CadcExperiment(3, kSilent, {}));
  EXPECT_EQ(none.cadc_circuits_size(), 0);
  EXPECT_EQ(none.cadc_reads_size(), 0);
}

TEST(Cadc, NominalTransferIsFourMillivoltsPerCodeAboveTenthVolt) {
  // code = (V - 0.1 V) / 4 mV: leak 400 -> 0.4 V -> 75; leak 700 -> 0.625 V
  // -> 131.25 -> 131; leak 900 -> 0.775 V -> 168.75 -> 169.
  for (const auto& [leak, code] : std::vector<std::pair<int32_t, uint32_t>>{
           {400, 75}, {700, 131}, {900, 169}}) {
    const Result r = RunExact(CadcExperiment(
        2, {{"leak_v_leak", leak}, {"leak_i_bias", 1022}}, {0.099}));
    ASSERT_EQ(r.cadc_reads_size(), 1);
    EXPECT_EQ(r.cadc_reads(0).codes(0), code) << "leak " << leak;
    EXPECT_EQ(r.cadc_reads(0).codes(1), code) << "leak " << leak;
  }
}

TEST(Cadc, CalibrationTargetsAreReachableOnEveryCircuit) {
  // Leak/reset targets 50..160 CADC (calix defaults 80 / 70) and the
  // threshold's 125 lie inside the codes reached by the leak DAC range on all
  // 512 circuits of a chip, mismatch included: nominal 19 (leak 100, 0.175 V)
  // and 192 (leak 1022, 0.87 V), spread ~ 4-8 LSB between circuits.
  const Result low = MustRun(CadcExperiment(
      512, {{"leak_v_leak", 100}, {"leak_i_bias", 1022}}, {0.05}));
  const Result high = MustRun(CadcExperiment(
      512, {{"leak_v_leak", 1022}, {"leak_i_bias", 1022}}, {0.05}));
  ASSERT_EQ(low.cadc_reads(0).codes_size(), 512);
  std::set<uint32_t> distinct;
  for (int c = 0; c < 512; ++c) {
    EXPECT_LT(low.cadc_reads(0).codes(c), 50u) << "circuit " << c;
    EXPECT_GT(high.cadc_reads(0).codes(c), 160u) << "circuit " << c;
    distinct.insert(low.cadc_reads(0).codes(c));
  }
  // Per-circuit offsets: the same voltage reads differently on different
  // circuits.
  EXPECT_GT(distinct.size(), 8u);
}

TEST(Cadc, FollowsTheMembraneBetweenResetAndThreshold) {
  // Leak over threshold: V runs between reset (0.4 V -> 75) and threshold
  // (0.625 V -> 131); reads every 0.5 us see the whole range.
  std::vector<double> times;
  for (int k = 0; k < 200; ++k) times.push_back(0.0005 * k);
  const Result r = RunExact(CadcExperiment(1, LeakOverThreshold(), times, 0.1));
  uint32_t lo = 255, hi = 0;
  for (const hxemu::v1::CadcRead& read : r.cadc_reads()) {
    lo = std::min(lo, read.codes(0));
    hi = std::max(hi, read.codes(0));
  }
  EXPECT_NEAR(lo, 76, 3);
  EXPECT_NEAR(hi, 131, 2);
}

TEST(Cadc, DeterministicPerChipAndSeedWithNoisePerRead) {
  const Experiment e = CadcExperiment(64, kSilent, {0.05, 0.06});
  const Result a = MustRun(e);
  EXPECT_EQ(a.SerializeAsString(), MustRun(e).SerializeAsString());
  EXPECT_NE(a.SerializeAsString(), MustRun(e, 1).SerializeAsString());
  // Two reads of a resting membrane differ only by noise (< 4 LSB), and
  // somewhere they do differ.
  int differ = 0;
  for (int c = 0; c < 64; ++c) {
    const int d = static_cast<int>(a.cadc_reads(0).codes(c)) -
                  static_cast<int>(a.cadc_reads(1).codes(c));
    EXPECT_LE(std::abs(d), 4);
    differ += d != 0;
  }
  EXPECT_GT(differ, 0);
}

TEST(Validation, CadcTimesMustLieInTheRun) {
  Experiment e = CadcExperiment(1, kSilent, {0.01, 0.1});
  ExpectInvalid(e, {"cadc.times_ms[1]", "0.1", "[0, runtime_ms"});
  e.mutable_cadc()->set_times_ms(1, -0.001);
  ExpectInvalid(e, {"cadc.times_ms[1]"});
  e.mutable_cadc()->set_times_ms(1, std::nan(""));
  ExpectInvalid(e, {"cadc.times_ms[1]"});
  e.mutable_cadc()->set_times_ms(1, 0.0999);
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());
  ExperimentLimits limits;
  limits.max_cadc_reads = 1;
  ExpectError(ValidateExperiment(e, limits),
              absl::StatusCode::kResourceExhausted,
              {"cadc.times_ms", "max_cadc_reads = 1"});
}

// ---- Routing: synapse rows, PADI buses, weight splitting
// ----------------------------------------------------

// `sources` external sources, each connected to every neuron of an
// `neurons`-neuron population with `weight`.
Experiment AllToAll(uint32_t sources, uint32_t neurons, int32_t weight) {
  Experiment e;
  AddNeurons(e, neurons, kSilent);
  AddSpikeSource(e, {0.01}, sources);
  std::vector<std::tuple<uint32_t, uint32_t, int32_t>> conns;
  for (uint32_t i = 0; i < sources; ++i) {
    for (uint32_t j = 0; j < neurons; ++j) conns.push_back({i, j, weight});
  }
  Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, conns);
  e.set_runtime_ms(0.02);
  return e;
}

TEST(Routing, FullChipFromExternalSourcesFits) {
  // 256 sources x 512 neurons = all 131072 synapses (one row per source per
  // hemisphere, 64 rows on each PADI bus).
  EXPECT_TRUE(ValidateExperiment(AllToAll(256, 512, 20), {}).ok());
}

TEST(Routing, InDegreeAboveTheSynapseRowsIsRejected) {
  ExpectError(
      ValidateExperiment(AllToAll(257, 2, 20), {}),
      absl::StatusCode::kResourceExhausted,
      {"projections", "in-degree larger than the number of synapse rows",
       "populations[0] neuron 0 (circuit 0)", "257", "256"});
}

TEST(Routing, WeightsAbove63TakeSeveralRows) {
  // 315 = 5 x 63: 5 rows per source; 52 sources = 260 rows exceed the 256
  // rows of a hemisphere.
  ExpectError(ValidateExperiment(AllToAll(52, 1, 315), {}),
              absl::StatusCode::kResourceExhausted,
              {"in-degree", "260 synapse rows", "ceil(|w| / 63)"});
  // All rows of a source are on its PADI bus (64 rows): 12 sources of 5
  // rows per bus, 48 in all; the 49th finds no bus with 5 free rows
  // although the hemisphere has 256 - 240 = 16.
  EXPECT_TRUE(ValidateExperiment(AllToAll(48, 1, 315), {}).ok());
  ExpectError(ValidateExperiment(AllToAll(49, 1, 315), {}),
              absl::StatusCode::kResourceExhausted,
              {"Source distribution not successful", "populations[1] neuron",
               "on any PADI bus"});
  // Weight 0 takes no synapse at all.
  EXPECT_TRUE(ValidateExperiment(AllToAll(300, 1, 0), {}).ok());
}

TEST(Routing, SplitWeightsAddUp) {
  // 126 = 63 + 63 on two synapses: twice the PSP of 63 (up to the 5 % gain
  // mismatch of each synapse).
  auto psp = [](int32_t weight) {
    const Trace t =
        RunPsp(hxemu::v1::RECEPTOR_TYPE_EXCITATORY, weight).traces(0);
    return MeanBetween(t, 55, 70) - MeanBetween(t, 10, 49);
  };
  EXPECT_NEAR(psp(126) / psp(63), 2.0, 0.25);
}

TEST(Routing, OnChipSourcesOfOnePadiBusAreLimitedTo64Rows) {
  // Neurons in columns 0..63 of both hemispheres send through PADI bus 0.
  auto run = [](int senders) {
    Experiment e;
    Population* pre = AddNeurons(e, senders, kSilent);
    for (int i = 0; i < senders; ++i) {
      pre->add_circuits(i < 64 ? i : 256 + (i - 64));
    }
    AddNeurons(e, 1, kSilent)->add_circuits(100);
    std::vector<std::tuple<uint32_t, uint32_t, int32_t>> conns;
    for (int i = 0; i < senders; ++i) conns.push_back({i, 0, 5});
    Connect(e, 0, 1, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, conns);
    e.set_runtime_ms(0.01);
    return ValidateExperiment(e, {});
  };
  EXPECT_TRUE(run(64).ok());
  ExpectError(run(65), absl::StatusCode::kResourceExhausted,
              {"in-degree on a single PADI-bus larger than its number of "
               "synapse rows",
               "populations[1] neuron 0 (circuit 100)", "65", "PADI bus 0"});
}

// Two connections between every pair of 8 sources and 16 neurons (weights
// up to 125 split some over two synapses), neuron 3's membrane recorded.
// Listed pair by pair, a source's connections come in column order; listed
// all first connections backwards, then all second ones (`shuffled`),
// routing has to sort them by column to give every connection its own
// synapses. `unconnected_sources`: a further source population that no
// projection uses.
Result RunPairwiseConnections(bool shuffled, uint32_t unconnected_sources) {
  Experiment e;
  AddNeurons(e, 16, PspNeuron());
  AddSpikeSource(e, {0.03, 0.06}, 8);
  if (unconnected_sources > 0) {
    AddSpikeSource(e, {0.05}, unconnected_sources);
  }
  std::vector<std::tuple<uint32_t, uint32_t, int32_t>> first, second;
  for (uint32_t i = 0; i < 8; ++i) {
    for (uint32_t j = 0; j < 16; ++j) {
      first.push_back({i, j, static_cast<int32_t>(1 + (7 * i + 5 * j) % 125)});
      second.push_back({i, j, static_cast<int32_t>(1 + (3 * i + j) % 60)});
    }
  }
  std::vector<std::tuple<uint32_t, uint32_t, int32_t>> conns;
  if (shuffled) {
    // (Each pair's first connection still before its second: the order of
    // two connections between the same neurons decides which synapse each
    // takes.)
    conns.assign(first.rbegin(), first.rend());
    conns.insert(conns.end(), second.rbegin(), second.rend());
  } else {
    for (size_t k = 0; k < first.size(); ++k) {
      conns.push_back(first[k]);
      conns.push_back(second[k]);
    }
  }
  Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, conns);
  Record(e, 0, hxemu::v1::OBSERVABLE_V, {3});
  e.set_runtime_ms(0.1);
  return MustRun(e);
}

TEST(Routing, ConnectionOrderDoesNotChangeThePlacement) {
  // Both orders must take the same synapses, so the results (with every
  // synapse's mismatch) are the same.
  const Result in_order = RunPairwiseConnections(false, 0);
  const Result shuffled = RunPairwiseConnections(true, 0);
  ASSERT_EQ(in_order.traces_size(), 1);
  EXPECT_GT(in_order.traces(0).codes_size(), 100);
  EXPECT_EQ(in_order.SerializeAsString(), shuffled.SerializeAsString());
}

TEST(Routing, ManyUnusedSourcesDoNotChangeThePlacement) {
  // With many more source nodes than connections (here 1500 unused ones),
  // routing sorts the connections by comparison instead of by counting
  // (routing.cc SortEntries); the groups and synapses must be the same.
  const Result few = RunPairwiseConnections(true, 0);
  const Result many = RunPairwiseConnections(true, 1500);
  ASSERT_EQ(few.traces_size(), 1);
  ASSERT_EQ(many.traces_size(), 1);
  EXPECT_GT(few.traces(0).codes_size(), 100);
  EXPECT_EQ(few.traces(0).SerializeAsString(),
            many.traces(0).SerializeAsString());
}

TEST(Routing, AChipReusesTheRoutingOnlyForTheSameNetwork) {
  // A Chip keeps the routing of its last network (RoutingCache) for a job
  // of the same network: every job's result must be that of a new chip,
  // whether the network is the same (other neuron parameters: reused), or
  // differs in one weight, one connection's target, the receptor or the
  // placement (routed anew).
  const auto network = [](int32_t weight_0, uint32_t target_0,
                          hxemu::v1::ReceptorType receptor, uint32_t circuit,
                          int32_t leak) {
    Experiment e;
    Params neuron = PspNeuron();
    neuron[0].second = leak;  // leak_v_leak
    Population* pop = AddNeurons(e, 4, neuron);
    for (uint32_t n = 0; n < 4; ++n) pop->add_circuits(circuit + n);
    AddSpikeSource(e, {0.01, 0.02}, 3);
    const int32_t sign =
        receptor == hxemu::v1::RECEPTOR_TYPE_INHIBITORY ? -1 : 1;
    std::vector<std::tuple<uint32_t, uint32_t, int32_t>> conns = {
        {0, target_0, sign * weight_0}};
    for (uint32_t i = 1; i < 3; ++i) {
      for (uint32_t j = 0; j < 4; ++j) {
        conns.push_back({i, j, sign * static_cast<int32_t>(10 + 7 * i + j)});
      }
    }
    Connect(e, 1, 0, receptor, conns);
    Record(e, 0, hxemu::v1::OBSERVABLE_V, {0});
    e.set_runtime_ms(0.04);
    return e;
  };
  constexpr auto kExc = hxemu::v1::RECEPTOR_TYPE_EXCITATORY;
  constexpr auto kInh = hxemu::v1::RECEPTOR_TYPE_INHIBITORY;
  const std::vector<Experiment> jobs = {
      network(40, 0, kExc, 10, 500), network(40, 0, kExc, 10, 600),
      network(41, 0, kExc, 10, 600), network(41, 1, kExc, 10, 600),
      network(41, 1, kInh, 10, 600), network(41, 1, kInh, 300, 600),
      network(40, 0, kExc, 10, 500)};
  Chip chip(2);
  for (size_t k = 0; k < jobs.size(); ++k) {
    const std::string fresh = MustRun(jobs[k], 2).SerializeAsString();
    absl::StatusOr<Result> r = chip.Run(jobs[k], {}, {});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->traces_size(), 1);
    // (EXPECT_TRUE: the serialized results are too long to print.)
    EXPECT_TRUE(r->SerializeAsString() == fresh) << "job " << k;
  }
}

TEST(Routing, ReceptorSignIsChecked) {
  Experiment e = AllToAll(2, 2, 5);
  e.mutable_projections(0)->set_weights(3, -5);
  ExpectInvalid(
      e, {"projections[0].weights[3]", "-5", "Weights must be positive"});
}

// ---- On-chip Poisson (background spike sources)
// -----------------------------------------------------------

Population* AddOnChipPoisson(Experiment& e, uint32_t size, double rate_hz,
                             uint32_t seed) {
  Population* pop = e.add_populations();
  pop->set_size(size);
  pop->set_cell_type(hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP);
  pop->mutable_spike_source_poisson_on_chip()->set_rate_hz(rate_hz);
  pop->mutable_spike_source_poisson_on_chip()->set_seed(seed);
  return pop;
}

TEST(OnChipPoisson, RateMatchesWithinFiveSigma) {
  // 20 kHz x 10 neurons for 1 ms: 200 expected spikes (the hardware test's
  // bound: within 5 sqrt(N)); every neuron gets some.
  Experiment e;
  AddNeurons(e, 1, kSilent);
  AddOnChipPoisson(e, 10, 20e3, 1234);
  Record(e, 1, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(1.0);
  const Result r = MustRun(e);
  ASSERT_EQ(r.spike_trains_size(), 10);
  int total = 0;
  for (const hxemu::v1::SpikeTrain& t : r.spike_trains()) {
    EXPECT_GT(t.times_ticks_size(), 3);
    total += t.times_ticks_size();
  }
  EXPECT_NEAR(total, 200, 5 * std::sqrt(200.0));
  // The population's seed, not the experiment's, determines the stream.
  Experiment other_job_seed = e;
  other_job_seed.set_seed(99);
  EXPECT_EQ(MustRun(other_job_seed).SerializeAsString(), r.SerializeAsString());
  Experiment other_seed = e;
  other_seed.mutable_populations(1)
      ->mutable_spike_source_poisson_on_chip()
      ->set_seed(4321);
  EXPECT_NE(MustRun(other_seed).SerializeAsString(), r.SerializeAsString());
}

TEST(OnChipPoisson, DrivesNeurons) {
  Experiment e;
  AddNeurons(e, 1, PspNeuron());
  AddOnChipPoisson(e, 4, 200e3, 7);
  Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY,
          {{0, 0, 20}, {1, 0, 20}, {2, 0, 20}, {3, 0, 20}});
  Record(e, 0, hxemu::v1::OBSERVABLE_V);
  e.set_runtime_ms(0.1);
  const double driven = Mean(MustRun(e).traces(0), 100);
  e.mutable_projections()->Clear();
  const double rest = Mean(MustRun(e).traces(0), 100);
  EXPECT_GT(driven, rest + 20);
}

TEST(OnChipPoisson, LimitsAreChecked) {
  Experiment e;
  AddNeurons(e, 1, kSilent);
  for (int i = 0; i < 5; ++i) AddOnChipPoisson(e, 2, 1e3, i);
  e.set_runtime_ms(0.01);
  ExpectError(ValidateExperiment(e, {}), absl::StatusCode::kResourceExhausted,
              {"populations[5]", "Cannot register more than 4"});
  e.mutable_populations()->DeleteSubrange(5, 1);
  EXPECT_TRUE(ValidateExperiment(e, {}).ok());
  // rate x size above the 250 MHz background clock.
  e.mutable_populations(1)->mutable_spike_source_poisson_on_chip()->set_rate_hz(
      200e6);
  ExpectInvalid(e, {"populations[1].spike_source_poisson_on_chip.rate_hz",
                    "can not be realized on hardware", "250 MHz"});
  e.mutable_populations(1)->mutable_spike_source_poisson_on_chip()->set_rate_hz(
      1e3);
  e.mutable_populations(1)->set_size(300);
  ExpectInvalid(e, {"populations[1].size", "1..256"});
  // An on-chip Poisson population sends through its PADI bus (its index):
  // with 64 on-chip senders on bus 0, one more source there is too many.
  Experiment bus;
  Population* pre = AddNeurons(bus, 64, kSilent);
  for (int i = 0; i < 64; ++i) pre->add_circuits(i);
  AddNeurons(bus, 1, kSilent)->add_circuits(100);
  AddOnChipPoisson(bus, 1, 1e3, 1);
  std::vector<std::tuple<uint32_t, uint32_t, int32_t>> conns;
  for (uint32_t i = 0; i < 64; ++i) conns.push_back({i, 0, 5});
  Connect(bus, 0, 1, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, conns);
  bus.set_runtime_ms(0.01);
  EXPECT_TRUE(ValidateExperiment(bus, {}).ok());
  Connect(bus, 2, 1, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, {{0, 0, 5}});
  ExpectError(ValidateExperiment(bus, {}), absl::StatusCode::kResourceExhausted,
              {"single PADI-bus", "PADI bus 0"});
}

// ---- Direction of every parameter's effect (as on the hardware)
// ----------------------------------------------------------

// Replaces or adds parameter values.
Params Set(Params p, const Params& changes) {
  for (const auto& [name, value] : changes) {
    auto it = std::find_if(p.begin(), p.end(),
                           [&](const auto& kv) { return kv.first == name; });
    if (it != p.end()) {
      it->second = value;
    } else {
      p.push_back({name, value});
    }
  }
  return p;
}

TEST(Direction, SpikeRateFollowsEveryMembraneParameter) {
  // Leak over threshold (9 spikes in 0.2 ms); each change moves the rate in
  // the direction the hardware shows.
  const int base = SpikeCount(MustRun(SingleNeuron(LeakOverThreshold())));
  ASSERT_GT(base, 5);
  struct Case {
    Params change;
    int sign;  // +1: more spikes, -1: fewer
  };
  const Case cases[] = {
      {{{"threshold_v_threshold", 350}}, -1},
      {{{"reset_v_reset", 300}}, -1},
      {{{"refractory_period_refractory_time", 60}}, +1},
      {{{"membrane_capacitance_capacitance", 20}}, +1},
      {{{"leak_enable_division", 1}}, -1},
      {{{"leak_enable_multiplication", 1}}, +1},
      {{{"constant_current_enable", 1}, {"constant_current_i_offset", 100}},
       +1},
      {{{"constant_current_enable", 1},
        {"constant_current_i_offset", 50},
        {"constant_current_type", 1}},
       -1},
      {{{"exponential_enable", 1},
        {"exponential_v_exp", 240},
        {"exponential_i_bias", 500}},
       +1},
      {{{"adaptation_enable", 1},
        {"adaptation_enable_pulse", 1},
        {"adaptation_i_bias_b", 300},
        {"adaptation_i_bias_tau", 100}},
       -1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::PrintToString(c.change));
    const int n =
        SpikeCount(MustRun(SingleNeuron(Set(LeakOverThreshold(), c.change))));
    if (c.sign > 0) {
      EXPECT_GT(n, base);
    } else {
      EXPECT_LT(n, base);
    }
  }
}

TEST(Direction, PspFollowsEverySynapticInputParameter) {
  auto psp = [](const Params& p) {
    Experiment e;
    AddNeurons(e, 1, p);
    AddSpikeSource(e, {0.05});
    Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, {{0, 0, 20}});
    Record(e, 0, hxemu::v1::OBSERVABLE_V);
    e.set_runtime_ms(0.1);
    e.set_seed(1);
    return PeakDeviation(MustRun(e).traces(0));
  };
  const double base = psp(PspNeuron());
  ASSERT_GT(base, 10);
  // Stronger gm: larger; shorter tau_syn (higher i_bias_tau): smaller;
  // high resistance (tau_syn x5): larger; larger membrane capacitance:
  // smaller; input off: none.
  EXPECT_GT(psp(Set(PspNeuron(), {{"excitatory_input_i_bias_gm", 1000}})),
            1.5 * base);
  EXPECT_LT(psp(Set(PspNeuron(), {{"excitatory_input_i_bias_tau", 1000}})),
            0.7 * base);
  EXPECT_GT(
      psp(Set(PspNeuron(), {{"excitatory_input_enable_high_resistance", 1}})),
      1.3 * base);
  EXPECT_GT(psp(Set(PspNeuron(), {{"membrane_capacitance_capacitance", 20}})),
            1.3 * base);
  EXPECT_LT(psp(Set(PspNeuron(), {{"excitatory_input_enable", 0}})), 6);
  // Faster leak (higher leak_i_bias): the PSP decays sooner, smaller peak.
  EXPECT_LT(psp(Set(PspNeuron(), {{"leak_i_bias", 1022}})), 0.8 * base);
}

// ---- Macro steps (neurons far from threshold advance 256 ns at once)
// ----------------------------------------------------------

// `neurons` noisy AdEx neurons near their exponential threshold, driven by
// 32 Poisson sources at 200 kHz through random weights; spikes recorded.
Experiment NoisyAdExNetwork(uint32_t neurons, double runtime_ms) {
  Experiment e;
  // The benchmark's neuron (tests/support/benchmark_neuron.h), stronger
  // synapses (gm 16) for the fewer sources.
  Params params;
  for (const auto& [name, value] : test_support::BenchmarkAdExNeuron()) {
    params.emplace_back(name, value);
  }
  params.emplace_back("excitatory_input_i_bias_gm", 16);
  AddNeurons(e, neurons, params);
  Population* src = e.add_populations();
  src->set_size(32);
  src->set_cell_type(hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON);
  src->mutable_spike_source_poisson()->set_rate_hz(200e3);
  std::vector<std::tuple<uint32_t, uint32_t, int32_t>> conns;
  for (uint32_t i = 0; i < 32; ++i) {
    for (uint32_t j = 0; j < neurons; ++j) {
      conns.push_back({i, j, static_cast<int32_t>(1 + (i * 7 + j * 13) % 12)});
    }
  }
  Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, conns);
  Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(runtime_ms);
  e.set_seed(3);
  return e;
}

int TotalSpikes(const Result& r) {
  int total = 0;
  for (const hxemu::v1::SpikeTrain& t : r.spike_trains()) {
    total += t.times_ticks_size();
  }
  return total;
}

TEST(MacroSteps, SameFiringAsTickByTick) {
  // Noise, mismatch and all: the spike count with macro steps is the one
  // of the tick-by-tick reference mode (a statistical match, the noise
  // realisations differ).
  const Experiment e = NoisyAdExNetwork(64, 0.5);
  ModelOptions reference;
  reference.macro_steps = false;
  absl::StatusOr<Result> fine = Chip(0, reference).Run(e, {}, {});
  absl::StatusOr<Result> macro = Chip(0).Run(e, {}, {});
  ASSERT_TRUE(fine.ok() && macro.ok());
  const int n_fine = TotalSpikes(*fine);
  const int n_macro = TotalSpikes(*macro);
  ASSERT_GT(n_fine, 200);
  EXPECT_NEAR(n_macro, n_fine, 0.1 * n_fine + 3 * std::sqrt(n_fine));
}

TEST(MacroSteps, WithoutNoiseSpikeTimesEqualTickByTick) {
  // Without noise both modes integrate the same trajectories: every spike
  // within a tick.
  const Experiment e = NoisyAdExNetwork(16, 0.3);
  ModelOptions quiet;
  quiet.noise = false;
  ModelOptions quiet_fine = quiet;
  quiet_fine.macro_steps = false;
  absl::StatusOr<Result> fine = Chip(0, quiet_fine).Run(e, {}, {});
  absl::StatusOr<Result> macro = Chip(0, quiet).Run(e, {}, {});
  ASSERT_TRUE(fine.ok() && macro.ok());
  ASSERT_GT(TotalSpikes(*fine), 20);
  ASSERT_EQ(fine->spike_trains_size(), macro->spike_trains_size());
  for (int t = 0; t < fine->spike_trains_size(); ++t) {
    const std::vector<int64_t> a = SpikeTicks(*fine, t);
    const std::vector<int64_t> b = SpikeTicks(*macro, t);
    ASSERT_EQ(a.size(), b.size()) << "neuron " << t;
    for (size_t k = 0; k < a.size(); ++k) {
      EXPECT_LE(std::abs(a[k] - b[k]), 1) << "neuron " << t << " spike " << k;
    }
  }
}

TEST(MacroSteps, EventsOfOneTickAddUp) {
  // Two sources that spike at the same ticks, each driving all 16 neurons
  // with weight w, act as one source with weight 2 w (bit-identically,
  // without mismatch and noise): the second event of a tick adds to the
  // first (whose row the engine reads in place until then). With
  // adaptation too: that variant of the step also reads the (empty)
  // inhibitory half of a tick's events (ASan: reading a row in place
  // there would be out of bounds).
  for (const bool adaptation : {false, true}) {
    SCOPED_TRACE(adaptation ? "with adaptation" : "exponential term only");
    auto network = [adaptation](bool pair) {
      Params params;
      for (const auto& [name, value] : test_support::BenchmarkAdExNeuron()) {
        params.emplace_back(name, value);
      }
      params.emplace_back("excitatory_input_i_bias_gm", 300);
      if (adaptation) {
        params.emplace_back("adaptation_enable", 1);
        params.emplace_back("adaptation_i_bias_a", 5);
        params.emplace_back("adaptation_i_bias_tau", 400);
      }
      Experiment e;
      AddNeurons(e, 16, params);
      std::vector<double> times;
      for (int k = 0; k < 40; ++k) times.push_back(0.004 + 0.0045 * k);
      AddSpikeSource(e, times, pair ? 2 : 1);
      std::vector<std::tuple<uint32_t, uint32_t, int32_t>> conns;
      for (uint32_t j = 0; j < 16; ++j) {
        const int32_t w = static_cast<int32_t>(10 + j);
        if (pair) {
          conns.push_back({0, j, w});
          conns.push_back({1, j, w});
        } else {
          conns.push_back({0, j, 2 * w});
        }
      }
      Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY, conns);
      Record(e, 0, hxemu::v1::OBSERVABLE_SPIKES);
      Record(e, 0, hxemu::v1::OBSERVABLE_V, {0});
      e.set_runtime_ms(0.2);
      return e;
    };
    ModelOptions exact;
    exact.mismatch = false;
    exact.noise = false;
    absl::StatusOr<Result> pair = Chip(0, exact).Run(network(true), {}, {});
    absl::StatusOr<Result> single = Chip(0, exact).Run(network(false), {}, {});
    ASSERT_TRUE(pair.ok() && single.ok());
    ASSERT_GT(TotalSpikes(*single), 20);
    for (int t = 0; t < 16; ++t) {
      EXPECT_EQ(SpikeTicks(*pair, t), SpikeTicks(*single, t)) << "neuron " << t;
    }
    ASSERT_EQ(pair->traces_size(), 1);
    EXPECT_TRUE(std::equal(
        pair->traces(0).codes().begin(), pair->traces(0).codes().end(),
        single->traces(0).codes().begin(), single->traces(0).codes().end()));
  }
}

// Two spike sources (per-neuron trains, times in the given order) onto one
// recorded PSP neuron; the sources' spikes recorded too.
Result RunTwoSources(const std::vector<double>& first,
                     const std::vector<double>& second) {
  Experiment e;
  AddNeurons(e, 1, PspNeuron());
  Population* src = e.add_populations();
  src->set_size(2);
  src->set_cell_type(hxemu::v1::CELL_TYPE_SPIKE_SOURCE_ARRAY);
  for (const std::vector<double>* times : {&first, &second}) {
    hxemu::v1::SpikeTimes* t =
        src->mutable_spike_source_array()->add_spike_times();
    for (double x : *times) t->add_times_ms(x);
  }
  Connect(e, 1, 0, hxemu::v1::RECEPTOR_TYPE_EXCITATORY,
          {{0, 0, 20}, {1, 0, 20}});
  Record(e, 0, hxemu::v1::OBSERVABLE_V);
  Record(e, 1, hxemu::v1::OBSERVABLE_SPIKES);
  e.set_runtime_ms(0.1);
  e.set_seed(1);
  return MustRun(e);
}

TEST(Inputs, UnsortedSpikeTimesAreDeliveredInOrder) {
  // Times in any order (and a repeated one) act as the same times sorted:
  // the input spikes are put in the order of time before the run.
  const Result given = RunTwoSources({0.05, 0.01, 0.03}, {0.04, 0.02, 0.04});
  const Result sorted = RunTwoSources({0.01, 0.03, 0.05}, {0.02, 0.04, 0.04});
  ASSERT_EQ(given.spike_trains_size(), 2);
  for (int t = 0; t < 2; ++t) {
    const std::vector<int64_t> ticks = SpikeTicks(given, t);
    EXPECT_TRUE(std::is_sorted(ticks.begin(), ticks.end())) << "source " << t;
    EXPECT_EQ(ticks, SpikeTicks(sorted, t)) << "source " << t;
  }
  EXPECT_EQ(SpikeTicks(given, 0),
            (std::vector<int64_t>{1250, 3750, 6250}));  // 8 ns ticks
  ASSERT_EQ(given.traces_size(), 1);
  EXPECT_THAT(given.traces(0).codes(),
              ::testing::ElementsAreArray(sorted.traces(0).codes()));
  // The inputs act: the membrane rises after the first one.
  EXPECT_GT(MeanBetween(given.traces(0), 12, 20),
            MeanBetween(given.traces(0), 2, 9) + 3);
}

TEST(MacroSteps, DeterministicAndIndependentOfOtherNeurons) {
  const Experiment e = NoisyAdExNetwork(8, 0.2);
  const Result a = MustRun(e);
  EXPECT_EQ(a.SerializeAsString(), MustRun(e).SerializeAsString());
  EXPECT_NE(a.SerializeAsString(), MustRun(e, 1).SerializeAsString());
  // Circuit 0 fires the same with 40 more neurons on the chip (its macro
  // steps depend on its own state only).
  Experiment more = e;
  AddNeurons(more, 40, kSilent);
  const Result b = MustRun(more);
  EXPECT_EQ(SpikeTicks(a, 0), SpikeTicks(b, 0));
}

}  // namespace
}  // namespace hxemu::emulator
