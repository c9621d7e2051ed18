"""Side-by-side training throughput: the real training loop, our steps, Hugging Face ``BertForMaskedLM``.

All contestants run in one process, on the same device, batch shape and optimizer (AdamW, fused
on CUDA and CPU), interleaved round-robin so that drift in machine load hits them alike; with several
``precisions`` every contestant runs once per precision, in the same rounds. Contestants:

* ``hf_bert_mlm`` — ``BertForMaskedLM`` (SDPA, its default), 15 % of tokens masked, on batches
  built ahead, stepped as HF's ``Trainer`` does by default (gradients clipped to norm 1, as ours
  are; AdamW); ``hf_bert_mlm_eager`` — the same with ``attn_implementation="eager"`` (on a CPU
  the faster of the two at short rows, as our ``model.attention=auto`` picks the eager kernel
  there);
* ``ours_mlm`` / ``ours_hybrid_shared`` / ``ours_hybrid_separate`` — the training loop's step
  function (:func:`predrecon.train.step.train_step`: forward, backward, clip, optimizer, EMA) on
  batches built ahead (masks from our collator);
* ``loop_mlm`` / ``loop_hybrid_shared`` (``loop=True``) — the training loop's own step,
  :func:`predrecon.train.step.train_step` (rows from the batcher over a built dataset, masks from
  the collator, forward/backward, clip, optimizer, EMA) plus the loop's log record every
  ``train.log_every`` steps, written to a JSONL file.

Reported per contestant: tokens/s (real tokens: non-padding ``segment_ids``; the built-ahead
batches have no padding), the ratio to HF's MLM step (SDPA) at the same precision and to the
faster of HF's two attention implementations, MFU (analytic matmul
FLOPs per token, :func:`predrecon.experiment.matmul_flops_per_token`, against a stated peak:
``--peak-tflops``, the GPU's bf16 dense figure, or on CPU the best of timed 4096 x 512 x 2048
matmuls, measured before and in every round), the FLOPs per token one step really executes
(counted by ``torch.utils.flop_counter.FlopCounterMode`` over the first step, before the warm-up:
padded index widths and HF's logits at every position included; GradNorm's extra backward, which
runs on one step in ``objective.gradnorm_every``, is not, so the hybrid's average is a little
higher) and
the hardware FLOP utilisation they give (HFU: counted FLOP/s over the same peak) — a step's
speed-up over HF is its FLOP ratio times its HFU ratio — and,
on CUDA, the contestant's own peak memory: what it keeps allocated (its model, EMA target,
optimizer state and batches, measured as it is built and warmed up) plus its steps' high-water
mark above what every contestant keeps allocated — all models share the GPU, and the others'
memory is not counted against it. CPU runs report the process's RSS high-water mark and the glibc
allocator settings (``GLIBC_TUNABLES``): with the default thresholds every large buffer freed is
returned to the OS and its pages fault in again on the next step, which costs HF's dense
(tokens x vocab) logits far more than our steps (docs/results.md).

    predrecon bench --shape base --batch 256 --seq 128                 # GPU (bf16, SDPA)
    predrecon bench --shape tiny --batch 16 --precision fp32,bf16      # CPU
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig, RunConfig, apply_overrides
from .data.tokenizer import SpecialIds
from .presets import get_preset
from .train.step import fused_adamw

SHAPES = {  # dim, depth, heads
    "tiny": (128, 4, 4),
    "paper": (512, 6, 8),
    "base": (768, 12, 12),
}
VOCAB = 30522
SPECIAL = SpecialIds(pad_id=0, unk_id=100, cls_id=101, sep_id=102, mask_id=103)
# dense bf16 TFLOP/s by device-name substring, the first that matches: the PCIe and NVL boards
# ("NVIDIA H100 PCIe", "NVIDIA H100 NVL") run lower clocks than the SXM ones ("NVIDIA H100 80GB HBM3")
GPU_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H200 NVL": 835.0, "H100": 989.4, "H200": 989.4,
                   "A100": 312.0}
STEP_KINDS = (("ours_mlm", "mlm", "shared"), ("ours_hybrid_shared", "hybrid", "shared"),
              ("ours_hybrid_separate", "hybrid", "separate"))
LOOP_KINDS = (("loop_mlm", "mlm", "shared"), ("loop_hybrid_shared", "hybrid", "shared"))
HF_KINDS = (("hf_bert_mlm", "sdpa"), ("hf_bert_mlm_eager", "eager"))
HF_MAX_GRAD_NORM = 1.0  # transformers.TrainingArguments.max_grad_norm's default


@dataclass
class Contestant:
    name: str
    step: Callable[[], int | None]  # one optimizer step; returns its real tokens (None: batch * seq)
    flops_per_token: float = 0.0
    precision: str = "fp32"
    counted: bool = True  # count its FLOPs (not for compiled steps: the counter runs eagerly)


def counted_flops_per_token(step: Callable[[], int | None], default_tokens: int) -> float:
    """FLOPs per real token that one call of ``step`` executes, as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them (matmuls, attention, convolutions:
    2 per multiply-add, forward and backward). ``default_tokens``: the step's tokens when it
    returns None. The call is a real step (the optimizer updates). torch's CPU flash-attention
    kernel, which its counter leaves out, is counted with the formulas of the CUDA kernels (scores
    and values forward; the backward recomputes the scores)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def fwd(q, k, v, *args, out_shape=None, **kwargs):  # shapes in, as the counter's own formulas
        return sdpa_flop_count(q, k, v)

    def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    extra = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    with FlopCounterMode(display=False, custom_mapping=extra) as counter:
        n = step()
    tokens = default_tokens if n is None else n
    return counter.get_total_flops() / tokens if tokens else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _our_cfg(shape: str, kind: str, path: str, seq: int, batch: int) -> RunConfig:
    d, depth, heads = SHAPES[shape]
    cfg = get_preset("base")
    cfg.model = ModelConfig(vocab_size=VOCAB, dim=d, depth=depth, heads=heads, max_len=512, positions="learned")
    return apply_overrides(cfg, [f"objective.kind={kind}", f"objective.student_path={path}",
                                 f"data.seq_len={seq}", f"train.batch_size={batch}", "train.steps=100000",
                                 "optim.warmup_steps=0", f"jepa.predictor_dim={max(64, d // 2)}",
                                 f"jepa.predictor_heads={max(1, heads // 2)}", "jepa.predictor_depth=4"])


