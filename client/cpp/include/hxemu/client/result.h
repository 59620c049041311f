// File: hxemu/client/result.h
//
// An experiment's result as plain C++ types: spike trains per neuron and MADC
// (ADC) samples with their times. Times are kept exactly as the chip reports
// them, integer 8 ns FPGA ticks since the start of the recorded run; the
// *_ms() accessors convert to ms hardware.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hxemu/v1/experiment.pb.h"

namespace hxemu::client {

// Length of one FPGA clock tick (125 MHz) [ms hardware].
inline constexpr double kMsPerTick = 8e-6;

inline double TicksToMs(uint64_t ticks) {
  return static_cast<double>(ticks) * kMsPerTick;
}

struct SpikeTrain {
  // Index into Experiment.populations, and of the neuron within it.
  uint32_t population = 0;
  uint32_t neuron = 0;
  // Neuron circuit (AtomicNeuronOnDLS enum 0..511); 0 for spike sources.
  uint32_t circuit = 0;
  // Spike times [8 ns ticks], ascending.
  std::vector<uint64_t> times_ticks;

  // Spike times [ms hardware].
  std::vector<double> times_ms() const;
};

// MADC samples of one observable of one neuron.
struct AdcTrace {
  uint32_t population = 0;
  uint32_t neuron = 0;
  uint32_t circuit = 0;
  hxemu::v1::Observable observable = hxemu::v1::OBSERVABLE_V;
  // Sample times [8 ns ticks], ascending, parallel to codes.
  std::vector<uint64_t> times_ticks;
  // Raw 10-bit ADC codes, 0..1023.
  std::vector<uint16_t> codes;

  std::vector<double> times_ms() const;
};

// One parallel CADC read of every placed neuron circuit's membrane.
struct CadcRead {
  // Read time [8 ns ticks].
  uint64_t time_ticks = 0;
  // 8-bit codes, one per entry of RunResult::cadc_circuits.
  std::vector<uint8_t> codes;

  double time_ms() const { return TicksToMs(time_ticks); }
};

struct RunResult {
  // Chip the experiment ran on.
  uint32_t chip_id = 0;
  // Recorded duration [ms hardware].
  double runtime_ms = 0;
  // Labels of the populations, by index.
  std::vector<std::string> population_labels;
  // One per recorded (population, neuron), also for neurons without spikes.
  std::vector<SpikeTrain> spike_trains;
  std::vector<AdcTrace> traces;
  // CADC (when the experiment asked for reads): every placed HX neuron
  // circuit, ascending, and one read per requested time, ascending.
  std::vector<uint32_t> cadc_circuits;
  std::vector<CadcRead> cadc_reads;

  // The spike train of (population, neuron); nullptr if it was not recorded.
  const SpikeTrain* Spikes(uint32_t population, uint32_t neuron) const;
  // The trace of (population, neuron, observable); nullptr if not recorded.
  const AdcTrace* Trace(uint32_t population, uint32_t neuron,
                        hxemu::v1::Observable observable) const;
};

// Converts the (merged) proto result. Trace samples beyond the shorter of
// times_ticks / codes are dropped (the server always sends them parallel).
RunResult ToRunResult(const hxemu::v1::Result& result);

}  // namespace hxemu::client
