"""One training step as a function, shared by the training loop and ``predrecon bench``.

:func:`train_step` is everything the loop does for one optimizer step except logging and
checkpointing: learning rate from the schedule, ``accum_steps`` micro-batches (rows from the
batch source, masks from the collator seeded by ``(seed, micro-step)``), forward/backward under
autocast with exact accumulation, clipping, the non-finite check and the optimizer + EMA update.
:class:`StepContext` holds what stays fixed during a run.

:func:`cpu_supports_bf16` / :func:`autocast_dtype` decide what ``train.precision=auto`` means:
bf16 autocast on CUDA and on CPUs with native bf16 matmuls (AMX or AVX-512 BF16), fp32 elsewhere.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig

Batch = dict[str, torch.Tensor]
# step -> (the step's micro-batches on the device, number of real tokens in them)
BatchSource = Callable[[int], tuple[list[Batch], int]]

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
AUTO_BF16_MIN_DIM_CPU = 128  # narrowest model that ``precision=auto`` trains in bf16 on a CPU


@functools.cache
def cpu_supports_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has native bf16 matmul instructions: a ``flags`` line of ``cpuinfo``
    naming ``amx_bf16`` or ``avx512_bf16`` (Linux). False when the file cannot be read."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return any(f in flags for f in BF16_CPU_FLAGS)
    return False


def autocast_dtype(precision: str, device: torch.device, dim: int | None = None) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` on ``device``; None = plain fp32.

    ``auto``: bf16 on CUDA; on a CPU where :func:`cpu_supports_bf16`, bf16 for a model of width
    ``dim >= AUTO_BF16_MIN_DIM_CPU`` (or ``dim`` not given) — below it the casts cost more than
    the bf16 matmuls save (measured: docs/results.md) — else fp32."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16
        if device.type == "cpu" and cpu_supports_bf16() and (dim is None or dim >= AUTO_BF16_MIN_DIM_CPU):
            return torch.bfloat16
        return None
    try:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    except KeyError:
        raise ValueError(f"train.precision: must be auto|fp32|bf16|fp16, got {precision!r}") from None


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs as one fused kernel on ``device`` (CUDA and CPU: on this 2-core CPU one
    step over 34 M parameters takes 0.037 s fused against 0.22 s with the ``foreach`` default)."""
    return device.type in ("cuda", "cpu")


class LocalSource:
    """Batches made on the calling thread: the step's micro-batches of ``batcher`` rows with
    masks by ``collator`` (:func:`~predrecon.data.prefetch.collate_step`: micro-batch
    ``step * accum + micro`` for one process; under torch.distributed this ``rank``'s share of the
    ``accum * world`` micro-batches), copied to ``device`` (non-blocking). ``state_dict``: the
    batcher's state after the last step made (what a checkpoint stores; global, the same on every
    rank). The prefetching alternative is :class:`predrecon.data.prefetch.PrefetchSource`."""

    def __init__(self, batcher: Any, collator: Any, accum: int, device: torch.device, rank: int = 0,
                 world: int = 1):
        self.batcher, self.collator, self.accum, self.device = batcher, collator, accum, device
        self.rank, self.world = rank, world

    def __call__(self, step: int) -> tuple[list[Batch], int]:
        from ..data.prefetch import collate_step

        out, tokens = collate_step(self.batcher, self.collator, self.accum, step, self.rank, self.world)
        return [{k: v.to(self.device, non_blocking=True) for k, v in b.items()} for b in out], tokens

    def state_dict(self) -> dict[str, Any]:
        return self.batcher.state_dict()

    def close(self) -> None:
        pass


def local_source(batcher: Any, collator: Any, accum: int, device: torch.device) -> LocalSource:
    return LocalSource(batcher, collator, accum, device)


def make_source(batcher: Any, collator: Any, accum: int, device: torch.device, start: int, end: int,
                prefetch: int = 0, rank: int = 0, world: int = 1) -> Any:
    """``prefetch`` = 0: :class:`LocalSource`; > 0: a worker process ``prefetch`` steps ahead
    (:class:`~predrecon.data.prefetch.PrefetchSource`). ``rank``/``world``: this process's share."""
    if prefetch <= 0:
        return LocalSource(batcher, collator, accum, device, rank, world)
    from ..data.prefetch import PrefetchSource

    return PrefetchSource(batcher, collator, accum, device, start, end, depth=prefetch, rank=rank, world=world)


