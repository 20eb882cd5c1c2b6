#!/bin/sh
# One device-machine call for the CUDA backend: whole-model tests (cuda vs ref vs HF,
# eager vs graphs), the sample op and engine tests (graphs at start, memory classes), the
# kernel tests, compute-sanitizer on the model and engine tests, `fp8d bench`
# on Qwen3-8B shapes, and the HF transformers bf16 peer row, all logged under $OUT.
# Usage (on the device, from the checkout root; DIR holds fp8d, the tests/gpu binaries,
# hf_bench.py and golden/ = copies of tests/golden/models/*):
#   tools/cuda-backend-device-run.sh DIR
set -u
D=$1
export FP8D_GOLDEN_DIR=$D/golden
L=$OUT/run.log
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used --format=csv; } >"$L" 2>&1
for t in test-cuda-model test-cuda-sample test-cuda-engine test-cuda-gemv test-cuda-attn test-cuda-norm; do
  timeout 120 "$D/$t" >>"$L" 2>&1; echo "$t rc=$?" | tee -a "$L"
done
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$D/test-cuda-model" >"$OUT/san.log" 2>&1
echo "sanitizer test-cuda-model rc=$?" | tee -a "$L"
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 "$D/test-cuda-engine" >"$OUT/san-engine.log" 2>&1
echo "sanitizer test-cuda-engine rc=$?" | tee -a "$L"
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
