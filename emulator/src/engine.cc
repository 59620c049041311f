// File: engine.cc
//
// The time loop, in macro steps of up to model::kMacroTicks 8 ns ticks (1
// tick when on-chip neurons drive synapses). Per macro step, in this order:
//   0. CADC reads due at its start;
//   1. the synaptic events of all its ticks go into per-tick bins (on-chip
//      spikes of earlier steps, then external spikes);
//   2. CoarseStep (with the macro step's noise kick for every neuron):
//      every neuron far from threshold advances
//      the whole macro step at once (vectorised, exact for the linear part);
//   3. the other ("fine") neurons advance tick by tick through the macro
//      step (StepFineSlots: 16 at a time, 8 without AVX-512, their state
//      in small arrays for all its ticks, one flat, branch-free loop per
//      tick; rare steps
//      refined by RefineStep), with their bins' events at each tick; spikes
//      are recorded (interpolated crossing) and queued;
//   4. MADC samples falling into a tick (its neurons are always fine).
// Tick by tick (reference mode, or on-chip recurrence) every neuron is
// fine, stepped by StepNeurons over all slots, a call per tick.
// Cancellation is polled every 1 us of emulated time, progress reported every
// 10 us, at macro-step boundaries. No allocation per neuron or per step
// (only amortised growth of the output arrays and the in-flight queue).
// docs/emulator-model.md section 6 describes the scheme.
#include "engine.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "hxemu/emulator/chip_constants.h"
#include "model_constants.h"
#include "random.h"
#include "rounding.h"
#include "vector_clones.h"

namespace hxemu::emulator {
namespace {

// The vectorised loops (HXEMU_VECTOR_CLONES, vector_clones.h) are chains of
// fused multiply-adds in their AVX-512 and AVX2 versions: the polynomials
// (FastExp, Expm1OverX, MinusLog1m) ~18 % faster than with separate
// multiplications and additions.

// Mutable per-slot state, structure of arrays.
struct NeuronState {
  explicit NeuronState(const NeuronConstants& nc)
      : v_volt(nc.v_start_volt),
        v_prev_volt(nc.v_start_volt),
        v_lo_volt(nc.num_slots, 0.0f),
        current_amp(2 * static_cast<size_t>(nc.num_slots), 0.0f),
        adapt_amp(nc.num_slots, 0.0f),
        refractory_left(nc.num_slots, 0),
        noise_state(nc.noise_seed),
        spiked(nc.num_slots, 0),
        forced(nc.num_slots, 0),
        coarse_reset(nc.num_slots, 0.0f),
        coarse_acc_v(nc.num_slots, 0.0f),
        coarse_acc_exc(nc.num_slots, 0.0f),
        coarse_acc_inh(nc.num_slots, 0.0f) {
    stiff_pending.reserve(nc.num_slots);
    const size_t n = static_cast<size_t>(nc.num_slots);
    stiff_end.assign(n, 0);
    ResizeRegime(n);
  }

  SlotArray<float> v_volt;       // membrane potential at the step end [V]
  SlotArray<float> v_prev_volt;  // ... at the step start [V]
  // Low part of V (V = v_volt + v_lo_volt, compensated summation) [V].
  SlotArray<float> v_lo_volt;
  // Synaptic input currents [A]: [0, n) excitatory, [n, 2n) inhibitory, so
  // that a synapse target is a single index (Connectivity::target).
  SlotArray<float> current_amp;
  SlotArray<float> adapt_amp;          // adaptation current w [A]
  SlotArray<int32_t> refractory_left;  // remaining refractory steps
  SlotArray<uint32_t> noise_state;     // xorshift32 state per slot
  SlotArray<uint8_t> spiked;           // fired in this step
  SlotArray<uint8_t> forced;           // bypass event in this step
  // Scratch of CoarseStep: regime (1 = reset), event terms of V and the
  // currents at the macro step's end.
  SlotArray<float> coarse_reset;
  SlotArray<float> coarse_acc_v;
  SlotArray<float> coarse_acc_exc;
  SlotArray<float> coarse_acc_inh;

  // Slots whose step is stiff, with their state at the step start (see
  // RefineStep). any_stiff: some slot ended the last step above its
  // v_stiff_volt (true at the start, so the first step is checked too);
  // stiff_end[i]: slot i did, if stiff_end_valid (else every slot is
  // compared).
  struct StiffStart {
    int slot;
    int32_t refractory_left;
    uint32_t noise_state;
    float v_volt, v_lo_volt, w_amp, i_exc_amp, i_inh_amp;
  };
  std::vector<StiffStart> stiff_pending;
  bool any_stiff = true;
  SlotArray<uint8_t> stiff_end;  // (bytes, as `spiked`: see StepNeurons)
  bool stiff_end_valid = false;

  // The constants of the regime each slot steps in (StepNeurons: one load
  // per quantity, not both regimes' and a blend), if regime_valid;
  // regime_changed[i]: slot i's next step is in the other regime.
  struct RegimeConstants {
    SlotArray<float> decay, v_inf_volt, drift_volt, exc_gain, inh_gain, etd1_s,
        etd2_s, exp_pref, coba_exc, coba_inh;
  };
  RegimeConstants regime;
  SlotArray<uint8_t> regime_changed;  // (bytes, as `spiked`)
  bool regime_valid = false;

  // The same for CoarseStep: the macro-step tables of macro_regime_ticks
  // ticks in the regime of macro_regime.of (1 = reset) per slot, kept
  // current slot by slot where the regime changes (a few per macro step),
  // so that the update loads one table per quantity instead of both
  // regimes' and a blend; rebuilt whole for another length of step.
  struct MacroRegimeConstants {
    SlotArray<float> of, decay, v_inf_volt, drift_volt, exc_gain, inh_gain,
        etd1_s, etd2_s, exp_pref;
    SlotArray<int32_t> changed;  // this macro step's regime is not `of`
    SlotArray<int> changed_slots;
  };
  MacroRegimeConstants macro_regime;
  int macro_regime_ticks = 0;  // 0: not built yet

  void ResizeRegime(size_t n) {
    for (SlotArray<float>* a :
         {&regime.decay, &regime.v_inf_volt, &regime.drift_volt,
          &regime.exc_gain, &regime.inh_gain, &regime.etd1_s, &regime.etd2_s,
          &regime.exp_pref, &regime.coba_exc, &regime.coba_inh}) {
      a->resize(n);
    }
    regime_changed.resize(n);
    regime_valid = false;
    MacroRegimeConstants& mr = macro_regime;
    for (SlotArray<float>* a :
         {&mr.of, &mr.decay, &mr.v_inf_volt, &mr.drift_volt, &mr.exc_gain,
          &mr.inh_gain, &mr.etd1_s, &mr.etd2_s, &mr.exp_pref}) {
      a->resize(n);
    }
    mr.changed.resize(n);
    mr.changed_slots.resize(n);
    macro_regime_ticks = 0;
  }
};

// Branch-free select for finite values: `weight` is exactly 0 or 1, so the
// result is bit-exactly one operand. Both operands are loaded
// unconditionally; a ?: on two loads becomes a conditional load, which keeps
// the loop from vectorising.
inline float Blend(float weight, float if_one, float if_zero) {
  return if_one * weight + if_zero * (1.0f - weight);
}

// Calls f(i) for every i < n with flags[i] != 0, in ascending order, 16
// flags at a time: a block is looked at flag by flag only if one of its
// flags is set (a few of 512 are, where this is used).
template <typename Flag, typename F>
void ForEachSetFlag(const Flag* flags, int n, F f) {
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    uint64_t words[2 * sizeof(Flag)];
    std::memcpy(words, flags + i, sizeof words);
    uint64_t any = 0;
    for (const uint64_t w : words) any |= w;
    if (any == 0) continue;
    for (int q = i; q < i + 16; ++q) {
      if (flags[q] != 0) f(q);
    }
  }
  for (; i < n; ++i) {
    if (flags[i] != 0) f(i);
  }
}

// The i < n with flags[i] != 0, ascending, into out[0, count); returns
// count (out has room for n: the whole vectors stored at out + count, with
// count <= i, stay within it). Once per macro step over all slots, of which
// a few are set: with AVX-512, 16 flags at a time by a compress of their
// indices (no branch per flag; the scalar scan mispredicts at every set
// flag).
#if defined(HXEMU_SIMD_COMPACT)
__attribute__((target("avx512f"))) int ListSetFlagsAvx512(const int32_t* flags,
                                                          int n, int* out) {
  int count = 0;
  int i = 0;
  __m512i index =
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  for (; i + 16 <= n; i += 16) {
    const __m512i f = _mm512_loadu_si512(flags + i);
    const __mmask16 set = _mm512_test_epi32_mask(f, f);
    _mm512_storeu_si512(out + count, _mm512_maskz_compress_epi32(set, index));
    count += __builtin_popcount(set);
    index = _mm512_add_epi32(index, step);
  }
  for (; i < n; ++i) {
    out[count] = i;
    count += flags[i] != 0;
  }
  return count;
}

// The positions of the set bits of every 8-bit mask, packed from the low
// byte up (byte k: the k-th set bit's position), for AVX2's compress.
constexpr std::array<uint64_t, 256> kSetBitPositions = [] {
  std::array<uint64_t, 256> table{};
  for (int mask = 0; mask < 256; ++mask) {
    int k = 0;
    for (int bit = 0; bit < 8; ++bit) {
      if (mask & (1 << bit)) {
        table[mask] |= static_cast<uint64_t>(bit) << (8 * k++);
      }
    }
  }
  return table;
}();

// ListSetFlags with AVX2: 8 flags at a time, their mask's set positions
// from kSetBitPositions as a permutation of the indices (no branch per
// flag; the scalar scan took ~4 % of a run on an AVX2 machine).
__attribute__((target("avx2"))) int ListSetFlagsAvx2(const int32_t* flags,
                                                     int n, int* out) {
  int count = 0;
  int i = 0;
  __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i step = _mm256_set1_epi32(8);
  const __m256i zero = _mm256_setzero_si256();
  for (; i + 8 <= n; i += 8) {
    const __m256i f =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(flags + i));
    const int set =
        ~_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(f, zero))) &
        0xff;
    const __m256i positions = _mm256_cvtepu8_epi32(
        _mm_cvtsi64_si128(static_cast<int64_t>(kSetBitPositions[set])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + count),
                        _mm256_permutevar8x32_epi32(index, positions));
    count += __builtin_popcount(set);
    index = _mm256_add_epi32(index, step);
  }
  for (; i < n; ++i) {
    out[count] = i;
    count += flags[i] != 0;
  }
  return count;
}
#endif

int ListSetFlags(const int32_t* flags, int n, int* out) {
#if defined(HXEMU_SIMD_COMPACT)
  static const bool kHasAvx512 = __builtin_cpu_supports("avx512f");
  static const bool kHasAvx2 = __builtin_cpu_supports("avx2");
  if (kHasAvx512) return ListSetFlagsAvx512(flags, n, out);
  if (kHasAvx2) return ListSetFlagsAvx2(flags, n, out);
#endif
  int count = 0;
  ForEachSetFlag(flags, n, [&](int i) { out[count++] = i; });
  return count;
}

