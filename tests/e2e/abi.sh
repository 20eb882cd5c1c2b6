#!/bin/sh
# libfp8d.so exports exactly the calls that client/fp8d.h declares: nothing internal
# (fp8_*, philox, numeric helpers) leaks into users' namespace, and nothing declared is
# missing.
set -u
lib=${FP8D_BUILD:-build}/libfp8d.so
[ -f "$lib" ] || { echo "FAIL: no $lib"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nm -D --defined-only "$lib" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | sort >"$tmp/exported"
grep -o '\bfp8d_[a-z_]*(' client/fp8d.h | tr -d '(' | sort -u >"$tmp/declared"
if ! cmp -s "$tmp/exported" "$tmp/declared"; then
  echo "FAIL: exported functions differ from fp8d.h's (< exported, > declared):"
  diff "$tmp/exported" "$tmp/declared"
  exit 1
fi
echo "abi: $(wc -l <"$tmp/exported") functions exported, all declared in fp8d.h"
