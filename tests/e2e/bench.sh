#!/bin/sh
# fp8d bench on the ref backend with the tiny golden Qwen3: the KV pool line and the table
# carry the sizes worked out by hand below, --json is one parseable object with one row
# per batch size, and bad options or an absent CUDA device fail with a clear line.
set -u
fp8d=${FP8D_BUILD:-build}/fp8d
model=tests/golden/models/qwen3-tiny
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# --batch 1,3 --tokens 4 --prompt-tokens 20 --context 6: each sequence holds at most
# max(6 + 4, 20) = 20 positions -> 2 blocks of 16 -> 32 positions; 3 sequences -> 6 blocks.
args="bench --model $model --backend ref --batch 1,3 --tokens 4 --prompt-tokens 20 --context 6"
if ! $fp8d $args >"$tmp/out" 2>&1; then
  fail "bench exited $?: $(cat "$tmp/out")"
fi
grep -q '^KV pool: 6 blocks x 16 slots = .* (3 sequences x 32 positions)$' "$tmp/out" ||
  fail "no KV pool line with 6 blocks: $(cat "$tmp/out")"
# table rows: batch, total tokens (batch x 4)
awk '$1 == 1 && $2 == 4 {a = 1} $1 == 3 && $2 == 12 {b = 1} END {exit !(a && b)}' "$tmp/out" ||
  fail "table rows 1/4 and 3/12 missing: $(cat "$tmp/out")"
grep -q '^time to first token (20-token prompt' "$tmp/out" || fail "no TTFT line"

if ! $fp8d $args --json >"$tmp/json" 2>/dev/null; then
  fail "bench --json exited $?"
fi
python3 - "$tmp/json" <<'PY' || fail "--json output: $(cat "$tmp/json")"
import json, sys
d = json.load(open(sys.argv[1]))
rows = d["rows"]
assert [r["batch"] for r in rows] == [1, 3], rows
assert [r["tokens"] for r in rows] == [4, 12], rows
assert d["backend"] == "ref" and d["graphs"] is False and d["prompt_tokens"] == 20
assert all(r["tok_s"] > 0 and r["seconds"] > 0 for r in rows)
PY

$fp8d bench --model $model --backend ref --batch 0 >"$tmp/bad" 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q -- '--batch: 0 is outside 1..64' "$tmp/bad" || fail "--batch 0: rc $rc: $(cat "$tmp/bad")"

# without a GPU (or without CUDA in this build) the cuda backend says so; never ref instead
if ! command -v nvidia-smi >/dev/null 2>&1; then
  $fp8d bench --model $model --backend cuda --batch 1 --tokens 2 >"$tmp/cuda" 2>&1
  rc=$?
  [ $rc -eq 1 ] && grep -qE 'no CUDA device found|built without CUDA' "$tmp/cuda" ||
    fail "--backend cuda without a GPU: rc $rc: $(cat "$tmp/cuda")"
fi

[ $fails -eq 0 ] && echo "bench.sh: ok"
exit $((fails > 0))
