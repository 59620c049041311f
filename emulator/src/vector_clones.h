// File: vector_clones.h
//
// HXEMU_VECTOR_CLONES before a function with a vectorisable loop compiles it
// also for x86-64-v4 (AVX-512: 16 floats per operation) and x86-64-v3
// (AVX2: 8), picked at load time where the CPU has them (GCC function
// multi-versioning). Both have FMA, and the emulator is built with
// -ffp-contract=fast: polynomials become chains of fused multiply-adds. The
// two versions give bit-identical results (the same contractions); the
// baseline version, for CPUs without AVX2 and FMA (before 2013), rounds
// differently in the last bits. Under the sanitizers the functions are
// plain ones. HXEMU_SIMD_COMPACT: the clones exist, so code with intrinsics
// for them may be used. Internal header.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define HXEMU_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define HXEMU_SIMD_COMPACT
#else
#define HXEMU_VECTOR_CLONES
#endif
