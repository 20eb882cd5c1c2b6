#!/bin/sh
# One device-machine call for tensor parallel (issue 8): the linker's view of libnccl, the
# GPU tests (test-cuda-tp: TP=N vs TP=1 vs ref, graphs vs eager, greedy, a failing rank;
# test-cuda-model when MODEL_TEST=1: the single-GPU backend unchanged), and `fp8d bench`
# of each PRESET without a group, with --tensor-parallel-size 1 (qwen3-8b only) and, when
# the machine has them, 2 (and 4, 8) GPUs, in the same call. Everything is logged under
# $OUT. NVLink multicast stays off.
# Usage (on the device, from the checkout root; DIR holds fp8d, test-cuda-tp,
# test-cuda-model and golden/ = a copy of tests/golden/models/*):
#   tools/tp-device-run.sh DIR [TOKENS [PRESET...]]   (default: 128 qwen3-8b)
set -u
D=$1
T=${2:-128}
shift
[ $# -gt 0 ] && shift
PRESETS=${*:-qwen3-8b}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export FP8D_GOLDEN_DIR=$D/golden
L=$OUT/run.log
n=$(nvidia-smi -L | grep -c '^GPU')
{
  date -u
  nvidia-smi --query-gpu=index,name,driver_version,memory.used --format=csv
  nvidia-smi topo -m
  echo "== ldd fp8d (libnccl must resolve)"
  ldd "$D/fp8d" | grep -E 'nccl|cublas|cudart|not found'
} >"$L" 2>&1
B=$OUT/bench.log
: >"$B"
bench() { # preset, options...
  p=$1
  shift
  echo "== fp8d bench --synthetic $p --batch 1,16 --tokens $T $*" >>"$B"
  timeout 150 "$D/fp8d" bench --synthetic "$p" --batch 1,16 --tokens "$T" "$@" >>"$B" 2>&1
  echo "bench $p $* rc=$?" | tee -a "$L"
}
for p in $PRESETS; do
  bench "$p"
  [ "$p" = qwen3-8b ] && bench "$p" --tensor-parallel-size 1
  for tp in 2 4 8; do
    [ "$tp" -le "$n" ] && bench "$p" --tensor-parallel-size $tp
  done
done
tests=test-cuda-tp
[ "${MODEL_TEST:-0}" = 1 ] && tests="$tests test-cuda-model"
for t in $tests; do
  NCCL_DEBUG=VERSION timeout 200 "$D/$t" >"$OUT/$t.log" 2>&1
  echo "$t rc=$?" | tee -a "$L"
done
cat "$L" "$B"
