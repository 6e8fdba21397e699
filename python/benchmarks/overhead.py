"""What calling `optima.reconstruct` from Python costs over the same solve from Rust.

Rounds alternate, on the same problem file and settings: the Rust example `time_solve` (the
damped Hessian, the LayerProblem, the solver built and run, timed inside the process), then
`optima.reconstruct` timed around the call (numpy arrays in, weights and report dict out). The
medians and minima of each side are printed, with their ratio.

    cargo build --release -p optima --features problem-files --example time_solve
    ./target/release/optima generate --shape 576x1536 --out /tmp/layer.safetensors
    python python/benchmarks/overhead.py /tmp/layer.safetensors --solver auto --threads 2 --rounds 15
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import optima

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import REPO, read_safetensors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", type=Path)
    parser.add_argument("--pattern", default="0.5")
    parser.add_argument("--solver", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--rust-bin", type=Path, default=REPO / "target/release/examples/time_solve")
    args = parser.parse_args()

    problem = read_safetensors(args.problem)
    weight, hessian = problem["weight"], problem["hessian"]
    mask = optima.select_mask(weight, hessian, pattern=args.pattern, masker="wanda")
    rust_cmd = [str(args.rust_bin), str(args.problem), "--pattern", args.pattern, "--solver", args.solver,
                "--threads", str(args.threads), "--repeat", "2"]
    python, rust, objectives = [], [], set()
    optima.reconstruct(weight, hessian, mask, solver=args.solver, threads=args.threads)  # warm up
    for _ in range(args.rounds):
        out = json.loads(subprocess.run(rust_cmd, capture_output=True, text=True, check=True).stdout)
        rust.append(out["seconds"][-1])  # the second run of the process: warm like the Python side
        start = time.perf_counter()
        _, report = optima.reconstruct(weight, hessian, mask, solver=args.solver, threads=args.threads)
        python.append(time.perf_counter() - start)
        objectives.add((round(out["objective"], 6), round(report["objective"], 6)))
    m, n = weight.shape
    print(f"{m}x{n}, pattern {args.pattern}, solver {args.solver}, threads {args.threads}, {args.rounds} rounds")
    for name, values in (("rust", rust), ("python", python)):
        print(f"  {name:6s} median {statistics.median(values):.4f} s, min {min(values):.4f} s")
    print(f"  ratio python/rust: median {statistics.median(python) / statistics.median(rust):.3f}, "
          f"min {min(python) / min(rust):.3f}")
    print(f"  objectives (rust, python): {sorted(objectives)}")
    print(json.dumps({"rust": rust, "python": python, "weight_dtype": str(weight.dtype), "n": int(np.int64(n))}))


if __name__ == "__main__":
    main()
