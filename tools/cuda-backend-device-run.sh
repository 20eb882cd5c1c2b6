#!/bin/sh
# One device-machine call for the CUDA backend: every GPU test program in DIR (kernels
# against float64 references, the sample op, the engine, whole models cuda vs ref vs HF,
# eager vs graphs), compute-sanitizer memcheck on each, `fp8d bench` on Qwen3-8B shapes
# (greedy, eager, sampled; TTFT), and the HF transformers bf16 peer row, logged under $OUT.
# Usage (on the device, from the checkout root; DIR holds fp8d, the tests/gpu binaries,
# hf_bench.py and golden/ = copies of tests/golden/models/*):
#   tools/cuda-backend-device-run.sh DIR
set -u
D=$1
export FP8D_GOLDEN_DIR=$D/golden
L=$OUT/run.log
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used --format=csv; } >"$L" 2>&1
for t in "$D"/test-cuda-*; do
  timeout 120 "$t" >>"$L" 2>&1; echo "${t##*/} rc=$?" | tee -a "$L"
done
for t in "$D"/test-cuda-*; do
  echo "== ${t##*/}" >>"$OUT/san.log"
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$t" >>"$OUT/san.log" 2>&1
  echo "sanitizer ${t##*/} rc=$?" | tee -a "$L"
done
B=$OUT/bench.log
echo "== fp8d bench --synthetic qwen3-8b --batch 1,2,4,8,16 --tokens 128" >"$B"
timeout 120 "$D/fp8d" bench --synthetic qwen3-8b --batch 1,2,4,8,16 --tokens 128 >>"$B" 2>&1
echo "bench rc=$?" | tee -a "$L"
echo "== fp8d bench --synthetic qwen3-8b --batch 1,16 --tokens 128 --enforce-eager" >>"$B"
timeout 90 "$D/fp8d" bench --synthetic qwen3-8b --batch 1,16 --tokens 128 --enforce-eager >>"$B" 2>&1
echo "bench eager rc=$?" | tee -a "$L"
timeout 90 "$D/fp8d" bench --synthetic qwen3-8b --batch 1,2,4,8,16 --tokens 128 --json >"$OUT/bench.json" 2>/dev/null
echo "bench json rc=$?" | tee -a "$L"
echo "== python3 bench/hf_bench.py --batch 1,16 --tokens 128 --attn eager,sdpa" >"$OUT/hf.log"
PYTHONUNBUFFERED=1 timeout 200 python3 "$D/hf_bench.py" --batch 1,16 --tokens 128 --attn eager,sdpa >>"$OUT/hf.log" 2>&1
echo "hf rc=$?" | tee -a "$L"
cat "$B" "$OUT/hf.log"
