#!/bin/sh
# fp8d mkmodel + fp8d inspect on every tiny preset, with the real tokenizers: the summary
# must show the dimensions and parameter counts worked out below by hand from each preset's
# config, and damaged checkpoints must fail with a clear line (exit 1, never a crash).
set -u
fp8d=${FP8D_BUILD:-build}/fp8d
tokenizers=${FP8D_TOKENIZERS:-.cache/tokenizers}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

for t in qwen3 gemma3; do
  [ -f "$tokenizers/$t/tokenizer.json" ] || { echo "no $t tokenizer in $tokenizers: run make tokenizers"; exit 1; }
done

# expect_line FILE TEXT: FILE has a line that is exactly TEXT.
expect_line() {
  grep -qxF "$2" "$1" || fail "$1: no line '$2'; got:$(printf '\n'; cat "$1")"
}

# Parameters of a decoder layer's attention and norms (Qwen3: 2 norms + q/k norms).
attn() { # hidden heads kv_heads head_dim
  echo $(( $1 * $2 * $4 * 2 + $1 * $3 * $4 * 2 + 2 * $4 ))
}

# qwen3-tiny: vocab 151680 (tokenizer ids reach 151668; 151669 rounded up to 64),
# hidden 64, intermediate 128, 2 layers, 4 heads, 2 kv heads, head_dim 32, tied.
V=151680 H=64 I=128
layer=$(( $(attn 64 4 2 32) + 2 * H + 3 * H * I ))
qwen3_params=$(( V * H + 2 * layer + H ))
# qwen3-moe-tiny: 3 layers (0 and 2 sparse, 1 dense), 4 heads, 2 kv, head_dim 16,
# 8 experts of 32 and a router each, untied lm_head.
a=$(( $(attn 64 4 2 16) + 2 * H ))
sparse=$(( a + 8 * H + 8 * 3 * H * 32 ))
dense=$(( a + 3 * H * I ))
moe_params=$(( 2 * V * H + 2 * sparse + dense + H ))
# gemma3-tiny: vocab 262208 (ids reach 262144), 4 layers, 4 heads, 2 kv, head_dim 32,
# four norms a layer, tied.
V=262208
layer=$(( $(attn 64 4 2 32) + 4 * H + 3 * H * I ))
gemma3_params=$(( V * H + 4 * layer + H ))

check_preset() { # arch preset arch_name layers n_tensors params vocab
  out=$tmp/$2
  if ! "$fp8d" mkmodel --arch "$1" --preset "$2" --out "$out" --seed 7 >"$tmp/$2.mk" 2>&1; then
    fail "mkmodel $2: $(cat "$tmp/$2.mk")"
    return
  fi
  "$fp8d" inspect --model "$out" >"$tmp/$2.out" 2>"$tmp/$2.err"
  rc=$?
  [ "$rc" = 0 ] || fail "inspect $2 exited $rc: $(cat "$tmp/$2.err")"
  expect_line "$tmp/$2.out" "architecture:  $3"
  expect_line "$tmp/$2.out" "layers:        $4"
  expect_line "$tmp/$2.out" "vocab:         $7"
  expect_line "$tmp/$2.out" "tensors:       $5 in 1 file"
  expect_line "$tmp/$2.out" "bytes BF16:    $(( $6 * 2 )) in $5 tensors"
  expect_line "$tmp/$2.out" "parameters:    $6"
  expect_line "$tmp/$2.out" "quantization:  BF16 weights, quantized to fp8 e4m3 at load"
  expect_line "$tmp/$2.out" "status:        ok"
}

# Tensors: embedding + 11 a dense Qwen3 layer (+ 1 router + 3 per expert, - 3 dense MLP,
# in a sparse one) + final norm (+ lm_head); Gemma3 13 a layer.
check_preset qwen3 qwen3-tiny Qwen3ForCausalLM 2 $((1 + 2 * 11 + 1)) "$qwen3_params" 151680
check_preset qwen3_moe qwen3-moe-tiny Qwen3MoeForCausalLM 3 $((1 + 2 * (8 + 1 + 24) + 11 + 2)) "$moe_params" 151680
check_preset gemma3 gemma3-tiny Gemma3ForCausalLM 4 $((1 + 4 * 13 + 1)) "$gemma3_params" 262208
expect_line "$tmp/gemma3-tiny.out" "layer pattern: SSGS  (S sliding window of 8, G global)"
expect_line "$tmp/qwen3-moe-tiny.out" "layer pattern: MDM  (M sparse MoE, D dense MLP)"

