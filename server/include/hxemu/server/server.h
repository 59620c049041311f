// File: hxemu/server/server.h
//
// The hxemu gRPC server: the ExperimentService over a scheduler and a pool of
// emulated chips, plus the standard health and reflection services.
// hxemu-server (server/src/main.cc) is a thin wrapper; tests start the same
// server in-process on a free loopback port.
#pragma once

#include <memory>
#include <string>

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
};

class Server {
 public:
  // Builds the services and starts listening. UNAVAILABLE if the address
  // cannot be bound, INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<Server>> Start(
      const ServerOptions& options);
  ~Server();  // Shuts down (as Shutdown with a short grace period) if needed.
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The address actually bound, e.g. "127.0.0.1:43817".
  const std::string& address() const;
  int port() const;
  // The port of the metrics endpoint; 0 if there is none.
  int metrics_port() const;

  // Graceful shutdown: health NOT_SERVING, stop accepting, let running calls
  // finish until `grace` passes, then cancel them; stop the scheduler
  // (running jobs finish, queued jobs are cancelled). Idempotent.
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
