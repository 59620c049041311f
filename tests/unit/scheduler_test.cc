// Tests of the microscheduler (hxemu_scheduler).
//
// Most tests drive the chips by hand through a Gate: a gated run announces
// that it started, then blocks until the test releases it or the scheduler
// sets its cancel flag. So every state can be observed without sleeping for
// synchronisation. Jobs are told apart by their experiment's seed (the
// "tag"). Every blocking helper gives up after kTimeout, so a bug fails a
// test instead of hanging it.
#include "hxemu/scheduler/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;

// Longer than any correct test needs; reaching it means a bug.
constexpr absl::Duration kTimeout = absl::Seconds(20);
constexpr double kRuntimeMs = 8.0;

std::shared_ptr<const v1::Experiment> MakeExperiment(
    uint64_t tag, std::optional<uint32_t> chip_id = std::nullopt) {
  auto experiment = std::make_shared<v1::Experiment>();
  experiment->set_seed(tag);
  experiment->set_runtime_ms(kRuntimeMs);
  if (chip_id.has_value()) experiment->set_chip_id(*chip_id);
  return experiment;
}

// A one-shot event for the test's own threads.
class Event {
 public:
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    notified_ = true;
    cv_.notify_all();
  }
  // True once notified; false if `timeout` passed first.
  bool WaitFor(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                        [this] { return notified_; });
  }
  bool notified() {
    std::lock_guard<std::mutex> lock(mu_);
    return notified_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;  // guarded by mu_
};

// The runners' remote control. It must outlive the scheduler using it.
class Gate {
 public:
  // The runner of chip `chip_id`.
  ChipRunner Runner(uint32_t chip_id) {
    return [this, chip_id](const WorkItem& item) { return Run(chip_id, item); };
  }

  // Blocks until `n` runs have started in total; false on timeout.
  bool AwaitStarts(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, Chrono(kTimeout),
                        [&] { return started_.size() >= n; });
  }

  // Blocks until the job tagged `tag` runs; returns its chip, or nullopt on
  // timeout.
  std::optional<uint32_t> AwaitStart(uint64_t tag) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, Chrono(kTimeout),
                      [&] { return runs_[tag].starts > 0; })) {
      return std::nullopt;
    }
    return runs_[tag].chip;
  }

  // Lets the run of `tag` return `outcome` (before or after it started).
  // Without an outcome it returns a Result naming its chip.
  void Release(uint64_t tag,
               std::optional<absl::StatusOr<v1::Result>> outcome = {}) {
    std::lock_guard<std::mutex> lock(mu_);
    runs_[tag].released = true;
    runs_[tag].outcome = std::move(outcome);
    cv_.notify_all();
  }

  // Makes the running job `tag` report `done_ms` of progress; returns once
  // it has (false on timeout).
  bool ReportProgress(uint64_t tag, double done_ms) {
    std::unique_lock<std::mutex> lock(mu_);
    runs_[tag].progress = done_ms;
    cv_.notify_all();
    return cv_.wait_for(lock, Chrono(kTimeout),
                        [&] { return !runs_[tag].progress.has_value(); });
  }

  // The run of `tag` will not look at its cancel flag.
  void IgnoreCancel(uint64_t tag) {
    std::lock_guard<std::mutex> lock(mu_);
    runs_[tag].ignore_cancel = true;
  }

  // Tags in the order their runs started.
  std::vector<uint64_t> started() {
    std::lock_guard<std::mutex> lock(mu_);
    return started_;
  }
  // Whether the run of `tag` returned because of its cancel flag.
  bool saw_cancel(uint64_t tag) {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_[tag].saw_cancel;
  }
  // Runs in progress now.
  int running() {
    std::lock_guard<std::mutex> lock(mu_);
    return running_;
  }

 private:
  struct RunState {
    int starts = 0;
    uint32_t chip = 0;
    bool released = false;
    std::optional<absl::StatusOr<v1::Result>> outcome;
    std::optional<double> progress;  // to report
    bool ignore_cancel = false;
    bool saw_cancel = false;
  };

  static std::chrono::nanoseconds Chrono(absl::Duration d) {
    return absl::ToChronoNanoseconds(d);
  }

  absl::StatusOr<v1::Result> Run(uint32_t chip_id, const WorkItem& item) {
    const uint64_t tag = item.experiment.seed();
    std::unique_lock<std::mutex> lock(mu_);
    RunState& run = runs_[tag];  // std::map: stays valid
    ++run.starts;
    run.chip = chip_id;
    started_.push_back(tag);
    ++running_;
    cv_.notify_all();
    absl::StatusOr<v1::Result> outcome;
    const absl::Time give_up = absl::Now() + kTimeout;
    for (;;) {
      if (run.progress.has_value()) {
        item.report_progress(*run.progress);
        run.progress.reset();
        cv_.notify_all();
        continue;
      }
      if (run.released) {
        if (run.outcome.has_value()) {
          outcome = *run.outcome;
        } else {
          v1::Result result;
          result.set_chip_id(chip_id);
          result.set_runtime_ms(item.experiment.runtime_ms());
          outcome = std::move(result);
        }
        break;
      }
      if (!run.ignore_cancel && item.cancel_requested.load()) {
        run.saw_cancel = true;
        outcome = absl::CancelledError("run stopped: cancel requested");
        break;
      }
      if (absl::Now() > give_up) {  // a bug: fail instead of hanging
        ADD_FAILURE() << "job " << tag << " was neither released nor cancelled";
        outcome = absl::DeadlineExceededError("gate timed out");
        break;
      }
      // The cancel flag is not a gate event: poll it, as a real runner does
      // between emulation steps.
      cv_.wait_for(lock, std::chrono::milliseconds(1));
    }
    --running_;
    return outcome;
  }

  // std::mutex, not absl::Mutex: Debian's Abseil is not TSan-instrumented.
  std::mutex mu_;
  std::condition_variable cv_;         // any change of the fields below
  std::map<uint64_t, RunState> runs_;  // guarded by mu_
  std::vector<uint64_t> started_;      // guarded by mu_
  int running_ = 0;                    // guarded by mu_
};

std::unique_ptr<Scheduler> MakeScheduler(Gate& gate,
                                         std::vector<uint32_t> chip_ids,
                                         int max_queued_jobs = 10000) {
  Options options;
  options.chip_ids = std::move(chip_ids);
  options.max_queued_jobs = max_queued_jobs;
  return std::make_unique<Scheduler>(
      options, [&gate](uint32_t chip_id) { return gate.Runner(chip_id); });
}

std::unique_ptr<Scheduler> MakeSchedulerWith(Gate& gate, Options options) {
  return std::make_unique<Scheduler>(
      options, [&gate](uint32_t chip_id) { return gate.Runner(chip_id); });
}

// SubmitOptions with some fields set by `set`.
template <typename Set>
SubmitOptions WithOptions(Set set) {
  SubmitOptions options;
  set(options);
  return options;
}

// Submits the job `tag`; records a test failure and returns "" on error.
std::string Submit(Scheduler& scheduler, uint64_t tag,
                   std::optional<uint32_t> chip_id = std::nullopt,
                   std::string user = "alice") {
  absl::StatusOr<std::string> id =
      scheduler.Submit(std::move(user), MakeExperiment(tag, chip_id));
  EXPECT_TRUE(id.ok()) << id.status();
  return id.value_or("");
}

JobView GetView(const Scheduler& scheduler, const std::string& id) {
  absl::StatusOr<JobView> view = scheduler.Get(id);
  EXPECT_TRUE(view.ok()) << view.status();
  return view.value_or(JobView{});
}

// Waits until job `id` is terminal; records a test failure if it is not.
JobView WaitTerminal(const Scheduler& scheduler, const std::string& id) {
  absl::StatusOr<JobView> view = scheduler.Wait(id, absl::Now() + kTimeout);
  EXPECT_TRUE(view.ok()) << view.status();
  if (!view.ok()) return JobView{};
  EXPECT_TRUE(IsTerminal(view->state))
      << "job " << id << " is still " << JobStateName(view->state);
  return *view;
}

TEST(Scheduler, RunsJobsOnOneChipInSubmitOrder) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  std::vector<std::string> ids;
  for (uint64_t tag = 0; tag < 5; ++tag) ids.push_back(Submit(*scheduler, tag));
  // Release whichever job starts next, so a wrong order shows in `started`.
  for (size_t n = 1; n <= ids.size(); ++n) {
    ASSERT_TRUE(gate.AwaitStarts(n));
    gate.Release(gate.started().back());
  }
  for (const std::string& id : ids) {
    EXPECT_EQ(WaitTerminal(*scheduler, id).state, JobState::kSucceeded);
  }
  EXPECT_THAT(gate.started(), ElementsAre(0, 1, 2, 3, 4));
}

TEST(Scheduler, RunsJobsOnTwoChipsInParallel) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0, 1});
  const std::string a = Submit(*scheduler, 1);
  const std::string b = Submit(*scheduler, 2);
  // Both start although neither was released.
  const std::optional<uint32_t> chip_a = gate.AwaitStart(1);
  const std::optional<uint32_t> chip_b = gate.AwaitStart(2);
  ASSERT_TRUE(chip_a.has_value() && chip_b.has_value());
  EXPECT_NE(*chip_a, *chip_b);
  EXPECT_EQ(gate.running(), 2);
  const JobView view_a = GetView(*scheduler, a);
  EXPECT_EQ(view_a.state, JobState::kRunning);
  EXPECT_EQ(view_a.chip_id, chip_a);
  EXPECT_EQ(view_a.state_reason, absl::StrCat("running on chip ", *chip_a));
  EXPECT_EQ(GetView(*scheduler, b).state, JobState::kRunning);
  gate.Release(1);
  gate.Release(2);
  EXPECT_EQ(WaitTerminal(*scheduler, a).chip_id, chip_a);
  EXPECT_EQ(WaitTerminal(*scheduler, b).chip_id, chip_b);
}

