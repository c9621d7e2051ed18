"""JEPA targets and latent-prediction losses: tensors in, scalar out.

Targets (:func:`build_targets`) come from the EMA target encoder, run by the caller under
``torch.no_grad()``; the result is detached (stop-gradient) and fp32.

Losses are per-slot values reduced over the target slots (:func:`jepa_loss`):

* ``cosine``    ``1 - cos(pred, target)`` (PAPER.md, range [0, 2]);
* ``smooth_l1`` mean over features of the Huber loss with ``beta = 1`` (data2vec);
* ``mse``       mean over features of the squared error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

TARGET_NORM_EPS = 1e-5  # F.layer_norm's default, as the reference's parameter-free LayerNorm


def instance_norm_tokens(h: torch.Tensor, token_mask: torch.Tensor | None, eps: float = TARGET_NORM_EPS,
                         segments: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sequence, per-feature normalisation over the real tokens (data2vec's instance norm):
    ``(h - mean_t) / sqrt(var_t + eps)`` with mean and variance over the tokens where
    ``token_mask`` (B, T) is true; padding gets the same transform but never enters the
    statistics. Removes the component shared by every token of a sequence, which otherwise
    lets an anisotropic encoder make cosine targets trivially predictable. fp32 (B, T, D).

    ``segments`` (B, T) long (packed rows: document index, 0 = padding): the statistics are taken
    per document instead of per row — each token is normalised with the mean and variance of the
    real tokens of its own document, exactly as if that document were alone in its row. Tokens of
    segment 0 (or outside ``token_mask``) are normalised with their row's statistics."""
    h = h.float()
    if token_mask is None:
        token_mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
    m = token_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    n = m.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
    mean = (h * m).sum(1, keepdim=True) / n  # (B, 1, D)
    var = (((h - mean) * m) ** 2).sum(1, keepdim=True) / n
    if segments is None:
        return (h - mean) * torch.rsqrt(var + eps)
    # per-document sums by scatter into T + 1 slots (a row holds at most T documents; slot 0 takes
    # padding and tokens outside token_mask): sized by the shape, not by segments.max(), which
    # would read the data back to the host (a sync per micro-batch on a GPU)
    B, T, D = h.shape
    idx = torch.where(token_mask, segments.long().clamp(min=0), 0)  # (B, T)
    idx_d = idx.unsqueeze(-1).expand(B, T, D)
    cnt = h.new_zeros(B, T + 1).scatter_add_(1, idx, m[..., 0]).clamp_min(1.0).unsqueeze(-1)  # (B, T+1, 1)
    seg_mean = h.new_zeros(B, T + 1, D).scatter_add_(1, idx_d, h) / cnt
    tok_mean = seg_mean.gather(1, idx_d)  # (B, T, D): own document's mean
    seg_var = h.new_zeros(B, T + 1, D).scatter_add_(1, idx_d, (h - tok_mean) ** 2) / cnt
    tok_var = seg_var.gather(1, idx_d)
    in_doc = (idx > 0).unsqueeze(-1)  # (B, T, 1)
    mean = torch.where(in_doc, tok_mean, mean)
    var = torch.where(in_doc, tok_var, var)
    return (h - mean) * torch.rsqrt(var + eps)


TARGET_NORMS = ("layer", "instance")


