// File: model_constants.h
//
// Every number of the emulator's first-cut neuron model, in one place, with
// its unit in the name. docs/emulator-model.md explains where each comes from;
// keep the two in sync. Internal header.
#pragma once

#include <cstdint>

#include "hxemu/emulator/chip_constants.h"

namespace hxemu::emulator::model {

// ---- Time base -------------------------------------------------------------

// Integration steps per 8 ns FPGA tick. The loop and the spike-time
// interpolation are written for any value; 1 (dt = 8 ns) is the first cut.
inline constexpr int kStepsPerTick = 1;
inline constexpr double kTickS = kTickNs * 1e-9;
inline constexpr double kStepS = kTickS / kStepsPerTick;

// Unrecorded free-running time before the recorded run starts [s].
inline constexpr double kWarmupS = 20e-6;
inline constexpr int64_t kWarmupTicks = 2500;  // = kWarmupS / kTickS
static_assert(kWarmupTicks * kTickNs == 20000);

// Cancellation is polled every this many steps (1 us emulated).
inline constexpr int64_t kCancelPollSteps = 125 * kStepsPerTick;
// on_progress is called every this many steps (10 us emulated).
inline constexpr int64_t kProgressSteps = 1250 * kStepsPerTick;

// Delay of an on-chip spike to its targets' synaptic inputs [ticks].
inline constexpr int64_t kOnChipDelayTicks = 1;

// ---- Voltage DACs (10-bit CapMem voltage cells) ---------------------------
// V = offset + code * slope; each kind has its own nominal transfer.

inline constexpr double kLeakOffsetVolt = 0.10;
inline constexpr double kLeakVoltPerLsb = 0.75e-3;
inline constexpr double kResetOffsetVolt = 0.10;
inline constexpr double kResetVoltPerLsb = 0.75e-3;
inline constexpr double kThresholdOffsetVolt = 0.25;
inline constexpr double kThresholdVoltPerLsb = 1.25e-3;

// The membrane cannot leave the analog supply range [V].
inline constexpr float kMembraneMinVolt = 0.0f;
inline constexpr float kMembraneMaxVolt = 1.2f;

// ---- Current DACs and switches ---------------------------------------------

// Leak conductance per leak_i_bias LSB [S] (150 -> 75 nS: tau_mem = 30.7 us
// at C = 2.3 pF; 1022 -> 511 nS: 4.5 us).
inline constexpr double kLeakSiemensPerLsb = 0.5e-9;
// Reset conductance per reset_i_bias LSB [S] (1022 -> 2.04 uS: tau 1.1 us at
// C = 2.3 pF; x8 -> 16.4 uS: 0.14 us; 200 -> 400 nS: 4.8 us with the leak).
inline constexpr double kResetSiemensPerLsb = 2.0e-9;
// *_enable_multiplication multiplies, *_enable_division divides by this.
inline constexpr double kConductanceSwitchFactor = 8.0;

// Membrane capacitance: C = base + code * per_lsb [F] (63 -> 2.3 pF).
inline constexpr double kCapacitanceBaseFarad = 0.1e-12;
inline constexpr double kCapacitanceFaradPerLsb = 2.2e-12 / 63.0;

// Synaptic input time constant: tau_syn = kSynTauSecondLsb / max(code, 1)
// [s] (200 -> 10 us, 1022 -> 1.96 us); x5 with enable_high_resistance.
inline constexpr double kSynTauSecondLsb = 2e-3;
inline constexpr double kSynHighResistanceFactor = 5.0;
// enable_small_capacitance = 0 adds a line capacitor: tau_syn x this and the
// current step per event / this (same charge per event).
inline constexpr double kSynLargeCapacitanceFactor = 2.0;
// Peak synaptic current per event: |weight| * i_bias_gm * this [A].
// Weight 31, gm 500 on C = 2.3 pF, tau_mem = tau_syn = 10 us -> 19.8 mV PSP.
inline constexpr double kSynAmpPerWeightGm = 0.8e-12;
// Synaptic currents below this are flushed to zero (no denormals) [A].
inline constexpr float kSynFlushAmp = 1e-15f;

// Constant current: constant_current_i_offset * this [A] (1022 -> 102 nA,
// i.e. +0.44 V on a 10 us / 2.3 pF membrane).
inline constexpr double kOffsetAmpPerLsb = 0.1e-9;

// ---- Refractory / reset ----------------------------------------------------

// Refractory clock period (clock scale 0, both "slow" and "fast") [ticks].
inline constexpr int kRefractoryTicksPerCount = 1;
// The reset is released (kHoldoffBase - 2 * reset_holdoff) clock cycles
// before the refractory period ends.
inline constexpr int kHoldoffBase = 31;

// ---- Fixed-pattern mismatch (1 sigma) ---------------------------------------

inline constexpr double kVoltageOffsetSigmaVolt = 10e-3;
inline constexpr double kVoltageGainSigma = 0.03;
inline constexpr double kConductanceSigma = 0.08;
inline constexpr double kCapacitanceSigma = 0.02;
inline constexpr double kSynTauSigma = 0.08;
inline constexpr double kSynGmSigma = 0.08;
inline constexpr double kOffsetCurrentSigma = 0.08;
// Chip-level MADC readout mismatch.
inline constexpr double kMadcGainSigma = 0.01;
inline constexpr double kMadcOffsetSigmaLsb = 2.0;
// Standard normal draws are clipped to +-this many sigma.
inline constexpr double kMismatchClipSigma = 4.0;

// ---- Trial-to-trial noise --------------------------------------------------

// Stationary membrane noise (OU through the membrane leak) [V].
inline constexpr double kMembraneNoiseVolt = 1.5e-3;
// The noise's correlation time is tau_mem, but at most this [s] (so that a
// neuron without leak gets a bounded random walk instead of none).
inline constexpr double kNoiseMaxTauS = 100e-6;
// MADC noise per sample [LSB].
inline constexpr double kMadcNoiseLsb = 0.7;

// ---- Readout
// -----------------------------------------------------------------

// MADC input range: 0 .. kMadcFullScaleVolt maps onto codes 0 .. 1023.
inline constexpr double kMadcFullScaleVolt = 1.2;
// EXC_SYNIN / INH_SYNIN: V = base + I_syn * transimpedance.
inline constexpr double kSynInReadoutBaseVolt = 0.3;
inline constexpr double kSynInReadoutVoltPerAmp = 20e-3 / 1e-9;  // 20 mV/nA

}  // namespace hxemu::emulator::model
