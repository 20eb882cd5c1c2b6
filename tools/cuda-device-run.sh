#!/bin/sh
# One device-machine session of the CUDA helper: GPU tests, one compute-sanitizer pass,
# the kernel benchmark and the GEMV's resource usage/SASS, all logged under $OUT.
# Usage (on the device, from the checkout root, binaries in DIR): tools/cuda-device-run.sh DIR [quick]
set -u
D=$1
mode=${2:-full}
export LD_LIBRARY_PATH=$D${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
log=$OUT/run.log
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv
} >"$log" 2>&1
for t in test-cuda-gemv test-cuda-attn test-cuda-norm; do
  echo "== $t" >>"$log"
  timeout 60 "$D/$t" >>"$log" 2>&1
  echo "$t rc=$?" | tee -a "$log"
done
echo "== bench" >>"$log"
if [ "$mode" = quick ]; then
  timeout 200 "$D/cuda_bench" --quick >"$OUT/bench.log" 2>&1
else
  timeout 240 "$D/cuda_bench" >"$OUT/bench.log" 2>&1
fi
echo "bench rc=$?" | tee -a "$log"
if [ -x "$D/cuda_bench_old" ]; then # the previous build, for a same-machine baseline
  timeout 200 "$D/cuda_bench_old" >"$OUT/bench-old.log" 2>&1
  echo "bench-old rc=$?" | tee -a "$log"
fi
if [ "$mode" != nosan ] && [ "$mode" != quick ]; then
  for t in test-cuda-gemv test-cuda-attn test-cuda-norm; do
    timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$D/$t" >"$OUT/san-$t.log" 2>&1
    echo "sanitizer $t rc=$?" | tee -a "$log"
  done
  cuobjdump --dump-resource-usage "$D/cuda_bench" >"$OUT/resource.txt" 2>&1
  cuobjdump --dump-sass "$D/cuda_bench" 2>/dev/null | \
    grep -oE "Function : [^ ]+|(LDG|HMMA|STL|LDL|STG)[.A-Z0-9_]*" | \
    awk '/Function/{f=$3; next} {c[f" "$0]++} END{for(k in c) print c[k], k}' | \
    sort -k2 >"$OUT/sass-summary.txt"
fi
cat "$OUT/bench.log"
