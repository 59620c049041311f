// Tests of the C++ client library the hxemu CLI is built on: the fluent
// ExperimentBuilder, results as plain C++ types, Run/Watch/JobOutcome against
// the real server (in-process, free loopback port), chunk merging, and the
// metadata (user, token) every call carries. The CLI binary itself is tested
// end to end in tests/python/test_cli.py.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hxemu/client/client.h"
#include "hxemu/server/server.h"

namespace hxemu::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The seed tutorial's fourth experiment with raw parameters (as in
// client/cpp/examples/experiment4_external_stimulation.json).
void BuildExternalStimulation(ExperimentBuilder* b) {
  PopulationBuilder neuron = b->AddHxNeurons(1, "stimulated")
                                 .Set("leak_v_leak", 500)
                                 .Set("leak_i_bias", 200)
                                 .Set("membrane_capacitance_capacitance", 63)
                                 .Set("excitatory_input_enable", 1)
                                 .Set("excitatory_input_i_bias_tau", 300)
                                 .Set("excitatory_input_i_bias_gm", 500)
                                 .Set("inhibitory_input_enable", 1)
                                 .Set("inhibitory_input_i_bias_tau", 300)
                                 .Set("inhibitory_input_i_bias_gm", 500)
                                 .Record(kV)
                                 .Record(kSpikes);
  PopulationBuilder exc =
      b->AddSpikeSourceArray(2, {0.01, 0.11, 0.16, 0.21, 0.26}, "exc_input");
  PopulationBuilder inh = b->AddSpikeSourceArray(2, {0.06}, "inh_input");
  b->Connect(exc, neuron, v1::RECEPTOR_TYPE_EXCITATORY, "exc_proj")
      .AllToAll(31);
  b->Connect(inh, neuron, v1::RECEPTOR_TYPE_INHIBITORY, "inh_proj")
      .AllToAll(-31);
  b->RuntimeMs(0.4).Seed(4).ChipId(0);
}

TEST(ExperimentBuilder, StartsFromACalibration) {
  v1::Calibration calibration;
  calibration.set_chip_id(3);
  calibration.add_circuits()->set_circuit(0);
  ExperimentBuilder b;
  b.AddHxNeurons(1).Record(kV);
  b.RuntimeMs(0.1).InitialConfig(calibration);
  absl::StatusOr<v1::Experiment> e = b.Build();
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->initial_config().chip_id(), 3u);
  EXPECT_EQ(e->initial_config().circuits_size(), 1);
  EXPECT_FALSE(e->has_chip_id());  // the server runs it on chip 3
}

TEST(ExperimentBuilder, AsksForCadcReads) {
  ExperimentBuilder b;
  b.AddHxNeurons(1);
  b.RuntimeMs(0.2).CadcReadsMs({0.01, 0.1});
  absl::StatusOr<v1::Experiment> e = b.Build();
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_THAT(e->cadc().times_ms(), ElementsAre(0.01, 0.1));
}

TEST(ExperimentBuilder, BuildsTheProtoThePopulationsDescribe) {
  ExperimentBuilder b;
  BuildExternalStimulation(&b);
  absl::StatusOr<v1::Experiment> e = b.Build();
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->populations_size(), 3);
  EXPECT_EQ(e->populations(0).cell_type(), v1::CELL_TYPE_HX_NEURON);
  EXPECT_EQ(e->populations(0).parameters_size(), 9);
  EXPECT_EQ(e->populations(0).parameters(0).name(), "leak_v_leak");
  EXPECT_THAT(e->populations(0).parameters(0).values(), ElementsAre(500));
  EXPECT_EQ(e->populations(1).cell_type(), v1::CELL_TYPE_SPIKE_SOURCE_ARRAY);
  EXPECT_EQ(e->populations(1).size(), 2u);
  // One shared list of times for both sources.
  ASSERT_EQ(e->populations(1).spike_source_array().spike_times_size(), 1);
  EXPECT_THAT(e->populations(2).spike_source_array().spike_times(0).times_ms(),
              ElementsAre(0.06));
  ASSERT_EQ(e->projections_size(), 2);
  const v1::Projection& inh = e->projections(1);
  EXPECT_EQ(inh.pre_population(), 2u);
  EXPECT_EQ(inh.post_population(), 0u);
  EXPECT_EQ(inh.receptor_type(), v1::RECEPTOR_TYPE_INHIBITORY);
  EXPECT_THAT(inh.pre_indices(), ElementsAre(0, 1));
  EXPECT_THAT(inh.post_indices(), ElementsAre(0, 0));
  EXPECT_THAT(inh.weights(), ElementsAre(-31, -31));
  ASSERT_EQ(e->recordings_size(), 2);
  EXPECT_EQ(e->recordings(0).observable(), v1::OBSERVABLE_V);
  EXPECT_EQ(e->recordings(1).observable(), v1::OBSERVABLE_SPIKES);
  EXPECT_TRUE(e->recordings(1).neurons().empty());  // all neurons
  EXPECT_EQ(e->runtime_ms(), 0.4);
  EXPECT_EQ(e->seed(), 4u);
  EXPECT_EQ(e->chip_id(), 0u);
}

