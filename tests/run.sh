#!/bin/sh
# Runs the CPU test programs given on the command line, then every tests/e2e/*.sh script,
# each under a time bound, and closes with one summary line.
# Usage: tests/run.sh BUILD_DIR [test binaries...]
# Tests run from the repository root; they find the build in $FP8D_BUILD and the
# tokenizer cache in $FP8D_TOKENIZERS.
set -u
build=$1
shift
export FP8D_BUILD=$build
export FP8D_TOKENIZERS=${FP8D_TOKENIZERS:-.cache/tokenizers}
limit=${FP8D_TEST_TIMEOUT:-600}
passed=0
failed=0
failures=""

run_one() { # name, command...
  name=$1
  shift
  echo "== $name"
  if timeout "$limit" "$@"; then
    passed=$((passed + 1))
  else
    rc=$?
    [ "$rc" = 124 ] && echo "$name: timed out after ${limit}s"
    failed=$((failed + 1))
    failures="$failures $name"
  fi
}

for t in "$@"; do
  run_one "$(basename "$t")" "$t"
done
for s in tests/e2e/*.sh; do
  [ -e "$s" ] || continue
  run_one "$(basename "$s")" sh "$s"
done

[ -n "$failures" ] && echo "failed:$failures"
echo "tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
