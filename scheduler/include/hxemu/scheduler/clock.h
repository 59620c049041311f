// File: hxemu/scheduler/clock.h
//
// The time source of the scheduler. Every timestamp, job deadline and result
// TTL is read from a Clock, so tests can replace the wall clock by a
// FakeClock and move time forward by hand instead of sleeping.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace hxemu::scheduler {

class Clock {
 public:
  virtual ~Clock() = default;
  // The current time. Thread-safe; must never go backwards.
  virtual absl::Time Now() const = 0;

  // The wall clock (absl::Now()); process-wide, never destroyed.
  static Clock& Real();
};

// A clock that stands still until told to move. Thread-safe.
class FakeClock : public Clock {
 public:
  // Starts at `start` (by default a fixed, round date: 2026-01-01 00:00 UTC).
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1767225600))
      : now_ns_(absl::ToUnixNanos(start)) {}

  absl::Time Now() const override {
    return absl::FromUnixNanos(now_ns_.load(std::memory_order_acquire));
  }
  // Moves the clock forward by `d` (>= 0).
  void Advance(absl::Duration d) {
    now_ns_.fetch_add(absl::ToInt64Nanoseconds(d), std::memory_order_acq_rel);
  }

 private:
  std::atomic<int64_t> now_ns_;
};

}  // namespace hxemu::scheduler
