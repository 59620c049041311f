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
// Synapse arrays: one per hemisphere, 256 rows x 256 columns; 6-bit
// weights; 128 synapse drivers per array (2 rows each), 4 PADI buses per
// array (32 drivers = 64 rows each).
inline constexpr int kSynapseRowsPerHemisphere = 256;
inline constexpr int kMaxSynapseWeight = 63;
inline constexpr int kNumPadiBusesPerHemisphere = 4;
inline constexpr int kSynapseRowsPerPadiBus = 64;
// Labels per synapse row (6-bit synapse address).
inline constexpr int kLabelsPerSynapseRow = 64;

// Background spike sources (on-chip Poisson): 8, clocked at 250 MHz; at most
// 4 on-chip Poisson populations (one per PADI bus index), each of at most
// 256 neurons (8-bit label randomisation).
inline constexpr int kNumBackgroundSources = 8;
inline constexpr double kBackgroundClockHz = 250e6;
inline constexpr int kMaxOnChipPoissonPopulations = 4;
inline constexpr uint32_t kMaxOnChipPoissonSize = 256;

// CADC: 8-bit parallel read of all membranes.
inline constexpr uint32_t kCadcMaxCode = 255;

// Largest runtime the FPGA's 32-bit playback timer can express [ms hardware].
inline constexpr double kMaxTimerRuntimeMs = 4294967295.0 / kTicksPerMs;

}  // namespace hxemu::emulator
