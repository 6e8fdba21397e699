#!/usr/bin/env python3
"""Known-answer fixtures for the GGUF K-quant and IQ4 dequantizers (dev only).

Writes one small file per ggml type into crates/optima-llm/tests/fixtures/dequant/: pseudo-random
blocks (a fixed seed, Python's own `random`, so the bytes do not depend on numpy) and the f32
values that llama.cpp's gguf-py (`gguf.quants.dequantize`, numpy) decodes from them. The Rust test
tests/gguf_dequant_fixtures.rs compares the crate's decoder with them bit for bit.

    scripts/kquant-fixtures.py           (re)write the fixtures
    scripts/kquant-fixtures.py --check   regenerate in memory and fail if a committed file differs

Needs python3 with venv; on first use it makes a git-ignored venv in .venv/kquant-fixtures with the
pinned gguf and numpy from PyPI, and re-runs itself there. Neither is needed by the crate or its
tests.

File layout (all little-endian): magic b"OQFX", u32 version (1), u32 ggml type id, u32 element
count n, u32 byte count b, then b bytes of blocks, then n f32 values.

gguf-py has no Q8_K decoder (Q8_K is llama.cpp's intermediate type for dot products, never a model
file's storage type); its expected values are computed here from the block layout, d (f32) times
each signed byte, in numpy. The Rust decoder is written from the ggml block layouts, not from this.
"""

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "kquant-fixtures"
OUT = ROOT / "crates" / "optima-llm" / "tests" / "fixtures" / "dequant"
PINS = ["gguf==0.19.0", "numpy==2.4.6"]
SEED = 17
MAGIC = b"OQFX"
VERSION = 1


def ensure_env():
    """Re-runs this script inside the venv when gguf is not importable here."""
    try:
        import gguf  # noqa: F401
        import numpy  # noqa: F401

        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if os.environ.get("KQUANT_FIXTURES_IN_VENV"):
        sys.exit(f"gguf still not importable inside {VENV}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINS], check=True)
    env = dict(os.environ, KQUANT_FIXTURES_IN_VENV="1")
    os.execve(str(python), [str(python), __file__, *sys.argv[1:]], env)


# Per type: (name, ggml id, elements per block, bytes per block, offsets of f16 scale fields,
# offsets of f32 scale fields, blocks in the fixture).
TYPES = [
    ("Q2_K", 10, 256, 84, [80, 82], [], 4),
    ("Q3_K", 11, 256, 110, [108], [], 4),
    ("Q4_K", 12, 256, 144, [0, 2], [], 4),
    ("Q5_K", 13, 256, 176, [0, 2], [], 4),
    ("Q6_K", 14, 256, 210, [208], [], 4),
    ("Q8_K", 15, 256, 292, [], [0], 4),
    ("IQ4_NL", 20, 32, 18, [0], [], 16),
    ("IQ4_XS", 23, 256, 136, [0], [], 4),
]


def blocks_for(rng, block_bytes, f16_at, f32_at, n_blocks):
    """Blocks of four kinds, in turn: random bytes with small finite scales (a model's typical
    range), with large scales, with every quant byte 0xFF, and entirely random bytes (scales that
    may be infinite or NaN)."""
    import numpy as np

    out = bytearray()
    for i in range(n_blocks):
        kind = i % 4
        b = bytearray(rng.randbytes(block_bytes))
        if kind == 2:
            b = bytearray(b"\xff" * block_bytes)
        if kind != 3:
            scale = 2.0 ** rng.randint(-14, -4) if kind != 1 else 2.0 ** rng.randint(4, 12)
            for at in f16_at:
                v = np.float16(rng.uniform(-1.0, 1.0) * scale)
                b[at : at + 2] = v.tobytes()
            for at in f32_at:
                b[at : at + 4] = struct.pack("<f", rng.uniform(-1.0, 1.0) * scale)
        out += b
    return bytes(out)


def expected_values(name, ggml_id, data, block_elems, block_bytes):
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    raw = np.frombuffer(data, dtype=np.uint8)
    if name == "Q8_K":
        blocks = raw.reshape(-1, block_bytes)
        d = blocks[:, 0:4].copy().view(np.float32)
        qs = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * qs).astype(np.float32).reshape(-1)
    values = dequantize(raw, GGMLQuantizationType(ggml_id))
    return np.asarray(values, dtype=np.float32).reshape(-1)


def fixture_bytes(rng, spec):
    name, ggml_id, block_elems, block_bytes, f16_at, f32_at, n_blocks = spec
    data = blocks_for(rng, block_bytes, f16_at, f32_at, n_blocks)
    values = expected_values(name, ggml_id, data, block_elems, block_bytes)
    n = block_elems * n_blocks
    assert values.shape == (n,), (name, values.shape)
    header = MAGIC + struct.pack("<IIII", VERSION, ggml_id, n, len(data))
    return header + data + values.astype("<f4").tobytes()


def main():
    ensure_env()
    check = "--check" in sys.argv[1:]
    rng = random.Random(SEED)
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for spec in TYPES:
        path = OUT / f"{spec[0].lower()}.bin"
        content = fixture_bytes(rng, spec)
        if check:
            if not path.exists() or path.read_bytes() != content:
                stale.append(path)
        else:
            path.write_bytes(content)
            print(f"{path.relative_to(ROOT)}: {len(content)} bytes")
    if stale:
        sys.exit("out of date: " + ", ".join(str(p.relative_to(ROOT)) for p in stale))
    if check:
        print(f"{len(TYPES)} fixtures up to date")


if __name__ == "__main__":
    main()
