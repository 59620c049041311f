// Tests of the scheduler's durable state (job_store.h): the file store's
// encoding and crash safety, and a scheduler restoring jobs from it after a
// restart (destruction without hand-back, as after a SIGKILL or SIGTERM).
#include "hxemu/scheduler/job_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "hxemu/scheduler/clock.h"
#include "hxemu/scheduler/scheduler.h"
#include "support/temp_dir.h"

namespace hxemu::scheduler {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr absl::Duration kTimeout = absl::Seconds(20);

// Each test its own directory, removed at the end.
class TempDir : public test_support::TempDir {
 public:
  TempDir() : test_support::TempDir("hxemu_job_store") {}
};

std::shared_ptr<const v1::Experiment> MakeExperiment(
    uint64_t seed, std::optional<uint32_t> chip_id = std::nullopt) {
  auto experiment = std::make_shared<v1::Experiment>();
  experiment->set_seed(seed);
  experiment->set_runtime_ms(1.0);
  if (chip_id.has_value()) experiment->set_chip_id(*chip_id);
  return experiment;
}

// Chip runners that record which seeds ran and, while `hold` is set, block
// until cancelled. The result is a function of seed and chip only.
class Runners {
 public:
  ChipRunner Runner(uint32_t chip_id) {
    return [this, chip_id](const WorkItem& item) -> absl::StatusOr<v1::Result> {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ran_.push_back(item.experiment.seed());
        cv_.notify_all();
      }
      while (hold_.load() && !item.cancel_requested.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (item.cancel_requested.load()) {
        return absl::CancelledError("cancelled");
      }
      v1::Result result;
      result.set_chip_id(chip_id);
      result.set_runtime_ms(item.experiment.runtime_ms());
      v1::SpikeTrain* train = result.add_spike_trains();
      for (uint64_t t = 1; t <= item.experiment.seed() % 50 + 1; ++t) {
        train->add_times_ticks(t * item.experiment.seed());
      }
      return result;
    };
  }
  void set_hold(bool hold) { hold_.store(hold); }
  bool AwaitRuns(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kTimeout),
                        [&] { return ran_.size() >= n; });
  }
  std::vector<uint64_t> ran() {
    std::lock_guard<std::mutex> lock(mu_);
    return ran_;
  }

 private:
  std::atomic<bool> hold_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint64_t> ran_;
};

Options StoreOptions(const std::string& dir, std::shared_ptr<FakeClock> clock) {
  auto store = FileJobStore::Open(dir);
  EXPECT_TRUE(store.ok()) << store.status();
  Options options;
  options.chip_ids = {0};
  options.clock = std::move(clock);
  options.store = std::shared_ptr<JobStore>(std::move(*store));
  return options;
}

std::unique_ptr<Scheduler> Start(const Options& options, Runners& runners) {
  return std::make_unique<Scheduler>(
      options, [&runners](uint32_t chip) { return runners.Runner(chip); });
}

JobView WaitDone(Scheduler& scheduler, const std::string& id) {
  absl::StatusOr<JobView> view = scheduler.Wait(id, absl::Now() + kTimeout);
  EXPECT_TRUE(view.ok()) << view.status();
  return view.ok() ? *view : JobView{};
}

TEST(JobRecordTest, RoundTripsEveryField) {
  JobRecord r;
  r.id = "0123456789abcdef0123456789abcdef";
  r.user = "alice";
  r.seq = 42;
  r.request_id = "req-7";
  r.request_fingerprint = 0xfeedbeefcafe;
  r.config_key = 99;
  r.pinned_chip = 3;
  r.runtime_ms = 12.5;
  r.submit_time = absl::FromUnixMillis(1767225600123);
  r.max_wall_time = absl::Seconds(30);
  r.state = JobState::kFailed;
  r.reason = Reason::kFailed;
  r.state_reason = "failed on chip 3: boom";
  r.error = absl::InternalError("boom");
  r.chip_id = 3;
  r.start_time = absl::FromUnixMillis(1767225601000);
  r.end_time = absl::InfiniteFuture();
  r.result_bytes = 1234;
  r.result_evicted_reason = "gone";
  absl::StatusOr<JobRecord> back = DecodeJobRecord(EncodeJobRecord(r));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(EncodeJobRecord(*back), EncodeJobRecord(r));
  EXPECT_EQ(back->error, r.error);
  EXPECT_EQ(back->pinned_chip, 3u);
  EXPECT_EQ(back->end_time, absl::InfiniteFuture());
  EXPECT_EQ(back->max_wall_time, absl::Seconds(30));

  const std::string bytes = EncodeJobRecord(r);
  for (size_t cut :
       {size_t{0}, size_t{3}, bytes.size() / 2, bytes.size() - 1}) {
    EXPECT_FALSE(DecodeJobRecord(bytes.substr(0, cut)).ok()) << cut;
  }
  EXPECT_FALSE(DecodeJobRecord(bytes + "x").ok());
}

