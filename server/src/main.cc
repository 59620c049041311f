// hxemu-server: serves emulated BrainScaleS-2 chips over gRPC.
//
//   hxemu-server --listen=127.0.0.1:50051 --num_chips=2
//
// Prints "hxemu-server listening on HOST:PORT" once serving (with the real
// port when --listen asks for port 0). SIGTERM or SIGINT shut it down
// gracefully.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "hxemu/server/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "Address to serve on (host:port; port 0 picks a free one)");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus metrics at http://ADDRESS/metrics (host:port; "
          "empty = off)");
ABSL_FLAG(int, num_chips, 0,
          "Number of emulated chips, one worker thread each (0 = one per CPU "
          "core)");
ABSL_FLAG(int, max_queued_jobs, 10000, "Most jobs waiting over all users");
ABSL_FLAG(int, max_queued_jobs_per_user, 1000, "Most jobs waiting per user");
ABSL_FLAG(double, result_ttl_s, 24 * 3600,
          "Seconds a result is kept after its job ended");
ABSL_FLAG(int64_t, max_result_bytes, int64_t{1} << 30,
          "Result bytes kept over all jobs (oldest evicted first)");
ABSL_FLAG(double, max_runtime_ms, 10000.0,
          "Longest runtime a job may ask for [ms hardware]");
ABSL_FLAG(int, shutdown_grace_s, 10,
          "On SIGTERM: seconds running calls get to finish");
ABSL_FLAG(bool, print_parameter_table, false,
          "Print the neuron parameter table as JSON and exit");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves emulated BrainScaleS-2 chips over gRPC (hxemu.v1).");
  absl::ParseCommandLine(argc, argv);

  if (absl::GetFlag(FLAGS_print_parameter_table)) {
    std::cout << hxemu::server::NeuronParameterTableJson();
    return 0;
  }

  // Block the shutdown signals in every thread; main() waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  hxemu::server::ServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.num_chips = absl::GetFlag(FLAGS_num_chips);
  if (options.num_chips == 0) {
    options.num_chips =
        static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  options.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_listen);
  options.max_queued_jobs_per_user =
      absl::GetFlag(FLAGS_max_queued_jobs_per_user);
  options.result_ttl = absl::Seconds(absl::GetFlag(FLAGS_result_ttl_s));
  options.max_result_bytes = absl::GetFlag(FLAGS_max_result_bytes);
  options.limits.max_runtime_ms = absl::GetFlag(FLAGS_max_runtime_ms);

  auto server = hxemu::server::Server::Start(options);
  if (!server.ok()) {
    std::cerr << "hxemu-server: " << server.status().message() << "\n";
    return 1;
  }
  std::cout << "hxemu-server listening on " << (*server)->address()
            << std::endl;
  if ((*server)->metrics_port() != 0) {
    std::cerr << "hxemu-server: metrics on port " << (*server)->metrics_port()
              << " (/metrics)\n";
  }
  std::cerr << "hxemu-server: " << options.num_chips
            << " emulated chip(s); SIGTERM to stop\n";

  int received = 0;
  sigwait(&signals, &received);
  std::cerr << "hxemu-server: signal " << received << ", shutting down\n";
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s)));
  std::cerr << "hxemu-server: stopped\n";
  return 0;
}
