// File: job.h (internal to hxemu_scheduler)
//
// One submitted job, as the scheduler keeps it. API users see JobView
// snapshots only.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "hxemu/scheduler/scheduler.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::scheduler::internal {

using DoneCallback = std::function<void(const JobView&)>;

// Locking: the fields under "Immutable" are set before the job is published
// (inserted into the scheduler's job map) and never change, so they are read
// without a lock. The fields under "Guarded" belong to the owning scheduler's
// mutex (Scheduler::Impl::mu_; not expressible as ABSL_GUARDED_BY here). The
// atomics are shared with the runner of the chip the job runs on.
struct Job {
  // The chip the job is pinned to (experiment.chip_id), if any.
  std::optional<uint32_t> pinned_chip() const {
    if (!pinned) return std::nullopt;
    return pinned_chip_id;
  }

  // --- Immutable ---
  std::string id;
  std::string user;
  // experiment.chip_id, copied: the experiment is dropped once terminal.
  bool pinned = false;
  uint32_t pinned_chip_id = 0;
  double runtime_ms = 0;   // experiment.runtime_ms [ms hardware]
  std::string request_id;  // SubmitOptions::request_id
  uint64_t request_fingerprint = 0;
  uint64_t config_key = 0;
  absl::Time submit_time = absl::InfinitePast();
  // Order of submission over all users (List's page tokens).
  uint64_t seq = 0;
  // SubmitOptions::max_wall_time and submit_time + it (InfiniteFuture: none).
  absl::Duration max_wall_time = absl::InfiniteDuration();
  absl::Time deadline = absl::InfiniteFuture();

  // --- Guarded by the scheduler's mutex ---
  // Set before publication; read by the runner of the running job (which
  // nobody else modifies); released when the job becomes terminal (records
  // are kept for long, experiments can be large).
  std::shared_ptr<const hxemu::v1::Experiment> experiment;
  JobState state = JobState::kQueued;
  Reason reason = Reason::kWaitingForChip;  // unused while queued
  // Reason for the current state; unused while queued (a queued job's reason
  // is computed from its queue position when a view is taken).
  std::string state_reason;
  // The runner's failure; OK unless state is kFailed.
  absl::Status error;
  std::optional<uint32_t> chip_id;  // set once running
  absl::Time start_time = absl::InfinitePast();
  absl::Time end_time = absl::InfinitePast();
  // Reason to report if a cancel request stops the running job, e.g.
  // "cancelled by user"; empty while no cancel was requested.
  std::string cancel_reason;
  Reason cancel_reason_code = Reason::kCancelledByUser;
  // Set iff state is kSucceeded and the result was not evicted.
  std::shared_ptr<const hxemu::v1::Result> result;
  int64_t result_bytes = 0;  // its serialized size
  // Why the result was evicted; empty if it was not.
  std::string result_evicted_reason;
  // Done callbacks not yet fired, by handle, in the order they were added.
  // Emptied when the job becomes terminal.
  std::vector<std::pair<uint64_t, DoneCallback>> callbacks;
  // True while the callbacks taken out at the terminal transition run, on
  // thread `firing_thread` (RemoveDoneCallback waits for them).
  bool firing = false;
  std::thread::id firing_thread;
  // Queued again after it had started: restored from the store as RUNNING
  // (server restart) or stopped by a draining shutdown.
  bool requeued = false;
  // Watchers (Scheduler::AddWatcher) by handle; cleared when terminal.
  std::vector<std::pair<uint64_t, std::shared_ptr<const std::function<void()>>>>
      watchers;

  // Whether `watchers` is not empty (written under the scheduler's mutex,
  // read by the runner): progress reports take the lock only then.
  std::atomic<bool> watched{false};

  // --- Shared with the runner ---
  // Set (once, under the scheduler's mutex) when the job is cancelled while
  // running; the runner polls it.
  std::atomic<bool> cancel_requested{false};
  // Emulated time done [ms hardware], as last reported by the runner.
  std::atomic<double> progress_ms{0.0};
};

}  // namespace hxemu::scheduler::internal
