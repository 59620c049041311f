// End-to-end tests of --state_dir (durable jobs) with the real hxemu-server
// binary, stopped by SIGKILL mid-run and by SIGTERM, then restarted on the
// same directory; and of --tls_cert_file/--tls_key_file with a throw-away
// self-signed certificate made by openssl at test time.
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hxemu/client/client.h"
#include "hxemu/server/server.h"
#include "support/temp_dir.h"

#ifndef HXEMU_SERVER_BINARY
#error "HXEMU_SERVER_BINARY must name the hxemu-server executable"
#endif

namespace hxemu {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr absl::Duration kTimeout = absl::Seconds(60);

// Each test its own directory, removed at the end.
class TempDir : public test_support::TempDir {
 public:
  TempDir() : test_support::TempDir("hxemu_durability") {}
};

// The seed tutorial's first experiment, pinned to chip 0 (a result depends
// on seed and chip only).
v1::Experiment SilentNeuron(uint64_t seed, double runtime_ms) {
  v1::Experiment experiment;
  v1::Population* pop = experiment.add_populations();
  pop->set_label("silent");
  pop->set_size(1);
  pop->set_cell_type(v1::CELL_TYPE_HX_NEURON);
  v1::NeuronParameter* p = pop->add_parameters();
  p->set_name("leak_v_leak");
  p->add_values(700);
  v1::Recording* rec = experiment.add_recordings();
  rec->set_population(0);
  rec->set_observable(v1::OBSERVABLE_V);
  experiment.set_runtime_ms(runtime_ms);
  experiment.set_seed(seed);
  experiment.set_chip_id(0);
  return experiment;
}

// An hxemu-server child process on a free loopback port.
class ServerProcess {
 public:
  // Starts the binary with `args` and waits for its "listening on" line.
  static std::unique_ptr<ServerProcess> Start(std::vector<std::string> args) {
    int out[2];
    if (pipe(out) != 0) return nullptr;
    args.insert(args.begin(), HXEMU_SERVER_BINARY);
    const pid_t pid = fork();
    if (pid == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    auto process = std::unique_ptr<ServerProcess>(new ServerProcess(pid));
    FILE* stdout_of_child = fdopen(out[0], "r");
    char line[256];
    const std::string prefix = "hxemu-server listening on ";
    if (stdout_of_child == nullptr ||
        fgets(line, sizeof(line), stdout_of_child) == nullptr ||
        std::string(line).rfind(prefix, 0) != 0) {
      if (stdout_of_child != nullptr) fclose(stdout_of_child);
      return nullptr;  // the destructor kills it
    }
    process->address_ = std::string(line + prefix.size());
    while (!process->address_.empty() && (process->address_.back() == '\n' ||
                                          process->address_.back() == '\r')) {
      process->address_.pop_back();
    }
    fclose(stdout_of_child);  // the server writes nothing more to stdout
    return process;
  }
  ~ServerProcess() {
    if (pid_ > 0) Stop(SIGKILL);
  }

  // Sends `signal` and reaps the process; returns its wait status.
  int Stop(int signal) {
    kill(pid_, signal);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  const std::string& address() const { return address_; }

 private:
  explicit ServerProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  std::string address_;
};

std::vector<std::string> ServerArgs(const std::string& state_dir) {
  return {"--listen=127.0.0.1:0",
          "--num_chips=1",
          absl::StrCat("--state_dir=", state_dir),
          "--calibrate_at_start=false",
          "--calibration_cache_dir=none",
          "--shutdown_grace_s=0"};
}

std::unique_ptr<client::Client> Connect(const std::string& address,
                                        const std::string& user) {
  client::ConnectOptions options;
  options.address = address;
  options.user = user;
  return client::Client::Connect(options);
}

struct Submitted {
  std::string user;
  std::string request_id;
  v1::Experiment experiment;
  std::string job_id;
};

// Jobs of two users; the first, long, one is running when the server is
// stopped (the test waits for it to be RUNNING).
std::vector<Submitted> SubmitJobs(const std::string& address) {
  std::vector<Submitted> jobs;
  std::map<std::string, std::unique_ptr<client::Client>> clients;
  for (const char* user : {"alice", "bob"}) {
    clients[user] = Connect(address, user);
  }
  for (int i = 0; i < 7; ++i) {
    Submitted job;
    job.user = i % 2 == 0 ? "alice" : "bob";
    job.request_id = absl::StrCat("req-", i);
    job.experiment = SilentNeuron(100 + i, i == 0 ? 50.0 : 0.5);
    auto submitted = clients[job.user]->Submit(job.experiment, job.request_id);
    EXPECT_TRUE(submitted.ok()) << submitted.status();
    if (!submitted.ok()) continue;
    job.job_id = submitted->job_id();
    jobs.push_back(job);
  }
  // Wait until the long first job runs (it is at the head of the queue).
  for (absl::Time end = absl::Now() + kTimeout; absl::Now() < end;) {
    auto job = clients["alice"]->GetJob(jobs.front().job_id);
    if (!job.ok() || job->state() != v1::JOB_STATE_QUEUED) break;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return jobs;
}

// After the restart: every job is there once, completes, and gives the
// result a fresh run of the same experiment gives.
void ExpectAllJobsComplete(const std::string& address,
                           const std::vector<Submitted>& jobs) {
  std::map<std::string, std::unique_ptr<client::Client>> clients;
  for (const char* user : {"alice", "bob"}) {
    clients[user] = Connect(address, user);
  }
  for (const Submitted& job : jobs) {
    client::Client& c = *clients[job.user];
    auto done = c.WaitJob(job.job_id, kTimeout);
    ASSERT_TRUE(done.ok()) << done.status();
    EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED) << done->state_reason();
    auto result = c.GetResult(job.job_id);
    ASSERT_TRUE(result.ok()) << result.status();
    // A retry of the original request finds the same job, nothing new.
    auto retry = c.Submit(job.experiment, job.request_id);
    ASSERT_TRUE(retry.ok()) << retry.status();
    EXPECT_EQ(retry->job_id(), job.job_id);
    // The same experiment again (new job) gives the same result.
    auto fresh = c.Submit(job.experiment);
    ASSERT_TRUE(fresh.ok()) << fresh.status();
    EXPECT_NE(fresh->job_id(), job.job_id);
    ASSERT_TRUE(c.WaitJob(fresh->job_id(), kTimeout).ok());
    auto fresh_result = c.GetResult(fresh->job_id());
    ASSERT_TRUE(fresh_result.ok()) << fresh_result.status();
    EXPECT_EQ(result->SerializeAsString(), fresh_result->SerializeAsString())
        << job.job_id;
  }
  // No job lost, none duplicated: each user sees its jobs once (plus the
  // fresh re-runs).
  for (const char* user : {"alice", "bob"}) {
    auto page = clients[user]->ListJobs(1000, "");
    ASSERT_TRUE(page.ok()) << page.status();
    std::multiset<std::string> listed;
    for (const v1::Job& job : page->jobs()) listed.insert(job.job_id());
    for (const Submitted& job : jobs) {
      if (job.user == user) {
        EXPECT_EQ(listed.count(job.job_id), 1u);
      }
    }
    EXPECT_EQ(std::set<std::string>(listed.begin(), listed.end()).size(),
              listed.size());
  }
}

TEST(DurabilityTest, SigkillMidRunLosesNoJob) {
  TempDir dir;
  std::vector<Submitted> jobs;
  {
    auto server = ServerProcess::Start(ServerArgs(dir.path()));
    ASSERT_NE(server, nullptr);
    jobs = SubmitJobs(server->address());
    ASSERT_EQ(jobs.size(), 7u);
    const int status = server->Stop(SIGKILL);
    EXPECT_TRUE(WIFSIGNALED(status));
  }
  auto server = ServerProcess::Start(ServerArgs(dir.path()));
  ASSERT_NE(server, nullptr);
  // The job that was running is queued again and says why (unless it had
  // finished just before the kill).
  auto first = Connect(server->address(), "alice")->GetJob(jobs[0].job_id);
  ASSERT_TRUE(first.ok()) << first.status();
  if (first->state() == v1::JOB_STATE_QUEUED) {
    EXPECT_THAT(first->state_reason(),
                StartsWith("re-queued after server restart"));
  }
  ExpectAllJobsComplete(server->address(), jobs);
  EXPECT_EQ(server->Stop(SIGTERM), 0);
}

TEST(DurabilityTest, SigtermKeepsQueuedAndRunningJobs) {
  TempDir dir;
  std::vector<Submitted> jobs;
  {
    auto server = ServerProcess::Start(ServerArgs(dir.path()));
    ASSERT_NE(server, nullptr);
    jobs = SubmitJobs(server->address());
    ASSERT_EQ(jobs.size(), 7u);
    const int status = server->Stop(SIGTERM);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  auto server = ServerProcess::Start(ServerArgs(dir.path()));
  ASSERT_NE(server, nullptr);
  ExpectAllJobsComplete(server->address(), jobs);
  // A third start still has them all (finished now) and their results.
  EXPECT_EQ(server->Stop(SIGTERM), 0);
  server = ServerProcess::Start(ServerArgs(dir.path()));
  ASSERT_NE(server, nullptr);
  for (const Submitted& job : jobs) {
    auto c = Connect(server->address(), job.user);
    auto view = c->GetJob(job.job_id);
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->state(), v1::JOB_STATE_SUCCEEDED);
    EXPECT_TRUE(c->GetResult(job.job_id).ok());
  }
  EXPECT_EQ(server->Stop(SIGTERM), 0);
}

TEST(DurabilityTest, UnusableStateDirIsReportedAtStart) {
  TempDir dir;
  const std::string file = dir.path() + "/file";
  std::ofstream(file) << "x";
  server::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.state_dir = file + "/state";
  auto server = server::Server::Start(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), StartsWith("state_dir"));
}

// --- TLS ---

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cert_ = dir_.path() + "/cert.pem";
    key_ = dir_.path() + "/key.pem";
    const std::string command = absl::StrCat(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "
        "/CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
        "-keyout ",
        key_, " -out ", cert_, " >/dev/null 2>&1");
    ASSERT_EQ(std::system(command.c_str()), 0) << "openssl failed";
  }
  TempDir dir_;
  std::string cert_;
  std::string key_;
};

