// File: mutex.h (internal to hxemu_scheduler)
//
// absl::Mutex and absl::CondVar, made visible to ThreadSanitizer.
//
// WARNING: Debian 12's libabsl is not built with -fsanitize=thread. TSan then
// cannot see absl::Mutex being locked and unlocked, and reports every access
// guarded by one as a data race (checked: two threads incrementing an int
// under absl::MutexLock). In TSan builds these thin wrappers tell TSan about
// the happens-before edges the mutex creates (`__tsan_release` before each
// unlock, `__tsan_acquire` after each lock, also around CondVar waits). In
// other builds they are plain forwarding calls. The edges are on the wrapper's
// own address, so they stay correct with an instrumented Abseil too.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#if defined(__SANITIZE_THREAD__)
#define HXEMU_INTERNAL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HXEMU_INTERNAL_TSAN 1
#endif
#endif

#ifdef HXEMU_INTERNAL_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace hxemu::scheduler::internal {

class CondVar;

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    mu_.Lock();
    Acquired();
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    Releasing();
    mu_.Unlock();
  }

 private:
  friend class CondVar;

  void Acquired() {
#ifdef HXEMU_INTERNAL_TSAN
    __tsan_acquire(this);
#endif
  }
  void Releasing() {
#ifdef HXEMU_INTERNAL_TSAN
    __tsan_release(this);
#endif
  }

  absl::Mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  // As absl::CondVar::Wait: unlocks `mu`, waits, locks `mu` again.
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    mu->Releasing();
    cv_.Wait(&mu->mu_);
    mu->Acquired();
  }
  // As absl::CondVar::WaitWithDeadline: true if the deadline passed.
  bool WaitWithDeadline(Mutex* mu, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    mu->Releasing();
    const bool timed_out = cv_.WaitWithDeadline(&mu->mu_, deadline);
    mu->Acquired();
    return timed_out;
  }
  void Signal() { cv_.Signal(); }
  void SignalAll() { cv_.SignalAll(); }

 private:
  absl::CondVar cv_;
};

}  // namespace hxemu::scheduler::internal

#undef HXEMU_INTERNAL_TSAN