def _batches(cfg: RunConfig, n: int, device: torch.device, fixed_widths: bool = False
             ) -> list[dict[str, torch.Tensor]]:
    """Full rows of random non-special tokens (no padding), masks from our collator."""
    from .data.masking import Collator

    g = torch.Generator().manual_seed(0)
    col = Collator(cfg.mlm, cfg.jepa, cfg.objective, SPECIAL, VOCAB, seed=0, fixed_widths=fixed_widths, max_docs=1)
    out = []
    B, T = cfg.train.batch_size, cfg.data.seq_len
    for i in range(n):
        ids = torch.randint(1000, VOCAB, (B, T), generator=g)
        ids[:, 0], ids[:, -1] = SPECIAL.cls_id, SPECIAL.sep_id
        rows = {"input_ids": ids, "position_ids": torch.arange(T).expand(B, T).clone(),
                "segment_ids": torch.ones(B, T, dtype=torch.long)}
        out.append({k: v.to(device) for k, v in col(rows, i).items()})
    return out


def _our_context(cfg: RunConfig, device: torch.device, amp: torch.dtype | None, n_batches: int,
                 compiled: bool = False) -> Any:
    """A :class:`~predrecon.train.step.StepContext` for ``cfg`` (a fresh model and optimizer on
    ``device``) whose batch source cycles over ``n_batches`` batches built ahead."""
    from .train.loop import build_optimizer
    from .train.meta import HybridModel
    from .train.step import StepContext, compile_model

    model = HybridModel(cfg, VOCAB, SPECIAL).to(device).train()
    if compiled:  # as train.compile=true: inductor, static shapes from fixed index widths
        compile_model(model)
    opt = build_optimizer(model, cfg, fused=fused_adamw(device))
    batches = _batches(cfg, n_batches, device, fixed_widths=compiled)
    tokens = cfg.train.batch_size * cfg.data.seq_len
    return StepContext(cfg, model, opt, lambda s: ([batches[s % len(batches)]], tokens), device, amp=amp)


