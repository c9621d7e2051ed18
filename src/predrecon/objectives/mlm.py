"""Masked-language-modelling loss and accuracy: tensors in, scalar out."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the real slots.

    ``logits`` (..., V) (any dtype; computed in fp32), ``labels`` (...) long with ``-100`` in
    padded / unselected slots. Returns an fp32 scalar: sum of per-slot cross-entropy over slots
    with ``label != -100`` divided by their number; ``0.0`` (with zero, finite gradients) when
    there is none. No host synchronisation.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree: "
                         "expected logits (..., V) and labels (...)")
    flat = logits.reshape(-1, logits.shape[-1]).float()  # (n, V)
    lab = labels.reshape(-1)  # (n,)
    total = F.cross_entropy(flat, lab, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (lab != IGNORE_INDEX).sum().clamp_min(1)
    return total / count


@torch.no_grad()
def mlm_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy (fp32 scalar tensor) over slots with ``label != -100``; 0.0 if none."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    valid = labels != IGNORE_INDEX
    correct = (logits.argmax(dim=-1) == labels) & valid
    return correct.sum().float() / valid.sum().clamp_min(1).float()
