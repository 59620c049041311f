// End-to-end tests of the real gRPC server (in-process, on a free loopback
// port) through the C++ client: scheduler and emulator are the real ones.
#include "hxemu/server/server.h"

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "../../server/src/experiment_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hxemu/client/client.h"

namespace hxemu {
namespace {

using ::testing::HasSubstr;

// The seed tutorial's first experiment: one silent neuron, membrane recorded.
v1::Experiment SilentNeuron(int v_leak) {
  v1::Experiment experiment;
  v1::Population* pop = experiment.add_populations();
  pop->set_label("silent");
  pop->set_size(1);
  pop->set_cell_type(v1::CELL_TYPE_HX_NEURON);
  v1::NeuronParameter* p = pop->add_parameters();
  p->set_name("leak_v_leak");
  p->add_values(v_leak);
  p = pop->add_parameters();
  p->set_name("leak_i_bias");
  p->add_values(1022);
  v1::Recording* rec = experiment.add_recordings();
  rec->set_population(0);
  rec->set_observable(v1::OBSERVABLE_V);
  rec = experiment.add_recordings();
  rec->set_population(0);
  rec->set_observable(v1::OBSERVABLE_SPIKES);
  experiment.set_runtime_ms(0.2);
  experiment.set_seed(1234);
  return experiment;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.num_chips = 2;
    options.limits.max_runtime_ms = 50;
    auto started = server::Server::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(*started);
    alice_ = Connect("alice");
    bob_ = Connect("bob");
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
  }
  std::unique_ptr<client::Client> Connect(const std::string& user) {
    return client::Client::Connect(
        {.address = server_->address(), .user = user});
  }

  std::unique_ptr<server::Server> server_;
  std::unique_ptr<client::Client> alice_;
  std::unique_ptr<client::Client> bob_;
};

TEST_F(ServerTest, SubmitWaitAndFetchTheSeedsFirstExperiment) {
  auto job = alice_->Submit(SilentNeuron(700));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_FALSE(job->job_id().empty());
  EXPECT_EQ(job->user(), "alice");

  auto done = alice_->WaitJob(job->job_id(), absl::Seconds(60));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED) << done->state_reason();
  EXPECT_TRUE(done->has_chip_id());
  EXPECT_DOUBLE_EQ(done->progress_ms(), done->runtime_ms());

  auto result = alice_->GetResult(job->job_id());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->traces_size(), 1);
  const v1::Trace& trace = result->traces(0);
  // 0.2 ms at one sample every 34 ns.
  EXPECT_NEAR(trace.codes_size(), 200000 / 34, 2);
  ASSERT_EQ(result->spike_trains_size(), 1);
  EXPECT_EQ(result->spike_trains(0).times_ticks_size(), 0);
}

TEST_F(ServerTest, SameSeedSameChipGivesTheSameResult) {
  v1::Experiment experiment = SilentNeuron(600);
  experiment.set_chip_id(1);
  std::vector<v1::Result> results;
  for (int i = 0; i < 2; ++i) {
    auto job = alice_->Submit(experiment);
    ASSERT_TRUE(job.ok()) << job.status();
    ASSERT_TRUE(alice_->WaitJob(job->job_id(), absl::Seconds(60)).ok());
    auto result = alice_->GetResult(job->job_id());
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->chip_id(), 1u);
    results.push_back(*result);
  }
  EXPECT_EQ(results[0].SerializeAsString(), results[1].SerializeAsString());
}

TEST_F(ServerTest, OutOfRangeParameterIsRejectedNamingTheField) {
  auto job = alice_->Submit(SilentNeuron(1100));
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr("leak_v_leak"));
  EXPECT_THAT(job.status().message(), HasSubstr("0..1022"));
}

TEST_F(ServerTest, RuntimeAboveTheServerLimitIsRejected) {
  v1::Experiment experiment = SilentNeuron(700);
  experiment.set_runtime_ms(51);
  auto job = alice_->Submit(experiment);
  ASSERT_FALSE(job.ok());
  EXPECT_THAT(job.status().message(), HasSubstr("runtime_ms"));
}

TEST_F(ServerTest, UnknownChipIsRejected) {
  v1::Experiment experiment = SilentNeuron(700);
  experiment.set_chip_id(7);
  auto job = alice_->Submit(experiment);
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr("chip_id"));
}

TEST_F(ServerTest, MissingExperimentIsRejected) {
  grpc::ClientContext context;
  auto stub = v1::ExperimentService::NewStub(grpc::CreateChannel(
      server_->address(), grpc::InsecureChannelCredentials()));
  v1::Job job;
  grpc::Status status = stub->SubmitJob(&context, v1::SubmitJobRequest(), &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("experiment"));
}