def _ours(cfg: RunConfig, device: torch.device, amp: torch.dtype | None, n_batches: int,
          compiled: bool = False) -> Callable[[], None]:
    """Our step on batches built ahead: the training loop's own
    :func:`~predrecon.train.step.train_step` (schedules, forward/backward, clip, optimizer, EMA,
    the balancer on its own schedule) with the batch source cycling over ``n_batches``."""
    from .train.step import train_step

    ctx = _our_context(cfg, device, amp, n_batches, compiled)
    it = [0]

    def step() -> None:
        train_step(ctx, it[0])
        it[0] += 1

    return step


def _stepper(loss_of: Callable[[dict], torch.Tensor], batches: list[dict], opt: torch.optim.Optimizer,
             device: torch.device, amp: torch.dtype | None, clip: float = HF_MAX_GRAD_NORM) -> Callable[[], None]:
    """One optimizer step per call over ``batches`` in turn: autocast forward, backward, gradient
    clipping to norm ``clip`` (0: none), step, ``zero_grad(set_to_none=True)`` — the step of HF's
    ``Trainer`` with its defaults (and what our step does: ``optim.grad_clip=1.0``)."""
    it = [0]
    params = [p for g in opt.param_groups for p in g["params"]]

    def step() -> None:
        b = batches[it[0] % len(batches)]
        it[0] += 1
        ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
        with ctx:
            loss = loss_of(b)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def synthetic_dataset(out: Path, seq: int, n_docs: int = 64, rows_per_doc: int = 4, seed: int = 0) -> Path:
    """Build a dataset of ``n_docs`` documents of whole-word ``bert-base-uncased`` tokens, each
    exactly ``rows_per_doc * (seq - 2)`` tokens long, so packed rows are full single-document rows
    (no padding) — the same row shape as the built-ahead batches of the step contestants."""
    from .data.shards import build_shards
    from .data.tokenizer import load_tokenizer

    tok = load_tokenizer("bert-base-uncased")
    words = sorted(w for w, i in tok.get_vocab().items() if i >= 2000 and w.isalpha() and w.isascii())
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(words) for _ in range(rows_per_doc * (seq - 2))) for _ in range(n_docs)]
    build_shards(docs, tok, out, tokenizer_name="bert-base-uncased", val_fraction=0.0,
                 doc_chars=10**9, progress=False)
    return out


def _loop(cfg: RunConfig, data: str, device: torch.device, amp: torch.dtype | None, workdir: Path,
          prefetch: int = 0, fixed_widths: bool = False) -> Callable[[], int]:
    """The training loop's step over ``data``: :func:`~predrecon.train.step.train_step` and, every
    ``train.log_every`` steps, the loop's log record (host sync, float conversion, JSONL write)."""
    from .data.batching import make_batcher
    from .data.masking import Collator
    from .data.shards import TokenDataset
    from .train.diagnostics import FaultMonitor
    from .train.loop import JsonlLogger, build_optimizer, seed_everything
    from .train.meta import HybridModel
    from .train.step import StepContext, make_source, train_step

    ds = TokenDataset(data)
    cfg = apply_overrides(cfg, [f"data.path={data}", f"model.vocab_size={ds.vocab_size}"])
    seed_everything(cfg.train.seed)
    model = HybridModel(cfg, ds.vocab_size, ds.special_ids).to(device).train()
    opt = build_optimizer(model, cfg, fused=fused_adamw(device))
    batcher = make_batcher(ds, cfg.data, "train", cfg.train.batch_size, cfg.train.seed)
    collator = Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, cfg.train.seed,
                        fixed_widths=fixed_widths, max_docs=1 if fixed_widths else None)
    src = make_source(batcher, collator, cfg.optim.accum_steps, device, 0, cfg.train.steps, prefetch)
    ctx = StepContext(cfg, model, opt, src, device, amp=amp, monitor=FaultMonitor(device, cfg.train.max_nonfinite))
    workdir.mkdir(parents=True, exist_ok=True)
    log = JsonlLogger(workdir / f"{cfg.objective.kind}-{amp}-{prefetch}-{id(ctx)}.jsonl", None)
    state = {"step": 0}

    def step() -> int:
        s = state["step"]
        r = train_step(ctx, s)
        state["step"] = s + 1
        if (s + 1) % cfg.train.log_every == 0:
            skipped = ctx.monitor.check(s + 1)
            rec = {k: float(v) for k, v in r.logs.items()}
            rec.update(step=s + 1, lr=r.lr, grad_norm=float(r.grad_norm), skipped_steps=skipped)
            log.write(rec)
        return r.tokens

    return step


