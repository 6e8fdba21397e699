#!/usr/bin/env python3
"""Prints docs/results.md from the runs ./scripts/results.sh left in out/results/."""
import collections
import datetime
import json
import os
import re

OUT = "out/results"


def load(tag):
    path = f"{OUT}/{tag}.json"
    return json.load(open(path)) if os.path.exists(path) else None


def ppls(r):
    return [e["perplexity"]["ppl"] for e in r["evaluations"]]


dense = [load("dense"), load("dense-gnu")]
# The runs scripts/results.sh plans, by tag (the 128 × 512 and sweep rows are listed on their own).
PLANNED = set(re.findall(r'"([A-Za-z0-9.\-]+)\|', open("scripts/results.sh").read()))
PLANNED |= {f"{t}-{s}" for t in ("sparsegpt", "default", "wanda") for s in ("0.3", "0.4", "0.6", "0.7")}
lines = [
    "# Results: SmolLM2-135M pruned one-shot",
    "",
    "Perplexity on two texts, 16 windows of 512 tokens each: the **Jargon File** from `--start-char 7697` (the "
    "protocol) and the **GNU Coding Standards** from `--start-char 10000` (a second text nothing was chosen on; "
    "Debian's `gnu-standards`). Calibration: 32 sequences of 256 tokens from Debian's fortunes (seed 0) unless a "
    "row says otherwise. Every linear layer of all 30 blocks pruned. Mean E: the mean over the 210 layers of the "
    "fraction of output energy lost on the fitted calibration tokens. Seconds: the whole prune (forward passes, "
    "Hessians, masks, updates) on this machine's 2 cores, runs one after another while other work shared the "
    f"machine at times (docs/benchmarks.md has timings measured alone). Written by `./scripts/results.sh`, "
    f"{datetime.date.today()}.",
    "",
    "The default pipeline (`optima prune` with no flags) is Wanda's mask, exact reconstruction (`auto`, 1e-6), "
    "layers calibrated in order inside each block, and each layer's damping chosen from {1%, 3%, 10%, 30%} by "
    "the error on one calibration sequence in 8 held out of the Hessians (an update kept only where it beats the "
    "mask's own weights there). Nothing was chosen on either evaluation text.",
    "",
]

ROWS = [
    ("sparsegpt", "`--preset sparsegpt` (SparseGPT's mask and update, 1%)"),
    ("sparsegpt-sequential", "`--preset sparsegpt --in-block sequential`"),
    ("wanda", "`--preset wanda` (Wanda's mask, no update)"),
    ("optima-paper", "`--preset optima-paper` (Wanda + pdhg 1e-2, kept if it lowers the loss)"),
    ("auto-parallel", "Wanda + exact, 1%, layers on the block's unpruned inputs (the old default)"),
    ("auto-sequential", "Wanda + exact, 1%, layers in order (lever: in-block order)"),
    ("default", "**default**: Wanda + exact, in order, held-out dampings"),
    ("default-fullgrid", "the default, grid scored on every row (not a 1-in-4 row sample)"),
    ("sparsegpt-mask-default", "SparseGPT's mask + the default's update (`--masker sparsegpt`)"),
    ("dense-objective", "the default with `--objective dense`"),
    ("refine", "the default + `--refine 60` (masks refined with the solver in the loop)"),
]


# Runs that were paused (SIGSTOP) while docs/benchmarks.md's timings ran alone: their wall
# times include the pause, so they are not shown.
PAUSED = {"sparsegpt-0.5", "default-0.5"}


def row(tag, label):
    r = load(tag)
    if r is None:
        return None
    s = r["seconds"]
    jargon, gnu = ppls(r)
    if tag in PAUSED:
        return f"| {label} | {jargon:.2f} | {gnu:.2f} | {r['mean_error_after']:.4f} | {r['updates_kept'] if r['solver'] != 'none' else '–'} | paused, see docs/benchmarks.md | – |"
    split = f"{s['forward']:.0f} / {s['hessian']:.0f} / {s['mask']:.0f} / {s['solve']:.0f}"
    kept = r["updates_kept"] if r["solver"] != "none" else "–"
    return f"| {label} | {jargon:.2f} | {gnu:.2f} | {r['mean_error_after']:.4f} | {kept} | {s['pruning']:.0f} | {split} |"


