#!/usr/bin/env bash
# Draws docs/perplexity-vs-sparsity.png from out/results/ (matplotlib in a venv under out/).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=out/plot-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import matplotlib" 2>/dev/null || "$venv/bin/pip" install --quiet matplotlib
"$venv/bin/python" scripts/results-plot.py
