// File: hxemu/scheduler/scheduler.h
//
// The microscheduler: accepts experiment jobs from many users, keeps them in
// per-user queues served round-robin (see Options::user_weights) and runs
// them on a pool of emulated chips, one worker thread per chip. It knows
// nothing of gRPC: the server maps requests onto this API.
//
// Job life cycle:
//   QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
//   QUEUED -> CANCELLED | EXPIRED (its deadline passed before it started)
// A running job whose deadline passes is cancelled ("deadline exceeded").
// Every job reaches exactly one terminal state; none is lost.
//
// Retention: job records are kept; the result of a SUCCEEDED job is kept for
// Options::result_ttl and within Options::max_result_bytes, then evicted
// (JobView::result_evicted, GetResult says so).
//
// Time: all timestamps, deadlines and TTLs come from Options::clock. Deadline
// and TTL expiry happen on a housekeeping thread and, lazily, at the start of
// most calls (so a test advancing a FakeClock sees them at its next call).
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

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hxemu/scheduler/clock.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::scheduler {

enum class JobState {
  kQueued,
  kRunning,
  kSucceeded,
  kFailed,
  kCancelled,
  kExpired,  // its deadline passed while it was queued
};

bool IsTerminal(JobState state);
const char* JobStateName(JobState state);

// A consistent snapshot of one job.
struct JobView {
  std::string id;
  std::string user;
  JobState state = JobState::kQueued;
  // Why the job is in its state, e.g. "queued: 2 jobs ahead", "queued: 3
  // jobs ahead (1 of yours, 2 of other users), waiting for chip 2",
  // "cancelled by user".
  std::string state_reason;
  // The failure, when state is kFailed; OK otherwise.
  absl::Status error;
  double progress_ms = 0;           // emulated time done [ms hardware]
  double runtime_ms = 0;            // emulated time in total [ms hardware]
  std::optional<uint32_t> chip_id;  // set once running
  // Jobs handed out before this one (queued only) if nothing changes; the
  // round-robin order over users, ignoring chip pinning.
  uint32_t queue_position = 0;
  absl::Time submit_time = absl::InfinitePast();
  // Latest end (SubmitOptions::max_wall_time after submission); InfiniteFuture
  // = none.
  absl::Time deadline = absl::InfiniteFuture();
  absl::Time start_time = absl::InfinitePast();  // InfinitePast = not yet
  absl::Time end_time = absl::InfinitePast();
  // The job succeeded but its result is gone (TTL or size limit); the
  // reason is appended to state_reason.
  bool result_evicted = false;
};

// One page of List().
struct JobPage {
  std::vector<JobView> jobs;    // newest first
  std::string next_page_token;  // empty on the last page
};

// A snapshot of one chip.
struct ChipView {
  uint32_t id = 0;
  bool busy = false;
  std::string running_job_id;  // empty when idle
  // Queued jobs this chip may run (pinned to it or to no chip).
  uint32_t queued_jobs = 0;
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
  // Most jobs queued (not yet running) by one user.
  int max_queued_jobs_per_user = 1000;
  // Jobs per round-robin turn, by user; users not named (and weights < 1)
  // get 1. A weight-2 user gets two jobs per turn while others wait.
  absl::flat_hash_map<std::string, int> user_weights;
  // How long the result of a SUCCEEDED job is kept after the job ended.
  absl::Duration result_ttl = absl::Hours(24);
  // Most bytes (serialized size) of results kept; the oldest are evicted
  // first. A result larger than this alone is evicted at once.
  int64_t max_result_bytes = int64_t{1} << 30;
  // The time source; null = the wall clock. Tests pass a FakeClock.
  std::shared_ptr<const Clock> clock;
};

// Per-job options of Submit.
struct SubmitOptions {
  // Longest time from submission to the end of the run (> 0). A job still
  // queued then becomes EXPIRED; a running one is cancelled.
  absl::Duration max_wall_time = absl::InfiniteDuration();
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
  // new job's id. RESOURCE_EXHAUSTED when the queue is full or `user` has
  // max_queued_jobs_per_user jobs queued.
  absl::StatusOr<std::string> Submit(
      std::string user, std::shared_ptr<const hxemu::v1::Experiment> experiment,
      const SubmitOptions& options = {});

  // NOT_FOUND for unknown ids.
  absl::StatusOr<JobView> Get(const std::string& job_id) const;

  // Blocks until the job is terminal or `deadline` passes; returns the view
  // either way (check its state). `deadline` is wall-clock (absl::Now())
  // time, as it bounds a blocking call, whatever Options::clock is.
  absl::StatusOr<JobView> Wait(const std::string& job_id,
                               absl::Time deadline) const;

  // Calls `callback` once, with the job's terminal view, as soon as the job is
  // terminal (at once, on this thread, if it already is; otherwise on the
  // thread that made it terminal: a chip worker, the housekeeping thread, a
  // thread calling another method (Cancel, or one noticing a passed
  // deadline), or the destructor's). It runs without the scheduler's lock held,
  // after Wait() can already see the terminal state. Returns a handle for
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
  // (yet) succeeded, NOT_FOUND for unknown ids and for evicted results (the
  // message starts "result evicted").
  absl::StatusOr<std::shared_ptr<const hxemu::v1::Result>> GetResult(
      const std::string& job_id) const;

  // The jobs of `user`, newest first, `page_size` at a time (<= 0: 100; at
  // most 1000). Pass the previous page's next_page_token to continue;
  // INVALID_ARGUMENT for a token not from this scheduler.
  absl::StatusOr<JobPage> List(const std::string& user, int page_size,
                               const std::string& page_token) const;

  // Every chip, by id.
  std::vector<ChipView> ChipsView() const;

  int num_chips() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hxemu::scheduler
