#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for a bounded time, on the
# stable toolchain, starting from the committed seeds in fuzz/corpus/<target>/.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, all targets)
#
# cargo-fuzz asks rustc for nightly-only flags (-Zsanitizer=address);
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept them. cargo-fuzz itself is
# installed, pinned, when missing. New inputs the fuzzer finds go to
# fuzz/target/corpus/<target>/ (kept between local runs, never committed); a
# crash stops with its input saved under fuzz/artifacts/<target>/ and this
# script exits non-zero after running the other targets.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
secs=${1:-20}
shift || true
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: SECONDS_PER_TARGET must be a positive integer, not '$secs'" >&2; exit 2; }

export RUSTC_BOOTSTRAP=1
if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "== fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# One build for all targets. `--dev` (the profile in fuzz/Cargo.toml) builds in
# half the time of cargo-fuzz's default release build and runs as fast; every
# `run` below must pass it too, or cargo-fuzz would build again.
echo "== fuzz: building the targets (address sanitizer, debug assertions)"
start=$SECONDS
cargo fuzz build --dev
echo "fuzz: built in $((SECONDS - start)) s"

# The file-reading targets keep a scratch directory under TMPDIR for the life
# of the process; give them one in memory (syncs are free there) and remove it.
scratch=$(mktemp -d -p "$([ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")" kdc-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

passed=0
failed=0
for t in "${targets[@]}"; do
  seeds="fuzz/corpus/$t"
  work="fuzz/target/corpus/$t"
  log="fuzz/target/$t.log"
  [ -d "$seeds" ] || { echo "fuzz: $t has no seed corpus ($seeds)" >&2; exit 2; }
  mkdir -p "$work" "fuzz/artifacts/$t"
  # libFuzzer writes new inputs to the first corpus directory only: the
  # committed seeds are read, never changed.
  if TMPDIR="$scratch" cargo fuzz run --dev "$t" "$work" "$seeds" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    passed=$((passed + 1))
    status=ok
  else
    failed=$((failed + 1))
    status=FAILED
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -n1 || true)
  if [ "$status" = ok ]; then
    echo "fuzz: $t: ok, ${execs:-?} executions in ${secs} s (${rate:-?}/s), ${cov:-no coverage line}"
  else
    echo "fuzz: $t: FAILED after ${execs:-?} executions, ${cov:-no coverage line}; full log: $log"
    grep -m1 -A4 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" >&2 || true
    sed -n '/^Failing input:/,/^Output of/p' "$log" >&2
  fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
