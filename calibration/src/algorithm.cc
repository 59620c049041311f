// File: algorithm.cc
#include "hxemu/calibration/algorithm.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace hxemu::calibration {
namespace {

// SplitMix64: a small, well-mixed hash for the start noise.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

absl::StatusOr<SearchResult> BinarySearch(const MeasureFunction& measure,
                                          absl::Span<const double> targets,
                                          const SearchSpace& space,
                                          const BinarySearchOptions& options) {
  if (space.max_code < space.min_code) {
    return absl::InvalidArgumentError(absl::StrCat(
        "search space ", space.min_code, "..", space.max_code, " is empty"));
  }
  const size_t n = targets.size();
  const int32_t range = space.max_code - space.min_code;
  const int32_t middle = space.min_code + range / 2;
  std::vector<int32_t> codes(n, middle);
  if (options.initial_noise > 0) {
    const uint64_t span = 2 * static_cast<uint64_t>(options.initial_noise) + 1;
    for (size_t i = 0; i < n; ++i) {
      const int64_t noise =
          static_cast<int64_t>(Mix(options.seed * 0x100000001B3ull + i) %
                               span) -
          options.initial_noise;
      codes[i] = static_cast<int32_t>(
          std::clamp<int64_t>(middle + noise, space.min_code, space.max_code));
    }
  }
  SearchResult result;
  result.codes = codes;
  result.measured.assign(n, std::numeric_limits<double>::quiet_NaN());
  std::vector<double> best_error(n, std::numeric_limits<double>::infinity());
  std::vector<int> direction(n, 0);

  // Measures at `codes`, keeps the best per neuron and sets each neuron's
  // direction towards its target.
  auto step = [&]() -> absl::Status {
    absl::StatusOr<std::vector<double>> m = measure(codes);
    ++result.measurements;
    if (!m.ok()) return m.status();
    if (m->size() != n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "measurement returned ", m->size(), " values for ", n, " neurons"));
    }
    for (size_t i = 0; i < n; ++i) {
      const double v = (*m)[i];
      const double error = std::abs(v - targets[i]);
      if (error < best_error[i]) {  // false for NaN
        best_error[i] = error;
        result.codes[i] = codes[i];
        result.measured[i] = v;
      }
      const bool below = v < targets[i];  // false for NaN
      const bool increase = below == (space.slope == Slope::kIncreasing);
      direction[i] = increase ? 1 : -1;
    }
    return absl::OkStatus();
  };
  auto move = [&](int32_t by) {
    for (size_t i = 0; i < n; ++i) {
      codes[i] = std::clamp(codes[i] + direction[i] * by, space.min_code,
                            space.max_code);
    }
  };

  for (int32_t s = range >= 2 ? std::bit_floor<uint32_t>(range / 2) : 0; s >= 1;
       s /= 2) {
    if (absl::Status st = step(); !st.ok()) return st;
    move(s);
  }
  if (absl::Status st = step(); !st.ok()) return st;
  for (int e = 0; e < options.extra_steps && range > 0; ++e) {
    move(1);
    if (absl::Status st = step(); !st.ok()) return st;
  }
  return result;
}

}  // namespace hxemu::calibration
