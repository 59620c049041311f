// Prometheus metrics of the server (prometheus-cpp). Names follow the
// Prometheus conventions: an `hxemu_` prefix, base units in the name
// (`_seconds`, `_bytes`), counters end in `_total`, and no user or job ids as
// labels (each label value is a time series).
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <cstddef>
#include <memory>

#include "hxemu/emulator/chip.h"
#include "hxemu/scheduler/scheduler.h"

namespace hxemu::server {

class ServerMetrics {
 public:
  explicit ServerMetrics(prometheus::Registry& registry);

  // A SubmitJob call: accepted into the queue, or rejected (any error).
  void JobSubmitted(bool accepted);
  // A job reached its terminal state (called from the scheduler's done
  // callback: cheap, never blocks).
  void JobFinished(const scheduler::JobView& view);
  // Result bytes streamed to a client by GetResult.
  void ResultBytesSent(size_t bytes);
  // The phases of one Chip::Run (called on the chip's thread); a phase the
  // run did not reach (0 ms) is not observed.
  void RunPhasesObserved(const emulator::RunPhases& phases);

 private:
  prometheus::Counter& submitted_accepted_;
  prometheus::Counter& submitted_rejected_;
  prometheus::Family<prometheus::Counter>& finished_;
  prometheus::Histogram& wait_seconds_;
  prometheus::Histogram& run_seconds_;
  prometheus::Family<prometheus::Histogram>& phase_seconds_;
  prometheus::Histogram& phase_map_seconds_;
  prometheus::Histogram& phase_lower_seconds_;
  prometheus::Histogram& phase_emulate_seconds_;
  prometheus::Counter& emulated_seconds_;
  prometheus::Counter& result_bytes_;
};

// The scheduler's state, read at every scrape (no bookkeeping on the job
// path): queue depth, running jobs, per-chip busy/runs/reconfigurations
// (label `chip`: bounded by the pool size), retained results, build info.
class SchedulerCollector final : public prometheus::Collectable {
 public:
  // `scheduler` must outlive the collector's registration.
  SchedulerCollector(const scheduler::Scheduler* scheduler,
                     std::string version);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const scheduler::Scheduler* const scheduler_;
  const std::string version_;
};

}  // namespace hxemu::server
