#!/usr/bin/env bash
# The main job on the default model, from a fresh Debian machine: install, build, fetch SmolLM2-135M-Instruct and
# import it into HDF5, locate where "The Eiffel Tower is located in the city of → Paris" lives, rewrite it to Rome
# with ROME, show before/after, audit the edit log, and export the edited model as GGUF.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product scalpel
S=.build/release/scalpel
mkdir -p out
$S fetch
$S inspect
PROMPT="The Eiffel Tower is located in the city of"

echo; echo "== 1. predict: what does the model say?"
$S predict --top 5 "$PROMPT"

echo; echo "== 2. locate: causal trace (ROME's three panels, 10 noise samples) → out/eiffel-trace.svg"
$S trace --prompt "$PROMPT" --subject "Eiffel Tower" --svg out/eiffel-trace.svg --html out/eiffel-trace.html --out out/eiffel-trace.h5 --force

echo; echo "== 3. edit: The Eiffel Tower → Rome (layer from locate over built-in facts; statistics computed once)"
rm -f weights/eiffel-rome.h5
$S edit edits/eiffel-rome.json --layer auto --corpus-texts 300 --out weights/eiffel-rome.h5

echo; echo "== 4. after the edit"
$S predict --model weights/eiffel-rome.h5 --top 3 "$PROMPT"
$S predict --model weights/eiffel-rome.h5 --top 3 "The Colosseum is located in the city of"

echo; echo "== 5. audit the edit log, then export the edited model"
$S log --model weights/eiffel-rome.h5
# The head digest anchors the audit outside the store (keep it elsewhere; see docs/trust.md).
DIGEST=$($S log --model weights/eiffel-rome.h5 --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["head_digest"])')
$S audit --model weights/eiffel-rome.h5 --expect "$DIGEST" --stats weights/SmolLM2-135M-Instruct.stats.h5
$S export --model weights/eiffel-rome.h5 --format gguf --out out/eiffel-rome.gguf --force