// exp(x) for x in [kExpArgMin, kExpArgMax], branch-free and vectorisable
// (no libm call): 2^n by exponent bits times a degree-6 Taylor polynomial of
// e^r, |r| <= ln2 / 2 (relative error < 2e-7).
[[gnu::always_inline]] inline float FastExp(float x) {
  constexpr float kLog2e = 1.44269504f;
  constexpr float kLn2 = 0.693147181f;
  // Round x log2e to the nearest integer with a truncating conversion of a
  // positive number (x log2e > -128 here).
  const int32_t n = static_cast<int32_t>(x * kLog2e + 128.5f) - 128;
  const float r = x - static_cast<float>(n) * kLn2;
  // Estrin's scheme (4 dependent operations, not Horner's 6).
  const float r2 = r * r;
  const float p01 = r + 1.0f;
  const float p23 = r * (1.0f / 6.0f) + 0.5f;
  const float p45 = r * (1.0f / 120.0f) + 1.0f / 24.0f;
  const float p456 = r2 * (1.0f / 720.0f) + p45;
  const float p = (r2 * p456 + p23) * r2 + p01;
  const uint32_t bits = static_cast<uint32_t>(n + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// exp(b) for 0 <= b <= 1 by its Taylor series to b^5 / 5! (relative error
// < b^6 / 720: 1.4e-3 at 1, < 1e-9 below 0.1), Estrin's scheme.
[[gnu::always_inline]] inline float ExpOfSmall(float b) {
  const float b2 = b * b;
  const float p01 = b + 1.0f;
  const float p23 = b * (1.0f / 6.0f) + 0.5f;
  const float p45 = b * (1.0f / 120.0f) + 1.0f / 24.0f;
  return (b2 * p45 + p23) * b2 + p01;
}

// expm1(a) / a for |a| <= 1 by its Taylor series to a^10 / 11! (no
// division, no exp; relative error < 3e-9), by Estrin's scheme: 5
// dependent operations instead of Horner's 10, a few more in all. (In the
// macro steps this paid off only together with the corrector's shorter
// chain, CoarseStep; tests/bench/README.md.)
[[gnu::always_inline]] inline float Expm1OverX(float a) {
  const float a2 = a * a;
  const float a4 = a2 * a2;
  const float p01 = a * 0.5f + 1.0f;
  const float p23 = a * (1.0f / 24.0f) + 1.0f / 6.0f;
  const float p45 = a * (1.0f / 720.0f) + 1.0f / 120.0f;
  const float p67 = a * (1.0f / 40320.0f) + 1.0f / 5040.0f;
  const float p89 = a * (1.0f / 3628800.0f) + 1.0f / 362880.0f;
  const float p0123 = a2 * p23 + p01;
  const float p4567 = a2 * p67 + p45;
  const float p8910 = a2 * (1.0f / 39916800.0f) + p89;
  return (a4 * p8910 + p4567) * a4 + p0123;
}

// -log(1 - y) for 0 <= y <= 1/2, without cancellation at small y (like
// log1p) and without a division: y g(y), g a polynomial of degree 9 fitted
// to -log(1 - y) / y on [0, 1/2] (least squares on 4000 Chebyshev nodes;
// relative error 3.6e-9, evaluated in float 2.5e-7, as the former
// 2 atanh(y / (2 - y)) series with its division). Estrin's scheme: 5
// dependent operations, about half the former chain.
[[gnu::always_inline]] inline float MinusLog1m(float y) {
  const float y2 = y * y;
  const float y4 = y2 * y2;
  const float y8 = y4 * y4;
  const float p01 = y * 0.500001371f + 1.0f;
  const float p23 = y * 0.252169847f + 0.333244979f;
  const float p45 = y * 0.353815377f + 0.173211738f;
  const float p67 = y * 2.04973245f - 0.635013044f;
  const float p89 = y * 1.77701843f - 2.55576849f;
  const float p0123 = y2 * p23 + p01;
  const float p4567 = y2 * p67 + p45;
  const float p07 = y4 * p4567 + p0123;
  return y * (y8 * p89 + p07);
}

// The leak's action on the exponential term's excess, beyond treating the
// excess as added at a constant rate (ExpExcess): B(y, a) in units of lambda h
// Delta_T, to first order in lambda h. With x(t) = a t / h the linear part's
// path [Delta_T] and zeta0(t) = -log(1 - y(t)) the excess without the leak
// [Delta_T], y(t) = y expm1(a t / h) / expm1(a), a leak lambda pulls the
// excess back by lambda int_0^h zeta0(s) (1 - y(s)) / (1 - y) ds (a
// displacement at s grows by (1 - y(s)) / (1 - y) until h, as the term
// feeds back); the constant-input factor damp took lambda h zeta0(h) / 2 of
// it. B is the difference: y^2 / 12 - a y / 12 to leading order (the excess
// comes late in the step, where the leak has less time to act, and later
// still for a rising linear part), plus terms fitted on y <= 1/2, |a| <= 1
// (least squares on a 41 x 100 grid of the integral; absolute error
// < 4.2e-4, i.e. < 2e-8 V at lambda h = 0.026, Delta_T = 2 mV). Without it,
// 32-tick macro steps overestimated the upswing by up to 2.4 uV per step and
// moved the benchmark load's spikes by a median 7 ticks.
[[gnu::always_inline]] inline float LeakOnExcess(float y, float a) {
  const float y2 = y * y;
  const float high =
      y * (((1.13207050f * y - 0.458415956f) * y + 0.278260073f) * y +
           0.121067562f) +
      a * (-0.0709556320f * y - 0.0284277710f - 0.00604245500f * a);
  return y2 * (1.0f / 12.0f + high) - a * y * (1.0f / 12.0f);
}

// The exponential term's part of V's increment over a step of h_s [s] (a
// macro step, or an 8 ns step of the fine neurons;
// docs/emulator-model.md section 6). Over the step, V rises by the linear
// part inc_lin [V] (exact, with every event) plus the excess Z that the
// term n(V) = n0 exp((V - V0) / Delta_T) [V/s] adds. For a linear part of
// constant rate A = inc_lin / h, dV/dt = A + n(V) has the exact solution
//   Z = -Delta_T log(1 - y),  y = n0 h / Delta_T * expm1(a) / a,
//   a = inc_lin / Delta_T,
// (substitute u = exp(-V / Delta_T): du/dt is linear in u), which stays
// exact through the steep part of the upswing where a polynomial in time
// (ETD2) is not. The leak (lambda h = leak_h, to first order: the step's
// 1 - exp(-lambda h)) acts on Z as on a constant input, Z x damp with
// damp = etd1 / h = (1 - exp(-lambda h)) / (lambda h), corrected by
// LeakOnExcess for when in the step Z accrues. y >= 1 means the upswing
// diverges within the step; `y` is returned so that the caller takes
// the macro step only for y <= model::kMacroExpYMax (Z <= 0.69 Delta_T).
// The series for expm1(a) / a holds for |a| <= 1 (the linear part moves V
// by at most Delta_T); `in_range` says whether a was in it. kMacro: if not,
// y is 1 (the macro step is not taken); else (8 ns steps) the result is
// computed with a clamped to +-1, and the caller decides (StepNeurons
// refines such a step unless the term is negligible there).
template <bool kMacro>
[[gnu::always_inline]] inline float ExpExcess(float inc_lin, float n0,
                                              float h_s, float delta,
                                              float inv_delta, float damp,
                                              float leak_h, float& y,
                                              float& in_range) {
  const float a = inc_lin * inv_delta;
  // (0 / 1 arithmetic, not bool: see StepNeurons' refine mark.)
  in_range = static_cast<float>(a >= -1.0f) * static_cast<float>(a <= 1.0f);
  const float a_clamped = a < -1.0f ? -1.0f : (a > 1.0f ? 1.0f : a);
  const float phi = Expm1OverX(a_clamped);
  // (n0, the operand computed last, is multiplied last, and the log once:
  // the chain of dependent operations to the result is shorter.)
  y = in_range != 0.0f || !kMacro ? n0 * (h_s * inv_delta * phi) : 1.0f;
  float y_clamped = y > model::kMacroExpYMax ? model::kMacroExpYMax : y;
  y_clamped = y_clamped < 0.0f ? 0.0f : y_clamped;
  // (First order in lambda h: left out where the leak is strong, as in a
  // strong reset's 8 ns steps, where the term is then balanced by the leak or
  // the step is refined.)
  const float leak_first_order =
      leak_h <= model::kLeakOnExcessMaxDecay ? leak_h : 0.0f;
  return delta * (MinusLog1m(y_clamped) * damp -
                  leak_first_order * LeakOnExcess(y_clamped, a_clamped));
}

// Adds `inc` [V] to the membrane V = v + lo and clamps it to the rails.
// Compensated sum (Fast2Sum, |V| >= |increment| on the rails' range):
// V = v + lo carries ~48 bits, so that the rounding of many tiny increments
// of a slow approach to threshold does not add up to a spike-time error
// (float alone: ~0.1 step per interval). A clamped V drops its low part.
[[gnu::always_inline]] inline void AddToMembrane(float v_old, float inc,
                                                 float& lo, float& v_new) {
  const float lo_inc = lo + inc;
  v_new = v_old + lo_inc;
  float lo_new = lo_inc - (v_new - v_old);
  const float v_clamped =
      v_new < model::kMembraneMinVolt
          ? model::kMembraneMinVolt
          : (v_new > model::kMembraneMaxVolt ? model::kMembraneMaxVolt : v_new);
  lo = v_clamped == v_new ? lo_new : 0.0f;
  v_new = v_clamped;
}

// The exponential term's exponent (V - V_T) / Delta_T, clamped to
// [kExpArgMin, arg_max].
[[gnu::always_inline]] inline float ExpArg(float v, float v_t, float inv_slope,
                                           float arg_max) {
  float arg = (v - v_t) * inv_slope;
  arg = arg < model::kExpArgMin ? model::kExpArgMin : arg;
  return arg > arg_max ? arg_max : arg;
}

// The non-linear currents of the membrane [V/s]: exponential term,
// adaptation, COBA synapses (NeuronConstants).
[[gnu::always_inline]] inline float NonLinear(float v, float w, float ie,
                                              float ii, float exp_pref,
                                              float v_t, float inv_slope,
                                              float arg_max, float inv_c,
                                              float coba_e, float e_exc,
                                              float coba_i, float e_inh) {
  const float arg = ExpArg(v, v_t, inv_slope, arg_max);
  const float de = e_exc - v;
  const float di = v - e_inh;
  return exp_pref * FastExp(arg) - w * inv_c +
         coba_e * ie * (de > 0.0f ? de : 0.0f) -
         coba_i * ii * (di > 0.0f ? di : 0.0f);
}

// NonLinear without adaptation and COBA input: the exponential term [V/s].
[[gnu::always_inline]] inline float ExpTerm(float v, float exp_pref, float v_t,
                                            float inv_slope, float arg_max) {
  return exp_pref * FastExp(ExpArg(v, v_t, inv_slope, arg_max));
}

double NonLinearD(const StiffConstants& sc, int k, double v, double w,
                  double ie, double ii) {
  const double arg =
      std::clamp((v - sc.exp_v_t_volt) * sc.exp_inv_slope_per_volt,
                 static_cast<double>(model::kExpArgMin), sc.exp_arg_max);
  return sc.exp_pref_volt_per_s[k] * std::exp(arg) - w * sc.inv_c_per_farad +
         sc.coba_exc[k] * ie * std::max(0.0, sc.e_exc_volt - v) -
         sc.coba_inh[k] * ii * std::max(0.0, v - sc.e_inh_volt);
}

// One stiff step (the exponential upswing) of one slot, in double, by ETD2
// sub-steps whose length keeps (rate of the exponential term) x h below
// substep_rate (model::kSubStepRate), each at most max_substep_s long: the
// same equations as the vectorised step, integrated finely where 8 ns is too
// coarse. `noise_volt` is the step's noise increment, spread evenly over the
// step. Returns V and w at the step end.
std::pair<double, float> RefineStep(const StiffConstants& sc, int k,
                                    double noise_volt, double v, double w,
                                    double ie, double ii, double substep_rate,
                                    double max_substep_s) {
  const double dt = model::kStepS;
  const double lam = sc.lambda_per_s[k];
  double t = 0.0;
  while (t < dt) {
    const double arg = (v - sc.exp_v_t_volt) * sc.exp_inv_slope_per_volt;
    // The exponential term's own rate (above the clamp it is constant)...
    double rate = arg < sc.exp_arg_max
                      ? sc.exp_pref_volt_per_s[k] * sc.exp_inv_slope_per_volt *
                            std::exp(std::max(
                                arg, static_cast<double>(model::kExpArgMin)))
                      : 0.0;
    // ... and, where the term is not negligible and the linear part alone
    // moves V by more than Delta_T per step (a steep drive, or a strong
    // reset that drags V from above the clamp through the exponential's
    // range within a fraction of a step), how fast V moves in units of
    // Delta_T. (Bounding V's change in every stiff step, as in the usual
    // upswing, where the term's own rate suffices, made tick-by-tick runs
    // 15 % slower.)
    if (arg > model::kSubStepArgFloor) {
      const double lin_dv_dt = lam * (sc.v_inf_volt[k] - v) +
                               sc.drift_volt_per_s[k] +
                               sc.exc_gain_volt_per_amp_s[k] * ie -
                               sc.inh_gain_volt_per_amp_s[k] * ii;
      if (std::abs(lin_dv_dt) * dt * sc.exp_inv_slope_per_volt > 1.0) {
        const double dv_dt = lin_dv_dt + NonLinearD(sc, k, v, w, ie, ii);
        rate = std::max(rate, std::abs(dv_dt) * sc.exp_inv_slope_per_volt);
      }
    }
    double h = std::min(dt - t, max_substep_s);
    if (rate * h > substep_rate) {
      h = std::max(substep_rate / rate, model::kMinSubStepS);
    }
    // No sliver at the end of the step.
    if (dt - t - h < 0.5 * h) h = dt - t;
    const double x = lam * h;
    const double decay = -std::expm1(-x);
    const double etd1 = x > 1e-6 ? decay / lam : h;
    const double etd2 =
        x > 1e-4 ? h * (std::expm1(-x) + x) / (x * x) : h * (0.5 - x / 6.0);
    const double exp_lam_h = std::exp(-lam * h);
    const double ie_next = ie * std::exp(-sc.mu_exc_per_s * h);
    // A current that is exactly 0 stays 0 and adds exactly -0 G: skipped.
    const double ii_next = ii == 0.0 ? ii : ii * std::exp(-sc.mu_inh_per_s * h);
    const double inh_term =
        ii == 0.0 ? 0.0
                  : ExpKernelIntegral(lam, sc.mu_inh_per_s, h, exp_lam_h) *
                        sc.inh_gain_volt_per_amp_s[k] * ii;
    double v_lin = v + decay * (sc.v_inf_volt[k] - v) +
                   sc.drift_volt_per_s[k] * h +
                   ExpKernelIntegral(lam, sc.mu_exc_per_s, h, exp_lam_h) *
                       sc.exc_gain_volt_per_amp_s[k] * ie;
    if (ii != 0.0) v_lin = v_lin - inh_term;
    v_lin = v_lin + noise_volt * (h / dt);
    const double alpha = sc.adapt_rate_per_s * h;
    const double q1 = -std::expm1(-alpha);
    const double q2 = alpha > 1e-4 ? (std::expm1(-alpha) + alpha) / alpha
                                   : alpha * (0.5 - alpha / 6.0);
    const double a = sc.adapt_a_siemens;
    const double w_lin = w * (1.0 - q1) + a * (v - sc.adapt_v_ref_volt) * q1;
    const double n0 = NonLinearD(sc, k, v, w, ie, ii);
    const double v_pred = v_lin + etd1 * n0;
    const double n1 = NonLinearD(sc, k, v_pred, w_lin, ie_next, ii_next);
    double v_new = v_pred + etd2 * (n1 - n0);
    v_new = std::clamp(v_new, static_cast<double>(model::kMembraneMinVolt),
                       static_cast<double>(model::kMembraneMaxVolt));
    w = w_lin + a * (v_new - v) * q2;
    v = v_new;
    ie = ie_next;
    ii = ii_next;
    t += h;
  }
  return {v, static_cast<float>(w)};
}

// Slot i's step redone by RefineStep from its start (refractory counter
// `left`, V = v0 [V], w0 [A], currents ie0 / ii0 [A], noise increment
// noise_volt [V]), then the clocked logic of the vectorised steps (forced:
// a bypass event in the step). For StepNeurons and StepFineSlots.
struct RefinedStep {
  float v_volt, v_lo_volt, adapt_amp;
  int32_t refractory_left, fired;
};
RefinedStep Refine(const NeuronConstants& nc, int i, int32_t left,
                   double noise_volt, double v0, float w0, float ie0, float ii0,
                   int32_t forced) {
  const int k = left > nc.reset_release_steps[i] ? kReset : kFree;
  const auto [v_end, w_end] =
      RefineStep(nc.stiff[i], k, noise_volt, v0, w0, ie0, ii0, nc.substep_rate,
                 nc.max_substep_s);
  RefinedStep r;
  r.v_volt = static_cast<float>(v_end);
  r.v_lo_volt = static_cast<float>(v_end - r.v_volt);
  const int32_t left_next = left > 0 ? left - 1 : 0;
  r.fired = (static_cast<int32_t>(left_next == 0) &
             static_cast<int32_t>(r.v_volt >= nc.v_threshold_volt[i])) |
            forced;
  r.refractory_left = r.fired ? nc.refractory_steps[i] : left_next;
  r.adapt_amp = w_end + static_cast<float>(r.fired) * nc.adapt_b_amp[i];
  return r;
}

// Makes st.regime hold slot i's constants of the regime its refractory
// counter puts its next step in.
void SetRegime(const NeuronConstants& nc, NeuronState& st, int i) {
  const int k =
      st.refractory_left[i] > nc.reset_release_steps[i] ? kReset : kFree;
  NeuronState::RegimeConstants& r = st.regime;
  r.decay[i] = nc.decay[k][i];
  r.v_inf_volt[i] = nc.v_inf_volt[k][i];
  r.drift_volt[i] = nc.drift_volt[k][i];
  r.exc_gain[i] = nc.exc_gain_volt_per_amp[k][i];
  r.inh_gain[i] = nc.inh_gain_volt_per_amp[k][i];
  r.etd1_s[i] = nc.etd1_s[k][i];
  r.etd2_s[i] = nc.etd2_s[k][i];
  r.exp_pref[i] = nc.exp_pref_volt_per_s[k][i];
  r.coba_exc[i] = nc.coba_exc[k][i];
  r.coba_inh[i] = nc.coba_inh[k][i];
}

// Advances every slot by one step. Returns whether any slot fired.
// kNonLinear = false: no slot has an exponential term, adaptation or COBA
// input (N = 0), so that part is skipped; the result is bit-identical.
// kFull = false: no slot has adaptation or COBA input (NeuronConstants::
// adapt_or_coba): w stays +0 and N is the exponential term alone, so those
// terms are skipped, bit-identically (x - 0 w = x).
// Steps the first `count` slots (all of them: this is the tick-by-tick mode;
// macro-step mode steps its few fine slots with StepFineSlots), each with its
// membrane noise.
// kInh = false: no synapse is inhibitory
// (NeuronConstants::inhibitory_input), I_inh stays +0 and its terms are
// skipped (x - G 0 = x); kFull implies kInh.
template <bool kNonLinear, bool kFull, bool kInh>
HXEMU_VECTOR_CLONES bool StepNeurons(const NeuronConstants& nc, NeuronState& st,
                                     int count) {
  const int n = nc.num_slots;
  const int loop_count = count;
  float* __restrict v = st.v_volt.data();
  float* __restrict v_prev = st.v_prev_volt.data();
  float* __restrict v_lo = st.v_lo_volt.data();
  float* __restrict i_exc = st.current_amp.data();
  float* __restrict i_inh = st.current_amp.data() + n;
  int32_t* __restrict refractory = st.refractory_left.data();
  uint32_t* __restrict noise = st.noise_state.data();
  float* __restrict adapt = st.adapt_amp.data();

  const float* __restrict decay_cur = st.regime.decay.data();
  const float* __restrict v_inf_cur = st.regime.v_inf_volt.data();
  const float* __restrict drift_cur = st.regime.drift_volt.data();
  const float* __restrict exc_gain_cur = st.regime.exc_gain.data();
  const float* __restrict inh_gain_cur = st.regime.inh_gain.data();
  const float* __restrict etd1_cur = st.regime.etd1_s.data();
  const float* __restrict etd2_cur = st.regime.etd2_s.data();
  const float* __restrict exp_pref_cur = st.regime.exp_pref.data();
  const float* __restrict coba_e_cur = st.regime.coba_exc.data();
  const float* __restrict coba_i_cur = st.regime.coba_inh.data();
  const float* __restrict exc_decay = nc.exc_decay.data();
  const float* __restrict inh_decay = nc.inh_decay.data();
  const float* __restrict v_threshold = nc.v_threshold_volt.data();
  const float* __restrict noise_step = nc.noise_step_volt.data();
  const int32_t* __restrict refractory_steps = nc.refractory_steps.data();
  const int32_t* __restrict reset_release = nc.reset_release_steps.data();
  const float* __restrict exp_v_t = nc.exp_v_t_volt.data();
  const float* __restrict exp_inv_slope = nc.exp_inv_slope_per_volt.data();
  const float* __restrict exp_arg_max = nc.exp_arg_max.data();
  const float* __restrict e_exc_rev = nc.coba_exc_rev_volt.data();
  const float* __restrict e_inh_rev = nc.coba_inh_rev_volt.data();
  const float* __restrict adapt_a = nc.adapt_a_siemens.data();
  const float* __restrict adapt_v_ref = nc.adapt_v_ref_volt.data();
  const float* __restrict adapt_decay = nc.adapt_decay.data();
  const float* __restrict adapt_q1 = nc.adapt_q1.data();
  const float* __restrict adapt_q2 = nc.adapt_q2.data();
  const float* __restrict adapt_b = nc.adapt_b_amp.data();
  const float* __restrict inv_c = nc.inv_c_per_farad.data();

  const float* __restrict v_stiff = nc.v_stiff_volt.data();
  uint8_t* __restrict stiff_end = st.stiff_end.data();
  // The constants of a slot's regime: from st.regime, kept for the regime
  // each slot steps in (measured: tick by tick 13 % faster than blending
  // both regimes', the mixed load 4 %).
  uint8_t* __restrict regime_changed = st.regime_changed.data();
  if (!st.regime_valid) {
    for (int i = 0; i < loop_count; ++i) SetRegime(nc, st, i);
    st.regime_valid = true;
  }
  uint8_t* __restrict spiked = st.spiked.data();
  const uint8_t* __restrict forced = st.forced.data();
  if constexpr (kNonLinear) {
    st.stiff_pending.clear();
    // (Pointers captured by value: captured by reference, the main loop
    // below would reload them from memory and not vectorise.)
    auto record = [&st, refractory, noise, v, v_lo, adapt, i_exc,
                   i_inh](int i) {
      st.stiff_pending.push_back({i, refractory[i], noise[i], v[i], v_lo[i],
                                  adapt[i], i_exc[i], i_inh[i]});
    };
    if (nc.refine_every_step) {
      for (int i = 0; i < loop_count; ++i) record(i);
    } else if (st.any_stiff && st.stiff_end_valid) {
      ForEachSetFlag(st.stiff_end.data(), loop_count, record);
    } else if (st.any_stiff) {
      for (int i = 0; i < loop_count; ++i) {
        if (v[i] > v_stiff[i]) record(i);
      }
    }
  }
  int any = 0;
  int any_stiff = 0;
  // The arrays never alias (one std::vector each), but GCC ignores
  // __restrict on locals; ivdep spares the run-time alias checks that would
  // otherwise stop vectorisation.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
  for (int i = 0; i < loop_count; ++i) {
    // The constants of the slot's regime (no control flow in this loop).
    const int32_t left = refractory[i];
    const float decay = decay_cur[i];
    const float v_inf = v_inf_cur[i];
    const float drift = drift_cur[i];
    const float exc_gain = exc_gain_cur[i];
    const float inh_gain = kInh ? inh_gain_cur[i] : 0.0f;

    const float v_old = v[i];
    const float ie = i_exc[i];
    const float ii = kInh ? i_inh[i] : 0.0f;
    const float ie_next = ie * exc_decay[i];
    const float ii_next = kInh ? ii * inh_decay[i] : 0.0f;
    // Linear part, exact (leak, reset, CUBA synapses) plus noise, as an
    // increment: V itself is accumulated with compensation (below).
    float inc_lin = decay * (v_inf - v_old) + drift + exc_gain * ie;
    if constexpr (kInh) inc_lin = inc_lin - inh_gain * ii;
    {
      const uint32_t r0 = random::XorShift32(noise[i]);
      const uint32_t r1 = random::XorShift32(r0);
      noise[i] = r1;
      inc_lin = inc_lin + noise_step[i] * random::IrwinHall4(r0, r1);
    }
    float inc = inc_lin;
    float w_new = 0.0f;
    if constexpr (kNonLinear) {
      // Non-linear part: ETD2 predictor-corrector.
      const float etd1 = etd1_cur[i];
      const float etd2 = etd2_cur[i];
      const float exp_pref = exp_pref_cur[i];
      if constexpr (!kFull) {
        // ETD2 predictor-corrector.
        const float n0 = ExpTerm(v_old, exp_pref, exp_v_t[i], exp_inv_slope[i],
                                 exp_arg_max[i]);
        const float inc_pred = inc_lin + etd1 * n0;
        const float n1 = ExpTerm(v_old + inc_pred, exp_pref, exp_v_t[i],
                                 exp_inv_slope[i], exp_arg_max[i]);
        inc = inc_pred + etd2 * (n1 - n0);
      } else {
        const float coba_e = coba_e_cur[i];
        const float coba_i = coba_i_cur[i];
        const float w_old = adapt[i];
        const float a = adapt_a[i];
        const float w_lin =
            w_old * adapt_decay[i] + a * (v_old - adapt_v_ref[i]) * adapt_q1[i];
        const float n0 = NonLinear(v_old, w_old, ie, ii, exp_pref, exp_v_t[i],
                                   exp_inv_slope[i], exp_arg_max[i], inv_c[i],
                                   coba_e, e_exc_rev[i], coba_i, e_inh_rev[i]);
        const float inc_pred = inc_lin + etd1 * n0;
        const float n1 =
            NonLinear(v_old + inc_pred, w_lin, ie_next, ii_next, exp_pref,
                      exp_v_t[i], exp_inv_slope[i], exp_arg_max[i], inv_c[i],
                      coba_e, e_exc_rev[i], coba_i, e_inh_rev[i]);
        inc = inc_pred + etd2 * (n1 - n0);
        // w follows the corrected membrane (clamped below, not here: the
        // rails are a hard limit of V only).
        w_new = w_lin + a * inc * adapt_q2[i];
      }
    }
    float v_lo_new = v_lo[i];
    float v_new;
    AddToMembrane(v_old, inc, v_lo_new, v_new);
    v_lo[i] = v_lo_new;

    i_exc[i] = ie_next > model::kSynFlushAmp ? ie_next : 0.0f;
    if constexpr (kInh) {
      i_inh[i] = ii_next > model::kSynFlushAmp ? ii_next : 0.0f;
    }

    // Integer masks instead of bool && / bool ?: keep this branch-free.
    const int32_t left_next = left > 0 ? left - 1 : 0;
    const float v_th = v_threshold[i];
    const int32_t restart = refractory_steps[i];
    // A bypass event fires regardless of threshold and refractory state.
    const int32_t fire = (static_cast<int32_t>(left_next == 0) &
                          static_cast<int32_t>(v_new >= v_th)) |
                         forced[i];
    const int32_t left_end = fire ? restart : left_next;
    refractory[i] = left_end;
    regime_changed[i] =
        static_cast<uint8_t>(static_cast<int32_t>(left > reset_release[i]) ^
                             static_cast<int32_t>(left_end > reset_release[i]));
    if constexpr (kNonLinear) {
      if constexpr (kFull) {
        adapt[i] = w_new + static_cast<float>(fire) * adapt_b[i];
      }
      const int32_t stiff = static_cast<int32_t>(v_new > v_stiff[i]);
      stiff_end[i] = static_cast<uint8_t>(stiff);
      any_stiff |= stiff;
    }
    v_prev[i] = v_old;
    v[i] = v_new;
    spiked[i] = static_cast<uint8_t>(fire);
    any |= fire;
  }
  if constexpr (kNonLinear) {
    // Stiff slots: redo the step from its start state with sub-steps
    // (RefineStep), then the same clocked logic as above.
    auto refine_slot = [&](int i, int32_t left, float noise_volt, double v0,
                           float w0, float ie0, float ii0) {
      const RefinedStep r =
          Refine(nc, i, left, noise_volt, v0, w0, ie0, ii0, forced[i]);
      v_lo[i] = r.v_lo_volt;
      refractory[i] = r.refractory_left;
      regime_changed[i] = 1;  // (SetRegime below: for the new counter)
      adapt[i] = r.adapt_amp;
      v[i] = r.v_volt;
      st.spiked[i] = static_cast<uint8_t>(r.fired);
      any |= r.fired;
      return r.v_volt;
    };
    // Stiff slots (start above v_stiff, recorded before the step).
    for (const NeuronState::StiffStart& ss : st.stiff_pending) {
      const uint32_t r0 = random::XorShift32(ss.noise_state);
      const uint32_t r1 = random::XorShift32(r0);
      const float noise_volt = noise_step[ss.slot] * random::IrwinHall4(r0, r1);
      const float v_new =
          refine_slot(ss.slot, ss.refractory_left, noise_volt,
                      static_cast<double>(ss.v_volt) + ss.v_lo_volt, ss.w_amp,
                      ss.i_exc_amp, ss.i_inh_amp);
      const int32_t stiff = static_cast<int32_t>(v_new > v_stiff[ss.slot]);
      stiff_end[ss.slot] = static_cast<uint8_t>(stiff);
      any_stiff |= stiff;
    }
    st.any_stiff = any_stiff != 0;
    st.stiff_end_valid = true;
  }
  // Slots whose next step is in the other regime (a spike, a release from
  // the reset) take its constants.
  ForEachSetFlag(regime_changed, loop_count,
                 [&](int i) { SetRegime(nc, st, i); });
  return any != 0;
}

// StepNeurons in the variant for these constants.
bool Step(const NeuronConstants& nc, NeuronState& st, int count) {
  const bool inh = nc.inhibitory_input;
  if (!nc.non_linear) {
    return inh ? StepNeurons<false, false, true>(nc, st, count)
               : StepNeurons<false, false, false>(nc, st, count);
  }
  if (!nc.adapt_or_coba) {
    return inh ? StepNeurons<true, false, true>(nc, st, count)
               : StepNeurons<true, false, false>(nc, st, count);
  }
  return StepNeurons<true, true, true>(nc, st, count);
}

// What StepFineSlots takes and gives for one macro step. In: its bins (as
// for CoarseStep; bin_used[j]: tick j has events), the bypass flags by tick
// (forced_bins[j * n + slot], or nullptr where no neuron has bypass) and
// the slots the MADC records (probe_slot[c] for channel c, -1 if none).
// Out: the spikes of the fine slots, by block of slots and within a block
// by tick (tick: within the macro step; v_old, v_new: the membrane at the
// start and end of that tick [V], for the crossing's interpolation), and
// each probed slot's values after every tick.
struct FineSpike {
  int32_t slot;
  int32_t tick;
  float v_old_volt, v_new_volt;
  bool forced;
};
struct ProbeValues {
  float v_prev_volt, v_volt, i_exc_amp, i_inh_amp, adapt_amp;
};
constexpr int kMaxMadcChannels = 2;
struct FineStepsIo {
  const uint8_t* bin_used = nullptr;
  const float* const* bin_values = nullptr;
  const uint8_t* forced_bins = nullptr;
  std::array<int, kMaxMadcChannels> probe_slot = {-1, -1};
  std::vector<FineSpike> spikes;
  std::array<std::array<ProbeValues, model::kMacroTicks>, kMaxMadcChannels>
      probe;
};

// The lanes of StepFineSlots: one AVX-512 vector of floats, or one AVX2
// vector (FineLanes: 8 where the CPU has no AVX-512, so that a block of up
// to 8 fine slots costs one vector per quantity, not two, and its state and
// constants fit the 16 vector registers better).
template <int kLanes, typename T>
using Lanes = std::array<T, kLanes>;

// The fine slots of a macro step (macro-step mode: the few that CoarseStep
// left, slots[0, count)) through its m ticks, kLanes slots at a time, whose
// state and constants stay in small arrays (L1, mostly registers) for all m
// ticks: the same 8 ns step as StepNeurons, without noise (macro-step mode
// has one noise kick per macro step, in CoarseStep), the exponential term by
// ExpExcess where it is the only non-linear current (kFull false: exact for a
// linear part of constant rate, so that the steep last steps before a spike
// need no sub-steps), else by ETD2; the rare steps beyond those schemes are
// redone by RefineStep, one slot at a time. (On compact copies of the slots
// and a call per tick, as StepNeurons runs, the same work took ~3x the
// instructions: the pointers and arrays of every quantity loaded anew at
// every tick, the bins' events added and the spikes looked for outside.)
// kNonLinear, kFull, kInh: as for StepNeurons (kFull implies kInh).
template <bool kNonLinear, bool kFull, bool kInh, int kLanes>
HXEMU_VECTOR_CLONES void StepFineSlots(const NeuronConstants& nc,
                                       NeuronState& st, const int* slots,
                                       int count, int m, FineStepsIo& io) {
  static_assert(kInh || !kFull);
  constexpr bool kExactExp = kNonLinear && !kFull;
  constexpr float kDt = static_cast<float>(model::kStepS);
  constexpr float kInvDt = static_cast<float>(1.0 / model::kStepS);
  const int n = nc.num_slots;
  const bool add_inh = kInh && nc.inhibitory_input;
  for (int first = 0; first < count; first += kLanes) {
    // Lanes past `count` compute a copy of the first one's slot; nothing of
    // them is recorded or written back.
    const int lanes = std::min(kLanes, count - first);
    Lanes<kLanes, int> idx;
    for (int l = 0; l < kLanes; ++l)
      idx[l] = slots[first + (l < lanes ? l : 0)];
    auto load = [&idx](const auto& a, auto& to) {
      for (int l = 0; l < kLanes; ++l) to[l] = a[idx[l]];
    };
    // Constants (of both regimes where they differ).
    alignas(64) Lanes<kLanes, float> decay_f, decay_r, v_inf_f, v_inf_r,
        drift_f, drift_r, ge_f, ge_r, gi_f{}, gi_r{}, etd1_f{}, etd1_r{},
        etd2_f{}, etd2_r{}, pref_f{}, pref_r{}, coba_e_f{}, coba_e_r{},
        coba_i_f{}, coba_i_r{}, exc_decay, inh_decay{}, v_th, exp_v_t{},
        exp_inv_slope{}, exp_slope{}, exp_arg_max{}, e_exc{}, e_inh{},
        adapt_a{}, adapt_v_ref{}, adapt_decay{}, adapt_q1{}, adapt_q2{},
        adapt_b{}, inv_c{}, v_stiff{};
    alignas(64) Lanes<kLanes, int32_t> restart, release;
    auto load_regimes = [&load](const auto& per_regime,
                                Lanes<kLanes, float>& of_free,
                                Lanes<kLanes, float>& of_reset) {
      load(per_regime[kFree], of_free);
      load(per_regime[kReset], of_reset);
    };
    load_regimes(nc.decay, decay_f, decay_r);
    load_regimes(nc.v_inf_volt, v_inf_f, v_inf_r);
    load_regimes(nc.drift_volt, drift_f, drift_r);
    load_regimes(nc.exc_gain_volt_per_amp, ge_f, ge_r);
    load(nc.exc_decay, exc_decay);
    load(nc.v_threshold_volt, v_th);
    load(nc.refractory_steps, restart);
    load(nc.reset_release_steps, release);
    if constexpr (kInh) {
      load_regimes(nc.inh_gain_volt_per_amp, gi_f, gi_r);
      load(nc.inh_decay, inh_decay);
    }
    if constexpr (kNonLinear) {
      load_regimes(nc.etd1_s, etd1_f, etd1_r);
      load_regimes(nc.exp_pref_volt_per_s, pref_f, pref_r);
      load(nc.exp_v_t_volt, exp_v_t);
      load(nc.exp_inv_slope_per_volt, exp_inv_slope);
      load(nc.exp_slope_volt, exp_slope);
      load(nc.exp_arg_max, exp_arg_max);
    }
    if constexpr (kFull) {
      load_regimes(nc.etd2_s, etd2_f, etd2_r);
      load_regimes(nc.coba_exc, coba_e_f, coba_e_r);
      load_regimes(nc.coba_inh, coba_i_f, coba_i_r);
      load(nc.coba_exc_rev_volt, e_exc);
      load(nc.coba_inh_rev_volt, e_inh);
      load(nc.adapt_a_siemens, adapt_a);
      load(nc.adapt_v_ref_volt, adapt_v_ref);
      load(nc.adapt_decay, adapt_decay);
      load(nc.adapt_q1, adapt_q1);
      load(nc.adapt_q2, adapt_q2);
      load(nc.adapt_b_amp, adapt_b);
      load(nc.inv_c_per_farad, inv_c);
      load(nc.v_stiff_volt, v_stiff);
    }
    // State; *_start: at the start of the tick (RefineStep's, the spikes').
    alignas(64) Lanes<kLanes, float> v, v_start, lo, lo_start, ie, ie_start,
        ii{}, ii_start{}, w{}, w_start{};
    alignas(64) Lanes<kLanes, int32_t> left, left_start, forced{}, fire, refine;
    load(st.v_volt, v);
    load(st.v_lo_volt, lo);
    for (int l = 0; l < kLanes; ++l) ie[l] = st.current_amp[idx[l]];
    if constexpr (kInh) {
      for (int l = 0; l < kLanes; ++l) ii[l] = st.current_amp[n + idx[l]];
    }
    if constexpr (kFull) load(st.adapt_amp, w);
    load(st.refractory_left, left);
    std::array<int, kMaxMadcChannels> probe_lane = {-1, -1};
    for (int c = 0; c < kMaxMadcChannels; ++c) {
      for (int l = 0; l < lanes; ++l) {
        if (idx[l] == io.probe_slot[c]) probe_lane[c] = l;
      }
    }

    for (int j = 0; j < m; ++j) {
      if (io.bin_used[j]) {
        const float* bin = io.bin_values[j];
        for (int l = 0; l < kLanes; ++l) ie[l] += bin[idx[l]];
        if (add_inh) {
          for (int l = 0; l < kLanes; ++l) ii[l] += bin[n + idx[l]];
        }
        if (io.forced_bins != nullptr) {
          const uint8_t* f = io.forced_bins + static_cast<size_t>(j) * n;
          for (int l = 0; l < kLanes; ++l) forced[l] = f[idx[l]];
        }
      }
      int32_t any_fire = 0;
      int32_t any_refine = 0;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
      for (int l = 0; l < kLanes; ++l) {
        // The constants of the slot's regime, by selects (one instruction
        // each, a blend's arithmetic two).
        const int32_t left_old = left[l];
        const bool reset = left_old > release[l];
        auto of_regime = [reset](float if_reset, float if_free) {
          return reset ? if_reset : if_free;
        };
        const float v_old = v[l];
        const float ie_old = ie[l];
        const float ii_old = kInh ? ii[l] : 0.0f;
        const float w_old = kFull ? w[l] : 0.0f;
        v_start[l] = v_old;
        lo_start[l] = lo[l];
        ie_start[l] = ie_old;
        if constexpr (kInh) ii_start[l] = ii_old;
        if constexpr (kFull) w_start[l] = w_old;
        left_start[l] = left_old;
        const float ie_next = ie_old * exc_decay[l];
        const float ii_next = kInh ? ii_old * inh_decay[l] : 0.0f;
        float inc_lin = of_regime(decay_r[l], decay_f[l]) *
                            (of_regime(v_inf_r[l], v_inf_f[l]) - v_old) +
                        of_regime(drift_r[l], drift_f[l]) +
                        of_regime(ge_r[l], ge_f[l]) * ie_old;
        if constexpr (kInh) {
          inc_lin = inc_lin - of_regime(gi_r[l], gi_f[l]) * ii_old;
        }
        float inc = inc_lin;
        float w_new = 0.0f;
        float mark = 0.0f;  // 1: the step is redone by RefineStep
        if constexpr (kExactExp) {
          // At or above the exponent's clamp the term is constant: its exact
          // part n0 etd1. A step that diverges (y > kMacroExpYMax), ends
          // clearly above the clamp (0.1 Delta_T past it, the constant-rate
          // solution errs by < 1 % of that part), is steeper than the series
          // allows, or leaves the clamp (below) is refined. (ExpExcess's
          // treatment of the leak, as if on a constant input, is off by
          // ~(n0 dt)^2 / (2 Delta_T) per step where a strong leak balances
          // the term, e.g. in the reset: < 0.1 uV at 8 ns.)
          const float etd1 = of_regime(etd1_r[l], etd1_f[l]);
          const float n0 =
              ExpTerm(v_old, of_regime(pref_r[l], pref_f[l]), exp_v_t[l],
                      exp_inv_slope[l], exp_arg_max[l]);
          float y = 0.0f;
          float in_range;
          const float z_exact = ExpExcess</*kMacro=*/false>(
              inc_lin, n0, kDt, exp_slope[l], exp_inv_slope[l], etd1 * kInvDt,
              of_regime(decay_r[l], decay_f[l]), y, in_range);
          const float v_clamp = exp_v_t[l] + exp_arg_max[l] * exp_slope[l];
          const float below_clamp = v_old < v_clamp ? 1.0f : 0.0f;
          inc = inc_lin + (below_clamp != 0.0f ? z_exact : n0 * etd1);
          // (Arithmetic, not a mask &: GCC turns that into control flow
          // here and stops vectorising.)
          const float beyond =
              y > model::kMacroExpYMax ||
                      v_old + inc > v_clamp + 0.1f * exp_slope[l]
                  ? 1.0f
                  : 0.0f;
          // A step from at or above the clamp to below it (a reset's first)
          // took the clamped term as constant throughout: refined where that
          // may overestimate its increment by more than
          // model::kClampExitToleranceVolt. (The term at the end is exp(-x)
          // of the clamped one, x = (v_clamp - v_end) / Delta_T; it falls
          // through the step, so the excess is below n0 etd1 (1 - exp(-x)),
          // and that below n0 etd1 min(x, 1): no exp needed.)
          const float below_by = (v_clamp - (v_old + inc)) * exp_inv_slope[l];
          const float left_clamp =
              (1.0f - below_clamp) * static_cast<float>(below_by > 0.0f) *
              static_cast<float>(n0 * etd1 *
                                     (below_by < 1.0f ? below_by : 1.0f) >
                                 model::kClampExitToleranceVolt);
          // A step beyond the series' range, unless it falls where the term
          // is negligible (model::kSteepStepNegligibleVolt).
          const float steep =
              (1.0f - in_range) *
              std::max(static_cast<float>(inc_lin > 0.0f),
                       static_cast<float>(n0 * kDt >
                                          model::kSteepStepNegligibleVolt));
          mark = std::max(below_clamp * std::max(beyond, steep), left_clamp);
        } else if constexpr (kFull) {
          // ETD2 predictor-corrector; a step that starts in the stiff region
          // is refined.
          const float exp_pref = of_regime(pref_r[l], pref_f[l]);
          const float coba_e = of_regime(coba_e_r[l], coba_e_f[l]);
          const float coba_i = of_regime(coba_i_r[l], coba_i_f[l]);
          const float a = adapt_a[l];
          const float w_lin = w_old * adapt_decay[l] +
                              a * (v_old - adapt_v_ref[l]) * adapt_q1[l];
          const float n0 =
              NonLinear(v_old, w_old, ie_old, ii_old, exp_pref, exp_v_t[l],
                        exp_inv_slope[l], exp_arg_max[l], inv_c[l], coba_e,
                        e_exc[l], coba_i, e_inh[l]);
          const float inc_pred = inc_lin + of_regime(etd1_r[l], etd1_f[l]) * n0;
          const float n1 =
              NonLinear(v_old + inc_pred, w_lin, ie_next, ii_next, exp_pref,
                        exp_v_t[l], exp_inv_slope[l], exp_arg_max[l], inv_c[l],
                        coba_e, e_exc[l], coba_i, e_inh[l]);
          inc = inc_pred + of_regime(etd2_r[l], etd2_f[l]) * (n1 - n0);
          w_new = w_lin + a * inc * adapt_q2[l];
          mark = static_cast<float>(v_old > v_stiff[l]);
        }
        float lo_new = lo[l];
        float v_new;
        AddToMembrane(v_old, inc, lo_new, v_new);
        lo[l] = lo_new;
        v[l] = v_new;
        ie[l] = ie_next > model::kSynFlushAmp ? ie_next : 0.0f;
        if constexpr (kInh) {
          ii[l] = ii_next > model::kSynFlushAmp ? ii_next : 0.0f;
        }
        const int32_t left_next = left_old > 0 ? left_old - 1 : 0;
        // A bypass event fires regardless of threshold and refractory state.
        const int32_t fires = (static_cast<int32_t>(left_next == 0) &
                               static_cast<int32_t>(v_new >= v_th[l])) |
                              forced[l];
        left[l] = fires ? restart[l] : left_next;
        if constexpr (kFull) {
          w[l] = w_new + static_cast<float>(fires) * adapt_b[l];
        }
        fire[l] = fires;
        refine[l] = static_cast<int32_t>(mark != 0.0f);
        any_fire |= fires;
        any_refine |= refine[l];
      }
      if (kNonLinear && any_refine != 0) {
        for (int l = 0; l < lanes; ++l) {
          if (refine[l] == 0) continue;
          const RefinedStep r =
              Refine(nc, idx[l], left_start[l], /*noise_volt=*/0.0,
                     static_cast<double>(v_start[l]) + lo_start[l], w_start[l],
                     ie_start[l], ii_start[l], forced[l]);
          v[l] = r.v_volt;
          lo[l] = r.v_lo_volt;
          fire[l] = r.fired;
          left[l] = r.refractory_left;
          if constexpr (kFull) w[l] = r.adapt_amp;
          any_fire |= fire[l];
        }
      }
      if (any_fire != 0) {
        for (int l = 0; l < lanes; ++l) {
          if (fire[l]) {
            io.spikes.push_back({idx[l], j, v_start[l], v[l], forced[l] != 0});
          }
        }
      }
      for (int c = 0; c < kMaxMadcChannels; ++c) {
        const int l = probe_lane[c];
        if (l >= 0) io.probe[c][j] = {v_start[l], v[l], ie[l], ii[l], w[l]};
      }
      if (io.forced_bins != nullptr) forced.fill(0);
    }
    for (int l = 0; l < lanes; ++l) {
      const int i = idx[l];
      st.v_volt[i] = v[l];
      st.v_prev_volt[i] = v_start[l];
      st.v_lo_volt[i] = lo[l];
      st.current_amp[i] = ie[l];
      if constexpr (kInh) st.current_amp[n + i] = ii[l];
      if constexpr (kFull) st.adapt_amp[i] = w[l];
      st.refractory_left[i] = left[l];
    }
  }
}

// StepFineSlots in the variant for these constants, kLanes as above.
template <int kLanes>
void StepFineWith(const NeuronConstants& nc, NeuronState& st, const int* slots,
                  int count, int m, FineStepsIo& io) {
  const bool inh = nc.inhibitory_input;
  if (!nc.non_linear) {
    return inh ? StepFineSlots<false, false, true, kLanes>(nc, st, slots, count,
                                                           m, io)
               : StepFineSlots<false, false, false, kLanes>(nc, st, slots,
                                                            count, m, io);
  }
  if (!nc.adapt_or_coba) {
    return inh ? StepFineSlots<true, false, true, kLanes>(nc, st, slots, count,
                                                          m, io)
               : StepFineSlots<true, false, false, kLanes>(nc, st, slots, count,
                                                           m, io);
  }
  StepFineSlots<true, true, true, kLanes>(nc, st, slots, count, m, io);
}

// The lanes per block of fine slots: 16 (one AVX-512 vector), or 8 where the
// CPU has no AVX-512 (its clones compute 8 floats per operation).
int FineLanes() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const int lanes = __builtin_cpu_supports("avx512f") ? 16 : 8;
  return lanes;
#else
  return 16;
#endif
}

void StepFine(const NeuronConstants& nc, NeuronState& st, const int* slots,
              int count, int m, FineStepsIo& io) {
  if (FineLanes() == 8) {
    StepFineWith<8>(nc, st, slots, count, m, io);
  } else {
    StepFineWith<16>(nc, st, slots, count, m, io);
  }
}

// Brings st.macro_regime to this macro step's regimes (st.coarse_reset,
// CoarseStep (a); `changed` flags the slots whose regime is not the one in
// the tables) for steps of m ticks: the few changed slots one by one, all
// slots for a new m. Selects, so that the values are bit-exactly those
// that Blend would give.
void UpdateMacroRegime(const NeuronConstants& nc, NeuronState& st, int m) {
  NeuronState::MacroRegimeConstants& mr = st.macro_regime;
  const int n = nc.num_slots;
  const size_t tm = static_cast<size_t>(m - 1) * n;
  auto select = [&](int i) {
    const int k = st.coarse_reset[i] != 0.0f ? kReset : kFree;
    mr.of[i] = st.coarse_reset[i];
    mr.decay[i] = nc.m_decay[k][tm + i];
    mr.v_inf_volt[i] = nc.v_inf_volt[k][i];
    mr.drift_volt[i] = nc.m_drift_volt[k][tm + i];
    mr.exc_gain[i] = nc.m_exc_gain[k][tm + i];
    mr.inh_gain[i] = nc.m_inh_gain[k][tm + i];
    mr.etd1_s[i] = nc.m_etd1_s[k][tm + i];
    mr.etd2_s[i] = nc.m_etd2_s[k][tm + i];
    mr.exp_pref[i] = nc.exp_pref_volt_per_s[k][i];
  };
  if (st.macro_regime_ticks != m) {
    for (int i = 0; i < n; ++i) select(i);
    st.macro_regime_ticks = m;
    return;
  }
  const int count = ListSetFlags(mr.changed.data(), n, mr.changed_slots.data());
  for (int c = 0; c < count; ++c) select(mr.changed_slots[c]);
}

// One macro step of `m` ticks for every slot that qualifies (see
// model::kMacroTicks): not refractory and V <= v_guard at both ends, or in
// the reset regime for all m ticks. The linear part is exact, with the
// events of the macro step at their ticks (bin_values[j]: the currents that
// arrive at the start of tick j, same layout as current_amp; `used` lists the j
// that have any); the exponential term by ExpExcess on the upswing, by ETD2
// elsewhere, the adaptation current by ETD2. The macro step's noise kick is
// added to every slot first. Slots that do not qualify keep their state
// (with the kick) and get fine[i] = 1 (they step tick by tick). The event
// sums use the free regime's gains; the slots in the reset regime, all in
// `refractory_slots`, are summed again with theirs. Vectorised like
// StepNeurons: no control flow per slot. kNonLinear, kFull, kInh: as for
// StepNeurons.
template <bool kNonLinear, bool kFull, bool kInh>
HXEMU_VECTOR_CLONES void CoarseStep(const NeuronConstants& nc, NeuronState& st,
                                    int m, const float* const* bin_values,
                                    const int* used, int num_used,
                                    const std::vector<int>& refractory_slots,
                                    int32_t* __restrict fine) {
  const int n = nc.num_slots;
  const size_t tm = static_cast<size_t>(m - 1) * n;
  float* __restrict v = st.v_volt.data();
  float* __restrict v_prev = st.v_prev_volt.data();
  float* __restrict v_lo = st.v_lo_volt.data();
  float* __restrict i_exc = st.current_amp.data();
  float* __restrict i_inh = st.current_amp.data() + n;
  float* __restrict adapt = st.adapt_amp.data();
  int32_t* __restrict refractory = st.refractory_left.data();
  float* __restrict kr = st.coarse_reset.data();
  float* __restrict acc_v = st.coarse_acc_v.data();
  float* __restrict acc_e = st.coarse_acc_exc.data();
  float* __restrict acc_i = st.coarse_acc_inh.data();
  const int32_t* __restrict reset_release = nc.reset_release_steps.data();
  const int32_t* __restrict coarse_ok = nc.coarse_ok.data();
  const float* __restrict v_guard = nc.v_guard_volt.data();

  // (a) Regime of the macro step (1: reset throughout) and the decay of the
  // currents present at its start.
  {
    const float* __restrict de = nc.m_exc_decay.data() + tm;
    const float* __restrict di = nc.m_inh_decay.data() + tm;
    const float* __restrict regime_of = st.macro_regime.of.data();
    int32_t* __restrict changed = st.macro_regime.changed.data();
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
    for (int i = 0; i < n; ++i) {
      const float reset =
          static_cast<float>(refractory[i] > m + reset_release[i]);
      kr[i] = reset;
      changed[i] = static_cast<int32_t>(reset != regime_of[i]);
      acc_v[i] = 0.0f;
      acc_e[i] = i_exc[i] * de[i];
      if constexpr (kInh) acc_i[i] = i_inh[i] * di[i];
    }
  }
  // (b) Events at tick j act for the remaining m - j ticks, with the gains
  // of the free regime: (b2) recomputes the few slots in the reset regime.
  // Four ticks per pass over the slots, then two, then one (each sum is
  // still added tick by tick, in the order of `used`): a quarter of the
  // loads and stores of the sums.
  struct TickTerms {
    const float* be;  // bin_values[j], excitatory
    const float* bi;  // ... inhibitory
    const float* ge;  // free-regime gains for the m - j remaining ticks
    const float* gi;
    const float* de;  // current decays
    const float* di;
  };
  auto terms = [&](int u) {
    const int j = used[u];
    const size_t tr = static_cast<size_t>(m - j - 1) * n;
    const float* be = bin_values[j];
    return TickTerms{be,
                     be + n,
                     nc.m_exc_gain[kFree].data() + tr,
                     nc.m_inh_gain[kFree].data() + tr,
                     nc.m_exc_decay.data() + tr,
                     nc.m_inh_decay.data() + tr};
  };
  int paired = 0;
  for (; paired + 4 <= num_used; paired += 4) {
    const TickTerms t0 = terms(paired);
    const TickTerms t1 = terms(paired + 1);
    const TickTerms t2 = terms(paired + 2);
    const TickTerms t3 = terms(paired + 3);
    const float* __restrict be0 = t0.be;
    const float* __restrict bi0 = t0.bi;
    const float* __restrict ge0 = t0.ge;
    const float* __restrict gi0 = t0.gi;
    const float* __restrict de0 = t0.de;
    const float* __restrict di0 = t0.di;
    const float* __restrict be1 = t1.be;
    const float* __restrict bi1 = t1.bi;
    const float* __restrict ge1 = t1.ge;
    const float* __restrict gi1 = t1.gi;
    const float* __restrict de1 = t1.de;
    const float* __restrict di1 = t1.di;
    const float* __restrict be2 = t2.be;
    const float* __restrict bi2 = t2.bi;
    const float* __restrict ge2 = t2.ge;
    const float* __restrict gi2 = t2.gi;
    const float* __restrict de2 = t2.de;
    const float* __restrict di2 = t2.di;
    const float* __restrict be3 = t3.be;
    const float* __restrict bi3 = t3.bi;
    const float* __restrict ge3 = t3.ge;
    const float* __restrict gi3 = t3.gi;
    const float* __restrict de3 = t3.de;
    const float* __restrict di3 = t3.di;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
    for (int i = 0; i < n; ++i) {
      float sv = acc_v[i];
      float se = acc_e[i];
      if constexpr (kInh) {
        float si = acc_i[i];
        sv += ge0[i] * be0[i] - gi0[i] * bi0[i];
        si += di0[i] * bi0[i];
        sv += ge1[i] * be1[i] - gi1[i] * bi1[i];
        si += di1[i] * bi1[i];
        sv += ge2[i] * be2[i] - gi2[i] * bi2[i];
        si += di2[i] * bi2[i];
        sv += ge3[i] * be3[i] - gi3[i] * bi3[i];
        si += di3[i] * bi3[i];
        acc_i[i] = si;
      } else {
        sv += ge0[i] * be0[i];
        sv += ge1[i] * be1[i];
        sv += ge2[i] * be2[i];
        sv += ge3[i] * be3[i];
      }
      se += de0[i] * be0[i];
      se += de1[i] * be1[i];
      se += de2[i] * be2[i];
      se += de3[i] * be3[i];
      acc_v[i] = sv;
      acc_e[i] = se;
    }
  }
  for (; paired + 2 <= num_used; paired += 2) {
    const TickTerms t0 = terms(paired);
    const TickTerms t1 = terms(paired + 1);
    const float* __restrict be0 = t0.be;
    const float* __restrict bi0 = t0.bi;
    const float* __restrict ge0 = t0.ge;
    const float* __restrict gi0 = t0.gi;
    const float* __restrict de0 = t0.de;
    const float* __restrict di0 = t0.di;
    const float* __restrict be1 = t1.be;
    const float* __restrict bi1 = t1.bi;
    const float* __restrict ge1 = t1.ge;
    const float* __restrict gi1 = t1.gi;
    const float* __restrict de1 = t1.de;
    const float* __restrict di1 = t1.di;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
    for (int i = 0; i < n; ++i) {
      float sv = acc_v[i];
      float se = acc_e[i];
      if constexpr (kInh) {
        float si = acc_i[i];
        sv += ge0[i] * be0[i] - gi0[i] * bi0[i];
        si += di0[i] * bi0[i];
        sv += ge1[i] * be1[i] - gi1[i] * bi1[i];
        si += di1[i] * bi1[i];
        acc_i[i] = si;
      } else {
        sv += ge0[i] * be0[i];
        sv += ge1[i] * be1[i];
      }
      se += de0[i] * be0[i];
      se += de1[i] * be1[i];
      acc_v[i] = sv;
      acc_e[i] = se;
    }
  }
  if (paired < num_used) {
    const TickTerms t0 = terms(paired);
    const float* __restrict be = t0.be;
    const float* __restrict bi = t0.bi;
    const float* __restrict ge = t0.ge;
    const float* __restrict gi = t0.gi;
    const float* __restrict de = t0.de;
    const float* __restrict di = t0.di;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
    for (int i = 0; i < n; ++i) {
      if constexpr (kInh) {
        acc_v[i] += ge[i] * be[i] - gi[i] * bi[i];
        acc_i[i] += di[i] * bi[i];
      } else {
        acc_v[i] += ge[i] * be[i];
      }
      acc_e[i] += de[i] * be[i];
    }
  }
  // (b2) The slots in the reset regime (a few percent, all among the
  // refractory ones): the same sum with the reset regime's gains, in the same
  // order (bit-identical to blending the two regimes' gains in (b)). The
  // rows of each used tick are looked up once, not once per slot.
  std::array<const float*, model::kMacroTicks> reset_be;
  std::array<const float*, model::kMacroTicks> reset_bi;
  std::array<const float*, model::kMacroTicks> reset_ge;
  std::array<const float*, model::kMacroTicks> reset_gi;
  bool rows_ready = false;
  for (const int i : refractory_slots) {
    if (kr[i] == 0.0f) continue;
    if (!rows_ready) {
      for (int u = 0; u < num_used; ++u) {
        const int j = used[u];
        const size_t tr = static_cast<size_t>(m - j - 1) * n;
        reset_be[u] = bin_values[j];
        reset_bi[u] = bin_values[j] + n;
        reset_ge[u] = nc.m_exc_gain[kReset].data() + tr;
        reset_gi[u] = nc.m_inh_gain[kReset].data() + tr;
      }
      rows_ready = true;
    }
    float sum = 0.0f;
    for (int u = 0; u < num_used; ++u) {
      if constexpr (kInh) {
        sum +=
            reset_ge[u][i] * reset_be[u][i] - reset_gi[u][i] * reset_bi[u][i];
      } else {
        sum += reset_ge[u][i] * reset_be[u][i];
      }
    }
    acc_v[i] = sum;
  }
  // (c) The update, committed only where the macro step qualifies, with the
  // tables of each slot's regime (UpdateMacroRegime).
  UpdateMacroRegime(nc, st, m);
  const NeuronState::MacroRegimeConstants& mr = st.macro_regime;
  const float* __restrict sel_decay = mr.decay.data();
  const float* __restrict sel_v_inf = mr.v_inf_volt.data();
  const float* __restrict sel_drift = mr.drift_volt.data();
  const float* __restrict sel_ge = mr.exc_gain.data();
  const float* __restrict sel_gi = mr.inh_gain.data();
  const float* __restrict sel_etd1 = mr.etd1_s.data();
  const float* __restrict sel_etd2 = mr.etd2_s.data();
  const float* __restrict sel_exp_pref = mr.exp_pref.data();
  const float* __restrict w_decay = nc.m_adapt_decay.data() + tm;
  const float* __restrict w_q1 = nc.m_adapt_q1.data() + tm;
  const float* __restrict w_q2 = nc.m_adapt_q2.data() + tm;

  const float* __restrict exp_v_t = nc.exp_v_t_volt.data();
  const float* __restrict exp_inv_slope = nc.exp_inv_slope_per_volt.data();
  const float* __restrict exp_slope = nc.exp_slope_volt.data();
  const float* __restrict exp_arg_max = nc.exp_arg_max.data();
  const float* __restrict adapt_a = nc.adapt_a_siemens.data();
  const float* __restrict adapt_v_ref = nc.adapt_v_ref_volt.data();
  const float* __restrict inv_c = nc.inv_c_per_farad.data();
  const float* __restrict sigma = nc.m_noise_volt.data() + tm;
  uint32_t* __restrict noise = st.noise_state.data();
  const float h_s = static_cast<float>(m * model::kStepS);  // [s]
  const float inv_h = 1.0f / h_s;
  // Two loops, not one: each iteration of one long loop is a chain of ~100
  // dependent operations (noise, linear part, exponential term, commit),
  // longer than the CPU's window can overlap; split, more independent
  // iterations are in flight (measured: 5 % of a whole run). The first
  // leaves the kicked membrane in v / v_lo (kept by slots that do not take
  // the step), the linear increment in acc_v and the candidate flag in fine.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
  for (int i = 0; i < n; ++i) {
    // The macro step's membrane noise as one kick at its start (for every
    // slot: a slot that does not take the macro step keeps it and steps tick
    // by tick from there): the exact Ornstein-Uhlenbeck increment over m
    // ticks, the same stationary spread as the per-tick noise.
    const uint32_t r0 = random::XorShift32(noise[i]);
    const uint32_t r1 = random::XorShift32(r0);
    noise[i] = r1;
    float lo_kicked = v_lo[i];
    float v_old;
    AddToMembrane(v[i], sigma[i] * random::IrwinHall4(r0, r1), lo_kicked,
                  v_old);
    v[i] = v_old;
    v_lo[i] = lo_kicked;
    const float reset = kr[i];
    const int32_t left = refractory[i];
    fine[i] = coarse_ok[i] & (static_cast<int32_t>(reset != 0.0f) |
                              (static_cast<int32_t>(left == 0) &
                               static_cast<int32_t>(v_old <= v_guard[i])));
    const float decay = sel_decay[i];
    float inc_lin =
        decay * (sel_v_inf[i] - v_old) + sel_drift[i] + sel_ge[i] * i_exc[i];
    if constexpr (kInh) inc_lin = inc_lin - sel_gi[i] * i_inh[i];
    acc_v[i] = inc_lin + acc_v[i];
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
  for (int i = 0; i < n; ++i) {
    const float v_old = v[i];
    const float lo_kicked = v_lo[i];
    const float reset = kr[i];
    const int32_t left = refractory[i];
    const int32_t candidate = fine[i];
    const float ie = i_exc[i];
    const float ii = kInh ? i_inh[i] : 0.0f;
    float inc_lin = acc_v[i];
    float inc = inc_lin;
    float w_new = adapt[i];
    // ExpExcess's blow-up measure where it is used (0 elsewhere: ETD2 is
    // accurate there at any y, the guard suffices).
    float y = 0.0f;
    if constexpr (kNonLinear) {
      // CUBA only (COBA slots never take macro steps): N has no current
      // terms. The exponential term: where its rate n / Delta_T exceeds the
      // leak's, exactly for a linear part of constant rate (ExpExcess, the
      // upswing); elsewhere by ETD2, whose error there is small (and which,
      // unlike ExpExcess, keeps the balance with a strong leak, e.g. in the
      // reset). The adaptation current, slow, is a part of the linear rate
      // (ETD2 in w).
      const float decay = sel_decay[i];
      const float exp_pref = sel_exp_pref[i];
      const float etd1 = sel_etd1[i];
      const float etd2 = sel_etd2[i];
      const float n0 = ExpTerm(v_old, exp_pref, exp_v_t[i], exp_inv_slope[i],
                               exp_arg_max[i]);
      float w_lin = 0.0f;
      if constexpr (kFull) {
        const float w_old = adapt[i];
        w_lin = w_old * w_decay[i] +
                adapt_a[i] * (v_old - adapt_v_ref[i]) * w_q1[i];
        const float adapt_rate0 = -w_old * inv_c[i];  // [V/s]
        const float adapt_rate1 = -w_lin * inv_c[i];
        inc_lin =
            inc_lin + etd1 * adapt_rate0 + etd2 * (adapt_rate1 - adapt_rate0);
      }
      float in_range;
      const float inc_exact = ExpExcess</*kMacro=*/true>(
          inc_lin, n0, h_s, exp_slope[i], exp_inv_slope[i], etd1 * inv_h, decay,
          y, in_range);
      const float inc_pred = etd1 * n0;
      // n1 = n(v_old + inc_lin + inc_pred) as n(v_old + inc_lin) exp(b),
      // b = inc_pred / Delta_T: the exponential of v_old + inc_lin does not
      // wait for n0 (two exps in a row were the loop's longest chain).
      // Where ETD2 is used, b <= decay <= 1 (else upswing). The exponent's
      // upper clamp applies to the sum: b is cut to the headroom left.
      const float arg_lin =
          ExpArg(v_old + inc_lin, exp_v_t[i], exp_inv_slope[i], exp_arg_max[i]);
      float b = inc_pred * exp_inv_slope[i];
      const float headroom = exp_arg_max[i] - arg_lin;  // >= 0
      b = b < headroom ? b : headroom;
      b = b < 1.0f ? b : 1.0f;
      const float n1 = exp_pref * (FastExp(arg_lin) * ExpOfSmall(b));
      const float inc_etd2 = inc_pred + etd2 * (n1 - n0);
      const float upswing =
          static_cast<float>(n0 * exp_inv_slope[i] * etd1 > decay);
      inc = inc_lin + Blend(upswing, inc_exact, inc_etd2);
      y = y * upswing;
      if constexpr (kFull) w_new = w_lin + adapt_a[i] * inc * w_q2[i];
    }
    float lo_new = lo_kicked;
    float v_new;
    AddToMembrane(v_old, inc, lo_new, v_new);
    const int32_t accept = candidate &
                           static_cast<int32_t>(y <= model::kMacroExpYMax) &
                           (static_cast<int32_t>(reset != 0.0f) |
                            static_cast<int32_t>(v_new <= v_guard[i]));
    // Commit by exact 0/1 blends (a ?: of loads would be control flow).
    const float acc = static_cast<float>(accept);
    float ie_next = acc_e[i];
    ie_next = ie_next > model::kSynFlushAmp ? ie_next : 0.0f;
    const float v_end = Blend(acc, v_new, v_old);
    v[i] = v_end;
    v_prev[i] = v_end;
    v_lo[i] = Blend(acc, lo_new, lo_kicked);
    if constexpr (kFull) adapt[i] = Blend(acc, w_new, adapt[i]);
    i_exc[i] = Blend(acc, ie_next, ie);
    if constexpr (kInh) {
      float ii_next = acc_i[i];
      ii_next = ii_next > model::kSynFlushAmp ? ii_next : 0.0f;
      i_inh[i] = Blend(acc, ii_next, ii);
    }
    const int32_t left_end = left > m ? left - m : 0;
    refractory[i] = left - accept * (left - left_end);

    fine[i] = static_cast<int32_t>(accept == 0);
  }
}

// dst[q] = a[q] + b[q] for q < len: two events' rows summed into a bin.
HXEMU_VECTOR_CLONES void AddRows(float* __restrict dst,
                                 const float* __restrict a,
                                 const float* __restrict b, int64_t len) {
  for (int64_t q = 0; q < len; ++q) dst[q] = a[q] + b[q];
}

// dst[q] += amp[q] for q < len: the delivery of one event to a contiguous
// row of targets (the bulk of the event work when every source drives every
// neuron), vectorised in the widest clone.
HXEMU_VECTOR_CLONES void AddRow(float* __restrict dst,
                                const float* __restrict amp, int64_t len) {
  for (int64_t q = 0; q < len; ++q) dst[q] += amp[q];
}

// Flush-to-zero and denormals-are-zero in the emulation's thread while it
// runs (the thread's floating-point mode is restored on return). Where the
// exponential term's argument is near its lower clamp (model::kExpArgMin:
// a membrane tens of Delta_T below v_exp, e.g. a neuron resting far below
// it), its increments and their series underflow into denormal floats,
// which the CPU computes slowly (measured on the reference load: ~5 % of a
// whole run, when the fine steps' unused lanes held V = 0). As zeros they
// change nothing a user sees: quantities below 1.2e-38 V or A are far below the
// membrane noise and the readout's resolution (the benchmark's result
// fingerprints are unchanged).
class ScopedFlushDenormals {
 public:
#if defined(__SSE__)
  ScopedFlushDenormals() : saved_(_mm_getcsr()) {
    _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero);
  }
  ~ScopedFlushDenormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFlushToZero = 0x8000;       // MXCSR bit 15
  static constexpr unsigned kDenormalsAreZero = 0x0040;  // MXCSR bit 6
  unsigned saved_;
#endif
};

// An ADC code: std::clamp(std::llround(x), 0, max_code), branch-free so
// that a loop of them vectorises (MadcCodes). (x > 0 ? x : 0 also maps NaN
// to 0; below 0.5 the code is 0 anyway.)
inline int64_t AdcCode(double x, int64_t max_code) {
  const double clamped =
      std::min(x > 0.0 ? x : 0.0, static_cast<double>(max_code));
  return RoundNonNegative(clamped);
}

bool CancelRequested(const RunControl& control) {
  return control.cancel_requested != nullptr &&
         control.cancel_requested->load(std::memory_order_relaxed);
}

// First step whose end is at or after the MADC sample at `time_ns` (relative
// to the recorded run), and where in that step the sample lies (0..1).
struct SamplePoint {
  int64_t step;
  float fraction;
};
struct RecordedSpike {
  int32_t train;  // index into Result::spike_trains
  int64_t tick;   // [ticks since the recording's start]
};

// Appends the spikes to their trains, each train's in the order of
// `spikes`: a counting sort by train into one array, then each train's
// ticks appended at once.
void MoveToSpikeTrains(const std::vector<RecordedSpike>& spikes,
                       hxemu::v1::Result& result) {
  const size_t num_trains = static_cast<size_t>(result.spike_trains_size());
  std::vector<size_t> begin(num_trains + 1, 0);
  for (const RecordedSpike& spike : spikes) ++begin[spike.train + 1];
  for (size_t t = 0; t < num_trains; ++t) begin[t + 1] += begin[t];
  std::vector<uint64_t> ticks(spikes.size());
  std::vector<size_t> next(begin.begin(), begin.end() - 1);
  for (const RecordedSpike& spike : spikes) {
    ticks[next[spike.train]++] = static_cast<uint64_t>(spike.tick);
  }
  for (size_t t = 0; t < num_trains; ++t) {
    result.mutable_spike_trains(static_cast<int>(t))
        ->mutable_times_ticks()
        ->Add(ticks.begin() + static_cast<ptrdiff_t>(begin[t]),
              ticks.begin() + static_cast<ptrdiff_t>(begin[t + 1]));
  }
}

SamplePoint SampleAt(int64_t warmup_steps, int64_t time_ns) {
  const int64_t q = time_ns * model::kStepsPerTick;  // [ns / kStepsPerTick]
  return {warmup_steps + q / kTickNs,
          static_cast<float>(q % kTickNs) / static_cast<float>(kTickNs)};
}

// The codes of MADC samples first, first + channels, ... (of `volts` [V],
// the run's samples in order, sample k at k x 34 ns of the recording) into
// codes[0, count): the readout's gain and offset, per-sample noise, AdcCode
// (vectorised: the noise's hashes are most of the work).
HXEMU_VECTOR_CLONES void MadcCodes(const double* __restrict volts,
                                   int64_t first, int channels, int count,
                                   double lsb_per_volt, double offset_lsb,
                                   bool noise, uint64_t noise_key,
                                   uint32_t* __restrict codes) {
  const double noise_scale = noise ? model::kMadcNoiseLsb : 0.0;
  for (int i = 0; i < count; ++i) {
    const int64_t k = first + static_cast<int64_t>(i) * channels;
    const double noise_lsb =
        noise_scale * random::ReadoutGaussian(
                          random::Hash(noise_key, static_cast<uint64_t>(k)));
    codes[i] = static_cast<uint32_t>(AdcCode(
        volts[k] * lsb_per_volt + offset_lsb + noise_lsb, kMadcMaxCode));
  }
}

// The MADC traces from the samples' voltages [V] (sample k of channel
// k % channels), into arrays sized once.
void WriteMadcTraces(const Network& net, const std::vector<double>& volts,
                     hxemu::v1::Result& result) {
  const int num_channels = static_cast<int>(net.madc.size());
  if (num_channels == 0) return;
  const uint64_t noise_key = random::Hash(
      random::Key(random::Domain::kMadcNoise), net.seed, net.chip_id);
  const int64_t num_samples = static_cast<int64_t>(volts.size());
  for (int c = 0; c < num_channels; ++c) {
    const int count = static_cast<int>(
        c < num_samples ? (num_samples - c + num_channels - 1) / num_channels
                        : 0);
    hxemu::v1::Trace* trace = result.mutable_traces(c);
    trace->mutable_times_ticks()->Resize(count, 0);
    trace->mutable_codes()->Resize(count, 0);
    MadcCodes(volts.data(), c, num_channels, count, net.madc_lsb_per_volt,
              net.madc_offset_lsb, net.madc_noise, noise_key,
              trace->mutable_codes()->mutable_data());
    uint64_t* times = trace->mutable_times_ticks()->mutable_data();
    for (int i = 0; i < count; ++i) {
      const int64_t k = static_cast<int64_t>(i) * num_channels + c;
      times[i] = static_cast<uint64_t>(k * kMadcSamplePeriodNs / kTickNs);
    }
  }
}

}  // namespace