TEST_F(TlsTest, ServesTlsClientsAndRefusesPlaintext) {
  server::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.tls_cert_file = cert_;
  options.tls_key_file = key_;
  auto started = server::Server::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<server::Server> server = *std::move(started);

  client::ConnectOptions secure;
  secure.address = server->address();
  secure.user = "alice";
  secure.tls.enabled = true;
  secure.tls.root_certs_pem = ReadFile(cert_);
  auto c = client::Client::Connect(secure);
  auto job = c->Submit(SilentNeuron(1, 0.2));
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = c->WaitJob(job->job_id(), kTimeout);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(c->GetResult(job->job_id()).ok());

  client::ConnectOptions plain = secure;
  plain.tls = {};
  plain.call_timeout = absl::Seconds(5);
  EXPECT_EQ(
      client::Client::Connect(plain)->GetJob(job->job_id()).status().code(),
      absl::StatusCode::kUnavailable);
  // A client that does not trust the certificate is refused too.
  client::ConnectOptions untrusting = secure;
  untrusting.tls.root_certs_pem = "";
  untrusting.call_timeout = absl::Seconds(5);
  EXPECT_EQ(client::Client::Connect(untrusting)
                ->GetJob(job->job_id())
                .status()
                .code(),
            absl::StatusCode::kUnavailable);
  server->Shutdown(absl::Seconds(1));
}

TEST_F(TlsTest, BadTlsOptionsAreRejectedNamingTheFlag) {
  server::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.tls_cert_file = cert_;
  auto server = server::Server::Start(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()),
              HasSubstr("tls_key_file"));
  options.tls_key_file = dir_.path() + "/missing.pem";
  server = server::Server::Start(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()),
              StartsWith("tls_key_file: cannot read"));
  std::ofstream(dir_.path() + "/not-pem.txt") << "hello";
  options.tls_key_file = dir_.path() + "/not-pem.txt";
  server = server::Server::Start(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("not a PEM"));
}

}  // namespace
}  // namespace hxemu
