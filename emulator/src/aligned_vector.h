// File: aligned_vector.h
//
// SlotArray<T>: a std::vector whose storage starts on a 64-byte boundary
// (one cache line, one AVX-512 vector). The vectorised loops of the engine
// read and write tens of per-slot arrays per step; from a plain
// std::vector (16-byte aligned) three of four 64-byte loads and stores
// straddle two cache lines (measured on the reference load: ~5 % of a
// run). Internal header.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace hxemu::emulator {

inline constexpr std::size_t kCacheLineBytes = 64;

template <typename T>
struct CacheLineAllocator {
  using value_type = T;

  CacheLineAllocator() = default;
  template <typename U>
  constexpr CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    return static_cast<T*>(
        ::operator new (n * sizeof(T), std::align_val_t{kCacheLineBytes}));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    ::operator delete (p, n * sizeof(T), std::align_val_t{kCacheLineBytes});
  }

  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept {
    return true;
  }
  template <typename U>
  bool operator!=(const CacheLineAllocator<U>&) const noexcept {
    return false;
  }
};

template <typename T>
using SlotArray = std::vector<T, CacheLineAllocator<T>>;

}  // namespace hxemu::emulator
