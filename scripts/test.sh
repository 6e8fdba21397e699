#!/usr/bin/env bash
# Runs optima's whole test suite on a fresh machine: system packages first, then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
