"""Collapse diagnostics on a fixed held-out batch, run every ``train.diag_every`` steps.

Reported: validation losses; the std of context, prediction and target states (mean over
features of the per-feature std across tokens); the effective rank (Roy & Vetterli 2007,
exp of the entropy of the normalised singular values) of mean-pooled student and target
embeddings; the gradient norm of each unweighted loss on the student encoder. A warning is
raised when a std falls below ``train.collapse_std`` or a rank below ``train.collapse_rank``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import RunConfig
from ..data.batching import make_batcher
from ..data.masking import Collator
from ..data.shards import TokenDataset

_FIXED_STEP = 2**31 - 1  # the held-out batch's masks come from a step index training never reaches


def effective_rank_torch(x: torch.Tensor, eps: float = 1e-12) -> float:
    """exp(H(p)), p = σ / Σσ over the singular values of the centred ``x`` (n, d), in fp32."""
    x = x.float()
    sv = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = sv / sv.sum().clamp_min(eps)
    h = -(p * torch.log(p.clamp_min(eps))).sum()
    return float(torch.exp(h))


def mean_pool(h: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """Mean over non-padding tokens: (B, T, D), (B, T) -> (B, D)."""
    m = segment_ids.ne(0).unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class Diagnostics:
    """Holds the fixed held-out batch and computes the diagnostics dict."""

    def __init__(self, cfg: RunConfig, ds: TokenDataset, collator: Collator, device: torch.device):
        self.cfg = cfg
        bs = min(cfg.train.batch_size, 64)
        split = "val" if ds.num_docs("val") >= bs else "train"  # tiny corpora: too few held-out docs
        batcher = make_batcher(ds, cfg.data, split, bs, seed=12345)
        rows = next(batcher)
        self.batch = {k: v.to(device) for k, v in collator(rows, _FIXED_STEP).items()}
        self.split = split

    def run(self, model, train_batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        cfg = self.cfg.train
        b = self.batch
        out: dict[str, Any] = {"split": self.split}
        with torch.no_grad():
            losses, stats = model.compute_losses(b, with_stats=True)
            out.update({f"val_loss_{k}": float(v) for k, v in losses.items()})
            out.update({k: float(v) for k, v in stats.items()})
            seg = b["segment_ids"]
            h = model.encoder(b["input_ids"], b["position_ids"], seg).last_hidden_state
            out["erank_student"] = effective_rank_torch(mean_pool(h, seg))
            if model.target is not None:
                ht = model.target(b["input_ids"], b["position_ids"], seg).last_hidden_state
                out["erank_target"] = effective_rank_torch(mean_pool(ht, seg))
        out.update(model.loss_grad_norms(train_batch))
        warn = []
        for k in ("std_ctx", "std_pred", "std_tgt"):
            if k in out and out[k] < cfg.collapse_std:
                warn.append(f"possible collapse: {k}={out[k]:.2e} < train.collapse_std={cfg.collapse_std}")
        for k in ("erank_student", "erank_target"):
            if k in out and out[k] < cfg.collapse_rank:
                warn.append(f"possible collapse: {k}={out[k]:.2f} < train.collapse_rank={cfg.collapse_rank}")
        out["warnings"] = warn
        return out
