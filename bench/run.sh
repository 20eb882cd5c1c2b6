#!/bin/sh
# `make bench`: runs every benchmark program built into BUILD_DIR/bench/ (cuda_bench only
# where a GPU is present).
# Usage: bench/run.sh BUILD_DIR [args for the programs]
set -u
build=$1
shift
status=0
for b in "$build"/bench/*; do
  [ -x "$b" ] || continue
  name=$(basename "$b")
  if [ "$name" = cuda_bench ] &&
    ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }; then
    echo "bench: no GPU on this machine: skipping cuda_bench"
    continue
  fi
  echo "== $name"
  "$b" "$@" || status=1
done
exit $status
