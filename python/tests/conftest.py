"""Shared helpers: the `optima` binary the results are compared with, problem files (safetensors
read and written here with numpy alone, independently of the Rust reader), small problems."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "U8": np.uint8}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, as numpy arrays."""
    data = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = data[8 + header_len :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
    return out


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Writes tensors (little-endian, C order) as a safetensors file."""
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


@pytest.fixture(scope="session")
def optima_bin() -> Path:
    """The `optima` binary: $OPTIMA_BIN, else the workspace's release or debug build."""
    candidates = [os.environ.get("OPTIMA_BIN")] if os.environ.get("OPTIMA_BIN") else []
    candidates += [REPO / "target/release/optima", REPO / "target/debug/optima"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.fail("no optima binary to compare with: run `cargo build --release -p optima-cli` or set OPTIMA_BIN")


def run_cli(optima_bin: Path, *args: str) -> dict:
    """Runs `optima ARGS --json` and returns its JSON object."""
    done = subprocess.run([str(optima_bin), *args, "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def generated_problem(optima_bin, tmp_path_factory) -> Path:
    """A 48×128 LLM-like layer problem written by `optima generate` (no mask)."""
    path = tmp_path_factory.mktemp("problems") / "layer.safetensors"
    done = subprocess.run(
        [str(optima_bin), "generate", "--shape", "48x128", "--seed", "3", "--out", str(path)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    return path


def small_problem(m=6, n=16, tokens=64, seed=0, mask_ratio=0.5):
    """Activations X (tokens×n), weights W (m×n), H = XᵀX/N and a random mask with a fixed count per row."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, n)) @ rng.standard_normal((n, n)) * 0.5
    w = rng.standard_normal((m, n))
    h = x.T @ x / tokens
    pruned = int(mask_ratio * n)
    mask = np.zeros((m, n), dtype=bool)
    for i in range(m):
        mask[i, rng.permutation(n)[:pruned]] = True
    return x, w, h, mask
