#!/usr/bin/env python3
"""Plots perplexity against unstructured sparsity for the presets and the default pipeline.

Each point comes from its run's JSON in out/results/ (what scripts/results.sh writes) where that
file is on this machine, and otherwise from the sweep table of docs/results.md, which records
the figures of runs made on earlier machines: the plot always draws what the table says.
"""
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

OUT = "out/results"
RESULTS = "docs/results.md"
SPARSITIES = ["0.3", "0.4", "0.5", "0.6", "0.7"]
RECIPES = [
    ("wanda", "--preset wanda"),
    ("sparsegpt", "--preset sparsegpt"),
    ("norefine", "optima default, --refine 0"),
    ("default", "optima default"),
]
TEXTS = ["Jargon File", "GNU Coding Standards"]


def number(cell):
    """A table cell's perplexity, or None for a run not made ('–')."""
    cell = cell.strip().strip("*")
    return None if cell in ("", "–", "-") else float(cell)


def recorded():
    """The sweep table of docs/results.md: {(recipe, sparsity): (Jargon, GNU)} and the dense pair."""
    points, dense, section = {}, None, ""
    with open(RESULTS, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                section = line[3:].strip()
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == "dense model" and dense is None:
                dense = (number(cells[1]), number(cells[2]))
            sweep = section.startswith("Perplexity against sparsity")
            if sweep and len(cells) == 6 and re.fullmatch(r"0\.\d", cells[0]):
                gnu = cells[5].split("/")
                for k, (tag, _) in enumerate(RECIPES):
                    jargon, other = number(cells[1 + k]), number(gnu[k]) if len(gnu) == 4 else None
                    if jargon is not None and other is not None:
                        points[(tag, cells[0])] = (jargon, other)
    return points, dense


def main():
    table, table_dense = recorded()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (ax, text) in enumerate(zip(axes, TEXTS)):
        dense_path = f"{OUT}/{'dense' if i == 0 else 'dense-gnu'}.json"
        dense = json.load(open(dense_path))["ppl"] if os.path.exists(dense_path) else table_dense[i]
        for tag, label in RECIPES:
            points = []
            for s in SPARSITIES:
                path = f"{OUT}/{tag}-{s}.json"
                if os.path.exists(path):
                    points.append((float(s), json.load(open(path))["evaluations"][i]["perplexity"]["ppl"]))
                elif (tag, s) in table:
                    points.append((float(s), table[(tag, s)][i]))
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


if __name__ == "__main__":
    main()