// Back-to-back submits must wake one idle worker each, not the same one
// several times (then jobs would wait while chips sit idle).
TEST(Scheduler, QuickSubmitsWakeDistinctIdleChips) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0, 1, 2, 3, 4, 5, 6, 7});
  std::vector<std::string> ids;
  for (uint64_t tag = 0; tag < 8; ++tag) ids.push_back(Submit(*scheduler, tag));
  ASSERT_TRUE(gate.AwaitStarts(8));  // none released: all run at once
  std::set<uint32_t> chips;
  for (uint64_t tag = 0; tag < 8; ++tag) chips.insert(*gate.AwaitStart(tag));
  EXPECT_EQ(chips.size(), 8u);
}

TEST(Scheduler, PinnedJobWaitsForItsChip) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0, 1});
  const std::string a = Submit(*scheduler, 1, /*chip_id=*/1);
  ASSERT_EQ(gate.AwaitStart(1), 1u);
  const std::string b = Submit(*scheduler, 2, /*chip_id=*/1);
  // A later, unpinned job overtakes b on the free chip 0; b keeps waiting.
  const std::string c = Submit(*scheduler, 3);
  ASSERT_EQ(gate.AwaitStart(3), 0u);
  EXPECT_EQ(GetView(*scheduler, b).state, JobState::kQueued);
  gate.Release(3);
  WaitTerminal(*scheduler, c);
  // Chip 0 is free again and has looked at the queue (it took d): b waits.
  const std::string d = Submit(*scheduler, 4);
  ASSERT_EQ(gate.AwaitStart(4), 0u);
  const JobView view_b = GetView(*scheduler, b);
  EXPECT_EQ(view_b.state, JobState::kQueued);
  EXPECT_FALSE(view_b.chip_id.has_value());
  // Chip 1 frees up: b runs there.
  gate.Release(1);
  EXPECT_EQ(gate.AwaitStart(2), 1u);
  gate.Release(2);
  gate.Release(4);
  EXPECT_EQ(WaitTerminal(*scheduler, b).chip_id, 1u);
  EXPECT_THAT(gate.started(), ElementsAre(1, 3, 4, 2));
}

TEST(Scheduler, RejectsUnknownChipId) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {1, 0});
  absl::StatusOr<std::string> id =
      scheduler->Submit("alice", MakeExperiment(1, 7));
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(id.status().message(),
            "experiment.chip_id: chip 7 does not exist; this server has "
            "chips 0, 1");
  EXPECT_EQ(scheduler->num_chips(), 2);
}

TEST(Scheduler, RejectsNullExperimentAndEmptyPool) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  EXPECT_EQ(scheduler->Submit("alice", nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto no_chips = MakeScheduler(gate, {});
  EXPECT_EQ(no_chips->num_chips(), 0);
  EXPECT_EQ(no_chips->Submit("alice", MakeExperiment(1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(Scheduler, IgnoresDuplicateChipIds) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {3, 3});
  EXPECT_EQ(scheduler->num_chips(), 1);
  const std::string a = Submit(*scheduler, 1, /*chip_id=*/3);
  EXPECT_EQ(gate.AwaitStart(1), 3u);
  gate.Release(1);
  EXPECT_EQ(WaitTerminal(*scheduler, a).state, JobState::kSucceeded);
}

TEST(Scheduler, RejectsSubmitWhenQueueIsFull) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0}, /*max_queued_jobs=*/2);
  Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());  // running: not queued
  const std::string b = Submit(*scheduler, 2);
  Submit(*scheduler, 3);
  absl::StatusOr<std::string> full =
      scheduler->Submit("bob", MakeExperiment(4));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status().message(), HasSubstr("max_queued_jobs"));
  EXPECT_THAT(full.status().message(), HasSubstr("is 2"));
  // Cancelling a queued job makes room again.
  ASSERT_TRUE(scheduler->Cancel(b).ok());
  EXPECT_TRUE(scheduler->Submit("bob", MakeExperiment(4)).ok());
}

TEST(Scheduler, ReportsQueuePositions) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  const std::string b = Submit(*scheduler, 2);
  const std::string c = Submit(*scheduler, 3);
  const std::string d = Submit(*scheduler, 4);
  EXPECT_EQ(GetView(*scheduler, a).queue_position, 0u);
  const JobView view_b = GetView(*scheduler, b);
  const JobView view_c = GetView(*scheduler, c);
  const JobView view_d = GetView(*scheduler, d);
  EXPECT_EQ(view_b.queue_position, 0u);
  EXPECT_EQ(view_b.state_reason, "queued: 0 jobs ahead");
  EXPECT_EQ(view_c.queue_position, 1u);
  EXPECT_EQ(view_c.state_reason, "queued: 1 job ahead");
  EXPECT_EQ(view_d.queue_position, 2u);
  EXPECT_EQ(view_d.state_reason, "queued: 2 jobs ahead");
  // Jobs behind a cancelled one move up.
  ASSERT_TRUE(scheduler->Cancel(b).ok());
  EXPECT_EQ(GetView(*scheduler, c).queue_position, 0u);
  EXPECT_EQ(GetView(*scheduler, d).queue_position, 1u);
  // ... and so do those behind one that starts.
  gate.Release(1);
  ASSERT_TRUE(gate.AwaitStart(3).has_value());
  EXPECT_EQ(GetView(*scheduler, d).queue_position, 0u);
}

TEST(Scheduler, CancelQueuedJobRemovesIt) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  const std::string b = Submit(*scheduler, 2);
  const std::string c = Submit(*scheduler, 3);

  absl::StatusOr<JobView> cancelled = scheduler->Cancel(b);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state, JobState::kCancelled);  // at once
  EXPECT_EQ(cancelled->state_reason, "cancelled by user");
  EXPECT_TRUE(cancelled->error.ok());
  EXPECT_NE(cancelled->end_time, absl::InfinitePast());
  EXPECT_EQ(cancelled->start_time, absl::InfinitePast());
  EXPECT_EQ(GetView(*scheduler, b).state, JobState::kCancelled);

  gate.Release(1);
  gate.Release(3);
  EXPECT_EQ(WaitTerminal(*scheduler, c).state, JobState::kSucceeded);
  EXPECT_THAT(gate.started(), ElementsAre(1, 3));  // b never ran
  EXPECT_EQ(GetView(*scheduler, b).state, JobState::kCancelled);
}

TEST(Scheduler, CancelRunningJobStopsItsRunner) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());

  absl::StatusOr<JobView> requested = scheduler->Cancel(a);
  ASSERT_TRUE(requested.ok()) << requested.status();
  // A request only: the job runs until its runner returns.
  EXPECT_EQ(requested->state, JobState::kRunning);
  EXPECT_EQ(requested->state_reason, "running on chip 0, cancel requested");

  const JobView done = WaitTerminal(*scheduler, a);
  EXPECT_TRUE(gate.saw_cancel(1));
  EXPECT_EQ(done.state, JobState::kCancelled);  // not FAILED
  EXPECT_EQ(done.state_reason, "cancelled by user");
  EXPECT_TRUE(done.error.ok());
  EXPECT_EQ(done.chip_id, 0u);
  EXPECT_EQ(scheduler->GetResult(a).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(Scheduler, RunnerThatFinishesDespiteCancelSucceeds) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  gate.IgnoreCancel(1);
  const std::string a = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  ASSERT_TRUE(scheduler->Cancel(a).ok());
  gate.Release(1);
  const JobView done = WaitTerminal(*scheduler, a);
  EXPECT_EQ(done.state, JobState::kSucceeded);
  EXPECT_TRUE(scheduler->GetResult(a).ok());
}

TEST(Scheduler, CancelledErrorWithoutCancelRequestIsFailure) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  gate.Release(1, absl::CancelledError("chip reset"));
  const JobView done = WaitTerminal(*scheduler, a);
  EXPECT_EQ(done.state, JobState::kFailed);
  EXPECT_EQ(done.error, absl::CancelledError("chip reset"));
}

TEST(Scheduler, CancelTerminalJobIsNoOp) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  gate.Release(1);
  const JobView before = WaitTerminal(*scheduler, a);
  ASSERT_EQ(before.state, JobState::kSucceeded);

  absl::StatusOr<JobView> after = scheduler->Cancel(a);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->state, JobState::kSucceeded);
  EXPECT_EQ(after->state_reason, before.state_reason);
  EXPECT_EQ(after->end_time, before.end_time);
  EXPECT_TRUE(scheduler->GetResult(a).ok());

  // Same for a cancelled job: the reason stays.
  const std::string b = Submit(*scheduler, 2);
  ASSERT_TRUE(gate.AwaitStart(2).has_value());
  ASSERT_TRUE(scheduler->Cancel(b).ok());
  ASSERT_EQ(WaitTerminal(*scheduler, b).state, JobState::kCancelled);
  EXPECT_EQ(scheduler->Cancel(b)->state_reason, "cancelled by user");
}

TEST(Scheduler, WaitWithPastOrShortDeadlineReturnsNonTerminalView) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  const std::string b = Submit(*scheduler, 2);

  absl::StatusOr<JobView> past = scheduler->Wait(b, absl::InfinitePast());
  ASSERT_TRUE(past.ok()) << past.status();
  EXPECT_EQ(past->state, JobState::kQueued);

  const absl::Time start = absl::Now();
  absl::StatusOr<JobView> short_wait =
      scheduler->Wait(a, start + absl::Milliseconds(20));
  ASSERT_TRUE(short_wait.ok()) << short_wait.status();
  EXPECT_EQ(short_wait->state, JobState::kRunning);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));  // it did wait
}

