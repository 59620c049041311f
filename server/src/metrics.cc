#include "metrics.h"

#include <cctype>
#include <string>
#include <utility>
#include <vector>

namespace hxemu::server {
namespace {

// Wall-clock buckets [s] for queue waits and runs: 1 ms .. ~17 min.
prometheus::Histogram::BucketBoundaries WallSecondsBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
          1,     2.5,    5,     10,   30,    60,   120, 300,  1000};
}

// Buckets [s] for the phases of a run: 0.5 ms (a job's set-up) .. ~17 min.
prometheus::Histogram::BucketBoundaries PhaseSecondsBuckets() {
  prometheus::Histogram::BucketBoundaries buckets = WallSecondsBuckets();
  buckets.insert(buckets.begin(), 0.0005);
  return buckets;
}

}  // namespace

ServerMetrics::ServerMetrics(prometheus::Registry& registry)
    : submitted_accepted_(prometheus::BuildCounter()
                              .Name("hxemu_jobs_submitted_total")
                              .Help("SubmitJob calls by outcome")
                              .Register(registry)
                              .Add({{"outcome", "accepted"}})),
      submitted_rejected_(prometheus::BuildCounter()
                              .Name("hxemu_jobs_submitted_total")
                              .Help("SubmitJob calls by outcome")
                              .Register(registry)
                              .Add({{"outcome", "rejected"}})),
      finished_(prometheus::BuildCounter()
                    .Name("hxemu_jobs_finished_total")
                    .Help("Jobs that reached a terminal state, by outcome")
                    .Register(registry)),
      wait_seconds_(prometheus::BuildHistogram()
                        .Name("hxemu_job_wait_seconds")
                        .Help("Wall time jobs waited in the queue")
                        .Register(registry)
                        .Add({}, WallSecondsBuckets())),
      run_seconds_(prometheus::BuildHistogram()
                       .Name("hxemu_job_run_seconds")
                       .Help("Wall time jobs ran on a chip")
                       .Register(registry)
                       .Add({}, WallSecondsBuckets())),
      phase_seconds_(
          prometheus::BuildHistogram()
              .Name("hxemu_job_phase_seconds")
              .Help("Wall time of the phases of a run on a chip: map "
                    "(validation, placement, routing), lower (circuit "
                    "constants, synapses, input spikes), emulate")
              .Register(registry)),
      phase_map_seconds_(
          phase_seconds_.Add({{"phase", "map"}}, PhaseSecondsBuckets())),
      phase_lower_seconds_(
          phase_seconds_.Add({{"phase", "lower"}}, PhaseSecondsBuckets())),
      phase_emulate_seconds_(
          phase_seconds_.Add({{"phase", "emulate"}}, PhaseSecondsBuckets())),
      emulated_seconds_(prometheus::BuildCounter()
                            .Name("hxemu_emulated_hardware_seconds_total")
                            .Help("Hardware time emulated by succeeded jobs")
                            .Register(registry)
                            .Add({})),
      result_bytes_(prometheus::BuildCounter()
                        .Name("hxemu_result_bytes_total")
                        .Help("Result bytes streamed to clients")
                        .Register(registry)
                        .Add({})) {
  // Create every outcome series up front so they read 0 rather than missing.
  for (const char* outcome : {"succeeded", "failed", "cancelled", "expired"}) {
    finished_.Add({{"outcome", outcome}});
  }
}

void ServerMetrics::JobSubmitted(bool accepted) {
  (accepted ? submitted_accepted_ : submitted_rejected_).Increment();
}

void ServerMetrics::JobFinished(const scheduler::JobView& view) {
  std::string outcome = scheduler::JobStateName(view.state);
  for (char& c : outcome) c = static_cast<char>(std::tolower(c));
  finished_.Add({{"outcome", outcome}}).Increment();
  if (view.start_time != absl::InfinitePast()) {
    wait_seconds_.Observe(
        absl::ToDoubleSeconds(view.start_time - view.submit_time));
    if (view.end_time != absl::InfinitePast()) {
      run_seconds_.Observe(
          absl::ToDoubleSeconds(view.end_time - view.start_time));
    }
  }
  if (view.state == scheduler::JobState::kSucceeded) {
    emulated_seconds_.Increment(view.runtime_ms / 1000.0);
  }
}