TEST(ExperimentBuilder, SettingAParameterAgainReplacesIt) {
  ExperimentBuilder b;
  b.AddHxNeurons(3).Set("leak_v_leak", 400).Set("leak_v_leak", {1, 2, 3});
  b.RuntimeMs(0.1);
  absl::StatusOr<v1::Experiment> e = b.Build();
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->populations(0).parameters_size(), 1);
  EXPECT_THAT(e->populations(0).parameters(0).values(), ElementsAre(1, 2, 3));
}

TEST(ExperimentBuilder, OneToOneConnectsEqualIndices) {
  ExperimentBuilder b;
  PopulationBuilder a = b.AddSpikeSourceArray({{0.01}, {0.02}, {0.03}});
  PopulationBuilder n = b.AddHxNeurons(3);
  b.Connect(a, n, v1::RECEPTOR_TYPE_EXCITATORY).OneToOne(10).Connect(0, 2, 5);
  b.RuntimeMs(0.1);
  absl::StatusOr<v1::Experiment> e = b.Build();
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->populations(0).spike_source_array().spike_times_size(), 3);
  EXPECT_THAT(e->projections(0).pre_indices(), ElementsAre(0, 1, 2, 0));
  EXPECT_THAT(e->projections(0).post_indices(), ElementsAre(0, 1, 2, 2));
  EXPECT_THAT(e->projections(0).weights(), ElementsAre(10, 10, 10, 5));
}

// Build()'s error for an experiment `make` builds.
template <typename Make>
absl::Status BuildError(Make make) {
  ExperimentBuilder b;
  b.RuntimeMs(0.1);
  make(b);
  absl::StatusOr<v1::Experiment> e = b.Build();
  return e.status();
}

