#!/usr/bin/env python3
"""Prunes a Hugging Face Llama folder with the PyTorch peer, llm-compressor, and times it.

The peer runs as its users run it: `oneshot` with `WandaPruningModifier` or `SparseGPTModifier`
on CPU torch, the sequential pipeline (one decoder block at a time), `--seqs` windows of `--len`
tokens from the calibration text (read as `optima` reads it: a folder's files in name order,
fortune index files skipped, joined by newlines), at random starts drawn from `--seed` (numpy's
generator, so the windows are not optima's own, but the same text, count and length). Prints one
JSON object: the seconds of the oneshot call, of loading, and of the whole process so far; the
pruned folder goes to `--out` (uncompressed safetensors that `optima perplexity` evaluates).

Usage: scripts/peer-bench.sh sets up the virtual environment; see docs/benchmarks.md.
"""

import argparse
import json
import os
import time

START = time.perf_counter()


def read_text(path):
    if os.path.isdir(path):
        names = sorted(
            n for n in os.listdir(path)
            if not (n.startswith(".") or n.endswith(".dat") or n.endswith(".u8"))
            and os.path.isfile(os.path.join(path, n))
        )
        return "".join(read_text(os.path.join(path, n)) + "\n" for n in names)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        import gzip
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a Hugging Face folder (optima convert writes one)")
    p.add_argument("--calib", required=True)
    p.add_argument("--method", choices=["wanda", "sparsegpt"], required=True)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--mask-structure", default="0:0", help='"0:0" unstructured, "2:4" semi-structured')
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seqs", type=int, default=32)
    p.add_argument("--len", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sequential-targets",
        default=None,
        help="comma-separated module class names the sequential pipeline calibrates one at a time "
        "(the peer's default: the decoder block)",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    ids = tokenizer(read_text(args.calib), add_special_tokens=False)["input_ids"]
    if len(ids) <= args.len:
        raise SystemExit(f"the calibration text has {len(ids)} tokens, fewer than one window")
    starts = np.random.default_rng(args.seed).integers(0, len(ids) - args.len, size=args.seqs)
    windows = [ids[s : s + args.len] for s in starts]
    dataset = Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * args.len] * args.seqs})
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    loaded = time.perf_counter()

    common = dict(sparsity=args.sparsity, mask_structure=args.mask_structure, targets=["Linear"], ignore=["re:.*lm_head"])
    recipe = WandaPruningModifier(**common) if args.method == "wanda" else SparseGPTModifier(**common)
    extra = {}
    if args.sequential_targets:
        extra["sequential_targets"] = args.sequential_targets.split(",")
    t = time.perf_counter()
    oneshot(
        model=model,
        dataset=dataset,
        recipe=recipe,
        num_calibration_samples=args.seqs,
        max_seq_length=args.len,
        shuffle_calibration_samples=False,
        pipeline="sequential",
        **extra,
    )
    oneshot_s = time.perf_counter() - t
    if args.out:
        model.save_pretrained(args.out, save_compressed=False)
        tokenizer.save_pretrained(args.out)
    linear = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    zeros = sum(int((m.weight == 0).sum()) for m in linear)
    total = sum(m.weight.numel() for m in linear)
    print(
        json.dumps(
            {
                "method": args.method,
                "threads": args.threads,
                "torch": torch.__version__,
                "calibration": f"{args.seqs}x{args.len}",
                "sequential_targets": args.sequential_targets,
                "load_s": round(loaded - START, 2),
                "oneshot_s": round(oneshot_s, 2),
                "process_s": round(time.perf_counter() - START, 2),
                "sparsity": round(zeros / total, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
