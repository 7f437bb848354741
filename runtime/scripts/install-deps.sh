#!/usr/bin/env bash
# System packages the C runtime needs to build and be tested (Debian/Ubuntu): CMake, nlohmann-json
# (manifest/vocab/index JSON), OpenSSL (SHA-256), libpng (the example), clang + its runtime (the
# libFuzzer targets). Installs what is missing when run as root; otherwise says what to install and
# exits 0, so that `pytest` still runs (the C tests then skip with that reason, except under CI=true,
# where they fail).
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
[ -f /usr/include/nlohmann/json.hpp ] || need+=(nlohmann-json3-dev)
[ -f /usr/include/openssl/evp.h ] || need+=(libssl-dev)
[ -f /usr/include/png.h ] || need+=(libpng-dev)
command -v clang++ >/dev/null || need+=(clang)
ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-dev)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "install-deps: apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "install-deps: missing ${need[*]}; install them (e.g. sudo apt-get install ${need[*]}) to build libtgir" >&2
fi
