#!/bin/sh
# Checks (and, with "install" as root, installs) the Debian packages fp8d builds against.
# Usage: tools/deps.sh check|install
# Prints one line per missing package; exits non-zero when something is still missing.
set -u
mode=${1:-check}

missing=""
need_pc() { # pkg-config name, Debian package
  pkg-config --exists "$1" 2>/dev/null || missing="$missing $2"
}
need_cmd() { # command, Debian package
  command -v "$1" >/dev/null 2>&1 || missing="$missing $2"
}

need_cmd pkg-config pkg-config
need_cmd cc gcc
need_cmd clang clang
need_cmd npm npm
# libFuzzer's runtime is only a Recommends of clang: check that a fuzz target links.
if command -v clang >/dev/null 2>&1; then
  echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' |
    clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1 || missing="$missing libclang-rt-dev"
fi
if command -v pkg-config >/dev/null 2>&1; then
  need_pc libzmq libzmq3-dev
  # msgpack-c is called msgpack-c (Ubuntu 24.04, Debian 13) or msgpack (Debian 12).
  pkg-config --exists msgpack-c 2>/dev/null || pkg-config --exists msgpack 2>/dev/null ||
    missing="$missing libmsgpack-dev"
  need_pc libsystemd libsystemd-dev
  need_pc cmocka libcmocka-dev
  need_pc jansson libjansson-dev
  need_pc libpcre2-8 libpcre2-dev
  need_pc libutf8proc libutf8proc-dev
fi

[ -z "$missing" ] && exit 0

if [ "$mode" = install ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "deps: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || exit 1
  pkgs=""
  for p in $missing; do
    # Newer releases renamed libmsgpack-dev; take whichever the archive has.
    if [ "$p" = libmsgpack-dev ] && ! apt-cache show libmsgpack-dev >/dev/null 2>&1; then
      p=libmsgpack-c-dev
    fi
    pkgs="$pkgs $p"
  done
  apt-get install -y -q $pkgs >/dev/null || exit 1
  exec "$0" check
fi

echo "fp8d: missing build dependencies. Install them with:" >&2
echo "  sudo apt-get install$missing" >&2
exit 1
