// File: scheduler.cc
//
// Design:
// - One mutex, `Impl::mu_` (an absl::Mutex behind a TSan-visible wrapper,
//   see mutex.h), guards all scheduler state: the job map, the queue, every
//   job's mutable fields and the chips' bookkeeping. Runners run and done
//   callbacks fire without it. Each job's `cancel_requested` and
//   `progress_ms` are atomics shared with the runner, so a runner never takes
//   the scheduler's lock.
// - Each chip has a worker thread and its own CondVar. An idle worker sets
//   `idle` and waits; Submit wakes exactly one idle worker that may run the
//   new job and clears its `idle` flag ("claims" it), so two quick submits
//   wake two workers. Of several idle workers that may run the job, the one
//   whose chip is configured for it (same config key, else same user) is
//   claimed. A claimed worker rescans the queue, so a wake-up that finds
//   nothing (the job was cancelled, or another chip took it) is harmless;
//   an unclaimed (spurious) wake-up does not look at the queue.
// - Terminal transitions happen in one place (FinishLocked). It takes the
//   job's done callbacks out, marks the job `firing` and wakes Wait()ers;
//   the caller runs the callbacks once the lock is released, then clears
//   `firing` and wakes RemoveDoneCallback()ers waiting for them.
// - The queue (job_queue.h) serves per-user FIFOs round-robin; it also
//   answers "what may chip K run next?", so the workers do not know the
//   policy. A worker that took a job other than the one it was woken for
//   wakes another idle worker that has something to run.
// - Time comes from the injected Clock. Job deadlines (`deadlines_`) and
//   result TTLs / the result byte budget (`retained_`) are enforced by
//   SweepLocked, which is cheap when nothing is due (it looks at the front
//   of two ordered containers). It runs on a housekeeping thread (sleeping
//   until the next due time, at most kMaxHousekeeperSleep of wall time, so a
//   FakeClock is noticed too), at the start of most public calls and before
//   a worker takes a job, so an expired job is never started.
#include "hxemu/scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <exception>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "hxemu/scheduler/job_store.h"
#include "job.h"
#include "job_id.h"
#include "job_queue.h"
#include "mutex.h"

namespace hxemu::scheduler {

using internal::CondVar;
using internal::DoneCallback;
using internal::Job;
using internal::Mutex;
using internal::MutexLock;

bool IsTerminal(JobState state) {
  switch (state) {
    case JobState::kQueued:
    case JobState::kRunning:
      return false;
    case JobState::kSucceeded:
    case JobState::kFailed:
    case JobState::kCancelled:
    case JobState::kExpired:
      return true;
  }
  return false;
}

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "QUEUED";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kCancelled:
      return "CANCELLED";
    case JobState::kExpired:
      return "EXPIRED";
  }
  return "UNKNOWN";
}

const char* ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kWaitingForChip:
      return "WAITING_FOR_CHIP";
    case Reason::kBehindOwnJobs:
      return "BEHIND_OWN_JOBS";
    case Reason::kBehindOtherUsers:
      return "BEHIND_OTHER_USERS";
    case Reason::kWaitingForPinnedChip:
      return "WAITING_FOR_PINNED_CHIP";
    case Reason::kRunning:
      return "RUNNING";
    case Reason::kCancelRequested:
      return "CANCEL_REQUESTED";
    case Reason::kSucceeded:
      return "SUCCEEDED";
    case Reason::kFailed:
      return "FAILED";
    case Reason::kCancelledByUser:
      return "CANCELLED_BY_USER";
    case Reason::kCancelledByShutdown:
      return "CANCELLED_BY_SHUTDOWN";
    case Reason::kExpiredInQueue:
      return "EXPIRED_IN_QUEUE";
    case Reason::kExpiredWhileRunning:
      return "EXPIRED_WHILE_RUNNING";
  }
  return "UNKNOWN";
}

namespace {

constexpr char kCancelledByUser[] = "cancelled by user";
constexpr char kCancelledByShutdown[] =
    "cancelled: the server is shutting down; submit again";
// The same with a store: the job is not lost.
constexpr char kKeptForRestart[] =
    "stopped: the server is shutting down; the job is kept in its state_dir "
    "and runs after the restart (same job id)";
constexpr char kRequeuedAfterRestart[] = "re-queued after server restart; ";
// Weight of the newest run in the mean run time (ETA): an exponential
// moving average over roughly the last 1/kRunTimeAlpha jobs.
constexpr double kRunTimeAlpha = 0.05;

// Longest wall-clock sleep of the housekeeping thread (bounds how late it
// notices time moved on a FakeClock or a clock jump).
constexpr absl::Duration kMaxHousekeeperSleep = absl::Seconds(1);
constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;

// The text and code of a queued job's reason. `pinned_busy`: the job names
// a chip and that chip is running another job.
std::string QueuedReason(const internal::JobQueue::Ahead& ahead,
                         const internal::Job& job, bool pinned_busy,
                         Reason* code) {
  const size_t total = ahead.own + ahead.others;
  std::string reason =
      absl::StrCat("queued: ", total, total == 1 ? " job" : " jobs", " ahead");
  if (ahead.others > 0) {
    absl::StrAppend(&reason, " (", ahead.own, " of yours, ", ahead.others,
                    " of other users)");
  }
  // (Not Job::pinned_chip(): GCC 12 with ASan warns of the optional.)
  if (job.pinned) {
    absl::StrAppend(&reason, ", waiting for chip ", job.pinned_chip_id,
                    pinned_busy ? " (busy)" : "");
  }
  if (ahead.others > 0) {
    *code = Reason::kBehindOtherUsers;
  } else if (ahead.own > 0) {
    *code = Reason::kBehindOwnJobs;
  } else if (job.pinned) {
    *code = Reason::kWaitingForPinnedChip;
  } else {
    *code = Reason::kWaitingForChip;
  }
  return reason;
}

std::string RunningReason(uint32_t chip_id, bool cancel_requested) {
  return absl::StrCat("running on chip ", chip_id,
                      cancel_requested ? ", cancel requested" : "");
}

absl::Status UnknownJob(const std::string& job_id) {
  return absl::NotFoundError(absl::StrCat("job_id: no job \"", job_id, "\""));
}

}  // namespace

struct Scheduler::Impl {
  // One emulated chip and its worker. `id` and `runner` are set before the
  // worker starts; `runner` is then used by the worker only. The other
  // fields are guarded by `mu_`.
  struct Chip {
    uint32_t id = 0;
    ChipRunner runner;
    std::thread worker;
    CondVar work_cv;  // wakes this chip's worker
    // The worker waits for work and nobody has woken it for a job yet.
    bool idle = false;
    std::shared_ptr<Job> current;  // running job, if any
    // The experiment of `current`, for the worker outside the lock.
    std::shared_ptr<const hxemu::v1::Experiment> current_experiment;
    bool current_reconfigure = true;
    // The configuration (Job::config_key, or user) of the last job started.
    bool configured = false;
    uint64_t config_key = 0;
    std::string config_user;
    uint64_t jobs_started = 0;
    uint64_t reconfigurations = 0;
    absl::Duration busy_time;  // of finished runs
  };

  // Done callbacks taken out of a job at its terminal transition, to be run
  // once `mu_` is released.
  struct PendingCallbacks {
    std::shared_ptr<Job> job;
    JobView view;
    std::vector<DoneCallback> callbacks;
  };
  using PendingList = std::vector<PendingCallbacks>;

  Impl(const Options& options,
       const std::function<ChipRunner(uint32_t chip_id)>& make_runner);

