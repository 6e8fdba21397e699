#!/usr/bin/env bash
# The main job until the LLM pipeline lands: generate an LLM-like 576×1536 layer (SmolLM2's MLP
# shape), choose Wanda masks at 50% and 2:4, reconstruct exactly, and report.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
mkdir -p out
./target/release/optima generate --shape 576x1536 --seed 0 --out out/layer.safetensors
for pattern in 0.5 2:4; do
  ./target/release/optima solve --problem out/layer.safetensors --masker wanda --pattern "$pattern" \
    --out "out/layer-${pattern/:/of}.safetensors"
done
