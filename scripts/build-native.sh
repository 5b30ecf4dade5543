#!/usr/bin/env bash
# Builds the gateway's one native helper (src/native/tcp-quickack.c, N-API)
# into build/native/. Needs a C compiler and Node's headers (Debian: gcc; the
# headers ship with Node under PREFIX/include/node). Without them the build
# goes on and the gateway runs without the helper, saying so in its log.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/native/tcp-quickack.node
src=src/native/tcp-quickack.c
include="$(dirname "$(dirname "$(node -p process.execPath)")")/include/node"
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1 || [[ ! -f $include/node_api.h ]]; then
  echo "build-native: skipped ($cc or $include/node_api.h missing): the gateway will run without TCP_QUICKACK" >&2
  exit 0
fi
[[ -f $out && $out -nt $src ]] && exit 0
mkdir -p build/native
"$cc" -O2 -Wall -Werror -shared -fPIC -I"$include" -o "$out.tmp" "$src"
mv "$out.tmp" "$out"
