// File: calibration_store.h
//
// The server's calibrations (contract C3): every chip's default calibration
// computed in the background at start (jobs with raw parameters run on the
// chips meanwhile: the calibration measures its own emulator::Chip objects,
// which behave exactly like the scheduler's, since a chip id fixes the
// mismatch), custom-target calibrations computed once on first request, all
// kept in memory and in the on-disk cache (hxemu::calibration::
// CalibrationCache; an unwritable cache directory only costs the disk copy).
//
// One worker thread computes one calibration at a time, requests first,
// then the remaining default calibrations. Get never blocks on a
// computation: its callback runs at once (memory, disk) or later on the
// worker thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hxemu/calibration/cache.h"
#include "hxemu/v1/calibration.pb.h"
#include "hxemu/v1/service.pb.h"

namespace hxemu::server {

class CalibrationStore {
 public:
  using Callback =
      std::function<void(absl::StatusOr<hxemu::v1::Calibration> calibration)>;

  struct Options {
    int num_chips = 1;
    // On-disk cache directory; empty = memory only.
    std::string cache_dir;
    // Queue every chip's default calibration at construction.
    bool calibrate_at_start = false;
    // Most calibrations waiting to be computed (RESOURCE_EXHAUSTED beyond).
    int max_queued = 64;
    // Most custom-target calibrations kept in memory (beyond, ready ones are
    // dropped; they stay on disk).
    int max_in_memory = 256;
    // Circuits to calibrate; empty = all 512 (tests calibrate a few; such
    // partial calibrations are cached in their own subdirectory).
    std::vector<uint32_t> circuits;
  };

  explicit CalibrationStore(const Options& options);
  ~CalibrationStore();  // Stop()
  CalibrationStore(const CalibrationStore&) = delete;
  CalibrationStore& operator=(const CalibrationStore&) = delete;

  // Delivers the calibration of `chip_id` for `targets` to `done`: at once
  // from memory or the disk cache, else when computed. Unset chip_id: the
  // lowest chip that has one for these targets in memory, else chip 0.
  // Errors (delivered to `done`, at once): INVALID_ARGUMENT for a chip out of
  // range or bad targets, UNIMPLEMENTED for targets the emulator cannot
  // calibrate, RESOURCE_EXHAUSTED if too many are queued, UNAVAILABLE after
  // Stop, and a failed computation's error.
  void Get(std::optional<uint32_t> chip_id,
           const hxemu::v1::CalibrationTargets& targets, Callback done);

  // State of a chip's default calibration, and its warning or error.
  hxemu::v1::CalibrationState DefaultState(uint32_t chip_id,
                                           std::string* message) const;

  // Cancels the running computation, fails every waiting request with
  // UNAVAILABLE and joins the worker. Idempotent.
  void Stop();

  // Calibrations computed, and served from the disk cache, so far.
  int64_t computed() const;
  int64_t disk_hits() const;

 private:
  struct Entry {
    uint32_t chip_id = 0;
    hxemu::v1::CalibrationTargets targets;  // resolved, every field set
    bool is_default = false;
    hxemu::v1::CalibrationState state = hxemu::v1::CALIBRATION_STATE_NONE;
    std::optional<hxemu::v1::Calibration> calibration;
    absl::Status error;
    std::vector<Callback> waiters;
  };

  static std::string KeyOf(uint32_t chip_id,
                           const hxemu::v1::CalibrationTargets& resolved);
  // Queues the computation of `key` (front: a request; back: a default).
  absl::Status EnqueueLocked(const std::string& key, bool front);  // mu_ held
  void Work();

  const Options options_;
  const calibration::CalibrationCache cache_;
  hxemu::v1::CalibrationTargets default_targets_;

  // std::mutex rather than absl::Mutex: Debian's Abseil is not built for
  // ThreadSanitizer, which then cannot see absl::Mutex's ordering (see
  // scheduler/src/mutex.h); libstdc++'s mutex goes through pthread, which
  // TSan intercepts. Everything below is guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable work_;  // queue_ not empty, or stopped_
  std::map<std::string, Entry> entries_;
  std::deque<std::string> queue_;
  bool stopped_ = false;
  int64_t computed_ = 0;
  int64_t disk_hits_ = 0;
  std::atomic<bool> cancel_{false};
  std::thread worker_;
};

}  // namespace hxemu::server