TEST(FileJobStoreTest, OpenRejectsAnUnusableDirectory) {
  TempDir dir;
  const std::string file = dir.path() + "/plain-file";
  std::ofstream(file) << "x";
  absl::StatusOr<std::unique_ptr<FileJobStore>> store =
      FileJobStore::Open(file + "/sub");
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(store.status().message()), StartsWith("state_dir: "));
  EXPECT_EQ(FileJobStore::Open("").status().code(),
            absl::StatusCode::kInvalidArgument);
  // A missing directory (and parent) is created.
  auto created = FileJobStore::Open(dir.path() + "/a/b");
  ASSERT_TRUE(created.ok()) << created.status();
  // While open, nobody else may use it.
  absl::StatusOr<std::unique_ptr<FileJobStore>> second =
      FileJobStore::Open(dir.path() + "/a/b");
  EXPECT_EQ(second.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr("in use by another server"));
  created->reset();
  EXPECT_TRUE(FileJobStore::Open(dir.path() + "/a/b").ok());
}

TEST(FileJobStoreTest, DamagedEntriesAreSkippedAndRemoved) {
  TempDir dir;
  auto store = FileJobStore::Open(dir.path());
  ASSERT_TRUE(store.ok()) << store.status();
  auto put = [&](const std::string& id, JobState state) {
    JobRecord r;
    r.id = id;
    r.user = "u";
    r.seq = 1;
    r.state = state;
    ASSERT_TRUE((*store)->PutRecord(r).ok());
    ASSERT_TRUE((*store)->PutExperiment(id, *MakeExperiment(5)).ok());
  };
  put("good", JobState::kQueued);
  put("truncated", JobState::kQueued);
  put("flipped", JobState::kQueued);
  put("noexp", JobState::kRunning);
  put("done", JobState::kSucceeded);  // no result file: reported evicted
  fs::resize_file(dir.path() + "/truncated.job",
                  fs::file_size(dir.path() + "/truncated.job") - 5);
  {
    std::fstream f(dir.path() + "/flipped.job",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.put('\x7f');
  }
  ASSERT_TRUE((*store)->RemoveExperiment("noexp").ok());
  std::ofstream(dir.path() + "/garbage.job") << "not a record";
  std::ofstream(dir.path() + "/half.job.tmp") << "interrupted";
  std::ofstream(dir.path() + "/orphan.exp") << "no record";

  std::vector<JobRecord> loaded = (*store)->Load();
  std::map<std::string, JobRecord> by_id;
  for (JobRecord& r : loaded) by_id[r.id] = std::move(r);
  ASSERT_EQ(by_id.size(), 2u);
  ASSERT_TRUE(by_id.contains("good"));
  ASSERT_NE(by_id["good"].experiment, nullptr);
  EXPECT_EQ(by_id["good"].experiment->seed(), 5u);
  ASSERT_TRUE(by_id.contains("done"));
  EXPECT_THAT(by_id["done"].result_evicted_reason,
              HasSubstr("missing or damaged"));
  // The damaged and stray files are gone; a second load sees the same.
  std::set<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    files.insert(entry.path().filename().string());
  }
  EXPECT_EQ(files, (std::set<std::string>{"good.job", "good.exp", "done.job"}));
  EXPECT_EQ((*store)->Load().size(), 2u);
}

