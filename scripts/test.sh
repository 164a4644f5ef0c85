#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (the ONNX Runtime
# library, the wasm32 target), builds the `whet` binary the end-to-end tests
# drive, checks that `shared` builds for the browser, then runs every crate's
# tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
# Invariant: `shared` builds for wasm32 (the console validates with it).
cargo build --locked -p whetstone-shared --target wasm32-unknown-unknown
cargo build --locked -p whetstone-backend --bin whet
cargo test --locked --workspace "$@"
