// File: hxemu/emulator/chip_constants.h
//
// Fixed facts of the emulated HICANN-X v3 chip and its FPGA time base
// (see docs/architecture.md and ../shared/reference/bss2-spec.md §3).
#pragma once

#include <cstdint>

namespace hxemu::emulator {

// Neuron circuits: 2 hemispheres (rows) x 256 columns.
inline constexpr int kNumNeuronRows = 2;
inline constexpr int kNumNeuronColumns = 256;
inline constexpr int kNumNeuronCircuits = kNumNeuronRows * kNumNeuronColumns;

// FPGA clock: 125 MHz, so every timestamp is a multiple of 8 ns.
inline constexpr int64_t kTickNs = 8;
inline constexpr double kTicksPerMs = 1e6 / kTickNs;  // 125000

// MADC: 500 MHz / (5 + 12) = 29.4 MSa/s, one sample every 34 ns [ns].
inline constexpr int64_t kMadcSamplePeriodNs = 34;
inline constexpr uint32_t kMadcMaxCode = 1023;

// Largest runtime the FPGA's 32-bit playback timer can express [ms hardware].
inline constexpr double kMaxTimerRuntimeMs = 4294967295.0 / kTicksPerMs;

}  // namespace hxemu::emulator
