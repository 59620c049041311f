// File: hxemu/scheduler/scheduler.h
//
// The microscheduler: accepts experiment jobs from many users, keeps them in
// a queue and runs them on a pool of emulated chips, one worker thread per
// chip. It knows nothing of gRPC: the server maps requests onto this API.
//
// Job life cycle:
//   QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
//   QUEUED -> CANCELLED
// Every job reaches exactly one terminal state; none is lost.
//
// Thread safety: all public methods may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::scheduler {

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };

bool IsTerminal(JobState state);
const char* JobStateName(JobState state);

// A consistent snapshot of one job.
struct JobView {
  std::string id;
  std::string user;
  JobState state = JobState::kQueued;
  // Why the job is in its state, e.g. "queued: 2 jobs ahead", "cancelled by
  // user".
  std::string state_reason;
  // The failure, when state is kFailed; OK otherwise.
  absl::Status error;
  double progress_ms = 0;           // emulated time done [ms hardware]
  double runtime_ms = 0;            // emulated time in total [ms hardware]
  std::optional<uint32_t> chip_id;  // set once running
  uint32_t queue_position = 0;      // jobs ahead (queued only)
  absl::Time submit_time = absl::InfinitePast();
  absl::Time start_time = absl::InfinitePast();  // InfinitePast = not yet
  absl::Time end_time = absl::InfinitePast();
};

// What a chip worker gets to run one job.
struct WorkItem {
  const hxemu::v1::Experiment& experiment;
  // Set when the job is cancelled while running; the runner should return
  // CANCELLED promptly.
  const std::atomic<bool>& cancel_requested;
  // Reports emulated time done [ms hardware].
  std::function<void(double done_ms)> report_progress;
};

// Runs one job on one chip. Called on that chip's worker thread only.
using ChipRunner =
    std::function<absl::StatusOr<hxemu::v1::Result>(const WorkItem& item)>;

struct Options {
  // Ids of the chips in the pool; one worker thread each. Duplicates are
  // ignored. With no chips, Submit fails with FAILED_PRECONDITION.
  std::vector<uint32_t> chip_ids = {0};
  // Most jobs queued (not yet running) over all users.
  int max_queued_jobs = 10000;
};

class Scheduler {
 public:
  // `make_runner(chip_id)` is called once per chip, on construction.
  Scheduler(Options options,
            const std::function<ChipRunner(uint32_t chip_id)>& make_runner);
  // Stops accepting jobs, cancels the queued ones, asks the running ones to
  // stop (their cancel flag), waits for their runners and joins the workers.
  // On return every job is terminal and every done callback that was not
  // removed has run. No other call may be in progress or start meanwhile.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a job for `user`. If the experiment names a chip id, the job runs
  // on that chip (INVALID_ARGUMENT if the pool has no such chip). Returns the
  // new job's id. RESOURCE_EXHAUSTED when the queue is full.
  absl::StatusOr<std::string> Submit(
      std::string user,
      std::shared_ptr<const hxemu::v1::Experiment> experiment);

  // NOT_FOUND for unknown ids.
  absl::StatusOr<JobView> Get(const std::string& job_id) const;

  // Blocks until the job is terminal or `deadline` passes; returns the view
  // either way (check its state).
  absl::StatusOr<JobView> Wait(const std::string& job_id,
                               absl::Time deadline) const;

  // Calls `callback` once, with the job's terminal view, as soon as the job is
  // terminal (at once, on this thread, if it already is; otherwise on the
  // thread that made it terminal: a chip worker, a thread calling Cancel, or
  // the destructor's). It runs without the scheduler's lock held, after
  // Wait() can already see the terminal state. Returns a handle for
  // RemoveDoneCallback; NOT_FOUND for unknown ids. The callback must not
  // block, must not throw (std::terminate) and must not call back into the
  // scheduler.
  absl::StatusOr<uint64_t> AddDoneCallback(
      const std::string& job_id, std::function<void(const JobView&)> callback);
  // Removes a callback that has not fired yet; harmless if it has. Returns
  // true if the callback was removed and so will never run; false if it has
  // run (or the handle is unknown). When this returns (either way), the
  // callback is not running on another thread and will not run any more: if
  // it is running right now, this waits for it to return.
  bool RemoveDoneCallback(const std::string& job_id, uint64_t handle);

  // Cancels a queued job (removed from the queue) or a running one (its
  // runner is asked to stop). Terminal jobs are left as they are. Returns the
  // view after the request; NOT_FOUND for unknown ids.
  absl::StatusOr<JobView> Cancel(const std::string& job_id);

  // The result of a SUCCEEDED job; FAILED_PRECONDITION if the job is not
  // (yet) succeeded, NOT_FOUND for unknown ids.
  absl::StatusOr<std::shared_ptr<const hxemu::v1::Result>> GetResult(
      const std::string& job_id) const;

  int num_chips() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hxemu::scheduler
