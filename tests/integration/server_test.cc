// End-to-end tests of the real gRPC server (in-process, on a free loopback
// port) through the C++ client: scheduler and emulator are the real ones.
#include "hxemu/server/server.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "../../server/src/experiment_service.h"
#include "absl/strings/str_cat.h"
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
    client::ConnectOptions options;
    options.address = server_->address();
    options.user = user;
    return client::Client::Connect(options);
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

TEST_F(ServerTest, WatchStreamsProgressUntilTheJobEnds) {
  v1::Experiment experiment = SilentNeuron(700);
  experiment.set_runtime_ms(20);
  auto job = alice_->Submit(experiment);
  ASSERT_TRUE(job.ok()) << job.status();
  std::vector<v1::Job> updates;
  auto last = alice_->WatchJob(
      job->job_id(), [&](const v1::Job& update) { updates.push_back(update); },
      absl::Seconds(120));
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_GE(updates.size(), 2u);
  for (size_t i = 1; i < updates.size(); ++i) {
    EXPECT_GE(updates[i].progress_ms(), updates[i - 1].progress_ms());
    EXPECT_GE(updates[i].state(), updates[i - 1].state());
  }
  EXPECT_DOUBLE_EQ(updates.back().progress_ms(), 20);
  EXPECT_EQ(
      bob_->WatchJob(job->job_id(), nullptr, absl::Seconds(5)).status().code(),
      absl::StatusCode::kNotFound);
}

TEST_F(ServerTest, WatchEndsWithTheCallDeadline) {
  v1::Experiment long_run = SilentNeuron(700);
  long_run.set_runtime_ms(50);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto job = alice_->Submit(long_run);
    ASSERT_TRUE(job.ok()) << job.status();
    ids.push_back(job->job_id());
  }
  int updates = 0;
  auto watched = alice_->WatchJob(
      ids[2], [&](const v1::Job&) { ++updates; }, absl::Milliseconds(100));
  EXPECT_EQ(watched.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(updates, 1);
  for (const std::string& id : ids) ASSERT_TRUE(alice_->CancelJob(id).ok());
}

TEST_F(ServerTest, ListJobsShowsOnlyOwnJobsNewestFirstInPages) {
  std::vector<std::string> mine;
  for (int i = 0; i < 5; ++i) {
    auto job = alice_->Submit(SilentNeuron(700));
    ASSERT_TRUE(job.ok()) << job.status();
    mine.push_back(job->job_id());
  }
  ASSERT_TRUE(bob_->Submit(SilentNeuron(700)).ok());
  std::vector<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    auto page = alice_->ListJobs(2, token);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->jobs_size(), 2);
    for (const v1::Job& job : page->jobs()) listed.push_back(job.job_id());
    token = page->next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  std::reverse(mine.begin(), mine.end());
  EXPECT_EQ(listed, mine);
  EXPECT_EQ(alice_->ListJobs(5000).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(alice_->ListJobs(2, "garbage").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ServerTest, ListChipsShowsThePool) {
  auto chips = alice_->ListChips();
  ASSERT_TRUE(chips.ok()) << chips.status();
  ASSERT_EQ(chips->chips_size(), 2);
  EXPECT_EQ(chips->chips(0).chip_id(), 0u);
  EXPECT_EQ(chips->chips(1).chip_id(), 1u);
}

TEST_F(ServerTest, JobDeadlineMustBeInRange) {
  auto job = alice_->Submit(SilentNeuron(700), "", absl::Seconds(-1));
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr("max_wall_time_s"));
  auto ok = alice_->Submit(SilentNeuron(700), "", absl::Seconds(60));
  ASSERT_TRUE(ok.ok()) << ok.status();
  auto done = alice_->WaitJob(ok->job_id(), absl::Seconds(60));
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
}

