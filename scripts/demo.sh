#!/usr/bin/env bash
# The main job on the default model, from a fresh Debian machine: install, build, fetch SmolLM2-135M-Instruct,
# import it into HDF5, then locate and edit a fact (stages are added as they land; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product scalpel
S=.build/release/scalpel
$S fetch
$S inspect
echo
echo "== predict: what does the model say?"
$S predict --top 5 "The Eiffel Tower is located in the city of"