TEST(Scheduler, WaitReturnsTerminalView) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  absl::StatusOr<JobView> waited;
  Event returned;
  std::thread waiter([&] {
    waited = scheduler->Wait(a, absl::InfiniteFuture());
    returned.Notify();
  });
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  EXPECT_FALSE(returned.notified());  // blocks while the job runs
  gate.Release(1);
  EXPECT_TRUE(returned.WaitFor(kTimeout));
  waiter.join();
  ASSERT_TRUE(waited.ok()) << waited.status();
  EXPECT_EQ(waited->state, JobState::kSucceeded);
  EXPECT_EQ(waited->state_reason, "succeeded on chip 0");
  EXPECT_EQ(waited->id, a);
}

TEST(Scheduler, DoneCallbackFiresOnceWithTerminalView) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  std::atomic<int> calls{0};
  Event fired;
  JobView seen;  // written by the callback before `fired`
  ASSERT_TRUE(scheduler
                  ->AddDoneCallback(a,
                                    [&](const JobView& view) {
                                      seen = view;
                                      if (++calls == 1) fired.Notify();
                                    })
                  .ok());
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  EXPECT_EQ(calls.load(), 0);
  gate.Release(1);
  ASSERT_TRUE(fired.WaitFor(kTimeout));
  EXPECT_EQ(seen.id, a);
  EXPECT_EQ(seen.state, JobState::kSucceeded);
  // Nothing later fires it again: cancelling the finished job, shutdown.
  ASSERT_TRUE(scheduler->Cancel(a).ok());
  scheduler.reset();
  EXPECT_EQ(calls.load(), 1);
}

TEST(Scheduler, DoneCallbackFiresForCancelledQueuedJob) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  const std::string b = Submit(*scheduler, 2);
  std::vector<JobState> states;  // the callback runs inside Cancel
  ASSERT_TRUE(scheduler
                  ->AddDoneCallback(
                      b, [&](const JobView& v) { states.push_back(v.state); })
                  .ok());
  ASSERT_TRUE(scheduler->Cancel(b).ok());
  EXPECT_THAT(states, ElementsAre(JobState::kCancelled));
}

TEST(Scheduler, DoneCallbackFiresAtOnceWhenAlreadyTerminal) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  gate.Release(1, absl::InternalError("boom"));
  ASSERT_EQ(WaitTerminal(*scheduler, a).state, JobState::kFailed);

  int calls = 0;
  std::thread::id thread;
  JobView seen;
  absl::StatusOr<uint64_t> handle =
      scheduler->AddDoneCallback(a, [&](const JobView& view) {
        ++calls;
        thread = std::this_thread::get_id();
        seen = view;
      });
  ASSERT_TRUE(handle.ok()) << handle.status();
  // Before AddDoneCallback returned, on this thread.
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(thread, std::this_thread::get_id());
  EXPECT_EQ(seen.state, JobState::kFailed);
  EXPECT_FALSE(scheduler->RemoveDoneCallback(a, *handle));  // already ran
  scheduler.reset();
  EXPECT_EQ(calls, 1);
}

TEST(Scheduler, RemovedDoneCallbackNeverFires) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  std::atomic<int> removed_calls{0};
  std::atomic<int> kept_calls{0};
  absl::StatusOr<uint64_t> removed =
      scheduler->AddDoneCallback(a, [&](const JobView&) { ++removed_calls; });
  absl::StatusOr<uint64_t> kept =
      scheduler->AddDoneCallback(a, [&](const JobView&) { ++kept_calls; });
  ASSERT_TRUE(removed.ok() && kept.ok());
  EXPECT_NE(*removed, *kept);
  EXPECT_TRUE(scheduler->RemoveDoneCallback(a, *removed));
  EXPECT_FALSE(scheduler->RemoveDoneCallback(a, *removed));  // gone already
  gate.Release(1);
  WaitTerminal(*scheduler, a);
  scheduler.reset();  // all callbacks have run once this returns
  EXPECT_EQ(removed_calls.load(), 0);
  EXPECT_EQ(kept_calls.load(), 1);
}

TEST(Scheduler, RemoveDoneCallbackWaitsForRunningCallback) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  Event callback_started;
  Event let_callback_finish;
  std::atomic<bool> callback_finished{false};
  absl::StatusOr<uint64_t> handle =
      scheduler->AddDoneCallback(a, [&](const JobView&) {
        callback_started.Notify();
        // Test only: a real callback must not block.
        let_callback_finish.WaitFor(kTimeout);
        callback_finished = true;
      });
  ASSERT_TRUE(handle.ok());
  gate.Release(1);
  ASSERT_TRUE(callback_started.WaitFor(kTimeout));

  Event remove_returned;
  bool removed = true;
  std::thread remover([&] {
    removed = scheduler->RemoveDoneCallback(a, *handle);
    remove_returned.Notify();
  });
  // While the callback runs, RemoveDoneCallback must not return. (A broken
  // scheduler would return at once; 50 ms gives it ample time to show.)
  EXPECT_FALSE(remove_returned.WaitFor(absl::Milliseconds(50)));
  let_callback_finish.Notify();
  EXPECT_TRUE(remove_returned.WaitFor(kTimeout));
  remover.join();
  EXPECT_FALSE(removed);
  EXPECT_TRUE(callback_finished.load());
}

TEST(Scheduler, FailingRunnerFailsJobWithItsMessage) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  gate.Release(1, absl::InvalidArgumentError(
                      "populations[0].size: 600 neurons do not fit"));
  const JobView done = WaitTerminal(*scheduler, a);
  EXPECT_EQ(done.state, JobState::kFailed);
  EXPECT_EQ(done.error, absl::InvalidArgumentError(
                            "populations[0].size: 600 neurons do not fit"));
  EXPECT_THAT(done.state_reason, StartsWith("failed on chip 0: "));
  EXPECT_THAT(done.state_reason,
              HasSubstr("populations[0].size: 600 neurons do not fit"));
  // The worker lives on.
  const std::string b = Submit(*scheduler, 2);
  gate.Release(2);
  EXPECT_EQ(WaitTerminal(*scheduler, b).state, JobState::kSucceeded);
}

TEST(Scheduler, ThrowingRunnerFailsJobAndWorkerSurvives) {
  Options options;
  options.chip_ids = {0};
  Scheduler scheduler(options, [](uint32_t) -> ChipRunner {
    return [](const WorkItem& item) -> absl::StatusOr<v1::Result> {
      if (item.experiment.seed() == 1)
        throw std::runtime_error("out of cheese");
      if (item.experiment.seed() == 2) throw 42;
      return v1::Result();
    };
  });
  const std::string a = Submit(scheduler, 1);
  const std::string b = Submit(scheduler, 2);
  const std::string c = Submit(scheduler, 3);
  const JobView view_a = WaitTerminal(scheduler, a);
  EXPECT_EQ(view_a.state, JobState::kFailed);
  EXPECT_EQ(view_a.error.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(view_a.error.message(), HasSubstr("out of cheese"));
  EXPECT_THAT(view_a.state_reason, HasSubstr("out of cheese"));
  EXPECT_EQ(WaitTerminal(scheduler, b).error.code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(WaitTerminal(scheduler, c).state, JobState::kSucceeded);
}

TEST(Scheduler, ProgressIsVisibleWhileRunning) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  EXPECT_EQ(GetView(*scheduler, a).runtime_ms, kRuntimeMs);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  EXPECT_EQ(GetView(*scheduler, a).progress_ms, 0.0);
  ASSERT_TRUE(gate.ReportProgress(1, 2.5));
  EXPECT_EQ(GetView(*scheduler, a).progress_ms, 2.5);
  ASSERT_TRUE(gate.ReportProgress(1, 6.0));
  const JobView running = GetView(*scheduler, a);
  EXPECT_EQ(running.progress_ms, 6.0);
  EXPECT_EQ(running.runtime_ms, kRuntimeMs);
  gate.Release(1);
  EXPECT_EQ(WaitTerminal(*scheduler, a).progress_ms, kRuntimeMs);
}

// Records the views a watcher sees (it takes a Get() view per call, as
// WatchJob does).
class WatchRecorder {
 public:
  std::function<void()> Callback(Scheduler& scheduler, std::string id) {
    return [this, &scheduler, id] {
      absl::StatusOr<JobView> view = scheduler.Get(id);
      std::lock_guard<std::mutex> lock(mu_);
      if (view.ok()) views_.push_back(*view);
      cv_.notify_all();
    };
  }
  // Blocks until a view satisfies `pred`; false on timeout.
  template <typename Pred>
  bool AwaitView(Pred pred) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kTimeout), [&] {
      return std::any_of(views_.begin(), views_.end(), pred);
    });
  }
  std::vector<JobView> views() {
    std::lock_guard<std::mutex> lock(mu_);
    return views_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<JobView> views_;  // guarded by mu_
};

