#include "hxemu/scheduler/clock.h"

namespace hxemu::scheduler {
namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace

Clock& Clock::Real() {
  static RealClock* const clock = new RealClock();  // never destroyed
  return *clock;
}

}  // namespace hxemu::scheduler
