#!/bin/sh
# One device-machine call that verifies main on the GPU: every GPU test program in DIR
# (kernels against float64 references, the sample op, the engine, whole models cuda vs ref
# vs HF, eager vs graphs, tensor parallel when the machine has 2+ GPUs), compute-sanitizer
# memcheck on them (API errors not reported for test-cuda-tp: NCCL probes kernel images
# and peer access and handles the errors itself), `fp8d bench` on Qwen3-8B and Gemma3-27B
# shapes (greedy, Qwen3's default sampling, TP=2 when there are 2 GPUs), and the HF
# transformers bf16 eager peer row. Logged under $OUT; NVLink multicast stays off.
# Usage (on the device, from the checkout root; DIR holds fp8d, the tests/gpu binaries,
# hf_bench.py and golden/ = a copy of tests/golden/models/*):
#   tools/cuda-backend-device-run.sh DIR
set -u
D=$1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export FP8D_GOLDEN_DIR=$D/golden
L=$OUT/run.log
B=$OUT/bench.log
n=$(nvidia-smi -L | grep -c '^GPU')
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } >"$L" 2>&1
for t in "$D"/test-cuda-*; do
  timeout 150 "$t" >>"$L" 2>&1; echo "${t##*/} rc=$?" | tee -a "$L"
done
for t in "$D"/test-cuda-*; do
  api=explicit
  [ "${t##*/}" = test-cuda-tp ] && api=no
  timeout 200 compute-sanitizer --tool memcheck --report-api-errors $api --error-exitcode 9 \
    "$t" >"$OUT/san-${t##*/}.log" 2>&1
  echo "sanitizer ${t##*/} rc=$?" | tee -a "$L"
done
: >"$B"
b() { echo "== fp8d bench $*" >>"$B"; timeout 150 "$D/fp8d" bench "$@" >>"$B" 2>&1; echo "bench $* rc=$?" | tee -a "$L"; }
b --synthetic qwen3-8b --batch 1,2,4,8,16 --tokens 128
b --synthetic qwen3-8b --batch 1,16 --tokens 128 --temperature 0.6 --top-k 20 --top-p 0.95
b --synthetic gemma3-27b --batch 1,16 --tokens 128
if [ "$n" -ge 2 ]; then
  b --synthetic qwen3-8b --batch 1,16 --tokens 128 --tensor-parallel-size 2
  b --synthetic gemma3-27b --batch 1,16 --tokens 128 --tensor-parallel-size 2
fi
echo "== python3 bench/hf_bench.py --batch 1,16 --tokens 128 --attn eager" >"$OUT/hf.log"
PYTHONUNBUFFERED=1 timeout 150 python3 "$D/hf_bench.py" --batch 1,16 --tokens 128 --attn eager \
  >>"$OUT/hf.log" 2>&1
echo "hf rc=$?" | tee -a "$L"
cat "$B" "$OUT/hf.log"