  // Stops the workers; see ~Scheduler.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  absl::StatusOr<Submitted> Submit(
      std::string user, std::shared_ptr<const hxemu::v1::Experiment> experiment,
      const SubmitOptions& options) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<JobView> Get(const std::string& job_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<JobView> Wait(const std::string& job_id, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<uint64_t> AddDoneCallback(const std::string& job_id,
                                           DoneCallback callback)
      ABSL_LOCKS_EXCLUDED(mu_);
  bool RemoveDoneCallback(const std::string& job_id, uint64_t handle)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<uint64_t> AddWatcher(const std::string& job_id,
                                      std::function<void()> on_change)
      ABSL_LOCKS_EXCLUDED(mu_);
  void RemoveWatcher(const std::string& job_id, uint64_t handle)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Queues a call of every watcher of `job` / of every job (a queue change
  // moves every queued job) for FirePokes.
  void PokeLocked(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PokeAllLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs the queued watcher calls; without the lock.
  void FirePokes() ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<JobView> Cancel(const std::string& job_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::shared_ptr<const hxemu::v1::Result>> GetResult(
      const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<JobPage> List(const std::string& user, int page_size,
                               const std::string& page_token)
      ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<ChipView> ChipsView() ABSL_LOCKS_EXCLUDED(mu_);
  SchedulerStats Stats() ABSL_LOCKS_EXCLUDED(mu_);
  void Drain(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  // The worker of `chip`: runs jobs until Shutdown.
  void WorkerLoop(Chip& chip) ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until `chip` may run a job, marks it running and returns it; null
  // once the scheduler is stopping.
  std::shared_ptr<Job> NextJob(Chip& chip) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs `job` on `chip`; turns exceptions into INTERNAL errors.
  absl::StatusOr<hxemu::v1::Result> RunJob(Chip& chip,
                                           const std::shared_ptr<Job>& job);
  // Records the runner's outcome and makes the job terminal.
  void CompleteJob(Chip& chip, const std::shared_ptr<Job>& job,
                   absl::StatusOr<hxemu::v1::Result> outcome)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Enforces deadlines and result retention until Shutdown.
  void HousekeeperLoop() ABSL_LOCKS_EXCLUDED(mu_);

  // Expires or cancels jobs past their deadline and evicts results past
  // their TTL or over the byte budget, as of now; appends done callbacks to
  // `pending`.
  void SweepLocked(PendingList* pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When SweepLocked next has something to do (clock time).
  absl::Time NextDueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wakes one idle worker that may run `job`, if there is one.
  void WakeWorkerForLocked(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wakes one idle worker that has a queued job it may run, if any.
  void WakeAnyWorkerLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes `job` terminal; appends its done callbacks to `pending`.
  void FinishLocked(const std::shared_ptr<Job>& job, JobState state,
                    Reason code, std::string reason, absl::Status error,
                    PendingList* pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks the running `job` to stop, giving `reason` (and `code`) if it does.
  void RequestCancelLocked(Job& job, Reason code, std::string reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands back every queued job (shutdown); appends callbacks to `pending`.
  void HandBackQueuedLocked(PendingList* pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `user`'s usage (run time over weight, decayed) as of now [s].
  double UsageLocked(const std::string& user) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddUsageLocked(const std::string& user, absl::Duration run)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets `job` (terminal) entirely.
  void ForgetLocked(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rebuilds the stored jobs (constructor, before the workers start).
  void RestoreLocked(std::vector<JobRecord> records)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The persisted form of `job`.
  JobRecord RecordLocked(const Job& job) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores `job`'s record (if there is a store); failures are logged: the
  // transition happened, only its record is older.
  void PersistLocked(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int running_jobs_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The reason text of a shutdown's hand-back.
  const char* ShutdownReason() const {
    return store_ != nullptr ? kKeptForRestart : kCancelledByShutdown;
  }
  ChipView ChipViewLocked(const Chip& chip) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs callbacks taken out by FinishLocked, then clears the jobs' `firing`.
  void RunCallbacks(PendingList& pending) ABSL_LOCKS_EXCLUDED(mu_);
  JobView ViewLocked(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<Job> FindLocked(const std::string& job_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Never null; `clock_owner_` keeps an injected clock alive.
  const std::shared_ptr<const Clock> clock_owner_;
  const Clock* const clock_;
  const int max_queued_jobs_;
  const int max_queued_jobs_per_user_;
  const absl::Duration result_ttl_;
  const int64_t max_result_bytes_;
  const absl::Duration job_record_ttl_;
  const int64_t max_job_records_;
  const absl::Duration usage_half_life_;
  const absl::flat_hash_map<std::string, int> user_weights_;
  // Null = in memory only.
  const std::shared_ptr<JobStore> store_;
  // The pool, sorted by id; fixed after construction (the vector, not the
  // chips' guarded fields).
  std::vector<std::unique_ptr<Chip>> chips_;
  std::thread housekeeper_;

  mutable Mutex mu_;
  // Signalled whenever a job becomes terminal (Wait).
  CondVar terminal_cv_;
  // Signalled whenever a job's done callbacks have run (RemoveDoneCallback).
  CondVar callbacks_done_cv_;
  // Wakes the housekeeping thread (an earlier due time, or stopping).
  CondVar housekeeper_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // (user, request_id) -> the job submitted first with it (kept as long as
  // the job's record).
  absl::flat_hash_map<std::pair<std::string, std::string>, const Job*> requests_
      ABSL_GUARDED_BY(mu_);
  // Every terminal job, oldest end first (record retention).
  std::deque<std::shared_ptr<Job>> terminal_ ABSL_GUARDED_BY(mu_);
  // Per-user usage [s of run time over weight] as of `usage_time`.
  struct Usage {
    double seconds = 0;
    absl::Time as_of;
  };
  absl::flat_hash_map<std::string, Usage> usage_ ABSL_GUARDED_BY(mu_);
  // Mean wall time of recent runs (ETA); zero until a job finished.
  absl::Duration mean_run_time_ ABSL_GUARDED_BY(mu_);
  // Every job whose record is kept, by id (see terminal_).
  absl::flat_hash_map<std::string, std::shared_ptr<Job>> jobs_
      ABSL_GUARDED_BY(mu_);
  // The same jobs by user and then `seq` (List); the pointers stay valid
  // while the job is in `jobs_`.
  absl::flat_hash_map<std::string, std::map<uint64_t, const Job*>> by_user_
      ABSL_GUARDED_BY(mu_);
  internal::JobQueue queue_ ABSL_GUARDED_BY(mu_);
  // The queued and running jobs with a deadline whose deadline has not been
  // acted on, soonest first.
  std::set<std::pair<absl::Time, const Job*>> deadlines_ ABSL_GUARDED_BY(mu_);
  // The succeeded jobs whose result is kept, oldest end first, and the sum
  // of their `result_bytes`.
  std::deque<std::shared_ptr<Job>> retained_ ABSL_GUARDED_BY(mu_);
  int64_t retained_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_callback_handle_ ABSL_GUARDED_BY(mu_) = 1;
  // Jobs with watchers (PokeAllLocked).
  absl::flat_hash_map<const Job*, std::shared_ptr<Job>> watched_
      ABSL_GUARDED_BY(mu_);
  // Watcher calls taken out under the lock, for FirePokes; `pokes_pending_`
  // = not empty (lets FirePokes skip the lock).
  std::vector<std::shared_ptr<const std::function<void()>>> pokes_
      ABSL_GUARDED_BY(mu_);
  std::atomic<bool> pokes_pending_{false};
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
};

Scheduler::Impl::Impl(
    const Options& options,
    const std::function<ChipRunner(uint32_t chip_id)>& make_runner)
    : clock_owner_(options.clock),
      clock_(options.clock != nullptr ? options.clock.get() : &Clock::Real()),
      max_queued_jobs_(std::max(options.max_queued_jobs, 0)),
      max_queued_jobs_per_user_(std::max(options.max_queued_jobs_per_user, 0)),
      result_ttl_(options.result_ttl),
      max_result_bytes_(std::max<int64_t>(options.max_result_bytes, 0)),
      job_record_ttl_(std::max(options.job_record_ttl, options.result_ttl)),
      max_job_records_(std::max<int64_t>(options.max_job_records, 1)),
      usage_half_life_(options.usage_half_life),
      user_weights_(options.user_weights),
      store_(options.store),
      queue_(options.user_weights, options.user_time_slice) {
  std::vector<uint32_t> ids = options.chip_ids;
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  for (uint32_t id : ids) {
    auto chip = std::make_unique<Chip>();
    chip->id = id;
    chip->runner = make_runner(id);
    chips_.push_back(std::move(chip));
  }
  if (store_ != nullptr) {
    MutexLock lock(&mu_);
    RestoreLocked(store_->Load());
  }
  // Start the workers only once `chips_` is complete: Submit reads it.
  for (auto& chip : chips_) {
    Chip* c = chip.get();
    c->worker = std::thread([this, c] { WorkerLoop(*c); });
  }
  housekeeper_ = std::thread([this] { HousekeeperLoop(); });
}

void Scheduler::Impl::Shutdown() {
  PendingList pending;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    HandBackQueuedLocked(&pending);
    for (auto& chip : chips_) {
      if (chip->current != nullptr) {
        RequestCancelLocked(*chip->current, Reason::kCancelledByShutdown,
                            ShutdownReason());
      }
      chip->work_cv.Signal();
    }
    housekeeper_cv_.Signal();
  }
  RunCallbacks(pending);
  for (auto& chip : chips_) chip->worker.join();
  housekeeper_.join();
}

absl::StatusOr<Submitted> Scheduler::Impl::Submit(
    std::string user, std::shared_ptr<const hxemu::v1::Experiment> experiment,
    const SubmitOptions& options) {
  if (experiment == nullptr) {
    return absl::InvalidArgumentError("experiment: missing");
  }
  if (options.max_wall_time <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_wall_time: must be positive, not ",
                     absl::FormatDuration(options.max_wall_time)));
  }
  if (chips_.empty()) {
    return absl::FailedPreconditionError(
        "this server has no chips to run experiments on");
  }
  if (experiment->has_chip_id()) {
    const uint32_t wanted = experiment->chip_id();
    const bool exists =
        std::any_of(chips_.begin(), chips_.end(),
                    [wanted](const auto& chip) { return chip->id == wanted; });
    if (!exists) {
      return absl::InvalidArgumentError(absl::StrCat(
          "experiment.chip_id: chip ", wanted,
          " does not exist; this server has ",
          chips_.size() == 1 ? "chip " : "chips ",
          absl::StrJoin(chips_, ", ", [](std::string* out, const auto& chip) {
            absl::StrAppend(out, chip->id);
          })));
    }
  }

  auto job = std::make_shared<Job>();
  job->user = std::move(user);
  job->pinned = experiment->has_chip_id();
  job->pinned_chip_id = experiment->chip_id();
  job->runtime_ms = experiment->runtime_ms();
  job->experiment = std::move(experiment);
  job->request_id = options.request_id;
  job->request_fingerprint = options.request_fingerprint;
  job->config_key = options.config_key;
  job->submit_time = clock_->Now();
  job->max_wall_time = options.max_wall_time;
  if (options.max_wall_time != absl::InfiniteDuration()) {
    job->deadline = job->submit_time + options.max_wall_time;
  }
  job->id = internal::NewJobId();  // outside the lock: a system call
  // The experiment (possibly large) is stored outside the lock, under the
  // new id nobody knows yet; the record written under the lock below makes
  // the job durable. Dropped again if the job is not accepted.
  if (store_ != nullptr) {
    if (absl::Status s = store_->PutExperiment(job->id, *job->experiment);
        !s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("state_dir: cannot store the job durably (", s.message(),
                       "); retry later"));
    }
  }
  bool accepted = false;

  PendingList pending;
  absl::Status status;
  std::string duplicate_of;
  {
    MutexLock lock(&mu_);
    SweepLocked(&pending);
    const size_t user_queued = queue_.SizeFor(job->user);
    const Job* first = nullptr;
    if (!job->request_id.empty()) {
      auto it = requests_.find(std::make_pair(job->user, job->request_id));
      if (it != requests_.end()) first = it->second;
    }
    if (first != nullptr) {
      // A retry: the first job, whatever the queue looks like now.
      if (first->request_fingerprint != job->request_fingerprint) {
        status = absl::AlreadyExistsError(
            absl::StrCat("request_id: '", job->request_id,
                         "' was already used for a different request (job ",
                         first->id, ")"));
      } else {
        duplicate_of = first->id;
      }
    } else if (stopping_ || draining_) {
      status = absl::UnavailableError(
          "the server is shutting down and accepts no more jobs; submit to "
          "another server or retry later");
    } else if (queue_.size() >= static_cast<size_t>(max_queued_jobs_)) {
      status = absl::ResourceExhaustedError(absl::StrCat(
          "the job queue is full: ", queue_.size(),
          " jobs are queued, the server's limit (max_queued_jobs) is ",
          max_queued_jobs_, "; retry later"));
    } else if (user_queued >= static_cast<size_t>(max_queued_jobs_per_user_)) {
      status = absl::ResourceExhaustedError(absl::StrCat(
          "user \"", job->user, "\" has ", user_queued,
          " jobs queued, the server's per-user limit "
          "(max_queued_jobs_per_user) is ",
          max_queued_jobs_per_user_,
          "; retry once some of them have started or been cancelled"));
    } else {
      // 128 random bits do not collide in practice; the check makes "never
      // reused" hold regardless (every job ever submitted stays in `jobs_`).
      while (jobs_.contains(job->id)) {
        job->id = internal::NewJobId();
        if (store_ != nullptr) {
          status = store_->PutExperiment(job->id, *job->experiment);
        }
      }
      job->seq = next_seq_++;
      // Durable before Submit returns (fsync'd): the commit point.
      if (store_ != nullptr && status.ok()) {
        status = store_->PutRecord(RecordLocked(*job));
      }
      if (!status.ok()) {
        status = absl::UnavailableError(
            absl::StrCat("state_dir: cannot store the job durably (",
                         status.message(), "); retry later"));
      }
    }
    if (status.ok() && duplicate_of.empty()) {
      accepted = true;
      jobs_.emplace(job->id, job);
      by_user_[job->user].emplace(job->seq, job.get());
      if (!job->request_id.empty()) {
        requests_.emplace(std::make_pair(job->user, job->request_id),
                          job.get());
      }
      if (job->deadline != absl::InfiniteFuture()) {
        const bool soonest =
            deadlines_.empty() || job->deadline < deadlines_.begin()->first;
        deadlines_.emplace(job->deadline, job.get());
        if (soonest) housekeeper_cv_.Signal();
      }
      queue_.Push(job, UsageLocked(job->user));
      WakeWorkerForLocked(*job);
      PokeAllLocked();  // it may be ahead of others (round-robin)
    }
  }
  RunCallbacks(pending);
  if (!accepted && store_ != nullptr) {
    (void)store_->Remove(job->id);
  }
  if (!status.ok()) return status;
  if (!duplicate_of.empty()) {
    return Submitted{.job_id = duplicate_of, .duplicate = true};
  }
  return Submitted{.job_id = job->id, .duplicate = false};
}

absl::StatusOr<JobView> Scheduler::Impl::Get(const std::string& job_id) {
  PendingList pending;
  absl::StatusOr<JobView> view;
  {
    MutexLock lock(&mu_);
    SweepLocked(&pending);
    std::shared_ptr<Job> job = FindLocked(job_id);
    view = job == nullptr ? absl::StatusOr<JobView>(UnknownJob(job_id))
                          : ViewLocked(*job);
  }
  RunCallbacks(pending);
  return view;
}

absl::StatusOr<JobView> Scheduler::Impl::Wait(const std::string& job_id,
                                              absl::Time deadline) {
  {
    PendingList pending;
    {
      MutexLock lock(&mu_);
      SweepLocked(&pending);
    }
    RunCallbacks(pending);
  }
  MutexLock lock(&mu_);
  std::shared_ptr<Job> job = FindLocked(job_id);
  if (job == nullptr) return UnknownJob(job_id);
  while (!IsTerminal(job->state) && absl::Now() < deadline) {
    terminal_cv_.WaitWithDeadline(&mu_, deadline);
  }
  return ViewLocked(*job);
}

absl::StatusOr<uint64_t> Scheduler::Impl::AddDoneCallback(
    const std::string& job_id, DoneCallback callback) {
  uint64_t handle = 0;
  JobView view;
  PendingList pending;
  absl::Status unknown;
  {
    MutexLock lock(&mu_);
    SweepLocked(&pending);
    std::shared_ptr<Job> job = FindLocked(job_id);
    if (job == nullptr) {
      unknown = UnknownJob(job_id);
      callback = nullptr;
    } else if (handle = next_callback_handle_++; !IsTerminal(job->state)) {
      job->callbacks.emplace_back(handle, std::move(callback));
      callback = nullptr;
    } else {
      view = ViewLocked(*job);
    }
  }
  RunCallbacks(pending);
  if (!unknown.ok()) return unknown;
  // Already terminal: fire at once, on this thread, without the lock.
  if (callback != nullptr) [&]() noexcept { callback(view); }();
  return handle;
}

bool Scheduler::Impl::RemoveDoneCallback(const std::string& job_id,
                                         uint64_t handle) {
  // No SweepLocked here: callbacks it took out would run on this thread
  // after the return, breaking the "will not run any more" promise.
  MutexLock lock(&mu_);
  std::shared_ptr<Job> job = FindLocked(job_id);
  if (job == nullptr) return false;
  auto& callbacks = job->callbacks;
  auto it = std::find_if(
      callbacks.begin(), callbacks.end(),
      [handle](const auto& entry) { return entry.first == handle; });
  if (it != callbacks.end()) {
    callbacks.erase(it);
    return true;
  }
  // It may be running on the thread that made the job terminal; wait for it
  // unless that is this thread (a callback removing itself or a sibling).
  while (job->firing && job->firing_thread != std::this_thread::get_id()) {
    callbacks_done_cv_.Wait(&mu_);
  }
  return false;
}

absl::StatusOr<uint64_t> Scheduler::Impl::AddWatcher(
    const std::string& job_id, std::function<void()> on_change) {
  MutexLock lock(&mu_);
  std::shared_ptr<Job> job = FindLocked(job_id);
  if (job == nullptr) return UnknownJob(job_id);
  if (IsTerminal(job->state)) return 0;
  const uint64_t handle = next_callback_handle_++;
  job->watchers.emplace_back(
      handle,
      std::make_shared<const std::function<void()>>(std::move(on_change)));
  job->watched.store(true, std::memory_order_relaxed);
  watched_.emplace(job.get(), job);
  return handle;
}

void Scheduler::Impl::RemoveWatcher(const std::string& job_id,
                                    uint64_t handle) {
  MutexLock lock(&mu_);
  std::shared_ptr<Job> job = FindLocked(job_id);
  if (job == nullptr) return;
  auto& watchers = job->watchers;
  watchers.erase(std::remove_if(watchers.begin(), watchers.end(),
                                [handle](const auto& entry) {
                                  return entry.first == handle;
                                }),
                 watchers.end());
  if (watchers.empty()) {
    job->watched.store(false, std::memory_order_relaxed);
    watched_.erase(job.get());
  }
}

void Scheduler::Impl::PokeLocked(const Job& job) {
  for (const auto& [handle, on_change] : job.watchers) {
    pokes_.push_back(on_change);
  }
  if (!pokes_.empty()) pokes_pending_.store(true, std::memory_order_release);
}

void Scheduler::Impl::PokeAllLocked() {
  for (const auto& [raw, job] : watched_) PokeLocked(*job);
}

void Scheduler::Impl::FirePokes() {
  // A watcher may call Get(), which ends in FirePokes: the nested call
  // leaves its pokes to this loop (so a watcher is never re-entered).
  thread_local bool firing = false;
  if (firing) return;
  while (pokes_pending_.load(std::memory_order_acquire)) {
    std::vector<std::shared_ptr<const std::function<void()>>> pokes;
    {
      MutexLock lock(&mu_);
      pokes.swap(pokes_);
      pokes_pending_.store(false, std::memory_order_relaxed);
    }
    // The same watcher may be in the list several times; one call is
    // enough.
    std::sort(pokes.begin(), pokes.end());
    pokes.erase(std::unique(pokes.begin(), pokes.end()), pokes.end());
    firing = true;
    [&]() noexcept {
      for (const auto& on_change : pokes) (*on_change)();
    }();
    firing = false;
  }
}

absl::StatusOr<JobView> Scheduler::Impl::Cancel(const std::string& job_id) {
  PendingList pending;
  absl::StatusOr<JobView> view;
  {
    MutexLock lock(&mu_);
    SweepLocked(&pending);
    std::shared_ptr<Job> job = FindLocked(job_id);
    if (job == nullptr) {
      view = UnknownJob(job_id);
    } else {
      switch (job->state) {
        case JobState::kQueued:
          queue_.Remove(*job);
          FinishLocked(job, JobState::kCancelled, Reason::kCancelledByUser,
                       kCancelledByUser, absl::OkStatus(), &pending);
          break;
        case JobState::kRunning:
          RequestCancelLocked(*job, Reason::kCancelledByUser, kCancelledByUser);
          break;
        case JobState::kSucceeded:
        case JobState::kFailed:
        case JobState::kCancelled:
        case JobState::kExpired:
          break;
      }
      view = ViewLocked(*job);
    }
  }
  RunCallbacks(pending);
  return view;
}

absl::StatusOr<std::shared_ptr<const hxemu::v1::Result>>
Scheduler::Impl::GetResult(const std::string& job_id) {
  PendingList pending;
  absl::StatusOr<std::shared_ptr<const hxemu::v1::Result>> result;
  {
    MutexLock lock(&mu_);
    SweepLocked(&pending);
    std::shared_ptr<Job> job = FindLocked(job_id);
    if (job == nullptr) {
      result = UnknownJob(job_id);
    } else if (job->state != JobState::kSucceeded) {
      result = absl::FailedPreconditionError(absl::StrCat(
          "job ", job_id, " has no result: it is ", JobStateName(job->state),
          " (", ViewLocked(*job).state_reason, "), not SUCCEEDED"));
    } else if (job->result == nullptr) {
      result = absl::NotFoundError(
          absl::StrCat(job->result_evicted_reason, " (job ", job_id, ")"));
    } else {
      result = job->result;
    }
  }
  RunCallbacks(pending);
  return result;
}

absl::StatusOr<JobPage> Scheduler::Impl::List(const std::string& user,
                                              int page_size,
                                              const std::string& page_token) {
  if (page_size <= 0) page_size = kDefaultPageSize;
  page_size = std::min(page_size, kMaxPageSize);
  PendingList pending;
  absl::StatusOr<JobPage> page;
  {
    MutexLock lock(&mu_);
    SweepLocked(&pending);
    // The token is the `seq` of the last job on the previous page.
    uint64_t before = std::numeric_limits<uint64_t>::max();
    if (!page_token.empty() && (!absl::SimpleAtoi(page_token, &before) ||
                                before == 0 || before >= next_seq_)) {
      page = absl::InvalidArgumentError(absl::StrCat(
          "page_token: \"", page_token,
          "\" is not a token from this server; pass the next_page_token of "
          "the previous page, or none for the first"));
    } else {
      page = JobPage{};
      auto found = by_user_.find(user);
      if (found != by_user_.end()) {
        const std::map<uint64_t, const Job*>& jobs = found->second;
        auto it = std::make_reverse_iterator(jobs.lower_bound(before));
        for (; it != jobs.rend() &&
               page->jobs.size() < static_cast<size_t>(page_size);
             ++it) {
          page->jobs.push_back(ViewLocked(*it->second));
        }
        if (it != jobs.rend()) {
          page->next_page_token = absl::StrCat(std::prev(it)->first);
        }
      }
    }
  }
  RunCallbacks(pending);
  return page;
}

std::vector<ChipView> Scheduler::Impl::ChipsView() {
  PendingList pending;
  std::vector<ChipView> views;
  {
    MutexLock lock(&mu_);
    SweepLocked(&pending);
    for (const auto& chip : chips_) views.push_back(ChipViewLocked(*chip));
  }
  RunCallbacks(pending);
  return views;
}

ChipView Scheduler::Impl::ChipViewLocked(const Chip& chip) const {
  ChipView view;
  view.id = chip.id;
  view.busy = chip.current != nullptr;
  if (view.busy) view.running_job_id = chip.current->id;
  view.queued_jobs = static_cast<uint32_t>(queue_.RunnableOn(chip.id));
  view.jobs_started = chip.jobs_started;
  view.reconfigurations = chip.reconfigurations;
  view.busy_time = chip.busy_time;
  if (view.busy) {
    view.busy_time += std::max(clock_->Now() - chip.current->start_time,
                               absl::ZeroDuration());
  }
  return view;
}

int Scheduler::Impl::running_jobs_locked() const {
  int running = 0;
  for (const auto& chip : chips_) running += chip->current != nullptr;
  return running;
}

SchedulerStats Scheduler::Impl::Stats() {
  PendingList pending;
  SchedulerStats stats;
  {
    MutexLock lock(&mu_);
    SweepLocked(&pending);
    stats.queued_jobs = static_cast<int>(queue_.size());
    stats.running_jobs = running_jobs_locked();
    stats.users_with_queued_jobs = static_cast<int>(queue_.num_users());
    stats.retained_results = static_cast<int>(retained_.size());
    stats.retained_result_bytes = retained_bytes_;
    stats.job_records = static_cast<int>(jobs_.size());
    for (const auto& chip : chips_) {
      stats.chips.push_back(ChipViewLocked(*chip));
    }
  }
  RunCallbacks(pending);
  return stats;
}

void Scheduler::Impl::HandBackQueuedLocked(PendingList* pending) {
  for (std::shared_ptr<Job>& job : queue_.TakeAll()) {
    FinishLocked(job, JobState::kCancelled, Reason::kCancelledByShutdown,
                 ShutdownReason(), absl::OkStatus(), pending);
  }
}

void Scheduler::Impl::Drain(absl::Time deadline) {
  PendingList pending;
  {
    MutexLock lock(&mu_);
    draining_ = true;
    // With a store the queued jobs stay queued (NextJob starts none while
    // draining): they run after the restart.
    if (store_ == nullptr) HandBackQueuedLocked(&pending);
  }
  RunCallbacks(pending);
  MutexLock lock(&mu_);
  // terminal_cv_ is signalled whenever a job ends.
  while (running_jobs_locked() > 0 && absl::Now() < deadline) {
    terminal_cv_.WaitWithDeadline(&mu_, deadline);
  }
  for (auto& chip : chips_) {
    if (chip->current != nullptr) {
      RequestCancelLocked(*chip->current, Reason::kCancelledByShutdown,
                          ShutdownReason());
    }
  }
  // Runners poll their cancel flag; they return promptly.
  while (running_jobs_locked() > 0) terminal_cv_.Wait(&mu_);
}

void Scheduler::Impl::WorkerLoop(Chip& chip) {
  for (;;) {
    std::shared_ptr<Job> job = NextJob(chip);
    if (job == nullptr) return;
    FirePokes();  // its start
    CompleteJob(chip, job, RunJob(chip, job));
  }
}

std::shared_ptr<Job> Scheduler::Impl::NextJob(Chip& chip) {
  for (;;) {
    PendingList pending;
    {
      MutexLock lock(&mu_);
      for (;;) {
        if (stopping_) return nullptr;
        // Never start a job whose deadline has passed.
        SweepLocked(&pending);
        if (!pending.empty()) break;  // run those callbacks first
        // An idle worker only looks at the queue once claimed (woken for a
        // job): a spurious wake-up must not steal a job from the chip chosen
        // for it (affinity).
        // A draining scheduler with a store starts nothing: the queued jobs
        // stay in the store for the restart.
        const bool may_start = !(draining_ && store_ != nullptr);
        std::shared_ptr<Job> job = chip.idle || !may_start
                                       ? nullptr
                                       : queue_.PopFor(chip.id, clock_->Now());
        if (job != nullptr) {
          chip.current = job;
          chip.current_experiment = job->experiment;
          const bool same_config =
              chip.configured &&
              (job->config_key != 0
                   ? job->config_key == chip.config_key
                   : chip.config_key == 0 && job->user == chip.config_user);
          chip.current_reconfigure = !same_config;
          chip.reconfigurations += !same_config;
          ++chip.jobs_started;
          chip.configured = true;
          chip.config_key = job->config_key;
          chip.config_user = job->user;
          job->state = JobState::kRunning;
          job->reason = Reason::kRunning;
          job->state_reason =
              RunningReason(chip.id, /*cancel_requested=*/false);
          job->chip_id = chip.id;
          job->start_time = clock_->Now();
          job->requeued = false;
          PersistLocked(*job);
          PokeAllLocked();
          // It may not be the job this worker was woken for.
          WakeAnyWorkerLocked();
          return job;
        }
        chip.idle = true;
        chip.work_cv.Wait(&mu_);
      }
    }
    RunCallbacks(pending);
  }
}

absl::StatusOr<hxemu::v1::Result> Scheduler::Impl::RunJob(
    Chip& chip, const std::shared_ptr<Job>& job) {
  // `current_experiment` and `current_reconfigure` are this worker's own
  // (set under the lock in NextJob, read here, reset in CompleteJob).
  const WorkItem item{
      .experiment = *chip.current_experiment,
      .cancel_requested = job->cancel_requested,
      .report_progress =
          [this, job](double done_ms) {
            job->progress_ms.store(done_ms, std::memory_order_relaxed);
            if (!job->watched.load(std::memory_order_relaxed)) return;
            {
              MutexLock lock(&mu_);
              PokeLocked(*job);
            }
            FirePokes();
          },
      .reconfigure = chip.current_reconfigure,
  };
  try {
    return chip.runner(item);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("the chip runner threw an exception: ", e.what()));
  } catch (...) {
    return absl::InternalError(
        "the chip runner threw something that is not a std::exception");
  }
}

void Scheduler::Impl::CompleteJob(Chip& chip, const std::shared_ptr<Job>& job,
                                  absl::StatusOr<hxemu::v1::Result> outcome) {
  // Move the result to the heap and size it before taking the lock.
  std::shared_ptr<const hxemu::v1::Result> result;
  int64_t result_bytes = 0;
  if (outcome.ok()) {
    result = std::make_shared<const hxemu::v1::Result>(*std::move(outcome));
    result_bytes = static_cast<int64_t>(result->ByteSizeLong());
    // Before the SUCCEEDED record (FinishLocked): a record never points to
    // a result not yet written. Outside the lock: results can be large.
    if (store_ != nullptr) {
      if (absl::Status s = store_->PutResult(job->id, *result); !s.ok()) {
        std::cerr << "hxemu: state_dir: job " << job->id
                  << ": cannot store its result (" << s.message()
                  << "); it is lost at the next restart\n";
      }
    }
  }
  PendingList pending;
  {
    MutexLock lock(&mu_);
    chip.current = nullptr;
    chip.current_experiment.reset();
    const absl::Duration run =
        std::max(clock_->Now() - job->start_time, absl::ZeroDuration());
    chip.busy_time += run;
    AddUsageLocked(job->user, run);
    mean_run_time_ =
        mean_run_time_ == absl::ZeroDuration()
            ? run
            : (1 - kRunTimeAlpha) * mean_run_time_ + kRunTimeAlpha * run;
    if (result != nullptr) {
      // Whatever the runner reported last, all of it was emulated.
      job->progress_ms.store(job->runtime_ms, std::memory_order_relaxed);
      job->result = std::move(result);
      job->result_bytes = result_bytes;
      FinishLocked(job, JobState::kSucceeded, Reason::kSucceeded,
                   absl::StrCat("succeeded on chip ", chip.id),
                   absl::OkStatus(), &pending);
      const bool first = retained_.empty();
      retained_.push_back(job);
      retained_bytes_ += result_bytes;
      if (first) housekeeper_cv_.Signal();  // a new TTL to watch
    } else if (store_ != nullptr && draining_ && !stopping_ &&
               job->cancel_requested.load(std::memory_order_relaxed) &&
               job->cancel_reason_code == Reason::kCancelledByShutdown &&
               absl::IsCancelled(outcome.status())) {
      // Stopped by a draining shutdown: queued again (its record still says
      // RUNNING, so it is re-queued after the restart too).
      job->state = JobState::kQueued;
      job->requeued = true;
      job->chip_id.reset();
      job->start_time = absl::InfinitePast();
      job->cancel_requested.store(false, std::memory_order_relaxed);
      job->cancel_reason.clear();
      job->progress_ms.store(0, std::memory_order_relaxed);
      queue_.Push(job, UsageLocked(job->user));
      terminal_cv_.SignalAll();  // Drain waits for no job to run
      PokeAllLocked();
    } else if (job->cancel_requested.load(std::memory_order_relaxed) &&
               absl::IsCancelled(outcome.status())) {
      FinishLocked(job,
                   job->cancel_reason_code == Reason::kExpiredWhileRunning
                       ? JobState::kExpired
                       : JobState::kCancelled,
                   job->cancel_reason_code, job->cancel_reason,
                   absl::OkStatus(), &pending);
    } else {
      FinishLocked(job, JobState::kFailed, Reason::kFailed,
                   absl::StrCat("failed on chip ", chip.id, ": ",
                                outcome.status().ToString()),
                   outcome.status(), &pending);
    }
    SweepLocked(&pending);  // the byte budget, at once
    // The worker goes back to NextJob: claim it for itself if there is work
    // for it, else it is idle (and claimable by Submit) from now on, not only
    // once its thread got there.
    chip.idle = queue_.RunnableOn(chip.id) == 0;
  }
  RunCallbacks(pending);
}

void Scheduler::Impl::HousekeeperLoop() {
  for (;;) {
    PendingList pending;
    {
      MutexLock lock(&mu_);
      if (stopping_) return;
      SweepLocked(&pending);
      if (pending.empty() && pokes_.empty()) {
        const absl::Duration until_due =
            std::min(NextDueLocked() - clock_->Now(), kMaxHousekeeperSleep);
        housekeeper_cv_.WaitWithDeadline(&mu_, absl::Now() + until_due);
        continue;
      }
    }
    RunCallbacks(pending);
  }
}

void Scheduler::Impl::SweepLocked(PendingList* pending) {
  const absl::Time now = clock_->Now();
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const Job* raw = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    std::shared_ptr<Job> job = FindLocked(raw->id);
    const std::string limit = absl::StrCat(
        "its max_wall_time of ", absl::FormatDuration(job->max_wall_time),
        " since submission passed");
    if (job->state == JobState::kQueued) {
      queue_.Remove(*job);
      FinishLocked(job, JobState::kExpired, Reason::kExpiredInQueue,
                   absl::StrCat("expired: ", limit, " before it could start"),
                   absl::OkStatus(), pending);
    } else if (job->state == JobState::kRunning) {
      RequestCancelLocked(
          *job, Reason::kExpiredWhileRunning,
          absl::StrCat("expired: ", limit, " while running on chip ",
                       *job->chip_id));
    }
  }
  // Records: by age, then by count. Only terminal jobs are in `terminal_`.
  while (!terminal_.empty() &&
         (now >= terminal_.front()->end_time + job_record_ttl_ ||
          static_cast<int64_t>(jobs_.size()) > max_job_records_)) {
    std::shared_ptr<Job> job = std::move(terminal_.front());
    terminal_.pop_front();
    // A job still firing its callbacks is forgotten later: a
    // RemoveDoneCallback waiting for it must find it.
    if (job->firing) {
      terminal_.push_front(std::move(job));
      break;
    }
    ForgetLocked(*job);
  }
  while (!retained_.empty()) {
    Job& job = *retained_.front();
    if (now >= job.end_time + result_ttl_) {
      job.result_evicted_reason =
          absl::StrCat("result evicted: results are kept for ",
                       absl::FormatDuration(result_ttl_),
                       " (result_ttl) after the job ends");
    } else if (retained_bytes_ > max_result_bytes_) {
      job.result_evicted_reason = absl::StrCat(
          "result evicted: the server keeps at most ", max_result_bytes_,
          " bytes of results (max_result_bytes), oldest evicted first; this "
          "one had ",
          job.result_bytes, " bytes");
    } else {
      break;
    }
    job.result.reset();
    retained_bytes_ -= job.result_bytes;
    if (store_ != nullptr) {
      (void)store_->RemoveResult(job.id);
      PersistLocked(job);
    }
    retained_.pop_front();
  }
}

absl::Time Scheduler::Impl::NextDueLocked() const {
  absl::Time due = absl::InfiniteFuture();
  if (!deadlines_.empty()) due = deadlines_.begin()->first;
  if (!retained_.empty()) {
    due = std::min(due, retained_.front()->end_time + result_ttl_);
  }
  if (!terminal_.empty()) {
    due = std::min(due, terminal_.front()->end_time + job_record_ttl_);
  }
  return due;
}

void Scheduler::Impl::ForgetLocked(const Job& job) {
  if (!retained_.empty() && retained_.front().get() == &job) {
    // Its result is the oldest kept (retained_ is a subsequence of
    // terminal_, in the same order).
    retained_bytes_ -= job.result_bytes;
    retained_.pop_front();
  }
  if (!job.request_id.empty()) {
    requests_.erase(std::make_pair(job.user, job.request_id));
  }
  auto by_user = by_user_.find(job.user);
  if (by_user != by_user_.end()) {
    by_user->second.erase(job.seq);
    if (by_user->second.empty()) by_user_.erase(by_user);
  }
  const std::string id = job.id;  // `job` dies with its map entry
  if (store_ != nullptr) {
    if (absl::Status s = store_->Remove(id); !s.ok()) {
      std::cerr << "hxemu: state_dir: job " << id << ": " << s.message()
                << "\n";
    }
  }
  jobs_.erase(id);
}

JobRecord Scheduler::Impl::RecordLocked(const Job& job) const {
  JobRecord r;
  r.id = job.id;
  r.user = job.user;
  r.seq = job.seq;
  r.request_id = job.request_id;
  r.request_fingerprint = job.request_fingerprint;
  r.config_key = job.config_key;
  r.pinned_chip = job.pinned_chip();
  r.runtime_ms = job.runtime_ms;
  r.submit_time = job.submit_time;
  r.max_wall_time = job.max_wall_time;
  r.state = job.state;
  r.reason = job.reason;
  r.state_reason = job.state_reason;
  r.error = job.error;
  r.chip_id = job.chip_id;
  r.start_time = job.start_time;
  r.end_time = job.end_time;
  r.result_bytes = job.result_bytes;
  r.result_evicted_reason = job.result_evicted_reason;
  return r;
}

void Scheduler::Impl::PersistLocked(const Job& job) {
  if (store_ == nullptr) return;
  if (absl::Status s = store_->PutRecord(RecordLocked(job)); !s.ok()) {
    std::cerr << "hxemu: state_dir: job " << job.id << " ("
              << JobStateName(job.state)
              << "): cannot store its record: " << s.message() << "\n";
  }
}

void Scheduler::Impl::RestoreLocked(std::vector<JobRecord> records) {
  // Submission order: the queue is rebuilt in it, so every user's FIFO
  // (and the users' ring order) is the original one.
  std::sort(
      records.begin(), records.end(),
      [](const JobRecord& a, const JobRecord& b) { return a.seq < b.seq; });
  std::vector<std::shared_ptr<Job>> terminal;
  int requeued = 0;
  int queued = 0;
  for (JobRecord& r : records) {
    if (jobs_.contains(r.id)) continue;  // (cannot happen: one file per id)
    auto job = std::make_shared<Job>();
    job->id = r.id;
    job->user = r.user;
    job->pinned = r.pinned_chip.has_value();
    job->pinned_chip_id = r.pinned_chip.value_or(0);
    job->runtime_ms = r.runtime_ms;
    job->request_id = r.request_id;
    job->request_fingerprint = r.request_fingerprint;
    job->config_key = r.config_key;
    job->submit_time = r.submit_time;
    job->seq = r.seq;
    job->max_wall_time = r.max_wall_time;
    if (r.max_wall_time != absl::InfiniteDuration()) {
      job->deadline = r.submit_time + r.max_wall_time;
    }
    next_seq_ = std::max(next_seq_, r.seq + 1);
    if (!IsTerminal(r.state)) {
      // A job whose pinned chip is gone (fewer chips now) still waits for
      // it; the user can cancel it.
      job->state = JobState::kQueued;
      job->requeued = r.state == JobState::kRunning;
      job->experiment = std::move(r.experiment);
      requeued += job->requeued;
      ++queued;
    } else {
      job->state = r.state;
      job->reason = r.reason;
      job->state_reason = std::move(r.state_reason);
      job->error = std::move(r.error);
      job->chip_id = r.chip_id;
      job->start_time = r.start_time;
      job->end_time = r.end_time;
      job->result_bytes = r.result_bytes;
      job->result_evicted_reason = std::move(r.result_evicted_reason);
      if (job->state == JobState::kSucceeded &&
          job->result_evicted_reason.empty()) {
        job->result = std::move(r.result);
        if (job->result == nullptr) {
          job->result_evicted_reason =
              "result evicted: not found in the state_dir at server start";
        }
      }
      terminal.push_back(job);
    }
    jobs_.emplace(job->id, job);
    by_user_[job->user].emplace(job->seq, job.get());
    if (!job->request_id.empty()) {
      requests_.emplace(std::make_pair(job->user, job->request_id), job.get());
    }
    if (job->state == JobState::kQueued) {
      if (job->deadline != absl::InfiniteFuture()) {
        deadlines_.emplace(job->deadline, job.get());
      }
      queue_.Push(job, 0);
    }
  }
  // Retention order: oldest end first (`retained_` a subsequence of
  // `terminal_`).
  std::stable_sort(
      terminal.begin(), terminal.end(),
      [](const auto& a, const auto& b) { return a->end_time < b->end_time; });
  for (std::shared_ptr<Job>& job : terminal) {
    if (job->result != nullptr) {
      retained_.push_back(job);
      retained_bytes_ += job->result_bytes;
    }
    terminal_.push_back(std::move(job));
  }
  if (!records.empty()) {
    std::cerr << "hxemu: state_dir: restored " << jobs_.size() << " jobs ("
              << queued << " queued, " << requeued
              << " of them re-queued after running, " << terminal_.size()
              << " finished)\n";
  }
}

double Scheduler::Impl::UsageLocked(const std::string& user) const {
  auto it = usage_.find(user);
  if (it == usage_.end()) return 0;
  if (usage_half_life_ == absl::InfiniteDuration() ||
      usage_half_life_ <= absl::ZeroDuration()) {
    return it->second.seconds;
  }
  const double half_lives =
      (clock_->Now() - it->second.as_of) / usage_half_life_;
  return it->second.seconds * std::exp2(-std::max(half_lives, 0.0));
}

void Scheduler::Impl::AddUsageLocked(const std::string& user,
                                     absl::Duration run) {
  auto weight = user_weights_.find(user);
  const int w = weight == user_weights_.end() ? 1 : std::max(weight->second, 1);
  const double decayed = UsageLocked(user);
  Usage& usage = usage_[user];
  usage.seconds = decayed + absl::ToDoubleSeconds(run) / w;
  usage.as_of = clock_->Now();
}

void Scheduler::Impl::WakeWorkerForLocked(const Job& job) {
  const std::optional<uint32_t> pinned = job.pinned_chip();
  // The idle chip configured for it best: 2 = same configuration key,
  // 1 = same user, 0 = other.
  Chip* best = nullptr;
  int best_match = -1;
  for (auto& chip : chips_) {
    if (!chip->idle) continue;
    if (pinned.has_value() && *pinned != chip->id) continue;
    int match = 0;
    if (chip->configured) {
      if (job.config_key != 0 && chip->config_key == job.config_key) {
        match = 2;
      } else if (chip->config_user == job.user) {
        match = 1;
      }
    }
    if (match > best_match) {
      best = chip.get();
      best_match = match;
    }
  }
  if (best == nullptr) return;  // a busy chip picks it up when it is done
  best->idle = false;           // claimed: the next job wakes another worker
  best->work_cv.Signal();
}

void Scheduler::Impl::WakeAnyWorkerLocked() {
  if (queue_.empty()) return;
  for (auto& chip : chips_) {
    if (!chip->idle || queue_.RunnableOn(chip->id) == 0) continue;
    chip->idle = false;
    chip->work_cv.Signal();
    return;
  }
}

void Scheduler::Impl::FinishLocked(const std::shared_ptr<Job>& job,
                                   JobState state, Reason code,
                                   std::string reason, absl::Status error,
                                   PendingList* pending) {
  job->state = state;
  job->reason = code;
  job->state_reason = std::move(reason);
  job->error = std::move(error);
  job->end_time = clock_->Now();
  job->experiment.reset();  // records live long; experiments can be large
  // A shutdown's hand-back is not recorded: the store keeps the job queued
  // or running, so it runs after the restart.
  if (store_ != nullptr && code != Reason::kCancelledByShutdown) {
    PersistLocked(*job);
    if (absl::Status s = store_->RemoveExperiment(job->id); !s.ok()) {
      std::cerr << "hxemu: state_dir: job " << job->id << ": " << s.message()
                << "\n";
    }
  }
  deadlines_.erase({job->deadline, job.get()});
  terminal_.push_back(job);
  terminal_cv_.SignalAll();
  // The last call to its watchers; the others' queue positions moved.
  PokeAllLocked();
  job->watchers.clear();
  job->watched.store(false, std::memory_order_relaxed);
  watched_.erase(job.get());
  if (job->callbacks.empty()) return;
  PendingCallbacks entry{.job = job, .view = ViewLocked(*job), .callbacks = {}};
  entry.callbacks.reserve(job->callbacks.size());
  for (auto& [handle, callback] : job->callbacks) {
    entry.callbacks.push_back(std::move(callback));
  }
  job->callbacks.clear();
  job->firing = true;
  job->firing_thread = std::this_thread::get_id();
  pending->push_back(std::move(entry));
}

void Scheduler::Impl::RequestCancelLocked(Job& job, Reason code,
                                          std::string reason) {
  if (job.cancel_requested.load(std::memory_order_relaxed)) return;
  job.cancel_reason = std::move(reason);
  job.cancel_reason_code = code;
  job.reason = Reason::kCancelRequested;
  job.cancel_requested.store(true, std::memory_order_relaxed);
  job.state_reason = RunningReason(*job.chip_id, /*cancel_requested=*/true);
  PokeLocked(job);
}

void Scheduler::Impl::RunCallbacks(PendingList& pending) {
  FirePokes();
  if (pending.empty()) return;
  // noexcept: a throwing callback terminates the process rather than leave
  // `firing` set (which would block RemoveDoneCallback forever).
  [&]() noexcept {
    for (PendingCallbacks& entry : pending) {
      for (DoneCallback& callback : entry.callbacks) callback(entry.view);
    }
  }();
  MutexLock lock(&mu_);
  for (PendingCallbacks& entry : pending) entry.job->firing = false;
  callbacks_done_cv_.SignalAll();
}

JobView Scheduler::Impl::ViewLocked(const Job& job) const {
  JobView view;
  view.id = job.id;
  view.user = job.user;
  view.state = job.state;
  view.reason = job.reason;
  view.error = job.error;
  view.progress_ms = job.progress_ms.load(std::memory_order_relaxed);
  view.runtime_ms = job.runtime_ms;
  view.chip_id = job.chip_id;
  view.submit_time = job.submit_time;
  view.start_time = job.start_time;
  view.end_time = job.end_time;
  view.deadline = job.deadline;
  view.result_bytes = job.result_bytes;
  if (job.state == JobState::kQueued) {
    const internal::JobQueue::Ahead ahead = queue_.Position(job);
    view.queue_position = static_cast<uint32_t>(ahead.own + ahead.others);
    view.jobs_ahead_own = static_cast<uint32_t>(ahead.own);
    view.jobs_ahead_other_users = static_cast<uint32_t>(ahead.others);
    // The chips it may use, and whether all of them are busy.
    int usable = 0;
    int busy = 0;
    for (const auto& chip : chips_) {
      if (job.pinned && chip->id != job.pinned_chip_id) continue;
      ++usable;
      busy += chip->current != nullptr;
    }
    view.state_reason = QueuedReason(ahead, job, busy > 0, &view.reason);
    if (job.requeued) view.state_reason.insert(0, kRequeuedAfterRestart);
    if (draining_ && store_ != nullptr) {
      absl::StrAppend(&view.state_reason, "; ", kKeptForRestart);
    }
    if (mean_run_time_ > absl::ZeroDuration() && usable > 0) {
      // Every `usable` jobs ahead take one mean run; if all chips are busy,
      // the running ones are on average half done.
      absl::Duration wait =
          mean_run_time_ * static_cast<double>(view.queue_position / usable);
      if (busy == usable) wait += mean_run_time_ / 2;
      view.estimated_start_time = clock_->Now() + wait;
    }
  } else if (!job.result_evicted_reason.empty()) {
    view.result_evicted = true;
    view.state_reason =
        absl::StrCat(job.state_reason, "; ", job.result_evicted_reason);
  } else {
    view.state_reason = job.state_reason;
    if (job.result != nullptr && result_ttl_ != absl::InfiniteDuration()) {
      view.result_expire_time = job.end_time + result_ttl_;
    }
  }
  return view;
}

std::shared_ptr<Job> Scheduler::Impl::FindLocked(
    const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second;
}

// --- Scheduler: forwards to Impl ---

Scheduler::Scheduler(
    Options options,
    const std::function<ChipRunner(uint32_t chip_id)>& make_runner)
    : impl_(std::make_unique<Impl>(options, make_runner)) {}

Scheduler::~Scheduler() { impl_->Shutdown(); }

absl::StatusOr<std::string> Scheduler::Submit(
    std::string user, std::shared_ptr<const hxemu::v1::Experiment> experiment,
    const SubmitOptions& options) {
  absl::StatusOr<Submitted> submitted =
      impl_->Submit(std::move(user), std::move(experiment), options);
  if (!submitted.ok()) return submitted.status();
  return std::move(submitted->job_id);
}

absl::StatusOr<Submitted> Scheduler::SubmitJob(
    std::string user, std::shared_ptr<const hxemu::v1::Experiment> experiment,
    const SubmitOptions& options) {
  return impl_->Submit(std::move(user), std::move(experiment), options);
}

absl::StatusOr<JobView> Scheduler::Get(const std::string& job_id) const {
  return impl_->Get(job_id);
}

absl::StatusOr<JobView> Scheduler::Wait(const std::string& job_id,
                                        absl::Time deadline) const {
  return impl_->Wait(job_id, deadline);
}

absl::StatusOr<uint64_t> Scheduler::AddDoneCallback(
    const std::string& job_id, std::function<void(const JobView&)> callback) {
  return impl_->AddDoneCallback(job_id, std::move(callback));
}

bool Scheduler::RemoveDoneCallback(const std::string& job_id, uint64_t handle) {
  return impl_->RemoveDoneCallback(job_id, handle);
}

absl::StatusOr<uint64_t> Scheduler::AddWatcher(
    const std::string& job_id, std::function<void()> on_change) {
  return impl_->AddWatcher(job_id, std::move(on_change));
}

void Scheduler::RemoveWatcher(const std::string& job_id, uint64_t handle) {
  impl_->RemoveWatcher(job_id, handle);
}

absl::StatusOr<JobView> Scheduler::Cancel(const std::string& job_id) {
  return impl_->Cancel(job_id);
}

absl::StatusOr<std::shared_ptr<const hxemu::v1::Result>> Scheduler::GetResult(
    const std::string& job_id) const {
  return impl_->GetResult(job_id);
}

absl::StatusOr<JobPage> Scheduler::List(const std::string& user, int page_size,
                                        const std::string& page_token) const {
  return impl_->List(user, page_size, page_token);
}

std::vector<ChipView> Scheduler::ChipsView() const {
  return impl_->ChipsView();
}

SchedulerStats Scheduler::Stats() const { return impl_->Stats(); }

void Scheduler::Drain(absl::Time deadline) { impl_->Drain(deadline); }

int Scheduler::num_chips() const {
  return static_cast<int>(impl_->chips_.size());
}

}  // namespace hxemu::scheduler
