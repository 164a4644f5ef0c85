#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (the ONNX Runtime
# library, the wasm32 target), builds the `whet` binary the end-to-end tests
# drive and the console bundle the browser tests load, checks that `shared`
# builds for the browser, then runs the tests of the default workspace
# members. The client tests use the venv that scripts/install-clients.sh
# makes (as root it also installs Debian's libb64-0d). The browser tests
# also need Debian's `chromium` and `chromium-driver`, and the store's tests
# start their own PostgreSQL with Debian's `postgresql` (.ci/run installs them).
# Everything is built with the `torch` feature (TorchScript serving), against
# the CPU libtorch that scripts/install-libtorch.sh installs (≈1.25 GB, once).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
# tch's build finds libtorch through LIBTORCH; libtorch sets no rpath, so the
# test binaries and `whet` find its libraries through LD_LIBRARY_PATH.
# OMP_WAIT_POLICY=PASSIVE: libtorch's idle OpenMP threads would otherwise spin.
LIBTORCH="$(scripts/install-libtorch.sh)"
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_WAIT_POLICY=PASSIVE
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
rustup component add clippy >/dev/null 2>&1 || true
# Invariant: `shared` builds for wasm32 (the console validates with it).
cargo build --locked -p whetstone-shared --target wasm32-unknown-unknown
# The default feature set (without `torch`) type-checked, with clippy's
# lints as errors: its `cfg(not(feature = "torch"))` branches are compiled
# here and nowhere else.
cargo clippy --locked --all-targets -- -D warnings
# The server's and the runner's own builds, without the tests that turn on the
# optimizer's `internals` feature: they compile against its small public API,
# and nothing in it is left unused.
cargo clippy --locked -p whetstone-optimizer -p whetstone-runner -p whetstone-backend -- -D warnings
# The console bundle in target/console, which the browser tests
# (e2e/tests/browser.rs) serve; debug is enough for them and builds fastest.
# This also checks that the frontend compiles for wasm32.
cargo run --locked -p xtask -- build-console --locked
cargo build --locked -p whetstone-backend --features torch --bin whet
# The ONNX runner, built without the `torch` feature in a cargo run of its
# own (features unify within one run): an instance of an ONNX artifact then
# does not load libtorch. `whet` starts it from beside itself.
cargo build --locked -p whetstone-runner --bin whet-runner
# The third-party clients (EAS SDK, Triton client, perf_analyzer) that
# e2e/tests/clients.rs drives against the server, in .clients-venv.
scripts/install-clients.sh
# The benchmarks are not tests, but they must keep compiling: built (not
# run) with the test profile, which reuses everything built above.
cargo test --locked --features torch --benches --no-run
# Default members only (shared, optimizer, backend, e2e): the console is
# checked by its bundle build above and in a real browser by e2e.
cargo test --locked --features torch "$@"
