"""Collapse diagnostics on a fixed held-out batch (64 rows), run every ``train.diag_every``
steps, and the trainer's numerical guards.

Reported: validation losses; beside the JEPA loss, the loss of a predictor that knows only the
target's position (``val_loss_jepa_position_only``, cross-fitted per-position mean target) and of
one that knows nothing (``val_loss_jepa_mean_only``); the std of context, prediction and target
states (mean over features of the per-feature std across tokens); the effective rank (Roy &
Vetterli 2007, exp of the entropy of the normalised singular values) of mean-pooled student and
target embeddings and of the student's token states; the gradient norm of each unweighted loss
on the student encoder. Warnings (defaults measured in docs/balancing.md): a std below
``train.collapse_std``, a pooled rank below ``train.collapse_rank``, the token rank below
``train.collapse_rank_frac`` x its value at init (collapse), the position-only loss below
``train.trivial_jepa`` x the no-information loss (a JEPA task solvable from positions).

:class:`FaultMonitor` counts non-finite steps without a host sync; :class:`TrainingStopped` is the
one-line stop for non-finite streaks and divergence.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import RunConfig
from ..data.batching import make_batcher
from ..data.masking import Collator
from ..data.shards import TokenDataset
from ..objectives.jepa import jepa_loss

_FIXED_STEP = 2**31 - 1  # the held-out batch's masks come from a step index training never reaches


def effective_rank_torch(x: torch.Tensor, eps: float = 1e-12) -> float:
    """exp(H(p)), p = σ / Σσ over the singular values of the centred ``x`` (n, d), in fp32."""
    x = x.float()
    sv = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = sv / sv.sum().clamp_min(eps)
    h = -(p * torch.log(p.clamp_min(eps))).sum()
    return float(torch.exp(h))


def position_only_predictions(targets: torch.Tensor, position_ids: torch.Tensor, real: torch.Tensor,
                              tgt_index: torch.Tensor, use_position: bool = True) -> torch.Tensor:
    """Cross-fitted predictions of a predictor that sees only the target's position id.

    ``targets`` (B, T, D) target states of every token, ``position_ids`` (B, T), ``real`` (B, T)
    bool (tokens that enter the statistics), ``tgt_index`` (B, N) target slots. The rows are split
    into two folds (even / odd rows); a row's prediction at position p is the mean target of the
    *other* fold's real tokens at position p (the other fold's overall mean where it has none), so
    no row predicts itself. ``use_position=False`` predicts the other fold's overall mean
    everywhere (the no-information baseline). Returns (B, N, D) fp32.
    """
    t = targets.float()
    B, T, D = t.shape
    P = int(position_ids.max()) + 1
    fold = torch.arange(B, device=t.device) % 2  # (B,)
    pred = torch.zeros(B, tgt_index.shape[1], D, device=t.device)
    tpos = torch.gather(position_ids, 1, tgt_index)  # (B, N)
    for f in (0, 1):
        other = real & (fold != f)[:, None]  # (B, T): the other fold's real tokens
        x, p = t[other], position_ids[other]  # (n, D), (n,)
        glob = x.mean(0) if x.shape[0] else torch.zeros(D, device=t.device)
        rows = fold == f
        if not use_position:
            pred[rows] = glob
            continue
        sums = torch.zeros(P, D, device=t.device).index_add_(0, p, x)
        cnt = torch.zeros(P, device=t.device).index_add_(0, p, torch.ones_like(p, dtype=t.dtype))
        table = torch.where(cnt[:, None] > 0, sums / cnt.clamp_min(1)[:, None], glob)  # (P, D)
        pred[rows] = table[tpos[rows]]
    return pred


def mean_pool(h: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """Mean over non-padding tokens: (B, T, D), (B, T) -> (B, D)."""
    m = segment_ids.ne(0).unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class Diagnostics:
    """Holds the fixed held-out batch and computes the diagnostics dict.

    Call :meth:`set_reference` with the freshly initialised model (before any checkpoint is
    loaded: a resumed run rebuilds the same init from the seed) to record the token-level
    effective rank that the collapse warning compares against.
    """

    def __init__(self, cfg: RunConfig, ds: TokenDataset, collator: Collator, device: torch.device):
        self.cfg = cfg
        bs = 64  # fixed, so the effective ranks are comparable across presets and batch sizes
        split = "val" if ds.num_docs("val") >= bs else "train"  # tiny corpora: too few held-out docs
        batcher = make_batcher(ds, cfg.data, split, bs, seed=12345)
        rows = next(batcher)
        self.batch = {k: v.to(device) for k, v in collator(rows, _FIXED_STEP).items()}
        self.split = split
        self.init_erank_tokens: float | None = None

    def _student_states(self, model) -> torch.Tensor:
        b = self.batch
        with torch.no_grad():
            return model.encoder(b["input_ids"], b["position_ids"], b["segment_ids"]).last_hidden_state

    def set_reference(self, model) -> float:
        """Record (and return) the student's token-level effective rank at initialisation."""
        was_training = model.training
        model.eval()
        h = self._student_states(model)
        model.train(was_training)
        self.init_erank_tokens = effective_rank_torch(h[self.batch["segment_ids"].ne(0)])
        return self.init_erank_tokens

    def jepa_baselines(self, targets: torch.Tensor) -> dict[str, float]:
        """JEPA losses of the position-only predictor and of the no-information predictor (the
        mean target) on the held-out batch's target slots, in the run's loss kind."""
        b, j = self.batch, self.cfg.jepa
        real = b["segment_ids"].ne(0)
        out = {}
        for name, use_pos in (("val_loss_jepa_position_only", True), ("val_loss_jepa_mean_only", False)):
            pred = position_only_predictions(targets, b["position_ids"], real, b["tgt_index"], use_pos)
            tgt = torch.gather(targets.float(), 1, b["tgt_index"].unsqueeze(-1).expand_as(pred))
            out[name] = float(jepa_loss(pred, tgt, b["tgt_valid"], kind=j.loss, over_padding=j.loss_over_padding))
        return out

    def run(self, model, train_batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        b = self.batch
        out: dict[str, Any] = {"split": self.split}
        with torch.no_grad():
            losses, stats = model.compute_losses(b, with_stats=True)
            targets = stats.pop("targets", None)
            out.update({f"val_loss_{k}": float(v) for k, v in losses.items()})
            out.update({k: float(v) for k, v in stats.items()})
            if targets is not None:
                out.update(self.jepa_baselines(targets))
            seg = b["segment_ids"]
            h = self._student_states(model)
            out["erank_student"] = effective_rank_torch(mean_pool(h, seg))
            out["erank_tokens_student"] = effective_rank_torch(h[seg.ne(0)])
            if model.target is not None:
                ht = model.target(b["input_ids"], b["position_ids"], seg).last_hidden_state
                out["erank_target"] = effective_rank_torch(mean_pool(ht, seg))
        out.update(model.loss_grad_norms(train_batch))
        out["warnings"] = self.warnings(out)
        return out

    def warnings(self, d: dict[str, Any]) -> list[str]:
        """One-line warnings for a diagnostics dict ``d`` at the configured thresholds."""
        cfg = self.cfg.train
        warn = []
        for k in ("std_ctx", "std_pred", "std_tgt"):
            if k in d and d[k] < cfg.collapse_std:
                warn.append(f"possible collapse: {k}={d[k]:.2e} < train.collapse_std={cfg.collapse_std}")
        for k in ("erank_student", "erank_target"):
            if k in d and d[k] < cfg.collapse_rank:
                warn.append(f"possible collapse: {k}={d[k]:.2f} < train.collapse_rank={cfg.collapse_rank}")
        init = self.init_erank_tokens
        if init and "erank_tokens_student" in d and d["erank_tokens_student"] < cfg.collapse_rank_frac * init:
            warn.append(f"representation collapse: the student's token effective rank fell to "
                        f"{d['erank_tokens_student']:.2f} from {init:.2f} at init (< train.collapse_rank_frac="
                        f"{cfg.collapse_rank_frac:g} x init) — check jepa.ema_start/ema_end and the lr")
        pos, mean = d.get("val_loss_jepa_position_only"), d.get("val_loss_jepa_mean_only")
        if pos is not None and mean and pos < cfg.trivial_jepa * mean:
            warn.append(f"JEPA task nearly trivial: a position-only predictor reaches {pos:.3f} "
                        f"(real {d.get('val_loss_jepa', float('nan')):.3f}, no-information {mean:.3f}; "
                        f"< train.trivial_jepa={cfg.trivial_jepa:g} x no-information) — positions dominate "
                        "the targets: use model.positions=learned or rope")
        return warn


class TrainingStopped(ValueError):
    """Training cannot usefully continue (non-finite steps, divergence); the message is one line
    naming the config key that governs the check. A ValueError, so the CLI prints it as one line."""


class FaultMonitor:
    """Counts non-finite steps on the device; :meth:`check` reads the counters (a host sync).

    :meth:`record` takes a 0-dim bool tensor per step and updates, without a sync, the total
    number of skipped steps, the current run of consecutive ones and the longest run since the
    last check. :meth:`check` raises :class:`TrainingStopped` once a run reaches ``limit``
    (``train.max_nonfinite``); the trainer calls it every step on CPU (free) and at log and
    checkpoint steps on an accelerator, so a stop there can come up to ``log_every`` steps late
    (the skipped steps changed nothing).
    """

    def __init__(self, device: torch.device, limit: int, skipped: int = 0):
        self.limit = limit
        self.skipped = torch.tensor(skipped, device=device)  # total over the run
        self.run = torch.zeros((), dtype=torch.long, device=device)  # current consecutive run
        self.worst = torch.zeros((), dtype=torch.long, device=device)  # longest run since check()

    def record(self, bad: torch.Tensor) -> None:
        b = bad.long()
        self.skipped += b
        self.run = (self.run + 1) * b
        self.worst = torch.maximum(self.worst, self.run)

    def check(self, step: int, what: str = "loss or gradient") -> int:
        """Raise after ``limit`` consecutive non-finite steps; returns the total skipped so far."""
        worst, skipped = int(self.worst), int(self.skipped)
        self.worst.zero_()
        if worst >= self.limit:
            raise TrainingStopped(f"train.max_nonfinite: {worst} consecutive steps with a non-finite {what} "
                                  f"(last at step {step}, {skipped} skipped in all); stopped without "
                                  "checkpointing them — lower optim.lr or check the data")
        return skipped


def divergence_message(name: str, value: float, best: float, factor: float, step: int) -> str | None:
    """One-line message when a logged loss exceeds ``factor`` x its best (lowest) value so far."""
    if factor > 0 and best > 0 and value > factor * best:
        return (f"train.diverge_factor: {name} = {value:.4g} at step {step} is more than {factor:g} x "
                f"its best value {best:.4g}: the run diverged — lower optim.lr")
    return None
