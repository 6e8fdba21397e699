#!/usr/bin/env bash
# The PyTorch peer (llm-compressor on CPU torch) and optima, side by side on this machine: one run
# at a time, alternating, so both see the same machine state. Sets up the peer's virtual
# environment (PyPI) and the model as a Hugging Face folder (`optima convert`) under out/peer/
# (git-ignored) on first use. Each run appends one JSON line to out/peer/side-by-side.jsonl:
# the tool, the recipe, the threads, the whole process's wall seconds, and each tool's own
# figure (the peer's `oneshot` call; optima's `seconds.pruning`).
#
#   ./scripts/peer-bench.sh             # 32 x 256 calibration, 50%, 1 and 2 threads, 1 round
#   ROUNDS=2 THREADS="1 2" ./scripts/peer-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-assets/SmolLM2-135M-Instruct.Q4_1.gguf}
CALIB=${CALIB:-assets/fortunes}
ROUNDS=${ROUNDS:-1}
THREADS=${THREADS:-"1 2"}
PEER=out/peer
OUT=$PEER/side-by-side.jsonl
OPTIMA=target/release/optima
mkdir -p "$PEER"
[ -x "$OPTIMA" ] || cargo build --release -p optima-cli
if [ ! -x "$PEER/venv/bin/python" ]; then
    python3 -m venv "$PEER/venv"
    "$PEER/venv/bin/pip" install --progress-bar off -q \
        llmcompressor==0.14.0.1 torch==2.14.0 transformers==5.17.0
fi
[ -f "$PEER/smollm2-hf/config.json" ] || "$OPTIMA" convert --model "$MODEL" --out "$PEER/smollm2-hf"

now() { date +%s.%N; }
record() { # tool recipe threads wall own
    printf '{"tool":"%s","recipe":"%s","threads":%s,"wall_s":%.2f,"own_s":%s}\n' "$@" | tee -a "$OUT"
}
peer() { # method threads
    local t0 t1 line
    t0=$(now)
    line=$("$PEER/venv/bin/python" scripts/peer-bench.py --model "$PEER/smollm2-hf" --calib "$CALIB" \
        --method "$1" --threads "$2" --out "$PEER/peer-$1-t$2" 2>"$PEER/peer-$1-t$2.log" | tail -1)
    t1=$(now)
    record llm-compressor "$1" "$2" "$(echo "$t1 - $t0" | bc)" \
        "$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["oneshot_s"])')"
}
optima() { # tag threads flags...
    local tag=$1 threads=$2 t0 t1
    shift 2
    t0=$(now)
    "$OPTIMA" prune --model "$MODEL" --calib "$CALIB" "$@" --threads "$threads" \
        --out "$PEER/optima-$tag-t$threads.gguf" --json >"$PEER/optima-$tag-t$threads.json" 2>/dev/null
    t1=$(now)
    record optima "$tag" "$threads" "$(echo "$t1 - $t0" | bc)" \
        "$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["seconds"]["pruning"], 2))' \
            "$PEER/optima-$tag-t$threads.json")"
}
for _ in $(seq "$ROUNDS"); do
    for t in $THREADS; do
        peer wanda "$t"
        optima wanda "$t" --preset wanda
        peer sparsegpt "$t"
        optima sparsegpt "$t" --preset sparsegpt
        optima exact "$t" --held-out 0 --refine 0
    done
done
