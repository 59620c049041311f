#include "hxemu/client/result.h"

#include <algorithm>

namespace hxemu::client {
namespace {

std::vector<double> ToMs(const std::vector<uint64_t>& ticks) {
  std::vector<double> ms(ticks.size());
  std::transform(ticks.begin(), ticks.end(), ms.begin(), TicksToMs);
  return ms;
}

}  // namespace

std::vector<double> SpikeTrain::times_ms() const { return ToMs(times_ticks); }

std::vector<double> AdcTrace::times_ms() const { return ToMs(times_ticks); }

const SpikeTrain* RunResult::Spikes(uint32_t population,
                                    uint32_t neuron) const {
  for (const SpikeTrain& train : spike_trains) {
    if (train.population == population && train.neuron == neuron) {
      return &train;
    }
  }
  return nullptr;
}

const AdcTrace* RunResult::Trace(uint32_t population, uint32_t neuron,
                                 hxemu::v1::Observable observable) const {
  for (const AdcTrace& trace : traces) {
    if (trace.population == population && trace.neuron == neuron &&
        trace.observable == observable) {
      return &trace;
    }
  }
  return nullptr;
}

RunResult ToRunResult(const hxemu::v1::Result& result) {
  RunResult run;
  run.chip_id = result.chip_id();
  run.runtime_ms = result.runtime_ms();
  run.population_labels.assign(result.population_labels().begin(),
                               result.population_labels().end());
  run.spike_trains.reserve(result.spike_trains_size());
  for (const hxemu::v1::SpikeTrain& train : result.spike_trains()) {
    SpikeTrain& out = run.spike_trains.emplace_back();
    out.population = train.population();
    out.neuron = train.neuron();
    out.circuit = train.circuit();
    out.times_ticks.assign(train.times_ticks().begin(),
                           train.times_ticks().end());
  }
  run.traces.reserve(result.traces_size());
  for (const hxemu::v1::Trace& trace : result.traces()) {
    AdcTrace& out = run.traces.emplace_back();
    out.population = trace.population();
    out.neuron = trace.neuron();
    out.circuit = trace.circuit();
    out.observable = trace.observable();
    const int n = std::min(trace.times_ticks_size(), trace.codes_size());
    out.times_ticks.assign(trace.times_ticks().begin(),
                           trace.times_ticks().begin() + n);
    out.codes.reserve(n);
    for (int i = 0; i < n; ++i) {
      // 10-bit codes (0..1023, the server's contract): the narrowing is
      // exact.
      out.codes.push_back(static_cast<uint16_t>(trace.codes(i)));
    }
  }
  run.cadc_circuits.assign(result.cadc_circuits().begin(),
                           result.cadc_circuits().end());
  run.cadc_reads.reserve(result.cadc_reads_size());
  for (const hxemu::v1::CadcRead& read : result.cadc_reads()) {
    CadcRead& out = run.cadc_reads.emplace_back();
    out.time_ticks = read.time_ticks();
    out.codes.reserve(read.codes_size());
    // 8-bit codes (0..255, the server's contract): the narrowing is exact.
    for (uint32_t code : read.codes()) {
      out.codes.push_back(static_cast<uint8_t>(code));
    }
  }
  return run;
}

}  // namespace hxemu::client
