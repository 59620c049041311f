// File: calibration_store.cc
#include "calibration_store.h"

#include <algorithm>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "hxemu/calibration/calibrate.h"
#include "hxemu/calibration/targets.h"
#include "hxemu/emulator/chip.h"

namespace hxemu::server {

using ::hxemu::v1::Calibration;
using ::hxemu::v1::CalibrationTargets;

namespace {

std::string CacheDir(const CalibrationStore::Options& options) {
  if (options.cache_dir.empty() || options.circuits.empty()) {
    return options.cache_dir;
  }
  return absl::StrCat(options.cache_dir, "/circuits-",
                      absl::StrJoin(options.circuits, "_"));
}

}  // namespace

CalibrationStore::CalibrationStore(const Options& options)
    : options_(options), cache_(CacheDir(options)) {
  default_targets_ =
      calibration::ToProto(*calibration::ResolveTargets(CalibrationTargets()));
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (int c = 0; c < options_.num_chips; ++c) {
      const uint32_t chip = static_cast<uint32_t>(c);
      Entry& e = entries_[KeyOf(chip, default_targets_)];
      e.chip_id = chip;
      e.targets = default_targets_;
      e.is_default = true;
      e.state = hxemu::v1::CALIBRATION_STATE_NONE;
      if (options_.calibrate_at_start) {
        e.state = hxemu::v1::CALIBRATION_STATE_QUEUED;
        queue_.push_back(KeyOf(chip, default_targets_));
      }
    }
  }
  worker_ = std::thread([this] { Work(); });
}

CalibrationStore::~CalibrationStore() { Stop(); }

std::string CalibrationStore::KeyOf(uint32_t chip_id,
                                    const CalibrationTargets& resolved) {
  return calibration::CalibrationCache::Key(chip_id, resolved,
                                            calibration::EmulatorVersion());
}

void CalibrationStore::Stop() {
  std::vector<Callback> failed;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    cancel_ = true;
    work_.notify_all();
    for (auto& [key, e] : entries_) {
      for (Callback& cb : e.waiters) failed.push_back(std::move(cb));
      e.waiters.clear();
    }
    queue_.clear();
  }
  for (Callback& cb : failed) {
    cb(absl::UnavailableError("the server is shutting down"));
  }
  if (worker_.joinable()) worker_.join();
}

absl::Status CalibrationStore::EnqueueLocked(const std::string& key,
                                             bool front) {
  if (static_cast<int>(queue_.size()) >= options_.max_queued) {
    return absl::ResourceExhaustedError(
        absl::StrCat("calibration: ", queue_.size(),
                     " calibrations are queued already (at most ",
                     options_.max_queued, "); try again later"));
  }
  if (front) {
    queue_.push_front(key);
  } else {
    queue_.push_back(key);
  }
  work_.notify_one();
  return absl::OkStatus();
}

void CalibrationStore::Get(std::optional<uint32_t> chip_id,
                           const CalibrationTargets& targets, Callback done) {
  if (chip_id && *chip_id >= static_cast<uint32_t>(options_.num_chips)) {
    done(absl::InvalidArgumentError(absl::StrCat("chip_id: ", *chip_id,
                                                 " is out of range 0..",
                                                 options_.num_chips - 1)));
    return;
  }
  absl::StatusOr<calibration::ResolvedTargets> resolved =
      calibration::ResolveTargets(targets);
  if (!resolved.ok()) {
    done(resolved.status());
    return;
  }
  const CalibrationTargets full = calibration::ToProto(*resolved);
  // What to deliver at once, unless the request waits for the worker.
  absl::StatusOr<Calibration> now = absl::UnknownError("unset");
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopped_) {
      done(absl::UnavailableError("the server is shutting down"));
      return;
    }
    uint32_t chip = chip_id.value_or(0);
    if (!chip_id) {
      for (int c = 0; c < options_.num_chips; ++c) {
        auto it = entries_.find(KeyOf(static_cast<uint32_t>(c), full));
        if (it != entries_.end() && it->second.calibration) {
          chip = static_cast<uint32_t>(c);
          break;
        }
      }
    }
    const std::string key = KeyOf(chip, full);
    Entry& e = entries_[key];
    if (e.waiters.empty() && !e.calibration &&
        e.state != hxemu::v1::CALIBRATION_STATE_COMPUTING &&
        e.state != hxemu::v1::CALIBRATION_STATE_QUEUED) {
      e.chip_id = chip;
      e.targets = full;
    }
    if (e.calibration) {
      now = *e.calibration;
    } else if (std::optional<Calibration> disk =
                   cache_.Load(chip, full, calibration::EmulatorVersion())) {
      ++disk_hits_;
      e.calibration = *disk;
      e.state = hxemu::v1::CALIBRATION_STATE_READY;
      e.error = absl::OkStatus();
      now = *std::move(disk);
    } else {
      // Queued or computing: wait. Otherwise (never asked, or failed):
      // compute, ahead of the remaining default calibrations.
      const bool queued =
          e.state == hxemu::v1::CALIBRATION_STATE_QUEUED &&
          std::find(queue_.begin(), queue_.end(), key) != queue_.end();
      if (queued) {
        // Requested: move it to the front.
        queue_.erase(std::find(queue_.begin(), queue_.end(), key));
        queue_.push_front(key);
      } else if (e.state != hxemu::v1::CALIBRATION_STATE_COMPUTING) {
        if (absl::Status s = EnqueueLocked(key, /*front=*/true); !s.ok()) {
          now = s;
        } else {
          e.state = hxemu::v1::CALIBRATION_STATE_QUEUED;
        }
      }
      if (now.status().code() == absl::StatusCode::kUnknown) {
        e.waiters.push_back(std::move(done));
        return;
      }
    }
  }
  done(std::move(now));
}

