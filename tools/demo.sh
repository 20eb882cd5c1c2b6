#!/bin/sh
# The README's main-job command (make demo): make a tiny Qwen3 checkpoint with the real
# Qwen3 tokenizer, check it, serve it with fp8d serve, chat with it through fp8, print the
# IPC latency figures, and stop the daemon cleanly.
# Usage: tools/demo.sh BUILD_DIR
set -eu
build=$1
fp8d=$build/fp8d
dir=$build/demo/qwen3-tiny

# The backend is the demo's visible choice, never a fallback inside the engine: the engine
# itself runs exactly the backend it is told to, or fails.
backend=ref
why="no GPU found: the plain-C reference backend"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  backend=cuda
  why="a GPU is present: FP8 weights and KV cache on the GPU"
fi
echo "demo: backend '$backend' ($why)"

echo "demo: fp8d mkmodel --arch qwen3 --preset qwen3-tiny --out $dir"
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
"$fp8d" mkmodel --arch qwen3 --preset qwen3-tiny --seed 1 --out "$dir"

echo "demo: fp8d inspect --model $dir"
"$fp8d" inspect --model "$dir"

prompt="Write a haiku about FP8."
sock=$build/demo/fp8d.sock
log=$build/demo/fp8d.log
echo "demo: fp8d serve --model $dir --backend $backend --endpoint ipc://$sock (log: $log)"
rm -f "$sock" "$log"
"$fp8d" serve --model "$dir" --backend "$backend" --endpoint "ipc://$sock" --max-model-len 512 \
  --log-file "$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null' EXIT
# fp8 waits for the daemon (ZeroMQ reconnects until the socket exists and the model is loaded)
echo "demo: fp8 info"
"$build/fp8" --endpoint "ipc://$sock" --timeout 120000 info
echo "demo: echo \"$prompt\" | fp8 chat --max-tokens 32 --seed 7"
echo "      (random weights: the text is gibberish, the pipeline is real)"
echo "$prompt" | "$build/fp8" --endpoint "ipc://$sock" chat --max-tokens 32 --seed 7
echo
echo "demo: token delivery latency, shared-memory ring vs ZeroMQ messages (bench/ipc_latency)"
"$build/bench/ipc_latency" --tokens 2000 --consumers 1,32
echo "demo: stopping the daemon (SIGTERM)"
kill -TERM "$pid"
wait "$pid"
trap - EXIT
echo "demo: done"
