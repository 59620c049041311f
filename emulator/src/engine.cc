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
//   3. the other ("fine") neurons, gathered into a compact structure of
//      arrays, advance tick by tick (StepNeurons: one flat, branch-free
//      loop; stiff steps refined by RefineStep), with their bins' events at
//      each tick; spikes are recorded (interpolated crossing) and queued;
//   4. MADC samples falling into a tick (its neurons are always fine).
// Cancellation is polled every 1 us of emulated time, progress reported every
// 10 us, at macro-step boundaries. No allocation per neuron or per step
// (only amortised growth of the output arrays and the in-flight queue).
// docs/emulator-model.md section 6 describes the scheme.
#include "engine.h"

#include <algorithm>
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

namespace hxemu::emulator {
namespace {

// The vectorised loops are also compiled for x86-64-v4 (AVX-512: 16 floats
// per operation) and x86-64-v3 (AVX2: 8) and picked at load time where the
// CPU has them (GCC function multi-versioning). Both have FMA, and the
// emulator is built with -ffp-contract=fast: the polynomials (FastExp,
// Expm1OverX, MinusLog1m) are chains of fused multiply-adds, ~18 % faster
// than separate multiplications and additions. The two versions give
// bit-identical results (the same contractions); the baseline version, for
// CPUs without AVX2 and FMA (before 2013), rounds differently in the last
// bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define HXEMU_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define HXEMU_SIMD_COMPACT
#else
#define HXEMU_VECTOR_CLONES
#endif

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
    refine.assign(n, 0);
    stiff_end.assign(n, 0);
    ResizeRegime(n);
    start_refractory.assign(n, 0);
    start_v_lo.assign(n, 0.0f);
    start_i_exc.assign(n, 0.0f);
    start_i_inh.assign(n, 0.0f);
    start_noise_inc.assign(n, 0.0f);
    spiked_i32.assign(n, 0);
    forced_i32.assign(n, 0);
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

  void ResizeRegime(size_t n) {
    for (SlotArray<float>* a :
         {&regime.decay, &regime.v_inf_volt, &regime.drift_volt,
          &regime.exc_gain, &regime.inh_gain, &regime.etd1_s, &regime.etd2_s,
          &regime.exp_pref, &regime.coba_exc, &regime.coba_inh}) {
      a->resize(n);
    }
    regime_changed.resize(n);
    regime_valid = false;
  }