TEST(ExperimentBuilder, MistakesAreInvalidArgumentsNamingTheField) {
  struct Case {
    void (*make)(ExperimentBuilder&);
    const char* message;
  };
  const Case cases[] = {
      {[](ExperimentBuilder& b) {
         b.AddSpikeSourceArray(1, {0.01}).Set("leak_v_leak", 1);
       },
       "experiment.populations[0].parameters[leak_v_leak]: only HX neuron"},
      {[](ExperimentBuilder& b) {
         b.AddHxNeurons(2).Set("leak_v_leak", {1, 2, 3});
       },
       "experiment.populations[0].parameters[leak_v_leak].values: has 3 "
       "entries, expected 1 or the population size (2)"},
      {[](ExperimentBuilder& b) { b.AddHxNeurons(0); },
       "experiment.populations[0].size: 0 is out of range"},
      {[](ExperimentBuilder& b) {
         b.AddHxNeurons(2).Record(kV, {0, 2});
       },
       "experiment.recordings[0].neurons[1]: 2 is out of range 0..1"},
      {[](ExperimentBuilder& b) { b.AddHxNeurons(2).Circuits({1}); },
       "experiment.populations[0].circuits: has 1 entries"},
      {[](ExperimentBuilder& b) {
         auto in = b.AddSpikeSourceArray(1, {0.01});
         b.Connect(in, b.AddHxNeurons(1), v1::RECEPTOR_TYPE_EXCITATORY)
             .AllToAll(-1);
       },
       "experiment.projections[0].weights[0]: -1 must be >= 0"},
      {[](ExperimentBuilder& b) {
         auto in = b.AddSpikeSourceArray(1, {0.01});
         b.Connect(in, b.AddHxNeurons(1), v1::RECEPTOR_TYPE_INHIBITORY)
             .Connect(0, 1, -1);
       },
       "experiment.projections[0].post_indices[0]: 1 is out of range 0..0"},
      {[](ExperimentBuilder& b) {
         auto in = b.AddSpikeSourceArray(2, {0.01});
         b.Connect(in, b.AddHxNeurons(3), v1::RECEPTOR_TYPE_EXCITATORY)
             .OneToOne(1);
       },
       "one-to-one needs populations of equal size (2 and 3)"},
      {[](ExperimentBuilder& b) {
         auto n = b.AddHxNeurons(1);
         b.Connect(n, b.AddSpikeSourceArray(1, {0.01}),
                   v1::RECEPTOR_TYPE_EXCITATORY);
       },
       "experiment.projections[0].post_population: 1 is not an HX neuron"},
      {[](ExperimentBuilder& b) {
         ExperimentBuilder other;
         auto foreign = other.AddHxNeurons(1);
         b.Connect(foreign, foreign, v1::RECEPTOR_TYPE_EXCITATORY).AllToAll(1);
       },
       "populations of another ExperimentBuilder"},
      {[](ExperimentBuilder& b) {
         b.AddHxNeurons(1);
         b.RuntimeMs(0);
       },
       "experiment.runtime_ms: 0 is out of range, must be > 0"},
  };
  for (const Case& c : cases) {
    absl::Status status = BuildError(c.make);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
  }
}

TEST(ExperimentBuilder, ChecksNamesAndRangesAgainstTheServersTable) {
  v1::ServerInfo info;
  v1::ParameterInfo* leak = info.add_neuron_parameters();
  leak->set_name("leak_v_leak");
  leak->set_min(0);
  leak->set_max(1022);
  {
    ExperimentBuilder b;
    b.AddHxNeurons(2).Set("leak_v_leak", {10, 1023});
    b.RuntimeMs(0.1);
    EXPECT_TRUE(b.Build().ok());  // ranges are the server's business
    absl::Status status = b.Build(info).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("experiment.populations[0].parameters[leak_v_leak]."
                          "values[1]: 1023 is out of range 0..1022"));
  }
  {
    ExperimentBuilder b;
    b.AddHxNeurons(1).Set("leak_v_leek", 10);
    b.RuntimeMs(0.1);
    EXPECT_THAT(std::string(b.Build(info).status().message()),
                HasSubstr("unknown neuron parameter \"leak_v_leek\""));
  }
}