TEST(Scheduler, WatchersArePushedProgressStateChangesAndTheEnd) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  const std::string b = Submit(*scheduler, 2);
  WatchRecorder watch_a, watch_b;
  ASSERT_TRUE(scheduler->AddWatcher(a, watch_a.Callback(*scheduler, a)).ok());
  absl::StatusOr<uint64_t> handle_b =
      scheduler->AddWatcher(b, watch_b.Callback(*scheduler, b));
  ASSERT_TRUE(handle_b.ok()) << handle_b.status();
  EXPECT_NE(*handle_b, 0u);

  // Progress reaches the watcher before the runner's report returns.
  ASSERT_TRUE(gate.ReportProgress(1, 2.5));
  ASSERT_FALSE(watch_a.views().empty());
  EXPECT_EQ(watch_a.views().back().progress_ms, 2.5);
  EXPECT_TRUE(watch_b.views().empty());  // b's view did not change

  // a ends: its watcher gets the terminal view; b starts: its watcher sees.
  gate.Release(1);
  ASSERT_TRUE(watch_a.AwaitView(
      [](const JobView& v) { return v.state == JobState::kSucceeded; }));
  ASSERT_TRUE(watch_b.AwaitView(
      [](const JobView& v) { return v.state == JobState::kRunning; }));
  // A cancel request changes b's reason: pushed too. The run ignores its
  // cancel flag until released, so the "cancel requested" view lasts until
  // the watcher has taken it (a watcher reads the view current at its call,
  // and a run that stopped at once could skip it).
  gate.IgnoreCancel(2);
  ASSERT_TRUE(scheduler->Cancel(b).ok());
  ASSERT_TRUE(watch_b.AwaitView(
      [](const JobView& v) { return v.reason == Reason::kCancelRequested; }));
  gate.Release(2, absl::CancelledError("run stopped on its cancel request"));
  ASSERT_TRUE(watch_b.AwaitView(
      [](const JobView& v) { return v.state == JobState::kCancelled; }));
  EXPECT_EQ(WaitTerminal(*scheduler, b).state, JobState::kCancelled);

  // The terminal call is the last one.
  const std::vector<JobView> seen_a = watch_a.views();
  ASSERT_TRUE(gate.AwaitStarts(2));
  const std::string c = Submit(*scheduler, 3);
  gate.Release(3);
  EXPECT_EQ(WaitTerminal(*scheduler, c).state, JobState::kSucceeded);
  EXPECT_EQ(watch_a.views().size(), seen_a.size());
  EXPECT_EQ(seen_a.back().state, JobState::kSucceeded);

  // A terminal job gets handle 0 and no call; unknown ids NOT_FOUND.
  WatchRecorder late;
  absl::StatusOr<uint64_t> none =
      scheduler->AddWatcher(a, late.Callback(*scheduler, a));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u);
  EXPECT_EQ(scheduler->AddWatcher("nope", [] {}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(late.views().empty());
}

TEST(Scheduler, RemovedWatcherIsNotCalledForLaterChanges) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  WatchRecorder watch;
  absl::StatusOr<uint64_t> handle =
      scheduler->AddWatcher(a, watch.Callback(*scheduler, a));
  ASSERT_TRUE(handle.ok());
  scheduler->RemoveWatcher(a, *handle);
  ASSERT_TRUE(gate.ReportProgress(1, 1.0));
  gate.Release(1);
  EXPECT_EQ(WaitTerminal(*scheduler, a).state, JobState::kSucceeded);
  EXPECT_TRUE(watch.views().empty());
}

TEST(Scheduler, GetResultReturnsTheRunnersResult) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string a = Submit(*scheduler, 1);
  v1::Result result;
  result.set_chip_id(0);
  result.add_population_labels("exc");
  gate.Release(1, result);
  WaitTerminal(*scheduler, a);
  absl::StatusOr<std::shared_ptr<const v1::Result>> got =
      scheduler->GetResult(a);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_NE(*got, nullptr);
  EXPECT_THAT((*got)->population_labels(), ElementsAre("exc"));
}

TEST(Scheduler, GetResultErrors) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  EXPECT_EQ(scheduler->GetResult("no-such-job").status().code(),
            absl::StatusCode::kNotFound);

  const std::string a = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  const std::string b = Submit(*scheduler, 2);
  absl::Status queued = scheduler->GetResult(b).status();
  EXPECT_EQ(queued.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(queued.message(), HasSubstr("QUEUED"));
  absl::Status running = scheduler->GetResult(a).status();
  EXPECT_EQ(running.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(running.message(), HasSubstr("RUNNING"));

  gate.Release(1, absl::InternalError("spike storm"));
  WaitTerminal(*scheduler, a);
  absl::Status failed = scheduler->GetResult(a).status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(failed.message(), HasSubstr("spike storm"));
}

TEST(Scheduler, UnknownJobIdIsNotFound) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  EXPECT_EQ(scheduler->Get("nope").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler->Wait("nope", absl::InfinitePast()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler->Cancel("nope").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(
      scheduler->AddDoneCallback("nope", [](const JobView&) {}).status().code(),
      absl::StatusCode::kNotFound);
  EXPECT_FALSE(scheduler->RemoveDoneCallback("nope", 1));
}

TEST(Scheduler, ViewCarriesUserAndTimes) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const absl::Time before = absl::Now();
  const std::string a = Submit(*scheduler, 1, std::nullopt, "carol");
  const JobView queued = GetView(*scheduler, a);
  EXPECT_EQ(queued.id, a);
  EXPECT_EQ(queued.user, "carol");
  EXPECT_GE(queued.submit_time, before);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  const JobView running = GetView(*scheduler, a);
  EXPECT_GE(running.start_time, running.submit_time);
  EXPECT_EQ(running.end_time, absl::InfinitePast());
  gate.Release(1);
  const JobView done = WaitTerminal(*scheduler, a);
  EXPECT_EQ(done.start_time, running.start_time);
  EXPECT_GE(done.end_time, done.start_time);
  EXPECT_LE(done.end_time, absl::Now());
}

TEST(Scheduler, JobIdsAreUniqueRandomHex) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  std::set<std::string> ids;
  for (uint64_t tag = 0; tag < 1000; ++tag) {
    const std::string id = Submit(*scheduler, tag);
    EXPECT_THAT(id, MatchesRegex("[0-9a-f]{32}"));
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 1000u);
  // Not a counter: the first two ids differ in many of their 128 bits.
  const std::string first = *ids.begin();
  const std::string second = *std::next(ids.begin());
  int differing = 0;
  for (size_t i = 0; i < first.size(); ++i) differing += first[i] != second[i];
  EXPECT_GT(differing, 8);
}

TEST(Scheduler, DestructorCancelsEverythingAndLeavesNothingRunning) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0, 1});
  const std::string done = Submit(*scheduler, 1);
  gate.Release(1);
  WaitTerminal(*scheduler, done);
  std::vector<std::string> ids;
  for (uint64_t tag = 2; tag <= 5; ++tag)
    ids.push_back(Submit(*scheduler, tag));
  ASSERT_TRUE(gate.AwaitStarts(3));  // 2 and 3 run; 4 and 5 are queued

  std::mutex mu;
  std::map<std::string, std::vector<JobView>> views;  // by job id
  auto record = [&](const JobView& view) {
    std::lock_guard<std::mutex> lock(mu);
    views[view.id].push_back(view);
  };
  for (const std::string& id : ids) {
    ASSERT_TRUE(scheduler->AddDoneCallback(id, record).ok());
  }
  ASSERT_TRUE(scheduler->AddDoneCallback(done, record).ok());  // fires now

  scheduler.reset();
  EXPECT_EQ(gate.running(), 0);
  EXPECT_TRUE(gate.saw_cancel(2));
  EXPECT_TRUE(gate.saw_cancel(3));
  EXPECT_THAT(gate.started(), UnorderedElementsAre(1, 2, 3));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(views[done].size(), 1u);
  EXPECT_EQ(views[done][0].state, JobState::kSucceeded);
  for (const std::string& id : ids) {
    ASSERT_EQ(views[id].size(), 1u) << id;
    EXPECT_EQ(views[id][0].state, JobState::kCancelled);
    EXPECT_EQ(views[id][0].state_reason,
              "cancelled: the server is shutting down; submit again");
    EXPECT_EQ(views[id][0].reason, Reason::kCancelledByShutdown);
  }
}

