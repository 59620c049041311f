#!/usr/bin/env bash
# The test command: installs what is missing (Debian packages), builds, then
# runs every C++ test (CTest) and every Python test (pytest) against real
# servers on loopback. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/check-format.sh
bash deploy/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
PYTHONPATH="$PWD/client/python" /usr/bin/python3 -m pytest tests/python -q \
  -p no:cacheprovider
