#!/bin/sh
# `make bench`: runs the benchmark programs built into BUILD_DIR/bench/.
# Usage: bench/run.sh BUILD_DIR [args for the programs]
set -u
build=$1
shift
if [ -x "$build/bench/cuda_bench" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    "$build/bench/cuda_bench" "$@" || exit 1
  else
    echo "bench: no GPU on this machine: skipping cuda_bench"
  fi
fi
