#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (the ONNX Runtime
# library, the wasm32 target), builds the `whet` binary the end-to-end tests
# drive, checks that `shared` builds for the browser, then runs the tests of
# the default workspace members.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
# Invariant: `shared` builds for wasm32 (the console validates with it).
cargo build --locked -p whetstone-shared --target wasm32-unknown-unknown
# The console compiles for the browser (its bundle is built by scripts/serve.sh).
cargo build --locked -p whetstone-frontend --target wasm32-unknown-unknown
cargo build --locked -p whetstone-backend --bin whet
# Default members only (shared, optimizer, backend, e2e): the console is
# checked by its wasm32 build above; xtask only builds the bundle.
cargo test --locked "$@"
