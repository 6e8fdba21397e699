#!/usr/bin/env bash
# The main job: prune SmolLM2-135M (GGUF) to 50% unstructured sparsity with the published recipes
# (Wanda, SparseGPT, run by the same code) and with optima's default pipeline, and compare
# perplexity against the dense model on two texts no setting was chosen on: the Jargon File and
# the GNU Coding Standards. Fetches the assets if missing. About 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
model=assets/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] && [ -d assets/fortunes ] && [ -f assets/jargon.txt.gz ] && [ -f assets/gnu-standards.txt.gz ] \
  || ./scripts/fetch-assets.sh
cargo build --release --quiet -p optima-cli
bin=./target/release/optima
mkdir -p out
texts=(--eval assets/jargon.txt.gz --eval assets/gnu-standards.txt.gz --start-char 7697 --start-char 10000
  --windows 16 --window-len 512)

echo "dense model: perplexity" >&2
$bin perplexity --model "$model" --text assets/jargon.txt.gz --start-char 7697 --windows 16 --window-len 512 --json > out/demo-dense.json
$bin perplexity --model "$model" --text assets/gnu-standards.txt.gz --start-char 10000 --windows 16 --window-len 512 --json > out/demo-dense-gnu.json
for run in "wanda|--preset wanda" "sparsegpt|--preset sparsegpt" "default|"; do
  tag="${run%%|*}"
  read -r -a flags <<<"${run#*|}"
  echo "$tag: pruning 30 blocks x 7 layers to 50%" >&2
  $bin prune --model "$model" --calib assets/fortunes --pattern 0.5 "${flags[@]}" \
    --out "out/smollm2-50-$tag.gguf" --report "out/demo-$tag-report.json" "${texts[@]}" --json > "out/demo-$tag.json"
done
python3 - <<'PY'
import json
dense = [json.load(open("out/demo-dense.json"))["ppl"], json.load(open("out/demo-dense-gnu.json"))["ppl"]]
print("SmolLM2-135M at 50% unstructured, perplexity (16 windows of 512 tokens per text)")
print("| model | Jargon File | GNU Coding Standards | mean layer error E | pruning seconds |")
print("|---|---:|---:|---:|---:|")
print(f"| dense | {dense[0]:.2f} | {dense[1]:.2f} | | |")
for tag, label in [("wanda", "--preset wanda"), ("sparsegpt", "--preset sparsegpt"), ("default", "optima default")]:
    r = json.load(open(f"out/demo-{tag}.json"))
    p = [e["perplexity"]["ppl"] for e in r["evaluations"]]
    e = r["mean_error_after"]  # null: not measured (Wanda's mask alone accumulates only the diagonal)
    e = "–" if e is None else f"{e:.4f}"
    print(f"| {label} | {p[0]:.2f} | {p[1]:.2f} | {e} | {r['seconds']['pruning']:.0f} |")
PY
