#!/bin/sh
# The README's main-job command (make demo): make a tiny Qwen3 checkpoint with the real
# Qwen3 tokenizer, check it, and generate from it end to end.
# Usage: tools/demo.sh BUILD_DIR
set -eu
build=$1
fp8d=$build/fp8d
dir=$build/demo/qwen3-tiny

# The backend is the demo's visible choice, never a fallback inside the engine: the engine
# itself runs exactly the backend it is told to, or fails.
backend=ref
why="no GPU found"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  why="a GPU is present, but this build has no CUDA model backend yet (issue 7)"
fi
echo "demo: backend '$backend' ($why)"

echo "demo: fp8d mkmodel --arch qwen3 --preset qwen3-tiny --out $dir"
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
"$fp8d" mkmodel --arch qwen3 --preset qwen3-tiny --seed 1 --out "$dir"

echo "demo: fp8d inspect --model $dir"
"$fp8d" inspect --model "$dir"

prompt="Write a haiku about FP8."
echo "demo: fp8d run --model $dir --backend $backend --chat --max-tokens 32 \"$prompt\""
echo "      (random weights: the text is gibberish, the pipeline is real)"
"$fp8d" run --model "$dir" --backend "$backend" --chat --max-tokens 32 --seed 7 "$prompt"
echo
echo "demo: done"
