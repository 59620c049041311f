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
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/emulator/chip_constants.h"
#include "hxemu/emulator/parameters.h"
#include "hxemu/v1/experiment.pb.h"

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
  for (const auto& [name, value] :
       Params{{"multicompartment_connect_soma", 1},
              {"multicompartment_i_bias_nmda", 100},
              {"bayesian_to_post_pulse", 0},
              {"bayesian_operation", 2},
              {"adaptation_enable", 1},
              {"exponential_enable", 1},
              {"excitatory_input_enable_coba_mode", 1}}) {
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

TEST(Validation, AdaptationObservableIsUnimplemented) {
  Experiment e = ValidBase();
  e.mutable_recordings(1)->set_observable(hxemu::v1::OBSERVABLE_ADAPTATION);
  ExpectError(ValidateExperiment(e, {}), absl::StatusCode::kUnimplemented,
              {"recordings[1].observable", "OBSERVABLE_ADAPTATION"});
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

// ---- Run control
// --------------------------------------------------------------------------

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
  // Mean deviation around the peak (averages out the noise, unlike a max).
  auto psp = [](int32_t weight) {
    const Trace t =
        RunPsp(hxemu::v1::RECEPTOR_TYPE_EXCITATORY, weight).traces(0);
    return MeanBetween(t, 55, 70) - MeanBetween(t, 10, 49);
  };
  const double small = psp(10);
  const double large = psp(40);
  EXPECT_GT(small, 2.0);
  EXPECT_NEAR(large / small, 4.0, 0.6);
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

TEST(SynapticInput, PoissonSourceFollowsSeedNotChip) {
  auto make = [](uint64_t seed) {
    Experiment e;
    AddNeurons(e, 1, {});
    Population* pop = e.add_populations();
    pop->set_size(4);
    pop->set_cell_type(hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON);
    pop->mutable_spike_source_poisson()->set_rate_hz(200e3);
    pop->mutable_spike_source_poisson()->set_start_ms(0.05);
    Record(e, 1, hxemu::v1::OBSERVABLE_SPIKES);
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

}  // namespace
}  // namespace hxemu::emulator
