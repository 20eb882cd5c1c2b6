#!/bin/sh
# Runs every benchmark program built from bench/*.c (BUILD_DIR/bench/*), one after another.
# Usage: bench/run.sh BUILD_DIR [extra arguments passed to each program]
set -eu
build=$1
shift
status=0
for b in "$build"/bench/*; do
  [ -x "$b" ] || continue
  echo "== $(basename "$b")"
  "$b" "$@" || status=1
done
exit $status