// Several threads submit, cancel, query and wait on many jobs while four
// chips run them; then the scheduler is destroyed with jobs still queued.
// Every job must end in exactly one terminal state, seen by exactly one call
// of its done callback, and no job may run twice.
TEST(Scheduler, StressEveryJobEndsTerminalExactlyOnce) {
  constexpr int kThreads = 8;
  constexpr int kJobsPerThread = 250;
  constexpr int kJobs = kThreads * kJobsPerThread;
  std::vector<std::atomic<int>> runs(kJobs);
  std::vector<std::atomic<int>> callbacks(kJobs);
  std::vector<std::atomic<int>> final_state(kJobs);
  std::atomic<int> non_terminal_callbacks{0};
  // A callback added and then removed: it must run once if the removal came
  // too late (RemoveDoneCallback returned false), never otherwise.
  struct Probe {
    std::atomic<int> calls{0};
    bool removed = false;
  };
  std::vector<std::unique_ptr<Probe>> probes[kThreads];

  Options options;
  options.chip_ids = {0, 1, 2, 3};
  auto scheduler = std::make_unique<Scheduler>(options, [&](uint32_t) {
    return [&](const WorkItem& item) -> absl::StatusOr<v1::Result> {
      const uint64_t tag = item.experiment.seed();
      ++runs[tag];
      // Emulate ~100 us, stopping early on request.
      const absl::Time end = absl::Now() + absl::Microseconds(100);
      while (absl::Now() < end) {
        if (item.cancel_requested.load()) return absl::CancelledError("stop");
        item.report_progress(1.0);
      }
      if (tag % 7 == 0) return absl::InternalError("unlucky");
      return v1::Result();
    };
  });

  std::vector<std::string> ids(kJobs);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<std::string> mine;
      for (int i = 0; i < kJobsPerThread; ++i) {
        const uint64_t tag = static_cast<uint64_t>(t * kJobsPerThread + i);
        absl::StatusOr<std::string> id =
            scheduler->Submit(absl::StrCat("user", t), MakeExperiment(tag));
        ASSERT_TRUE(id.ok()) << id.status();
        ids[tag] = *id;
        mine.push_back(*id);
        ASSERT_TRUE(scheduler
                        ->AddDoneCallback(*id,
                                          [&, tag](const JobView& view) {
                                            ++callbacks[tag];
                                            final_state[tag] =
                                                static_cast<int>(view.state);
                                            if (!IsTerminal(view.state)) {
                                              ++non_terminal_callbacks;
                                            }
                                          })
                        .ok());
        const std::string& some = mine[rng() % mine.size()];
        switch (rng() % 6) {
          case 0:
            ASSERT_TRUE(scheduler->Cancel(some).ok());
            break;
          case 1:
            ASSERT_TRUE(scheduler->Get(some).ok());
            break;
          case 2:
            ASSERT_TRUE(
                scheduler->Wait(some, absl::Now() + absl::Microseconds(50))
                    .ok());
            break;
          case 3: {
            Probe* probe =
                probes[t].emplace_back(std::make_unique<Probe>()).get();
            absl::StatusOr<uint64_t> handle = scheduler->AddDoneCallback(
                some, [probe](const JobView&) { ++probe->calls; });
            ASSERT_TRUE(handle.ok());
            probe->removed = scheduler->RemoveDoneCallback(some, *handle);
            break;
          }
          default:
            break;
        }
      }
      // Wait for half of this thread's jobs; the rest meet the destructor.
      for (size_t i = 0; i < mine.size() / 2; ++i) {
        absl::StatusOr<JobView> view =
            scheduler->Wait(mine[i], absl::Now() + kTimeout);
        ASSERT_TRUE(view.ok());
        EXPECT_TRUE(IsTerminal(view->state));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  scheduler.reset();

  std::set<std::string> unique_ids(ids.begin(), ids.end());
  EXPECT_EQ(unique_ids.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(non_terminal_callbacks.load(), 0);
  int succeeded = 0;
  for (int tag = 0; tag < kJobs; ++tag) {
    ASSERT_EQ(callbacks[tag].load(), 1) << "job " << tag;
    ASSERT_LE(runs[tag].load(), 1) << "job " << tag;
    const auto state = static_cast<JobState>(final_state[tag].load());
    if (state == JobState::kSucceeded) {
      ++succeeded;
      EXPECT_EQ(runs[tag].load(), 1);
      EXPECT_NE(tag % 7, 0);
    }
    if (state == JobState::kFailed) {
      EXPECT_EQ(tag % 7, 0);
    }
  }
  EXPECT_GT(succeeded, 0);
  int removed = 0;
  for (const auto& thread_probes : probes) {
    for (const auto& probe : thread_probes) {
      EXPECT_EQ(probe->calls.load(), probe->removed ? 0 : 1);
      removed += probe->removed;
    }
  }
  EXPECT_GT(removed, 0);
}

// --- Round-robin over users ---

// Releases whichever job starts next, `n` times; returns the tags in the
// order they started.
std::vector<uint64_t> ReleaseInStartOrder(Gate& gate, size_t n) {
  for (size_t i = 1; i <= n; ++i) {
    if (!gate.AwaitStarts(i)) {
      ADD_FAILURE() << "only " << i - 1 << " of " << n << " jobs started";
      break;
    }
    gate.Release(gate.started().back());
  }
  return gate.started();
}

TEST(SchedulerRoundRobin, NewcomerWaitsForAtMostOneJobOfAnotherUser) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  // Alice queues 10 jobs (0 starts at once), then Bob queues 1.
  for (uint64_t tag = 0; tag < 10; ++tag) Submit(*scheduler, tag);
  ASSERT_TRUE(gate.AwaitStart(0).has_value());
  const std::string bob = Submit(*scheduler, 100, std::nullopt, "bob");
  const JobView view = GetView(*scheduler, bob);
  EXPECT_EQ(view.queue_position, 1u);
  EXPECT_EQ(view.state_reason,
            "queued: 1 job ahead (0 of yours, 1 of other users)");
  EXPECT_THAT(ReleaseInStartOrder(gate, 11),
              ElementsAre(0, 1, 100, 2, 3, 4, 5, 6, 7, 8, 9));
  EXPECT_EQ(WaitTerminal(*scheduler, bob).state, JobState::kSucceeded);
}

TEST(SchedulerRoundRobin, NewcomerOnTwoChipsWaitsForAtMostOneJobPerChip) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0, 1});
  for (uint64_t tag = 0; tag < 10; ++tag) Submit(*scheduler, tag);
  ASSERT_TRUE(gate.AwaitStarts(2));  // 0 and 1 run
  Submit(*scheduler, 100, std::nullopt, "bob");
  // Release one job at a time: each frees a chip for the next one.
  const std::vector<uint64_t> order = ReleaseInStartOrder(gate, 11);
  const auto bob_at = std::find(order.begin(), order.end(), 100u);
  ASSERT_NE(bob_at, order.end());
  // At most one more of Alice's jobs per chip before Bob's.
  EXPECT_LE(bob_at - order.begin(), 2 + 2);
}

TEST(SchedulerRoundRobin, UsersTakeTurnsInOrderOfArrival) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  Submit(*scheduler, 999, std::nullopt, "zoe");  // keeps the chip busy
  ASSERT_TRUE(gate.AwaitStart(999).has_value());
  for (uint64_t tag = 1; tag <= 3; ++tag) Submit(*scheduler, tag);
  for (uint64_t tag = 11; tag <= 13; ++tag) {
    Submit(*scheduler, tag, std::nullopt, "bob");
  }
  for (uint64_t tag = 21; tag <= 22; ++tag) {
    Submit(*scheduler, tag, std::nullopt, "carol");
  }
  EXPECT_THAT(ReleaseInStartOrder(gate, 9),
              ElementsAre(999, 1, 11, 21, 2, 12, 22, 3, 13));
}

TEST(SchedulerRoundRobin, WeightGivesMoreJobsPerTurn) {
  Gate gate;
  Options options;
  options.chip_ids = {0};
  options.user_weights = {{"alice", 2}, {"bob", 1}, {"zero", 0}};
  auto scheduler = MakeSchedulerWith(gate, options);
  Submit(*scheduler, 999, std::nullopt, "zoe");
  ASSERT_TRUE(gate.AwaitStart(999).has_value());
  std::vector<std::string> alice;
  std::vector<std::string> bob;
  for (uint64_t tag = 1; tag <= 6; ++tag) {
    alice.push_back(Submit(*scheduler, tag));
  }
  for (uint64_t tag = 11; tag <= 13; ++tag) {
    bob.push_back(Submit(*scheduler, tag, std::nullopt, "bob"));
  }
  // The order will be 1 2 11 3 4 12 5 6 13.
  EXPECT_EQ(GetView(*scheduler, bob[0]).queue_position, 2u);
  EXPECT_EQ(GetView(*scheduler, bob[1]).queue_position, 5u);
  EXPECT_EQ(GetView(*scheduler, bob[2]).queue_position, 8u);
  EXPECT_EQ(GetView(*scheduler, alice[2]).queue_position, 3u);
  EXPECT_EQ(GetView(*scheduler, alice[2]).state_reason,
            "queued: 3 jobs ahead (2 of yours, 1 of other users)");
  EXPECT_EQ(GetView(*scheduler, alice[5]).queue_position, 7u);
  EXPECT_THAT(ReleaseInStartOrder(gate, 10),
              ElementsAre(999, 1, 2, 11, 3, 4, 12, 5, 6, 13));

  // A weight below 1 counts as 1.
  Submit(*scheduler, 998, std::nullopt, "zoe");
  ASSERT_TRUE(gate.AwaitStart(998).has_value());
  for (uint64_t tag = 31; tag <= 33; ++tag) {
    Submit(*scheduler, tag, std::nullopt, "zero");
  }
  Submit(*scheduler, 41, std::nullopt, "bob");
  Submit(*scheduler, 42, std::nullopt, "bob");
  const std::vector<uint64_t> order = ReleaseInStartOrder(gate, 10 + 6);
  EXPECT_THAT(std::vector<uint64_t>(order.begin() + 10, order.end()),
              ElementsAre(998, 31, 41, 32, 42, 33));
}

// A chip takes the next job it may run in round-robin order; a user skipped
// because all its jobs are pinned elsewhere keeps its turn.
TEST(SchedulerRoundRobin, PinnedJobsKeepTheirUsersTurnAndChipsViewShowsIt) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0, 1});
  const std::string busy0 = Submit(*scheduler, 900, /*chip_id=*/0, "zoe");
  const std::string busy1 = Submit(*scheduler, 901, /*chip_id=*/1, "zoe");
  ASSERT_TRUE(gate.AwaitStarts(2));
  const std::string a1 = Submit(*scheduler, 1, /*chip_id=*/1);
  const std::string a2 = Submit(*scheduler, 2, /*chip_id=*/1);
  const std::string b1 = Submit(*scheduler, 11, std::nullopt, "bob");
  const std::string a3 = Submit(*scheduler, 3);

  EXPECT_EQ(GetView(*scheduler, a1).state_reason,
            "queued: 0 jobs ahead, waiting for chip 1 (busy)");
  std::vector<ChipView> chips = scheduler->ChipsView();
  ASSERT_EQ(chips.size(), 2u);
  EXPECT_EQ(chips[0].id, 0u);
  EXPECT_TRUE(chips[0].busy);
  EXPECT_EQ(chips[0].running_job_id, busy0);
  EXPECT_EQ(chips[0].queued_jobs, 2u);  // b1, a3
  EXPECT_EQ(chips[1].id, 1u);
  EXPECT_EQ(chips[1].running_job_id, busy1);
  EXPECT_EQ(chips[1].queued_jobs, 4u);  // a1, a2, b1, a3

  // Chip 0 frees up: Alice (first in the ring) has a3 for it.
  gate.Release(900);
  EXPECT_EQ(gate.AwaitStart(3), 0u);
  // Chip 1 frees up: Bob has the turn now.
  gate.Release(901);
  EXPECT_EQ(gate.AwaitStart(11), 1u);
  gate.Release(3);
  WaitTerminal(*scheduler, a3);
  // Chip 0 is idle: nothing queued may run there.
  chips = scheduler->ChipsView();
  EXPECT_FALSE(chips[0].busy);
  EXPECT_EQ(chips[0].running_job_id, "");
  EXPECT_EQ(chips[0].queued_jobs, 0u);
  EXPECT_EQ(chips[1].queued_jobs, 2u);
  gate.Release(11);
  EXPECT_EQ(gate.AwaitStart(1), 1u);
  gate.Release(1);
  EXPECT_EQ(gate.AwaitStart(2), 1u);
  gate.Release(2);
  EXPECT_EQ(WaitTerminal(*scheduler, a2).chip_id, 1u);
  EXPECT_EQ(WaitTerminal(*scheduler, b1).chip_id, 1u);
}