def _hf(shape: str, seq: int, batch: int, device: torch.device, amp: torch.dtype | None,
        n_batches: int, attn: str = "sdpa") -> Callable[[], None]:
    from transformers import BertConfig, BertForMaskedLM

    d, depth, heads = SHAPES[shape]
    conf = BertConfig(vocab_size=VOCAB, hidden_size=d, num_hidden_layers=depth, num_attention_heads=heads,
                      intermediate_size=4 * d, max_position_embeddings=512, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, attn_implementation=attn)
    model = BertForMaskedLM(conf).to(device).train()
    kw = {"fused": True} if fused_adamw(device) else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **kw)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n_batches):
        ids = torch.randint(1000, VOCAB, (batch, seq), generator=g)
        sel = torch.rand(batch, seq, generator=g) < 0.15
        labels = torch.where(sel, ids, torch.full_like(ids, -100))
        inp = torch.where(sel, torch.full_like(ids, SPECIAL.mask_id), ids)
        batches.append({"input_ids": inp.to(device), "attention_mask": torch.ones_like(ids).to(device),
                        "labels": labels.to(device)})
    return _stepper(lambda b: model(**b).loss, batches, opt, device, amp)


def _flops(cfg: RunConfig, kind: str) -> float:
    from .experiment import matmul_flops_per_token

    return matmul_flops_per_token(cfg, kind)


def peak_flops(device: torch.device, amp: torch.dtype | None, given_tflops: float | None = None,
               reps: int = 8) -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained) for MFU: ``given_tflops``; on CUDA the device's dense
    bf16 figure (``GPU_PEAK_TFLOPS``); on CPU the best of three timed 4096 x 512 x 2048 matmuls
    in the run's precision."""
    if given_tflops:
        return given_tflops * 1e12, "given"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tf in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tf * 1e12, f"{key} dense bf16 spec"
        return float("nan"), f"unknown GPU {name!r}"
    dt = amp or torch.float32
    a, b = torch.randn(4096, 512, dtype=dt), torch.randn(512, 2048, dtype=dt)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    rate = 2 * 4096 * 512 * 2048 / best if best > 0 else float("nan")
    return rate, f"measured {str(dt).replace('torch.', '')} matmul 4096x512x2048"


class CudaMemory:
    """The CUDA caching allocator's counters for ``device`` (bytes held by live tensors)."""

    def __init__(self, device: torch.device):
        self.device = device

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)


def _memory_meter(device: torch.device) -> CudaMemory | None:
    """Where peak memory is measured per contestant (CUDA); None elsewhere (a CPU run reports the
    process's RSS high-water mark instead)."""
    return CudaMemory(device) if device.type == "cuda" else None


def _rss_gib() -> float | None:
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except (ImportError, OSError):
        return None