def build_targets(hidden_states: tuple[torch.Tensor, ...] | list[torch.Tensor], num_layers: int,
                  eps: float = TARGET_NORM_EPS, norm: str = "layer",
                  token_mask: torch.Tensor | None = None, segments: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Regression targets (B, T, D), fp32, detached, from the target encoder's states.

    ``hidden_states``: states ordered from the bottom to the top (e.g. the Encoder's
    ``hidden_states`` tuple, or ``(last_hidden_state,)`` when ``num_layers == 1``); the last
    ``num_layers`` entries are used.

    * ``num_layers == 1``: parameter-free LayerNorm of the last entry (PAPER.md: last-layer
      output, then ``F.layer_norm`` without weight);
    * ``num_layers = K > 1``: data2vec — mean of the top K entries, each first instance-normalised
      over the feature dimension (parameter-free LayerNorm).

    ``norm="instance"`` replaces the per-token LayerNorm by :func:`instance_norm_tokens` (over the
    tokens of each sequence, ``token_mask`` marking the real ones; per document when ``segments``
    is given) for every layer used. The per-token ``layer`` norm needs neither.

    Raises ValueError if ``num_layers`` is < 1 or exceeds ``len(hidden_states)``.
    """
    if norm not in TARGET_NORMS:
        raise ValueError(f"target norm must be one of {TARGET_NORMS}, got {norm!r}")
    n = len(hidden_states)
    if num_layers < 1 or num_layers > n:
        raise ValueError(f"num_layers must be in [1, {n}] for {n} hidden states, got {num_layers}")
    top = hidden_states[n - num_layers:]
    D = top[-1].shape[-1]

    def normed(h: torch.Tensor) -> torch.Tensor:
        if norm == "instance":
            return instance_norm_tokens(h.detach(), token_mask, eps, segments=segments)
        return F.layer_norm(h.detach().float(), (D,), eps=eps)

    acc = normed(top[0])  # (B, T, D)
    for h in top[1:]:
        acc = acc + normed(h)
    return acc / num_layers if num_layers > 1 else acc


def cosine_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slot ``1 - cos(pred, target)`` (...,) in fp32 (a zero vector has cosine 0)."""
    return 1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)


def smooth_l1_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slot mean over features of the Huber loss (beta = 1), fp32 (...,)."""
    return F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=1.0).mean(dim=-1)


def mse_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slot mean over features of the squared error, fp32 (...,)."""
    return (pred.float() - target.float()).pow(2).mean(dim=-1)


JEPA_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": cosine_distance,
    "smooth_l1": smooth_l1_distance,
    "mse": mse_distance,
}


def jepa_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: str = "cosine",
              over_padding: bool = False) -> torch.Tensor:
    """Latent prediction loss, fp32 scalar.

    ``pred``, ``target`` (B, N, D); ``valid`` (B, N) bool marks real target slots. The per-slot
    loss ``l`` (B, N) of ``kind`` (a key of :data:`JEPA_LOSSES`) is zeroed on padded slots, then

    * ``over_padding=False`` (default): ``sum(l * valid) / max(1, sum(valid))`` — mean over the
      real slots (0.0 with zero gradient when there is none);
    * ``over_padding=True`` (paper): the reference zero-pads the gathered predictions and targets
      and averages the per-slot loss over all ``B * N`` slots, so every padded slot contributes
      the loss of a zero vector against a zero vector: 1 for ``cosine`` (cos(0, 0) = 0), 0 for
      ``mse``/``smooth_l1``. Its gradient is diluted by the padding fraction and, for the cosine
      loss, its value is raised by it — which also shifts the ``sigmoid`` balancer's dynamics.

    Finite values in padded slots (of pred or target) affect neither the result nor its gradient.
    """
    try:
        fn = JEPA_LOSSES[kind]
    except KeyError:
        raise ValueError(f"jepa loss kind must be one of {sorted(JEPA_LOSSES)}, got {kind!r}") from None
    if pred.shape != target.shape or pred.shape[:-1] != valid.shape:
        raise ValueError(f"shapes disagree: pred {tuple(pred.shape)}, target {tuple(target.shape)}, "
                         f"valid {tuple(valid.shape)} (expected (B, N, D), (B, N, D), (B, N))")
    per_slot = fn(pred, target)  # (B, N)
    if over_padding:
        zero = pred.new_zeros((1, pred.shape[-1]))
        pad_value = fn(zero, zero).detach()  # (1,) loss of a zero-padded slot
        per_slot = torch.where(valid, per_slot, pad_value)
        return per_slot.sum() / float(max(1, valid.numel()))
    per_slot = torch.where(valid, per_slot, torch.zeros_like(per_slot))
    return per_slot.sum() / valid.sum().clamp_min(1)