// --- Admission ---

TEST(SchedulerAdmission, RejectsSubmitOverThePerUserLimit) {
  Gate gate;
  Options options;
  options.chip_ids = {0};
  options.max_queued_jobs_per_user = 2;
  auto scheduler = MakeSchedulerWith(gate, options);
  Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());  // running: not queued
  const std::string b = Submit(*scheduler, 2);
  Submit(*scheduler, 3);
  absl::StatusOr<std::string> full =
      scheduler->Submit("alice", MakeExperiment(4));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(full.status().message(),
            "user \"alice\" has 2 jobs queued, the server's per-user limit "
            "(max_queued_jobs_per_user) is 2; retry once some of them have "
            "started or been cancelled");
  // Other users are not affected ...
  EXPECT_TRUE(scheduler->Submit("bob", MakeExperiment(5)).ok());
  // ... and a cancelled job makes room.
  ASSERT_TRUE(scheduler->Cancel(b).ok());
  EXPECT_TRUE(scheduler->Submit("alice", MakeExperiment(4)).ok());
}

// --- Injected clock, deadlines ---

struct FakeClockFixture {
  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>();
  Options options;
  FakeClockFixture() {
    options.chip_ids = {0};
    options.clock = clock;
  }
};

absl::StatusOr<std::string> SubmitWithin(Scheduler& scheduler, uint64_t tag,
                                         absl::Duration max_wall_time) {
  return scheduler.Submit(
      "alice", MakeExperiment(tag),
      WithOptions([&](SubmitOptions& o) { o.max_wall_time = max_wall_time; }));
}

TEST(SchedulerClock, TimesComeFromTheInjectedClock) {
  Gate gate;
  FakeClockFixture fake;
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  const absl::Time t0 = fake.clock->Now();
  const std::string a = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  fake.clock->Advance(absl::Seconds(3));
  gate.Release(1);
  const JobView done = WaitTerminal(*scheduler, a);
  EXPECT_EQ(done.submit_time, t0);
  EXPECT_EQ(done.start_time, t0);
  EXPECT_EQ(done.end_time, t0 + absl::Seconds(3));
  EXPECT_EQ(done.deadline, absl::InfiniteFuture());
}

TEST(SchedulerDeadline, RejectsNonPositiveMaxWallTime) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  for (absl::Duration d : {absl::ZeroDuration(), absl::Seconds(-1)}) {
    absl::StatusOr<std::string> id = SubmitWithin(*scheduler, 1, d);
    ASSERT_FALSE(id.ok());
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(id.status().message(), HasSubstr("max_wall_time"));
  }
}

TEST(SchedulerDeadline, QueuedJobExpires) {
  Gate gate;
  FakeClockFixture fake;
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  const std::string a = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  absl::StatusOr<std::string> b =
      SubmitWithin(*scheduler, 2, absl::Seconds(10));
  ASSERT_TRUE(b.ok()) << b.status();
  const std::string c = Submit(*scheduler, 3);
  EXPECT_EQ(GetView(*scheduler, *b).deadline,
            fake.clock->Now() + absl::Seconds(10));
  std::vector<JobView> fired;
  ASSERT_TRUE(scheduler
                  ->AddDoneCallback(
                      *b, [&](const JobView& view) { fired.push_back(view); })
                  .ok());

  fake.clock->Advance(absl::Seconds(9));
  EXPECT_EQ(GetView(*scheduler, *b).state, JobState::kQueued);
  EXPECT_EQ(GetView(*scheduler, c).queue_position, 1u);
  fake.clock->Advance(absl::Seconds(1));
  // The next call notices; the callback fires before it returns (on this
  // thread, or already on the housekeeping thread).
  const JobView expired = GetView(*scheduler, *b);
  EXPECT_EQ(expired.state, JobState::kExpired);
  EXPECT_TRUE(IsTerminal(expired.state));
  EXPECT_STREQ(JobStateName(expired.state), "EXPIRED");
  EXPECT_EQ(expired.state_reason,
            "expired: its max_wall_time of 10s since submission passed "
            "before it could start");
  EXPECT_EQ(expired.end_time, fake.clock->Now());
  const JobView waited = WaitTerminal(*scheduler, *b);  // callbacks done
  EXPECT_EQ(waited.state, JobState::kExpired);
  EXPECT_EQ(GetView(*scheduler, c).queue_position, 0u);
  // Expired jobs stay expired and are never run.
  EXPECT_EQ(scheduler->Cancel(*b)->state, JobState::kExpired);
  gate.Release(1);
  ASSERT_TRUE(gate.AwaitStart(3).has_value());
  gate.Release(3);
  WaitTerminal(*scheduler, c);
  EXPECT_THAT(gate.started(), ElementsAre(1, 3));
  scheduler.reset();
  ASSERT_EQ(fired.size(), 1u);
  EXPECT_EQ(fired[0].state, JobState::kExpired);
}

// A worker never starts a job whose deadline has passed, even if no call
// noticed it yet.
TEST(SchedulerDeadline, WorkerDoesNotStartAnExpiredJob) {
  Gate gate;
  FakeClockFixture fake;
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  absl::StatusOr<std::string> b = SubmitWithin(*scheduler, 2, absl::Seconds(5));
  ASSERT_TRUE(b.ok());
  const std::string c = Submit(*scheduler, 3);
  fake.clock->Advance(absl::Seconds(6));
  gate.Release(1);
  ASSERT_TRUE(gate.AwaitStart(3).has_value());
  gate.Release(3);
  WaitTerminal(*scheduler, c);
  EXPECT_EQ(WaitTerminal(*scheduler, *b).state, JobState::kExpired);
  EXPECT_THAT(gate.started(), ElementsAre(1, 3));
}

TEST(SchedulerDeadline, RunningJobPastItsDeadlineExpires) {
  Gate gate;
  FakeClockFixture fake;
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  absl::StatusOr<std::string> a = SubmitWithin(*scheduler, 1, absl::Seconds(5));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  fake.clock->Advance(absl::Seconds(4));
  EXPECT_EQ(GetView(*scheduler, *a).state_reason, "running on chip 0");
  fake.clock->Advance(absl::Seconds(1));
  // This call asks the runner to stop, unless the housekeeping thread did
  // already (then the job may be over already).
  const JobView stopping = GetView(*scheduler, *a);
  if (stopping.state == JobState::kRunning) {
    EXPECT_EQ(stopping.state_reason, "running on chip 0, cancel requested");
    EXPECT_EQ(stopping.reason, Reason::kCancelRequested);
  } else {
    EXPECT_EQ(stopping.state, JobState::kExpired);
  }
  const JobView done = WaitTerminal(*scheduler, *a);
  EXPECT_EQ(done.state, JobState::kExpired);
  EXPECT_EQ(done.reason, Reason::kExpiredWhileRunning);
  EXPECT_EQ(done.state_reason,
            "expired: its max_wall_time of 5s since submission "
            "passed while running on chip 0");
  EXPECT_TRUE(gate.saw_cancel(1));
  // A job that finishes in time is not touched.
  absl::StatusOr<std::string> b = SubmitWithin(*scheduler, 2, absl::Seconds(5));
  ASSERT_TRUE(gate.AwaitStart(2).has_value());
  gate.Release(2);
  EXPECT_EQ(WaitTerminal(*scheduler, *b).state, JobState::kSucceeded);
  fake.clock->Advance(absl::Seconds(10));
  EXPECT_EQ(GetView(*scheduler, *b).state, JobState::kSucceeded);
  EXPECT_FALSE(gate.saw_cancel(2));
}

// --- Result retention ---

TEST(SchedulerRetention, ResultIsEvictedAfterItsTtl) {
  Gate gate;
  FakeClockFixture fake;
  fake.options.result_ttl = absl::Hours(1);
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  const std::string a = Submit(*scheduler, 1);
  gate.Release(1);
  WaitTerminal(*scheduler, a);
  fake.clock->Advance(absl::Minutes(59));
  EXPECT_TRUE(scheduler->GetResult(a).ok());
  EXPECT_FALSE(GetView(*scheduler, a).result_evicted);
  fake.clock->Advance(absl::Minutes(1));
  absl::Status gone = scheduler->GetResult(a).status();
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(gone.message(),
            absl::StrCat("result evicted: results are kept for 1h "
                         "(result_ttl) after the job ends (job ",
                         a, ")"));
  const JobView view = GetView(*scheduler, a);
  EXPECT_EQ(view.state, JobState::kSucceeded);
  EXPECT_TRUE(view.result_evicted);
  EXPECT_THAT(view.state_reason,
              StartsWith("succeeded on chip 0; result evicted: "));
}

