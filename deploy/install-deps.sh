#!/usr/bin/env bash
# Installs every Debian package that building, testing and running hxemu needs.
# Idempotent: packages already present are skipped by apt. Nothing is fetched from
# anywhere but the Debian archive configured on this machine.
#
#   deploy/install-deps.sh            everything (build, tests, Python client)
#   deploy/install-deps.sh --cpp-only the C++ build and its tests (Docker image)
set -euo pipefail

CPP_PACKAGES=(
  # C++ toolchain and build
  g++ cmake ninja-build pkg-config clang-format
  # gRPC / protobuf / Abseil / metrics (a matched Debian 12 set; never mix in others)
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev
  # C++ tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
)
PYTHON_PACKAGES=(
  # Python client (Debian's /usr/bin/python3 only)
  python3 python3-grpcio python3-protobuf python3-numpy python3-neo python3-quantities
  python3-pynn python3-matplotlib python3-pytest python3-tqdm
  openssl  # tests/python/test_cli.py makes a throw-away TLS certificate
  python3-brian  # tests/bench/emulator_bench runs the Brian2 peer (cpp_standalone)
)

PACKAGES=("${CPP_PACKAGES[@]}")
if [[ "${1:-}" != "--cpp-only" ]]; then PACKAGES+=("${PYTHON_PACKAGES[@]}"); fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
