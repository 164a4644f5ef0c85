#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default
# 180), starting from the seeds scripts/fuzz-seeds.py writes, and prints a
# line per target: runs, coverage, corpus, and whether it crashed. A crash's
# input stays in fuzz/artifacts/TARGET/; make it a regression test (the
# readers' unit tests) before fixing it. Needs nightly (rustup) and
# cargo-fuzz (`cargo install cargo-fuzz --locked`); not part of the test
# command. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-180}
shift || true
export LIBTORCH=${LIBTORCH:-$(scripts/install-libtorch.sh)}
export LD_LIBRARY_PATH=$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
# Seeds from the built-in example and the zoo.
example=$(mktemp -d)
cargo run -q --locked -p whetstone-backend --bin whet -- example-model "$example/ex" >/dev/null
python3 scripts/fuzz-seeds.py "$example/ex" "${WHETSTONE_ZOO:-../shared/zoo}" \
  "$( [ -x .clients-venv/bin/python ] && echo .clients-venv/bin/python )"
rm -rf "$example"
cd fuzz
# No sanitizer: the code under test is safe Rust (a panic, an overflow —
# debug assertions are on — or a runaway allocation is what is looked for).
cargo +nightly fuzz build -s none || exit 1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  cargo +nightly fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -malloc_limit_mb=2048 -max_len=65536 -timeout=20 \
    >"$log" 2>&1
  code=$?
  stats=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -E 's/^#([0-9]+).*cov: ([0-9]+).*corp: ([0-9]+).*/\1 runs, cov \2, corpus \3/')
  if [ $code -eq 0 ]; then
    echo "$t: ${secs} s, $stats, no crash"
  else
    echo "$t: CRASH after $stats (exit $code); input in fuzz/artifacts/$t/"
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5
    status=1
  fi
  rm -f "$log"
done
exit $status
