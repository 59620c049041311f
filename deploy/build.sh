#!/usr/bin/env bash
# Configures and builds hxemu into ./build (or $HXEMU_BUILD_DIR) with Ninja.
# Extra arguments go to the CMake configure step, e.g.
#   deploy/build.sh -DHXEMU_SANITIZE=address,undefined
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${HXEMU_BUILD_DIR:-build}
mkdir -p "$build_dir"
cmake -S . -B "$build_dir" -G Ninja "$@" > "$build_dir/configure.log" 2>&1 \
  || { cat "$build_dir/configure.log"; exit 1; }
cmake --build "$build_dir" -j "$(nproc)"