// 20 users submit concurrently to 2 chips; each must get exactly its own
// results back (recognisable by its own leak potential), none lost.
TEST_F(ServerTest, TwentyConcurrentUsersEachGetTheirOwnResults) {
  constexpr int kUsers = 20;
  constexpr int kJobsPerUser = 3;
  std::vector<std::string> failures(kUsers);
  std::vector<std::thread> threads;
  for (int u = 0; u < kUsers; ++u) {
    threads.emplace_back([&, u] {
      auto client = Connect(absl::StrCat("user", u));
      // Each user's own runtime, so a result shows whose experiment it was.
      v1::Experiment experiment = SilentNeuron(600);
      const double runtime_ms = 0.05 + 0.01 * u;
      experiment.set_runtime_ms(runtime_ms);
      std::vector<std::string> ids;
      for (int j = 0; j < kJobsPerUser; ++j) {
        auto job = client->Submit(experiment);
        if (!job.ok()) {
          failures[u] = job.status().ToString();
          return;
        }
        ids.push_back(job->job_id());
      }
      for (const std::string& id : ids) {
        auto done = client->WaitJob(id, absl::Seconds(120));
        if (!done.ok() || done->state() != v1::JOB_STATE_SUCCEEDED ||
            done->user() != absl::StrCat("user", u)) {
          failures[u] = absl::StrCat("job ", id, " not succeeded for its user");
          return;
        }
        auto result = client->GetResult(id);
        const int expected_samples =
            static_cast<int>(runtime_ms * 1e6 / 34.0);  // 34 ns per sample
        if (!result.ok() || result->runtime_ms() != runtime_ms ||
            result->traces_size() != 1 ||
            std::abs(result->traces(0).codes_size() - expected_samples) > 2) {
          failures[u] = absl::StrCat("job ", id, " returned another result");
          return;
        }
      }
      auto listed = client->ListJobs(100);
      if (!listed.ok() || listed->jobs_size() != kJobsPerUser) {
        failures[u] = "ListJobs does not show exactly the user's jobs";
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int u = 0; u < kUsers; ++u) EXPECT_EQ(failures[u], "") << "user" << u;
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

// GET http://127.0.0.1:port/metrics with a plain socket; "" on failure.
std::string ScrapeMetrics(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, request.data(), request.size()) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
        response.append(buffer, static_cast<size_t>(n));
      }
    }
  }
  close(fd);
  return response;
}

TEST(ServerMetrics, CountJobsByOutcomeOnTheMetricsEndpoint) {
  server::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "127.0.0.1:0";
  auto started = server::Server::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_NE((*started)->metrics_port(), 0);
  client::ConnectOptions connect;
  connect.address = (*started)->address();
  connect.user = "alice";
  auto alice = client::Client::Connect(connect);

  auto job = alice->Submit(SilentNeuron(700));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(alice->WaitJob(job->job_id(), absl::Seconds(60)).ok());
  ASSERT_TRUE(alice->GetResult(job->job_id()).ok());
  EXPECT_FALSE(alice->Submit(SilentNeuron(2000)).ok());

  // The metrics callback may run just after WaitJob returned: poll briefly.
  std::string text;
  for (int attempt = 0; attempt < 100; ++attempt) {
    text = ScrapeMetrics((*started)->metrics_port());
    if (text.find("hxemu_job_run_seconds_count 1") != std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_THAT(text,
              HasSubstr("hxemu_jobs_submitted_total{outcome=\"accepted\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("hxemu_jobs_submitted_total{outcome=\"rejected\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("hxemu_jobs_finished_total{outcome=\"succeeded\"} 1"));
  EXPECT_THAT(text, HasSubstr("hxemu_emulated_hardware_seconds_total 0.0002"));
  EXPECT_THAT(text, HasSubstr("hxemu_job_run_seconds_count 1"));
  for (const char* phase : {"map", "lower", "emulate"}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("hxemu_job_phase_seconds_count{",
                                             "phase=\"", phase, "\"} 1")));
  }
  EXPECT_THAT(text, ::testing::ContainsRegex("hxemu_result_bytes_total [1-9]"));
  (*started)->Shutdown(absl::Seconds(1));
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
  result.add_population_labels("neurons");
  for (uint32_t c = 0; c < 512; ++c) result.add_cadc_circuits(c);
  for (int k = 0; k < 1000; ++k) {  // ~0.5 MB of CADC reads: several chunks
    v1::CadcRead* read = result.add_cadc_reads();
    read->set_time_ticks(static_cast<uint64_t>(k) * 125);
    for (uint32_t c = 0; c < 512; ++c) read->add_codes((c + k) % 256);
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
