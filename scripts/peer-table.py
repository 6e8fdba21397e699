#!/usr/bin/env python3
"""Prints a Markdown table from scripts/peer-bench.sh's JSON lines: each pairing's seconds in
every round (its own figure: the peer's `oneshot`, optima's pruning), and the median ratio of
optima's to the peer's. Usage: scripts/peer-table.py [out/peer/side-by-side.jsonl ...]"""
import collections
import json
import statistics
import sys

runs = collections.defaultdict(list)
for path in sys.argv[1:] or ["out/peer/side-by-side.jsonl"]:
    for line in open(path):
        r = json.loads(line)
        runs[(r["tool"], r["recipe"], r["threads"])].append(r["own_s"])
PAIRS = [("wanda", "wanda", "Wanda"), ("sparsegpt", "sparsegpt", "SparseGPT"),
         ("exact", "sparsegpt", "optima's exact pipeline, against the peer's SparseGPT")]
print("| recipe | threads | peer s, each round | optima s, each round | median ratio |")
print("|---|---:|---|---|---:|")
for threads in sorted({k[2] for k in runs}):
    for ours, theirs, label in PAIRS:
        o, p = runs.get(("optima", ours, threads)), runs.get(("llm-compressor", theirs, threads))
        if not (o and p):
            continue
        ratios = [a / b for a, b in zip(o, p)]
        print(f"| {label} | {threads} | {' / '.join(f'{x:.1f}' for x in p)} | "
              f"{' / '.join(f'{x:.1f}' for x in o)} | **{statistics.median(ratios):.2f}** |")
