#!/usr/bin/env bash
# The main job: prune SmolLM2-135M (GGUF) to 50% unstructured sparsity with Wanda masks, once
# with the mask alone and once with exact reconstruction of every layer, and compare perplexity
# on held-out text (the Jargon File) against the dense model. Fetches the assets if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
model=assets/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] && [ -d assets/fortunes ] && [ -f assets/jargon.txt.gz ] || ./scripts/fetch-assets.sh
cargo build --release --quiet -p optima-cli
bin=./target/release/optima
mkdir -p out
eval_args=(--start-char 7697 --windows 16 --window-len 512)

echo "dense model: perplexity" >&2
$bin perplexity --model "$model" --text assets/jargon.txt.gz "${eval_args[@]}" --json > out/demo-dense.json
for solver in none direct; do
  echo "wanda 50% + solver $solver: pruning 30 blocks x 7 layers" >&2
  $bin prune --model "$model" --calib assets/fortunes --pattern 0.5 --masker wanda --solver "$solver" \
    --out "out/smollm2-wanda50-$solver.gguf" --report "out/demo-$solver-report.json" \
    --eval assets/jargon.txt.gz "${eval_args[@]}" --json > "out/demo-$solver.json"
done
python3 - <<'PY'
import json
dense = json.load(open("out/demo-dense.json"))
rows = [("dense", dense["ppl"], None, None)]
for solver, label in [("none", "Wanda 50%, mask only"), ("direct", "Wanda 50% + exact reconstruction")]:
    r = json.load(open(f"out/demo-{solver}.json"))
    rows.append((label, r["perplexity"]["ppl"], r["mean_error_after"], r["seconds"]["pruning"]))
print(f"SmolLM2-135M on the Jargon File ({dense['windows']} windows of {dense['window_len']} tokens, {dense['tokens_scored']} scored)")
print("| model | perplexity | mean layer error E | pruning seconds |")
print("|---|---:|---:|---:|")
for label, ppl, e, s in rows:
    print(f"| {label} | {ppl:.2f} | {'' if e is None else f'{e:.4f}'} | {'' if s is None else f'{s:.0f}'} |")
PY
