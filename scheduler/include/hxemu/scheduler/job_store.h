// File: hxemu/scheduler/job_store.h
//
// Durable job state for the scheduler (Options::store). With a store, the
// scheduler records every accepted job before Submit returns, and every
// state change after it; a new scheduler over the same store restores them:
//   - QUEUED jobs are queued again, in their original (submission) order;
//   - RUNNING jobs are queued again ("re-queued after server restart"); they
//     run from the start (a run is deterministic for its seed and chip);
//   - terminal jobs keep their state, their request id and (until the TTL or
//     the byte budget evicts it) their result.
// So a job accepted once is never lost, whatever way the process ends
// (clean shutdown, SIGKILL, power loss after an fsync).
//
// The store keeps three kinds of entries per job, by job id: the record
// (JobRecord without the payloads; small, rewritten at every transition),
// the experiment (written once at submission, dropped when the job ends) and
// the result (written once when the job succeeded, dropped when evicted).
//
// Thread safety: implementations must allow concurrent calls for different
// entries (the scheduler writes records under its mutex, but a new job's
// experiment before taking it and a result on the chip's worker thread); the
// scheduler never writes the same entry from two threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "hxemu/scheduler/scheduler.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::scheduler {

// One job as persisted. The fields mirror the scheduler's job (scheduler.h:
// JobView, SubmitOptions).
struct JobRecord {
  std::string id;
  std::string user;
  // Submission order over all users (restored queue order, List tokens).
  uint64_t seq = 0;
  std::string request_id;
  uint64_t request_fingerprint = 0;
  uint64_t config_key = 0;
  std::optional<uint32_t> pinned_chip;  // experiment.chip_id, if set
  double runtime_ms = 0;                // [ms hardware]
  absl::Time submit_time = absl::InfinitePast();
  absl::Duration max_wall_time = absl::InfiniteDuration();
  JobState state = JobState::kQueued;
  Reason reason = Reason::kWaitingForChip;
  std::string state_reason;
  absl::Status error;
  std::optional<uint32_t> chip_id;
  absl::Time start_time = absl::InfinitePast();
  absl::Time end_time = absl::InfinitePast();
  int64_t result_bytes = 0;
  // Why the result was evicted; empty if it was not (or there is none).
  std::string result_evicted_reason;

  // Filled by Load only (Put* take the payloads separately): the experiment
  // of a QUEUED or RUNNING job, the result of a SUCCEEDED job not evicted.
  std::shared_ptr<const hxemu::v1::Experiment> experiment;
  std::shared_ptr<const hxemu::v1::Result> result;
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Every job whose record is stored, in no particular order, with its
  // payloads. Damaged entries (partial writes, corruption, a QUEUED/RUNNING
  // record without its experiment) are skipped, each with a line on stderr,
  // and removed; Load itself never fails.
  virtual std::vector<JobRecord> Load() = 0;

  // Each Put is durable when it returns OK (written, fsync'd) and atomic:
  // after a crash the entry is either the old or the new one.
  virtual absl::Status PutRecord(const JobRecord& record) = 0;
  virtual absl::Status PutExperiment(const std::string& job_id,
                                     const hxemu::v1::Experiment& exp) = 0;
  virtual absl::Status PutResult(const std::string& job_id,
                                 const hxemu::v1::Result& result) = 0;
  // Removing absent entries is OK.
  virtual absl::Status RemoveExperiment(const std::string& job_id) = 0;
  virtual absl::Status RemoveResult(const std::string& job_id) = 0;
  // Removes everything of the job.
  virtual absl::Status Remove(const std::string& job_id) = 0;
};

// A JobStore in a directory: files <id>.job (record), <id>.exp (experiment),
// <id>.res (result). Each is written to a temporary file, fsync'd, renamed
// into place and the directory fsync'd; a magic, a length and an FNV-1a
// checksum detect partial or corrupt files.
class FileJobStore final : public JobStore {
 public:
  // Creates `dir` (and its parent) if needed and checks it is writable;
  // INVALID_ARGUMENT naming state_dir otherwise.
  static absl::StatusOr<std::unique_ptr<FileJobStore>> Open(
      const std::string& dir);
  ~FileJobStore() override;

  std::vector<JobRecord> Load() override;
  absl::Status PutRecord(const JobRecord& record) override;
  absl::Status PutExperiment(const std::string& job_id,
                             const hxemu::v1::Experiment& exp) override;
  absl::Status PutResult(const std::string& job_id,
                         const hxemu::v1::Result& result) override;
  absl::Status RemoveExperiment(const std::string& job_id) override;
  absl::Status RemoveResult(const std::string& job_id) override;
  absl::Status Remove(const std::string& job_id) override;

  const std::string& dir() const { return dir_; }

 private:
  FileJobStore(std::string dir, int dir_fd);
  // Writes `kind`-tagged `payload` to dir/name atomically and durably.
  absl::Status WriteFile(const std::string& name, uint32_t kind,
                         const std::string& payload);
  absl::Status RemoveFile(const std::string& name);

  const std::string dir_;
  const int dir_fd_;  // for fsync after renames
};

// Serialization of a record (without payloads), exposed for tests.
std::string EncodeJobRecord(const JobRecord& record);
absl::StatusOr<JobRecord> DecodeJobRecord(absl::string_view bytes);

}  // namespace hxemu::scheduler
