// The hxemu.v1.ExperimentService implementation: request checks at the API
// edge, then the scheduler. Built on gRPC's callback API; no handler ever
// blocks on an emulation (WaitJob finishes from the scheduler's done
// callback, GetResult streams from a reactor).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/scheduler/scheduler.h"
#include "hxemu/v1/service.grpc.pb.h"
#include "metrics.h"

namespace hxemu::server {

// The gRPC metadata key that names the calling user.
inline constexpr char kUserMetadataKey[] = "hxemu-user";

// Splits a result into stream chunks of roughly at most `max_chunk_bytes`
// each; long traces are split into several pieces. Concatenating the pieces
// of the chunks in order gives back the result.
std::vector<hxemu::v1::ResultChunk> SplitResult(const hxemu::v1::Result& result,
                                                size_t max_chunk_bytes);

// Converts a scheduler view into the wire representation.
hxemu::v1::Job JobToProto(const scheduler::JobView& view);

class ExperimentService final
    : public hxemu::v1::ExperimentService::CallbackService {
 public:
  // `scheduler` and `metrics` must outlive the service.
  ExperimentService(scheduler::Scheduler* scheduler, ServerMetrics* metrics,
                    emulator::ExperimentLimits limits, int num_chips);

  grpc::ServerUnaryReactor* SubmitJob(
      grpc::CallbackServerContext* context,
      const hxemu::v1::SubmitJobRequest* request,
      hxemu::v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const hxemu::v1::GetJobRequest* request,
                                   hxemu::v1::Job* response) override;
  grpc::ServerUnaryReactor* WaitJob(grpc::CallbackServerContext* context,
                                    const hxemu::v1::WaitJobRequest* request,
                                    hxemu::v1::Job* response) override;
  grpc::ServerWriteReactor<hxemu::v1::Job>* WatchJob(
      grpc::CallbackServerContext* context,
      const hxemu::v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* CancelJob(
      grpc::CallbackServerContext* context,
      const hxemu::v1::CancelJobRequest* request,
      hxemu::v1::Job* response) override;
  grpc::ServerWriteReactor<hxemu::v1::ResultChunk>* GetResult(
      grpc::CallbackServerContext* context,
      const hxemu::v1::GetResultRequest* request) override;
  grpc::ServerUnaryReactor* ListJobs(
      grpc::CallbackServerContext* context,
      const hxemu::v1::ListJobsRequest* request,
      hxemu::v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* ListChips(
      grpc::CallbackServerContext* context,
      const hxemu::v1::ListChipsRequest* request,
      hxemu::v1::ListChipsResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(
      grpc::CallbackServerContext* context,
      const hxemu::v1::GetServerInfoRequest* request,
      hxemu::v1::ServerInfo* response) override;

 private:
  // The job if it exists and belongs to `user`; NOT_FOUND otherwise (the same
  // answer for "no such job" and "not yours").
  absl::StatusOr<scheduler::JobView> FindOwnJob(
      const std::string& user, const std::string& job_id) const;

  // SubmitJob without the metrics: checks, idempotency, queueing.
  absl::StatusOr<hxemu::v1::Job> Submit(
      const grpc::CallbackServerContext& context,
      const hxemu::v1::SubmitJobRequest& request);

  scheduler::Scheduler* const scheduler_;
  ServerMetrics* const metrics_;
  const emulator::ExperimentLimits limits_;
  const int num_chips_;

  // Idempotent submits: (user, request_id) -> the first job and a fingerprint
  // of its experiment (a different experiment under the same id is refused).
  struct SubmittedRequest {
    std::string job_id;
    uint64_t experiment_fingerprint;
  };
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, SubmittedRequest> requests_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace hxemu::server