missing = []
for pattern, suffix in [("50% unstructured", "0.5"), ("2:4", "2of4")]:
    lines += [
        f"## {pattern}",
        "",
        "| recipe | Jargon | GNU | mean E | updates kept | seconds | forward / Hessian / mask / update s |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| dense model | {dense[0]['ppl']:.2f} | {dense[1]['ppl']:.2f} | – | – | – | – |",
    ]
    for tag, label in ROWS:
        line = row(f"{tag}-{suffix}", label)
        if line is None:
            if f"{tag}-{suffix}" in PLANNED:
                missing.append(f"{tag} {pattern}")
            continue
        lines.append(line)
    for tag, label in [("sparsegpt", "`--preset sparsegpt`"), ("default", "default")]:
        line = row(f"{tag}-{suffix}-128x512", label + ", 128 × 512 calibration tokens")
        if line:
            lines.append(line)
    base, ours = load(f"sparsegpt-{suffix}"), load(f"default-{suffix}")
    if base and ours:
        gains = [100 * (1 - o / b) for o, b in zip(ppls(ours), ppls(base))]
        lines += [
            "",
            f"The default's perplexity against `--preset sparsegpt`'s: {gains[0]:.1f}% lower on the Jargon File, "
            f"{gains[1]:.1f}% lower on the GNU text (negative: higher).",
        ]
    lines.append("")

sweep = [(s, {t: load(f"{t}-{s}") for t in ("sparsegpt", "wanda", "default")}) for s in ("0.3", "0.4", "0.5", "0.6", "0.7")]
if any(r for _, rs in sweep for r in rs.values()):
    lines += [
        "## Perplexity against sparsity (unstructured)",
        "",
        "![perplexity against sparsity](perplexity-vs-sparsity.png)",
        "",
        "| sparsity | `--preset wanda` | `--preset sparsegpt` | default | (GNU: wanda / sparsegpt / default) |",
        "|---:|---:|---:|---:|---|",
    ]
    for s, rs in sweep:
        cell = lambda r, i: f"{ppls(r)[i]:.2f}" if r else "–"
        lines.append(
            f"| {s} | {cell(rs['wanda'], 0)} | {cell(rs['sparsegpt'], 0)} | {cell(rs['default'], 0)} | "
            f"{cell(rs['wanda'], 1)} / {cell(rs['sparsegpt'], 1)} / {cell(rs['default'], 1)} |"
        )
    lines.append("")

# Each lever alone, and the targets, computed from the rows above.
def change(a, b):
    """How much lower run `a`'s perplexities are than run `b`'s, per text, in %."""
    ra, rb = load(a), load(b)
    if not (ra and rb):
        return None
    return ", ".join(f"{t} {100 * (1 - x / y):+.1f}%" for t, x, y in zip(("Jargon", "GNU"), ppls(ra), ppls(rb)))


levers = [
    ("In-block order (exact, 1%): in order against one pass", "auto-sequential-{}", "auto-parallel-{}"),
    ("Held-out dampings: the default against exact at 1% in order", "default-{}", "auto-sequential-{}"),
    ("Row-sampled grid against the grid on every row", "default-{}", "default-fullgrid-{}"),
    ("SparseGPT in order against in one pass", "sparsegpt-sequential-{}", "sparsegpt-{}"),
    ("Exact update on Wanda's mask (the default) against the mask alone", "default-{}", "wanda-{}"),
    ("The default's update on SparseGPT's mask against SparseGPT's own", "sparsegpt-mask-default-{}", "sparsegpt-{}"),
    ("The dense objective (with the default's other levers) against the layer objective", "dense-objective-{}", "default-{}"),
    ("Mask refinement (`--refine 60`) on the default", "refine-{}", "default-{}"),
    ("128 × 512 calibration tokens against 32 × 256, the default", "default-{}-128x512", "default-{}"),
    ("128 × 512 calibration tokens against 32 × 256, `--preset sparsegpt`", "sparsegpt-{}-128x512", "sparsegpt-{}"),
]
found = []
for label, a, b in levers:
    for suffix, pattern in (("0.5", "50%"), ("2of4", "2:4")):
        c = change(a.format(suffix), b.format(suffix))
        if c:
            found.append(f"- {label}, {pattern}: {c} lower perplexity (negative: higher).")
if found:
    lines += ["## Each lever, measured", ""] + found + [""]

# The quality targets, judged from the rows.
def verdict(a, b, need):
    ra, rb = load(a), load(b)
    if not (ra and rb):
        return "not measured yet"
    gains = [100 * (1 - x / y) for x, y in zip(ppls(ra), ppls(rb))]
    met = all(g >= need for g in gains)
    return f"{gains[0]:.1f}% / {gains[1]:.1f}% lower (Jargon / GNU): {'met' if met else 'not met'}"