  // Start state of the last step, kept by the exponential-only 8 ns step
  // (StepNeurons, kFull = false) for the slots it marks in `refine`: the
  // rare steps that cross the exponent's clamp or diverge, which RefineStep
  // then recomputes. noise_inc: the step's noise increment [V].
  SlotArray<float> refine;  // 0 or 1
  // spiked / forced as int32 for that step's loop: with bytes in it GCC
  // takes 32 slots per iteration and spills most registers (the ETD2 loop,
  // smaller, is faster that way).
  SlotArray<int32_t> spiked_i32, forced_i32;
  SlotArray<int32_t> start_refractory;
  SlotArray<float> start_v_lo, start_i_exc, start_i_inh, start_noise_inc;
  // Some event may set `forced` (a neuron has bypass).
  bool may_force = true;
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
#endif

int ListSetFlags(const int32_t* flags, int n, int* out) {
#if defined(HXEMU_SIMD_COMPACT)
  static const bool kHasAvx512 = __builtin_cpu_supports("avx512f");
  if (kHasAvx512) return ListSetFlagsAvx512(flags, n, out);
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

// The exponential term's part of V's increment over a macro step of h_s [s]
// (docs/emulator-model.md section 6). Over the step, V rises by the linear
// part inc_lin [V] (exact, with every event) plus the excess Z that the
// term n(V) = n0 exp((V - V0) / Delta_T) [V/s] adds. For a linear part of
// constant rate A = inc_lin / h, dV/dt = A + n(V) has the exact solution
//   Z = -Delta_T log(1 - y),  y = n0 h / Delta_T * expm1(a) / a,
//   a = inc_lin / Delta_T,
// (substitute u = exp(-V / Delta_T): du/dt is linear in u), which stays
// exact through the steep part of the upswing where a polynomial in time
// (ETD2) is not. The leak acts on Z as on a constant input: Z x damp, with
// damp = etd1 / h = (1 - exp(-lambda h)) / (lambda h). y >= 1 means the
// upswing diverges within the step; `y` is returned so that the caller takes
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
                                              float& y, float& in_range) {
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
  return MinusLog1m(y_clamped) * (delta * damp);
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

// exp_lambda_h = std::exp(-lambda * h) (computed once for both inputs).
double KernelIntegral(double lambda, double mu, double h, double exp_lambda_h) {
  const double diff = lambda - mu;
  if (std::abs(diff) * h < 1e-9) return h * exp_lambda_h;
  return exp_lambda_h * std::expm1(diff * h) / diff;
}

// One stiff step (the exponential upswing) of one slot, in double, by ETD2
// sub-steps whose length keeps (rate of the exponential term) x h below
// model::kSubStepRate: the same equations as the vectorised step, integrated
// finely where 8 ns is too coarse. `noise_volt` is the step's noise
// increment, spread evenly over the step. Returns V and w at the step end.
std::pair<double, float> RefineStep(const StiffConstants& sc, int k,
                                    double noise_volt, double v, double w,
                                    double ie, double ii) {
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
    double h = dt - t;
    if (rate * h > model::kSubStepRate) {
      h = std::max(model::kSubStepRate / rate, model::kMinSubStepS);
      // No sliver at the end of the step.
      if (dt - t - h < 0.5 * h) h = dt - t;
    }
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
                  : KernelIntegral(lam, sc.mu_inh_per_s, h, exp_lam_h) *
                        sc.inh_gain_volt_per_amp_s[k] * ii;
    double v_lin = v + decay * (sc.v_inf_volt[k] - v) +
                   sc.drift_volt_per_s[k] * h +
                   KernelIntegral(lam, sc.mu_exc_per_s, h, exp_lam_h) *
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
// Steps the first `count` slots (all of them, or all of a compact sub-network
// in macro-step mode).
// noise_scale: 1, or 0 in macro-step mode (the noise comes as one kick per
// macro step, in CoarseStep). kNoise = false: noise_scale is 0, the noise term
// (+0 z) is skipped and the generators do not advance (CoarseStep continues
// their streams with the next kick); that is the compact pool of macro-step
// mode, where the exponential term is stepped by ExpExcess (kExactExp
// below).
// kInh = false: no synapse is inhibitory
// (NeuronConstants::inhibitory_input), I_inh stays +0 and its terms are
// skipped (x - G 0 = x); kFull implies kInh.
template <bool kNonLinear, bool kFull, bool kNoise, bool kInh>
HXEMU_VECTOR_CLONES bool StepNeurons(const NeuronConstants& nc, NeuronState& st,
                                     int count, float noise_scale) {
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

  const float* __restrict decay_free = nc.decay[kFree].data();
  const float* __restrict decay_reset = nc.decay[kReset].data();
  const float* __restrict v_inf_free = nc.v_inf_volt[kFree].data();
  const float* __restrict v_inf_reset = nc.v_inf_volt[kReset].data();
  const float* __restrict drift_free = nc.drift_volt[kFree].data();
  const float* __restrict drift_reset = nc.drift_volt[kReset].data();
  const float* __restrict exc_gain_free =
      nc.exc_gain_volt_per_amp[kFree].data();
  const float* __restrict exc_gain_reset =
      nc.exc_gain_volt_per_amp[kReset].data();
  const float* __restrict inh_gain_free =
      nc.inh_gain_volt_per_amp[kFree].data();
  const float* __restrict inh_gain_reset =
      nc.inh_gain_volt_per_amp[kReset].data();
  const float* __restrict etd1_free = nc.etd1_s[kFree].data();
  const float* __restrict etd1_reset = nc.etd1_s[kReset].data();
  const float* __restrict exp_pref_free = nc.exp_pref_volt_per_s[kFree].data();
  const float* __restrict exp_pref_reset =
      nc.exp_pref_volt_per_s[kReset].data();
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
  const float* __restrict exp_slope = nc.exp_slope_volt.data();
  float* __restrict refine = st.refine.data();
  uint8_t* __restrict stiff_end = st.stiff_end.data();
  int32_t* __restrict start_refractory = st.start_refractory.data();
  float* __restrict start_v_lo = st.start_v_lo.data();
  float* __restrict start_i_exc = st.start_i_exc.data();
  float* __restrict start_i_inh = st.start_i_inh.data();
  float* __restrict start_noise_inc = st.start_noise_inc.data();
  constexpr float kDt = static_cast<float>(model::kStepS);
  constexpr float kInvDt = static_cast<float>(1.0 / model::kStepS);
  // The exponential term by ExpExcess (RefineStep only for the rare marked
  // steps) in the compact pool of macro-step mode (no per-tick noise there),
  // where a step's cost is mostly per call; by ETD2 with RefineStep for the
  // steps that start in the stiff region when every neuron steps every tick
  // (fewer operations per neuron), and with adaptation or COBA input.
  constexpr bool kExactExp = kNonLinear && !kFull && !kNoise;
  constexpr bool kStiffScan = kNonLinear && !kExactExp;
  // The constants of a slot's regime: from st.regime, kept for the regime
  // each slot steps in (measured: tick by tick 13 % faster than blending
  // both regimes', the mixed load 4 %), except in the exponential-only pool
  // of macro-step mode (kExactExp, gathered anew every macro step), where
  // its upkeep cost 3 % more than the blends.
  constexpr bool kRegimeCache = !kExactExp;
  using Flag = std::conditional_t<kExactExp, int32_t, uint8_t>;
  uint8_t* __restrict regime_changed = st.regime_changed.data();
  if constexpr (kRegimeCache) {
    if (!st.regime_valid) {
      for (int i = 0; i < loop_count; ++i) SetRegime(nc, st, i);
      st.regime_valid = true;
    }
  }
  Flag* __restrict spiked;
  const Flag* __restrict forced;
  if constexpr (kExactExp) {
    // (forced_i32 stays 0 where no neuron has bypass.)
    if (st.may_force) {
      for (int i = 0; i < loop_count; ++i) st.forced_i32[i] = st.forced[i];
    }
    spiked = st.spiked_i32.data();
    forced = st.forced_i32.data();
  } else {
    spiked = st.spiked.data();
    forced = st.forced.data();
  }
  if constexpr (kStiffScan) {
    st.stiff_pending.clear();
    // (Pointers captured by value: captured by reference, the main loop
    // below would reload them from memory and not vectorise.)
    auto record = [&st, refractory, noise, v, v_lo, adapt, i_exc,
                   i_inh](int i) {
      st.stiff_pending.push_back({i, refractory[i], noise[i], v[i], v_lo[i],
                                  adapt[i], i_exc[i], i_inh[i]});
    };
    if (st.any_stiff && st.stiff_end_valid) {
      ForEachSetFlag(st.stiff_end.data(), loop_count, record);
    } else if (st.any_stiff) {
      for (int i = 0; i < loop_count; ++i) {
        if (v[i] > v_stiff[i]) record(i);
      }
    }
  }
  int any = 0;
  int any_stiff = 0;
  int any_marked = 0;  // kExactExp: some slot is marked for RefineStep
  // The arrays never alias (one std::vector each), but GCC ignores
  // __restrict on locals; ivdep spares the run-time alias checks that would
  // otherwise stop vectorisation.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
  for (int i = 0; i < loop_count; ++i) {
    // The constants of the slot's regime (no control flow in this loop).
    const int32_t left = refractory[i];
    const float reset = static_cast<float>(left > reset_release[i]);
    const float decay = kRegimeCache
                            ? decay_cur[i]
                            : Blend(reset, decay_reset[i], decay_free[i]);
    const float v_inf = kRegimeCache
                            ? v_inf_cur[i]
                            : Blend(reset, v_inf_reset[i], v_inf_free[i]);
    const float drift = kRegimeCache
                            ? drift_cur[i]
                            : Blend(reset, drift_reset[i], drift_free[i]);
    const float exc_gain =
        kRegimeCache ? exc_gain_cur[i]
                     : Blend(reset, exc_gain_reset[i], exc_gain_free[i]);
    const float inh_gain =
        !kInh          ? 0.0f
        : kRegimeCache ? inh_gain_cur[i]
                       : Blend(reset, inh_gain_reset[i], inh_gain_free[i]);

    const float v_old = v[i];
    const float ie = i_exc[i];
    const float ii = kInh ? i_inh[i] : 0.0f;
    const float ie_next = ie * exc_decay[i];
    const float ii_next = kInh ? ii * inh_decay[i] : 0.0f;
    // Linear part, exact (leak, reset, CUBA synapses) plus noise, as an
    // increment: V itself is accumulated with compensation (below).
    float inc_lin = decay * (v_inf - v_old) + drift + exc_gain * ie;
    if constexpr (kInh) inc_lin = inc_lin - inh_gain * ii;
    float noise_inc = 0.0f;
    if constexpr (kNoise) {
      const uint32_t r0 = random::XorShift32(noise[i]);
      const uint32_t r1 = random::XorShift32(r0);
      noise[i] = r1;
      noise_inc = noise_scale * noise_step[i] * random::IrwinHall4(r0, r1);
      inc_lin = inc_lin + noise_inc;
    }
    float inc = inc_lin;
    float w_new = 0.0f;
    if constexpr (kNonLinear) {
      // Non-linear part: ETD2 predictor-corrector.
      const float etd1 = kRegimeCache
                             ? etd1_cur[i]
                             : Blend(reset, etd1_reset[i], etd1_free[i]);
      const float etd2 = kRegimeCache ? etd2_cur[i] : 0.0f;  // (not kExactExp)
      const float exp_pref =
          kRegimeCache ? exp_pref_cur[i]
                       : Blend(reset, exp_pref_reset[i], exp_pref_free[i]);
      if constexpr (kExactExp) {
        // The exponential term exactly for a linear part of constant rate
        // (ExpExcess, as in CoarseStep), so that the steep last steps before
        // a spike need no sub-steps. (Its treatment of the leak, as if on a
        // constant input, is off by ~(n0 dt)^2 / (2 Delta_T) per step where a
        // strong leak balances the term, e.g. in the reset: < 0.1 uV at 8 ns,
        // which is why macro steps keep ETD2 there.) At or above the
        // exponent's clamp the term is constant: its exact part n0 etd1. A
        // step that diverges (y > kMacroExpYMax), ends clearly above the
        // clamp (0.1 Delta_T past it, the constant-rate solution errs by
        // < 1 % of that part), is steeper than the series allows, or leaves
        // the clamp (below) is marked for RefineStep, with its start state.
        const float n0 = ExpTerm(v_old, exp_pref, exp_v_t[i], exp_inv_slope[i],
                                 exp_arg_max[i]);
        float y = 0.0f;
        float in_range;
        const float z_exact = ExpExcess</*kMacro=*/false>(
            inc_lin, n0, kDt, exp_slope[i], exp_inv_slope[i], etd1 * kInvDt, y,
            in_range);
        const float v_clamp = exp_v_t[i] + exp_arg_max[i] * exp_slope[i];
        const float below_clamp = v_old < v_clamp ? 1.0f : 0.0f;
        inc = inc_lin + Blend(below_clamp, z_exact, n0 * etd1);
        // (Arithmetic, not a mask &: GCC turns that into control flow here
        // and stops vectorising.)
        const float beyond = y > model::kMacroExpYMax ||
                                     v_old + inc > v_clamp + 0.1f * exp_slope[i]
                                 ? 1.0f
                                 : 0.0f;
        // A step from at or above the clamp to below it (a reset's first)
        // took the clamped term as constant throughout: refined where that
        // may overestimate its increment by more than
        // model::kClampExitToleranceVolt. (The term at the end is exp(-x)
        // of the clamped one, x = (v_clamp - v_end) / Delta_T; it falls
        // through the step, so the excess is below n0 etd1 (1 - exp(-x)),
        // and that below n0 etd1 min(x, 1): no exp needed.)
        const float below_by = (v_clamp - (v_old + inc)) * exp_inv_slope[i];
        const float left_clamp =
            (1.0f - below_clamp) * static_cast<float>(below_by > 0.0f) *
            static_cast<float>(n0 * etd1 * (below_by < 1.0f ? below_by : 1.0f) >
                               model::kClampExitToleranceVolt);
        // A step beyond the series' range, unless it falls where the term
        // is negligible (model::kSteepStepNegligibleVolt).
        const float steep =
            (1.0f - in_range) *
            std::max(
                static_cast<float>(inc_lin > 0.0f),
                static_cast<float>(n0 * kDt > model::kSteepStepNegligibleVolt));
        const float mark =
            std::max(below_clamp * std::max(beyond, steep), left_clamp);
        refine[i] = mark;
        any_marked |= static_cast<int>(mark != 0.0f);
        start_refractory[i] = left;
        start_v_lo[i] = v_lo[i];
        start_i_exc[i] = ie;
        start_i_inh[i] = ii;
        start_noise_inc[i] = noise_inc;
      } else if constexpr (!kFull) {
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
    if constexpr (kRegimeCache) {
      regime_changed[i] = static_cast<uint8_t>(
          static_cast<int32_t>(left > reset_release[i]) ^
          static_cast<int32_t>(left_end > reset_release[i]));
    }
    if constexpr (kNonLinear) {
      if constexpr (kFull) {
        adapt[i] = w_new + static_cast<float>(fire) * adapt_b[i];
      }
      if constexpr (kStiffScan) {
        const int32_t stiff = static_cast<int32_t>(v_new > v_stiff[i]);
        stiff_end[i] = static_cast<uint8_t>(stiff);
        any_stiff |= stiff;
      }
    }
    v_prev[i] = v_old;
    v[i] = v_new;
    spiked[i] = static_cast<Flag>(fire);
    any |= fire;
  }
  const bool any_refine = any_marked != 0;
  if constexpr (kExactExp) {
    // The caller reads spiked only if a slot fired (RefineStep may make one
    // fire).
    if (any != 0 || any_refine) {
      for (int i = 0; i < loop_count; ++i) {
        st.spiked[i] = static_cast<uint8_t>(st.spiked_i32[i]);
      }
    }
  }
  if constexpr (kNonLinear) {
    // Marked slots: redo the step from its start state with sub-steps
    // (RefineStep), then the same clocked logic as above.
    auto refine_slot = [&](int i, int32_t left, float noise_volt, double v0,
                           float w0, float ie0, float ii0) {
      const int k = left > reset_release[i] ? kReset : kFree;
      const auto [v_end, w_new] =
          RefineStep(nc.stiff[i], k, noise_volt, v0, w0, ie0, ii0);
      const float v_new = static_cast<float>(v_end);
      v_lo[i] = static_cast<float>(v_end - v_new);
      const int32_t left_next = left > 0 ? left - 1 : 0;
      const int32_t fire = (static_cast<int32_t>(left_next == 0) &
                            static_cast<int32_t>(v_new >= v_threshold[i])) |
                           forced[i];
      refractory[i] = fire ? refractory_steps[i] : left_next;
      if constexpr (kRegimeCache) {
        regime_changed[i] = 1;  // (SetRegime below: for the new counter)
      }
      adapt[i] = w_new + static_cast<float>(fire) * adapt_b[i];
      v[i] = v_new;
      st.spiked[i] = static_cast<uint8_t>(fire);
      any |= fire;
      return v_new;
    };
    if constexpr (kStiffScan) {
      // Stiff slots (start above v_stiff, recorded before the step).
      for (const NeuronState::StiffStart& ss : st.stiff_pending) {
        float noise_volt = 0.0f;
        if constexpr (kNoise) {
          const uint32_t r0 = random::XorShift32(ss.noise_state);
          const uint32_t r1 = random::XorShift32(r0);
          noise_volt =
              noise_scale * noise_step[ss.slot] * random::IrwinHall4(r0, r1);
        }
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
    } else {
      for (int i = 0; any_refine && i < loop_count; ++i) {
        if (refine[i] == 0.0f) continue;
        refine_slot(i, start_refractory[i], start_noise_inc[i],
                    static_cast<double>(v_prev[i]) + start_v_lo[i], 0.0f,
                    start_i_exc[i], start_i_inh[i]);
      }
    }
  }
  // Slots whose next step is in the other regime (a spike, a release from
  // the reset) take its constants.
  if constexpr (kRegimeCache) {
    ForEachSetFlag(regime_changed, loop_count,
                   [&](int i) { SetRegime(nc, st, i); });
  }
  return any != 0;
}

// StepNeurons in the variant for these constants; noise: tick by tick
// (noise_scale 1), else macro-step mode (0).
bool Step(const NeuronConstants& nc, NeuronState& st, int count, bool noise) {
  const bool inh = nc.inhibitory_input;
  if (!nc.non_linear) {
    if (noise) {
      return inh ? StepNeurons<false, false, true, true>(nc, st, count, 1.0f)
                 : StepNeurons<false, false, true, false>(nc, st, count, 1.0f);
    }
    return inh ? StepNeurons<false, false, false, true>(nc, st, count, 0.0f)
               : StepNeurons<false, false, false, false>(nc, st, count, 0.0f);
  }
  if (!nc.adapt_or_coba) {
    if (noise) {
      return inh ? StepNeurons<true, false, true, true>(nc, st, count, 1.0f)
                 : StepNeurons<true, false, true, false>(nc, st, count, 1.0f);
    }
    return inh ? StepNeurons<true, false, false, true>(nc, st, count, 0.0f)
               : StepNeurons<true, false, false, false>(nc, st, count, 0.0f);
  }
  return noise ? StepNeurons<true, true, true, true>(nc, st, count, 1.0f)
               : StepNeurons<true, true, false, true>(nc, st, count, 0.0f);
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
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
    for (int i = 0; i < n; ++i) {
      kr[i] = static_cast<float>(refractory[i] > m + reset_release[i]);
      acc_v[i] = 0.0f;
      acc_e[i] = i_exc[i] * de[i];
      if constexpr (kInh) acc_i[i] = i_inh[i] * di[i];
    }
  }
  // (b) Events at tick j act for the remaining m - j ticks, with the gains
  // of the free regime: (b2) recomputes the few slots in the reset regime.
  // Two ticks per pass over the slots (each sum is still added tick by tick,
  // in the order of `used`): half the loads and stores of the sums.
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
  // order (bit-identical to blending the two regimes' gains in (b)).
  for (const int i : refractory_slots) {
    if (kr[i] == 0.0f) continue;
    float sum = 0.0f;
    for (int u = 0; u < num_used; ++u) {
      const int j = used[u];
      const size_t tr = static_cast<size_t>(m - j - 1) * n;
      const float* be = bin_values[j];
      if constexpr (kInh) {
        sum += nc.m_exc_gain[kReset][tr + i] * be[i] -
               nc.m_inh_gain[kReset][tr + i] * be[n + i];
      } else {
        sum += nc.m_exc_gain[kReset][tr + i] * be[i];
      }
    }
    acc_v[i] = sum;
  }
  // (c) The update, committed only where the macro step qualifies.
  const float* __restrict decay_f = nc.m_decay[kFree].data() + tm;
  const float* __restrict decay_r = nc.m_decay[kReset].data() + tm;
  const float* __restrict drift_f = nc.m_drift_volt[kFree].data() + tm;
  const float* __restrict drift_r = nc.m_drift_volt[kReset].data() + tm;
  const float* __restrict ge_f = nc.m_exc_gain[kFree].data() + tm;
  const float* __restrict ge_r = nc.m_exc_gain[kReset].data() + tm;
  const float* __restrict gi_f = nc.m_inh_gain[kFree].data() + tm;
  const float* __restrict gi_r = nc.m_inh_gain[kReset].data() + tm;
  const float* __restrict etd1_f = nc.m_etd1_s[kFree].data() + tm;
  const float* __restrict etd1_r = nc.m_etd1_s[kReset].data() + tm;
  const float* __restrict etd2_f = nc.m_etd2_s[kFree].data() + tm;
  const float* __restrict etd2_r = nc.m_etd2_s[kReset].data() + tm;
  const float* __restrict w_decay = nc.m_adapt_decay.data() + tm;
  const float* __restrict w_q1 = nc.m_adapt_q1.data() + tm;
  const float* __restrict w_q2 = nc.m_adapt_q2.data() + tm;

  const float* __restrict v_inf_f = nc.v_inf_volt[kFree].data();
  const float* __restrict v_inf_r = nc.v_inf_volt[kReset].data();
  const float* __restrict exp_pref_f = nc.exp_pref_volt_per_s[kFree].data();
  const float* __restrict exp_pref_r = nc.exp_pref_volt_per_s[kReset].data();
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
    const float decay = Blend(reset, decay_r[i], decay_f[i]);
    float inc_lin = decay * (Blend(reset, v_inf_r[i], v_inf_f[i]) - v_old) +
                    Blend(reset, drift_r[i], drift_f[i]) +
                    Blend(reset, ge_r[i], ge_f[i]) * i_exc[i];
    if constexpr (kInh) {
      inc_lin = inc_lin - Blend(reset, gi_r[i], gi_f[i]) * i_inh[i];
    }
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
      const float decay = Blend(reset, decay_r[i], decay_f[i]);
      const float exp_pref = Blend(reset, exp_pref_r[i], exp_pref_f[i]);
      const float etd1 = Blend(reset, etd1_r[i], etd1_f[i]);
      const float etd2 = Blend(reset, etd2_r[i], etd2_f[i]);
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
          inc_lin, n0, h_s, exp_slope[i], exp_inv_slope[i], etd1 * inv_h, y,
          in_range);
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

// Compact sub-networks are padded to a multiple of this many slots (one
// AVX2 vector of floats; measured on the reference load with AVX-512: 8
// slots 25 ms hardware per wall s, 16 24, 32 20).
constexpr size_t kPadSlots = 8;

// The constants of the slots `list` (in that order) as a compact network
// `sub`, so that the few neurons stepping tick by tick in macro-step mode run
// through the same vectorised StepNeurons. Reuses sub's capacity: no
// allocation once it has held all slots.
//
// Calls g(src, dst) for every per-slot array StepNeurons reads (the one list
// of them, for resizing and for copying), or with `all` = false only for
// those that the pool's variant without adaptation and COBA input reads
// (kExactExp: no COBA, adaptation, ETD2 or noise constants), a third fewer
// copies per slot that joins the pool.
template <typename G>
void ForEachStepConstant(const NeuronConstants& nc, NeuronConstants& sub,
                         bool all, G g) {
  g(nc.node, sub.node);
  for (int r = 0; r < kNumRegimes; ++r) {
    g(nc.decay[r], sub.decay[r]);
    g(nc.v_inf_volt[r], sub.v_inf_volt[r]);
    g(nc.drift_volt[r], sub.drift_volt[r]);
    g(nc.exc_gain_volt_per_amp[r], sub.exc_gain_volt_per_amp[r]);
    g(nc.inh_gain_volt_per_amp[r], sub.inh_gain_volt_per_amp[r]);
    g(nc.etd1_s[r], sub.etd1_s[r]);
    g(nc.exp_pref_volt_per_s[r], sub.exp_pref_volt_per_s[r]);
    if (all) {
      g(nc.etd2_s[r], sub.etd2_s[r]);
      g(nc.coba_exc[r], sub.coba_exc[r]);
      g(nc.coba_inh[r], sub.coba_inh[r]);
    }
  }
  g(nc.exp_v_t_volt, sub.exp_v_t_volt);
  g(nc.exp_inv_slope_per_volt, sub.exp_inv_slope_per_volt);
  g(nc.exp_slope_volt, sub.exp_slope_volt);
  g(nc.exp_arg_max, sub.exp_arg_max);
  g(nc.stiff, sub.stiff);
  g(nc.exc_decay, sub.exc_decay);
  g(nc.inh_decay, sub.inh_decay);
  g(nc.v_threshold_volt, sub.v_threshold_volt);
  g(nc.refractory_steps, sub.refractory_steps);
  g(nc.reset_release_steps, sub.reset_release_steps);
  if (all) {
    g(nc.coba_exc_rev_volt, sub.coba_exc_rev_volt);
    g(nc.coba_inh_rev_volt, sub.coba_inh_rev_volt);
    g(nc.adapt_a_siemens, sub.adapt_a_siemens);
    g(nc.adapt_v_ref_volt, sub.adapt_v_ref_volt);
    g(nc.adapt_decay, sub.adapt_decay);
    g(nc.adapt_q1, sub.adapt_q1);
    g(nc.adapt_q2, sub.adapt_q2);
    g(nc.adapt_b_amp, sub.adapt_b_amp);
    g(nc.inv_c_per_farad, sub.inv_c_per_farad);
    g(nc.v_stiff_volt, sub.v_stiff_volt);
    g(nc.noise_step_volt, sub.noise_step_volt);
  }
}

// The compact network `sub` as a pool of positions (pool_slot[p]: the slot
// whose constants position p holds, or -1 if free). Only slots that became
// fine have their constants copied, and a slot that stopped being fine is
// replaced by the last position (the set changes by a few slots per macro
// step), so the pool stays dense: the active positions first, then at most
// kPadSlots - 1 free ones up to a whole vector, computed with quiescent
// state and never recorded or written back. Results do not depend on
// positions (the vector lanes are independent).
struct FinePool {
  std::vector<int> pool_slot;    // per position
  std::vector<int> index;        // per position: pool_slot, or 0 if free
  std::vector<int> pos_of_slot;  // per slot, -1 if not in the pool
  int active = 0;                // positions [0, active) are in use
  int size = 0;                  // positions, a multiple of kPadSlots

  // Makes the pool hold exactly the slots of `fine_list`; returns the number
  // of positions.
  int Update(const NeuronConstants& nc, absl::Span<const int> fine_list,
             const int32_t* fine, NeuronConstants& sub) {
    if (pos_of_slot.empty()) pos_of_slot.assign(nc.num_slots, -1);
    // Remove the slots that are no longer fine: the last position fills
    // the hole.
    for (int p = 0; p < active;) {
      const int i = pool_slot[p];
      if (fine[i]) {
        ++p;
        continue;
      }
      pos_of_slot[i] = -1;
      const int last = --active;
      if (p != last) {
        const int moved = pool_slot[last];
        pool_slot[p] = moved;
        pos_of_slot[moved] = p;
        ForEachStepConstant(
            sub, sub, nc.adapt_or_coba,
            [&](const auto& src, auto& dst) { dst[p] = src[last]; });
      }
      pool_slot[last] = -1;
    }
    for (int i : fine_list) {
      if (pos_of_slot[i] >= 0) continue;
      const int p = active++;
      if (p >= static_cast<int>(pool_slot.size())) {
        pool_slot.resize(p + kPadSlots, -1);
        ForEachStepConstant(nc, sub, /*all=*/true,
                            [&](const auto& src, auto& dst) {
                              dst.resize(p + kPadSlots, src[i]);
                            });
      }
      pool_slot[p] = i;
      pos_of_slot[i] = p;
      ForEachStepConstant(nc, sub, nc.adapt_or_coba,
                          [&](const auto& src, auto& dst) { dst[p] = src[i]; });
    }
    size = static_cast<int>((active + kPadSlots - 1) / kPadSlots * kPadSlots);
    for (int p = active; p < size; ++p) pool_slot[p] = -1;
    sub.num_slots = size;
    sub.non_linear = nc.non_linear;
    sub.adapt_or_coba = nc.adapt_or_coba;
    sub.inhibitory_input = nc.inhibitory_input;
    index.resize(size);
    for (int p = 0; p < size; ++p) {
      index[p] = pool_slot[p] < 0 ? 0 : pool_slot[p];
    }
    return size;
  }
};

// Copies the state of the pool's slots into the compact `sub` (free
// positions: quiescent, V = 0, no currents, not refractory).
void GatherState(const NeuronState& st, int n, const FinePool& pool,
                 NeuronState& sub) {
  const size_t k = static_cast<size_t>(pool.size);
  // (The arrays change size only here, together; the pool's size changes
  // every few macro steps.)
  if (sub.v_volt.size() != k) {
    sub.v_volt.resize(k);
    sub.v_prev_volt.resize(k);
    sub.v_lo_volt.resize(k);
    sub.adapt_amp.resize(k);
    sub.refractory_left.resize(k);
    sub.noise_state.resize(k);
    sub.spiked_i32.resize(k);
    sub.forced_i32.resize(k);
    sub.refine.resize(k);
    sub.start_refractory.resize(k);
    sub.start_v_lo.resize(k);
    sub.start_i_exc.resize(k);
    sub.start_i_inh.resize(k);
    sub.start_noise_inc.resize(k);
    sub.current_amp.resize(2 * k);
    sub.stiff_end.resize(k);
    sub.ResizeRegime(k);
  }
  sub.regime_valid = false;  // (other slots at the positions)
  sub.spiked.assign(k, 0);
  sub.forced.assign(k, 0);
  for (size_t q = 0; q < k; ++q) {
    const int i = pool.pool_slot[q];
    if (i < 0) {
      sub.v_volt[q] = 0.0f;
      sub.v_prev_volt[q] = 0.0f;
      sub.v_lo_volt[q] = 0.0f;
      sub.adapt_amp[q] = 0.0f;
      sub.refractory_left[q] = 0;
      sub.noise_state[q] = 1;
      sub.current_amp[q] = 0.0f;
      sub.current_amp[k + q] = 0.0f;
      continue;
    }
    sub.v_volt[q] = st.v_volt[i];
    sub.v_prev_volt[q] = st.v_prev_volt[i];
    sub.v_lo_volt[q] = st.v_lo_volt[i];
    sub.adapt_amp[q] = st.adapt_amp[i];
    sub.refractory_left[q] = st.refractory_left[i];
    sub.noise_state[q] = st.noise_state[i];
    sub.current_amp[q] = st.current_amp[i];
    sub.current_amp[k + q] = st.current_amp[n + i];
  }
  sub.any_stiff = true;
  sub.stiff_end_valid = false;
}

// Writes the state of the pool's slots back.
void ScatterState(const NeuronState& sub, int n, const FinePool& pool,
                  NeuronState& st) {
  const size_t k = static_cast<size_t>(pool.size);
  for (size_t q = 0; q < k; ++q) {
    const int i = pool.pool_slot[q];
    if (i < 0) continue;
    st.v_volt[i] = sub.v_volt[q];
    st.v_prev_volt[i] = sub.v_prev_volt[q];
    st.v_lo_volt[i] = sub.v_lo_volt[q];
    st.adapt_amp[i] = sub.adapt_amp[q];
    st.refractory_left[i] = sub.refractory_left[q];
    st.noise_state[i] = sub.noise_state[q];
    st.current_amp[i] = sub.current_amp[q];
    st.current_amp[n + i] = sub.current_amp[k + q];
  }
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
// it, or the pool's idle positions at V = 0), its increments and their
// series underflow into denormal floats, which the CPU computes slowly
// (measured on the reference load: ~5 % of a whole run, from the pool's
// idle positions). As zeros they change nothing a user sees: quantities
// below 1.2e-38 V or A are far below the membrane noise and the readout's
// resolution (the benchmark's result fingerprints are unchanged).
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
SamplePoint SampleAt(int64_t warmup_steps, int64_t time_ns) {
  const int64_t q = time_ns * model::kStepsPerTick;  // [ns / kStepsPerTick]
  return {warmup_steps + q / kTickNs,
          static_cast<float>(q % kTickNs) / static_cast<float>(kTickNs)};
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
    if (!first && bin_values[bin] != b) {
      // The bin's values so far are another node's row: now they are a sum.
      std::copy(bin_values[bin], bin_values[bin] + bin_floats, b);
      bin_values[bin] = b;
    }
    if (conn.contiguous[node] && e1 > e0) {
      const int64_t t0 = conn.target[e0];
      const int64_t t1 = t0 + (e1 - e0);
      if (first && t0 == 0 && t1 == bin_read_floats) {
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

  int64_t recorded_spikes = 0;
  auto record_spike = [&](int64_t node, int64_t tick) -> bool {
    const int32_t train = net.spike_train_of_node[node];
    const int64_t rec_tick = tick - warmup_ticks;
    if (train < 0 || rec_tick < 0 || rec_tick >= net.runtime_ticks) return true;
    if (++recorded_spikes > limits.max_recorded_spikes) return false;
    result.mutable_spike_trains(train)->add_times_ticks(
        static_cast<uint64_t>(rec_tick));
    return true;
  };
  auto too_many_spikes = [&]() {
    return absl::ResourceExhaustedError(absl::StrCat(
        "recordings: the run produced more than max_recorded_spikes = ",
        limits.max_recorded_spikes, " recorded spikes"));
  };

  // On-chip spikes in flight: (arrival step, node), arrival non-decreasing.
  std::vector<std::pair<int64_t, int32_t>> in_flight;
  size_t in_flight_head = 0;
  size_t next_input = 0;

  // MADC: sample k at k * 34 ns goes to channel k % num_channels.
  const int num_channels = static_cast<int>(net.madc.size());
  const int64_t runtime_ns = net.runtime_ticks * kTickNs;
  const int64_t num_samples = EstimatedMadcSamples(net.runtime_ticks);
  int64_t sample = 0;
  SamplePoint next_sample = {std::numeric_limits<int64_t>::max(), 0.0f};
  if (num_channels > 0) {
    next_sample = SampleAt(net.warmup_steps, 0);
    for (int c = 0; c < num_channels; ++c) {
      hxemu::v1::Trace* trace = result.mutable_traces(c);
      trace->mutable_times_ticks()->Reserve(
          static_cast<int>(num_samples / num_channels + 1));
      trace->mutable_codes()->Reserve(
          static_cast<int>(num_samples / num_channels + 1));
    }
  }
  size_t next_cadc = 0;
  const uint64_t cadc_noise_key = random::Hash(
      random::Key(random::Domain::kCadcNoise), net.seed, net.chip_id);
  const uint64_t madc_noise_key = random::Hash(
      random::Key(random::Domain::kMadcNoise), net.seed, net.chip_id);

  SlotArray<int32_t> fine(n, 1);  // 0 / 1 per slot (int32: see spiked)
  NeuronConstants sub_nc;
  NeuronState sub_st(nc);
  st.may_force = conn.any_bypass;
  sub_st.may_force = conn.any_bypass;
  FinePool pool;
  // fine_list[0, num_listed): the fine slots (macro-step mode).
  std::vector<int> fine_list(n);
  int num_listed = 0;
  // Slots that fired and may still be refractory (CoarseStep's reset-regime
  // slots are among them); in_refractory_list[slot]: slot is listed.
  std::vector<int> refractory_slots;
  refractory_slots.reserve(n);
  std::vector<uint8_t> in_refractory_list(n, 0);
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
        read->add_codes(static_cast<uint32_t>(std::clamp<int64_t>(
            std::llround((volt - model::kCadcBaseVolt) *
                             net.cadc_lsb_per_volt[s] +
                         net.cadc_offset_lsb[s] + noise_lsb),
            0, kCadcMaxCode)));
      }
      ++next_cadc;
    }

    // 1. External events of the whole macro step into their bins (on-chip
    // events only with macro == 1, where they arrive at this step).
    for (int j = 0; j < m; ++j) {
      bin = j;
      const int64_t s = step + j;
      while (in_flight_head < in_flight.size() &&
             in_flight[in_flight_head].first == s) {
        deliver(in_flight[in_flight_head++].second);
      }
      while (next_input < net.input_spikes.size() &&
             net.input_spikes[next_input].step == s) {
        const int32_t node = net.input_spikes[next_input++].node;
        deliver(node);
        if (!record_spike(node, s / model::kStepsPerTick)) {
          return too_many_spikes();
        }
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
      // Slots whose refractory period has run out leave the list.
      for (size_t r = 0; r < refractory_slots.size();) {
        const int slot = refractory_slots[r];
        if (st.refractory_left[slot] > 0) {
          ++r;
          continue;
        }
        in_refractory_list[slot] = 0;
        refractory_slots[r] = refractory_slots.back();
        refractory_slots.pop_back();
      }
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

    // 3. The fine neurons tick by tick (and the MADC). In macro-step mode
    // they are gathered into the compact network `sub` first, so that the
    // vectorised step runs over them only.
    const bool madc_in_range = next_sample.step < step + len;
    if (num_fine > 0 || madc_in_range) {
      int k = num_fine;
      if (!all_fine) {
        // Whole vectors (free positions padded, computed but never
        // recorded or written back), so no scalar remainder loop runs.
        k = pool.Update(nc, absl::MakeConstSpan(fine_list.data(), num_listed),
                        fine.data(), sub_nc);
        GatherState(st, n, pool, sub_st);
      }
      const NeuronConstants& fnc = all_fine ? nc : sub_nc;
      NeuronState& fst = all_fine ? st : sub_st;
      for (int j = 0; j < m; ++j) {
        const int64_t s = step + j;
        if (bin_used[j]) {
          const float* __restrict b = bin_values[j];
          float* __restrict cur = fst.current_amp.data();
          if (all_fine) {
            for (int64_t q = 0; q < bin_floats; ++q) cur[q] += b[q];
          } else {
            const int* __restrict idx = pool.index.data();
            for (int q = 0; q < k; ++q) cur[q] += b[idx[q]];
            if (nc.inhibitory_input) {
              for (int q = 0; q < k; ++q) cur[k + q] += b[n + idx[q]];
            }
          }
          if (conn.any_bypass) {
            const uint8_t* __restrict f =
                forced_bins.data() + static_cast<size_t>(j) * n;
            uint8_t* __restrict forced = fst.forced.data();
            for (int q = 0; q < k; ++q) {
              forced[q] |= f[all_fine ? q : pool.index[q]];
            }
          }
        }
        const bool any_spike = Step(fnc, fst, k, all_fine);
        if (any_spike) {
          for (int q = 0; q < k; ++q) {
            if (!fst.spiked[q] || (!all_fine && pool.pool_slot[q] < 0)) {
              continue;
            }
            const float v_old = fst.v_prev_volt[q];
            const float v_new = fst.v_volt[q];
            const float v_th = fnc.v_threshold_volt[q];
            // A bypass spike is sent at the start of the step of its event.
            const double fraction =
                fst.forced[q] == 0 && v_old < v_th
                    ? static_cast<double>(v_th - v_old) / (v_new - v_old)
                    : 0.0;
            const int64_t tick = static_cast<int64_t>(std::floor(
                (static_cast<double>(s) + fraction) / model::kStepsPerTick));
            if (!record_spike(fnc.node[q], tick)) return too_many_spikes();
            const int slot = all_fine ? q : pool.pool_slot[q];
            if (!in_refractory_list[slot]) {
              in_refractory_list[slot] = 1;
              refractory_slots.push_back(slot);
            }
            if (has_targets(fnc.node[q])) {
              in_flight.push_back({s + delay_steps, fnc.node[q]});
            }
          }
        }
        if (conn.any_bypass) {
          std::fill(fst.forced.begin(), fst.forced.begin() + k, 0);
        }

        // 4. MADC (its neurons are always among the fine ones).
        if (s == next_sample.step) {
          const MadcChannel& ch = net.madc[sample % num_channels];
          const int sl = all_fine ? ch.slot : pool.pos_of_slot[ch.slot];
          double volt;
          switch (ch.observable) {
            case hxemu::v1::OBSERVABLE_EXC_SYNIN:
              volt = model::kSynInReadoutBaseVolt +
                     fst.current_amp[sl] * model::kSynInReadoutVoltPerAmp;
              break;
            case hxemu::v1::OBSERVABLE_INH_SYNIN:
              volt = model::kSynInReadoutBaseVolt +
                     fst.current_amp[k + sl] * model::kSynInReadoutVoltPerAmp;
              break;
            case hxemu::v1::OBSERVABLE_ADAPTATION:
              volt = model::kAdaptReadoutBaseVolt +
                     fst.adapt_amp[sl] * model::kAdaptReadoutVoltPerAmp;
              break;
            default:  // OBSERVABLE_V (validation admits nothing else)
              volt =
                  fst.v_prev_volt[sl] +
                  (fst.v_volt[sl] - fst.v_prev_volt[sl]) * next_sample.fraction;
              break;
          }
          const double noise_lsb =
              !net.madc_noise
                  ? 0.0
                  : model::kMadcNoiseLsb *
                        random::ReadoutGaussian(random::Hash(
                            madc_noise_key, static_cast<uint64_t>(sample)));
          const int64_t code =
              std::clamp<int64_t>(std::llround(volt * net.madc_lsb_per_volt +
                                               net.madc_offset_lsb + noise_lsb),
                                  0, kMadcMaxCode);
          const int64_t time_ns = sample * kMadcSamplePeriodNs;
          hxemu::v1::Trace* trace =
              result.mutable_traces(static_cast<int>(sample % num_channels));
          trace->add_times_ticks(static_cast<uint64_t>(time_ns / kTickNs));
          trace->add_codes(static_cast<uint32_t>(code));
          ++sample;
          const int64_t next_ns = sample * kMadcSamplePeriodNs;
          next_sample =
              next_ns < runtime_ns
                  ? SampleAt(net.warmup_steps, next_ns)
                  : SamplePoint{std::numeric_limits<int64_t>::max(), 0.0f};
        }
      }
      if (!all_fine) ScatterState(sub_st, n, pool, st);
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
  if (control.on_progress) control.on_progress(runtime_ms);
  return absl::OkStatus();
}

}  // namespace hxemu::emulator