TEST(SchedulerRetention, OldestResultsAreEvictedOverTheByteBudget) {
  Gate gate;
  v1::Result result;
  result.add_population_labels(std::string(100, 'x'));
  const int64_t bytes = static_cast<int64_t>(result.ByteSizeLong());
  Options options;
  options.chip_ids = {0};
  options.max_result_bytes = 2 * bytes + bytes / 2;  // room for two
  auto scheduler = MakeSchedulerWith(gate, options);
  std::vector<std::string> ids;
  for (uint64_t tag = 1; tag <= 3; ++tag) {
    ids.push_back(Submit(*scheduler, tag));
    gate.Release(tag, result);
    WaitTerminal(*scheduler, ids.back());
  }
  absl::Status gone = scheduler->GetResult(ids[0]).status();
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(gone.message()), StartsWith("result evicted: "));
  EXPECT_THAT(std::string(gone.message()), HasSubstr("max_result_bytes"));
  EXPECT_TRUE(GetView(*scheduler, ids[0]).result_evicted);
  EXPECT_TRUE(scheduler->GetResult(ids[1]).ok());
  EXPECT_TRUE(scheduler->GetResult(ids[2]).ok());
  EXPECT_FALSE(GetView(*scheduler, ids[2]).result_evicted);
  // Failed jobs have no result to evict.
  const std::string failed = Submit(*scheduler, 4);
  gate.Release(4, absl::InternalError("spike storm"));
  EXPECT_FALSE(WaitTerminal(*scheduler, failed).result_evicted);
  EXPECT_TRUE(scheduler->GetResult(ids[1]).ok());
}

// --- List ---

