#!/usr/bin/env bash
# Writes docs/results.md: SmolLM2-135M pruned with magnitude, Wanda and SparseGPT masks, each with
# its own update (SparseGPT) or none, and with exact reconstruction; 50% unstructured and 2:4.
# Perplexity on the Jargon File and the mean layer error E. About an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
model=assets/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] && [ -d assets/fortunes ] && [ -f assets/jargon.txt.gz ] || ./scripts/fetch-assets.sh
cargo build --release --quiet -p optima-cli
bin=./target/release/optima
mkdir -p out/results
eval_args=(--start-char 7697 --windows 16 --window-len 512)
$bin perplexity --model "$model" --text assets/jargon.txt.gz "${eval_args[@]}" --json > out/results/dense.json
# Most informative runs first; each run is skipped when its result exists, and the table is
# rewritten after every run, so an interrupted script can simply be started again.
runs=(
  "wanda 0.5 none" "wanda 0.5 direct" "wanda 2:4 none" "wanda 2:4 direct"
  "sparsegpt 0.5 sparsegpt" "sparsegpt 0.5 direct" "sparsegpt 2:4 sparsegpt" "sparsegpt 2:4 direct"
  "magnitude 0.5 none" "magnitude 0.5 direct" "magnitude 2:4 none" "magnitude 2:4 direct"
)
for run in "${runs[@]}"; do
  read -r masker pattern solver <<<"$run"
  tag="${masker}-${pattern/:/of}-${solver}"
  if [ ! -f "out/results/$tag.json" ]; then
    echo "== $tag" >&2
    $bin prune --model "$model" --calib assets/fortunes --pattern "$pattern" --masker "$masker" --solver "$solver" \
      --report "out/results/$tag-layers.json" --eval assets/jargon.txt.gz "${eval_args[@]}" --json > "out/results/$tag.tmp"
    mv "out/results/$tag.tmp" "out/results/$tag.json"
  fi
  ./scripts/results-table.py > docs/results.md
done
cat docs/results.md
