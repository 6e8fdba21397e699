#!/usr/bin/env bash
# Smoke test on the real assets (CI runs it after the unit tests): dense perplexity of SmolLM2 on
# 2 windows lies in a sane band, and pruning one block with exact reconstruction works.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-assets.sh
cargo build --release --quiet -p optima-cli
bin=./target/release/optima
model=assets/SmolLM2-135M-Instruct.Q4_1.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
ppl=$($bin perplexity --model "$model" --text assets/jargon.txt.gz --start-char 7697 --windows 2 --window-len 256 --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
if python3 -c "import sys; sys.exit(0 if 5 < $ppl < 60 else 1)"; then
  echo "smoke: dense perplexity $ppl (2 windows of 256) is in (5, 60): ok"; passed=$((passed + 1))
else
  echo "smoke: dense perplexity $ppl is outside (5, 60): FAILED"; failed=$((failed + 1))
fi
summary=$($bin prune --model "$model" --calib assets/fortunes --pattern 2:4 --masker wanda --solver direct \
  --max-blocks 1 --calib-seqs 4 --seq-len 128 --out "$tmp/pruned.gguf" --json)
if python3 -c "import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r['mean_error_after'] < r['mean_error_before'] else 1)" "$summary" &&
  [ -s "$tmp/pruned.gguf" ]; then
  echo "smoke: pruning block 0 to 2:4 with exact reconstruction: ok"; passed=$((passed + 1))
else
  echo "smoke: pruning one block: FAILED ($summary)"; failed=$((failed + 1))
fi
summary=$($bin prune --model "$model" --calib assets/fortunes --max-blocks 1 --calib-seqs 8 --seq-len 128 --json)
if python3 -c "
import json, sys
r = json.loads(sys.argv[1])
ok = r['held_out']['every'] == 8 and r['in_block'] == 'sequential' and sum(r['dampings_chosen'].values()) == r['updates_kept']
ok = ok and r['refine'] is not None and r['refinement']['layers'] == 7
sys.exit(0 if ok and r['mean_error_after'] <= r['mean_error_before'] else 1)" "$summary"; then
  echo "smoke: the default pipeline (in order, held-out dampings, refined masks) on block 0: ok"; passed=$((passed + 1))
else
  echo "smoke: the default pipeline on one block: FAILED ($summary)"; failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
