// File: rounding.h
//
// Rounding of the emulator's hot paths without a library call. Internal
// header: not installed, not used by other targets.
#pragma once

#include <cstdint>

namespace hxemu::emulator {

// std::llround(x) for 0 <= x < 2^63, inline (llround is a library call:
// ~1 % of a benchmark run each where the MADC codes and the input spike
// ticks were rounded by it). Below 2^53 x minus its truncation is exact, in
// [0, 1); above, x is an integer. Halves round up, as llround rounds them
// away from zero.
inline int64_t RoundNonNegative(double x) {
  const int64_t whole = static_cast<int64_t>(x);
  return whole + static_cast<int64_t>(x - static_cast<double>(whole) >= 0.5);
}

}  // namespace hxemu::emulator
