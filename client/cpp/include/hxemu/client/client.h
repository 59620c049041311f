// File: hxemu/client/client.h
//
// The C++ client of the hxemu.v1.ExperimentService. Every call returns
// absl::Status/StatusOr carrying the server's code and its message, which
// names the offending field (e.g. "experiment.populations[0].size: 0 is out
// of range, must be >= 1").
//
//   auto client = hxemu::client::Client::Connect({.address = "127.0.0.1:50051",
//                                                 .user = "alice"});
//   ExperimentBuilder b;                          // experiment_builder.h
//   b.AddHxNeurons(1, "silent").Set("leak_v_leak", 700).Record(kV);
//   b.RuntimeMs(0.2).Seed(1);
//   absl::StatusOr<RunResult> result = client->Run(*b.Build());  // result.h
//
// A Client is thread-safe: calls may be made from several threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hxemu/client/experiment_builder.h"
#include "hxemu/client/result.h"
#include "hxemu/v1/service.grpc.pb.h"

namespace hxemu::client {

// Transport security. Disabled by default (plaintext, for loopback and trusted
// networks). All certificates and keys are PEM *contents*, not file names.
struct TlsOptions {
  bool enabled = false;
  // CA certificates the server's certificate must chain to; empty = the
  // system's (gRPC's default roots).
  std::string root_certs_pem = "";
  // Client certificate chain and private key for mutual TLS; both or neither.
  std::string client_cert_pem = "";
  std::string client_key_pem = "";
  // Expected server name in its certificate, if it differs from the host of
  // `address` (e.g. connecting by IP to a certificate issued for a name).
  std::string server_name_override = "";
};

// Every member has a default initializer, so designated initializers may
// name any subset ({.address = ..., .token = ...}) without
// -Wmissing-field-initializers.
struct ConnectOptions {
  // host:port of the server.
  std::string address = "";
  // Sent as the hxemu-user metadata; empty = anonymous.
  std::string user = "";
  // Access token, sent as "authorization: Bearer <token>" metadata on every
  // call; empty = none. (Servers that do not check tokens ignore it.)
  std::string token = "";
  TlsOptions tls = {};
  // Deadline of unary calls other than WaitJob.
  absl::Duration call_timeout = absl::Seconds(30);
  // Deadline of GetResult, a stream of up to hundreds of MB (long traces).
  absl::Duration result_timeout = absl::Minutes(10);
};

// Called with every update of a watched job (state, queue position, reason,
// progress_ms of runtime_ms).
using JobCallback = std::function<void(const hxemu::v1::Job&)>;

// True for SUCCEEDED, FAILED, CANCELLED and EXPIRED.
bool IsTerminal(hxemu::v1::JobState state);

class Client {
 public:
  // Creates the channel; does not wait for the server (an unreachable server
  // shows up as UNAVAILABLE on the first call).
  static std::unique_ptr<Client> Connect(const ConnectOptions& options);

  const ConnectOptions& options() const { return options_; }

  // `request_id`: makes retries idempotent (same user + id + experiment
  // returns the first job); empty = none.
  // `max_wall_time`: the job's deadline from submission (infinite = none).
  absl::StatusOr<hxemu::v1::Job> Submit(
      const hxemu::v1::Experiment& experiment,
      const std::string& request_id = "",
      absl::Duration max_wall_time = absl::InfiniteDuration());
  absl::StatusOr<hxemu::v1::Job> GetJob(const std::string& job_id);
  // Blocks until the job is terminal and returns it; DEADLINE_EXCEEDED if it
  // is not terminal within `timeout` (the job keeps running).
  absl::StatusOr<hxemu::v1::Job> WaitJob(const std::string& job_id,
                                         absl::Duration timeout);
  // Like WaitJob, but streams the job's updates to `on_update` (may be empty)
  // until the job is terminal; returns the terminal view.
  absl::StatusOr<hxemu::v1::Job> WatchJob(const std::string& job_id,
                                          const JobCallback& on_update,
                                          absl::Duration timeout);
  // Cancels a queued or running job; a terminal job is returned unchanged.
  absl::StatusOr<hxemu::v1::Job> CancelJob(const std::string& job_id);
  // The whole result of a SUCCEEDED job, merged from the server's chunk
  // stream (FAILED_PRECONDITION if the job has not succeeded).
  absl::StatusOr<hxemu::v1::Result> GetResult(const std::string& job_id);
  // The same as plain C++ types.
  absl::StatusOr<RunResult> FetchResult(const std::string& job_id);
  // Submit, watch (updates to `on_update`), fetch: one call for scripts.
  // A job that ends other than SUCCEEDED gives its error (FAILED: the
  // server's code and message), CANCELLED or DEADLINE_EXCEEDED (expired).
  absl::StatusOr<RunResult> Run(
      const hxemu::v1::Experiment& experiment,
      const JobCallback& on_update = nullptr,
      absl::Duration timeout = absl::InfiniteDuration());
  // One page of the caller's jobs, newest first (page_size 1..1000, 0 = 100).
  absl::StatusOr<hxemu::v1::ListJobsResponse> ListJobs(
      int page_size, const std::string& page_token = "");
  absl::StatusOr<hxemu::v1::ListChipsResponse> ListChips();
  absl::StatusOr<hxemu::v1::ServerInfo> GetServerInfo();
  // The calibration of `chip_id` (unset: the server picks the lowest chip
  // with one ready, else chip 0) for `targets` (unset fields: the calix
  // defaults), to pass as Experiment.initial_config
  // (ExperimentBuilder::InitialConfig). The server computes it on the first
  // request (seconds; the call waits up to `timeout`), then serves it from
  // its cache.
  absl::StatusOr<hxemu::v1::Calibration> GetCalibration(
      std::optional<uint32_t> chip_id = std::nullopt,
      const hxemu::v1::CalibrationTargets& targets = {},
      absl::Duration timeout = absl::Hours(1));

 private:
  explicit Client(const ConnectOptions& options);
  void Prepare(grpc::ClientContext* context, absl::Duration timeout) const;
  absl::Status FromGrpc(const grpc::Status& status) const;

  ConnectOptions options_;
  std::unique_ptr<hxemu::v1::ExperimentService::Stub> stub_;
};

// The status a job that ended other than SUCCEEDED stands for (OK for a
// SUCCEEDED job): FAILED gives the job's error code and message, CANCELLED
// gives CANCELLED, EXPIRED gives DEADLINE_EXCEEDED; the message starts with
// the job id.
absl::Status JobOutcome(const hxemu::v1::Job& job);

// Appends one streamed chunk to `result`: pieces of the same spike train
// (population, neuron) or trace (population, neuron, observable) are
// concatenated in arrival order, CADC reads appended; the header fields
// (chip, runtime, labels) come from the first chunk, the CADC circuits from
// the first chunk that has them.
void MergeResultChunk(const hxemu::v1::Result& chunk,
                      hxemu::v1::Result* result);

}  // namespace hxemu::client
