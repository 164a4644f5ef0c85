#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (the ONNX Runtime
# library, the wasm32 target), builds the `whet` binary the end-to-end tests
# drive and the console bundle the browser tests load, checks that `shared`
# builds for the browser, then runs the tests of the default workspace
# members. The browser tests also need Debian's `chromium` and
# `chromium-driver` (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
# Invariant: `shared` builds for wasm32 (the console validates with it).
cargo build --locked -p whetstone-shared --target wasm32-unknown-unknown
# The console bundle in target/console, which the browser tests
# (e2e/tests/browser.rs) serve; debug is enough for them and builds fastest.
# This also checks that the frontend compiles for wasm32.
cargo run --locked -p xtask -- build-console --locked
cargo build --locked -p whetstone-backend --bin whet
# Default members only (shared, optimizer, backend, e2e): the console is
# checked by its bundle build above and in a real browser by e2e.
cargo test --locked "$@"
