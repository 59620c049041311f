// File: hxemu/server/server.h
//
// The hxemu gRPC server: the ExperimentService over a scheduler and a pool of
// emulated chips, plus the standard health and reflection services.
// hxemu-server (server/src/main.cc) is a thin wrapper; tests start the same
// server in-process on a free loopback port.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hxemu/emulator/chip.h"

namespace hxemu::server {

struct ServerOptions {
  // Where to listen, e.g. "127.0.0.1:50051"; port 0 picks a free port.
  std::string listen_address = "127.0.0.1:50051";
  // Number of emulated chips (ids 0..num_chips-1), one worker thread each.
  int num_chips = 1;
  // Most jobs waiting in the queue over all users, and per user.
  int max_queued_jobs = 10000;
  int max_queued_jobs_per_user = 1000;
  // Results are kept this long after the job ended, and within this many
  // bytes over all jobs (oldest evicted first).
  absl::Duration result_ttl = absl::Hours(24);
  int64_t max_result_bytes = int64_t{1} << 30;
  // Largest request message the server accepts [bytes].
  int max_request_bytes = 64 * 1024 * 1024;
  // Where to serve Prometheus metrics (GET /metrics), e.g. "127.0.0.1:9464";
  // port 0 picks a free port; empty = no metrics endpoint.
  std::string metrics_address;
  // Per-job limits, checked at the API edge.
  emulator::ExperimentLimits limits;
  // Fairness (scheduler::Options): jobs per round-robin turn by user
  // (default 1), a minimum turn length (zero = one job per turn while others
  // wait) and the half-life of the usage that orders newcomers.
  absl::flat_hash_map<std::string, int> user_weights;
  absl::Duration user_time_slice = absl::ZeroDuration();
  absl::Duration usage_half_life = absl::Hours(1);
  // Terminal job records (and request ids) are kept this long after the job
  // ended (at least result_ttl), and at most this many.
  absl::Duration job_record_ttl = absl::Hours(7 * 24);
  int64_t max_job_records = 1000000;
  // Token authentication: when not empty, every call must carry the
  // metadata "authorization: Bearer <token>" with a token of this map, and
  // runs as the token's user (UNAUTHENTICATED otherwise; the hxemu-user
  // metadata is then ignored). Empty = no authentication, the user is named
  // by "hxemu-user".
  absl::flat_hash_map<std::string, std::string> auth_tokens;
  // Calibrations (GetCalibration, Experiment.initial_config): compute every
  // chip's default calibration in the background at start (hxemu-server
  // does; off by default so that in-process test servers stay idle), and
  // where to cache calibrations on disk (empty = memory only; an unwritable
  // directory is reported and then ignored).
  bool calibrate_at_start = false;
  std::string calibration_cache_dir;
  // Circuits a calibration covers; empty = all 512 (tests use a few).
  std::vector<uint32_t> calibration_circuits;
  // Durable job state (scheduler/job_store.h): every accepted job (before
  // SubmitJob answers) and every state change and result is stored in this
  // directory; a server started on the same directory restores them (queued
  // and running jobs run again, finished ones keep state and result). Empty =
  // in memory only: a restart forgets every job.
  std::string state_dir;
  // TLS: PEM files of the server's certificate chain and private key; both
  // set = serve TLS only, both empty = insecure (plaintext). One without the
  // other is INVALID_ARGUMENT.
  std::string tls_cert_file;
  std::string tls_key_file;
};

// Reads a token file for ServerOptions::auth_tokens: one "TOKEN USER" pair
// per line, '#' starts a comment, blank lines are ignored. INVALID_ARGUMENT
// naming the line for malformed lines, duplicate tokens or invalid user
// names; NOT_FOUND if the file cannot be read.
absl::StatusOr<absl::flat_hash_map<std::string, std::string>> ReadTokenFile(
    const std::string& path);

class Server {
 public:
  // Builds the services and starts listening. UNAVAILABLE if the address
  // cannot be bound, INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<Server>> Start(
      const ServerOptions& options);
  ~Server();  // Shuts down (as Shutdown with no grace period) if needed.
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The address actually bound, e.g. "127.0.0.1:43817".
  const std::string& address() const;
  int port() const;
  // The port of the metrics endpoint; 0 if there is none.
  int metrics_port() const;

  // Graceful shutdown: health NOT_SERVING; SubmitJob answers UNAVAILABLE;
  // queued jobs are handed back (CANCELLED, reason CANCELLED_BY_SHUTDOWN);
  // running jobs may finish until `grace` passes, then they are stopped
  // (CANCELLED_BY_SHUTDOWN). Meanwhile other calls (GetJob, WaitJob,
  // GetResult, ...) keep working. Then the server stops accepting calls and
  // gives running calls the rest of `grace` (at least 100 ms) before
  // cancelling them. Idempotent.
  void Shutdown(absl::Duration grace);
  // Blocks until Shutdown has completed.
  void Wait();

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The neuron parameter table as a JSON array (hxemu-server
// --print_parameter_table; the Python client reads it).
std::string NeuronParameterTableJson();

}  // namespace hxemu::server
