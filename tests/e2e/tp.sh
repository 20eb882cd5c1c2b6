#!/bin/sh
# --tensor-parallel-size through the commands on the ref backend (N host threads joined
# by the ref group's all-reduce; the same engine code the cuda ranks run): `fp8d logits`
# of the tiny Qwen3, Gemma3 and Qwen3-MoE checkpoints at 2 and 4 ranks matches 1 rank
# (bit-identical to no group) within the fp32 reassociation bound of
# tests/test-tp-sim.c, `fp8d run` and `fp8d serve` generate the same ids at 1 and 2
# ranks, and sizes
# the plan or the machine cannot serve fail with a line naming them.
set -u
fp8d=${FP8D_BUILD:-build}/fp8d
model=tests/golden/models/qwen3-tiny
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

toks=1,17,99,3,250,7,64,128,5,200
for name in qwen3-tiny gemma3-tiny qwen3-moe-tiny; do
  dir=tests/golden/models/$name
  for n in 1 2 4; do
    $fp8d logits --model $dir --backend ref --tensor-parallel-size $n --tokens $toks \
      --out "$tmp/tp$n" >"$tmp/log$n" 2>&1 || fail "$name logits TP=$n: $(cat "$tmp/log$n")"
  done
  $fp8d logits --model $dir --backend ref --tokens $toks --out "$tmp/plain" >/dev/null 2>&1 ||
    fail "$name logits without --tensor-parallel-size"
  python3 - "$tmp" "$name" <<'PY' || fail "$name: TP logits differ"
import struct, sys
d, model = sys.argv[1], sys.argv[2]
def load(name):
    b = open(f"{d}/{name}", "rb").read()
    return struct.unpack(f"<{len(b) // 4}f", b)
plain, one = load("plain"), load("tp1")
assert plain == one, f"{model}: TP=1 is not bit-identical to the unsplit model"
vocab = 256
for n in (2, 4):
    got = load(f"tp{n}")
    assert len(got) == len(plain)
    for r in range(len(plain) // vocab):
        row, g = plain[r * vocab:(r + 1) * vocab], got[r * vocab:(r + 1) * vocab]
        bound = 2e-5 * (1 + max(abs(x) for x in row))
        worst = max(abs(a - b) for a, b in zip(row, g))
        assert worst <= bound, (model, n, r, worst, bound)
PY
done

# One sequence (fp8d run --tokens), then a batch through the scheduler (--requests; the
# second request samples at temperature 1 with a seed: the host sampler draws once from
# the gathered logits, so TP=2 must draw the same ids).
printf '%s\n' '{"id": "a", "tokens": [1, 17, 99], "max_tokens": 12, "temperature": 0}' \
  '{"id": "b", "tokens": [5, 6], "max_tokens": 12, "temperature": 1, "seed": 3}' >"$tmp/req.jsonl"
for n in 1 2; do
  $fp8d run --model $model --backend ref --tensor-parallel-size $n --temperature 0 \
    --max-tokens 16 --ignore-eos --tokens 1,17,99,3 >"$tmp/run$n" 2>"$tmp/err$n" ||
    fail "run TP=$n: $(cat "$tmp/err$n")"
  $fp8d run --model $model --backend ref --tensor-parallel-size $n --requests "$tmp/req.jsonl" \
    >"$tmp/batch$n" 2>"$tmp/berr$n" || fail "run --requests TP=$n: $(cat "$tmp/berr$n")"
done
[ -s "$tmp/run1" ] && cmp -s "$tmp/run1" "$tmp/run2" ||
  fail "run greedy ids differ at TP=2: $(cat "$tmp/run1") vs $(cat "$tmp/run2")"
python3 - "$tmp/batch1" "$tmp/batch2" <<'PY' || fail "--requests differ at TP=2"
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
ta = sorted((r["id"], r["tokens"]) for r in a)
tb = sorted((r["id"], r["tokens"]) for r in b)
assert len(ta) == 2 and all(len(t) == 12 for _, t in ta), ta
assert ta == tb, (ta, tb)
PY

# fp8d serve with 2 ranks: one endpoint; a seeded generation equals `fp8d run` at 1 rank.
S="--temperature 0.9 --top-k 50 --seed 7 --max-tokens 12 --ignore-eos"
$fp8d run --synthetic qwen3-tiny --backend ref $S --tokens 1,17,99,3 >"$tmp/want" 2>&1 ||
  fail "run --synthetic: $(cat "$tmp/want")"
$fp8d serve --synthetic qwen3-tiny --backend ref --tensor-parallel-size 2 \
  --endpoint "ipc://$tmp/s.sock" 2>"$tmp/serve.log" &
pid=$!
# the client's request waits (bounded by --timeout) until the daemon has bound the socket
${FP8D_BUILD:-build}/fp8 --endpoint "ipc://$tmp/s.sock" --timeout 60000 generate \
  --tokens 1,17,99,3 $S --json >"$tmp/got" 2>"$tmp/gerr" || fail "serve TP=2: $(cat "$tmp/gerr")"
kill $pid
wait $pid || fail "serve TP=2 exited $?: $(cat "$tmp/serve.log")"
python3 - "$tmp/want" "$tmp/got" <<'PY' || fail "serve TP=2 tokens differ: $(cat "$tmp/got") vs $(cat "$tmp/want")"
import json, sys
want = [int(x) for x in open(sys.argv[1]).read().split()]
got = json.load(open(sys.argv[2]))["tokens"]
assert len(want) == 12 and got == want, (got, want)
PY

expect_fail() { # needle, args...
  needle=$1
  shift
  $fp8d "$@" >"$tmp/bad" 2>&1
  rc=$?
  [ $rc -ne 0 ] && grep -q -- "$needle" "$tmp/bad" || fail "$*: rc $rc: $(cat "$tmp/bad")"
}
expect_fail "tensor-parallel-size 3 does not divide num_attention_heads 4" \
  logits --model $model --backend ref --tensor-parallel-size 3 --tokens 1 --out "$tmp/x"
expect_fail "--tensor-parallel-size '9': expected an integer in \[1, 8\]" \
  bench --model $model --backend ref --tensor-parallel-size 9
expect_fail "--tensor-parallel-size '0'" \
  run --model $model --backend ref --tensor-parallel-size 0 "hi"
# No GPU here (or no CUDA in this build): the cuda group says so; never ref instead.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  expect_fail "no CUDA device found\|built without CUDA" \
    bench --model $model --backend cuda --tensor-parallel-size 2 --batch 1 --tokens 2
fi

[ $fails -eq 0 ] && echo "tp.sh: ok"
exit $((fails > 0))
