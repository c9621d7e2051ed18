"""Training on several processes with ``torch.distributed``: torchrun, DDP by default, FSDP2 opt-in.

Launch with torchrun; nothing changes in the command but the launcher::

    torchrun --nproc-per-node 4 -m predrecon train --data DIR --out RUN [KEY=VALUE ...]
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m predrecon train ...        # and --node-rank 1 on the other node

:func:`setup` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and joins the process group: NCCL on CUDA (one GPU per process,
``cuda:LOCAL_RANK``), gloo on CPU, with ``train.dist_timeout`` seconds for every collective, so
a hung or dead peer turns into an error instead of a hang. A single process (no torchrun) gets
:data:`SINGLE` and no process group.

What is global and what is local (docs/distributed.md has the long form):

* **Data.** The unit of data and masking is the *micro-batch* of ``train.batch_size`` rows. An
  optimizer step consumes ``optim.accum_steps x world`` consecutive micro-batches of the one
  global row stream; rank ``r`` takes micro-batches ``r, r + world, ...`` and skips the others
  without reading their tokens, and the collator seeds every micro-batch by its global index. So
  the global batch is ``batch_size x accum_steps x world`` rows, the data position in a
  checkpoint is global, and a run of 2 ranks x 1 micro-batch sees exactly the rows and masks of
  1 rank x 2 micro-batches (it may resume on either).
* **Gradients.** PyTorch's engines: :class:`~torch.nn.parallel.DistributedDataParallel` (default,
  ``train.distributed=ddp``) or FSDP2 ``fully_shard`` (``train.distributed=fsdp``: every encoder
  block, the EMA target's blocks and the root are sharded). Losses are normalised by token counts
  summed over all ranks and micro-batches, so the averaged gradient is the global batch's.
* **EMA target.** Never wrapped in DDP: every rank updates its own copy from the synchronised
  student (FSDP2: its shard from the student's shard). No communication.
* **Balancer.** Its parameters are parameters of the wrapped model and are synchronised like any
  other; GradNorm measures its per-loss gradient norms per micro-batch on every rank exactly as a
  single process does per micro-batch, and its first-loss buffer is rank 0's on every rank.
  GradNorm is DDP-only: it differentiates the last block's parameters inside the forward, and
  FSDP2's backward hooks reshard them on that first backward (use ``uncertainty``, ``sigmoid``
  or ``fixed`` with FSDP2; the trainer refuses the combination).
* **I/O.** Only rank 0 writes logs, TensorBoard, W&B, checkpoints and summaries; logged losses are
  means over ranks and token counts sums.
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

STRATEGIES = ("ddp", "fsdp")


class DistributedError(RuntimeError):
    """A process group could not be set up or used; the message names the rank and the reason."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its node,
    ``strategy`` ('none' for a single process, else 'ddp' | 'fsdp'), ``device`` where the process
    group's collectives run (NCCL takes CUDA tensors only: the helpers below move theirs there)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    strategy: str = "none"
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {name}={raw!r} is not an integer") from None


def env_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} / WORLD_SIZE={world}: not a valid rank")
    return rank, world, local


def setup(strategy: str, device_name: str, timeout_s: float) -> tuple[DistInfo, torch.device | None]:
    """Join the process group when launched by torchrun with ``WORLD_SIZE > 1``.

    Returns ``(info, device)``; ``device`` is None for a single process (the caller resolves
    ``train.device`` as usual), ``cuda:LOCAL_RANK`` under NCCL, ``cpu`` under gloo. Raises
    :class:`DistributedError` naming the rank, the rendezvous address and the cause when the group
    cannot be formed within ``timeout_s``."""
    rank, world, local = env_ranks()
    if world == 1:
        return SINGLE, None
    if strategy not in STRATEGIES:
        raise DistributedError(f"train.distributed: must be one of {STRATEGIES}, got {strategy!r}")
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise DistributedError(f"rank {rank} of {world}: train.device={device_name} but CUDA is not available")
    backend = "nccl" if use_cuda else "gloo"
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        if use_cuda:
            if local >= torch.cuda.device_count():
                raise DistributedError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) visible")
            torch.cuda.set_device(device)
        if not dist.is_initialized():  # device_id binds an NCCL group to this rank's GPU
            dist.init_process_group(backend, timeout=_dt.timedelta(seconds=float(timeout_s)),
                                    device_id=device if use_cuda else None)
    except Exception as e:  # noqa: BLE001 -- re-raised with the rank and the rendezvous named
        raise DistributedError(f"rank {rank} of {world}: could not join the {backend} process group at {where} "
                               f"within {timeout_s:g} s (train.dist_timeout): {type(e).__name__}: {e}") from e
    return DistInfo(rank, world, local, strategy, str(device)), device


