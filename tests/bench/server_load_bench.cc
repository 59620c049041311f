// Load benchmark of the real server over loopback (issue: microscheduler and
// gRPC service). 50 users, each a client thread with its own channel, submit
// the seed tutorial's first experiment (one silent neuron, 0.2 ms, membrane
// recorded) back to back for a fixed wall time: Submit -> WaitJob ->
// GetResult. Prints jobs/s, the round-trip latency percentiles and Jain's
// fairness index over the users' completed jobs.
//
//   build/tests/bench/server_load_bench [--users=50] [--seconds=5] [--chips=2]
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

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int users = absl::GetFlag(FLAGS_users);
  const double seconds = absl::GetFlag(FLAGS_seconds);

  hxemu::server::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.num_chips = absl::GetFlag(FLAGS_chips);
  auto server = hxemu::server::Server::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "cannot start server: %s\n",
                 server.status().ToString().c_str());
    return 1;
  }
  const hxemu::v1::Experiment experiment = SeedExperimentOne();

  std::vector<std::vector<double>> latencies_ms(users);
  std::vector<int> errors(users, 0);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (int u = 0; u < users; ++u) {
    threads.emplace_back([&, u] {
      auto client = hxemu::client::Client::Connect(
          {.address = (*server)->address(), .user = absl::StrCat("user", u)});
      while (!stop.load()) {
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
          latencies_ms[u].push_back(
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
  const double elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  (*server)->Shutdown(absl::Seconds(1));

  std::vector<double> all;
  double sum = 0, sum_sq = 0;
  int total_errors = 0;
  for (int u = 0; u < users; ++u) {
    all.insert(all.end(), latencies_ms[u].begin(), latencies_ms[u].end());
    const double n = static_cast<double>(latencies_ms[u].size());
    sum += n;
    sum_sq += n * n;
    total_errors += errors[u];
  }
  const double jain = sum_sq > 0 ? sum * sum / (users * sum_sq) : 0;
  std::printf(
      "server_load_bench: %d users, %d chips, %.1f s: %zu jobs (%d errors), "
      "%.0f jobs/s, round trip p50 %.2f ms, p99 %.2f ms, Jain fairness %.4f\n",
      users, options.num_chips, elapsed_s, all.size(), total_errors,
      static_cast<double>(all.size()) / elapsed_s, Percentile(all, 0.5),
      Percentile(all, 0.99), jain);
  return total_errors == 0 ? 0 : 1;
}
