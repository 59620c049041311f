// File: scheduler.cc
//
// Design (first cut):
// - One mutex, `Impl::mu_` (an absl::Mutex behind a TSan-visible wrapper,
//   see mutex.h), guards all scheduler state: the job map, the queue, every
//   job's mutable fields and the chips' bookkeeping. Runners run and done
//   callbacks fire without it. Each job's `cancel_requested` and
//   `progress_ms` are atomics shared with the runner, so a runner never takes
//   the scheduler's lock.
// - Each chip has a worker thread and its own CondVar. An idle worker sets
//   `idle` and waits; Submit wakes exactly one idle worker that may run the
//   new job and clears its `idle` flag ("claims" it), so two quick submits
//   wake two workers. A woken worker always rescans the queue, so a wake-up
//   that finds nothing (the job was cancelled, or another chip took it) is
//   harmless.
// - Terminal transitions happen in one place (FinishLocked). It takes the
//   job's done callbacks out, marks the job `firing` and wakes Wait()ers;
//   the caller runs the callbacks once the lock is released, then clears
//   `firing` and wakes RemoveDoneCallback()ers waiting for them.
#include "hxemu/scheduler/scheduler.h"

#include <algorithm>
#include <exception>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
  }
  return "UNKNOWN";
}

namespace {

constexpr char kCancelledByUser[] = "cancelled by user";
constexpr char kCancelledByShutdown[] = "cancelled: server shutting down";

std::string QueuedReason(size_t ahead) {
  return absl::StrCat("queued: ", ahead, ahead == 1 ? " job" : " jobs",
                      " ahead");
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

  absl::StatusOr<std::string> Submit(
      std::string user, std::shared_ptr<const hxemu::v1::Experiment> experiment)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<JobView> Get(const std::string& job_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<JobView> Wait(const std::string& job_id, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<uint64_t> AddDoneCallback(const std::string& job_id,
                                           DoneCallback callback)
      ABSL_LOCKS_EXCLUDED(mu_);
  bool RemoveDoneCallback(const std::string& job_id, uint64_t handle)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<JobView> Cancel(const std::string& job_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::shared_ptr<const hxemu::v1::Result>> GetResult(
      const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);

  // The worker of `chip`: runs jobs until Shutdown.
  void WorkerLoop(Chip& chip) ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until `chip` may run a job, marks it running and returns it; null
  // once the scheduler is stopping.
  std::shared_ptr<Job> NextJob(Chip& chip) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs `job` on `chip`; turns exceptions into INTERNAL errors.
  static absl::StatusOr<hxemu::v1::Result> RunJob(
      Chip& chip, const std::shared_ptr<Job>& job);
  // Records the runner's outcome and makes the job terminal.
  void CompleteJob(Chip& chip, const std::shared_ptr<Job>& job,
                   absl::StatusOr<hxemu::v1::Result> outcome)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Wakes one idle worker that may run `job`, if there is one.
  void WakeWorkerForLocked(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes `job` terminal; appends its done callbacks to `pending`.
  void FinishLocked(const std::shared_ptr<Job>& job, JobState state,
                    std::string reason, absl::Status error,
                    PendingList* pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks the running `job` to stop, giving `reason` if it does.
  void RequestCancelLocked(Job& job, const char* reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs callbacks taken out by FinishLocked, then clears the jobs' `firing`.
  void RunCallbacks(PendingList& pending) ABSL_LOCKS_EXCLUDED(mu_);
  JobView ViewLocked(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<Job> FindLocked(const std::string& job_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_queued_jobs_;
  // The pool, sorted by id; fixed after construction (the vector, not the
  // chips' guarded fields).
  std::vector<std::unique_ptr<Chip>> chips_;

  mutable Mutex mu_;
  // Signalled whenever a job becomes terminal (Wait).
  CondVar terminal_cv_;
  // Signalled whenever a job's done callbacks have run (RemoveDoneCallback).
  CondVar callbacks_done_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Every job ever submitted, by id (kept for now; TTLs come later).
  absl::flat_hash_map<std::string, std::shared_ptr<Job>> jobs_
      ABSL_GUARDED_BY(mu_);
  internal::JobQueue queue_ ABSL_GUARDED_BY(mu_);
  uint64_t next_callback_handle_ ABSL_GUARDED_BY(mu_) = 1;
};

Scheduler::Impl::Impl(
    const Options& options,
    const std::function<ChipRunner(uint32_t chip_id)>& make_runner)
    : max_queued_jobs_(std::max(options.max_queued_jobs, 0)) {
  std::vector<uint32_t> ids = options.chip_ids;
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  for (uint32_t id : ids) {
    auto chip = std::make_unique<Chip>();
    chip->id = id;
    chip->runner = make_runner(id);
    chips_.push_back(std::move(chip));
  }
  // Start the workers only once `chips_` is complete: Submit reads it.
  for (auto& chip : chips_) {
    Chip* c = chip.get();
    c->worker = std::thread([this, c] { WorkerLoop(*c); });
  }
}

void Scheduler::Impl::Shutdown() {
  PendingList pending;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    for (std::shared_ptr<Job>& job : queue_.TakeAll()) {
      FinishLocked(job, JobState::kCancelled, kCancelledByShutdown,
                   absl::OkStatus(), &pending);
    }
    for (auto& chip : chips_) {
      if (chip->current != nullptr) {
        RequestCancelLocked(*chip->current, kCancelledByShutdown);
      }
      chip->work_cv.Signal();
    }
  }
  RunCallbacks(pending);
  for (auto& chip : chips_) chip->worker.join();
}

absl::StatusOr<std::string> Scheduler::Impl::Submit(
    std::string user, std::shared_ptr<const hxemu::v1::Experiment> experiment) {
  if (experiment == nullptr) {
    return absl::InvalidArgumentError("experiment: missing");
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
  job->experiment = std::move(experiment);
  job->submit_time = absl::Now();
  job->id = internal::NewJobId();  // outside the lock: a system call

  MutexLock lock(&mu_);
  if (stopping_) {
    return absl::UnavailableError("the scheduler is shutting down");
  }
  if (queue_.size() >= static_cast<size_t>(max_queued_jobs_)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the job queue is full: ", queue_.size(),
        " jobs are queued, the server's limit (max_queued_jobs) is ",
        max_queued_jobs_, "; retry later"));
  }
  // 128 random bits do not collide in practice; the check makes "never
  // reused" hold regardless (every job ever submitted stays in `jobs_`).
  while (jobs_.contains(job->id)) job->id = internal::NewJobId();
  jobs_.emplace(job->id, job);
  queue_.Push(job);
  WakeWorkerForLocked(*job);
  return job->id;
}

absl::StatusOr<JobView> Scheduler::Impl::Get(const std::string& job_id) {
  MutexLock lock(&mu_);
  std::shared_ptr<Job> job = FindLocked(job_id);
  if (job == nullptr) return UnknownJob(job_id);
  return ViewLocked(*job);
}

absl::StatusOr<JobView> Scheduler::Impl::Wait(const std::string& job_id,
                                              absl::Time deadline) {
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
  {
    MutexLock lock(&mu_);
    std::shared_ptr<Job> job = FindLocked(job_id);
    if (job == nullptr) return UnknownJob(job_id);
    handle = next_callback_handle_++;
    if (!IsTerminal(job->state)) {
      job->callbacks.emplace_back(handle, std::move(callback));
      return handle;
    }
    view = ViewLocked(*job);
  }
  // Already terminal: fire at once, on this thread, without the lock.
  [&]() noexcept { callback(view); }();
  return handle;
}

bool Scheduler::Impl::RemoveDoneCallback(const std::string& job_id,
                                         uint64_t handle) {
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

absl::StatusOr<JobView> Scheduler::Impl::Cancel(const std::string& job_id) {
  PendingList pending;
  JobView view;
  {
    MutexLock lock(&mu_);
    std::shared_ptr<Job> job = FindLocked(job_id);
    if (job == nullptr) return UnknownJob(job_id);
    switch (job->state) {
      case JobState::kQueued:
        queue_.Remove(*job);
        FinishLocked(job, JobState::kCancelled, kCancelledByUser,
                     absl::OkStatus(), &pending);
        break;
      case JobState::kRunning:
        RequestCancelLocked(*job, kCancelledByUser);
        break;
      case JobState::kSucceeded:
      case JobState::kFailed:
      case JobState::kCancelled:
        break;
    }
    view = ViewLocked(*job);
  }
  RunCallbacks(pending);
  return view;
}

absl::StatusOr<std::shared_ptr<const hxemu::v1::Result>>
Scheduler::Impl::GetResult(const std::string& job_id) {
  MutexLock lock(&mu_);
  std::shared_ptr<Job> job = FindLocked(job_id);
  if (job == nullptr) return UnknownJob(job_id);
  if (job->state != JobState::kSucceeded) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " has no result: it is ", JobStateName(job->state),
        " (", ViewLocked(*job).state_reason, "), not SUCCEEDED"));
  }
  return job->result;
}

void Scheduler::Impl::WorkerLoop(Chip& chip) {
  for (;;) {
    std::shared_ptr<Job> job = NextJob(chip);
    if (job == nullptr) return;
    CompleteJob(chip, job, RunJob(chip, job));
  }
}

std::shared_ptr<Job> Scheduler::Impl::NextJob(Chip& chip) {
  MutexLock lock(&mu_);
  for (;;) {
    if (stopping_) return nullptr;
    if (std::shared_ptr<Job> job = queue_.PopFor(chip.id)) {
      chip.idle = false;
      chip.current = job;
      job->state = JobState::kRunning;
      job->state_reason = RunningReason(chip.id, /*cancel_requested=*/false);
      job->chip_id = chip.id;
      job->start_time = absl::Now();
      return job;
    }
    chip.idle = true;
    chip.work_cv.Wait(&mu_);
  }
}

absl::StatusOr<hxemu::v1::Result> Scheduler::Impl::RunJob(
    Chip& chip, const std::shared_ptr<Job>& job) {
  const WorkItem item{
      .experiment = *job->experiment,
      .cancel_requested = job->cancel_requested,
      .report_progress =
          [job](double done_ms) {
            job->progress_ms.store(done_ms, std::memory_order_relaxed);
          },
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
  // Move the result to the heap before taking the lock.
  std::shared_ptr<const hxemu::v1::Result> result;
  if (outcome.ok()) {
    result = std::make_shared<const hxemu::v1::Result>(*std::move(outcome));
  }
  PendingList pending;
  {
    MutexLock lock(&mu_);
    chip.current = nullptr;
    if (result != nullptr) {
      // Whatever the runner reported last, all of it was emulated.
      job->progress_ms.store(job->experiment->runtime_ms(),
                             std::memory_order_relaxed);
      job->result = std::move(result);
      FinishLocked(job, JobState::kSucceeded,
                   absl::StrCat("succeeded on chip ", chip.id),
                   absl::OkStatus(), &pending);
    } else if (job->cancel_requested.load(std::memory_order_relaxed) &&
               absl::IsCancelled(outcome.status())) {
      FinishLocked(job, JobState::kCancelled, job->cancel_reason,
                   absl::OkStatus(), &pending);
    } else {
      FinishLocked(job, JobState::kFailed,
                   absl::StrCat("failed on chip ", chip.id, ": ",
                                outcome.status().ToString()),
                   outcome.status(), &pending);
    }
  }
  RunCallbacks(pending);
}

void Scheduler::Impl::WakeWorkerForLocked(const Job& job) {
  const std::optional<uint32_t> pinned = job.pinned_chip();
  for (auto& chip : chips_) {
    if (!chip->idle) continue;
    if (pinned.has_value() && *pinned != chip->id) continue;
    chip->idle = false;  // claimed: the next job wakes another worker
    chip->work_cv.Signal();
    return;
  }
  // No idle worker may run it: a busy one picks it up when it is done.
}

void Scheduler::Impl::FinishLocked(const std::shared_ptr<Job>& job,
                                   JobState state, std::string reason,
                                   absl::Status error, PendingList* pending) {
  job->state = state;
  job->state_reason = std::move(reason);
  job->error = std::move(error);
  job->end_time = absl::Now();
  terminal_cv_.SignalAll();
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

void Scheduler::Impl::RequestCancelLocked(Job& job, const char* reason) {
  if (job.cancel_requested.load(std::memory_order_relaxed)) return;
  job.cancel_reason = reason;
  job.cancel_requested.store(true, std::memory_order_relaxed);
  job.state_reason = RunningReason(*job.chip_id, /*cancel_requested=*/true);
}

void Scheduler::Impl::RunCallbacks(PendingList& pending) {
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
  view.error = job.error;
  view.progress_ms = job.progress_ms.load(std::memory_order_relaxed);
  view.runtime_ms = job.experiment->runtime_ms();
  view.chip_id = job.chip_id;
  view.submit_time = job.submit_time;
  view.start_time = job.start_time;
  view.end_time = job.end_time;
  if (job.state == JobState::kQueued) {
    const size_t ahead = queue_.Position(job);
    view.queue_position = static_cast<uint32_t>(ahead);
    view.state_reason = QueuedReason(ahead);
  } else {
    view.state_reason = job.state_reason;
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
    std::string user, std::shared_ptr<const hxemu::v1::Experiment> experiment) {
  return impl_->Submit(std::move(user), std::move(experiment));
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

absl::StatusOr<JobView> Scheduler::Cancel(const std::string& job_id) {
  return impl_->Cancel(job_id);
}

absl::StatusOr<std::shared_ptr<const hxemu::v1::Result>> Scheduler::GetResult(
    const std::string& job_id) const {
  return impl_->GetResult(job_id);
}

int Scheduler::num_chips() const {
  return static_cast<int>(impl_->chips_.size());
}

}  // namespace hxemu::scheduler
