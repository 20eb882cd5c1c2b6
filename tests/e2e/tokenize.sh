#!/bin/sh
# fp8d tokenize on model directories holding only tokenizer files and config.json (no
# weights): encode, decode, --add-special and --chat (architecture from config.json).
# Expected ids and prompts are HF's (tests/golden fixtures).
set -eu
fp8d=${FP8D_BUILD:-build}/fp8d
cache=${FP8D_TOKENIZERS:-.cache/tokenizers}
for n in qwen3 gemma3; do
  if [ ! -s "$cache/$n/tokenizer.json" ]; then
    echo "tokenize.sh: MISSING $cache/$n/tokenizer.json; fetch the tokenizers with 'make tokenizers'" >&2
    exit 1
  fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/qwen3" "$tmp/gemma3"
cp "$cache/qwen3/tokenizer.json" "$cache/qwen3/tokenizer_config.json" "$tmp/qwen3/"
cp "$cache/gemma3/tokenizer.json" "$cache/gemma3/tokenizer_config.json" "$tmp/gemma3/"
echo '{"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}' >"$tmp/qwen3/config.json"
echo '{"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text"}' >"$tmp/gemma3/config.json"

check() { # what, got, want
  if [ "$2" != "$3" ]; then
    printf 'tokenize.sh: %s\n  want: %s\n  got:  %s\n' "$1" "$3" "$2" >&2
    exit 1
  fi
}

text='"Hello, world! How are you doing today?"'
got=$(printf "%s\n" "$text" | "$fp8d" tokenize --model "$tmp/qwen3" --jsonl)
check "qwen3 --jsonl" "$got" "[9707,11,1879,0,2585,525,498,3730,3351,30]"
got=$(printf "%s\n" "$text" | "$fp8d" tokenize --model "$tmp/gemma3" --jsonl --add-special)
check "gemma3 --jsonl --add-special" "$got" "[2,9259,236764,1902,236888,2088,659,611,3490,3124,236881]"
got=$(echo "9707 11 1879 0" | "$fp8d" tokenize --model "$tmp/qwen3" --decode)
check "qwen3 --decode" "$got" "Hello, world!"
got=$(echo "[2,9259,236764]" | "$fp8d" tokenize --model "$tmp/gemma3" --decode --jsonl --skip-special)
check "gemma3 --decode --jsonl --skip-special" "$got" '"Hello,"'

req='{"messages": [{"role": "system", "content": [{"type": "text", "text": "  Be terse.  \n"}]}, {"role": "user", "content": "  Tell me a joke.  "}], "add_generation_prompt": true, "enable_thinking": null}'
got=$(printf "%s\n" "$req" | "$fp8d" tokenize --model "$tmp/gemma3" --chat)
check "gemma3 --chat" "$got" '"<bos><start_of_turn>user\n  Be terse.  \n\n\nTell me a joke.<end_of_turn>\n<start_of_turn>model\n"'
req='{"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true, "enable_thinking": false}'
got=$(printf "%s\n" "$req" | "$fp8d" tokenize --model "$tmp/qwen3" --chat)
check "qwen3 --chat" "$got" '"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"'

# an architecture without a template: a clear error for --chat, plain encoding still works
echo '{"architectures": ["LlamaForCausalLM"]}' >"$tmp/qwen3/config.json"
if printf "%s\n" "$req" | "$fp8d" tokenize --model "$tmp/qwen3" --chat 2>"$tmp/err"; then
  echo "tokenize.sh: --chat on LlamaForCausalLM should fail" >&2
  exit 1
fi
grep -q "LlamaForCausalLM" "$tmp/err" || { echo "tokenize.sh: error does not name the architecture" >&2; exit 1; }
got=$(printf "%s\n" "$text" | "$fp8d" tokenize --model "$tmp/qwen3" --jsonl)
check "qwen3 --jsonl with an unsupported chat architecture" "$got" "[9707,11,1879,0,2585,525,498,3730,3351,30]"

# invalid input: one error line on stderr, output stays aligned, exit status 1
printf '"ok"\n[1]\n"ok"\n' | "$fp8d" tokenize --model "$tmp/qwen3" --jsonl >"$tmp/out" 2>"$tmp/err" && {
  echo "tokenize.sh: bad line should give exit status 1" >&2
  exit 1
}
check "aligned output" "$(cat "$tmp/out" | tr '\n' ' ')" "[562] null [562] "
grep -q "line 2" "$tmp/err" || { echo "tokenize.sh: error does not name line 2" >&2; exit 1; }
echo "tokenize.sh: ok"