def compile_model(model: Any) -> Any:
    """``torch.compile`` (inductor, static shapes) the student encoder, the EMA target and the
    predictor in place (``nn.Module.compile``: parameter names unchanged, so checkpoints and the
    EMA are unaffected). The MLM head's chunked loss, the JEPA loss and the balancer (GradNorm's
    ``autograd.grad``) stay eager. Static shapes need the collator's ``fixed_widths``."""
    # GradNorm differentiates the compiled graph twice (autograd.grad with retain_graph, then the
    # step's backward): AOTAutograd must not donate the saved buffers to the first backward
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    for part in (model.encoder, getattr(model, "target", None), getattr(model, "predictor", None)):
        if isinstance(part, torch.nn.Module):
            part.compile(dynamic=False)
    return model


@dataclass
class StepContext:
    """What one run's steps share. ``monitor``: a
    :class:`~predrecon.train.diagnostics.FaultMonitor` (or None: no consecutive-skip count)."""

    cfg: RunConfig
    model: Any  # HybridModel
    optimizer: torch.optim.Optimizer
    source: BatchSource
    device: torch.device
    amp: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    monitor: Any = None
    clip_params: list[torch.nn.Parameter] = field(default_factory=list)
    engine: Any = None  # what the forward calls: a DDP wrapper or the (FSDP2-sharded) model; None = model
    dist: Any = None  # a predrecon.train.distributed.DistInfo; None = one process

    def __post_init__(self) -> None:
        from .distributed import SINGLE

        self.engine = self.model if self.engine is None else self.engine
        self.dist = SINGLE if self.dist is None else self.dist
        if not self.clip_params:
            bal_ids = {id(p) for p in self.model.balancer.parameters()}
            self.clip_params = [p for p in self.model.parameters() if p.requires_grad and id(p) not in bal_ids]

    @property
    def sync_free(self) -> bool:  # CPU: reading a flag costs nothing, so skip by branching
        return self.device.type != "cpu"


@dataclass
class StepResult:
    logs: dict[str, torch.Tensor]  # detached, on the device (no host sync)
    grad_norm: torch.Tensor
    bad: torch.Tensor  # 0-dim bool: the update was skipped
    batch: Batch  # the last micro-batch (for diagnostics)
    tokens: int  # real tokens in the step's rows
    lr: float
    balancer_updated: bool


def train_step(ctx: StepContext, step: int) -> StepResult:
    """Run 0-based optimizer step ``step``: lr, micro-batches, forward/backward, clip, update."""
    from .distributed import any_over_ranks, full_value
    from .loop import apply_update, balancer_updates_at, forward_backward, lr_at, momentum_at

    cfg = ctx.cfg
    lr = lr_at(cfg, step)
    for g in ctx.optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"]
    batches, tokens = ctx.source(step)
    update_bal = balancer_updates_at(cfg, step)
    logs = forward_backward(ctx.model, batches, amp=ctx.amp, scaler=ctx.scaler, update_balancer=update_bal,
                            engine=ctx.engine, dist=ctx.dist)
    if ctx.scaler is not None:
        ctx.scaler.unscale_(ctx.optimizer)
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    gnorm = full_value(torch.nn.utils.clip_grad_norm_(ctx.clip_params, clip))  # FSDP2: a DTensor
    bad = ~torch.isfinite(logs["loss"])
    if ctx.scaler is None:  # fp16: the scaler skips overflowing gradients itself
        bad = bad | ~torch.isfinite(gnorm)
    bad = any_over_ranks(bad, ctx.dist)  # every rank skips the same steps
    if ctx.monitor is not None:
        ctx.monitor.record(bad)
    apply_update(ctx.model, ctx.optimizer, bad, momentum_at(cfg, step), sync_free=ctx.sync_free, scaler=ctx.scaler)
    return StepResult(logs, gnorm, bad, batches[-1], tokens, lr, update_bal)
