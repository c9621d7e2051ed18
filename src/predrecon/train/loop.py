"""The training loop: build -> (resume) -> step until done, logging and checkpointing.

``train(cfg, out_dir, resume="auto")`` is the whole contract. One step:

1. schedules are read by step (lr, EMA momentum) — resume needs no replay;
2. ``accum_steps`` micro-batches: rows from the batcher, masks from the collator seeded by
   (seed, micro-step), forward under autocast (``train.precision``), backward, each loss
   normalised by its count over the whole step (:func:`forward_backward`: exact accumulation);
3. clip (the model, not the balancer), then optimizer step and EMA update of the target — both
   skipped for a step whose loss or gradient norm is not finite (:func:`apply_update`; counted on
   the device, no host sync per step on an accelerator); ``train.max_nonfinite`` consecutive
   skipped steps stop the run, as does a logged MLM loss above ``train.diverge_factor`` x its
   best (:class:`~predrecon.train.diagnostics.TrainingStopped`, one line);
4. every ``log_every`` a JSONL record (with the balancer's last ``gradnorm_*`` values); every
   ``diag_every`` collapse diagnostics; every ``ckpt_every`` (and at the end) an atomic checkpoint
   with everything needed to resume — never of non-finite weights.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import ConfigError, RunConfig
from ..data.batching import make_batcher
from ..data.masking import Collator
from ..data.shards import TokenDataset
from . import distributed
from .checkpoint import latest_valid_checkpoint, load_checkpoint, non_finite_tensors, save_checkpoint, set_rng_state
from .diagnostics import Diagnostics, FaultMonitor, TrainingStopped, divergence_message
from .distributed import SINGLE, DistInfo, all_reduce_sum, no_sync
from .meta import HybridModel
from .rundir import finished_summary, locked_run, read_jsonl
from .schedules import linear, warmup_cosine
from .step import StepContext, compile_model, fused_adamw, make_source, train_step
from .step import autocast_dtype as _autocast_dtype
from .tracking import Tracker

DIVERGENCE_KEYS = ("loss_mlm",)  # a likelihood never rises far above its best; JEPA losses may (moving target)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None:
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {name!r} requested but only {torch.cuda.device_count()} GPU(s) "
                              "are visible (CUDA_VISIBLE_DEVICES renumbers them from 0)")
        torch.cuda.set_device(dev)  # the current device too: pinned-memory threads and kernels without a device
    return dev


def _checkpoint_step(ckpt: Path | None) -> int:
    """The step a checkpoint folder holds (its state.json), -1 for none, -2 when unreadable
    (``load_checkpoint`` then says why)."""
    if ckpt is None:
        return -1
    try:
        return int(json.loads((Path(ckpt) / "state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -2


def autocast_dtype(precision: str, device: torch.device, dim: int | None = None) -> torch.dtype | None:
    """None = plain fp32. ``auto`` is bf16 on CUDA and, for a model of width ``dim`` >= 128, on a
    CPU with native bf16 (AVX-512 BF16 / AMX); fp32 otherwise (:func:`.step.autocast_dtype`)."""
    return _autocast_dtype(precision, device, dim)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: HybridModel, cfg: RunConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with three groups: weights (decayed), biases/norms/embeddings' 1-D params (not
    decayed), and the balancer's own parameters (their own lr and weight decay; the lr is
    multiplied by :func:`balancer_interval`, so a balancer updated every k steps moves as far
    per step as one updated every step)."""
    bal_ids = {id(p) for p in model.balancer.parameters()}
    decay, no_decay, bal = [], [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in bal_ids:
            bal.append(p)
        elif p.dim() >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    o = cfg.optim
    groups = [
        {"params": decay, "weight_decay": o.weight_decay, "lr_scale": 1.0, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0, "name": "no_decay"},
    ]
    if bal:
        groups.append({"params": bal, "weight_decay": o.balancer_weight_decay,
                       "lr_scale": o.balancer_lr / o.lr * balancer_interval(cfg), "name": "balancer"})
    kw: dict[str, Any] = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, **kw)


def balancer_interval(cfg: RunConfig) -> int:
    """Steps between balancer updates: ``objective.gradnorm_every`` for a hybrid GradNorm run, else 1."""
    o = cfg.objective
    return o.gradnorm_every if o.kind == "hybrid" and o.balancer == "gradnorm" else 1


def balancer_updates_at(cfg: RunConfig, step: int) -> bool:
    """Whether the balancer updates its weights at 0-based ``step`` (indexed by step, so resume
    needs no counter). GradNorm updates on the steps that end an interval — ``step + 1`` a multiple
    of the interval — which are the log steps when ``train.log_every`` is a multiple of it."""
    return (step + 1) % balancer_interval(cfg) == 0


