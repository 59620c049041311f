// File: hxemu/scheduler/scheduler.h
//
// The microscheduler: accepts experiment jobs from many users, keeps them in
// per-user queues served round-robin (see Options::user_weights) and runs
// them on a pool of emulated chips, one worker thread per chip. It knows
// nothing of gRPC: the server maps requests onto this API.
//
// Job life cycle:
//   QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED | EXPIRED
//   QUEUED -> CANCELLED | EXPIRED
// EXPIRED = the job's deadline (SubmitOptions::max_wall_time) passed, before
// it started or while it ran (then its runner was asked to stop). Every job
// reaches exactly one terminal state; none is lost. Every state carries a
// machine-readable Reason and a human-readable text.
//
// Fairness: users are served round-robin (see job_queue.h): one job per turn
// (Options::user_weights: w jobs), optionally for at least
// Options::user_time_slice; users waiting for their first turn are ordered
// by their decayed usage (Options::usage_half_life), lower first.
//
// Chip affinity: every chip remembers the configuration key
// (SubmitOptions::config_key) and user of its last job. When several idle
// chips may run a new job, the one already configured for it is woken (the
// "reinit" cost of quiggeldy, as a scheduling concept); a chip switching to
// another configuration counts a reconfiguration (ChipView).
//
// Idempotency: a Submit with a SubmitOptions::request_id already used by the
// same user returns the first job's id instead of queueing another one.
//
// Retention: the result of a SUCCEEDED job is kept for Options::result_ttl
// and within Options::max_result_bytes, then evicted (JobView::result_evicted,
// GetResult says so). Terminal job records (and their request ids) are kept
// for Options::job_record_ttl and up to Options::max_job_records, then
// forgotten (NOT_FOUND).
//
// Time: all timestamps, deadlines and TTLs come from Options::clock. Deadline
// and TTL expiry happen on a housekeeping thread and, lazily, at the start of
// most calls (so a test advancing a FakeClock sees them at its next call).
//
// Durability (Options::store): see job_store.h.
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

class JobStore;  // job_store.h

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

// Why a job is in its state (machine-readable; JobView::state_reason has the
// text with the numbers).
enum class Reason {
  // QUEUED
  kWaitingForChip,        // nothing ahead of it; every chip it may use busy
  kBehindOwnJobs,         // only jobs of the same user ahead
  kBehindOtherUsers,      // jobs of other users ahead (their turns)
  kWaitingForPinnedChip,  // nothing ahead; the chip it names is busy
  // RUNNING
  kRunning,
  kCancelRequested,  // asked to stop (cancel, deadline or shutdown)
  // Terminal
  kSucceeded,
  kFailed,  // JobView::error has the code and message
  kCancelledByUser,
  kCancelledByShutdown,  // handed back: the server stopped; resubmit
  kExpiredInQueue,       // deadline passed before it could start
  kExpiredWhileRunning,  // deadline passed while it ran
};
const char* ReasonName(Reason reason);

// A consistent snapshot of one job.
struct JobView {
  std::string id;
  std::string user;
  JobState state = JobState::kQueued;
  // Why the job is in its state, e.g. "queued: 2 jobs ahead", "queued: 3
  // jobs ahead (1 of yours, 2 of other users), waiting for chip 2",
  // "cancelled by user".
  std::string state_reason;
  Reason reason = Reason::kWaitingForChip;
  // The failure, when state is kFailed; OK otherwise.
  absl::Status error;
  double progress_ms = 0;           // emulated time done [ms hardware]
  double runtime_ms = 0;            // emulated time in total [ms hardware]
  std::optional<uint32_t> chip_id;  // set once running
  // Jobs handed out before this one (queued only) if nothing changes; the
  // round-robin order over users, ignoring chip pinning.
  uint32_t queue_position = 0;
  // The split of queue_position (queued only).
  uint32_t jobs_ahead_own = 0;
  uint32_t jobs_ahead_other_users = 0;
  // Estimated start (queued only): queue_position over the chips it may use,
  // times the mean run time of recent jobs; InfinitePast = no estimate yet
  // (no job has finished).
  absl::Time estimated_start_time = absl::InfinitePast();
  absl::Time submit_time = absl::InfinitePast();
  // Latest end (SubmitOptions::max_wall_time after submission); InfiniteFuture
  // = none.
  absl::Time deadline = absl::InfiniteFuture();
  absl::Time start_time = absl::InfinitePast();  // InfinitePast = not yet
  absl::Time end_time = absl::InfinitePast();
  // The job succeeded but its result is gone (TTL or size limit); the
  // reason is appended to state_reason.
  bool result_evicted = false;
  // Serialized size of the result [bytes] (succeeded jobs).
  int64_t result_bytes = 0;
  // When the kept result will be evicted by the TTL (InfiniteFuture: not
  // kept, or no TTL).
  absl::Time result_expire_time = absl::InfiniteFuture();
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
  // Jobs started on this chip, and how many of them needed another
  // configuration than the job before (a different config_key).
  uint64_t jobs_started = 0;
  uint64_t reconfigurations = 0;
  // Total time jobs ran on this chip (clock time; the running one counted
  // up to now).
  absl::Duration busy_time;
};

// Counters for metrics (one consistent snapshot).
struct SchedulerStats {
  int queued_jobs = 0;
  int running_jobs = 0;
  int users_with_queued_jobs = 0;
  int retained_results = 0;
  int64_t retained_result_bytes = 0;
  int job_records = 0;
  std::vector<ChipView> chips;
};

