#!/usr/bin/env bash
# The main job: installs what is missing, builds, then runs the single-neuron
# tutorial's experiments (client/python/examples) against an embedded local
# hxemu-server and writes their plots as PNG files into the folder given as
# the first argument (default: out/tutorial).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/tutorial}
bash deploy/install-deps.sh
bash deploy/build.sh
export PYTHONPATH="$PWD/client/python"
for example in client/python/examples/ts00_*.py; do
  echo "== $example"
  /usr/bin/python3 "$example" --out "$out"
done
echo "Plots written to $out/"
