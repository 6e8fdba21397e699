#!/usr/bin/env bash
# Installs the system packages optima's tests need (Debian): OpenBLAS/LAPACK for the independent
# oracle the exact solver is checked against, and pkg-config to find it. Idempotent.
set -euo pipefail
missing=()
for pkg in libopenblas-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}"
fi
