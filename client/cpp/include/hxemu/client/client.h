// File: hxemu/client/client.h
//
// A thin C++ client of the hxemu.v1.ExperimentService. Every call returns
// absl::Status/StatusOr carrying the server's code and field message.
//
//   auto client = hxemu::client::Client::Connect({.address =
//   "127.0.0.1:50051"}); auto job = (*client)->Submit(experiment); job =
//   (*client)->WaitJob(job->job_id(), absl::Seconds(60)); auto result =
//   (*client)->GetResult(job->job_id());
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hxemu/v1/service.grpc.pb.h"

namespace hxemu::client {

struct ConnectOptions {
  // host:port of the server.
  std::string address;
  // Sent as the hxemu-user metadata; empty = anonymous.
  std::string user;
  // Deadline of unary calls other than WaitJob.
  absl::Duration call_timeout = absl::Seconds(30);
};

class Client {
 public:
  // Creates the channel; does not wait for the server.
  static std::unique_ptr<Client> Connect(const ConnectOptions& options);

  // `max_wall_time`: the job's deadline from submission (infinite = none).
  absl::StatusOr<hxemu::v1::Job> Submit(
      const hxemu::v1::Experiment& experiment,
      const std::string& request_id = "",
      absl::Duration max_wall_time = absl::InfiniteDuration());
  absl::StatusOr<hxemu::v1::Job> GetJob(const std::string& job_id);
  // DEADLINE_EXCEEDED if the job is not terminal within `timeout`.
  absl::StatusOr<hxemu::v1::Job> WaitJob(const std::string& job_id,
                                         absl::Duration timeout);
  // Streams the job's updates (state, queue position, progress) to
  // `on_update` until the job is terminal; returns the terminal view.
  // DEADLINE_EXCEEDED if that takes longer than `timeout`.
  absl::StatusOr<hxemu::v1::Job> WatchJob(
      const std::string& job_id,
      const std::function<void(const hxemu::v1::Job&)>& on_update,
      absl::Duration timeout);
  absl::StatusOr<hxemu::v1::Job> CancelJob(const std::string& job_id);
  // The whole result, merged from the server's chunk stream.
  absl::StatusOr<hxemu::v1::Result> GetResult(const std::string& job_id);
  // One page of the caller's jobs, newest first.
  absl::StatusOr<hxemu::v1::ListJobsResponse> ListJobs(
      int page_size, const std::string& page_token = "");
  absl::StatusOr<hxemu::v1::ListChipsResponse> ListChips();
  absl::StatusOr<hxemu::v1::ServerInfo> GetServerInfo();

 private:
  explicit Client(const ConnectOptions& options);
  void Prepare(grpc::ClientContext* context, absl::Duration timeout) const;

  ConnectOptions options_;
  std::unique_ptr<hxemu::v1::ExperimentService::Stub> stub_;
};

// Appends one streamed chunk to `result`: pieces of the same spike train
// (population, neuron) or trace (population, neuron, observable) are
// concatenated in arrival order.
void MergeResultChunk(const hxemu::v1::Result& chunk,
                      hxemu::v1::Result* result);

}  // namespace hxemu::client