lines += [
    "## Against the targets",
    "",
    f"- 50%: the default at least 10% below `--preset sparsegpt` on both texts: {verdict('default-0.5', 'sparsegpt-0.5', 10)}.",
    f"- The same at 128 × 512 calibration tokens for both: {verdict('default-0.5-128x512', 'sparsegpt-0.5-128x512', 10)}.",
    f"- 2:4 (issue 15's bar, 15%): {verdict('default-2of4', 'sparsegpt-2of4', 15)}.",
    f"- Exact reconstruction never worse than its mask alone, Wanda's mask: 50% {verdict('default-0.5', 'wanda-0.5', 0)}; "
    f"2:4 {verdict('default-2of4', 'wanda-2of4', 0)}.",
    f"- The same on SparseGPT's mask (against SparseGPT's own update), 50%: {verdict('sparsegpt-mask-default-0.5', 'sparsegpt-0.5', 0)}.",
    "",
    "Not met at 50%. Each lever helps and they add up (the per-lever lines above), but together they bring 2–4% "
    "over `--preset sparsegpt` on this model, at 32 × 256 and at 128 × 512 calibration tokens alike: at 8,192 "
    "tokens the held-out choice moves most layers to 3–10% damping (1% overfits), at 65,536 most layers choose "
    "1% again, and both pipelines gain 2–4% from the data. In-block order adds 0.2–1.6%. What is left at 50% "
    "is the mask (issue 15): on Wanda's mask the exact fit is 7–13% better than the mask alone, yet SparseGPT's "
    "mask with its own approximate update comes within 2–4% of it. The dense objective with held-out dampings, "
    "`--preset optima-paper`, 2:4 in one pass and the sweep's 0.4 point are queued in `scripts/results.sh` and not run yet.",
    "",
    "Mask refinement (issue 15; the lines below the targets) lowers every layer-level error it can see, on the "
    "fitted tokens and on the held-out calibration tokens alike, and the GNU text's perplexity with them, yet at "
    "2:4 the Jargon File's perplexity rises: lower layer errors on fortunes do not carry over to every text. It "
    "stays an option (`--refine K`), not the default, until a criterion on calibration data predicts both texts. "
    "At 50% it helps on both texts and brings the default 10% below `--preset sparsegpt` on each (28.05 / 33.20 "
    "against 31.18 / 37.06), in 593 s of pruning alone (the default: 194 s alone, docs/benchmarks.md): 3.1×.",
    "",
]

# What mask refinement did, from its per-layer report against the default's.
for suffix in ("0.5", "2of4"):
    ref, base = load(f"refine-{suffix}"), load(f"default-{suffix}")
    paths = [f"{OUT}/refine-{suffix}-layers.json", f"{OUT}/default-{suffix}-layers.json"]
    if not (ref and base and all(os.path.exists(p) for p in paths)):
        continue
    refined, plain = (json.load(open(p))["layers"] for p in paths)
    held = lambda layers: sum(l["held_out"]["error_update"] for l in layers if l.get("held_out")) / len(layers)
    records = [l["refinement"] for l in refined if l.get("refinement")]
    drop = 100 * sum(1 - r["objective"] / max(r["objective_start"], 1e-300) for r in records) / max(len(records), 1)
    on_refined = sum(r["kept"] for r in records)
    (j0, g0), (j1, g1) = ppls(base), ppls(ref)
    lines += [
        f"Mask refinement at {suffix.replace('of', ':')} (`--refine 60` on the default): the layer objective on the "
        f"fitted tokens {drop:.1f}% lower than on Wanda's mask (mean over layers), {on_refined} of {len(records)} "
        f"layers on the refined mask, mean held-out layer error {held(plain):.4f} → {held(refined):.4f}; perplexity "
        f"Jargon {j0:.2f} → {j1:.2f}, GNU {g0:.2f} → {g1:.2f}; {ref['seconds']['pruning']:.0f} s of pruning against "
        f"{base['seconds']['pruning']:.0f} s (runs on a machine shared at times; see docs/benchmarks.md for timings alone).",
        "",
    ]

# What the held-out choice did, from the default's per-layer report.
for suffix in ("0.5", "2of4"):
    path = f"{OUT}/default-{suffix}-layers.json"
    if not os.path.exists(path):
        continue
    layers = json.load(open(path))["layers"]
    chosen = collections.Counter(l["held_out"]["damping"] for l in layers if l.get("held_out"))
    kept = [l for l in layers if l.get("held_out")]
    up = sum(l["held_out"]["error_update"] for l in kept) / max(len(kept), 1)
    mask = sum(l["held_out"]["error_baseline"] for l in kept) / max(len(kept), 1)
    hist = ", ".join(f"{100 * d:g}%: {n}" for d, n in sorted(chosen.items()))
    lines += [
        f"Held-out choice, default at {suffix.replace('of', ':')}: dampings chosen per layer ({hist}); "
        f"{sum(l['update_kept'] for l in layers)} of {len(layers)} updates kept; mean held-out error "
        f"{up:.4f} with the update against {mask:.4f} with the mask alone.",
        "",
    ]

if missing:
    lines += ["Not run yet (the script resumes where it stopped): " + "; ".join(missing) + ".", ""]
lines += ["```sh", "./scripts/results.sh          # every row above; ./scripts/results.sh quick: 50% and 2:4 only", "```", ""]
lines.append(open("docs/results-notes.md").read().rstrip())
print("\n".join(lines))
