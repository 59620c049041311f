// File: model_constants.h
//
// Every number of the emulator's neuron model, in one place, with
// its unit in the name. docs/emulator-model.md explains where each comes from;
// keep the two in sync. Internal header.
#pragma once

#include <cstdint>

#include "hxemu/emulator/chip_constants.h"

namespace hxemu::emulator::model {

// ---- Time base -------------------------------------------------------------

// Integration steps per 8 ns FPGA tick. The loop and the spike-time
// interpolation are written for any value; 1 = dt 8 ns (macro steps need 1).
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
// Synapse DAC bias (Experiment.synapse_dac_bias) [CapMem LSB]: the synapse
// DACs mirror this chip-global current, so the amplitude above scales with
// bias / kSynapseDacBiasNominal (calix default 600, range 30..1022).
inline constexpr int kSynapseDacBiasNominal = 600;
inline constexpr int kSynapseDacBiasMin = 30;
inline constexpr int kSynapseDacBiasMax = 1022;
// Synaptic currents below this are flushed to zero (no denormals) [A].
inline constexpr float kSynFlushAmp = 1e-15f;

// Constant current: constant_current_i_offset * this [A] (1022 -> 102 nA,
// i.e. +0.44 V on a 10 us / 2.3 pF membrane).
inline constexpr double kOffsetAmpPerLsb = 0.1e-9;

// ---- AdEx exponential term (exponential_*) ---------------------------------
// I_exp = g_leak Delta_T exp((V - V_T) / Delta_T); V_T = exponential_v_exp
// through the threshold transfer (0.25 V + code x 1.25 mV); Delta_T =
// exponential_i_bias x this [V] (500 -> 10 mV, 1022 -> 20.4 mV; 0 = no term).
inline constexpr double kExpSlopeVoltPerLsb = 20e-6;
// The exponent is clamped to at most this (numerical safety, NEST-style):
// the exponential current saturates at g_leak Delta_T e^10.
inline constexpr float kExpArgMax = 10.0f;
// ... and to at least this (keeps exp() away from denormals).
inline constexpr float kExpArgMin = -80.0f;

// Stiff steps: a step whose start lies where the exponential term's rate
// g_leak / C exp((V - V_T) / Delta_T) exceeds kStiffRatePerStep / dt is
// recomputed with adaptive sub-steps of at most kSubStepRate / rate (ETD2 in
// double), at least kMinSubStepS long. Away from the upswing the plain 8 ns
// ETD2 step is accurate (local error ~ (rate dt)^3).
inline constexpr double kStiffRatePerStep = 0.05;
inline constexpr double kSubStepRate = 0.1;
inline constexpr double kMinSubStepS = 8e-9 / 4096;
// The high-accuracy reference (ModelOptions::fine_substeps): every step
// refined, in sub-steps of at most kStepS / kReferenceSubStepsPerStep with
// rate x sub-step at most kReferenceSubStepRate.
inline constexpr double kReferenceSubStepRate = 0.02;
inline constexpr int kReferenceSubStepsPerStep = 8;
// Where the linear part alone would move V by more than Delta_T in the step
// (a steep drive, a strong reset dragging V through the exponential's range)
// the sub-steps also keep V's change at most kSubStepRate Delta_T each, if
// the exponent (V - V_T) / Delta_T exceeds this (below, the term is under
// e^-8 of its prefactor and its error negligible however fast V moves).
inline constexpr double kSubStepArgFloor = -8.0;
// The 8 ns steps of macro-step mode take the exponential term exactly for a
// linear part of constant rate (engine.cc ExpExcess) by a series that holds
// while the linear part moves V by at most Delta_T in the step. A steeper
// step is refined as above if V rises, or if it falls (the first ticks of
// a strong reset) where the term's increment n dt exceeds this [V]: below
// it the series' error (< 0.64 n dt, since 0 < expm1(a) / a < 0.64 for a
// < -1) is negligible against the step's other errors (~0.1 uV).
inline constexpr float kSteepStepNegligibleVolt = 1e-9f;
// ... and a step that starts at or above the exponent's clamp and ends below
// it, where taking the clamped term as constant for the whole step may add
// more than this too much [V] (under half an MADC LSB, 1.17 mV; once per
// spike, and the reset then forgets it). The benchmark load's resets stay
// below it (~0.15 mV): refining each would cost ~20 % of its run.
inline constexpr float kClampExitToleranceVolt = 5e-4f;

// Macro steps (engine.cc): without on-chip recurrent connections, a neuron
// far from its threshold advances kMacroTicks ticks at once (exact for the
// linear part, events at their ticks; the exponential term exact for a
// linear part of constant rate, engine.cc ExpExcess). Far means: not
// refractory (or in the reset for the whole macro step), and V at both ends
// at most min(V_th - kCoarseThresholdMarginVolt, the potential where the
// exponential term's rate x macro step = kCoarseRate), and the exponential
// term's blow-up measure y at most kMacroExpYMax (it adds at most
// -log(1 - kMacroExpYMax) Delta_T = 0.69 Delta_T in the step). A macro step
// that would end above that is not taken (the neuron steps tick by tick),
// so a threshold crossing is never skipped: above V_th the membrane keeps
// rising (no reset in a macro step). (With ETD2 for the exponential term
// the rate had to stay below 0.02, i.e. V below V_T - 0.25 Delta_T: about a
// third of the reference load's neurons stepped tick by tick.) 32 ticks
// (256 ns): with the leak's action on the exponential term's excess taken by
// when in the step it accrues (engine.cc LeakOnExcess), 32-tick steps put
// 85.9 % of the reference load's spikes over 2 ms within a tick of the
// tick-by-tick mode (16-tick steps without it: 67.1 %; 48 ticks: 66.7 %,
// 64: 52.8 %; emulator_bench --accuracy). Without that correction 32 ticks
// moved them by a median 7 ticks: near the guard the excess comes late in
// the step, and the leak pulls less of it back than of a constant input.
inline constexpr int kMacroTicks = 32;
// engine.cc LeakOnExcess is the leak's action on the exponential term's
// excess to first order in lambda h; it is applied where the step's leak
// decay 1 - exp(-lambda h) is at most this (lambda h <= 0.69): every macro
// step that uses it (the upswing, where the term outpaces the leak) and the
// free regime's 8 ns steps. Stronger leaks are resets, whose 8 ns steps are
// left as they were (the term is balanced by the leak there, or the step is
// refined); there the first-order term errs more and more (at lambda h = 12
// it would cancel the excess).
inline constexpr float kLeakOnExcessMaxDecay = 0.5f;
inline constexpr double kCoarseThresholdMarginVolt = 2e-3;
inline constexpr double kCoarseRate = 1.0;
inline constexpr float kMacroExpYMax = 0.5f;

// ---- Adaptation (adaptation_*) ---------------------------------------------
// tau_w dw/dt = a (V - V_ref) - w;  C dV/dt -= w;  on a spike w += b.
// V_ref = adaptation_v_ref through the leak transfer.
// tau_w = kAdaptTauSecondLsb / max(adaptation_i_bias_tau, 1) [s]
// (1022 -> 19.6 us, 200 -> 100 us, 20 -> 1 ms).
inline constexpr double kAdaptTauSecondLsb = 20e-3;
// a = adaptation_i_bias_a x this [S] (x -1 with adaptation_invert_a)
// (1022 -> 102 nS).
inline constexpr double kAdaptSiemensPerLsb = 0.1e-9;
// b = adaptation_i_bias_b x this [A] (x -1 with adaptation_invert_b; 0
// unless adaptation_enable_pulse) (1022 -> 10.2 nA).
inline constexpr double kAdaptAmpPerLsb = 10e-12;
// OBSERVABLE_ADAPTATION: V = base + w x transimpedance (w = 0 -> 512 LSB;
// +-10 nA -> +-200 mV).
inline constexpr double kAdaptReadoutBaseVolt = 0.6;
inline constexpr double kAdaptReadoutVoltPerAmp = 20e-3 / 1e-9;  // 20 mV/nA

// ---- COBA synaptic input (*_input_enable_coba_mode) -------------------------
// The synaptic current is modulated by the distance to the reversal
// potential E_rev (= *_v_rev_coba through the leak transfer):
//   excitatory  I = I_exc x max(0, (E_rev,exc - V) / V_coba)
//   inhibitory  I = I_inh x max(0, (V - E_rev,inh) / V_coba)
// with V_coba = kCobaVoltLsb / *_i_bias_coba [V] (300 -> 0.3 V: the CUBA
// amplitude 0.3 V away from E_rev; 0 -> no input at all).
inline constexpr double kCobaVoltLsb = 90.0;

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
// Per-synapse weight (synapse DAC) gain, per (chip, hemisphere, row, column).
inline constexpr double kSynapseWeightSigma = 0.05;
// Delta_T, tau_w, a, b, V_coba.
inline constexpr double kExpSlopeSigma = 0.08;
inline constexpr double kAdaptTauSigma = 0.08;
inline constexpr double kAdaptStrengthSigma = 0.08;
inline constexpr double kCobaSigma = 0.08;
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

// CADC (8 bit, one channel per circuit): code = (V - base) / per_lsb, with
// per-circuit gain and offset mismatch and per-read noise, clipped to
// 0..255. 0.1 V -> 0, 0.42 V -> 80, 0.38 V -> 70, 0.6 V -> 125, 1.12 V -> 255.
inline constexpr double kCadcBaseVolt = 0.1;
inline constexpr double kCadcVoltPerLsb = 4e-3;
inline constexpr double kCadcGainSigma = 0.02;
inline constexpr double kCadcOffsetSigmaLsb = 3.0;
inline constexpr double kCadcNoiseLsb = 0.6;

}  // namespace hxemu::emulator::model