TEST(SchedulerList, PagesThroughAUsersJobsNewestFirst) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  std::vector<std::string> alice;
  for (uint64_t tag = 0; tag < 5; ++tag) {
    alice.push_back(Submit(*scheduler, tag));
    if (tag == 1) Submit(*scheduler, 100, std::nullopt, "bob");
  }
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<JobPage> page = scheduler->List("alice", 2, token);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->jobs.size(), 2u);
    for (const JobView& view : page->jobs) {
      EXPECT_EQ(view.user, "alice");
      seen.push_back(view.id);
    }
    token = page->next_page_token;
    ASSERT_LT(++pages, 10);
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_THAT(seen, ElementsAreArray(alice.rbegin(), alice.rend()));

  // Default page size: everything here.
  absl::StatusOr<JobPage> all = scheduler->List("alice", 0, "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->jobs.size(), 5u);
  EXPECT_EQ(all->next_page_token, "");
  // A full last page has no token.
  absl::StatusOr<JobPage> bob = scheduler->List("bob", 1, "");
  ASSERT_TRUE(bob.ok());
  ASSERT_EQ(bob->jobs.size(), 1u);
  EXPECT_EQ(bob->next_page_token, "");
  absl::StatusOr<JobPage> nobody = scheduler->List("nobody", 10, "");
  ASSERT_TRUE(nobody.ok());
  EXPECT_THAT(nobody->jobs, IsEmpty());
  for (const std::string bad : {"x", "0", "999999", "-1"}) {
    EXPECT_EQ(scheduler->List("alice", 2, bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

// --- Idempotent submit ---

absl::StatusOr<std::string> SubmitRequest(Scheduler& scheduler, uint64_t tag,
                                          std::string request_id,
                                          uint64_t fingerprint,
                                          std::string user = "alice") {
  return scheduler.Submit(std::move(user), MakeExperiment(tag),
                          WithOptions([&](SubmitOptions& o) {
                            o.request_id = request_id;
                            o.request_fingerprint = fingerprint;
                          }));
}

TEST(SchedulerIdempotency, RepeatedRequestIdReturnsTheFirstJob) {
  Gate gate;
  FakeClockFixture fake;
  fake.options.max_queued_jobs_per_user = 1;
  fake.options.result_ttl = absl::Hours(1);
  fake.options.job_record_ttl = absl::Hours(2);
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  Submit(*scheduler, 999, std::nullopt, "zoe");  // keeps the chip busy
  ASSERT_TRUE(gate.AwaitStart(999).has_value());
  absl::StatusOr<std::string> first = SubmitRequest(*scheduler, 1, "r-1", 7);
  ASSERT_TRUE(first.ok()) << first.status();
  // Alice is at her per-user limit, yet a retry gets the first job.
  absl::StatusOr<std::string> retry = SubmitRequest(*scheduler, 1, "r-1", 7);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(*retry, *first);
  // The same id with other content is refused, naming the field.
  absl::StatusOr<std::string> other = SubmitRequest(*scheduler, 2, "r-1", 8);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(other.status().message()),
              StartsWith("request_id: 'r-1'"));
  // Request ids are per user.
  absl::StatusOr<std::string> bob =
      SubmitRequest(*scheduler, 3, "r-1", 7, "bob");
  ASSERT_TRUE(bob.ok());
  EXPECT_NE(*bob, *first);

  gate.Release(999);
  gate.Release(1);
  gate.Release(3);
  WaitTerminal(*scheduler, *first);
  WaitTerminal(*scheduler, *bob);
  // A retry after the job ended still gets it; it ran once.
  EXPECT_EQ(SubmitRequest(*scheduler, 1, "r-1", 7).value_or(""), *first);
  const std::vector<uint64_t> started = gate.started();
  EXPECT_EQ(std::count(started.begin(), started.end(), 1u), 1);

  // Once the record is forgotten, so is the request id.
  fake.clock->Advance(absl::Hours(2));
  EXPECT_EQ(scheduler->Get(*first).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<std::string> again = SubmitRequest(*scheduler, 1, "r-1", 7);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*again, *first);
  gate.Release(1);
  WaitTerminal(*scheduler, *again);
}

// --- Record retention ---

TEST(SchedulerRetention, RecordsAreForgottenAfterTheirTtlAndOverTheCount) {
  Gate gate;
  FakeClockFixture fake;
  fake.options.result_ttl = absl::Hours(1);
  fake.options.job_record_ttl = absl::Hours(3);
  fake.options.max_job_records = 2;
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  std::vector<std::string> ids;
  for (uint64_t tag = 1; tag <= 3; ++tag) {
    ids.push_back(Submit(*scheduler, tag));
    gate.Release(tag);
    WaitTerminal(*scheduler, ids.back());
  }
  // Three records, room for two: the oldest is gone.
  EXPECT_EQ(scheduler->Get(ids[0]).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(scheduler->Get(ids[1]).ok());
  EXPECT_EQ(scheduler->Stats().job_records, 2);
  absl::StatusOr<JobPage> page = scheduler->List("alice", 10, "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->jobs.size(), 2u);
  fake.clock->Advance(absl::Hours(3));
  EXPECT_EQ(scheduler->Get(ids[2]).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler->Stats().job_records, 0);
  EXPECT_EQ(scheduler->Stats().retained_result_bytes, 0);
}

// --- Chip affinity ---

std::string SubmitConfig(Scheduler& scheduler, uint64_t tag,
                         uint64_t config_key, std::string user = "alice",
                         std::optional<uint32_t> chip_id = std::nullopt) {
  absl::StatusOr<std::string> id = scheduler.Submit(
      std::move(user), MakeExperiment(tag, chip_id),
      WithOptions([&](SubmitOptions& o) { o.config_key = config_key; }));
  EXPECT_TRUE(id.ok()) << id.status();
  return id.value_or("");
}

TEST(SchedulerAffinity, IdleChipConfiguredForTheJobIsPreferred) {
  Gate gate;
  FakeClockFixture fake;
  fake.options.chip_ids = {0, 1};
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  // Configure chip 0 for key 10 and chip 1 for key 20.
  const std::string a = SubmitConfig(*scheduler, 1, 10, "alice", 0);
  const std::string b = SubmitConfig(*scheduler, 2, 20, "bob", 1);
  gate.Release(1);
  gate.Release(2);
  WaitTerminal(*scheduler, a);
  WaitTerminal(*scheduler, b);
  // Both chips idle: each job goes to the chip already configured for it,
  // whatever order the chips are in.
  for (uint64_t tag = 3; tag < 9; tag += 2) {
    const std::string for_chip1 = SubmitConfig(*scheduler, tag, 20);
    EXPECT_EQ(gate.AwaitStart(tag), 1u);
    const std::string for_chip0 = SubmitConfig(*scheduler, tag + 1, 10);
    EXPECT_EQ(gate.AwaitStart(tag + 1), 0u);
    gate.Release(tag);
    gate.Release(tag + 1);
    WaitTerminal(*scheduler, for_chip1);
    WaitTerminal(*scheduler, for_chip0);
  }
  std::vector<ChipView> chips = scheduler->ChipsView();
  ASSERT_EQ(chips.size(), 2u);
  EXPECT_EQ(chips[0].jobs_started, 4u);
  EXPECT_EQ(chips[0].reconfigurations, 1u);  // its first job only
  EXPECT_EQ(chips[1].jobs_started, 4u);
  EXPECT_EQ(chips[1].reconfigurations, 1u);
  // Without a key, the chip that last ran the same user's job is preferred.
  const std::string carol0 = SubmitConfig(*scheduler, 20, 0, "carol", 0);
  gate.Release(20);
  WaitTerminal(*scheduler, carol0);
  const std::string carol = SubmitConfig(*scheduler, 21, 0, "carol");
  EXPECT_EQ(gate.AwaitStart(21), 0u);
  gate.Release(21);
  WaitTerminal(*scheduler, carol);
  chips = scheduler->ChipsView();
  EXPECT_EQ(chips[0].jobs_started, 6u);
  EXPECT_EQ(chips[0].reconfigurations, 2u);  // 10 -> carol; carol again: no
  // A new configuration still runs at once on a free chip.
  const std::string fresh = SubmitConfig(*scheduler, 30, 99);
  EXPECT_TRUE(gate.AwaitStart(30).has_value());
  gate.Release(30);
  WaitTerminal(*scheduler, fresh);
}

// --- Time slice ---

TEST(SchedulerTimeSlice, UserKeepsItsTurnUntilTheSliceIsOver) {
  Gate gate;
  FakeClockFixture fake;
  fake.options.user_time_slice = absl::Seconds(10);
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  Submit(*scheduler, 999, std::nullopt, "zoe");
  ASSERT_TRUE(gate.AwaitStart(999).has_value());
  for (uint64_t tag = 1; tag <= 3; ++tag) Submit(*scheduler, tag);
  for (uint64_t tag = 11; tag <= 12; ++tag) {
    Submit(*scheduler, tag, std::nullopt, "bob");
  }
  gate.Release(999);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());  // Alice's turn starts
  fake.clock->Advance(absl::Seconds(1));
  gate.Release(1);
  ASSERT_TRUE(gate.AwaitStart(2).has_value());  // within her slice
  fake.clock->Advance(absl::Seconds(9));
  gate.Release(2);
  ASSERT_TRUE(gate.AwaitStart(11).has_value());  // slice over: Bob
  gate.Release(11);
  ASSERT_TRUE(gate.AwaitStart(12).has_value());  // Bob's slice
  gate.Release(12);
  ASSERT_TRUE(gate.AwaitStart(3).has_value());
  gate.Release(3);
  EXPECT_THAT(gate.started(), ElementsAre(999, 1, 2, 11, 12, 3));
}

// --- Usage tie-break ---

// Runs one job of `user` that takes `run` of (fake) clock time.
void RunFor(Scheduler& scheduler, Gate& gate, FakeClock& clock, uint64_t tag,
            const std::string& user, absl::Duration run) {
  const std::string id = Submit(scheduler, tag, std::nullopt, user);
  ASSERT_TRUE(gate.AwaitStart(tag).has_value());
  clock.Advance(run);
  gate.Release(tag);
  WaitTerminal(scheduler, id);
}

TEST(SchedulerUsage, NewcomersAreOrderedByDecayedUsageEachOvertakenOnce) {
  Gate gate;
  FakeClockFixture fake;
  fake.options.usage_half_life = absl::Hours(1);
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  RunFor(*scheduler, gate, *fake.clock, 1, "hank", absl::Seconds(100));
  RunFor(*scheduler, gate, *fake.clock, 2, "lily", absl::Seconds(10));
  RunFor(*scheduler, gate, *fake.clock, 3, "mike", absl::Seconds(1));

  Submit(*scheduler, 999, std::nullopt, "zoe");  // keeps the chip busy
  ASSERT_TRUE(gate.AwaitStart(999).has_value());
  // Lily (10 s) overtakes Hank (100 s); Mike (1 s) may not overtake Hank a
  // second time, so he stays behind him.
  Submit(*scheduler, 11, std::nullopt, "hank");
  Submit(*scheduler, 12, std::nullopt, "lily");
  Submit(*scheduler, 13, std::nullopt, "mike");
  std::vector<uint64_t> order = ReleaseInStartOrder(gate, 3 + 4);
  EXPECT_THAT(std::vector<uint64_t>(order.begin() + 3, order.end()),
              ElementsAre(999, 12, 11, 13));

  // Usage decays: ten half-lives later Hank's 100 s weigh 0.1 s, less than
  // the 1 s Lily uses now, so he goes first.
  fake.clock->Advance(absl::Hours(10));
  RunFor(*scheduler, gate, *fake.clock, 4, "lily", absl::Seconds(1));
  Submit(*scheduler, 998, std::nullopt, "zoe");
  ASSERT_TRUE(gate.AwaitStart(998).has_value());
  Submit(*scheduler, 21, std::nullopt, "lily");
  Submit(*scheduler, 22, std::nullopt, "hank");
  order = ReleaseInStartOrder(gate, 8 + 3);
  EXPECT_THAT(std::vector<uint64_t>(order.begin() + 8, order.end()),
              ElementsAre(998, 22, 21));
}

// --- Reasons and estimates ---

TEST(SchedulerReasons, EveryStateHasAMachineReadableReason) {
  Gate gate;
  FakeClockFixture fake;
  fake.options.chip_ids = {0, 1};
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  const std::string run0 = Submit(*scheduler, 1, 0, "zoe");
  const std::string run1 = Submit(*scheduler, 2, 1, "zoe");
  ASSERT_TRUE(gate.AwaitStarts(2));
  EXPECT_EQ(GetView(*scheduler, run0).reason, Reason::kRunning);
  const std::string pinned = Submit(*scheduler, 5, 1, "bob");
  EXPECT_EQ(GetView(*scheduler, pinned).reason, Reason::kWaitingForPinnedChip);
  EXPECT_EQ(GetView(*scheduler, pinned).state_reason,
            "queued: 0 jobs ahead, waiting for chip 1 (busy)");
  ASSERT_TRUE(scheduler->Cancel(pinned).ok());
  EXPECT_EQ(GetView(*scheduler, pinned).reason, Reason::kCancelledByUser);

  const std::string a1 = Submit(*scheduler, 3);
  const std::string a2 = Submit(*scheduler, 4);
  EXPECT_EQ(GetView(*scheduler, a2).reason, Reason::kBehindOwnJobs);
  const std::string z = Submit(*scheduler, 6, std::nullopt, "zoe");
  EXPECT_EQ(GetView(*scheduler, a1).reason, Reason::kWaitingForChip);
  const JobView zv = GetView(*scheduler, z);
  EXPECT_EQ(zv.reason, Reason::kBehindOtherUsers);
  EXPECT_EQ(zv.jobs_ahead_own, 0u);
  EXPECT_EQ(zv.jobs_ahead_other_users, 1u);  // a1
  EXPECT_STREQ(ReasonName(zv.reason), "BEHIND_OTHER_USERS");
  // No job finished yet: no estimate.
  EXPECT_EQ(zv.estimated_start_time, absl::InfinitePast());

  ASSERT_TRUE(scheduler->Cancel(run1).ok());
  const JobView cancelled = WaitTerminal(*scheduler, run1);
  EXPECT_EQ(cancelled.state, JobState::kCancelled);
  EXPECT_EQ(cancelled.reason, Reason::kCancelledByUser);
  EXPECT_EQ(gate.AwaitStart(3), 1u);  // a1 on the freed chip
  gate.Release(1);
  EXPECT_EQ(WaitTerminal(*scheduler, run0).reason, Reason::kSucceeded);
  gate.Release(3, absl::InvalidArgumentError("spikes: too many"));
  const JobView failed = WaitTerminal(*scheduler, a1);
  EXPECT_EQ(failed.reason, Reason::kFailed);
  EXPECT_EQ(failed.error.code(), absl::StatusCode::kInvalidArgument);
  gate.Release(4);
  gate.Release(6);
  WaitTerminal(*scheduler, a2);
  WaitTerminal(*scheduler, z);
}

TEST(SchedulerReasons, QueuedJobsCarryAnEstimatedStart) {
  Gate gate;
  FakeClockFixture fake;
  auto scheduler = MakeSchedulerWith(gate, fake.options);
  RunFor(*scheduler, gate, *fake.clock, 1, "alice", absl::Seconds(10));
  Submit(*scheduler, 2);
  ASSERT_TRUE(gate.AwaitStart(2).has_value());
  Submit(*scheduler, 3);
  const std::string third = Submit(*scheduler, 4);
  // One chip, busy (half done on average), one job ahead: 10 s + 5 s.
  EXPECT_EQ(GetView(*scheduler, third).estimated_start_time,
            fake.clock->Now() + absl::Seconds(15));
  ReleaseInStartOrder(gate, 4);
}

// --- Drain (graceful shutdown) ---

TEST(SchedulerDrain, HandsBackQueuedJobsAndLetsRunningOnesFinish) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string running = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  const std::string queued = Submit(*scheduler, 2, std::nullopt, "bob");
  std::thread drain([&] { scheduler->Drain(absl::Now() + kTimeout); });
  const JobView handed_back = WaitTerminal(*scheduler, queued);
  EXPECT_EQ(handed_back.state, JobState::kCancelled);
  EXPECT_EQ(handed_back.reason, Reason::kCancelledByShutdown);
  absl::StatusOr<std::string> refused =
      scheduler->Submit("carol", MakeExperiment(3));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetView(*scheduler, running).state, JobState::kRunning);
  gate.Release(1);
  drain.join();
  EXPECT_EQ(GetView(*scheduler, running).state, JobState::kSucceeded);
  EXPECT_THAT(gate.started(), ElementsAre(1));
}

TEST(SchedulerDrain, StopsRunningJobsOnceItsDeadlinePassed) {
  Gate gate;
  auto scheduler = MakeScheduler(gate, {0});
  const std::string running = Submit(*scheduler, 1);
  ASSERT_TRUE(gate.AwaitStart(1).has_value());
  scheduler->Drain(absl::Now());
  const JobView view = GetView(*scheduler, running);
  EXPECT_EQ(view.state, JobState::kCancelled);
  EXPECT_EQ(view.reason, Reason::kCancelledByShutdown);
  EXPECT_TRUE(gate.saw_cancel(1));
  EXPECT_EQ(scheduler->Stats().running_jobs, 0);
}

}  // namespace
}  // namespace hxemu::scheduler
