"""The one prepared check for a machine with a GPU: correctness of the GPU path in bf16, then the
side-by-side benchmark at the ``base`` shape. Everything lands in one JSON file.

    PYTHONPATH=src:.device-data/site python3 benchmarks/gpu_check.py --out "$OUT"

(from a checkout whose git-ignored ``.device-data/site`` holds the ``bert-base-uncased`` tokenizer
package, which the real-loop contestants' synthetic dataset needs: ``make device-data``).

Checks, each with its numbers and a pass/fail against a stated tolerance:

1. ``fused_ce`` — the chunked linear + cross-entropy against the plain logits path on the device:
   fp32 (loss rel. 1e-5, gradients rel. 1e-4) and under bf16 autocast against the plain bf16 path
   (loss rel. 2e-2, gradient norm of the difference 3e-2: the CPU test's tolerances).
2. ``attention`` — the eager kernel against SDPA on the device, packed rows (block-diagonal mask
   with padding), outputs and q/k/v gradients: fp32 within 1e-4, bf16 within 3e-2 (max abs).
3. ``bf16_losses`` — the first 10 steps of a small hybrid run on built-ahead batches, bf16 autocast
   against fp32 (TF32 off): MLM and JEPA losses within a relative 1e-2 on every step (the CPU
   test allows 1e-3 and measures 1e-4; GPU kernels round differently, so the figure is reported).
4. ``sync_free`` — one step of a small hybrid run in bf16 under ``torch.cuda.set_sync_debug_mode
   ("error")``, counting reads back to the host: none allowed (skipped on a CPU).
5. ``bench`` — ``predrecon bench --shape base --batch 256 --seq 128 --precision bf16 --prefetch 2``:
   the real loop, our steps and HF ``BertForMaskedLM`` in one process (tokens/s, ratios, MFU,
   counted FLOPs, each contestant's own peak memory).

``--device cpu --bench-shape tiny --bench-batch 4`` runs the same script on a CPU in seconds (the
test suite does, so the script cannot rot unseen).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from predrecon import bench
from predrecon.model.encoder import attention, segment_attention_mask
from predrecon.objectives.mlm import linear_cross_entropy


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| (Frobenius norms, fp32)."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_fused_ce(dev: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    n, d, v, v_pad = 300, 64, 1000, 1024
    x0 = torch.randn(n, d, generator=g)
    w0 = torch.randn(v_pad, d, generator=g) * 0.1
    b0 = torch.randn(v_pad, generator=g) * 0.1
    lab = torch.randint(v, (n,), generator=g)
    lab[torch.rand(n, generator=g) < 0.3] = -100
    out: dict = {}
    for name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
        ts = [t.to(dev).requires_grad_(True) for t in (x0, w0, b0)]
        x, w, b = ts
        labels = lab.to(dev)
        ctx = torch.autocast(dev.type, dtype=amp) if amp else torch.autocast(dev.type, enabled=False)
        with ctx:
            ref = F.cross_entropy((x @ w[:v].T + b[:v]).float(), labels, ignore_index=-100)
        g_ref = torch.autograd.grad(ref, ts)
        with ctx:
            got = linear_cross_entropy(x, w, b, labels, chunk=128, num_classes=v)
        g_got = torch.autograd.grad(got, ts)
        loss_rel = abs(float(got.detach()) - float(ref.detach())) / abs(float(ref.detach()))
        grad_rel = max(_rel(a, c) for a, c in zip(g_got, g_ref))
        tol_loss, tol_grad = (1e-5, 1e-4) if amp is None else (2e-2, 3e-2)
        out[name] = {"loss_rel": loss_rel, "grad_rel": grad_rel, "tol_loss": tol_loss, "tol_grad": tol_grad,
                     "pass": loss_rel <= tol_loss and grad_rel <= tol_grad}
    out["pass"] = all(out[k]["pass"] for k in ("fp32", "bf16"))
    return out


def check_attention(dev: torch.device) -> dict:
    g = torch.Generator().manual_seed(1)
    B, H, T, hd = 4, 4, 96, 32
    seg = torch.ones(B, T, dtype=torch.long)
    seg[:, T // 3:] = 2  # two documents per row
    seg[1, T - 20:] = 0  # and padding
    mask = segment_attention_mask(seg.to(dev))
    q0, k0, v0 = (torch.randn(B, H, T, hd, generator=g) for _ in range(3))
    out: dict = {}
    for name, dt, tol in (("fp32", torch.float32, 1e-4), ("bf16", torch.bfloat16, 3e-2)):
        res = {}
        for impl in ("eager", "sdpa"):
            q, k, v = (t.to(dev, dt).requires_grad_(True) for t in (q0, k0, v0))
            o = attention(q, k, v, mask, impl=impl)
            grads = torch.autograd.grad(o.float().square().sum(), (q, k, v))
            res[impl] = (o.detach().float(), [gr.float() for gr in grads])
        err = max([float((res["eager"][0] - res["sdpa"][0]).abs().max())] +
                  [float((a - c).abs().max() / c.abs().max().clamp_min(1e-30))
                   for a, c in zip(res["eager"][1], res["sdpa"][1])])
        out[name] = {"max_err": err, "tol": tol, "pass": err <= tol}
    out["pass"] = out["fp32"]["pass"] and out["bf16"]["pass"]
    return out


def check_bf16_losses(dev: torch.device, steps: int = 10, rtol: float = 1e-2) -> dict:
    from predrecon.train.loop import seed_everything
    from predrecon.train.step import train_step

    cfg = bench._our_cfg("tiny", "hybrid", "shared", 64, 8)
    curves = {}
    for name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
        seed_everything(0)
        ctx = bench._our_context(cfg, dev, amp, steps)
        curves[name] = [{k: float(v) for k, v in train_step(ctx, s).logs.items() if k in ("loss_mlm", "loss_jepa")}
                        for s in range(steps)]
    diffs = [abs(b[k] - a[k]) / abs(a[k]) for a, b in zip(curves["fp32"], curves["bf16"]) for k in a]
    return {"max_rel_diff": max(diffs), "tol": rtol, "curves": curves,
            "pass": max(diffs) <= rtol and max(diffs) > 0}


def check_sync_free(dev: torch.device) -> dict:
    """Two steps of a small hybrid run on built-ahead batches; the second under
    ``torch.cuda.set_sync_debug_mode("error")`` (any synchronising call raises) and counting every
    read back to the host (:class:`~predrecon.train.syncs.HostReads`). Pass: no read, no error. A CPU
    takes the step's branching path by design (``tests/test_sync_free.py`` checks the accelerator
    path there): skipped."""
    if dev.type != "cuda":
        return {"pass": True, "skipped": f"{dev.type}: not an accelerator"}
    return _step_syncs(dev)


def _step_syncs(dev: torch.device) -> dict:
    from predrecon.train.diagnostics import FaultMonitor
    from predrecon.train.loop import seed_everything
    from predrecon.train.step import train_step
    from predrecon.train.syncs import HostReads

    seed_everything(0)
    ctx = bench._our_context(bench._our_cfg("tiny", "hybrid", "shared", 64, 8), dev, torch.bfloat16, 2)
    ctx.monitor = FaultMonitor(dev, 5)
    train_step(ctx, 0)  # lazy state made outside the count
    error = None
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.set_sync_debug_mode("error")
    try:
        with HostReads() as reads:
            res = train_step(ctx, 1)
    except RuntimeError as e:  # a synchronising call under the debug mode
        error, res = f"{type(e).__name__}: {e}", None
    finally:
        if dev.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)
    finite = res is not None and bool(torch.isfinite(res.logs["loss"]))
    return {"host_reads": dict(reads.hits), "error": error, "finite": finite,
            "pass": not reads.hits and error is None and finite}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=".", help="folder for gpu_check.json (on the device machine: $OUT)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bench-shape", default="base")
    p.add_argument("--bench-batch", type=int, default=256)
    p.add_argument("--bench-seq", type=int, default=128)
    p.add_argument("--bench-steps", type=int, default=10)
    p.add_argument("--no-bench", action="store_true")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    if dev.type == "cuda":  # the fp32 references are IEEE fp32 (TF32 would miss the 1e-4 tolerances)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    report: dict = {"device": str(dev), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
                    "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32,
                             # set in some container images: cuBLAS then uses TF32 whatever the flags say
                             "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")}}
    for name, fn in (("fused_ce", check_fused_ce), ("attention", check_attention), ("bf16_losses", check_bf16_losses),
                     ("sync_free", check_sync_free)):
        t = time.perf_counter()
        try:
            report[name] = fn(dev)
        except Exception as e:  # report and go on: one broken check must not hide the others
            report[name] = {"pass": False, "error": f"{type(e).__name__}: {e}"}
        report[name]["seconds"] = time.perf_counter() - t
        print(name, "pass" if report[name]["pass"] else "FAIL", flush=True)
    if not a.no_bench:
        t = time.perf_counter()
        try:
            res = bench.run_bench(a.bench_shape, a.bench_batch, a.bench_seq, a.bench_steps, warmup=3, rounds=3,
                                  device=str(dev), loop=True, precisions=("bf16",), prefetch=2)
            report["bench"] = res
            print(bench.format_table(res), flush=True)
        except Exception as e:
            report["bench"] = {"error": f"{type(e).__name__}: {e}"}
            print("bench FAILED:", report["bench"]["error"], flush=True)
        report["bench_seconds"] = time.perf_counter() - t
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    checks = ("fused_ce", "attention", "bf16_losses", "sync_free")
    ok = all(report[c]["pass"] for c in checks) and "error" not in report.get("bench", {})
    print("all checks passed" if ok else "SOME CHECKS FAILED", "->", out / "gpu_check.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
