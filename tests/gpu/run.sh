#!/bin/sh
# Runs the GPU test programs; without a GPU it says so and exits 0 (nothing to check here).
# Usage: tests/gpu/run.sh BUILD_DIR [gpu test binaries...]
set -u
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "test-gpu: no GPU on this machine (nvidia-smi finds none): skipping GPU tests"
  exit 0
fi
nvidia-smi -L
exec tests/run.sh "$@"
