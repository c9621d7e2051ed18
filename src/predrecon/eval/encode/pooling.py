"""Poolings: per-token states (B, T, D) + mask (B, T) -> one vector per example (B, D).

Registry :data:`POOLINGS` (``build_pooler(name, ...)`` raises on unknown names):

* ``mean`` / ``max`` / ``cls`` — parameter-free, masked: padding is never pooled.
* ``weighted`` — learned **per-position** weights: ``softmax`` over the example's valid
  positions of a logit vector ``w`` (max_len,), i.e. ``sum_t softmax(w[:L])_t x_t``. Logits
  start at 0, so the untrained pooler equals ``mean`` (the paper's weighted pooling, never
  trained).
* ``attention`` — one learned query ``q`` (D,): ``sum_t softmax_t(x_t . q / sqrt(D)) x_t``
  over valid positions. Trained: ``q`` starts at 0 (= mean). Untrained (faithful): ``q`` is a
  seeded standard-normal draw, the paper's random query.

Trainable poolers are fit with the encoder frozen, on cached token states of (a capped subset
of) the task's train split, jointly with a linear head on the task labels (cross-entropy or MSE
on standardised scores), AdamW, a few epochs; the epoch with the lowest loss on a 10 % held-out
part of train is kept. Their ``status`` is ``trained`` / ``untrained``; parameter-free
poolers report ``parameter-free``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoders import TokenStates

# --------------------------------------------------------------------------- pure functions

def _check(x: torch.Tensor, mask: torch.Tensor) -> None:
    if x.ndim != 3 or mask.shape != x.shape[:2]:
        raise ValueError(f"pooling: expected x (B, T, D) and mask (B, T), got {tuple(x.shape)} and {tuple(mask.shape)}")
    if not bool(mask.any(dim=1).all()):
        raise ValueError("pooling: an example has no valid position")


def mean_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions: (B, T, D), (B, T) bool -> (B, D)."""
    _check(x, mask)
    m = mask.to(x.dtype)[..., None]  # (B, T, 1)
    return (x * m).sum(1) / m.sum(1)


def max_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise max over valid positions: (B, T, D) -> (B, D)."""
    _check(x, mask)
    return x.masked_fill(~mask[..., None], float("-inf")).amax(1)


def cls_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State of the first position ([CLS]); requires it to be valid: (B, T, D) -> (B, D)."""
    _check(x, mask)
    if not bool(mask[:, 0].all()):
        raise ValueError("cls pooling: position 0 is padding for some example")
    return x[:, 0]


def masked_softmax_pool(x: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``sum_t softmax(logits)_t x_t`` with padded positions excluded: logits (B, T) -> (B, D)."""
    _check(x, mask)
    a = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)  # (B, T)
    return torch.einsum("bt,btd->bd", a, x)


def weighted_pool(x: torch.Tensor, mask: torch.Tensor, position_logits: torch.Tensor) -> torch.Tensor:
    """Per-position softmax weights ``position_logits`` (max_len,) restricted to valid positions."""
    T = x.shape[1]
    if position_logits.shape[0] < T:
        raise ValueError(f"weighted pooling: {T} positions but only {position_logits.shape[0]} weights")
    return masked_softmax_pool(x, mask, position_logits[:T].expand(x.shape[0], T))


def attention_pool(x: torch.Tensor, mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Single-query dot-product attention pooling, scores ``x_t . q / sqrt(D)``."""
    return masked_softmax_pool(x, mask, x @ query / math.sqrt(x.shape[-1]))  # scores (B, T)


# --------------------------------------------------------------------------- poolers

class Pooler(nn.Module):
    """A pooling with optional parameters. ``pool(states)`` -> (n, D) float32 numpy."""

    name = "pooler"
    trainable = False

    def __init__(self) -> None:
        super().__init__()
        self.fitted = False

    @property
    def status(self) -> str:
        if not self.trainable:
            return "parameter-free"
        return "trained" if self.fitted else "untrained"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D)
        raise NotImplementedError

    @torch.no_grad()
    def pool(self, states: TokenStates, batch_size: int = 256) -> np.ndarray:
        """Pool every example of ``states`` -> (n, D) float32, batched by similar lengths."""
        self.eval()
        n = len(states)
        out = np.empty((n, states.dim), dtype=np.float32)
        order = np.argsort(states.lengths, kind="stable")
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            x, mask = states.batch(idx)
            out[idx] = self(x, mask).numpy()
        return out

    def fit(self, states: TokenStates, labels: np.ndarray, kind: str, num_classes: int = 0, *,
            seed: int = 0, **kw) -> dict:
        """Train the pooler's parameters with a linear head (see :func:`fit_pooler`); a no-op
        returning ``{}`` for parameter-free poolers."""
        if not self.trainable:
            return {}
        log = fit_pooler(self, states, labels, kind, num_classes, seed=seed, **kw)
        self.fitted = True
        return log


class MeanPooler(Pooler):
    name = "mean"

    def forward(self, x, mask):
        return mean_pool(x, mask)


class MaxPooler(Pooler):
    name = "max"

    def forward(self, x, mask):
        return max_pool(x, mask)


class ClsPooler(Pooler):
    name = "cls"

    def forward(self, x, mask):
        return cls_pool(x, mask)


class WeightedPooler(Pooler):
    name = "weighted"
    trainable = True

    def __init__(self, dim: int, max_len: int = 512, seed: int = 0):
        super().__init__()
        self.position_logits = nn.Parameter(torch.zeros(max_len))  # uniform = mean pooling

    def forward(self, x, mask):
        return weighted_pool(x, mask, self.position_logits)


