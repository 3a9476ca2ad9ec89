#!/usr/bin/env bash
# One command for the whole test suite on a fresh Debian machine: installs the system packages, fetches the
# default model if missing, installs the Python readers used by the interoperability tests (h5py, gguf),
# then runs `swift test` (release build: the model tests run real forward passes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-model.sh
# Independent readers used by the interoperability tests (skipped, not failed, when unavailable).
PY_READERS="h5py gguf numpy safetensors tokenizers"
python3 -c "import h5py, gguf, numpy, safetensors, tokenizers" 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check $PY_READERS 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages $PY_READERS \
  || echo "test: some Python readers are unavailable; their interoperability tests will be skipped" >&2
swift build -c release -Xswiftc -enable-testing --build-tests
# The model tests read both the GGUF and its imported HDF5 store.
.build/release/scalpel fetch >/dev/null
swift test -c release -Xswiftc -enable-testing --skip-build --disable-swift-testing "$@"