void ServerMetrics::RunPhasesObserved(const emulator::RunPhases& phases) {
  const auto observe = [](prometheus::Histogram& histogram, double ms) {
    if (ms > 0.0) histogram.Observe(ms / 1000.0);
  };
  observe(phase_map_seconds_, phases.map_ms);
  observe(phase_lower_seconds_, phases.lower_ms);
  observe(phase_emulate_seconds_, phases.emulate_ms);
}

void ServerMetrics::ResultBytesSent(size_t bytes) {
  result_bytes_.Increment(static_cast<double>(bytes));
}

SchedulerCollector::SchedulerCollector(const scheduler::Scheduler* scheduler,
                                       std::string version)
    : scheduler_(scheduler), version_(std::move(version)) {}

std::vector<prometheus::MetricFamily> SchedulerCollector::Collect() const {
  const scheduler::SchedulerStats stats = scheduler_->Stats();
  std::vector<prometheus::MetricFamily> families;
  auto family = [&](const char* name, const char* help,
                    prometheus::MetricType type) -> prometheus::MetricFamily& {
    prometheus::MetricFamily& f = families.emplace_back();
    f.name = name;
    f.help = help;
    f.type = type;
    return f;
  };
  auto gauge = [&](const char* name, const char* help, double value) {
    family(name, help, prometheus::MetricType::Gauge)
        .metric.emplace_back()
        .gauge.value = value;
  };
  gauge("hxemu_jobs_queued", "Jobs waiting in the queue (queue depth)",
        stats.queued_jobs);
  gauge("hxemu_jobs_running", "Jobs running on a chip", stats.running_jobs);
  gauge("hxemu_users_queued", "Users with at least one queued job",
        stats.users_with_queued_jobs);
  gauge("hxemu_results_retained", "Results kept for GetResult",
        stats.retained_results);
  gauge("hxemu_results_retained_bytes", "Bytes of results kept",
        static_cast<double>(stats.retained_result_bytes));
  gauge("hxemu_job_records", "Job records kept (any state)", stats.job_records);

  // Built apart and appended at the end: references into `families` would
  // dangle as it grows.
  auto chip_family = [](const char* name, const char* help,
                        prometheus::MetricType type) {
    prometheus::MetricFamily f;
    f.name = name;
    f.help = help;
    f.type = type;
    return f;
  };
  prometheus::MetricFamily busy =
      chip_family("hxemu_chip_busy", "1 while the chip runs a job, else 0",
                  prometheus::MetricType::Gauge);
  prometheus::MetricFamily busy_seconds = chip_family(
      "hxemu_chip_busy_seconds_total", "Wall time the chip ran jobs",
      prometheus::MetricType::Counter);
  prometheus::MetricFamily started =
      chip_family("hxemu_chip_jobs_started_total", "Jobs started on the chip",
                  prometheus::MetricType::Counter);
  prometheus::MetricFamily reconfigurations = chip_family(
      "hxemu_chip_reconfigurations_total",
      "Jobs that needed another chip configuration than the job before",
      prometheus::MetricType::Counter);
  for (const scheduler::ChipView& chip : stats.chips) {
    const std::vector<prometheus::ClientMetric::Label> labels = {
        {"chip", std::to_string(chip.id)}};
    prometheus::ClientMetric& b = busy.metric.emplace_back();
    b.label = labels;
    b.gauge.value = chip.busy ? 1 : 0;
    prometheus::ClientMetric& s = busy_seconds.metric.emplace_back();
    s.label = labels;
    s.counter.value = absl::ToDoubleSeconds(chip.busy_time);
    prometheus::ClientMetric& j = started.metric.emplace_back();
    j.label = labels;
    j.counter.value = static_cast<double>(chip.jobs_started);
    prometheus::ClientMetric& r = reconfigurations.metric.emplace_back();
    r.label = labels;
    r.counter.value = static_cast<double>(chip.reconfigurations);
  }
  families.push_back(std::move(busy));
  families.push_back(std::move(busy_seconds));
  families.push_back(std::move(started));
  families.push_back(std::move(reconfigurations));
  prometheus::ClientMetric& info =
      family("hxemu_build_info", "The server's version (value 1)",
             prometheus::MetricType::Gauge)
          .metric.emplace_back();
  info.label = {{"version", version_}};
  info.gauge.value = 1;
  return families;
}

}  // namespace hxemu::server