def lr_at(cfg: RunConfig, step: int) -> float:
    o = cfg.optim
    return warmup_cosine(step, cfg.train.steps, o.warmup_steps, o.lr, o.start_lr, o.min_lr)


def momentum_at(cfg: RunConfig, step: int) -> float:
    return linear(step, cfg.train.steps, cfg.jepa.ema_start, cfg.jepa.ema_end)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def forward_backward(model: HybridModel, batches: list[dict[str, torch.Tensor]], *,
                     amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
                     update_balancer: bool = True, engine: Any = None,
                     dist: DistInfo = SINGLE) -> dict[str, torch.Tensor]:
    """Accumulate into ``.grad`` the gradient of one optimizer step over the micro-batches
    ``batches``; returns the step's logs (detached tensors, no host sync).

    Exact accumulation: each loss of a micro-batch is weighed by ``k * n_micro / n_total``
    (``n`` from :meth:`HybridModel.loss_counts`: masked tokens, target slots) and the balanced
    total by ``1 / k``, so the sum over micro-batches is each loss averaged over *all* the step's
    slots — the gradient of one batch holding every row, whatever the per-micro-batch counts —
    and the logged losses (means of the scaled ones) are the step's exact values. With one
    micro-batch the weights are exactly 1.

    Under torch.distributed (``dist``, ``engine`` = the DDP / FSDP2 module) the counts are summed
    over all ranks first and the weights are ``k * world * n_micro / n_total``: the engine's
    average over ranks of the accumulated gradients is then the global batch's gradient, and the
    mean over ranks of the returned logs its exact losses. Gradients are communicated once, on
    the last micro-batch.
    """
    k = len(batches)
    engine = model if engine is None else engine
    counts = [model.loss_counts(b) for b in batches]
    names = sorted(counts[0])
    local_n = torch.stack([torch.stack([c[name] for c in counts]).sum() for name in names])
    global_n = all_reduce_sum(local_n, dist).clamp_min(1)  # one collective for every loss's count
    totals = {name: global_n[i] for i, name in enumerate(names)}
    kw = k * dist.world
    logs_acc: list[dict[str, torch.Tensor]] = []
    for j, (b, c) in enumerate(zip(batches, counts)):
        scale = None if kw == 1 else {name: kw * c[name].float() / totals[name] for name in c}
        device_type = b["input_ids"].device.type
        ctx = torch.autocast(device_type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with no_sync(engine, dist, last=j == k - 1):
            with ctx:
                total, logs = engine(b, loss_scale=scale, update_balancer=update_balancer)
            loss = total / k
            (scaler.scale(loss) if scaler is not None else loss).backward()
        logs_acc.append(logs)
    return {key: torch.stack([lg[key].float() for lg in logs_acc]).mean() for key in logs_acc[0]}


def apply_update(model: HybridModel, optimizer: torch.optim.Optimizer, bad: torch.Tensor, momentum: float,
                 *, sync_free: bool, scaler: torch.amp.GradScaler | None = None) -> None:
    """Optimizer step and EMA update of the target, both skipped when ``bad`` (0-dim bool) is true.

    ``sync_free`` (a fused optimizer on an accelerator): no host sync — ``bad`` is handed to the
    fused AdamW kernel as ``found_inf`` (it then leaves parameters, moments and step count as
    they are) and the EMA is masked by ``bad`` on the device (exactly a no-op).
    Otherwise ``bad`` is read on the host (free on CPU) and both updates are simply not run.
    With a GradScaler (fp16) the scaler's own overflow skip applies on top.
    """
    if sync_free:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.found_inf = bad.float()  # read by fused AdamW (the GradScaler protocol)
            optimizer.grad_scale = None
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf, optimizer.grad_scale
        model.update_target(momentum, skip=bad)
    elif not bool(bad):
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        model.update_target(momentum)
    optimizer.zero_grad(set_to_none=True)


class JsonlLogger:
    """Append-only JSONL log; on resume, records after the resumed step are dropped first."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            keep = [rec for rec in read_jsonl(path) if rec.get("step", -1) <= resume_step]
            path.write_text("".join(json.dumps(rec) + "\n" for rec in keep))
        elif resume_step is None and path.exists():
            path.unlink()
        self._f = open(path, "a")

    def write(self, rec: dict[str, Any]) -> None:
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


@locked_run
def train(cfg: RunConfig, out_dir: str | Path, *, resume: str = "auto",
          max_steps: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir``; returns a summary dict (final losses, tokens/s, ...).

    ``resume``: ``"auto"`` continues from the newest valid checkpoint in ``out_dir`` if any,
    ``"none"`` starts fresh (refusing to overwrite a run that has checkpoints), or a path to a
    checkpoint directory. ``max_steps`` stops early after that global step (used to test resume)
    without changing the schedules.
    """
    cfg.validate()
    out = Path(out_dir)
    if not cfg.data.path:
        raise ConfigError("data.path: no dataset given (build one with `predrecon data build`)")
    ds = TokenDataset(cfg.data.path)
    if cfg.train.init:  # model.* from the transformers checkpoint, whose vocabulary must be the data's
        from ..interop.hf import apply_init
        apply_init(cfg)
    if (cfg.train.distributed == "fsdp" and cfg.objective.kind == "hybrid" and cfg.objective.balancer == "gradnorm"
            and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1):
        raise ConfigError("train.distributed=fsdp: objective.balancer=gradnorm differentiates the last block's "
                          "parameters inside the forward, which FSDP2's backward hooks do not allow; use "
                          "train.distributed=ddp, or objective.balancer=uncertainty|sigmoid|fixed with FSDP2")
    # torchrun: join the process group (rank, device); a single process gets SINGLE and no group
    info, dist_device = distributed.setup(cfg.train.distributed, cfg.train.device, cfg.train.dist_timeout)
    main = info.is_main  # the one writer of logs, checkpoints and summaries
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = ds.vocab_size
    elif cfg.model.vocab_size != ds.vocab_size:
        raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} differs from the dataset's "
                          f"tokenizer ({ds.vocab_size}); set it to 0 to take it from the data")
    device = dist_device or resolve_device(cfg.train.device)
    amp = autocast_dtype(cfg.train.precision, device, cfg.model.dim)
    seed_everything(cfg.train.seed)  # the same initial weights on every rank

    model = HybridModel(cfg, ds.vocab_size, ds.special_ids).to(device)
    if cfg.train.compile:  # encoders + predictor; heads, losses and the balancer's autograd.grad stay eager
        compile_model(model)
    engine = distributed.wrap(model, info, device)  # DDP / FSDP2 (in place) / the model itself
    if info.enabled:  # dropout and other draws differ per rank
        torch.manual_seed(cfg.train.seed + 1_000_003 * info.rank)
    micro_per_step = cfg.optim.accum_steps * info.world  # micro-batches of train.batch_size rows per step
    optimizer = build_optimizer(model, cfg, fused=fused_adamw(device))
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None  # CPU fp16 too: a "cuda"
    # scaler on a CPU run disables itself, and with it the non-finite check the step leaves to it
    batcher = make_batcher(ds, cfg.data, "train", cfg.train.batch_size, cfg.train.seed)
    collator = Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, cfg.train.seed,
                        fixed_widths=cfg.train.compile,  # compiled: the same shapes every step
                        max_docs=1 if cfg.data.mode == "document" else None)
    diag = Diagnostics(cfg, ds, collator, device)
    diag_every = cfg.train.diag_every
    if info.enabled and info.strategy == "fsdp" and diag_every:
        diag_every = 0  # they differentiate unsharded parameters: not available under FSDP2
        if main:
            warnings.warn("train.diag_every: collapse diagnostics are off under FSDP2", stacklevel=1)
    diag_here = diag_every and main  # DDP: rank 0 runs them on its own replica
    if diag_here:
        diag.set_reference(model)  # the init (a resumed run rebuilds it from the seed first)

    start = 0
    ckpt = None
    if resume == "auto":
        ckpt = latest_valid_checkpoint(out)
    elif resume != "none":
        ckpt = Path(resume)
    elif any((out / "checkpoints").glob("step_*")):
        raise ConfigError(f"{out} already holds checkpoints: pass --resume auto to continue or choose "
                          "another --out")
    if info.enabled:  # rank 0 alone writes checkpoints: every rank must find the same one
        lo, hi = distributed.min_max_over_ranks(_checkpoint_step(ckpt), info)
        if lo != hi:
            raise distributed.DistributedError(
                f"rank {info.rank} of {info.world}: resuming from {ckpt or 'nothing (a fresh run)'}, but the ranks "
                f"disagree (steps {lo}..{hi}; -1 = no checkpoint): only rank 0 writes checkpoints, so {out} "
                "must be one folder that every rank sees (a filesystem shared by all nodes)")
    if ckpt is not None:
        loaded = load_checkpoint(ckpt)
        saved_cfg = loaded.state.get("config", {})
        if saved_cfg and saved_cfg.get("model") != cfg.to_dict()["model"]:
            raise ConfigError(f"resume: model config in {ckpt} differs from the requested one")
        saved_micro = int(loaded.state.get("micro_batches_per_step", cfg.optim.accum_steps))
        saved_rows = int(saved_cfg.get("train", {}).get("batch_size", cfg.train.batch_size))
        if (saved_micro, saved_rows) != (micro_per_step, cfg.train.batch_size):
            fix = (f"optim.accum_steps={saved_micro // info.world}" if saved_micro % info.world == 0
                   and saved_rows == cfg.train.batch_size else f"a world size dividing {saved_micro}")
            raise ConfigError(f"resume: {ckpt} was written with {saved_micro} micro-batch(es) of {saved_rows} rows "
                              f"per step (optim.accum_steps x ranks); this launch has {micro_per_step} x "
                              f"{cfg.train.batch_size} on {info.world} rank(s) — use {fix} to keep the global "
                              "batch and the rows of the uninterrupted run")
        distributed.load_states(model, model.target, optimizer, loaded.model, loaded.target, loaded.optimizer, info)
        batcher.load_state_dict(loaded.state["data"])
        if scaler is not None and loaded.state.get("grad_scaler"):  # fp16: the loss scale goes on
            scaler.load_state_dict(loaded.state["grad_scaler"])
        set_rng_state(loaded.rng)
        if info.enabled:
            torch.manual_seed(cfg.train.seed + 1_000_003 * info.rank + loaded.step)
        start = loaded.step
        if start >= (cfg.train.steps if max_steps is None else min(cfg.train.steps, max_steps)):
            return finished_summary(out, start)  # nothing to do: no record appended, nothing rewritten
    elif cfg.train.init:  # a fresh run starts from the checkpoint's encoder (student and target)
        from ..interop.hf import load_init_weights
        load_init_weights(model, cfg)

    n_enc = sum(p.numel() for p in model.encoder.parameters())
    n_emb = sum(p.numel() for n, p in model.encoder.named_parameters() if "emb" in n)
    n_all = sum(p.numel() for p in model.parameters()) + (
        sum(p.numel() for p in model.target.parameters()) if model.target is not None else 0)
    header = {"event": "start", "step": start, "device": str(device), "precision": str(amp or "fp32"),
              "params_encoder": n_enc, "params_encoder_non_embedding": n_enc - n_emb,
              "params_total_incl_target": n_all, "world_size": info.world, "distributed": info.strategy,
              "micro_batches_per_step": micro_per_step, "rows_per_micro_batch": cfg.train.batch_size,
              "global_batch_rows": micro_per_step * cfg.train.batch_size, "config": cfg.to_dict()}
    if main:
        (out / "config.json").write_text(cfg.to_json())
        log = Tracker(JsonlLogger(out / "log.jsonl", start if ckpt is not None else None), cfg, out, start,
                      resuming=ckpt is not None)  # + TensorBoard / W&B (train/tracking.py)
    else:
        log = _NoLog()
    log.write(header)
    if cfg.train.progress and main:
        tqdm.write(f"[predrecon] encoder {n_enc / 1e6:.2f} M params ({(n_enc - n_emb) / 1e6:.2f} M "
                   f"non-embedding) | objective {cfg.objective.kind} | device {device} | "
                   f"{f'resuming at step {start}' if start else 'fresh run'}"
                  + (f" | {info.world} ranks ({info.strategy}), global batch {micro_per_step} x "
                     f"{cfg.train.batch_size} rows" if info.enabled else ""))

    end = cfg.train.steps if max_steps is None else min(cfg.train.steps, max_steps)
    accum = cfg.optim.accum_steps
    bal_ids = {id(p) for p in model.balancer.parameters()}
    clip_params = [p for p in model.parameters() if p.requires_grad and id(p) not in bal_ids]
    sync_free = device.type != "cpu"  # CPU: reading a flag costs nothing, so skip by branching
    monitor = FaultMonitor(device, cfg.train.max_nonfinite,
                           skipped=int(loaded.state.get("skipped_steps", 0)) if ckpt is not None else 0)
    tokens_seen, t0 = 0, time.perf_counter()
    last: dict[str, float] = {}
    carried: dict[str, torch.Tensor] = {}  # the balancer's last update-step values (gradnorm_*)
    best: dict[str, float] = {}  # lowest logged value of each divergence-checked loss
    first: dict[str, torch.Tensor] = {}
    tok_rate = 0.0
    source = make_source(batcher, collator, accum, device, start, end, cfg.train.prefetch, info.rank, info.world)
    stepper = StepContext(cfg, model, optimizer, source, device, amp=amp, scaler=scaler, monitor=monitor,
                          clip_params=clip_params, engine=engine, dist=info)
    bar = tqdm(total=end, initial=start, disable=not (cfg.train.progress and main),
               desc=f"train {cfg.objective.kind}", dynamic_ncols=True)
    model.train()
    for step in range(start, end):
        res = train_step(stepper, step)  # lr, batches, forward/backward, clip, update (.step)
        logs, gnorm, batch, lr, update_bal = res.logs, res.grad_norm, res.batch, res.lr, res.balancer_updated
        tokens_seen += res.tokens
        if info.enabled and step == start and ckpt is None:  # GradNorm's L_i(0): rank 0's on every rank
            distributed.broadcast_buffers(model.balancer, info)
        if update_bal:
            carried = {k: v for k, v in logs.items() if k.startswith("gradnorm_")}
        if not first:
            first = {k: logs[k] for k in DIVERGENCE_KEYS if k in logs}
        done = step + 1
        is_log = done % cfg.train.log_every == 0 or done == end
        is_ckpt = done % cfg.train.ckpt_every == 0 or done == end
        if not sync_free or is_log or is_ckpt:
            skipped = monitor.check(done)

        if is_log:
            vals = distributed.mean_over_ranks({**carried, **logs}, info)  # the global batch's values
            rec = {k: float(v) for k, v in vals.items()}
            for k, v in first.items():  # the run's first losses take part in "best"
                best.setdefault(k, float(v))
            elapsed = time.perf_counter() - t0
            seen = float(distributed.all_reduce_sum(torch.tensor(float(tokens_seen)), info))  # all ranks
            tok_rate = seen / max(elapsed, 1e-9)
            rec.update(step=done, lr=lr, momentum=momentum_at(cfg, step), tokens_per_s=tok_rate,
                       grad_norm=float(gnorm) if cfg.optim.grad_clip > 0 else None, skipped_steps=skipped)
            if carried:  # the step whose update produced them
                rec["gradnorm_step"] = done - done % balancer_interval(cfg)
            log.write(rec)
            last = rec
            bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("loss_mlm", "loss_jepa", "lambda") if k in rec}
                            | {"tok/s": f"{tok_rate:,.0f}"})
            for k in DIVERGENCE_KEYS:
                if k in rec and math.isfinite(rec[k]):
                    msg = divergence_message(k, rec[k], best[k], cfg.train.diverge_factor, done)
                    if msg is not None:
                        log.write({"event": "stopped", "step": done, "reason": msg})
                        raise TrainingStopped(msg)
                    best[k] = min(best[k], rec[k])
        if diag_here and (done % diag_every == 0 or done == end):
            model.eval()
            d = diag.run(model, batch)
            model.train()
            log.write({"event": "diagnostics", "step": done, **d})
            for w in d.get("warnings", []):
                if cfg.train.progress:
                    tqdm.write(f"[predrecon] WARNING: {w}")
                else:
                    warnings.warn(w, stacklevel=1)
        if is_ckpt:  # full state dicts gathered on rank 0 (a collective under FSDP2), written by it
            sd = distributed.model_state(model, info)
            tsd = distributed.model_state(model.target, info) if model.target is not None else None
            osd = distributed.optimizer_state(model, optimizer, info)
            bad_names = non_finite_tensors(model=sd, target=tsd) if main else []
            if bool(distributed.any_over_ranks(torch.tensor(bool(bad_names)), info)):
                msg = (f"weights non-finite at step {done} ({', '.join(bad_names[:3]) or 'on rank 0'}"
                       f"{' ...' if len(bad_names) > 3 else ''}): not checkpointed — lower optim.lr")
                log.write({"event": "stopped", "step": done, "reason": msg})
                raise TrainingStopped(msg)
            if main:
                save_checkpoint(out, done, model=sd, target=tsd, optimizer=osd,
                                state={"data": source.state_dict(), "config": cfg.to_dict(),
                                       "skipped_steps": skipped, "micro_batches_per_step": micro_per_step,
                                       "world_size": info.world,
                                       "grad_scaler": scaler.state_dict() if scaler is not None else None},
                                keep=cfg.train.keep_ckpts)
        bar.update(1)
    bar.close()
    source.close()
    summary = {"event": "end", "step": end, "tokens_per_s": tok_rate, "skipped_steps": int(monitor.skipped),
               "wall_s": time.perf_counter() - t0,
               **{k: v for k, v in last.items() if k.startswith(("loss", "lambda", "w_"))}}
    log.write(summary)
    log.close()
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class _NoLog:
    """The log of a rank other than 0: it writes nothing."""

    def write(self, rec: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
