#!/usr/bin/env bash
# Builds what scripts/device-check.sh runs on a GPU machine that has no Rust toolchain: the
# `optima` binary and the `tests/cuda.rs` test executable, release, feature `cuda`, stripped,
# into the git-ignored device-bundle/ (carry it to the GPU machine; it must stay under 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
bundle=device-bundle

cargo build --release -p optima-cli --features cuda --bin optima
tests_exe=$(cargo test --release -p optima --features cuda --test cuda --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "cuda":
        print(msg["executable"])')
if [[ -z "$tests_exe" ]]; then
    echo "error: could not find the cuda test executable" >&2
    exit 1
fi

rm -rf "$bundle"
mkdir -p "$bundle"
cp "$target/release/optima" "$bundle/optima"
cp "$tests_exe" "$bundle/cuda-tests"
strip "$bundle/optima" "$bundle/cuda-tests"
git rev-parse HEAD >"$bundle/COMMIT" 2>/dev/null || true
ls -l "$bundle"
bytes=$(du -sb "$bundle" | cut -f1)
echo "device-bundle: $((bytes / 1024 / 1024)) MiB"
if ((bytes > 60 * 1024 * 1024)); then
    echo "error: the bundle is over 60 MiB; it would not travel" >&2
    exit 1
fi