TEST(RunResult, ConvertsTheProtoAndFindsTrainsAndTraces) {
  v1::Result proto;
  proto.set_chip_id(3);
  proto.set_runtime_ms(0.2);
  proto.add_population_labels("a");
  v1::SpikeTrain* train = proto.add_spike_trains();
  train->set_population(0);
  train->set_neuron(1);
  train->set_circuit(7);
  train->add_times_ticks(125);  // 1 us
  train->add_times_ticks(250);
  v1::Trace* trace = proto.add_traces();
  trace->set_neuron(1);
  trace->set_observable(v1::OBSERVABLE_V);
  trace->add_times_ticks(0);
  trace->add_times_ticks(4);
  trace->add_codes(1023);
  trace->add_codes(0);
  proto.add_cadc_circuits(7);
  v1::CadcRead* read = proto.add_cadc_reads();
  read->set_time_ticks(1250);  // 10 us
  read->add_codes(255);
  const RunResult run = ToRunResult(proto);
  EXPECT_THAT(run.cadc_circuits, ElementsAre(7));
  ASSERT_EQ(run.cadc_reads.size(), 1u);
  EXPECT_THAT(run.cadc_reads[0].codes, ElementsAre(255));
  EXPECT_EQ(run.cadc_reads[0].time_ms(), 1250 * kMsPerTick);
  EXPECT_EQ(run.chip_id, 3u);
  EXPECT_EQ(run.runtime_ms, 0.2);
  EXPECT_THAT(run.population_labels, ElementsAre("a"));
  const SpikeTrain* spikes = run.Spikes(0, 1);
  ASSERT_NE(spikes, nullptr);
  EXPECT_EQ(spikes->circuit, 7u);
  EXPECT_THAT(spikes->times_ticks, ElementsAre(125, 250));
  EXPECT_THAT(spikes->times_ms(),
              ElementsAre(125 * kMsPerTick, 250 * kMsPerTick));
  EXPECT_EQ(run.Spikes(0, 0), nullptr);
  const AdcTrace* v = run.Trace(0, 1, kV);
  ASSERT_NE(v, nullptr);
  EXPECT_THAT(v->codes, ElementsAre(1023, 0));
  EXPECT_THAT(v->times_ms(), ElementsAre(0.0, 4 * kMsPerTick));
  EXPECT_EQ(run.Trace(0, 1, kExcSynin), nullptr);
}

TEST(MergeResultChunk, JoinsPiecesByKeyEvenWhenInterleaved) {
  v1::Result a;
  a.set_chip_id(1);
  a.set_runtime_ms(0.5);
  a.add_population_labels("p");
  v1::SpikeTrain* t = a.add_spike_trains();
  t->set_neuron(0);
  t->add_times_ticks(1);
  t = a.add_spike_trains();
  t->set_neuron(1);
  t->add_times_ticks(2);
  v1::Result b;  // a later chunk: header fields are not repeated
  t = b.add_spike_trains();
  t->set_neuron(0);
  t->add_times_ticks(3);
  v1::Trace* trace = b.add_traces();
  trace->set_observable(v1::OBSERVABLE_V);
  trace->add_times_ticks(0);
  trace->add_codes(5);
  v1::Result c;
  trace = c.add_traces();
  trace->set_observable(v1::OBSERVABLE_V);
  trace->add_times_ticks(4);
  trace->add_codes(6);
  // CADC: the circuits come with the header in the first chunk, the reads of
  // every chunk are appended.
  a.add_cadc_circuits(4);
  a.add_cadc_circuits(9);
  v1::CadcRead* read = b.add_cadc_reads();
  read->set_time_ticks(10);
  read->add_codes(80);
  read->add_codes(90);
  c.add_cadc_circuits(4);
  c.add_cadc_circuits(9);
  read = c.add_cadc_reads();
  read->set_time_ticks(20);
  read->add_codes(81);
  read->add_codes(91);
  v1::Result merged;
  for (const v1::Result* chunk : {&a, &b, &c}) {
    MergeResultChunk(*chunk, &merged);
  }
  EXPECT_THAT(merged.cadc_circuits(), ElementsAre(4, 9));
  ASSERT_EQ(merged.cadc_reads_size(), 2);
  EXPECT_EQ(merged.cadc_reads(1).time_ticks(), 20u);
  EXPECT_THAT(merged.cadc_reads(1).codes(), ElementsAre(81, 91));
  EXPECT_EQ(merged.chip_id(), 1u);
  EXPECT_EQ(merged.runtime_ms(), 0.5);
  EXPECT_THAT(merged.population_labels(), ElementsAre("p"));
  ASSERT_EQ(merged.spike_trains_size(), 2);
  EXPECT_THAT(merged.spike_trains(0).times_ticks(), ElementsAre(1, 3));
  EXPECT_THAT(merged.spike_trains(1).times_ticks(), ElementsAre(2));
  ASSERT_EQ(merged.traces_size(), 1);
  EXPECT_THAT(merged.traces(0).times_ticks(), ElementsAre(0, 4));
  EXPECT_THAT(merged.traces(0).codes(), ElementsAre(5, 6));
}

