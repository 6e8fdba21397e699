#!/usr/bin/env python3
"""Loads a Hugging Face folder written by optima (`optima convert` or `optima prune --out DIR`)
with `transformers` on CPU torch, computes the perplexity of `optima perplexity`'s protocol,
and compares it with the number optima reports for the same folder.

Dev-only: `transformers` and torch are needed by this script alone, never by the crates or
their tests. Setup and run (from the repository root; out/ is git-ignored):

    python3 -m venv out/venv
    out/venv/bin/pip install torch transformers
    cargo build --release -p optima-cli
    target/release/optima convert --model assets/SmolLM2-135M-Instruct.Q4_1.gguf --out out/smollm2-hf
    out/venv/bin/python scripts/check-hf-output.py out/smollm2-hf --optima target/release/optima

Protocol (crates/optima-llm/src/perplexity.rs and the CLI): decompress the text if gzipped,
decode UTF-8 with replacement, skip --start-char characters, tokenize as one string with no
BOS or other added tokens (special tokens written in the text are recognised), cut the first
windows * window_len tokens into non-overlapping windows, run each window on its own (positions
restart at 0), score tokens 1..window_len-1 of each window, report exp(mean NLL).

Prints one JSON object; exits 1 when the two perplexities differ by more than --tolerance
(relative, default 0.5%).
"""

import argparse
import gzip
import json
import math
import subprocess
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def read_text(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def optima_perplexity(binary, model, args):
    cmd = [binary, "perplexity", "--model", model, "--text", args.eval, "--start-char", str(args.start_char),
           "--windows", str(args.windows), "--window-len", str(args.window_len), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="the Hugging Face folder optima wrote")
    p.add_argument("--eval", default="assets/jargon.txt.gz")
    p.add_argument("--start-char", type=int, default=7697)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--window-len", type=int, default=512)
    p.add_argument("--optima", help="the optima binary: run `optima perplexity` on the same folder")
    p.add_argument("--optima-ppl", type=float, help="or the perplexity optima printed")
    p.add_argument("--tolerance", type=float, default=0.005)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    except TypeError:  # transformers before 4.56 names it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    model.eval()
    load_s = time.time() - t0

    text = read_text(args.eval)[args.start_char:]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    needed = args.windows * args.window_len
    if len(ids) < needed:
        sys.exit(f"the text has {len(ids)} tokens; {needed} needed")
    total, count = 0.0, 0
    t0 = time.time()
    with torch.no_grad():
        for w in range(args.windows):
            window = torch.tensor([ids[w * args.window_len:(w + 1) * args.window_len]])
            logits = model(window).logits[0, :-1].double()
            nll = torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="sum")
            total += nll.item()
            count += args.window_len - 1
    mean_nll = total / count
    result = {"model": args.model, "transformers_ppl": math.exp(mean_nll), "transformers_mean_nll": mean_nll,
              "tokens_scored": count, "text_tokens": len(ids), "load_seconds": load_s,
              "eval_seconds": time.time() - t0}
    reference = args.optima_ppl
    if args.optima:
        o = optima_perplexity(args.optima, args.model, args)
        reference = o["ppl"]
        result["optima_mean_nll"] = o["mean_nll"]
    ok = True
    if reference is not None:
        rel = abs(result["transformers_ppl"] - reference) / reference
        result.update({"optima_ppl": reference, "relative_difference": rel, "tolerance": args.tolerance})
        ok = rel <= args.tolerance
    result["ok"] = ok
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
