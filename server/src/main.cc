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
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "hxemu/emulator/chip.h"
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
ABSL_FLAG(int, max_request_bytes, 64 * 1024 * 1024,
          "Largest request message (payload) accepted [bytes]");
ABSL_FLAG(int64_t, max_madc_samples, 64 * 1024 * 1024,
          "Most MADC samples a job may record over all traces");
ABSL_FLAG(int64_t, max_recorded_spikes, 64 * 1024 * 1024,
          "Most output spikes a job may record");
ABSL_FLAG(int64_t, max_input_spikes, 16 * 1024 * 1024,
          "Most input spike times over all spike sources of a job");
ABSL_FLAG(int64_t, max_source_neurons, 1024 * 1024,
          "Most spike-source neurons of a job");
ABSL_FLAG(double, user_time_slice_ms, 0,
          "Minimum turn of a user before the next user's job when others "
          "wait [ms wall] (0 = switch after every job)");
ABSL_FLAG(std::vector<std::string>, user_weights, {},
          "Jobs per round-robin turn by user, e.g. alice=2,bob=3 (others 1)");
ABSL_FLAG(double, usage_half_life_s, 3600,
          "Half-life of the per-user usage that orders users waiting for "
          "their first turn [s] (0 = no decay)");
ABSL_FLAG(double, job_record_ttl_s, 7 * 24 * 3600,
          "Seconds a finished job's record (and request_id) is kept");
ABSL_FLAG(int64_t, max_job_records, 1000000,
          "Most job records kept (oldest finished ones forgotten first)");
ABSL_FLAG(std::string, auth_token_file, "",
          "File of 'TOKEN USER' lines; when set, every call needs "
          "'authorization: Bearer TOKEN' (empty = no authentication)");
ABSL_FLAG(int, shutdown_grace_s, 10,
          "On SIGTERM: seconds running calls get to finish");
ABSL_FLAG(bool, calibrate_at_start, true,
          "Compute every chip's default calibration in the background at "
          "start (chips run raw-parameter jobs meanwhile)");
ABSL_FLAG(std::string, calibration_cache_dir, "",
          "Directory of the on-disk calibration cache (empty = "
          "$XDG_CACHE_HOME/hxemu/calibrations, else "
          "~/.cache/hxemu/calibrations; 'none' = memory only)");
ABSL_FLAG(std::string, state_dir, "",
          "Directory of the durable job state: accepted jobs, their states "
          "and results survive a restart (or crash) of the server on the "
          "same directory (empty = in memory only)");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain of the server; with --tls_key_file serves "
          "TLS only (both empty = insecure)");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of the server");
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

  // Jobs allocate tens of MiB each: keep freed memory for the next one
  // (before any thread starts).
  if (!hxemu::emulator::RetainFreedMemoryForReuse()) {
    std::cerr << "note: the allocator keeps its default trimming\n";
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
  options.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  options.limits.max_madc_samples = absl::GetFlag(FLAGS_max_madc_samples);
  options.limits.max_recorded_spikes = absl::GetFlag(FLAGS_max_recorded_spikes);
  options.limits.max_input_spikes = absl::GetFlag(FLAGS_max_input_spikes);
  options.limits.max_source_neurons = absl::GetFlag(FLAGS_max_source_neurons);
  options.user_time_slice =
      absl::Milliseconds(absl::GetFlag(FLAGS_user_time_slice_ms));
  options.usage_half_life =
      absl::Seconds(absl::GetFlag(FLAGS_usage_half_life_s));
  options.job_record_ttl = absl::Seconds(absl::GetFlag(FLAGS_job_record_ttl_s));
  options.max_job_records = absl::GetFlag(FLAGS_max_job_records);
  for (const std::string& entry : absl::GetFlag(FLAGS_user_weights)) {
    std::pair<std::string, std::string> kv = absl::StrSplit(entry, '=');
    int weight = 0;
    if (kv.first.empty() || !absl::SimpleAtoi(kv.second, &weight)) {
      std::cerr << "hxemu-server: --user_weights: '" << entry
                << "' is not USER=WEIGHT\n";
      return 1;
    }
    options.user_weights[kv.first] = weight;
  }
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file);
      !path.empty()) {
    auto tokens = hxemu::server::ReadTokenFile(path);
    if (!tokens.ok()) {
      std::cerr << "hxemu-server: " << tokens.status().message() << "\n";
      return 1;
    }
    options.auth_tokens = *std::move(tokens);
  }

  options.calibrate_at_start = absl::GetFlag(FLAGS_calibrate_at_start);
  options.calibration_cache_dir = absl::GetFlag(FLAGS_calibration_cache_dir);
  if (options.calibration_cache_dir == "none") {
    options.calibration_cache_dir.clear();
  } else if (options.calibration_cache_dir.empty()) {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    if (xdg != nullptr && *xdg != '\0') {
      options.calibration_cache_dir = std::string(xdg) + "/hxemu/calibrations";
    } else if (home != nullptr && *home != '\0') {
      options.calibration_cache_dir =
          std::string(home) + "/.cache/hxemu/calibrations";
    }
  }

  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);

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
  std::cerr << "hxemu-server: " << options.num_chips << " emulated chip(s), "
            << (options.tls_cert_file.empty() ? "insecure" : "TLS") << ", "
            << (options.state_dir.empty() ? std::string("jobs in memory only")
                                          : "jobs kept in " + options.state_dir)
            << "; SIGTERM to stop\n";

  int received = 0;
  sigwait(&signals, &received);
  std::cerr << "hxemu-server: signal " << received << ", shutting down\n";
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s)));
  std::cerr << "hxemu-server: stopped\n";
  return 0;
}
