#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (the ONNX Runtime
# library), builds the `whet` binary the end-to-end tests drive, then runs
# every crate's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
cargo build --locked -p whetstone-backend --bin whet
cargo test --locked --workspace "$@"