TEST(JobOutcome, MapsTerminalStatesToStatuses) {
  v1::Job job;
  job.set_job_id("j");
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(JobOutcome(job).ok());
  job.set_state(v1::JOB_STATE_FAILED);
  job.mutable_error()->set_code(static_cast<int>(absl::StatusCode::kInternal));
  job.mutable_error()->set_message("boom");
  EXPECT_EQ(JobOutcome(job), absl::InternalError("job j: boom"));
  job.set_state(v1::JOB_STATE_CANCELLED);
  job.set_state_reason("cancelled by user");
  EXPECT_EQ(JobOutcome(job), absl::CancelledError("job j: cancelled by user"));
  job.set_state(v1::JOB_STATE_EXPIRED);
  EXPECT_EQ(JobOutcome(job).code(), absl::StatusCode::kDeadlineExceeded);
  job.set_state(v1::JOB_STATE_RUNNING);
  EXPECT_EQ(JobOutcome(job).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(IsTerminal(v1::JOB_STATE_QUEUED));
  EXPECT_TRUE(IsTerminal(v1::JOB_STATE_EXPIRED));
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.num_chips = 1;
    auto started = server::Server::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(*started);
    client_ = Client::Connect({.address = server_->address(), .user = "cli"});
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
  }

  std::unique_ptr<server::Server> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, RunGivesPlainResultsEqualToTheProtoResult) {
  ExperimentBuilder b;
  BuildExternalStimulation(&b);
  absl::StatusOr<v1::ServerInfo> info = client_->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  absl::StatusOr<v1::Experiment> experiment = b.Build(*info);
  ASSERT_TRUE(experiment.ok()) << experiment.status();

  std::vector<v1::Job> updates;
  absl::StatusOr<RunResult> run = client_->Run(
      *experiment, [&](const v1::Job& job) { updates.push_back(job); },
      absl::Seconds(60));
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_FALSE(updates.empty());
  EXPECT_EQ(updates.back().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(updates.back().progress_ms(), 0.4);
  for (size_t i = 1; i < updates.size(); ++i) {
    EXPECT_GE(updates[i].progress_ms(), updates[i - 1].progress_ms());
  }

  EXPECT_EQ(run->chip_id, 0u);
  EXPECT_THAT(run->population_labels,
              ElementsAre("stimulated", "exc_input", "inh_input"));
  const AdcTrace* v = run->Trace(0, 0, kV);
  ASSERT_NE(v, nullptr);
  ASSERT_GT(v->codes.size(), 10000u);  // 0.4 ms at ~34 ns per sample
  ASSERT_NE(run->Spikes(0, 0), nullptr);
  // The same experiment again, as proto: the same chip and seed give the
  // same samples, and the plain types hold exactly the proto's numbers.
  absl::StatusOr<v1::Job> job = client_->Submit(*experiment);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(client_->WaitJob(job->job_id(), absl::Seconds(60)).ok());
  absl::StatusOr<v1::Result> proto = client_->GetResult(job->job_id());
  ASSERT_TRUE(proto.ok()) << proto.status();
  ASSERT_EQ(proto->traces_size(), 1);
  EXPECT_TRUE(std::equal(v->codes.begin(), v->codes.end(),
                         proto->traces(0).codes().begin(),
                         proto->traces(0).codes().end()));
  EXPECT_TRUE(std::equal(v->times_ticks.begin(), v->times_ticks.end(),
                         proto->traces(0).times_ticks().begin(),
                         proto->traces(0).times_ticks().end()));
  // The inputs are visible: the membrane rises after the excitatory inputs
  // and falls after the inhibitory one (at 0.06 ms) below its resting level.
  const auto code_at = [&](double ms) {
    const auto it =
        std::lower_bound(v->times_ticks.begin(), v->times_ticks.end(),
                         static_cast<uint64_t>(ms / kMsPerTick));
    return v->codes[it - v->times_ticks.begin()];
  };
  EXPECT_GT(code_at(0.02), code_at(0.35) + 10);
  EXPECT_LT(code_at(0.07) + 10, code_at(0.35));
}

TEST_F(ClientTest, ServerErrorsKeepTheirCodeAndFieldMessage) {
  ExperimentBuilder b;
  b.AddHxNeurons(1).Set("leak_v_leak", 5000);
  b.RuntimeMs(0.1);
  absl::StatusOr<v1::Experiment> experiment = b.Build();
  ASSERT_TRUE(experiment.ok());  // the range is checked by the server
  absl::StatusOr<RunResult> run = client_->Run(*experiment);
  EXPECT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(run.status().message()),
              HasSubstr("populations[0].parameters[leak_v_leak].values[0]: "
                        "5000 is out of range 0..1022"));
  EXPECT_EQ(client_->GetJob("nope").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->FetchResult("nope").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, RunOfACancelledJobIsCancelled) {
  // A job on chip 0 queued behind a long one, cancelled from the callback as
  // soon as it is seen; the long one is cancelled afterwards.
  ExperimentBuilder blocker;
  blocker.AddHxNeurons(1).Record(kSpikes);
  blocker.RuntimeMs(2000).ChipId(0);
  absl::StatusOr<v1::Job> first = client_->Submit(*blocker.Build());
  ASSERT_TRUE(first.ok()) << first.status();
  ExperimentBuilder b;
  b.AddHxNeurons(1).Record(kSpikes);
  b.RuntimeMs(0.1).ChipId(0);
  bool cancelled = false;
  absl::StatusOr<RunResult> run = client_->Run(
      *b.Build(),
      [&](const v1::Job& job) {
        if (!cancelled && !IsTerminal(job.state())) {
          cancelled = client_->CancelJob(job.job_id()).ok();
        }
      },
      absl::Seconds(60));
  ASSERT_TRUE(client_->CancelJob(first->job_id()).ok());
  // Cancelled unless it ran before the cancel arrived.
  if (cancelled && !run.ok()) {
    EXPECT_EQ(run.status().code(), absl::StatusCode::kCancelled);
    EXPECT_THAT(std::string(run.status().message()), HasSubstr("cancelled"));
  } else {
    EXPECT_TRUE(run.ok()) << run.status();
  }
}

TEST(Client, UnreachableServerIsUnavailableNamingTheAddress) {
  auto client = Client::Connect(
      {.address = "127.0.0.1:1", .call_timeout = absl::Seconds(5)});
  absl::StatusOr<v1::ServerInfo> info = client->GetServerInfo();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(info.status().message()),
              HasSubstr("cannot reach the hxemu server at 127.0.0.1:1"));
}

