#!/usr/bin/env python3
"""Plots perplexity against unstructured sparsity for the presets and the default pipeline."""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

OUT = "out/results"
SPARSITIES = ["0.3", "0.4", "0.5", "0.6", "0.7"]
RECIPES = [
    ("wanda", "--preset wanda"),
    ("sparsegpt", "--preset sparsegpt"),
    ("norefine", "optima default, --refine 0"),
    ("default", "optima default"),
]
TEXTS = ["Jargon File", "GNU Coding Standards"]

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
for i, (ax, text) in enumerate(zip(axes, TEXTS)):
    dense = json.load(open(f"{OUT}/{'dense' if i == 0 else 'dense-gnu'}.json"))["ppl"]
    for tag, label in RECIPES:
        points = []
        for s in SPARSITIES:
            path = f"{OUT}/{tag}-{s}.json"
            if os.path.exists(path):
                points.append((float(s), json.load(open(path))["evaluations"][i]["perplexity"]["ppl"]))
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.axhline(dense, color="gray", linestyle="--", label=f"dense ({dense:.2f})")
    ax.set_yscale("log")
    ax.set_xlim(0.25, 0.75)
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("sparsity (every linear layer)")
    ax.set_ylabel("perplexity")
    ax.set_title(f"SmolLM2-135M, {text}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
fig.tight_layout()
fig.savefig("docs/perplexity-vs-sparsity.png", dpi=110)
print("wrote docs/perplexity-vs-sparsity.png")
