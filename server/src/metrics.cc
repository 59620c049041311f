#include "metrics.h"

#include <cctype>
#include <string>

namespace hxemu::server {
namespace {

// Wall-clock buckets [s] for queue waits and runs: 1 ms .. ~17 min.
prometheus::Histogram::BucketBoundaries WallSecondsBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
          1,     2.5,    5,     10,   30,    60,   120, 300,  1000};
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

void ServerMetrics::ResultBytesSent(size_t bytes) {
  result_bytes_.Increment(static_cast<double>(bytes));
}

}  // namespace hxemu::server
