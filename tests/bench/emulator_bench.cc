// Benchmarks of the emulator library (first cut; a later issue replaces this
// with the real benchmark suite).
//
// BM_Chip_Run_LeakOverThreshold/N: N leak-over-threshold neurons (the
// tutorial's second operating point, all spiking) for 1 ms of emulated time,
// spikes of all neurons and the membrane of one recorded. Counters:
//   neuron_steps/s   neuron updates (8 ns steps) per wall second
//   emulated_ms/s    emulated time per wall second (1000 = real time for the
//                    hardware, which runs 1000x faster than biology)
#include <benchmark/benchmark.h>

#include <cstdint>

#include "hxemu/emulator/chip.h"
#include "hxemu/emulator/chip_constants.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::emulator {
namespace {

hxemu::v1::Experiment LeakOverThreshold(uint32_t neurons, double runtime_ms) {
  hxemu::v1::Experiment e;
  hxemu::v1::Population* pop = e.add_populations();
  pop->set_size(neurons);
  pop->set_cell_type(hxemu::v1::CELL_TYPE_HX_NEURON);
  const std::pair<const char*, int32_t> params[] = {
      {"leak_v_leak", 1000},
      {"leak_i_bias", 150},
      {"threshold_v_threshold", 300},
      {"reset_v_reset", 400},
      {"membrane_capacitance_capacitance", 63},
      {"refractory_period_refractory_time", 255},
      {"threshold_enable", 1},
      {"reset_i_bias", 1022},
      {"reset_enable_multiplication", 1}};
  for (const auto& [name, value] : params) {
    hxemu::v1::NeuronParameter* p = pop->add_parameters();
    p->set_name(name);
    p->add_values(value);
  }
  hxemu::v1::Recording* spikes = e.add_recordings();
  spikes->set_population(0);
  spikes->set_observable(hxemu::v1::OBSERVABLE_SPIKES);
  hxemu::v1::Recording* v = e.add_recordings();
  v->set_population(0);
  v->set_observable(hxemu::v1::OBSERVABLE_V);
  v->add_neurons(0);
  e.set_runtime_ms(runtime_ms);
  e.set_seed(1);
  return e;
}

void BM_Chip_Run_LeakOverThreshold(benchmark::State& state) {
  const uint32_t neurons = static_cast<uint32_t>(state.range(0));
  constexpr double kRuntimeMs = 1.0;
  const hxemu::v1::Experiment e = LeakOverThreshold(neurons, kRuntimeMs);
  Chip chip(0);
  int64_t spikes = 0;
  for (auto _ : state) {
    absl::StatusOr<hxemu::v1::Result> r = chip.Run(e, {}, {});
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    for (const auto& t : r->spike_trains()) spikes += t.times_ticks_size();
    benchmark::DoNotOptimize(r);
  }
  const double steps_per_run = kRuntimeMs * kTicksPerMs;
  state.counters["neuron_steps/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * steps_per_run * neurons,
      benchmark::Counter::kIsRate);
  state.counters["emulated_ms/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * kRuntimeMs,
                         benchmark::Counter::kIsRate);
  state.counters["spikes/run"] = benchmark::Counter(
      static_cast<double>(spikes) / static_cast<double>(state.iterations()));
}
BENCHMARK(BM_Chip_Run_LeakOverThreshold)
    ->Arg(1)
    ->Arg(512)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace hxemu::emulator

BENCHMARK_MAIN();
