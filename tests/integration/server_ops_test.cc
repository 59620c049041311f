// Operational tests of the real gRPC server (in-process, free loopback
// ports): health and reflection, graceful shutdown, token authentication,
// limits in GetServerInfo, metrics, large results in chunks, machine-readable
// reasons, concurrent idempotent submits, and a fuzz run of malformed and
// random requests after which the server must still serve.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../../server/src/experiment_service.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hxemu/client/client.h"
#include "hxemu/server/server.h"
#include "hxemu/v1/service.grpc.pb.h"

namespace hxemu {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr absl::Duration kTimeout = absl::Seconds(60);

// One neuron, membrane recorded through the MADC for `runtime_ms`.
v1::Experiment OneNeuron(double runtime_ms, bool record_membrane = true) {
  v1::Experiment experiment;
  v1::Population* pop = experiment.add_populations();
  pop->set_size(1);
  pop->set_cell_type(v1::CELL_TYPE_HX_NEURON);
  v1::NeuronParameter* p = pop->add_parameters();
  p->set_name("leak_v_leak");
  p->add_values(700);
  if (record_membrane) {
    v1::Recording* rec = experiment.add_recordings();
    rec->set_population(0);
    rec->set_observable(v1::OBSERVABLE_V);
  }
  experiment.set_runtime_ms(runtime_ms);
  experiment.set_seed(7);
  return experiment;
}

std::unique_ptr<server::Server> StartServer(server::ServerOptions options) {
  options.listen_address = "127.0.0.1:0";
  auto started = server::Server::Start(options);
  EXPECT_TRUE(started.ok()) << started.status();
  return started.ok() ? *std::move(started) : nullptr;
}

std::unique_ptr<client::Client> Connect(const server::Server& server,
                                        const std::string& user,
                                        const std::string& token = "") {
  client::ConnectOptions options;
  options.address = server.address();
  options.user = user;
  options.token = token;
  return client::Client::Connect(options);
}

// A generic unary call with raw request bytes; returns the status and puts
// the raw response bytes into `response`.
grpc::Status RawUnary(const std::string& address, const std::string& method,
                      const std::string& request, std::string* response) {
  auto channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kTimeout));
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&context, method, request_buffer, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response_buffer, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  EXPECT_TRUE(cq.Next(&tag, &ok));
  std::vector<grpc::Slice> slices;
  if (status.ok() && response_buffer.Dump(&slices).ok()) {
    response->clear();
    for (const grpc::Slice& s : slices) {
      response->append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// grpc.health.v1.Health/Check for the whole server: 1 = SERVING,
// 2 = NOT_SERVING, -1 = the call failed.
int HealthStatus(const std::string& address) {
  std::string response;
  grpc::Status status =
      RawUnary(address, "/grpc.health.v1.Health/Check", "", &response);
  if (!status.ok()) return -1;
  // HealthCheckResponse { ServingStatus status = 1; }: 08 <varint>.
  if (response.size() == 2 && response[0] == 0x08) return response[1];
  return 0;  // UNKNOWN (field absent)
}

// ServerReflection list_services over the bidi stream; the raw response.
std::string ReflectionListServices(const std::string& address) {
  auto channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kTimeout));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](intptr_t want) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  step(1);
  // ServerReflectionRequest { string list_services = 7; } with "".
  const std::string request("\x3a\x00", 2);
  grpc::Slice slice(request);
  grpc::ByteBuffer buffer(&slice, 1);
  call->Write(buffer, reinterpret_cast<void*>(2));
  step(2);
  call->WritesDone(reinterpret_cast<void*>(3));
  step(3);
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  std::string text;
  if (step(4)) {
    std::vector<grpc::Slice> slices;
    if (response.Dump(&slices).ok()) {
      for (const grpc::Slice& s : slices) {
        text.append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return text;
}

// GET /metrics over plain HTTP/1.0.
std::string ScrapeMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: "
        "close\r\n\r\n";
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

// Polls until job `id` is RUNNING; false if it ended or kTimeout passed.
bool AwaitRunning(client::Client& client, const std::string& id) {
  const absl::Time give_up = absl::Now() + kTimeout;
  while (absl::Now() < give_up) {
    absl::StatusOr<v1::Job> job = client.GetJob(id);
    if (!job.ok() || client::IsTerminal(job->state())) return false;
    if (job->state() == v1::JOB_STATE_RUNNING) return true;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return false;
}

TEST(ServerOps, HealthIsServingAndReflectionListsTheServices) {
  auto server = StartServer({});
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(HealthStatus(server->address()), 1);
  const std::string services = ReflectionListServices(server->address());
  EXPECT_THAT(services, HasSubstr("hxemu.v1.ExperimentService"));
  EXPECT_THAT(services, HasSubstr("grpc.health.v1.Health"));
}

// SIGTERM runs Server::Shutdown: NOT_SERVING, no new jobs, queued jobs handed
// back, running ones finish (here: stopped by their user), then exit.
TEST(ServerOps, GracefulShutdownDrainsTheQueue) {
  server::ServerOptions options;
  options.num_chips = 1;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto alice = Connect(*server, "alice");
  // Long enough (10 s hardware) never to end by itself during the test.
  absl::StatusOr<v1::Job> running =
      alice->Submit(OneNeuron(10000, /*record_membrane=*/false));
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_TRUE(AwaitRunning(*alice, running->job_id()));
  absl::StatusOr<v1::Job> queued = alice->Submit(OneNeuron(0.1));
  ASSERT_TRUE(queued.ok());

  std::thread shutdown([&] { server->Shutdown(kTimeout); });
  absl::StatusOr<v1::Job> handed_back =
      alice->WaitJob(queued->job_id(), kTimeout);
  ASSERT_TRUE(handed_back.ok()) << handed_back.status();
  EXPECT_EQ(handed_back->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(handed_back->reason(), v1::JOB_REASON_CANCELLED_BY_SHUTDOWN);
  EXPECT_EQ(HealthStatus(server->address()), 2);
  absl::StatusOr<v1::Job> refused = alice->Submit(OneNeuron(0.1));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  absl::StatusOr<v1::Job> still = alice->GetJob(running->job_id());
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(still->state(), v1::JOB_STATE_RUNNING);
  // The running job ends (here by its user); then the server stops.
  ASSERT_TRUE(alice->CancelJob(running->job_id()).ok());
  shutdown.join();
  EXPECT_EQ(HealthStatus(server->address()), -1);
}

TEST(ServerOps, ShutdownStopsRunningJobsWhenTheGracePeriodEnds) {
  server::ServerOptions options;
  options.num_chips = 1;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto alice = Connect(*server, "alice");
  absl::StatusOr<v1::Job> running =
      alice->Submit(OneNeuron(10000, /*record_membrane=*/false));
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(AwaitRunning(*alice, running->job_id()));
  // Wait from another thread: the call ends with the job's terminal state.
  absl::StatusOr<v1::Job> waited;
  std::thread waiter(
      [&] { waited = alice->WaitJob(running->job_id(), kTimeout); });
  // Give the WaitJob call time to arrive before the server stops accepting
  // (if it does not, it fails UNAVAILABLE: accepted below as well).
  absl::SleepFor(absl::Milliseconds(50));
  server->Shutdown(absl::ZeroDuration());
  waiter.join();
  if (waited.ok()) {
    EXPECT_EQ(waited->state(), v1::JOB_STATE_CANCELLED);
    EXPECT_EQ(waited->reason(), v1::JOB_REASON_CANCELLED_BY_SHUTDOWN);
  } else {
    EXPECT_EQ(waited.status().code(), absl::StatusCode::kUnavailable);
  }
}

TEST(ServerOps, BearerTokensIdentifyUsers) {
  server::ServerOptions options;
  options.auth_tokens = {{"token-of-alice-0123456789", "alice"},
                         {"token-of-bob-0123456789", "bob"}};
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  // The token names the user; hxemu-user is ignored.
  auto alice = Connect(*server, "mallory", "token-of-alice-0123456789");
  auto bob = Connect(*server, "alice", "token-of-bob-0123456789");
  absl::StatusOr<v1::Job> job = alice->Submit(OneNeuron(0.1));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->user(), "alice");
  EXPECT_EQ(bob->GetJob(job->job_id()).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(alice->WaitJob(job->job_id(), kTimeout).ok());

  for (const std::string token : {"", "no-such-token-0123456789"}) {
    auto stranger = Connect(*server, "alice", token);
    EXPECT_EQ(stranger->Submit(OneNeuron(0.1)).status().code(),
              absl::StatusCode::kUnauthenticated)
        << token;
    EXPECT_EQ(stranger->GetJob(job->job_id()).status().code(),
              absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(stranger->ListChips().status().code(),
              absl::StatusCode::kUnauthenticated);
    absl::StatusOr<v1::ServerInfo> info = stranger->GetServerInfo();
    EXPECT_EQ(info.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_THAT(std::string(info.status().message()),
                HasSubstr("authorization"));
  }
  absl::StatusOr<v1::ServerInfo> info = bob->GetServerInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->auth_required());
}

TEST(ServerOps, TokenFileIsParsedAndCheckedLineByLine) {
  char path[] = "/tmp/hxemu-tokens-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  auto write_file = [&](const std::string& text) {
    std::ofstream(path, std::ios::trunc) << text;
  };
  write_file(
      "# token user\n"
      "abcdefghijklmnop0001 alice  # the course's first student\n"
      "\n"
      "  abcdefghijklmnop0002\tbob\n");
  auto tokens = server::ReadTokenFile(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 2u);
  EXPECT_EQ(tokens->at("abcdefghijklmnop0002"), "bob");
  for (const std::string bad :
       {"abcdefghijklmnop0001\n", "short alice\n",
        "abcdefghijklmnop0001 al ice\n", "abcdefghijklmnop0001 al/ice\n",
        "abcdefghijklmnop0001 a\nabcdefghijklmnop0001 b\n", "# none\n"}) {
    write_file(bad);
    absl::Status status = server::ReadTokenFile(path).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(status.message()), StartsWith("auth_token_file"));
  }
  std::remove(path);
  EXPECT_EQ(server::ReadTokenFile(path).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ServerOps, ServerInfoPublishesTheLimits) {
  server::ServerOptions options;
  options.num_chips = 3;
  options.limits.max_runtime_ms = 123;
  options.limits.max_madc_samples = 4567;
  options.max_request_bytes = 8 * 1024 * 1024;
  options.max_queued_jobs_per_user = 42;
  options.user_time_slice = absl::Milliseconds(25);
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::ServerInfo> info =
      Connect(*server, "alice")->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(info->version().empty());
  EXPECT_THAT(info->chip_model(), HasSubstr("HICANN-X"));
  EXPECT_EQ(info->num_chips(), 3u);
  EXPECT_EQ(info->max_runtime_ms(), 123);
  EXPECT_EQ(info->max_madc_samples(), 4567);
  EXPECT_EQ(info->max_request_bytes(), 8 * 1024 * 1024);
  EXPECT_EQ(info->max_queued_jobs_per_user(), 42);
  EXPECT_EQ(info->user_time_slice_ms(), 25);
  EXPECT_GT(info->max_result_chunk_bytes(), 0);
  EXPECT_LT(info->max_result_chunk_bytes(), 4 * 1024 * 1024);
  EXPECT_GT(info->result_ttl_s(), 0);
  EXPECT_FALSE(info->auth_required());
}

TEST(ServerOps, MetricsShowQueueChipsAndNoUserIds) {
  server::ServerOptions options;
  options.num_chips = 2;
  options.metrics_address = "127.0.0.1:0";
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto alice = Connect(*server, "alice-the-user");
  absl::StatusOr<v1::Job> job = alice->Submit(OneNeuron(0.1));
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(alice->WaitJob(job->job_id(), kTimeout).ok());
  ASSERT_TRUE(alice->GetResult(job->job_id()).ok());
  const std::string text = ScrapeMetrics(server->metrics_port());
  EXPECT_THAT(text, HasSubstr("hxemu_jobs_queued 0"));
  EXPECT_THAT(text, HasSubstr("hxemu_jobs_running "));
  EXPECT_THAT(text, HasSubstr("hxemu_chip_busy{chip=\"0\"}"));
  EXPECT_THAT(text, HasSubstr("hxemu_chip_busy{chip=\"1\"}"));
  EXPECT_THAT(text, HasSubstr("hxemu_chip_busy_seconds_total{chip=\"1\"}"));
  EXPECT_THAT(text, HasSubstr("hxemu_chip_jobs_started_total{chip=\"0\"}"));
  EXPECT_THAT(text, HasSubstr("hxemu_chip_reconfigurations_total"));
  EXPECT_THAT(text, HasSubstr("hxemu_results_retained 1"));
  EXPECT_THAT(text, HasSubstr("hxemu_results_retained_bytes "));
  EXPECT_THAT(text, HasSubstr("hxemu_build_info{version=\""));
  EXPECT_THAT(text, HasSubstr("hxemu_job_wait_seconds_bucket"));
  EXPECT_THAT(text, Not(HasSubstr("alice-the-user")));
  EXPECT_THAT(text, Not(HasSubstr(job->job_id())));
}

// A result above gRPC's 4 MiB message limit (a 36 ms MADC trace, about
// 1.06 M samples, ~6 MB) arrives in chunks each below the limit; a 1 s trace
// is the same with more chunks.
TEST(ServerOps, LargeResultStreamsInChunksBelowTheMessageLimit) {
  server::ServerOptions options;
  options.limits.max_runtime_ms = 100;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto alice = Connect(*server, "alice");
  absl::StatusOr<v1::Job> job = alice->Submit(OneNeuron(36));
  ASSERT_TRUE(job.ok()) << job.status();
  // The job takes well under a second in the normal build, but tens of
  // seconds in the sanitizer build on a busy machine: the wait is bounded
  // only by CTest's timeout (300 s), not by the machine's speed.
  absl::StatusOr<v1::Job> done =
      alice->WaitJob(job->job_id(), absl::Seconds(280));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED) << done->state_reason();
  EXPECT_GT(done->result_bytes(), 4 * 1024 * 1024);
  EXPECT_GT(done->result_expire_time_unix_ms(), done->end_time_unix_ms());

  // A plain stub with gRPC's default 4 MiB receive limit.
  auto channel = grpc::CreateChannel(server->address(),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::ExperimentService::NewStub(channel);
  grpc::ClientContext context;
  context.AddMetadata("hxemu-user", "alice");
  context.set_deadline(absl::ToChronoTime(absl::Now() + kTimeout));
  v1::GetResultRequest request;
  request.set_job_id(job->job_id());
  auto reader = stub->GetResult(&context, request);
  v1::ResultChunk chunk;
  v1::Result merged;
  int chunks = 0;
  while (reader->Read(&chunk)) {
    ++chunks;
    EXPECT_LT(chunk.ByteSizeLong(), 4u * 1024 * 1024);
    client::MergeResultChunk(chunk.result(), &merged);
  }
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(chunks, 3);
  ASSERT_EQ(merged.traces_size(), 1);
  EXPECT_GT(merged.traces(0).codes_size(), 1000000);
  EXPECT_EQ(merged.traces(0).codes_size(), merged.traces(0).times_ticks_size());
  EXPECT_EQ(static_cast<int64_t>(merged.ByteSizeLong()), done->result_bytes());
}

TEST(ServerOps, JobViewCarriesReasonCodesAndEstimates) {
  server::ServerOptions options;
  options.num_chips = 1;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto alice = Connect(*server, "alice");
  auto bob = Connect(*server, "bob");
  absl::StatusOr<v1::Job> first = alice->Submit(OneNeuron(0.1));
  ASSERT_TRUE(first.ok());
  absl::StatusOr<v1::Job> done = alice->WaitJob(first->job_id(), kTimeout);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->reason(), v1::JOB_REASON_SUCCEEDED);

  absl::StatusOr<v1::Job> running =
      alice->Submit(OneNeuron(10000, /*record_membrane=*/false));
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(AwaitRunning(*alice, running->job_id()));
  absl::StatusOr<v1::Job> mine = alice->Submit(OneNeuron(0.1));
  absl::StatusOr<v1::Job> theirs = bob->Submit(OneNeuron(0.1));
  ASSERT_TRUE(mine.ok() && theirs.ok());
  EXPECT_EQ(theirs->reason(), v1::JOB_REASON_WAITING_FOR_CHIP);
  // Both wait for their first turn; Bob has used the chip less than Alice
  // (she ran a job already), so he goes first.
  absl::StatusOr<v1::Job> behind = alice->GetJob(mine->job_id());
  ASSERT_TRUE(behind.ok());
  EXPECT_EQ(behind->reason(), v1::JOB_REASON_BEHIND_OTHER_USERS);
  EXPECT_EQ(behind->jobs_ahead_other_users(), 1u);
  EXPECT_EQ(behind->queue_position(), 1u);
  // A job finished before: there is an estimate, not in the past.
  EXPECT_GE(behind->estimated_start_time_unix_ms(),
            behind->submit_time_unix_ms());
  absl::StatusOr<v1::Job> stopping = alice->CancelJob(running->job_id());
  ASSERT_TRUE(stopping.ok());
  absl::StatusOr<v1::Job> cancelled =
      alice->WaitJob(running->job_id(), kTimeout);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(cancelled->reason(), v1::JOB_REASON_CANCELLED_BY_USER);
  EXPECT_TRUE(alice->WaitJob(mine->job_id(), kTimeout).ok());
  EXPECT_TRUE(bob->WaitJob(theirs->job_id(), kTimeout).ok());
}

TEST(ServerOps, ConcurrentRetriesOfOneRequestGetOneJob) {
  auto server = StartServer({});
  ASSERT_NE(server, nullptr);
  const v1::Experiment experiment = OneNeuron(0.1);
  std::vector<std::string> ids(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ids.size(); ++i) {
    threads.emplace_back([&, i] {
      auto alice = Connect(*server, "alice");
      absl::StatusOr<v1::Job> job = alice->Submit(experiment, "request-42");
      ids[i] = job.ok() ? job->job_id() : job.status().ToString();
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 1u);
  auto alice = Connect(*server, "alice");
  absl::StatusOr<v1::ListJobsResponse> jobs = alice->ListJobs(10);
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->jobs_size(), 1);
  // The same id with another experiment is refused, naming the field.
  absl::StatusOr<v1::Job> other = alice->Submit(OneNeuron(0.2), "request-42");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(other.status().message()), HasSubstr("request_id"));
}

TEST(ServerOps, FullQueueIsResourceExhaustedWithARetryHint) {
  server::ServerOptions options;
  options.num_chips = 1;
  options.max_queued_jobs_per_user = 1;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto alice = Connect(*server, "alice");
  absl::StatusOr<v1::Job> running =
      alice->Submit(OneNeuron(10000, /*record_membrane=*/false));
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(AwaitRunning(*alice, running->job_id()));
  ASSERT_TRUE(alice->Submit(OneNeuron(0.1)).ok());  // queued: at the cap

  auto channel = grpc::CreateChannel(server->address(),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::ExperimentService::NewStub(channel);
  grpc::ClientContext context;
  context.AddMetadata("hxemu-user", "alice");
  context.set_deadline(absl::ToChronoTime(absl::Now() + kTimeout));
  v1::SubmitJobRequest request;
  *request.mutable_experiment() = OneNeuron(0.1);
  v1::Job job;
  grpc::Status status = stub->SubmitJob(&context, request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("max_queued_jobs_per_user"));
  const auto& trailers = context.GetServerTrailingMetadata();
  auto hint = trailers.find("grpc-retry-pushback-ms");
  ASSERT_NE(hint, trailers.end());
  EXPECT_EQ(std::string(hint->second.data(), hint->second.size()), "1000");
  ASSERT_TRUE(alice->CancelJob(running->job_id()).ok());
}

// The configuration key (chip affinity) covers what is written to the chip,
// not stimulus, recording, seed or runtime.
TEST(ConfigKey, ChangesWithTheConfigurationOnly) {
  const v1::Experiment base = OneNeuron(0.1);
  v1::Experiment other_run = base;
  other_run.set_seed(99);
  other_run.set_runtime_ms(0.3);
  other_run.clear_recordings();
  v1::Population* source = other_run.add_populations();
  source->set_cell_type(v1::CELL_TYPE_SPIKE_SOURCE_ARRAY);
  source->set_size(1);
  source->mutable_spike_source_array()->add_spike_times()->add_times_ms(0.05);
  v1::Experiment other_stimulus = other_run;
  other_stimulus.mutable_populations(1)
      ->mutable_spike_source_array()
      ->mutable_spike_times(0)
      ->set_times_ms(0, 0.07);
  EXPECT_EQ(server::ConfigKey(other_run), server::ConfigKey(other_stimulus));
  v1::Experiment other_parameter = base;
  other_parameter.mutable_populations(0)->mutable_parameters(0)->set_values(
      0, 701);
  EXPECT_NE(server::ConfigKey(base), server::ConfigKey(other_parameter));
  v1::Experiment other_synapse = other_run;
  v1::Projection* projection = other_synapse.add_projections();
  projection->set_pre_population(1);
  projection->set_post_population(0);
  projection->add_pre_indices(0);
  projection->add_post_indices(0);
  projection->add_weights(10);
  EXPECT_NE(server::ConfigKey(other_run), server::ConfigKey(other_synapse));
  EXPECT_NE(server::ConfigKey(base), 0u);
}

// --- Fuzz: malformed and random requests ---

// A random change to a valid experiment: sizes, parameter names and values,
// recordings, projections, runtime, chip id; often several at once.
v1::Experiment Mutate(std::mt19937_64& rng) {
  v1::Experiment experiment = OneNeuron(0.1);
  std::uniform_int_distribution<int> pick(0, 15);
  const int changes = 1 + pick(rng) % 3;
  auto any_int = [&]() -> int32_t {
    switch (pick(rng) % 4) {
      case 0:
        return static_cast<int32_t>(rng());
      case 1:
        return -1 - pick(rng);
      case 2:
        return 1022 + pick(rng);
      default:
        return pick(rng) * 64;
    }
  };
  for (int c = 0; c < changes; ++c) {
    if (experiment.populations_size() == 0) {
      *experiment.add_populations() = OneNeuron(0.1).populations(0);
    }
    v1::Population* pop = experiment.mutable_populations(0);
    switch (pick(rng)) {
      case 0:
        pop->set_size(static_cast<uint32_t>(rng() % 1200));
        break;
      case 1:
        pop->mutable_parameters(0)->set_name(pick(rng) % 2 ? "no_such_parameter"
                                                           : "");
        break;
      case 2:
        pop->mutable_parameters(0)->set_values(0, any_int());
        break;
      case 3:
        for (int i = 0; i < pick(rng); ++i) {
          pop->mutable_parameters(0)->add_values(any_int());
        }
        break;
      case 4: {
        const double runtimes[] = {-1,    0,     std::nan(""), 1e300,
                                   1e-12, 5000., 0.05,         -0.0};
        experiment.set_runtime_ms(runtimes[pick(rng) % 8]);
        break;
      }
      case 5:
        experiment.set_chip_id(static_cast<uint32_t>(rng() % 4));
        break;
      case 6:
        pop->set_cell_type(static_cast<v1::CellType>(pick(rng) % 5));
        break;
      case 7: {
        v1::Recording* rec = experiment.add_recordings();
        rec->set_population(static_cast<uint32_t>(pick(rng) % 3));
        rec->set_observable(static_cast<v1::Observable>(pick(rng) % 7));
        rec->add_neurons(static_cast<uint32_t>(rng() % 600));
        break;
      }
      case 8: {
        v1::Projection* proj = experiment.add_projections();
        proj->set_pre_population(static_cast<uint32_t>(pick(rng) % 3));
        proj->set_post_population(static_cast<uint32_t>(pick(rng) % 3));
        proj->add_pre_indices(static_cast<uint32_t>(rng() % 4));
        proj->add_post_indices(static_cast<uint32_t>(rng() % 4));
        proj->add_weights(any_int());
        if (pick(rng) % 2) proj->add_weights(1);
        break;
      }
      case 9: {
        v1::Population* src = experiment.add_populations();
        src->set_cell_type(v1::CELL_TYPE_SPIKE_SOURCE_ARRAY);
        src->set_size(static_cast<uint32_t>(pick(rng) % 3));
        v1::SpikeTimes* times =
            src->mutable_spike_source_array()->add_spike_times();
        const double t[] = {-1, std::nan(""), 0.01, 1e9, 0.05};
        times->add_times_ms(t[pick(rng) % 5]);
        break;
      }
      case 10: {
        v1::Population* src = experiment.add_populations();
        src->set_cell_type(v1::CELL_TYPE_SPIKE_SOURCE_POISSON);
        src->set_size(1 + static_cast<uint32_t>(pick(rng) % 3));
        const double rates[] = {-5, std::nan(""), 1e12, 1000, 0};
        src->mutable_spike_source_poisson()->set_rate_hz(rates[pick(rng) % 5]);
        src->mutable_spike_source_poisson()->set_duration_ms(
            rates[pick(rng) % 5]);
        break;
      }
      case 11:
        for (uint32_t n = 0; n < 3; ++n) pop->add_circuits(rng() % 600);
        break;
      case 12:
        experiment.clear_populations();
        break;
      case 13:
        pop->add_parameters()->set_name(pop->parameters(0).name());
        break;
      default:
        experiment.set_seed(rng());
        break;
    }
  }
  return experiment;
}

TEST(ServerOps, MalformedAndRandomRequestsNeverStopTheServer) {
  server::ServerOptions options;
  options.num_chips = 2;
  options.limits.max_runtime_ms = 1;  // accepted jobs stay cheap
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto alice = Connect(*server, "alice");
  std::mt19937_64 rng(20261201);  // fixed: the same cases every run
  std::vector<std::string> accepted;
  int rejected = 0;
  const std::set<absl::StatusCode> allowed = {
      absl::StatusCode::kInvalidArgument, absl::StatusCode::kResourceExhausted,
      absl::StatusCode::kNotFound, absl::StatusCode::kFailedPrecondition};
  for (int i = 0; i < 400; ++i) {
    v1::Experiment experiment;
    if (i % 4 == 3) {
      // Random bytes that happen to parse as an Experiment.
      std::string bytes(static_cast<size_t>(rng() % 64), '\0');
      for (char& b : bytes) b = static_cast<char>(rng());
      if (!experiment.ParseFromString(bytes)) experiment = Mutate(rng);
    } else {
      experiment = Mutate(rng);
    }
    absl::StatusOr<v1::Job> job = alice->Submit(
        experiment, i % 5 == 0 ? absl::StrCat("fuzz-", i % 20) : "");
    if (job.ok()) {
      accepted.push_back(job->job_id());
      continue;
    }
    ++rejected;
    const absl::Status& s = job.status();
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      EXPECT_THAT(std::string(s.message()), StartsWith("request_id"));
      continue;
    }
    EXPECT_TRUE(allowed.contains(s.code())) << i << ": " << s;
    // The message names the offending field.
    EXPECT_THAT(std::string(s.message()), StartsWith("experiment")) << i;
  }
  // Raw bytes that are not a valid SubmitJobRequest at all: gRPC itself
  // refuses what does not parse (no message), the service what is
  // semantically wrong.
  std::set<int> raw_codes;
  for (int i = 0; i < 50; ++i) {
    std::string bytes(static_cast<size_t>(1 + rng() % 200), '\0');
    for (char& b : bytes) b = static_cast<char>(rng());
    std::string response;
    grpc::Status status =
        RawUnary(server->address(), "/hxemu.v1.ExperimentService/SubmitJob",
                 bytes, &response);
    if (status.ok()) {
      v1::Job job;
      ASSERT_TRUE(job.ParseFromString(response));
      accepted.push_back(job.job_id());
    } else {
      raw_codes.insert(status.error_code());
    }
  }
  for (int code : raw_codes) {
    // (Debian's gRPC 1.51 answers some undecodable messages UNIMPLEMENTED.)
    EXPECT_THAT(
        code, AnyOf(grpc::StatusCode::INTERNAL, grpc::StatusCode::UNIMPLEMENTED,
                    grpc::StatusCode::INVALID_ARGUMENT,
                    grpc::StatusCode::RESOURCE_EXHAUSTED));
  }
  EXPECT_GT(rejected, 100);
  // Every accepted job ends; the server still serves a normal job.
  for (const std::string& id : accepted) {
    absl::StatusOr<v1::Job> job = alice->WaitJob(id, kTimeout);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_TRUE(client::IsTerminal(job->state()));
  }
  absl::StatusOr<client::RunResult> normal =
      alice->Run(OneNeuron(0.1), nullptr, kTimeout);
  EXPECT_TRUE(normal.ok()) << normal.status();
  EXPECT_EQ(HealthStatus(server->address()), 1);
}

}  // namespace
}  // namespace hxemu
