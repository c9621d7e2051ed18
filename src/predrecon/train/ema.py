"""Exponential moving average of the student encoder (the JEPA target encoder).

``target <- momentum * target + (1 - momentum) * online``, done with one fused
``torch._foreach_lerp_`` over all parameters (no Python loop over tensors, no host sync).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn as nn


def make_target(encoder: nn.Module) -> nn.Module:
    """A deep copy of ``encoder`` with ``requires_grad_(False)``, in eval mode (pass the raw
    module, not a DDP / compiled wrapper)."""
    target = copy.deepcopy(encoder)
    target.requires_grad_(False)
    return target.eval()


@torch.no_grad()
def ema_update(target: nn.Module | Iterable[torch.Tensor], online: nn.Module | Iterable[torch.Tensor],
               momentum: float, skip: torch.Tensor | None = None) -> None:
    """In place ``t <- momentum * t + (1 - momentum) * o`` for matching tensors.

    ``target`` / ``online`` are both modules (all parameters are averaged and all buffers
    copied, in ``named_parameters`` / ``named_buffers`` order) or both iterables of tensors
    (averaged). ``momentum`` in [0, 1]: 0 copies ``online`` exactly, 1 leaves ``target``
    unchanged exactly (``torch.lerp`` is exact at both ends). ``skip``: a 0-dim bool tensor on the
    parameters' device; where true the parameters are left exactly as they are (weight 0), decided
    on the device without a host sync (the trainer's skipped non-finite steps; buffers are still
    copied). Raises ValueError on a length, name or shape mismatch.
    """
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    if isinstance(target, nn.Module) != isinstance(online, nn.Module):
        raise TypeError("ema_update: pass two modules or two iterables of tensors")
    if isinstance(target, nn.Module):
        for m in (target, online):  # FSDP2 roots keep gathered parameters after a forward: shard them back
            if hasattr(m, "reshard"):
                m.reshard()
        tp, op = dict(target.named_parameters()), dict(online.named_parameters())
        tb, ob = dict(target.named_buffers()), dict(online.named_buffers())
        if tp.keys() != op.keys() or tb.keys() != ob.keys():
            diff = sorted((tp.keys() ^ op.keys()) | (tb.keys() ^ ob.keys()))
            raise ValueError(f"ema_update: target and online modules differ in names: {diff[:10]}")
        t_list, o_list = list(tp.values()), [op[k] for k in tp]
        for k, buf in tb.items():
            _local(buf).copy_(_local(ob[k]))
    else:
        t_list, o_list = list(target), list(online)
    if len(t_list) != len(o_list):
        raise ValueError(f"ema_update: {len(t_list)} target tensors vs {len(o_list)} online tensors")
    for i, (t, o) in enumerate(zip(t_list, o_list)):
        if t.shape != o.shape:
            raise ValueError(f"ema_update: tensor {i} has shape {tuple(t.shape)} in target, "
                             f"{tuple(o.shape)} in online")
    if t_list:
        # FSDP2 shards target and student alike: each rank averages its own shards (no communication)
        t_local, o_local = [_local(t) for t in t_list], [_local(o).detach() for o in o_list]
        if skip is None:
            torch._foreach_lerp_(t_local, o_local, 1.0 - float(momentum))
        else:  # same rounding as the scalar: the fp32 value of 1 - momentum, or 0. Made on the device
            # (torch.full, not a blocking torch.tensor copy) and passed as a list of tensors: a single
            # tensor weight would be read back to the host with .item(), a sync every step on CUDA
            w = torch.full((), 1.0 - float(momentum), dtype=t_list[0].dtype, device=skip.device)
            torch._foreach_lerp_(t_local, o_local, [torch.where(skip, 0.0, w)] * len(t_local))


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor, the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t