TEST(DurableSchedulerTest, RestartRestoresQueuedRunningAndFinishedJobs) {
  TempDir dir;
  auto clock = std::make_shared<FakeClock>();
  Runners runners;
  std::string done_id, running_id;
  std::vector<std::string> alice, bob;
  std::string result_before;
  {
    auto scheduler = Start(StoreOptions(dir.path(), clock), runners);
    auto done = scheduler->Submit("alice", MakeExperiment(1));
    ASSERT_TRUE(done.ok()) << done.status();
    done_id = *done;
    ASSERT_EQ(WaitDone(*scheduler, done_id).state, JobState::kSucceeded);
    result_before = (*scheduler->GetResult(done_id))->SerializeAsString();

    runners.set_hold(true);
    SubmitOptions with_id;
    with_id.request_id = "r-2";
    with_id.request_fingerprint = 2;
    auto running = scheduler->Submit("alice", MakeExperiment(2), with_id);
    ASSERT_TRUE(running.ok());
    running_id = *running;
    ASSERT_TRUE(runners.AwaitRuns(2));
    for (uint64_t seed : {3, 4, 5}) {
      alice.push_back(*scheduler->Submit("alice", MakeExperiment(seed)));
    }
    for (uint64_t seed : {6, 7}) {
      bob.push_back(*scheduler->Submit("bob", MakeExperiment(seed)));
    }
    // Destruction stops the running job and cancels the queued ones in
    // memory only, as a crash would leave them.
  }
  runners.set_hold(false);
  auto scheduler = Start(StoreOptions(dir.path(), clock), runners);
  // The finished job and its result are back.
  absl::StatusOr<JobView> done = scheduler->Get(done_id);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state, JobState::kSucceeded);
  EXPECT_EQ((*scheduler->GetResult(done_id))->SerializeAsString(),
            result_before);
  // request_id deduplication survives the restart.
  SubmitOptions with_id;
  with_id.request_id = "r-2";
  with_id.request_fingerprint = 2;
  auto retry = scheduler->SubmitJob("alice", MakeExperiment(2), with_id);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->duplicate);
  EXPECT_EQ(retry->job_id, running_id);

  // Every job completes exactly once more, each user's in its order.
  for (const std::string& id : alice) {
    EXPECT_EQ(WaitDone(*scheduler, id).state, JobState::kSucceeded);
  }
  for (const std::string& id : bob) {
    EXPECT_EQ(WaitDone(*scheduler, id).state, JobState::kSucceeded);
  }
  JobView rerun = WaitDone(*scheduler, running_id);
  EXPECT_EQ(rerun.state, JobState::kSucceeded);
  std::vector<uint64_t> ran = runners.ran();
  // Before the restart: 1, 2. After: 2 (re-queued) first, then round-robin.
  ASSERT_EQ(ran.size(), 8u);
  EXPECT_THAT(std::vector<uint64_t>(ran.begin(), ran.begin() + 3),
              ElementsAre(1, 2, 2));
  std::vector<uint64_t> alice_order, bob_order;
  for (size_t i = 3; i < ran.size(); ++i) {
    (ran[i] <= 5 ? alice_order : bob_order).push_back(ran[i]);
  }
  EXPECT_THAT(alice_order, ElementsAre(3, 4, 5));
  EXPECT_THAT(bob_order, ElementsAre(6, 7));
  // A new job gets a new id and a later List position.
  auto fresh = scheduler->Submit("alice", MakeExperiment(8));
  ASSERT_TRUE(fresh.ok());
  EXPECT_NE(*fresh, done_id);
  absl::StatusOr<JobPage> page = scheduler->List("alice", 100, "");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs.size(), 6u);
  EXPECT_EQ(page->jobs.front().id, *fresh);
  EXPECT_EQ(page->jobs.back().id, done_id);
}

TEST(DurableSchedulerTest, ReRunningJobsSayWhyTheyAreQueued) {
  TempDir dir;
  auto clock = std::make_shared<FakeClock>();
  Runners runners;
  std::string id;
  runners.set_hold(true);
  {
    auto scheduler = Start(StoreOptions(dir.path(), clock), runners);
    id = *scheduler->Submit("alice", MakeExperiment(1));
    ASSERT_TRUE(runners.AwaitRuns(1));
  }
  Options options = StoreOptions(dir.path(), clock);
  options.chip_ids = {};  // nothing runs: the job stays queued
  auto scheduler = Start(options, runners);
  absl::StatusOr<JobView> view = scheduler->Get(id);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->state, JobState::kQueued);
  EXPECT_THAT(view->state_reason,
              StartsWith("re-queued after server restart; queued: 0 jobs"));
  runners.set_hold(false);
}

TEST(DurableSchedulerTest, DrainKeepsQueuedAndRunningJobsForTheRestart) {
  TempDir dir;
  auto clock = std::make_shared<FakeClock>();
  Runners runners;
  std::vector<std::string> ids;
  runners.set_hold(true);
  {
    auto scheduler = Start(StoreOptions(dir.path(), clock), runners);
    for (uint64_t seed : {1, 2, 3}) {
      ids.push_back(*scheduler->Submit("alice", MakeExperiment(seed)));
    }
    ASSERT_TRUE(runners.AwaitRuns(1));
    scheduler->Drain(absl::Now());  // no grace: the running job is stopped
    for (const std::string& id : ids) {
      absl::StatusOr<JobView> view = scheduler->Get(id);
      ASSERT_TRUE(view.ok());
      EXPECT_EQ(view->state, JobState::kQueued) << id;
      EXPECT_THAT(view->state_reason, HasSubstr("runs after the restart"));
    }
    EXPECT_EQ(scheduler->Submit("alice", MakeExperiment(9)).status().code(),
              absl::StatusCode::kUnavailable);
  }
  runners.set_hold(false);
  auto scheduler = Start(StoreOptions(dir.path(), clock), runners);
  for (const std::string& id : ids) {
    EXPECT_EQ(WaitDone(*scheduler, id).state, JobState::kSucceeded);
  }
  EXPECT_THAT(runners.ran(), ElementsAre(1, 1, 2, 3));
}