def shutdown(clean: bool = True) -> None:
    """Leave the process group (a no-op without one). ``clean`` (this rank finished without an
    error): first wait at a barrier for the other ranks, so that no rank tears its gloo/NCCL
    connections down while a peer still uses them; after an error no barrier (a peer may be gone).

    Then collect garbage before the group is destroyed: the trained model (FSDP2's hooks and
    DTensor parameters, DDP's reducer) lives on in reference cycles after ``train()`` returns, and
    left to the interpreter's exit its tensors would be freed while the interpreter is being torn
    down, by gloo's worker threads too, which then die on the GIL with "terminate called without an
    active exception" (SIGABRT; seen under load in a 2-rank FSDP test)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean:
        try:
            dist.barrier()
        except Exception:  # noqa: BLE001 -- a peer failed at the very end: tear down regardless
            pass
    gc.collect()
    dist.destroy_process_group()


# ------------------------------------------------------------------------------ collectives
def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``x`` over ranks (a new tensor, on the group's device; ``x`` itself for a single process)."""
    if not info.enabled:
        return x
    y = x.to(info.device, copy=True)
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def mean_over_ranks(values: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """Each 0-dim tensor of ``values`` averaged over ranks, in one collective (keys must agree)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()).to(info.device) for k in keys])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= info.world
    return {k: stacked[i] for i, k in enumerate(keys)}


def any_over_ranks(flag: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """A 0-dim bool tensor, true where it is true on any rank."""
    if not info.enabled:
        return flag
    f = flag.to(info.device, torch.int32).reshape(1)
    dist.all_reduce(f, op=dist.ReduceOp.MAX)
    return f[0].bool()


def min_max_over_ranks(value: int, info: DistInfo) -> tuple[int, int]:
    """The smallest and the largest of an integer that each rank holds (one collective)."""
    if not info.enabled:
        return value, value
    t = torch.tensor([-value, value], dtype=torch.int64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return -int(t[0]), int(t[1])


def broadcast_buffers(module: nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy every buffer of ``module`` from rank ``src`` (plain tensors only)."""
    if not info.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)


# ------------------------------------------------------------------------------ engines
def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """The module the training step calls for its forward: ``model`` itself for a single process,
    a DDP wrapper (``train.distributed=ddp``) or ``model`` sharded in place by FSDP2 (``fsdp``).

    DDP: ``find_unused_parameters`` only when the balancer leaves its parameters out of some steps
    (GradNorm updated every k > 1 steps) — their gradients then stay None on every rank, as in a
    single process. FSDP2: each student block and each target block is a shard group (the last
    student block stays gathered from its forward to its backward), then each root."""
    if not info.enabled:
        return model
    if info.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        cfg = model.cfg
        unused = (cfg.objective.kind == "hybrid" and cfg.objective.balancer == "gradnorm"
                  and cfg.objective.gradnorm_every > 1)
        ids = [device.index] if device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=unused, broadcast_buffers=True)
    from torch.distributed.fsdp import fully_shard

    blocks = list(model.encoder.blocks)
    for i, blk in enumerate(blocks):
        fully_shard(blk, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model)
    if model.target is not None:
        for blk in model.target.blocks:
            fully_shard(blk)
        fully_shard(model.target)
    return model


def no_sync(engine: nn.Module, info: DistInfo, last: bool) -> Any:
    """Context for one micro-batch's backward: gradient communication only on the ``last`` one."""
    import contextlib

    if info.strategy == "ddp" and not last:
        return engine.no_sync()
    if info.strategy == "fsdp":
        engine.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------ state dicts
def _is_fsdp(info: DistInfo) -> bool:
    return info.enabled and info.strategy == "fsdp"


def model_state(module: nn.Module, info: DistInfo) -> dict[str, torch.Tensor] | None:
    """The full (unsharded) state dict of ``module`` on rank 0 (None on the others under FSDP2).
    A collective under FSDP2: every rank must call it."""
    if not _is_fsdp(info):
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if info.is_main else None


def _fqn_order(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the order of ``optimizer.state_dict()``'s integer ids."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo) -> dict[str, Any] | None:
    """The optimizer state in ``torch.optim`` form (integer ids; unsharded), on rank 0 — the same
    file layout whatever the strategy, so any run can resume it. A collective under FSDP2."""
    if not _is_fsdp(info):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sd = get_optimizer_state_dict(model, optimizer,
                                  options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not info.is_main:
        return None
    order = _fqn_order(model, optimizer)
    index = {n: i for i, n in enumerate(order)}
    groups = []
    for g in sd["param_groups"]:
        groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": [index[n] for n in g["params"]]})
    return {"state": {index[n]: st for n, st in sd["state"].items()}, "param_groups": groups}


def load_states(model: nn.Module, target: nn.Module | None, optimizer: torch.optim.Optimizer | None,
                model_sd: dict[str, torch.Tensor], target_sd: dict[str, torch.Tensor] | None,
                optim_sd: dict[str, Any] | None, info: DistInfo) -> None:
    """Load full state dicts (every rank holds them) into a plain, DDP-bound or FSDP2-sharded model."""
    if not _is_fsdp(info):
        model.load_state_dict(model_sd)
        if target is not None and target_sd is not None:
            target.load_state_dict(target_sd)
        if optimizer is not None and optim_sd is not None:
            optimizer.load_state_dict(optim_sd)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_sd, options=opts)
    if target is not None and target_sd is not None:
        set_model_state_dict(target, target_sd, options=opts)
    if optimizer is not None and optim_sd is not None:
        order = _fqn_order(model, optimizer)
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [order[i] for i in g["params"]]}
                  for g in optim_sd["param_groups"]]
        fqn = {"state": {order[int(i)]: st for i, st in optim_sd["state"].items()}, "param_groups": groups}
        set_optimizer_state_dict(model, optimizer, fqn, options=opts)


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2 parameter), the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered to a plain tensor (e.g. FSDP2's total gradient norm), else ``t``."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
