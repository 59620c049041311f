// Load benchmark of the real server over loopback (issue: microscheduler and
// gRPC service). 50 users, each a client thread with its own channel, submit
// the seed tutorial's first experiment (one silent neuron, 0.2 ms, membrane
// recorded) for a fixed wall time: Submit -> WaitJob -> GetResult.
// Two phases:
//  - closed loop: every user submits its next job as soon as the last one
//    came back (the server's throughput; latency is then mostly queueing:
//    Little's law, users / throughput);
//  - open loop (--rate > 0): the users together offer --rate jobs/s, each
//    at fixed intervals (latency at a given load, as a class would see it).
// Each prints jobs/s, the round-trip latency percentiles and Jain's
// fairness index over the users' completed jobs. Finally it measures how
// long cancelling a running job takes (CancelJob sent -> job terminal).
//
//   build/tests/bench/server_load_bench [--users=50] [--seconds=5] [--chips=2]
//       [--rate=1000] [--cancels=20]
//
// A benchmark, not a test: it prints figures and asserts nothing about speed.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "hxemu/client/client.h"
#include "hxemu/server/server.h"

ABSL_FLAG(int, users, 50, "Concurrent users (one client thread each)");
ABSL_FLAG(double, seconds, 5, "Wall time to keep submitting [s]");
ABSL_FLAG(int, chips, 2, "Emulated chips of the server");
ABSL_FLAG(double, rate, 1000,
          "Open-loop phase: jobs/s offered by all users together (0 = skip)");
ABSL_FLAG(int, cancels, 20, "Running jobs to cancel for the cancel latency");

