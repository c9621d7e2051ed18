"""The training loop's step against the same step on batches built ahead, A/B in one process.

Two contestants of ``predrecon bench`` only (``loop_*`` and ``ours_*``), alternating which runs
first in each round, so the loop's own cost (batcher, collator, logging) is what differs::

    python benchmarks/loop_vs_step.py --shape tiny --batch 16 --precision bf16 --rounds 6 --steps 8

Prints per objective the seconds per step of each round and the ratio of the medians
(loop / step; 1.00 = the loop costs nothing beyond its step).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from predrecon import bench
from predrecon.train.step import autocast_dtype


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="tiny", choices=sorted(bench.SHAPES))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "auto"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args()
    dev = torch.device("cpu")
    amp = autocast_dtype(a.precision, dev, bench.SHAPES[a.shape][0])
    tmp = Path(tempfile.mkdtemp())
    data = bench.synthetic_dataset(tmp / "ds", a.seq)
    for kind in ("mlm", "hybrid"):
        cfg = bench._our_cfg(a.shape, kind, "shared", a.seq, a.batch)
        contestants = {"step": bench._ours(cfg, dev, amp, 4), "loop": bench._loop(cfg, str(data), dev, amp, tmp / "w")}
        for f in contestants.values():
            f(), f()  # warm-up
        t: dict[str, list[float]] = {"step": [], "loop": []}
        for r in range(a.rounds):
            for name in ("step", "loop") if r % 2 == 0 else ("loop", "step"):
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    contestants[name]()
                t[name].append((time.perf_counter() - t0) / a.steps)
        ratio = statistics.median(t["loop"]) / statistics.median(t["step"])
        print(f"{kind}: s/step step {[round(x, 3) for x in t['step']]} loop {[round(x, 3) for x in t['loop']]} "
              f"-> loop / step = {ratio:.3f}")


if __name__ == "__main__":
    main()
