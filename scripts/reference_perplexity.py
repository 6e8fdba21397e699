#!/usr/bin/env python3
"""Independent numpy reference for `optima perplexity` (dense model).

Shares no code with the Rust crate: GGUF parsing and dequantization come from
llama.cpp's `gguf` package, tokenization from HF `tokenizers` (built from the
GGUF's vocab and merges), and the Llama forward pass below is plain numpy.

Setup and run (from the repository root):

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install numpy gguf tokenizers
    /tmp/refvenv/bin/python scripts/reference_perplexity.py \
        --model assets/SmolLM2-135M-Instruct.Q4_1.gguf --text assets/jargon.txt.gz \
        --start-char 7697 --windows 16 --window-len 512

Protocol (same as `optima perplexity`): decompress the text if gzipped, decode
UTF-8 with replacement, take text[start_char:] (characters), tokenize as one
string without BOS, cut the first windows*window_len tokens into
non-overlapping windows, run each window independently (positions restart at
0), score tokens 1..window_len-1 of each window, and report exp(mean NLL).
Prints one JSON object: ppl, mean_nll, tokens_scored.
"""

import argparse
import gzip
import json
import math
import sys
import time

import numpy as np
import gguf
from gguf.quants import dequantize
from tokenizers import Tokenizer, decoders, models, pre_tokenizers


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def build_tokenizer(reader):
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = field(reader, "tokenizer.ggml.merges")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merge_pairs = []
    for m in merges:
        a, b = m.split(" ", 1)
        merge_pairs.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # No special tokens are registered: the text is tokenized as plain text
    # (control-token strings, if any, would be split like any other text).
    return tok


def load_weights(reader, dtype):
    w = {}
    for t in reader.tensors:
        arr = dequantize(t.data, t.tensor_type)
        # gguf's numpy layout is (rows, cols) = (ne[1], ne[0]), i.e. (out, in)
        # for linear weights, (vocab, hidden) for token_embd.
        w[t.name] = np.ascontiguousarray(arr, dtype=dtype)
    return w


class Llama:
    def __init__(self, reader, dtype):
        arch = field(reader, "general.architecture")
        assert arch == "llama", arch
        self.n_layer = int(field(reader, "llama.block_count"))
        self.d = int(field(reader, "llama.embedding_length"))
        self.n_head = int(field(reader, "llama.attention.head_count"))
        self.n_kv = int(field(reader, "llama.attention.head_count_kv"))
        self.theta = float(field(reader, "llama.rope.freq_base"))
        self.eps = float(field(reader, "llama.attention.layer_norm_rms_epsilon"))
        self.hd = self.d // self.n_head
        self.dtype = dtype
        self.w = load_weights(reader, dtype)
        self.emb = self.w["token_embd.weight"]  # (vocab, d)
        self.out = self.w.get("output.weight", self.emb)  # tied if absent
        # Pre-transpose linears once so forward is x @ W (contiguous).
        for name in list(self.w):
            if name.startswith("blk.") and self.w[name].ndim == 2:
                self.w[name] = np.ascontiguousarray(self.w[name].T)

    def rmsnorm(self, x, g):
        ms = np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True)
        return (x / np.sqrt(ms + self.eps).astype(self.dtype)) * g

    def rope_tables(self, T):
        half = self.hd // 2
        inv = self.theta ** (-np.arange(half, dtype=np.float64) * 2.0 / self.hd)
        ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]  # (T, half)
        return np.cos(ang).astype(self.dtype), np.sin(ang).astype(self.dtype)

    @staticmethod
    def rope(x, cos, sin):
        # x: (T, H, hd). llama.cpp "normal" mode: rotate adjacent pairs (2i, 2i+1).
        x0 = x[..., 0::2]
        x1 = x[..., 1::2]
        c = cos[:, None, :]
        s = sin[:, None, :]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def forward(self, ids):
        T = len(ids)
        H, KV, hd = self.n_head, self.n_kv, self.hd
        grp = H // KV
        cos, sin = self.rope_tables(T)
        mask = np.triu(np.full((T, T), -np.inf, dtype=self.dtype), k=1)
        scale = self.dtype(1.0 / math.sqrt(hd))
        h = self.emb[np.asarray(ids)].copy()  # (T, d)
        for l in range(self.n_layer):
            p = f"blk.{l}."
            w = self.w
            x = self.rmsnorm(h, w[p + "attn_norm.weight"])
            q = (x @ w[p + "attn_q.weight"]).reshape(T, H, hd)
            k = (x @ w[p + "attn_k.weight"]).reshape(T, KV, hd)
            v = (x @ w[p + "attn_v.weight"]).reshape(T, KV, hd)
            q = self.rope(q, cos, sin)
            k = self.rope(k, cos, sin)
            # GQA: query head j uses kv head j // grp.
            qh = q.transpose(1, 0, 2).reshape(KV, grp, T, hd)
            kh = k.transpose(1, 2, 0)[:, None]  # (KV, 1, hd, T)
            vh = v.transpose(1, 0, 2)[:, None]  # (KV, 1, T, hd)
            s = (qh @ kh) * scale + mask  # (KV, grp, T, T)
            s -= s.max(axis=-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=-1, keepdims=True)
            a = (s @ vh).reshape(H, T, hd).transpose(1, 0, 2).reshape(T, H * hd)
            h = h + a @ w[p + "attn_output.weight"]
            x = self.rmsnorm(h, w[p + "ffn_norm.weight"])
            g = x @ w[p + "ffn_gate.weight"]
            u = x @ w[p + "ffn_up.weight"]
            act = g / (1.0 + np.exp(-g)) * u  # SiLU(gate) * up
            h = h + act @ w[p + "ffn_down.weight"]
        h = self.rmsnorm(h, self.w["output_norm.weight"])
        return h @ self.out.T  # (T, vocab)


def nll_of_window(model, ids):
    logits = model.forward(ids[:-1]).astype(np.float64)  # predict ids[1:]
    m = logits.max(axis=-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=-1))
    tgt = logits[np.arange(len(ids) - 1), np.asarray(ids[1:])]
    return lse - tgt  # (T-1,)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--start-char", type=int, default=0)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--window-len", type=int, default=512)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--dump-ids", type=int, default=0,
                    help="print the first N token ids to stderr")
    args = ap.parse_args()
    dtype = np.float32 if args.dtype == "float32" else np.float64

    raw = open(args.text, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8", errors="replace")[args.start_char:]

    reader = gguf.GGUFReader(args.model)
    tok = build_tokenizer(reader)
    need = args.windows * args.window_len
    # Tokenize the whole remaining text as one string (no BOS, no specials).
    ids = tok.encode(text, add_special_tokens=False).ids
    if len(ids) < need:
        sys.exit(f"text has only {len(ids)} tokens, need {need}")
    ids = ids[:need]
    if args.dump_ids:
        print(json.dumps(ids[: args.dump_ids]), file=sys.stderr)

    model = Llama(reader, dtype)
    total, count = 0.0, 0
    t0 = time.time()
    for wi in range(args.windows):
        win = ids[wi * args.window_len:(wi + 1) * args.window_len]
        nll = nll_of_window(model, win)
        total += float(nll.sum())
        count += len(nll)
        print(f"window {wi}: mean_nll {nll.mean():.6f} ({time.time() - t0:.1f}s)",
              file=sys.stderr)
    mean = total / count
    print(json.dumps({"ppl": math.exp(mean), "mean_nll": mean, "tokens_scored": count}))


if __name__ == "__main__":
    main()