namespace {

hxemu::v1::Experiment SeedExperimentOne() {
  hxemu::v1::Experiment experiment;
  hxemu::v1::Population* pop = experiment.add_populations();
  pop->set_size(1);
  pop->set_cell_type(hxemu::v1::CELL_TYPE_HX_NEURON);
  hxemu::v1::NeuronParameter* p = pop->add_parameters();
  p->set_name("leak_v_leak");
  p->add_values(700);
  p = pop->add_parameters();
  p->set_name("leak_i_bias");
  p->add_values(1022);
  hxemu::v1::Recording* rec = experiment.add_recordings();
  rec->set_population(0);
  rec->set_observable(hxemu::v1::OBSERVABLE_V);
  experiment.set_runtime_ms(0.2);
  return experiment;
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t index =
      static_cast<size_t>(q * static_cast<double>(values.size() - 1));
  return values[index];
}

struct PhaseResult {
  std::vector<std::vector<double>> latencies_ms;  // by user
  int errors = 0;
  double elapsed_s = 0;
};

// `users` client threads for `seconds`; with `interval` > 0 each submits at
// that fixed interval (open loop), else back to back (closed loop).
PhaseResult RunPhase(const std::string& address, int users, double seconds,
                     absl::Duration interval,
                     const hxemu::v1::Experiment& experiment) {
  PhaseResult out;
  out.latencies_ms.resize(users);
  std::vector<int> errors(users, 0);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (int u = 0; u < users; ++u) {
    threads.emplace_back([&, u] {
      hxemu::client::ConnectOptions connect;
      connect.address = address;
      connect.user = absl::StrCat("user", u);
      auto client = hxemu::client::Client::Connect(connect);
      // Spread the users' first submissions over one interval.
      absl::Time next = absl::Now() + interval * u / users;
      while (!stop.load()) {
        if (interval > absl::ZeroDuration()) {
          absl::SleepFor(next - absl::Now());
          next += interval;
          if (stop.load()) break;
        }
        const auto t0 = std::chrono::steady_clock::now();
        auto job = client->Submit(experiment);
        bool ok = job.ok();
        if (ok) {
          auto done = client->WaitJob(job->job_id(), absl::Seconds(60));
          ok = done.ok() && done->state() == hxemu::v1::JOB_STATE_SUCCEEDED &&
               client->GetResult(job->job_id()).ok();
        }
        const auto t1 = std::chrono::steady_clock::now();
        if (ok) {
          out.latencies_ms[u].push_back(
              std::chrono::duration<double, std::milli>(t1 - t0).count());
        } else {
          ++errors[u];
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (std::thread& t : threads) t.join();
  out.elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  for (int e : errors) out.errors += e;
  return out;
}

void Print(const char* phase, int users, int chips, const PhaseResult& r) {
  std::vector<double> all;
  double sum = 0, sum_sq = 0;
  for (const std::vector<double>& user : r.latencies_ms) {
    all.insert(all.end(), user.begin(), user.end());
    const double n = static_cast<double>(user.size());
    sum += n;
    sum_sq += n * n;
  }
  const double jain = sum_sq > 0 ? sum * sum / (users * sum_sq) : 0;
  std::printf(
      "server_load_bench %s: %d users, %d chips, %.1f s: %zu jobs (%d "
      "errors), %.0f jobs/s, round trip p50 %.2f ms, p99 %.2f ms, Jain "
      "fairness %.4f\n",
      phase, users, chips, r.elapsed_s, all.size(), r.errors,
      static_cast<double>(all.size()) / r.elapsed_s, Percentile(all, 0.5),
      Percentile(all, 0.99), jain);
}

// CancelJob of a running job until the job is terminal [ms], `n` times.
std::vector<double> CancelLatencies(const std::string& address, int n) {
  hxemu::client::ConnectOptions connect;
  connect.address = address;
  connect.user = "canceller";
  auto client = hxemu::client::Client::Connect(connect);
  hxemu::v1::Experiment long_job = SeedExperimentOne();
  long_job.clear_recordings();
  long_job.set_runtime_ms(10000);  // far longer than the measurement
  std::vector<double> latencies;
  for (int i = 0; i < n; ++i) {
    auto job = client->Submit(long_job);
    if (!job.ok()) continue;
    for (;;) {
      auto view = client->GetJob(job->job_id());
      if (!view.ok() || view->state() != hxemu::v1::JOB_STATE_QUEUED) break;
      absl::SleepFor(absl::Microseconds(200));
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto cancelled = client->CancelJob(job->job_id());
    auto done = client->WaitJob(job->job_id(), absl::Seconds(60));
    const auto t1 = std::chrono::steady_clock::now();
    if (cancelled.ok() && done.ok() &&
        done->state() == hxemu::v1::JOB_STATE_CANCELLED) {
      latencies.push_back(
          std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  }
  return latencies;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int users = absl::GetFlag(FLAGS_users);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const double rate = absl::GetFlag(FLAGS_rate);

  hxemu::server::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.num_chips = absl::GetFlag(FLAGS_chips);
  auto server = hxemu::server::Server::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "cannot start server: %s\n",
                 server.status().ToString().c_str());
    return 1;
  }
  const std::string address = (*server)->address();
  const hxemu::v1::Experiment experiment = SeedExperimentOne();
  int errors = 0;

  const PhaseResult closed =
      RunPhase(address, users, seconds, absl::ZeroDuration(), experiment);
  Print("closed loop", users, options.num_chips, closed);
  errors += closed.errors;
  if (rate > 0) {
    const PhaseResult open = RunPhase(address, users, seconds,
                                      absl::Seconds(users / rate), experiment);
    Print(absl::StrCat("open loop at ", rate, " jobs/s").c_str(), users,
          options.num_chips, open);
    errors += open.errors;
  }
  if (const int n = absl::GetFlag(FLAGS_cancels); n > 0) {
    const std::vector<double> cancel = CancelLatencies(address, n);
    std::printf(
        "server_load_bench cancel: %zu running jobs cancelled, CancelJob -> "
        "terminal p50 %.2f ms, max %.2f ms\n",
        cancel.size(), Percentile(cancel, 0.5),
        cancel.empty() ? 0.0 : *std::max_element(cancel.begin(), cancel.end()));
  }
  (*server)->Shutdown(absl::Seconds(1));
  return errors == 0 ? 0 : 1;
}
