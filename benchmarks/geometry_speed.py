"""Timing of the geometry suite on a 10k x 768 matrix (a timing script, not a test).

Run: ``.venv/bin/python benchmarks/geometry_speed.py [--threads N] [--repeats R]``. Prints the
wall time of :func:`predrecon.eval.metrics.geometry.geometry_suite` (with class labels) per repeat and
the median; the target on an idle machine is about 1-2 s single-threaded.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from predrecon.eval.metrics import geometry as g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads for the suite")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=768)
    args = ap.parse_args()
    rng = np.random.default_rng(10)
    x = rng.standard_normal((args.n, args.d)).astype(np.float32)
    y = rng.integers(0, 3, args.n)
    g.geometry_suite(x[:300], y[:300], n_threads=args.threads)  # warm-up (BLAS threads, imports)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = g.geometry_suite(x, y, n_threads=args.threads)
        times.append(time.perf_counter() - t0)
        print(f"geometry_suite {args.n} x {args.d}, {args.threads} thread(s): {times[-1]:.2f} s "
              f"(effective rank {out['effective_rank']:.1f})")
    print(f"median {np.median(times):.2f} s over {args.repeats} repeats")


if __name__ == "__main__":
    main()
