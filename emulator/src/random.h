// File: random.h
//
// Counter-based randomness: every random number of the emulator is a pure
// function of a key (chip id, seed, circuit, quantity, counter, ...), so it
// does not depend on what else runs or in which order things are drawn.
// Internal header.
#pragma once

#include <cmath>
#include <cstdint>

namespace hxemu::emulator::random {

// What a random number is for; part of every key. The values are frozen:
// changing one changes every chip's mismatch or every seed's noise.
enum class Domain : uint64_t {
  kMismatch = 1,         // per (chip, circuit, quantity) fixed pattern
  kReadoutMismatch = 2,  // per chip MADC gain / offset
  kMembraneNoise = 3,    // per (seed, chip, circuit) noise generator seed
  kInitialState = 4,     // per (seed, chip, circuit) start potential
  kMadcNoise = 5,        // per (seed, chip, sample)
  kPoisson = 6,          // per (seed, population, neuron, spike)
  kCadcNoise = 7,        // per (seed, chip, read, circuit)
  kSynapseMismatch = 8,  // per (chip, hemisphere, row, column) weight gain
  kOnChipPoisson = 9,    // per (population seed, population, cycle block)
};

// SplitMix64 finaliser: a bijective 64-bit mix with full avalanche.
inline constexpr uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The word `b` folded into the mixed hash of the words before it.
inline constexpr uint64_t Fold(uint64_t mixed, uint64_t b) {
  return mixed ^ (b * 0xD6E8FEB86659FD93ull + 0x632BE59BD9B4E019ull);
}

// Hash of a sequence of 64-bit words (order matters). Hash(a, b) =
// Mix64(Fold(Mix64(a), b)): a stream's k-th number, Hash(stream, k), needs
// one Mix64 per k once Mix64(stream) is known.
inline constexpr uint64_t Hash(uint64_t a) { return Mix64(a); }
template <typename... Rest>
inline constexpr uint64_t Hash(uint64_t a, uint64_t b, Rest... rest) {
  return Hash(Fold(Mix64(a), b), rest...);
}

inline constexpr uint64_t Key(Domain d) { return static_cast<uint64_t>(d); }

// Uniform in the open interval (0, 1) from 53 bits of `h`. (The 53 bits
// converted as a signed integer, the same value: that conversion has a
// vector instruction in AVX2, the unsigned one only in AVX-512.)
inline double Uniform(uint64_t h) {
  return (static_cast<double>(static_cast<int64_t>(h >> 11)) + 0.5) * 0x1.0p-53;
}

// Standard normal from a key (Box-Muller on two derived uniforms).
inline double Gaussian(uint64_t key) {
  const double u1 = Uniform(Mix64(key ^ 0x5851F42D4C957F2Dull));
  const double u2 = Uniform(Mix64(key ^ 0x14057B7EF767814Full));
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Per-circuit noise generator step (xorshift32; state must be non-zero).
// Cheap and branch-free so the neuron loop stays vectorisable.
inline uint32_t XorShift32(uint32_t x) {
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return x;
}

// Approximately standard normal from two 32-bit words: the Irwin-Hall sum of
// four 16-bit uniforms, scaled to unit variance (bounded at +-3.46 sigma).
inline float IrwinHall4(uint32_t a, uint32_t b) {
  const int32_t sum = static_cast<int32_t>((a & 0xFFFFu) + (a >> 16) +
                                           (b & 0xFFFFu) + (b >> 16));
  // Each 16-bit value is a uniform on [0, 65536) with mean 32767.5.
  constexpr float kScale = 1.7320508f / 65536.0f;  // sqrt(12 / 4) / 65536
  return (static_cast<float>(sum) - 131070.0f) * kScale;
}

// Approximately standard normal from a key, ~20x cheaper than Gaussian (no
// log, sqrt, cos): IrwinHall4 of the key's hash. For the readout noise of
// every MADC sample and CADC read, where tails beyond 3.46 sigma do not
// matter and the cost per sample does.
inline float ReadoutGaussian(uint64_t key) {
  const uint64_t h = Mix64(key);
  return IrwinHall4(static_cast<uint32_t>(h), static_cast<uint32_t>(h >> 32));
}

}  // namespace hxemu::emulator::random