void CalibrationStore::Work() {
  for (;;) {
    std::string key;
    uint32_t chip = 0;
    CalibrationTargets targets;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [this] { return stopped_ || !queue_.empty(); });
      if (stopped_) return;
      key = queue_.front();
      queue_.pop_front();
      Entry& e = entries_[key];
      e.state = hxemu::v1::CALIBRATION_STATE_COMPUTING;
      chip = e.chip_id;
      targets = e.targets;
    }
    // Outside the lock: the disk first (another server may have stored it),
    // then the measurement.
    absl::StatusOr<Calibration> result = absl::UnknownError("not computed");
    bool from_disk = false;
    if (std::optional<Calibration> disk =
            cache_.Load(chip, targets, calibration::EmulatorVersion())) {
      result = *std::move(disk);
      from_disk = true;
    } else {
      emulator::Chip emulated(chip);
      calibration::CalibrationOptions copts;
      copts.cancel_requested = &cancel_;
      copts.circuits = options_.circuits;
      result = calibration::Calibrate(emulated, targets, copts);
      if (result.ok()) {
        if (!result->warning().empty()) {
          std::cerr << "hxemu-server: chip " << chip << ": "
                    << result->warning() << "\n";
        }
        if (absl::Status s = cache_.Store(*result); !s.ok()) {
          std::cerr << "hxemu-server: " << s.message()
                    << " (the calibration is kept in memory only)\n";
        }
      }
    }
    std::vector<Callback> waiters;
    {
      std::unique_lock<std::mutex> lock(mu_);
      Entry& e = entries_[key];
      if (from_disk) {
        ++disk_hits_;
      } else if (result.ok()) {
        ++computed_;
      }
      if (result.ok()) {
        e.calibration = *result;
        e.state = hxemu::v1::CALIBRATION_STATE_READY;
        e.error = absl::OkStatus();
      } else {
        e.state = hxemu::v1::CALIBRATION_STATE_FAILED;
        e.error = result.status();
      }
      waiters.swap(e.waiters);
      // Bounded memory: drop other ready custom calibrations beyond the cap.
      for (auto it = entries_.begin();
           static_cast<int>(entries_.size()) >
               options_.num_chips + options_.max_in_memory &&
           it != entries_.end();) {
        const Entry& x = it->second;
        if (it->first != key && !x.is_default && x.waiters.empty() &&
            x.state == hxemu::v1::CALIBRATION_STATE_READY) {
          it = entries_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (Callback& cb : waiters) cb(result);
  }
}

hxemu::v1::CalibrationState CalibrationStore::DefaultState(
    uint32_t chip_id, std::string* message) const {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = entries_.find(KeyOf(chip_id, default_targets_));
  if (it == entries_.end()) return hxemu::v1::CALIBRATION_STATE_UNSPECIFIED;
  const Entry& e = it->second;
  if (message != nullptr) {
    *message = e.calibration ? e.calibration->warning()
                             : std::string(e.error.message());
  }
  return e.state;
}

int64_t CalibrationStore::computed() const {
  std::unique_lock<std::mutex> lock(mu_);
  return computed_;
}

int64_t CalibrationStore::disk_hits() const {
  std::unique_lock<std::mutex> lock(mu_);
  return disk_hits_;
}

}  // namespace hxemu::server
