#!/usr/bin/env bash
# The core crate stays lean for `cargo add optima`: none of the CLI's or the LLM pipeline's
# dependencies, and at most 95 crates in its normal dependency tree (the crate itself included).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=95
tree=$(cargo tree -p optima -e normal --prefix none --format '{p}' | sed 's/ (\*)$//; s/ (proc-macro)$//' | sort -u)
count=$(printf '%s\n' "$tree" | grep -c .)
bad=$(printf '%s\n' "$tree" | grep -E '^(clap|indicatif|fancy-regex|flate2|memmap2|safetensors|serde_json) ' || true)
if [ -n "$bad" ]; then
  echo "core dependencies: the core must not depend on: $bad"; exit 1
fi
if [ "$count" -gt "$limit" ]; then
  echo "core dependencies: $count crates in cargo tree -p optima -e normal, more than $limit"; exit 1
fi
echo "core dependencies: $count crates (at most $limit), none of clap, indicatif, fancy-regex, flate2, memmap2, safetensors, serde_json: ok"