TEST(DurableSchedulerTest, CancelEvictionAndForgettingAreDurable) {
  TempDir dir;
  auto clock = std::make_shared<FakeClock>();
  Runners runners;
  std::string cancelled, evicted, forgotten;
  {
    Options options = StoreOptions(dir.path(), clock);
    options.result_ttl = absl::Hours(1);
    options.job_record_ttl = absl::Hours(2);
    auto scheduler = Start(options, runners);
    forgotten = *scheduler->Submit("alice", MakeExperiment(1));
    ASSERT_EQ(WaitDone(*scheduler, forgotten).state, JobState::kSucceeded);
    clock->Advance(absl::Minutes(90));
    evicted = *scheduler->Submit("alice", MakeExperiment(2));
    ASSERT_EQ(WaitDone(*scheduler, evicted).state, JobState::kSucceeded);
    runners.set_hold(true);
    const std::string blocker = *scheduler->Submit("alice", MakeExperiment(3));
    ASSERT_TRUE(runners.AwaitRuns(3));
    cancelled = *scheduler->Submit("alice", MakeExperiment(4));
    ASSERT_EQ(scheduler->Cancel(cancelled)->state, JobState::kCancelled);
    ASSERT_EQ(scheduler->Cancel(blocker)->state, JobState::kRunning);
    ASSERT_EQ(WaitDone(*scheduler, blocker).state, JobState::kCancelled);
    runners.set_hold(false);
    clock->Advance(absl::Minutes(61));  // job 1 forgotten, job 2 evicted
    ASSERT_EQ(scheduler->Get(forgotten).status().code(),
              absl::StatusCode::kNotFound);
    ASSERT_TRUE(scheduler->Get(evicted)->result_evicted);
  }
  Options options = StoreOptions(dir.path(), clock);
  options.result_ttl = absl::Hours(1);
  options.job_record_ttl = absl::Hours(2);
  auto scheduler = Start(options, runners);
  EXPECT_EQ(scheduler->Get(forgotten).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<JobView> view = scheduler->Get(evicted);
  ASSERT_TRUE(view.ok());
  EXPECT_TRUE(view->result_evicted);
  EXPECT_THAT(view->state_reason, HasSubstr("result_ttl"));
  EXPECT_THAT(std::string(scheduler->GetResult(evicted).status().message()),
              StartsWith("result evicted"));
  view = scheduler->Get(cancelled);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->state, JobState::kCancelled);
  EXPECT_EQ(view->reason, Reason::kCancelledByUser);
  // Nothing ran again after the restart.
  EXPECT_EQ(runners.ran().size(), 3u);
  EXPECT_FALSE(fs::exists(dir.path() + "/" + forgotten + ".job"));
  EXPECT_FALSE(fs::exists(dir.path() + "/" + evicted + ".res"));
}

// A store whose writes fail (a full disk).
class FailingStore final : public JobStore {
 public:
  std::vector<JobRecord> Load() override { return {}; }
  absl::Status PutRecord(const JobRecord&) override { return Fail(); }
  absl::Status PutExperiment(const std::string&,
                             const v1::Experiment&) override {
    return fail_experiment ? Fail() : absl::OkStatus();
  }
  absl::Status PutResult(const std::string&, const v1::Result&) override {
    return Fail();
  }
  absl::Status RemoveExperiment(const std::string&) override {
    return absl::OkStatus();
  }
  absl::Status RemoveResult(const std::string&) override {
    return absl::OkStatus();
  }
  absl::Status Remove(const std::string&) override {
    ++removed;
    return absl::OkStatus();
  }
  static absl::Status Fail() { return absl::UnavailableError("disk full"); }
  bool fail_experiment = false;
  std::atomic<int> removed{0};
};

TEST(DurableSchedulerTest, SubmitFailsWhenTheJobCannotBeStored) {
  auto store = std::make_shared<FailingStore>();
  Runners runners;
  Options options;
  options.store = store;
  auto scheduler = Start(options, runners);
  for (bool fail_experiment : {false, true}) {
    store->fail_experiment = fail_experiment;
    absl::StatusOr<std::string> id =
        scheduler->Submit("alice", MakeExperiment(1));
    EXPECT_EQ(id.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(id.status().message()), StartsWith("state_dir: "));
    EXPECT_THAT(std::string(id.status().message()), HasSubstr("disk full"));
  }
  EXPECT_EQ(store->removed.load(), 1);  // the first one's experiment
  EXPECT_EQ(scheduler->Stats().job_records, 0);
  EXPECT_TRUE(runners.ran().empty());
}

}  // namespace
}  // namespace hxemu::scheduler