// What a chip worker gets to run one job.
struct WorkItem {
  const hxemu::v1::Experiment& experiment;
  // Set when the job is cancelled while running; the runner should return
  // CANCELLED promptly.
  const std::atomic<bool>& cancel_requested;
  // Reports emulated time done [ms hardware].
  std::function<void(double done_ms)> report_progress;
  // The chip ran a job of another configuration before this one (or none).
  bool reconfigure = true;
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
  // Zero: a user's turn ends after its `weight` jobs whenever others wait.
  // Positive: a turn also lasts at least this long (clock time from the
  // turn's first job start), like quiggeldy's --user-period-ms; a newcomer
  // then waits up to one slice (plus one job) per user ahead of it.
  absl::Duration user_time_slice = absl::ZeroDuration();
  // Half-life of the per-user usage (run time over the user's weight) that
  // orders users waiting for their first turn; InfiniteDuration = no decay.
  absl::Duration usage_half_life = absl::Hours(1);
  // How long the result of a SUCCEEDED job is kept after the job ended.
  absl::Duration result_ttl = absl::Hours(24);
  // Most bytes (serialized size) of results kept; the oldest are evicted
  // first. A result larger than this alone is evicted at once.
  int64_t max_result_bytes = int64_t{1} << 30;
  // How long a terminal job's record (and its request id) is kept after it
  // ended (at least result_ttl), and the most records kept (oldest terminal
  // ones forgotten first; queued and running jobs are never forgotten).
  absl::Duration job_record_ttl = absl::Hours(7 * 24);
  int64_t max_job_records = 1000000;
  // The time source; null = the wall clock. Tests pass a FakeClock.
  std::shared_ptr<const Clock> clock;
  // Durable job state (job_store.h); null = in memory only. With a store the
  // scheduler restores the stored jobs on construction (queued and running
  // ones are queued again, in submission order), records every accepted job
  // before Submit returns and every later state change, and a shutdown
  // (Drain, destruction) leaves the queued and running jobs in the store, to
  // run after the restart, instead of handing them back.
  std::shared_ptr<JobStore> store;
};

// Per-job options of Submit.
struct SubmitOptions {
  // Longest time from submission to the end of the run (> 0). A job still
  // queued then becomes EXPIRED; a running one is cancelled.
  absl::Duration max_wall_time = absl::InfiniteDuration();
  // Client-chosen id that makes retries idempotent (empty = none): a Submit
  // by the same user with the same id returns the first job's id while its
  // record is kept. `request_fingerprint` identifies the request's content;
  // the same id with another fingerprint is ALREADY_EXISTS.
  std::string request_id;
  uint64_t request_fingerprint = 0;
  // Identifies the chip configuration the job needs (equal keys = no
  // reconfiguration between them); 0 = unknown (the user is used instead).
  uint64_t config_key = 0;
};

// What SubmitJob did.
struct Submitted {
  std::string job_id;
  // The request_id was used before: job_id is the first job's, nothing new
  // was queued.
  bool duplicate = false;
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
  // With a store, these shutdown cancellations are not recorded: the store
  // keeps the jobs queued/running, so they run after the restart.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a job for `user`. If the experiment names a chip id, the job runs
  // on that chip (INVALID_ARGUMENT if the pool has no such chip). Returns the
  // new job's id (or the first job's, for a repeated request_id).
  // RESOURCE_EXHAUSTED when the queue is full or `user` has
  // max_queued_jobs_per_user jobs queued; ALREADY_EXISTS for a request_id
  // reused with another fingerprint; UNAVAILABLE once draining.
  absl::StatusOr<std::string> Submit(
      std::string user, std::shared_ptr<const hxemu::v1::Experiment> experiment,
      const SubmitOptions& options = {});
  // Submit, also telling whether the request was a duplicate.
  absl::StatusOr<Submitted> SubmitJob(
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

  // Push notification for watchers (WatchJob): calls `on_change` whenever
  // the job's view may have changed (its state, reason, queue position or
  // progress), and once more when the job becomes terminal (the last call;
  // the watcher is then removed). It only says "look again": calls are not
  // queued per change, the watcher takes a Get() view when it suits it, so
  // a slow watcher sees the latest view, not every step. It runs on a
  // scheduler thread (a chip worker for progress), without the scheduler's
  // lock held, and may call Get(); it must not block. Returns a handle for
  // RemoveWatcher; NOT_FOUND for unknown ids (a terminal job: handle 0, no
  // call). Cost: every queue change calls every watcher of a queued job
  // (their positions moved). Remove watchers before destroying the
  // scheduler (its shutdown makes jobs terminal, which calls them).
  absl::StatusOr<uint64_t> AddWatcher(const std::string& job_id,
                                      std::function<void()> on_change);
  // Stops the calls. A call already taken out may still run (concurrently,
  // or just after this returns): keep what `on_change` touches alive by
  // itself (e.g. a shared_ptr it owns).
  void RemoveWatcher(const std::string& job_id, uint64_t handle);

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

  SchedulerStats Stats() const;

  // Graceful stop: Submit fails with UNAVAILABLE from now on, queued jobs are
  // handed back (CANCELLED, Reason::kCancelledByShutdown), running jobs may
  // finish until `deadline` (wall clock), then they are asked to stop. Returns
  // once no job runs. Other calls keep working. Idempotent.
  // With a store (Options::store), queued jobs are not handed back but stay
  // queued (no job starts any more), and a running job stopped at `deadline`
  // is queued again: both run after the restart.
  void Drain(absl::Time deadline);

  int num_chips() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hxemu::scheduler