// A service that only answers GetServerInfo and remembers the metadata.
class MetadataRecorder final : public v1::ExperimentService::Service {
 public:
  grpc::Status GetServerInfo(grpc::ServerContext* context,
                             const v1::GetServerInfoRequest*,
                             v1::ServerInfo* info) override {
    absl::MutexLock lock(&mutex_);
    for (const auto& [key, value] : context->client_metadata()) {
      metadata_[std::string(key.data(), key.size())] =
          std::string(value.data(), value.size());
    }
    info->set_version("recorder");
    return grpc::Status::OK;
  }
  std::map<std::string, std::string> metadata() {
    absl::MutexLock lock(&mutex_);
    return metadata_;
  }

 private:
  absl::Mutex mutex_;
  std::map<std::string, std::string> metadata_ ABSL_GUARDED_BY(mutex_);
};

TEST(Client, SendsUserAndTokenOnEveryCall) {
  MetadataRecorder recorder;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&recorder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto client = Client::Connect({.address = absl::StrCat("127.0.0.1:", port),
                                 .user = "alice",
                                 .token = "s3cret"});
  absl::StatusOr<v1::ServerInfo> info = client->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version(), "recorder");
  const auto metadata = recorder.metadata();
  EXPECT_EQ(metadata.at("hxemu-user"), "alice");
  EXPECT_EQ(metadata.at("authorization"), "Bearer s3cret");
  // Other RPCs of this service double are UNIMPLEMENTED: passed through.
  EXPECT_EQ(client->ListChips().status().code(),
            absl::StatusCode::kUnimplemented);
  server->Shutdown();
}

}  // namespace
}  // namespace hxemu::client