# Sharded, f32: the same parameters in 4-byte floats across several files.
"$fp8d" mkmodel --arch qwen3 --out "$tmp/sharded" --dtype f32 --shard-size 8M >/dev/null 2>&1 ||
  fail "mkmodel sharded"
"$fp8d" inspect --model "$tmp/sharded" >"$tmp/sharded.out" 2>&1 || fail "inspect sharded: $(cat "$tmp/sharded.out")"
expect_line "$tmp/sharded.out" "bytes F32:     $(( qwen3_params * 4 )) in 24 tensors"
grep -q "^tensors:       24 in [2-9] files$" "$tmp/sharded.out" || fail "sharded: $(grep tensors: "$tmp/sharded.out")"

# Refuses to overwrite; needs its tokenizer.
"$fp8d" mkmodel --arch qwen3 --out "$tmp/qwen3-tiny" >/dev/null 2>"$tmp/again.err" && fail "mkmodel overwrote a checkpoint"
grep -q "already holds a checkpoint" "$tmp/again.err" || fail "overwrite message: $(cat "$tmp/again.err")"
FP8D_TOKENIZERS=$tmp/none "$fp8d" mkmodel --arch gemma3 --out "$tmp/x" >/dev/null 2>"$tmp/tok.err" && fail "mkmodel without tokenizer"
grep -q "run \`make tokenizers\`" "$tmp/tok.err" || fail "tokenizer message: $(cat "$tmp/tok.err")"

# Damaged checkpoints: exit 1 with the defect named, never a signal.
expect_defect() { # dir text...
  dir=$1
  shift
  "$fp8d" inspect --model "$dir" >/dev/null 2>"$tmp/d.err"
  rc=$?
  [ "$rc" = 1 ] || fail "inspect $dir exited $rc (want 1): $(cat "$tmp/d.err")"
  for want in "$@"; do
    grep -qF "$want" "$tmp/d.err" || fail "inspect $dir: no '$want' in: $(cat "$tmp/d.err")"
  done
}
cp -r "$tmp/qwen3-tiny" "$tmp/cut"
truncate -s -1000 "$tmp/cut/model.safetensors"
expect_defect "$tmp/cut" "run past the end of the data area"
cp -r "$tmp/qwen3-tiny" "$tmp/layers"
sed -i 's/"num_hidden_layers": 2/"num_hidden_layers": 3/' "$tmp/layers/config.json"
expect_defect "$tmp/layers" "missing tensor model.layers.2.self_attn.q_proj.weight (shape [128, 64])"
cp -r "$tmp/qwen3-tiny" "$tmp/vocab"
sed -i 's/"vocab_size": 151680/"vocab_size": 151650/' "$tmp/vocab/config.json"
expect_defect "$tmp/vocab" "wrong shape for model.embed_tokens.weight: got [151680, 64], config needs [151650, 64]" \
  "tokenizer.json has ids up to 151668, beyond vocab_size 151650"
mkdir "$tmp/junk"
head -c 4096 /dev/urandom >"$tmp/junk/model.safetensors"
echo '{"architectures": ["LlamaForCausalLM"]}' >"$tmp/junk/config.json"
expect_defect "$tmp/junk" "unsupported architecture \"LlamaForCausalLM\""
expect_defect "$tmp/nothing" "config.json: No such file or directory"

"$fp8d" inspect --help | grep -q "usage: fp8d inspect --model DIR" || fail "inspect --help"
"$fp8d" mkmodel --help | grep -q "usage: fp8d mkmodel" || fail "mkmodel --help"
"$fp8d" inspect >/dev/null 2>&1
[ $? = 2 ] || fail "inspect without --model should exit 2"

[ "$fails" = 0 ] && echo "inspect.sh: ok"
[ "$fails" = 0 ]