absl::Status Emulate(const Network& net, const ExperimentLimits& limits,
                     const RunControl& control, hxemu::v1::Result& result) {
  [[maybe_unused]] const ScopedFlushDenormals flush_denormals;
  const NeuronConstants& nc = net.neurons;
  const Connectivity& conn = net.connectivity;
  const int n = nc.num_slots;
  NeuronState st(nc);

  const int64_t warmup_ticks = model::kWarmupTicks;
  const int64_t total_steps =
      net.warmup_steps + net.runtime_ticks * model::kStepsPerTick;
  const int64_t delay_steps = model::kOnChipDelayTicks * model::kStepsPerTick;
  const double runtime_ms =
      static_cast<double>(net.runtime_ticks) / kTicksPerMs;
  // Macro steps need kStepsPerTick == 1 (one bin per step).
  const int macro = model::kStepsPerTick == 1 ? net.macro_ticks : 1;

  // Events of the current macro step, by step within it: bins[j] has the
  // layout of current_amp (target index); forced_bins[j] the bypass flags.
  SlotArray<float> bins(static_cast<size_t>(macro) * 2 * n, 0.0f);
  std::vector<uint8_t> forced_bins(static_cast<size_t>(macro) * n, 0);
  std::vector<int> used;
  used.reserve(macro);
  std::vector<uint8_t> bin_used(macro, 0);
  // bin_values[j]: where bin j's values are while it is used: its storage
  // in `bins`, or, while its only event is a node whose row covers the
  // whole bin, that row of Connectivity::amplitude_amp (read in place).
  std::vector<const float*> bin_values(macro, nullptr);
  // bypass[t]: target t (Connectivity::target) fires on every event.
  std::vector<uint8_t> bypass(2 * static_cast<size_t>(n), 0);
  for (int i = 0; i < n; ++i) {
    bypass[i] = nc.bypass_exc[i];
    bypass[n + i] = nc.bypass_inh[i];
  }
  int bin = 0;  // bin of the step being delivered
  // A bin holds its values only while it is used (bin_used): the first event
  // of a macro step into it writes it whole, later ones add. (What delivery
  // can write: the inhibitory half only if some synapse is inhibitory.)
  const int64_t bin_floats = nc.inhibitory_input ? 2 * n : n;
  // What the steps may read of a bin: the inhibitory half too where some
  // synapse is inhibitory or the variant with adaptation or COBA input runs
  // (it always has the inhibitory terms; the half is 0 then).
  const int64_t bin_read_floats =
      nc.inhibitory_input || nc.adapt_or_coba ? 2 * n : n;
  auto deliver = [&](int64_t node) {
    const bool first = !bin_used[bin];
    if (first) {
      bin_used[bin] = 1;
      used.push_back(bin);
    }
    float* __restrict b = bins.data() + static_cast<size_t>(bin) * 2 * n;
    const int64_t e0 = conn.row_begin[node];
    const int64_t e1 = conn.row_begin[node + 1];
    const float* row = conn.amplitude_amp.data() + e0;
    const bool in_place = !first && bin_values[bin] != b;
    if (in_place && !(conn.contiguous[node] && e1 > e0)) {
      // The bin's values so far are another node's row: now they are a sum.
      std::copy(bin_values[bin], bin_values[bin] + bin_floats, b);
      bin_values[bin] = b;
    }
    if (conn.contiguous[node] && e1 > e0) {
      const int64_t t0 = conn.first_target[node];
      const int64_t t1 = t0 + (e1 - e0);
      if (in_place) {
        // The bin's values so far are another node's row: their sum with
        // this one, in one pass (as copying it and adding this row).
        const float* before = bin_values[bin];
        std::copy(before, before + t0, b);
        AddRows(b + t0, before + t0, row, e1 - e0);
        std::copy(before + t1, before + bin_floats, b + t1);
        bin_values[bin] = b;
      } else if (first && t0 == 0 && t1 == bin_read_floats) {
        // The row covers all that is read of the bin (e.g. a source that
        // drives every neuron): the bin reads it in place, no copy.
        bin_values[bin] = row;
      } else if (first) {
        std::fill(b, b + t0, 0.0f);
        std::copy(row, row + (e1 - e0), b + t0);
        std::fill(b + t1, b + bin_floats, 0.0f);
        bin_values[bin] = b;
      } else {
        AddRow(b + t0, row, e1 - e0);
      }
    } else {
      if (first) {
        std::fill(b, b + bin_floats, 0.0f);
        bin_values[bin] = b;
      }
      for (int64_t e = e0; e < e1; ++e) {
        b[conn.target[e]] += conn.amplitude_amp[e];
      }
    }
    if (conn.any_bypass) {
      uint8_t* __restrict f = forced_bins.data() + static_cast<size_t>(bin) * n;
      for (int64_t e = e0; e < e1; ++e) {
        const int32_t t = conn.target[e];
        f[t < n ? t : t - n] |= bypass[t];
      }
    }
  };
  auto has_targets = [&](int64_t node) {
    return conn.row_begin[node + 1] > conn.row_begin[node];
  };

  // The recorded spikes in the order of time, (train, tick) [ticks of the
  // recording], put into their trains at the end (MoveToSpikeTrains): one
  // array appended to here, not one of hundreds of trains per spike, whose
  // headers are rarely in cache.
  std::vector<RecordedSpike> recorded;
  auto record_spike = [&](int64_t node, int64_t tick) -> bool {
    const int32_t train = net.spike_train_of_node[node];
    const int64_t rec_tick = tick - warmup_ticks;
    if (train < 0 || rec_tick < 0 || rec_tick >= net.runtime_ticks) return true;
    if (static_cast<int64_t>(recorded.size()) >= limits.max_recorded_spikes) {
      return false;
    }
    recorded.push_back({train, rec_tick});
    return true;
  };
  auto too_many_spikes = [&]() {
    return absl::ResourceExhaustedError(absl::StrCat(
        "recordings: the run produced more than max_recorded_spikes = ",
        limits.max_recorded_spikes, " recorded spikes"));
  };

  // Whether any source population's spikes are recorded (a node with a
  // train that is not an on-chip neuron): else the input loop need not look
  // each input spike up.
  std::vector<uint8_t> is_neuron(net.spike_train_of_node.size(), 0);
  for (int i = 0; i < n; ++i) is_neuron[nc.node[i]] = 1;
  bool record_inputs = false;
  for (size_t node = 0; node < is_neuron.size(); ++node) {
    record_inputs = record_inputs ||
                    (!is_neuron[node] && net.spike_train_of_node[node] >= 0);
  }

  // On-chip spikes in flight: (arrival step, node), arrival non-decreasing.
  std::vector<std::pair<int64_t, int32_t>> in_flight;
  size_t in_flight_head = 0;
  size_t next_input = 0;

  // MADC: sample k at k * 34 ns goes to channel k % num_channels.
  const int num_channels = static_cast<int>(net.madc.size());
  const int64_t runtime_ns = net.runtime_ticks * kTickNs;
  const int64_t num_samples = EstimatedMadcSamples(net.runtime_ticks);
  int64_t sample = 0;
  int sample_channel = 0;  // = sample % num_channels, without a division
  SamplePoint next_sample = {std::numeric_limits<int64_t>::max(), 0.0f};
  if (num_channels > 0) next_sample = SampleAt(net.warmup_steps, 0);
  size_t next_cadc = 0;
  const uint64_t cadc_noise_key = random::Hash(
      random::Key(random::Domain::kCadcNoise), net.seed, net.chip_id);

  SlotArray<int32_t> fine(n, 1);  // 0 / 1 per slot (int32: see spiked)
  FineStepsIo fine_io;
  fine_io.bin_used = bin_used.data();
  fine_io.bin_values = bin_values.data();
  fine_io.forced_bins = conn.any_bypass ? forced_bins.data() : nullptr;
  for (int c = 0; c < num_channels; ++c)
    fine_io.probe_slot[c] = net.madc[c].slot;
  // fine_list[0, num_listed): the fine slots (macro-step mode).
  std::vector<int> fine_list(n);
  int num_listed = 0;
  // Slots that fired and may still be refractory (CoarseStep's reset-regime
  // slots are among them); in_refractory_list[slot]: slot is listed.
  std::vector<int> refractory_slots;
  refractory_slots.reserve(n);
  std::vector<uint8_t> in_refractory_list(n, 0);
  // Slot `slot` fired in step s, its membrane going from v_old to v_new
  // [V] (forced: by a bypass event). Returns false past the spike limit.
  auto on_spike = [&](int slot, int64_t s, float v_old, float v_new,
                      bool forced) {
    const float v_th = nc.v_threshold_volt[slot];
    // A bypass spike is sent at the start of the step of its event.
    const double fraction =
        !forced && v_old < v_th
            ? static_cast<double>(v_th - v_old) / (v_new - v_old)
            : 0.0;
    const int64_t tick = static_cast<int64_t>(
        std::floor((static_cast<double>(s) + fraction) / model::kStepsPerTick));
    const auto node = nc.node[slot];
    if (!record_spike(node, tick)) return false;
    if (!in_refractory_list[slot]) {
      in_refractory_list[slot] = 1;
      refractory_slots.push_back(slot);
    }
    if (has_targets(node)) in_flight.push_back({s + delay_steps, node});
    return true;
  };
  // 4. The MADC sample due now, of its channel's neuron in the step that
  // just ended (its neurons are always among the fine ones): its voltage
  // [V] into madc_volts; WriteMadcTraces makes the codes after the run (one
  // tight loop, not a protobuf append per sample inside the time loop).
  std::vector<double> madc_volts;
  madc_volts.reserve(static_cast<size_t>(num_channels > 0 ? num_samples : 0));
  auto take_sample = [&](const ProbeValues& values) {
    double volt;
    switch (net.madc[sample_channel].observable) {
      case hxemu::v1::OBSERVABLE_EXC_SYNIN:
        volt = model::kSynInReadoutBaseVolt +
               values.i_exc_amp * model::kSynInReadoutVoltPerAmp;
        break;
      case hxemu::v1::OBSERVABLE_INH_SYNIN:
        volt = model::kSynInReadoutBaseVolt +
               values.i_inh_amp * model::kSynInReadoutVoltPerAmp;
        break;
      case hxemu::v1::OBSERVABLE_ADAPTATION:
        volt = model::kAdaptReadoutBaseVolt +
               values.adapt_amp * model::kAdaptReadoutVoltPerAmp;
        break;
      default:  // OBSERVABLE_V (validation admits nothing else)
        volt = values.v_prev_volt +
               (values.v_volt - values.v_prev_volt) * next_sample.fraction;
        break;
    }
    madc_volts.push_back(volt);
    ++sample;
    if (++sample_channel == num_channels) sample_channel = 0;
    const int64_t next_ns = sample * kMadcSamplePeriodNs;
    next_sample = next_ns < runtime_ns
                      ? SampleAt(net.warmup_steps, next_ns)
                      : SamplePoint{std::numeric_limits<int64_t>::max(), 0.0f};
  };
  // Step of input spike i (its tick counts from the end of the warm-up).
  const auto input_step = [&net](size_t i) {
    return net.warmup_steps + static_cast<int64_t>(net.input_spikes[i].tick) *
                                  model::kStepsPerTick;
  };
  int64_t next_poll = 0;
  int64_t next_progress = net.warmup_steps + model::kProgressSteps;

  for (int64_t step = 0; step < total_steps;) {
    // Length of this macro step: up to `macro`, ending at the next CADC read
    // (reads see the state at a macro-step boundary).
    int64_t len = std::min<int64_t>(macro, total_steps - step);
    // (The reads at this very step are taken below; the step ends at the
    // first later one.)
    for (size_t k = next_cadc; k < net.cadc_ticks.size(); ++k) {
      const int64_t read_step =
          net.warmup_steps + net.cadc_ticks[k] * model::kStepsPerTick;
      if (read_step > step) {
        len = std::min(len, read_step - step);
        break;
      }
    }
    const int m = static_cast<int>(len);

    if (step >= next_poll) {
      if (CancelRequested(control)) {
        const double done_ms =
            static_cast<double>(std::max<int64_t>(0, step - net.warmup_steps)) /
            (kTicksPerMs * model::kStepsPerTick);
        return absl::CancelledError(absl::StrCat("run cancelled after ",
                                                 done_ms, " of ", runtime_ms,
                                                 " ms emulated time"));
      }
      while (next_poll <= step) next_poll += model::kCancelPollSteps;
    }
    while (control.on_progress && step >= next_progress &&
           next_progress < total_steps) {
      control.on_progress(
          static_cast<double>(next_progress - net.warmup_steps) /
          (kTicksPerMs * model::kStepsPerTick));
      next_progress += model::kProgressSteps;
    }

    // 0. CADC reads at the start of this step.
    while (next_cadc < net.cadc_ticks.size() &&
           net.warmup_steps +
                   net.cadc_ticks[next_cadc] * model::kStepsPerTick ==
               step) {
      hxemu::v1::CadcRead* read = result.add_cadc_reads();
      read->set_time_ticks(static_cast<uint64_t>(net.cadc_ticks[next_cadc]));
      read->mutable_codes()->Reserve(n);
      for (int s = 0; s < n; ++s) {
        const double volt = static_cast<double>(st.v_volt[s]) + st.v_lo_volt[s];
        const double noise_lsb =
            !net.cadc_noise ? 0.0
                            : model::kCadcNoiseLsb *
                                  random::ReadoutGaussian(random::Hash(
                                      cadc_noise_key, next_cadc,
                                      static_cast<uint64_t>(nc.circuit[s])));
        read->add_codes(static_cast<uint32_t>(
            AdcCode((volt - model::kCadcBaseVolt) * net.cadc_lsb_per_volt[s] +
                        net.cadc_offset_lsb[s] + noise_lsb,
                    kCadcMaxCode)));
      }
      ++next_cadc;
    }

    // 1. The events of the whole macro step into their bins: on-chip ones
    // (only with macro == 1, where they arrive at this step, before the
    // external ones of the same step), then the external ones, in the order
    // of time (one loop over the events, not a test per tick: the arrivals
    // are random, and a branch per tick on them mispredicts).
    const int64_t step_end = step + m;
    while (in_flight_head < in_flight.size() &&
           in_flight[in_flight_head].first < step_end) {
      bin = static_cast<int>(in_flight[in_flight_head].first - step);
      deliver(in_flight[in_flight_head++].second);
    }
    while (next_input < net.input_spikes.size() &&
           input_step(next_input) < step_end) {
      const int64_t s = input_step(next_input);
      const int32_t node = net.input_spikes[next_input++].node;
      bin = static_cast<int>(s - step);
      deliver(node);
      if (record_inputs && !record_spike(node, s / model::kStepsPerTick)) {
        return too_many_spikes();
      }
    }
    if (in_flight_head == in_flight.size()) {
      in_flight.clear();
      in_flight_head = 0;
    }
    std::sort(used.begin(), used.end());

    // 2. Macro step of the neurons far from threshold; the others are fine.
    num_listed = 0;
    if (macro > 1) {
      // Slots whose refractory period has run out leave the list (kept in
      // order, branch-free: a test per slot mispredicted; the order does not
      // matter to the results).
      size_t kept = 0;
      for (const int slot : refractory_slots) {
        const bool stays = st.refractory_left[slot] > 0;
        refractory_slots[kept] = slot;
        kept += stays;
        in_refractory_list[slot] = stays;
      }
      refractory_slots.resize(kept);
      const int num_used = static_cast<int>(used.size());
      const float* const* b = bin_values.data();
      const bool inh = nc.inhibitory_input;
      if (!nc.non_linear) {
        if (inh) {
          CoarseStep<false, false, true>(nc, st, m, b, used.data(), num_used,
                                         refractory_slots, fine.data());
        } else {
          CoarseStep<false, false, false>(nc, st, m, b, used.data(), num_used,
                                          refractory_slots, fine.data());
        }
      } else if (!nc.adapt_or_coba) {
        if (inh) {
          CoarseStep<true, false, true>(nc, st, m, b, used.data(), num_used,
                                        refractory_slots, fine.data());
        } else {
          CoarseStep<true, false, false>(nc, st, m, b, used.data(), num_used,
                                         refractory_slots, fine.data());
        }
      } else {
        CoarseStep<true, true, true>(nc, st, m, b, used.data(), num_used,
                                     refractory_slots, fine.data());
      }
      num_listed = ListSetFlags(fine.data(), n, fine_list.data());
    }
    const bool all_fine = macro == 1;
    const int num_fine = all_fine ? n : num_listed;

    // 3. The fine neurons tick by tick, with their bins' events, and the
    // MADC: in macro-step mode the few that CoarseStep left (StepFine, all
    // ticks of the macro step at once), else all of them (Step, a tick at a
    // time).
    if (!all_fine) {
      if (num_fine > 0) {
        fine_io.spikes.clear();
        StepFine(nc, st, fine_list.data(), num_fine, m, fine_io);
        // In the order of time, as tick by tick (a slot's own spikes keep
        // theirs): an insertion sort of the few (std::stable_sort would
        // allocate a buffer every macro step).
        std::vector<FineSpike>& spikes = fine_io.spikes;
        for (size_t k = 1; k < spikes.size(); ++k) {
          const FineSpike spike = spikes[k];
          size_t at = k;
          for (; at > 0 && spikes[at - 1].tick > spike.tick; --at) {
            spikes[at] = spikes[at - 1];
          }
          spikes[at] = spike;
        }
        for (const FineSpike& spike : fine_io.spikes) {
          if (!on_spike(spike.slot, step + spike.tick, spike.v_old_volt,
                        spike.v_new_volt, spike.forced)) {
            return too_many_spikes();
          }
        }
      }
      for (int j = 0; j < m; ++j) {
        if (step + j == next_sample.step) {
          take_sample(fine_io.probe[sample_channel][j]);
        }
      }
    } else {
      for (int j = 0; j < m; ++j) {
        const int64_t s = step + j;
        if (bin_used[j]) {
          const float* __restrict b = bin_values[j];
          float* __restrict cur = st.current_amp.data();
          for (int64_t q = 0; q < bin_floats; ++q) cur[q] += b[q];
          if (conn.any_bypass) {
            const uint8_t* __restrict f =
                forced_bins.data() + static_cast<size_t>(j) * n;
            uint8_t* __restrict forced = st.forced.data();
            for (int q = 0; q < n; ++q) forced[q] |= f[q];
          }
        }
        if (Step(nc, st, n)) {
          for (int q = 0; q < n; ++q) {
            if (st.spiked[q] && !on_spike(q, s, st.v_prev_volt[q], st.v_volt[q],
                                          st.forced[q] != 0)) {
              return too_many_spikes();
            }
          }
        }
        if (conn.any_bypass) std::fill(st.forced.begin(), st.forced.end(), 0);
        if (s == next_sample.step) {
          const int sl = net.madc[sample_channel].slot;
          take_sample({st.v_prev_volt[sl], st.v_volt[sl], st.current_amp[sl],
                       st.current_amp[n + sl], st.adapt_amp[sl]});
        }
      }
    }

    // 5. Release the bins of this macro step (empty the bypass flags; the
    // currents are overwritten by their next first event).
    for (int j : used) {
      if (conn.any_bypass) {
        std::fill_n(forced_bins.begin() + static_cast<ptrdiff_t>(j) * n, n, 0);
      }
      bin_used[j] = 0;
    }
    used.clear();
    step += len;
  }
  MoveToSpikeTrains(recorded, result);
  WriteMadcTraces(net, madc_volts, result);
  if (control.on_progress) control.on_progress(runtime_ms);
  return absl::OkStatus();
}

}  // namespace hxemu::emulator