def run_bench(shape: str = "tiny", batch: int = 32, seq: int = 128, steps: int = 10, warmup: int = 3,
              rounds: int = 3, device: str = "auto", include_hf: bool = True, loop: bool = False,
              data: str | None = None, precisions: tuple[str, ...] = ("auto",),
              peak_tflops: float | None = None, prefetch: int = 0, compiled: bool = False) -> dict:
    """Measure every contestant; returns ``{'config': …, 'results': {name: {tokens_per_s,
    ratio_vs_hf_mlm, step_s_median, step_s_all, mfu, peak_mem_gib}}}``. Names carry ``@<precision>``
    when more than one precision is given. ``loop`` adds the real-loop contestants over ``data``
    (a built dataset; default: :func:`synthetic_dataset` in a temporary directory); with
    ``prefetch`` > 0 also ``loop_hybrid_shared+prefetch``, whose batches come from a worker
    process ``prefetch`` steps ahead (that worker also runs while the other contestants do);
    ``compiled`` adds ``ours_mlm+compile`` and ``ours_hybrid_shared+compile`` (as
    ``train.compile=true``; compilation happens in the warm-up, outside the timed rounds)."""
    from .train.step import autocast_dtype

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    tmp = tempfile.TemporaryDirectory(prefix="predrecon-bench-")
    work = Path(tmp.name)
    data_label = data
    if loop and data is None:
        data = str(synthetic_dataset(work / "data", seq))
        data_label = "synthetic (bert-base-uncased words, full single-document rows)"
    contestants: list[Contestant] = []
    peaks: dict[str, tuple[float, str]] = {}
    meter = _memory_meter(dev)
    resident: dict[str, int] = {}  # bytes each contestant keeps allocated (model, EMA, optimizer, batches)

    def add(name: str, flops: float, pname: str, make: Callable[..., Callable[[], int | None]], *args,
            counted: bool = True, **kwargs) -> None:  # builds the contestant's step: make(*args, **kwargs)
        before = meter.allocated() if meter else 0
        contestants.append(Contestant(name, make(*args, **kwargs), flops, pname, counted))
        resident[name] = meter.allocated() - before if meter else 0

    for prec in precisions:
        amp = autocast_dtype(prec, dev, SHAPES[shape][0])
        pname = "bf16" if amp == torch.bfloat16 else ("fp16" if amp == torch.float16 else "fp32")
        peaks[pname] = peak_flops(dev, amp, peak_tflops)
        sfx = f"@{pname}" if len(precisions) > 1 else ""
        mlm_cfg = _our_cfg(shape, "mlm", "shared", seq, batch)
        if include_hf:
            for name, attn in HF_KINDS:
                add(name + sfx, _flops(mlm_cfg, "mlm"), pname, _hf, shape, seq, batch, dev, amp, 4, attn)
        for name, kind, path in STEP_KINDS:
            cfg = _our_cfg(shape, kind, path, seq, batch)
            add(name + sfx, _flops(cfg, kind), pname, _ours, cfg, dev, amp, 4)
        if compiled:
            for name, kind, path in STEP_KINDS[:2]:
                cfg = _our_cfg(shape, kind, path, seq, batch)
                add(f"{name}+compile{sfx}", _flops(cfg, kind), pname, _ours, cfg, dev, amp, 4, compiled=True,
                    counted=False)
        if loop:
            for name, kind, path in LOOP_KINDS:
                cfg = _our_cfg(shape, kind, path, seq, batch)
                add(name + sfx, _flops(cfg, kind), pname, _loop, cfg, str(data), dev, amp, work / "logs")
            if prefetch > 0:
                cfg = _our_cfg(shape, "hybrid", "shared", seq, batch)
                add("loop_hybrid_shared+prefetch" + sfx, _flops(cfg, "hybrid"), pname, _loop, cfg, str(data), dev,
                    amp, work / "logs", prefetch=prefetch)
    counted: dict[str, float | None] = {}
    for c in contestants:  # one counted step, then the warm-up (allocator, kernels, autotuning)
        before = meter.allocated() if meter else 0
        counted[c.name] = counted_flops_per_token(c.step, batch * seq) if c.counted else None
        for _ in range(warmup):
            c.step()
        _sync(dev)
        if meter:  # what the first steps left allocated for good: optimizer state, caches
            resident[c.name] += meter.allocated() - before
    times: dict[str, list[float]] = {c.name: [] for c in contestants}
    tokens: dict[str, int] = {c.name: 0 for c in contestants}
    mem: dict[str, float] = {c.name: 0.0 for c in contestants}
    run_high = 0
    for _ in range(rounds):
        for pname in peaks:  # a measured CPU peak is re-measured every round; the best one counts
            if peaks[pname][1].startswith("measured"):
                again = peak_flops(dev, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(pname), reps=2)
                if again[0] > peaks[pname][0]:
                    peaks[pname] = again
        for c in contestants:
            _sync(dev)
            if meter:
                base = meter.allocated()  # every contestant's resident memory
                run_high = max(run_high, meter.peak())  # the whole run's, before the counter restarts
                meter.reset_peak()
            t = time.perf_counter()
            for _ in range(steps):
                n = c.step()
                tokens[c.name] += batch * seq if n is None else n
            _sync(dev)
            times[c.name].append((time.perf_counter() - t) / steps)
            if meter:  # its own: what it keeps allocated plus its steps' high-water mark above the base
                mem[c.name] = max(mem[c.name], (resident[c.name] + meter.peak() - base) / 2**30)
    res = {}
    for c in contestants:
        v = times[c.name]
        per_step = tokens[c.name] / (steps * rounds)
        tps = per_step / statistics.median(v)
        peak = peaks[c.precision][0]
        res[c.name] = {"tokens_per_s": tps, "step_s_median": statistics.median(v), "step_s_all": v,
                       "tokens_per_step": per_step, "precision": c.precision,
                       "mfu": tps * c.flops_per_token / peak if c.flops_per_token and peak == peak else None,
                       "flops_per_token_counted": counted[c.name],
                       "hfu": tps * counted[c.name] / peak if counted[c.name] and peak == peak else None,
                       "peak_mem_gib": mem[c.name] if meter else None}
    for c in contestants:
        sfx = f"@{c.precision}" if len(precisions) > 1 else ""
        hfs = {n: res.get(n + sfx, {}).get("tokens_per_s") for n, _ in HF_KINDS}
        hf, best = hfs["hf_bert_mlm"], max((v for v in hfs.values() if v), default=None)
        res[c.name]["ratio_vs_hf_mlm"] = res[c.name]["tokens_per_s"] / hf if hf else None
        res[c.name]["ratio_vs_best_hf"] = res[c.name]["tokens_per_s"] / best if best else None
    out = {"config": {"shape": shape, "batch": batch, "seq": seq, "steps": steps, "rounds": rounds,
                      "device": str(dev), "precision": ",".join(sorted({c.precision for c in contestants}))
                      or ",".join(precisions),
                      "peak_flops": {k: {"tflops": p / 1e12, "source": s} for k, (p, s) in peaks.items()},
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "loop_data": data_label if loop else None},
           "results": res}
    if meter:  # all contestants' models on the device at once, and the highest of anyone's steps
        out["config"]["max_mem_gib"] = max(run_high, meter.peak()) / 2**30
    if dev.type == "cuda":
        out["config"]["gpu"] = torch.cuda.get_device_name(dev)
    else:
        out["config"]["rss_high_water_gib"] = _rss_gib()
        out["config"]["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "default")
    tmp.cleanup()
    return out


def format_table(out: dict) -> str:
    """Markdown table: name, tokens/s, ratios (to HF SDPA, to the faster HF), MFU, counted
    MFLOPs per token and HFU; a peak-memory column when measured (CUDA)."""
    with_mem = any(r.get("peak_mem_gib") is not None for r in out["results"].values())
    lines = ["| step | tokens/s | × HF BertForMaskedLM | × faster HF | MFU | MFLOP/token counted | HFU |"
             + (" peak GiB |" if with_mem else ""),
             "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if with_mem else "")]
    for n, r in out["results"].items():
        ratio = f"{r['ratio_vs_hf_mlm']:.2f}" if r["ratio_vs_hf_mlm"] else "–"
        best = f"{r['ratio_vs_best_hf']:.2f}" if r.get("ratio_vs_best_hf") else "–"
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "n/a"
        fl = f"{r['flops_per_token_counted'] / 1e6:.1f}" if r.get("flops_per_token_counted") else "n/a"
        hfu = f"{100 * r['hfu']:.1f} %" if r.get("hfu") is not None else "n/a"
        row = f"| {n} | {r['tokens_per_s']:,.0f} | {ratio} | {best} | {mfu} | {fl} | {hfu} |"
        if with_mem:
            row += f" {r['peak_mem_gib']:.2f} |" if r.get("peak_mem_gib") is not None else " n/a |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="predrecon bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto",
                   help="comma-separated: auto|fp32|bf16 (several: every contestant once per precision)")
    p.add_argument("--no-loop", action="store_true", help="leave out the real-loop contestants")
    p.add_argument("--prefetch", type=int, default=0,
                   help="also time the real loop with batches made this many steps ahead in a worker process")
    p.add_argument("--data", help="built dataset for the real-loop contestants (default: a synthetic one)")
    p.add_argument("--compile", action="store_true", help="also time our steps compiled (train.compile=true)")
    p.add_argument("--peak-tflops", type=float, help="peak FLOP/s (in TFLOP/s) that MFU is stated against")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    precs = tuple(x.strip() for x in a.precision.split(",") if x.strip())
    bad = [x for x in precs if x not in ("auto", "fp32", "bf16", "fp16")]
    if bad or not precs:
        p.error(f"--precision: must be auto|fp32|bf16|fp16 (comma-separated), got {a.precision!r}")
    out = run_bench(a.shape, a.batch, a.seq, a.steps, warmup=a.warmup, rounds=a.rounds, device=a.device,
                    loop=not a.no_loop, data=a.data, precisions=precs, peak_tflops=a.peak_tflops,
                    prefetch=a.prefetch, compiled=a.compile)
    print(json.dumps(out["config"]))
    print(format_table(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0
