#!/bin/sh
# Runs each libFuzzer target for a bounded time from its seed corpus (tests/fuzz/corpus/NAME,
# read-only; new inputs go to a scratch folder). Exits non-zero on the first crash.
# Usage: tests/fuzz/run.sh BUILD_DIR SECONDS [target names...]
set -eu
build=$1
seconds=$2
shift 2
for name in "$@"; do
  scratch=$(mktemp -d)
  seeds=tests/fuzz/corpus/$name
  [ -d "$seeds" ] || seeds=
  echo "== fuzz $name (${seconds}s)"
  "$build/fuzz/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=0 -close_fd_mask=3 -artifact_prefix="$scratch/" "$scratch" $seeds 2>"$scratch.log" || {
    tail -n 40 "$scratch.log"
    echo "fuzz $name: crash; the input is in $scratch"
    exit 1
  }
  grep -E '^(Done|#[0-9]+ +DONE)' "$scratch.log" | tail -n 1 || true
  rm -rf "$scratch" "$scratch.log"
done
