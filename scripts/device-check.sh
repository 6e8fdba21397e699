#!/usr/bin/env bash
# The GPU check of the CUDA backend, in one run of about 8 minutes on the GPU machine:
#   1. nvidia-smi and the CUDA libraries found;
#   2. the CUDA tests (GPU results against CPU results on the same problems);
#   3. `optima bench --device cuda --llama3-8b-shapes` (auto, all rows, 50% and 2:4, tol 1e-6);
#   4. the same shapes with direct and pcg on the first 128 rows of each layer.
# It needs device-bundle/ from scripts/build-device-bundle.sh (git-ignored: carry it). Results go
# to $OUT (or out/device): logs, llama3-8b.json, llama3-8b.md, llama3-8b-direct.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/device}"
mkdir -p "$OUT"
bundle=device-bundle
log="$OUT/device-check.log"
say() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$log"; }

if [[ ! -x "$bundle/optima" || ! -x "$bundle/cuda-tests" ]]; then
    say "no $bundle/: run scripts/build-device-bundle.sh first and carry $bundle"
    exit 2
fi
say "bundle built from commit $(cat "$bundle/COMMIT" 2>/dev/null || echo unknown)"

# CUDA 13 libraries: the toolkit's, then those of the image's Python wheels (nvidia-*).
libs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d "$d" ]] && libs+=("$d")
done
for py in python3 /opt/torch/.venv/bin/python3; do
    if command -v "$py" >/dev/null 2>&1; then
        while IFS= read -r d; do libs+=("$d"); done < <("$py" - 2>/dev/null <<'PY'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for root in roots:
    for d in sorted(glob.glob(os.path.join(root, "nvidia", "**", "lib"), recursive=True)):
        print(d)
PY
)
    fi
done
LD_LIBRARY_PATH="$(IFS=:; echo "${libs[*]:-}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for lib in libcuda.so libcublas.so libcusolver.so libnvrtc.so; do
    found=$( (ldconfig -p 2>/dev/null | grep -o "/[^ ]*$lib[^ ]*" | head -1) || true)
    [[ -z "$found" ]] && found=$(find ${libs[@]+"${libs[@]}"} -maxdepth 1 -name "$lib*" 2>/dev/null | head -1)
    say "$lib: ${found:-NOT FOUND}"
done
nvidia-smi 2>&1 | tee -a "$log"

say "CUDA tests"
timeout 150 "./$bundle/cuda-tests" --include-ignored --test-threads=1 --nocapture 2>&1 | tee "$OUT/cuda-tests.log"
say "CUDA tests exit ${PIPESTATUS[0]}"

say "Llama-3-8B shapes, auto, all rows"
timeout 240 "./$bundle/optima" bench --device cuda --llama3-8b-shapes --solvers auto --tol 1e-6 --json \
    >"$OUT/llama3-8b.json" 2>"$OUT/llama3-8b.md"
say "bench exit $?"
tail -n 30 "$OUT/llama3-8b.md"

say "Llama-3-8B shapes, direct and pcg, first 128 rows"
timeout 90 "./$bundle/optima" bench --device cuda --llama3-8b-shapes --solvers direct,pcg --rows 128 --tol 1e-6 \
    --json >"$OUT/llama3-8b-direct.json" 2>"$OUT/llama3-8b-direct.md"
say "bench exit $?"
tail -n 30 "$OUT/llama3-8b-direct.md"
say "done"
