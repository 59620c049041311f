// File: tests/support/benchmark_neuron.h
//
// The AdEx neuron of the emulator benchmark's reference load (tests/bench,
// the network of ../shared/peers/brian2_adex.py in hardware units), shared by
// the benchmark and the macro-step tests that use the same regime: C = 0.1 +
// 54 x 2.2 / 63 = 1.99 pF, g_leak = 400 x 0.5 nS = 200 nS (tau_mem 10 us),
// E_leak 0.55 V, V_T 0.565 V (E_leak + 15 mV), Delta_T 2 mV, threshold
// 0.575 V (+25 mV), reset 0.545 V (-5 mV), refractory 250 x 8 ns = 2 us,
// excitatory tau_syn = 2 ms / 400 = 5 us. The synaptic strength
// (excitatory_input_i_bias_gm) and any constant current are the user's.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace hxemu::test_support {

inline std::vector<std::pair<const char*, int32_t>> BenchmarkAdExNeuron() {
  return {{"membrane_capacitance_capacitance", 54},
          {"leak_v_leak", 600},
          {"leak_i_bias", 400},
          {"exponential_enable", 1},
          {"exponential_v_exp", 252},
          {"exponential_i_bias", 100},
          {"threshold_enable", 1},
          {"threshold_v_threshold", 260},
          {"reset_v_reset", 593},
          {"reset_i_bias", 1022},
          {"reset_enable_multiplication", 1},
          {"refractory_period_refractory_time", 250},
          {"excitatory_input_enable", 1},
          {"excitatory_input_i_bias_tau", 400}};
}

}  // namespace hxemu::test_support
