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
#include "calibration_store.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/scheduler/scheduler.h"
#include "hxemu/server/server.h"
#include "hxemu/v1/service.grpc.pb.h"
#include "metrics.h"

namespace hxemu::server {

// The gRPC metadata key that names the calling user (without auth).
inline constexpr char kUserMetadataKey[] = "hxemu-user";
// With auth: "authorization: Bearer <token>".
inline constexpr char kAuthMetadataKey[] = "authorization";
// GetResult chunks stay well below gRPC's default 4 MiB message limit.
inline constexpr size_t kMaxResultChunkBytes = 1024 * 1024;

// 1..64 characters of A-Z a-z 0-9 . _ - @.
bool IsValidUserName(std::string_view user);

// The chip configuration a job needs, as a fingerprint: everything that is
// written to the chip before the run (populations without their spike
// times, projections, initial_config), not the stimulus, recording, seed or
// runtime. Equal keys = no reconfiguration between two jobs. Never 0.
uint64_t ConfigKey(const hxemu::v1::Experiment& experiment);

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
                    const ServerOptions& options);

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
  grpc::ServerUnaryReactor* GetCalibration(
      grpc::CallbackServerContext* context,
      const hxemu::v1::GetCalibrationRequest* request,
      hxemu::v1::Calibration* response) override;
  // Serves GetCalibration and the calibration state in ListChips; without
  // one GetCalibration answers UNAVAILABLE. Must outlive the service.
  void set_calibration_store(CalibrationStore* store) { calibrations_ = store; }
  grpc::ServerUnaryReactor* GetServerInfo(
      grpc::CallbackServerContext* context,
      const hxemu::v1::GetServerInfoRequest* request,
      hxemu::v1::ServerInfo* response) override;

 private:
  // The calling user: from the bearer token with auth, else from the
  // hxemu-user metadata ("anonymous" when absent).
  absl::StatusOr<std::string> UserOf(
      const grpc::CallbackServerContext& context) const;

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
  const ServerOptions options_;
  CalibrationStore* calibrations_ = nullptr;
};

}  // namespace hxemu::server
