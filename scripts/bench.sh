#!/usr/bin/env bash
# The optimizer's performance table: our o2 search on the zoo models against
# ONNX Runtime fp32 and against ORT's own quantization tools at their best
# settings, all measured in one run. Sets up a Python venv with onnxruntime
# (for the peer artifacts only) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
if [ ! -x .bench-venv/bin/python ]; then
  python3 -m venv .bench-venv
  .bench-venv/bin/pip install --quiet "onnxruntime==1.31.1" onnx numpy sympy
fi
export WHET_PEER_PYTHON="$PWD/.bench-venv/bin/python"
cargo bench --locked -p whetstone-optimizer --bench o2
