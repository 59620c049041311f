#!/usr/bin/env bash
# The test command: installs what is missing (Debian packages), checks the
# C++ formatting, builds, then runs
#   1. every C++ test under AddressSanitizer + UndefinedBehaviorSanitizer,
#   2. the scheduler, job store, emulator and calibration tests under
#      ThreadSanitizer (Debian's gRPC and Abseil are not TSan-instrumented,
#      so TSan cannot judge the server's gRPC threads; the scheduler wraps
#      its locks so TSan sees them),
#   3. every C++ test (CTest: unit + integration) in the normal build,
#   4. every Python test (pytest) against real servers on loopback.
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's start, in seconds since this script started (CI has 2 cores
# and must stay well under 20 minutes in all).
phase() { echo "== $1 (at ${SECONDS} s)"; }
bash deploy/install-deps.sh
bash deploy/check-format.sh

phase "build (RelWithDebInfo)"
bash deploy/build.sh

phase "ASan/UBSan: all C++ tests"
# -O1, as the sanitizers' documentation advises: the tests run ~4x faster
# than at Debug's -O0 (53 s instead of 230 s on 2 cores), where the
# emulator's loops made the longest ones take minutes; same build time.
HXEMU_BUILD_DIR=build-asan bash deploy/build.sh -DCMAKE_BUILD_TYPE=Debug \
  "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1" \
  -DHXEMU_SANITIZE=address,undefined -DHXEMU_BUILD_BENCHMARKS=OFF
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" \
  > build-asan/ctest.log 2>&1 || { cat build-asan/ctest.log; exit 1; }
echo "ASan/UBSan: $(grep "tests passed" build-asan/ctest.log)"

phase "TSan: scheduler, job store, emulator and calibration tests"
mkdir -p build-tsan
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHXEMU_SANITIZE=thread -DHXEMU_BUILD_BENCHMARKS=OFF > build-tsan/configure.log
cmake --build build-tsan --target scheduler_test job_store_test emulator_test \
  calibration_test calibration_server_test
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/scheduler_test --gtest_brief=1
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/job_store_test --gtest_brief=1
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/emulator_test --gtest_brief=1
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/calibration_test --gtest_brief=1
# The calibration store without gRPC (its server tests need uninstrumented gRPC).
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/calibration_server_test \
  --gtest_brief=1 --gtest_filter='CalibrationStoreTest.*'

phase "all C++ tests"
ctest --test-dir build --output-on-failure -j "$(nproc)"

phase "Python tests"
PYTHONPATH="$PWD/client/python" /usr/bin/python3 -m pytest tests/python -q \
  -p no:cacheprovider
echo "== all tests passed in ${SECONDS} s"
