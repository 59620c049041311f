// File: engine.cc
//
// Fixed-step time loop. Per step, in this order:
//   1. synaptic events arriving at this step are added to the synaptic
//      currents (on-chip spikes of earlier steps, then external spikes);
//   2. every placed neuron advances by one step (StepNeurons: one flat,
//      branch-free loop over structure-of-arrays state);
//   3. neurons that fired: spike time (interpolated threshold crossing),
//      recording, and their events are queued for delivery;
//   4. an MADC sample is taken if one falls into this step.
// Cancellation is polled every 1 us of emulated time, progress reported every
// 10 us. No allocation per neuron or per step (only amortised growth of the
// output arrays and of the in-flight event queue).
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "hxemu/emulator/chip_constants.h"
#include "model_constants.h"
#include "random.h"

namespace hxemu::emulator {
namespace {

// Mutable per-slot state, structure of arrays.
struct NeuronState {
  explicit NeuronState(const NeuronConstants& nc)
      : v_volt(nc.v_start_volt),
        v_prev_volt(nc.v_start_volt),
        current_amp(2 * static_cast<size_t>(nc.num_slots), 0.0f),
        refractory_left(nc.num_slots, 0),
        noise_state(nc.noise_seed),
        spiked(nc.num_slots, 0) {}

  std::vector<float> v_volt;       // membrane potential at the step end [V]
  std::vector<float> v_prev_volt;  // ... at the step start [V]
  // Synaptic input currents [A]: [0, n) excitatory, [n, 2n) inhibitory, so
  // that a synapse target is a single index (Connectivity::target).
  std::vector<float> current_amp;
  std::vector<int32_t> refractory_left;  // remaining refractory steps
  std::vector<uint32_t> noise_state;     // xorshift32 state per slot
  std::vector<uint8_t> spiked;           // fired in this step
};

// Branch-free select for finite values: `weight` is exactly 0 or 1, so the
// result is bit-exactly one operand. Both operands are loaded
// unconditionally; a ?: on two loads becomes a conditional load, which keeps
// the loop from vectorising.
inline float Blend(float weight, float if_one, float if_zero) {
  return if_one * weight + if_zero * (1.0f - weight);
}

// Advances every slot by one step. Returns whether any slot fired.
bool StepNeurons(const NeuronConstants& nc, NeuronState& st) {
  const int n = nc.num_slots;
  float* __restrict v = st.v_volt.data();
  float* __restrict v_prev = st.v_prev_volt.data();
  float* __restrict i_exc = st.current_amp.data();
  float* __restrict i_inh = st.current_amp.data() + n;
  int32_t* __restrict refractory = st.refractory_left.data();
  uint32_t* __restrict noise = st.noise_state.data();
  uint8_t* __restrict spiked = st.spiked.data();

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
  const float* __restrict exc_decay = nc.exc_decay.data();
  const float* __restrict inh_decay = nc.inh_decay.data();
  const float* __restrict v_threshold = nc.v_threshold_volt.data();
  const float* __restrict noise_step = nc.noise_step_volt.data();
  const int32_t* __restrict refractory_steps = nc.refractory_steps.data();
  const int32_t* __restrict reset_release = nc.reset_release_steps.data();

  int any = 0;
  // The arrays never alias (one std::vector each), but GCC ignores
  // __restrict on locals; ivdep spares the run-time alias checks that would
  // otherwise stop vectorisation.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
  for (int i = 0; i < n; ++i) {
    // Both regimes are loaded and blended: no control flow in this loop.
    const int32_t left = refractory[i];
    const float reset = static_cast<float>(left > reset_release[i]);
    const float decay = Blend(reset, decay_reset[i], decay_free[i]);
    const float v_inf = Blend(reset, v_inf_reset[i], v_inf_free[i]);
    const float drift = Blend(reset, drift_reset[i], drift_free[i]);
    const float exc_gain = Blend(reset, exc_gain_reset[i], exc_gain_free[i]);
    const float inh_gain = Blend(reset, inh_gain_reset[i], inh_gain_free[i]);

    const uint32_t r0 = random::XorShift32(noise[i]);
    const uint32_t r1 = random::XorShift32(r0);
    noise[i] = r1;

    const float v_old = v[i];
    const float ie = i_exc[i];
    const float ii = i_inh[i];
    float v_new = v_old + decay * (v_inf - v_old) + drift + exc_gain * ie -
                  inh_gain * ii + noise_step[i] * random::IrwinHall4(r0, r1);
    v_new = v_new < model::kMembraneMinVolt ? model::kMembraneMinVolt : v_new;
    v_new = v_new > model::kMembraneMaxVolt ? model::kMembraneMaxVolt : v_new;

    const float ie_next = ie * exc_decay[i];
    const float ii_next = ii * inh_decay[i];
    i_exc[i] = ie_next > model::kSynFlushAmp ? ie_next : 0.0f;
    i_inh[i] = ii_next > model::kSynFlushAmp ? ii_next : 0.0f;

    // Integer masks instead of bool && / bool ?: keep this branch-free.
    const int32_t left_next = left > 0 ? left - 1 : 0;
    const float v_th = v_threshold[i];
    const int32_t restart = refractory_steps[i];
    const int32_t fire = static_cast<int32_t>(left_next == 0) &
                         static_cast<int32_t>(v_new >= v_th);
    refractory[i] = fire ? restart : left_next;
    v_prev[i] = v_old;
    v[i] = v_new;
    spiked[i] = static_cast<uint8_t>(fire);
    any |= fire;
  }
  return any != 0;
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
SamplePoint SampleAt(int64_t warmup_steps, int64_t time_ns) {
  const int64_t q = time_ns * model::kStepsPerTick;  // [ns / kStepsPerTick]
  return {warmup_steps + q / kTickNs,
          static_cast<float>(q % kTickNs) / static_cast<float>(kTickNs)};
}

}  // namespace

absl::Status Emulate(const Network& net, const ExperimentLimits& limits,
                     const RunControl& control, hxemu::v1::Result& result) {
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

  auto deliver = [&](int64_t node) {
    for (int64_t e = conn.row_begin[node]; e < conn.row_begin[node + 1]; ++e) {
      st.current_amp[conn.target[e]] += conn.amplitude_amp[e];
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
  const uint64_t madc_noise_key = random::Hash(
      random::Key(random::Domain::kMadcNoise), net.seed, net.chip_id);

  for (int64_t step = 0; step < total_steps; ++step) {
    if (step % model::kCancelPollSteps == 0 && CancelRequested(control)) {
      const double done_ms =
          static_cast<double>(std::max<int64_t>(0, step - net.warmup_steps)) /
          (kTicksPerMs * model::kStepsPerTick);
      return absl::CancelledError(absl::StrCat("run cancelled after ", done_ms,
                                               " of ", runtime_ms,
                                               " ms emulated time"));
    }
    if (control.on_progress && step > net.warmup_steps &&
        (step - net.warmup_steps) % model::kProgressSteps == 0) {
      control.on_progress(static_cast<double>(step - net.warmup_steps) /
                          (kTicksPerMs * model::kStepsPerTick));
    }

    // 1. Events arriving now.
    while (in_flight_head < in_flight.size() &&
           in_flight[in_flight_head].first == step) {
      deliver(in_flight[in_flight_head++].second);
    }
    if (in_flight_head == in_flight.size()) {
      in_flight.clear();
      in_flight_head = 0;
    }
    while (next_input < net.input_spikes.size() &&
           net.input_spikes[next_input].step == step) {
      const int32_t node = net.input_spikes[next_input++].node;
      deliver(node);
      if (!record_spike(node, step / model::kStepsPerTick)) {
        return too_many_spikes();
      }
    }

    // 2. Neurons.
    if (StepNeurons(nc, st)) {
      // 3. Spikes.
      for (int i = 0; i < n; ++i) {
        if (!st.spiked[i]) continue;
        const float v_old = st.v_prev_volt[i];
        const float v_new = st.v_volt[i];
        const float v_th = nc.v_threshold_volt[i];
        const double fraction =
            v_old < v_th ? static_cast<double>(v_th - v_old) / (v_new - v_old)
                         : 0.0;
        const int64_t tick = static_cast<int64_t>(std::floor(
            (static_cast<double>(step) + fraction) / model::kStepsPerTick));
        if (!record_spike(nc.node[i], tick)) return too_many_spikes();
        if (has_targets(nc.node[i])) {
          in_flight.push_back({step + delay_steps, nc.node[i]});
        }
      }
    }

    // 4. MADC.
    if (step == next_sample.step) {
      const MadcChannel& ch = net.madc[sample % num_channels];
      const int s = ch.slot;
      double volt;
      switch (ch.observable) {
        case hxemu::v1::OBSERVABLE_EXC_SYNIN:
          volt = model::kSynInReadoutBaseVolt +
                 st.current_amp[s] * model::kSynInReadoutVoltPerAmp;
          break;
        case hxemu::v1::OBSERVABLE_INH_SYNIN:
          volt = model::kSynInReadoutBaseVolt +
                 st.current_amp[n + s] * model::kSynInReadoutVoltPerAmp;
          break;
        default:  // OBSERVABLE_V (validation admits nothing else)
          volt = st.v_prev_volt[s] +
                 (st.v_volt[s] - st.v_prev_volt[s]) * next_sample.fraction;
          break;
      }
      const double noise_lsb =
          model::kMadcNoiseLsb *
          random::Gaussian(
              random::Hash(madc_noise_key, static_cast<uint64_t>(sample)));
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
  if (control.on_progress) control.on_progress(runtime_ms);
  return absl::OkStatus();
}

}  // namespace hxemu::emulator
