// File: hxemu/calibration/algorithm.h
//
// The "how" of a calibration (calix common/algorithms.py): a per-neuron
// parallel binary search over one integer hardware parameter. It knows
// nothing about neurons or chips: it hands a code per neuron to a measurement
// function and compares what comes back with a target per neuron. What is
// measured and which parameter is searched (the "what") lives in
// calibrate.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace hxemu::calibration {

// How the measured value responds to a larger code.
enum class Slope { kIncreasing, kDecreasing };

// The searched parameter's codes, inclusive, and its slope.
struct SearchSpace {
  int32_t min_code = 0;
  int32_t max_code = 1022;
  Slope slope = Slope::kIncreasing;
};

// Measures every neuron at the given codes (one per neuron) and returns one
// value per neuron. Saturated measurements should return +-infinity rather
// than NaN; a NaN counts as "above the target" and is never the best result.
using MeasureFunction = std::function<absl::StatusOr<std::vector<double>>(
    absl::Span<const int32_t> codes)>;

struct BinarySearchOptions {
  // Steps of +-1 after the halving steps (calix n_steps_extra); the best of
  // all measured codes wins, so these fix the parity and the last LSB.
  int extra_steps = 2;
  // calix NoisyBinarySearch: every neuron starts at the middle plus a uniform
  // integer in [-initial_noise, +initial_noise], so that neurons with equal
  // targets do not all step through identical codes. 0 = plain search.
  int32_t initial_noise = 0;
  // Seed of that start noise.
  uint64_t seed = 0;
};

struct SearchResult {
  // Best code per neuron (smallest |measured - target| over all steps).
  std::vector<int32_t> codes;
  // The measurement at that code.
  std::vector<double> measured;
  // Number of calls of the measurement function.
  int measurements = 0;
};

// Binary search of every neuron's code in parallel: start in the middle of
// the space, move towards the target by half the remaining range per step
// (range/4, range/8, ..., 1), then `extra_steps` steps of 1. Takes
// ceil(log2(range)) + extra_steps measurements. Errors of `measure` are
// returned as they are; INVALID_ARGUMENT for an empty space or a measurement
// with the wrong number of values.
absl::StatusOr<SearchResult> BinarySearch(
    const MeasureFunction& measure, absl::Span<const double> targets,
    const SearchSpace& space, const BinarySearchOptions& options = {});

}  // namespace hxemu::calibration
