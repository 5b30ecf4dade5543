#!/usr/bin/env bash
# Regenerates src/gen/ from proto/ with protoc + ts-proto. The output is
# committed; CI regenerates it and fails when the result differs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "gen: protoc not found (apt-get install -y protobuf-compiler)" >&2; exit 1; }
rm -rf src/gen
mkdir -p src/gen
protoc \
  -I proto \
  --plugin=protoc-gen-ts_proto=node_modules/.bin/protoc-gen-ts_proto \
  --ts_proto_out=src/gen \
  --ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,env=node,useOptionals=messages,oneof=unions-value,importSuffix=.js,forceLong=number,useExactTypes=false \
  $(find proto -name '*.proto' | sort)
