#!/usr/bin/env bash
# Installs what is missing and starts the server on the embedded default:
# SQLite and artifacts in ~/.local/share/whetstone/data, CPU workers,
# http://127.0.0.1:8080, with the web console at its root (built into
# target/console by the xtask). Extra arguments go to `whet serve`.
# `whet` is built with the `torch` feature (TorchScript for pytorch_*
# processors) against the CPU libtorch of scripts/install-libtorch.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
# LIBTORCH for tch's build; LD_LIBRARY_PATH because libtorch sets no rpath;
# OMP_WAIT_POLICY=PASSIVE so idle OpenMP threads do not spin.
LIBTORCH="$(scripts/install-libtorch.sh)"
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_WAIT_POLICY=PASSIVE
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo run --locked --release -p xtask -- build-console --release --locked
cargo build --locked --release -p whetstone-backend --features torch --bin whet
# Without `torch`, in a run of its own: ONNX instances do not load libtorch.
cargo build --locked --release -p whetstone-runner --bin whet-runner
exec target/release/whet serve "$@"