class AttentionPooler(Pooler):
    name = "attention"
    trainable = True

    def __init__(self, dim: int, max_len: int = 512, seed: int = 0, random_init: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(dim, generator=g) if random_init else torch.zeros(dim)
        self.query = nn.Parameter(q)

    def forward(self, x, mask):
        return attention_pool(x, mask, self.query)


#: name -> factory(dim, max_len, seed, faithful) -> Pooler
POOLINGS: dict[str, Callable[..., Pooler]] = {
    "mean": lambda dim, max_len, seed, faithful: MeanPooler(),
    "max": lambda dim, max_len, seed, faithful: MaxPooler(),
    "cls": lambda dim, max_len, seed, faithful: ClsPooler(),
    "weighted": lambda dim, max_len, seed, faithful: WeightedPooler(dim, max_len, seed),
    "attention": lambda dim, max_len, seed, faithful: AttentionPooler(dim, max_len, seed, random_init=faithful),
}
PAPER_POOLINGS = ("mean", "max", "weighted", "attention")


def build_pooler(name: str, dim: int, *, max_len: int = 512, seed: int = 0, faithful: bool = False) -> Pooler:
    """Instantiate pooling ``name``. ``faithful``: the attention query is a seeded random draw
    (never trained in the paper); otherwise it starts at 0. Raises ``KeyError`` on unknown names."""
    try:
        factory = POOLINGS[name]
    except KeyError:
        raise KeyError(f"unknown pooling {name!r} (known: {', '.join(POOLINGS)})") from None
    return factory(dim, max_len, seed, faithful)


# --------------------------------------------------------------------------- training

class _Head(nn.Module):
    """Linear head on standardised pooled vectors (fixed per-dimension mean/std)."""

    def __init__(self, mu: torch.Tensor, sd: torch.Tensor, out: int):
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("sd", sd)
        self.lin = nn.Linear(mu.shape[0], out)

    def forward(self, z):
        return self.lin((z - self.mu) / self.sd)


def fit_pooler(pooler: Pooler, states: TokenStates, labels: np.ndarray, kind: str, num_classes: int = 0, *,
               seed: int = 0, epochs: int = 8, batch_size: int = 64, lr: float = 3e-2, head_lr: float = 1e-2,
               weight_decay: float = 1e-2, holdout: float = 0.1) -> dict:
    """Fit ``pooler``'s parameters jointly with a linear head on frozen token ``states``.

    ``kind``: 'classification' (int labels in [0, num_classes), cross-entropy) or 'regression'
    (float scores, MSE on standardised targets). AdamW; after every epoch the loss on a
    seeded ``holdout`` fraction of the examples is measured and the best epoch's pooler
    parameters are restored. Returns ``{'epochs', 'best_epoch', 'holdout_loss', 'n_fit'}``.
    """
    y = np.asarray(labels)
    n = len(states)
    if len(y) != n:
        raise ValueError(f"fit_pooler: {n} examples but {len(y)} labels")
    if kind not in ("classification", "regression"):
        raise ValueError(f"fit_pooler: kind must be classification|regression, got {kind!r}")
    if n < 4:
        raise ValueError(f"fit_pooler: need at least 4 training examples, got {n}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_ho = max(1, int(round(holdout * n)))
    ho_idx, fit_idx = perm[:n_ho], perm[n_ho:]

    mean0 = MeanPooler().pool(states.subset(fit_idx[:2048]) if len(fit_idx) > 2048 else states.subset(fit_idx))
    mu = torch.from_numpy(mean0.mean(0))
    sd = torch.from_numpy(mean0.std(0) + 1e-6)
    if kind == "classification":
        if num_classes < 2:
            raise ValueError(f"fit_pooler: classification needs num_classes >= 2, got {num_classes}")
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"fit_pooler: labels outside [0, {num_classes})")
        target = torch.from_numpy(y.astype(np.int64))
        head = _Head(mu, sd, num_classes)
        loss_fn: Callable = F.cross_entropy
    else:
        yf = y.astype(np.float64)
        ym, ys = yf[fit_idx].mean(), yf[fit_idx].std() + 1e-8
        target = torch.from_numpy(((yf - ym) / ys).astype(np.float32))
        head = _Head(mu, sd, 1)
        loss_fn = lambda out, t: F.mse_loss(out.squeeze(-1), t)  # noqa: E731

    opt = torch.optim.AdamW([{"params": list(pooler.parameters()), "lr": lr},
                             {"params": list(head.parameters()), "lr": head_lr}], weight_decay=weight_decay)

    def ho_loss() -> float:
        pooler.eval()
        total = 0.0
        with torch.no_grad():
            for s in range(0, n_ho, 256):
                idx = ho_idx[s:s + 256]
                x, m = states.batch(idx)
                total += float(loss_fn(head(pooler(x, m)), target[idx])) * len(idx)
        return total / n_ho

    best = (ho_loss(), 0, copy.deepcopy(pooler.state_dict()))
    for ep in range(1, epochs + 1):
        pooler.train()
        order = fit_idx[rng.permutation(len(fit_idx))]
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            x, m = states.batch(idx)
            loss = loss_fn(head(pooler(x, m)), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        cur = ho_loss()
        if cur < best[0]:
            best = (cur, ep, copy.deepcopy(pooler.state_dict()))
    pooler.load_state_dict(best[2])
    pooler.eval()
    return {"epochs": epochs, "best_epoch": best[1], "holdout_loss": best[0], "n_fit": int(len(fit_idx))}