TEST_F(ServerTest, BadUserNameIsRejected) {
  auto client = Connect("no spaces allowed");
  auto job = client->Submit(SilentNeuron(700));
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr("hxemu-user"));
}

TEST_F(ServerTest, UnknownAndForeignJobsAreNotFound) {
  auto missing = alice_->GetJob("no-such-job");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(alice_->GetJob("").status().code(),
            absl::StatusCode::kInvalidArgument);

  auto job = alice_->Submit(SilentNeuron(700));
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(bob_->GetJob(job->job_id()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(bob_->CancelJob(job->job_id()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(bob_->GetResult(job->job_id()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(bob_->WaitJob(job->job_id(), absl::Seconds(5)).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ServerTest, RequestIdMakesSubmitIdempotent) {
  v1::Experiment experiment = SilentNeuron(700);
  auto first = alice_->Submit(experiment, "req-1");
  auto again = alice_->Submit(experiment, "req-1");
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_EQ(first->job_id(), again->job_id());
  // The same id from another user is another request.
  auto other_user = bob_->Submit(experiment, "req-1");
  ASSERT_TRUE(other_user.ok());
  EXPECT_NE(other_user->job_id(), first->job_id());
  // The same id with another experiment is refused.
  auto conflict = alice_->Submit(SilentNeuron(800), "req-1");
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(ServerTest, WaitIsBoundedByTheCallDeadline) {
  // Fill both chips with long jobs, then wait briefly on a third.
  v1::Experiment long_run = SilentNeuron(700);
  long_run.set_runtime_ms(50);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto job = alice_->Submit(long_run);
    ASSERT_TRUE(job.ok()) << job.status();
    ids.push_back(job->job_id());
  }
  auto waited = alice_->WaitJob(ids[2], absl::Milliseconds(50));
  EXPECT_EQ(waited.status().code(), absl::StatusCode::kDeadlineExceeded);
  for (const std::string& id : ids) ASSERT_TRUE(alice_->CancelJob(id).ok());
  for (const std::string& id : ids) {
    auto done = alice_->WaitJob(id, absl::Seconds(60));
    ASSERT_TRUE(done.ok()) << done.status();
    EXPECT_EQ(done->state(), v1::JOB_STATE_CANCELLED);
  }
}

TEST_F(ServerTest, ResultOfUnfinishedOrCancelledJobIsAPreconditionError) {
  v1::Experiment long_run = SilentNeuron(700);
  long_run.set_runtime_ms(50);
  auto job = alice_->Submit(long_run);
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(alice_->CancelJob(job->job_id()).ok());
  ASSERT_TRUE(alice_->WaitJob(job->job_id(), absl::Seconds(60)).ok());
  auto result = alice_->GetResult(job->job_id());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(result.status().message(), HasSubstr("job_id"));
}

TEST_F(ServerTest, ServerInfoPublishesTheParameterTable) {
  auto info = alice_->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->num_chips(), 2u);
  EXPECT_DOUBLE_EQ(info->max_runtime_ms(), 50);
  bool found = false;
  for (const v1::ParameterInfo& p : info->neuron_parameters()) {
    if (p.name() == "leak_v_leak") {
      found = true;
      EXPECT_EQ(p.min(), 0);
      EXPECT_EQ(p.max(), 1022);
    }
  }
  EXPECT_TRUE(found);
}

TEST(SplitResult, ChunksStayBelowTheLimitAndMergeBack) {
  v1::Result result;
  result.set_chip_id(3);
  result.set_runtime_ms(100);
  for (int n = 0; n < 3; ++n) {
    v1::SpikeTrain* train = result.add_spike_trains();
    train->set_neuron(n);
    for (uint64_t t = 0; t < 50000; ++t) train->add_times_ticks(t * 7 + n);
  }
  v1::Trace* trace = result.add_traces();
  trace->set_neuron(1);
  trace->set_observable(v1::OBSERVABLE_V);
  for (int i = 0; i < 300000; ++i) {
    trace->add_times_ticks(static_cast<uint64_t>(i) * 4 + 1000000000ull);
    trace->add_codes(static_cast<uint32_t>(i % 1024));
  }
  constexpr size_t kLimit = 256 * 1024;
  std::vector<v1::ResultChunk> chunks = server::SplitResult(result, kLimit);
  EXPECT_GT(chunks.size(), 10u);
  v1::Result merged;
  for (const v1::ResultChunk& chunk : chunks) {
    EXPECT_LE(chunk.ByteSizeLong(), kLimit + 1024);
    client::MergeResultChunk(chunk.result(), &merged);
  }
  EXPECT_EQ(merged.SerializeAsString(), result.SerializeAsString());
}

}  // namespace
}  // namespace hxemu
