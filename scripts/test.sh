#!/usr/bin/env bash
# Runs optima's whole test suite on a fresh machine: system packages and the real model's assets
# first (the tests that read SmolLM2 fail without them, they never skip), then cargo test, then the
# Python package's tests (scripts/test-python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/fetch-assets.sh
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
./scripts/test-python.sh
