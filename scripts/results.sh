#!/usr/bin/env bash
# Writes docs/results.md and docs/perplexity-vs-sparsity.png: SmolLM2-135M pruned by the published
# recipes (--preset, run by the same code) and by optima's levers alone and combined, at 50%, 2:4
# and a sparsity sweep. Every run is evaluated on two texts: the Jargon File (the protocol) and the
# GNU Coding Standards (a second text nothing was tuned on). Hours on 2 cores: each run is skipped
# when its result exists and the table is rewritten after every run, so an interrupted script can
# simply be started again; `./scripts/results.sh quick` runs only the 50% and 2:4 rows, and
# `./scripts/results.sh only TAG...` only the planned runs named (then the plot, not the table).
set -euo pipefail
cd "$(dirname "$0")/.."
model=assets/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] && [ -d assets/fortunes ] && [ -f assets/jargon.txt.gz ] && [ -f assets/gnu-standards.txt.gz ] \
  || ./scripts/fetch-assets.sh
cargo build --release --quiet -p optima-cli
bin=./target/release/optima
out=out/results
mkdir -p "$out"
texts=(--eval assets/jargon.txt.gz --eval assets/gnu-standards.txt.gz --start-char 7697 --start-char 10000
  --windows 16 --window-len 512 --calib-eval-windows 16)
for t in "assets/jargon.txt.gz 7697 dense" "assets/gnu-standards.txt.gz 10000 dense-gnu"; do
  read -r text start tag <<<"$t"
  [ -f "$out/$tag.json" ] || $bin perplexity --model "$model" --text "$text" --start-char "$start" \
    --windows 16 --window-len 512 --json > "$out/$tag.json"
done
# The dense model on the held-out calibration windows: a prune of no block, nothing pruned.
[ -f "$out/dense-calib.json" ] || $bin prune --model "$model" --calib assets/fortunes --pattern 0.5 --preset wanda \
  --max-blocks 0 --calib-eval-windows 16 --window-len 512 --json > "$out/dense-calib.json"
# tag | flags (the default pipeline is no flags at all). Most informative first.
runs=(
  "sparsegpt-0.5|--preset sparsegpt --pattern 0.5"
  "default-0.5|--pattern 0.5"
  "norefine-0.5|--pattern 0.5 --refine 0"
  "wanda-0.5|--preset wanda --pattern 0.5"
  "refine-masked-0.5|--pattern 0.5 --refine-warm-start masked"
  "auto-sequential-0.5|--held-out 0 --refine 0 --pattern 0.5"
  "auto-parallel-0.5|--in-block parallel --held-out 0 --refine 0 --pattern 0.5"
  "sparsegpt-sequential-0.5|--preset sparsegpt --in-block sequential --pattern 0.5"
  "wanda-sequential-0.5|--preset wanda --in-block sequential --pattern 0.5"
  "sparsegpt-2of4|--preset sparsegpt --pattern 2:4"
  "default-2of4|--pattern 2:4"
  "norefine-2of4|--pattern 2:4 --refine 0"
  "refine-run-damping-2of4|--pattern 2:4 --refine 60 --refine-damping run"
  "refine-run-damping-0.5|--pattern 0.5 --refine-damping run"
  "refine-d10-2of4|--pattern 2:4 --refine 60 --refine-damping run --damping 0.1"
  "dense-objective-2of4|--objective dense --refine 0 --pattern 2:4"
  "wanda-2of4|--preset wanda --pattern 2:4"
  "auto-sequential-2of4|--held-out 0 --refine 0 --pattern 2:4"
  "magnitude-0.5|--pattern 0.5 --masker magnitude --solver none"
  "magnitude-default-0.5|--pattern 0.5 --masker magnitude --refine 0"
  "magnitude-2of4|--pattern 2:4 --masker magnitude --solver none"
  "magnitude-default-2of4|--pattern 2:4 --masker magnitude --refine 0"
  "sparsegpt-mask-default-2of4|--pattern 2:4 --masker sparsegpt --refine 0"
)
mode=${1:-all}
if [ "$mode" != quick ]; then
  for s in 0.7; do
    runs+=("sparsegpt-$s|--preset sparsegpt --pattern $s" "norefine-$s|--pattern $s --refine 0" "wanda-$s|--preset wanda --pattern $s" "default-$s|--pattern $s")
  done
  runs+=(
    "norefine-0.5-128x512|--pattern 0.5 --refine 0 --calib-seqs 128 --seq-len 512"
    "sparsegpt-0.5-128x512|--preset sparsegpt --pattern 0.5 --calib-seqs 128 --seq-len 512"
    "sparsegpt-mask-default-0.5|--masker sparsegpt --refine 0 --pattern 0.5"
    "default-0.5-128x2048|--pattern 0.5 --calib-seqs 128 --seq-len 2048"
    "sparsegpt-0.5-128x2048|--preset sparsegpt --pattern 0.5 --calib-seqs 128 --seq-len 2048"
  )
  for s in 0.6 0.3; do
    runs+=("sparsegpt-$s|--preset sparsegpt --pattern $s" "norefine-$s|--pattern $s --refine 0" "wanda-$s|--preset wanda --pattern $s" "default-$s|--pattern $s")
  done
  runs+=(
    "auto-parallel-2of4|--in-block parallel --held-out 0 --refine 0 --pattern 2:4"
    "optima-paper-0.5|--preset optima-paper --pattern 0.5"
    "dense-objective-0.5|--objective dense --refine 0 --pattern 0.5"
  )
  for s in 0.4; do
    runs+=("sparsegpt-$s|--preset sparsegpt --pattern $s" "norefine-$s|--pattern $s --refine 0" "wanda-$s|--preset wanda --pattern $s" "default-$s|--pattern $s")
  done
fi
if [ "$mode" = only ]; then
  shift
  wanted=" $* "
  chosen=()
  for run in "${runs[@]}"; do
    [[ "$wanted" == *" ${run%%|*} "* ]] && chosen+=("$run")
  done
  [ "${#chosen[@]}" -eq "$#" ] || { echo "results.sh only: a tag is not planned here: $*" >&2; exit 2; }
  runs=("${chosen[@]}")
fi
for run in "${runs[@]}"; do
  tag="${run%%|*}"
  read -r -a flags <<<"${run#*|}"
  if [ ! -f "$out/$tag.json" ]; then
    echo "== $tag: optima prune ${flags[*]}" >&2
    $bin prune --model "$model" --calib assets/fortunes "${flags[@]}" --report "$out/$tag-layers.json" \
      "${texts[@]}" --json > "$out/$tag.tmp"
    mv "$out/$tag.tmp" "$out/$tag.json"
  fi
  [ "$mode" = only ] || { ./scripts/results-table.py > docs/results.md.tmp && mv docs/results.md.tmp docs/results.md; }
done
./scripts/results-plot.sh
[ "$mode" = only ] || cat docs/results.md
