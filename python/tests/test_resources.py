"""No reference or memory grows over many calls, and the GIL is free while Rust works."""

import gc
import sys
import threading
import time

import numpy as np

import optima
from conftest import small_problem


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_references_and_memory_stay_flat_over_1000_calls():
    x, w, h, mask = small_problem(m=32, n=64, tokens=128, seed=3)
    x32 = x.astype(np.float32)
    inputs = (w, h, mask, x32)

    def calls(count):
        for _ in range(count):
            new, report = optima.reconstruct(w, h, mask, solver="direct", threads=1)
            optima.select_mask(w, h, pattern="2:4")
            acc = optima.HessianAccumulator(64, threads=1)
            acc.add_batch(x32)
            acc.finish()
            try:
                optima.reconstruct(w, h[:3], mask)
            except ValueError:
                pass
        return new, report

    calls(50)
    gc.collect()
    refs = [sys.getrefcount(a) for a in inputs]
    before = rss_bytes()
    new, report = calls(1000)
    gc.collect()
    after = rss_bytes()
    assert [sys.getrefcount(a) for a in inputs] == refs
    assert sys.getrefcount(new) == 2 and sys.getrefcount(report) == 2
    # One call allocates ~100 KiB; a leak of any of it a call would add ≥ 100 MiB here.
    assert after - before < 16 * 2**20, f"RSS grew by {(after - before) / 2**20:.1f} MiB over 1000 calls"


def test_the_gil_is_released_during_a_solve():
    _, w, h, mask = small_problem(m=512, n=384, tokens=768, seed=4)
    optima.reconstruct(w, h, mask, solver="direct", threads=1)
    started = time.perf_counter()
    optima.reconstruct(w, h, mask, solver="direct", threads=1)
    alone = time.perf_counter() - started
    ticks = 0
    worker = threading.Thread(target=optima.reconstruct, args=(w, h, mask), kwargs={"solver": "direct", "threads": 1})
    worker.start()
    deadline = time.perf_counter() + alone / 2
    while worker.is_alive() and time.perf_counter() < deadline:
        ticks += 1
    worker.join()
    # Holding the GIL for the solve would leave this thread no time to count at all.
    assert ticks > 1000, f"the main thread ran {ticks} loop iterations during a {alone:.3f} s solve"
