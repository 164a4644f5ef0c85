#!/usr/bin/env bash
# Installs what is missing and starts the server on the embedded default:
# SQLite and artifacts in ~/.local/share/whetstone/data, CPU workers,
# http://127.0.0.1:8080, with the web console at its root (built into
# target/console by the xtask). Extra arguments go to `whet serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo run --locked --release -p xtask -- build-console --release --locked
cargo build --locked --release -p whetstone-backend --bin whet
exec target/release/whet serve "$@"
