#!/usr/bin/env bash
# Installs what Scalpel needs on a fresh Debian machine (run as root or with sudo): the C libraries
# (OpenBLAS, LAPACKE, HDF5), HDF5 command-line tools, pkg-config and Python's pip (used only to fetch the
# default model). Idempotent: does nothing when everything is present.
set -euo pipefail
need=()
for pkg in libopenblas-dev liblapacke-dev libhdf5-dev hdf5-tools pkg-config zlib1g-dev libdeflate0 unzip; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1 || need+=(python3 python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v swift >/dev/null 2>&1 || { echo "setup: the Swift 6 toolchain is required (swift not on PATH)" >&2; exit 1; }
