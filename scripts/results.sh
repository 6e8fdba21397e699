#!/usr/bin/env bash
# Writes docs/results.md: SmolLM2-135M pruned with magnitude, Wanda and SparseGPT masks, each with
# its own update (SparseGPT) or none, and with exact reconstruction; 50% unstructured and 2:4.
# Perplexity on the Jargon File and the mean layer error E. About an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
model=assets/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] && [ -d assets/fortunes ] && [ -f assets/jargon.txt.gz ] || ./scripts/fetch-assets.sh
cargo build --release --quiet
bin=./target/release/optima
mkdir -p out/results
eval_args=(--start-char 7697 --windows 16 --window-len 512)
$bin perplexity --model "$model" --text assets/jargon.txt.gz "${eval_args[@]}" --json > out/results/dense.json
for pattern in 0.5 2:4; do
  for masker in magnitude wanda sparsegpt; do
    own=none
    [ "$masker" = sparsegpt ] && own=sparsegpt
    for solver in "$own" direct; do
      tag="${masker}-${pattern/:/of}-${solver}"
      [ -f "out/results/$tag.json" ] && continue
      echo "== $tag" >&2
      $bin prune --model "$model" --calib assets/fortunes --pattern "$pattern" --masker "$masker" --solver "$solver" \
        --report "out/results/$tag-layers.json" --eval assets/jargon.txt.gz "${eval_args[@]}" --json > "out/results/$tag.json"
    done
  done
done
python3 - <<'PY'
import json, glob, datetime
dense = json.load(open("out/results/dense.json"))
lines = ["# Results: SmolLM2-135M pruned one-shot", "",
         f"Perplexity on the Jargon File (`--start-char 7697`, {dense['windows']} windows of {dense['window_len']} tokens, "
         f"{dense['tokens_scored']} tokens scored); calibration: 32 sequences of 256 tokens from Debian's fortunes; "
         "1% damping. E is the mean over all 210 linear layers of the fraction of output energy lost. "
         f"Written by `./scripts/results.sh` on {datetime.date.today()}.", "",
         "| pattern | masker | update | perplexity | mean E | pruning s |", "|---|---|---|---:|---:|---:|",
         f"| dense | – | – | {dense['ppl']:.2f} | – | – |"]
for pattern in ["0.5", "2:4"]:
    for masker in ["magnitude", "wanda", "sparsegpt"]:
        for solver in (["sparsegpt"] if masker == "sparsegpt" else ["none"]) + ["direct"]:
            tag = f"{masker}-{pattern.replace(':', 'of')}-{solver}"
            try:
                r = json.load(open(f"out/results/{tag}.json"))
            except FileNotFoundError:
                continue
            label = {"none": "mask only", "sparsegpt": "SparseGPT's own", "direct": "exact (direct)"}[solver]
            lines.append(f"| {pattern} | {masker} | {label} | {r['perplexity']['ppl']:.2f} | {r['mean_error_after']:.4f} | {r['seconds']['pruning']:.0f} |")
open("docs/results.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
