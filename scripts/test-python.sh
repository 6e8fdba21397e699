#!/usr/bin/env bash
# The Python package's tests: a fresh venv in target/python-venv, `pip install ./python` (maturin
# builds the wheel as its PEP 517 backend), then pytest, whose CLI-equality tests run the release
# `optima` binary built here first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p optima-cli
venv=target/python-venv
python3 -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
start=$(date +%s)
"$venv/bin/python" -m pip install --quiet ./python pytest
echo "python: wheel built and installed in $(($(date +%s) - start)) s"
OPTIMA_BIN="$PWD/target/release/optima" "$venv/bin/python" -m pytest -q python/tests "$@"
