#!/usr/bin/env python3
"""Prints docs/results.md from the runs ./scripts/results.sh left in out/results/."""
import datetime
import json
import os

dense = json.load(open("out/results/dense.json"))
lines = [
    "# Results: SmolLM2-135M pruned one-shot",
    "",
    f"Perplexity on the Jargon File (`--start-char 7697`, {dense['windows']} windows of {dense['window_len']} "
    f"tokens, {dense['tokens_scored']} tokens scored); calibration: 32 sequences of 256 tokens from Debian's "
    "fortunes (seed 0); 1% damping; every linear layer of all 30 blocks pruned. Mean E is the mean over the 210 "
    "layers of the fraction of output energy lost (after the update). Pruning seconds include calibration "
    f"forward passes, on 2 cores. Written by `./scripts/results.sh`, {datetime.date.today()}.",
    "",
    "| pattern | masker | update | perplexity | mean E | pruning s |",
    "|---|---|---|---:|---:|---:|",
    f"| dense | – | – | {dense['ppl']:.2f} | – | – |",
]
missing = []
for pattern in ["0.5", "2:4"]:
    for masker in ["magnitude", "wanda", "sparsegpt"]:
        for solver in (["sparsegpt"] if masker == "sparsegpt" else ["none"]) + ["direct"]:
            tag = f"{masker}-{pattern.replace(':', 'of')}-{solver}"
            path = f"out/results/{tag}.json"
            label = {"none": "mask only", "sparsegpt": "SparseGPT's own", "direct": "exact (direct)"}[solver]
            if not os.path.exists(path):
                missing.append(f"{pattern} {masker} {label}")
                continue
            r = json.load(open(path))
            lines.append(
                f"| {pattern} | {masker} | {label} | {r['perplexity']['ppl']:.2f} | "
                f"{r['mean_error_after']:.4f} | {r['seconds']['pruning']:.0f} |"
            )
if missing:
    lines += ["", "Not run yet: " + "; ".join(missing) + "."]
print("\n".join(lines))
