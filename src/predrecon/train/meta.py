"""The hybrid meta-model: one object owns the student encoder, the EMA target, the predictor,
the MLM head and the balancer (house rule 4).

``HybridModel.forward(batch)`` returns ``(total_loss, logs)`` where ``logs`` holds detached
tensors (``.item()`` is called only at log time). The objective kinds ``mlm``, ``jepa`` and
``hybrid`` run through this same class; ``objective.student_path`` selects

* ``shared``   — one student pass over ``mlm_input_ids`` (MLM corruption, JEPA targets replaced by
  ``[MASK]``); the MLM head reads the masked positions, the predictor reads the context positions;
* ``separate`` — the reference code's layout: one student pass over the gathered context block,
  one over the MLM-corrupted sequence (plus the target pass: three encoder passes per step).

The target encoder is kept *outside* the module tree (not a registered submodule) so optimisers,
``.train()`` and DDP never see it; it is saved and loaded explicitly by the checkpoint code.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import RunConfig
from ..data.tokenizer import SpecialIds
from ..model.encoder import Encoder
from ..model.heads import MLMHead, Predictor, build_predictor
from ..objectives.balance import build_balancer
from ..objectives.jepa import build_targets, jepa_loss
from .ema import ema_update, make_target


def _single_unpadded(seg: torch.Tensor | None) -> bool:
    """Whether ``seg`` (B, T) marks one document filling every row (all ones) — then attention
    over the full row needs no mask (and SDPA may use its fused kernels). Checked only for CPU
    tensors (free there); on an accelerator the mask is kept rather than syncing every step."""
    return seg is not None and seg.device.type == "cpu" and bool((seg == 1).all())


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather rows of ``x`` (B, T, ...) at ``index`` (B, K) -> (B, K, ...)."""
    if x.dim() == 2:
        return torch.gather(x, 1, index)
    idx = index.unsqueeze(-1).expand(*index.shape, x.shape[-1])  # (B, K, D)
    return torch.gather(x, 1, idx)


class HybridModel(nn.Module):
    """Student encoder + EMA target + predictor + MLM head + balancer for one run config."""

    def __init__(self, cfg: RunConfig, vocab_size: int, special: SpecialIds):
        super().__init__()
        self.cfg = cfg
        self.special = special
        kind = cfg.objective.kind
        self.use_mlm = kind in ("mlm", "hybrid")
        self.use_jepa = kind in ("jepa", "hybrid")
        self.encoder = Encoder(cfg.model, vocab_size)
        self.mlm_head: MLMHead | None = None
        self.predictor: Predictor | None = None
        if self.use_mlm:
            tie = self.encoder.tok_emb if cfg.mlm.tie_decoder else None
            self.mlm_head = MLMHead(cfg.model.dim, self.encoder.padded_vocab, vocab_size, tie_to=tie,
                                    eps=cfg.model.norm_eps)
        if self.use_jepa:
            self.predictor = build_predictor(cfg)  # the run's width, sizes, norm eps, init and attention
        self.balancer = build_balancer(cfg.objective)
        self._target: list[Encoder] = []  # held in a list so it is not a registered submodule
        if self.use_jepa:
            self._target.append(make_target(self.encoder))

    # ------------------------------------------------------------------ target encoder
    @property
    def target(self) -> Encoder | None:
        return self._target[0] if self._target else None

    def to(self, *args, **kwargs):  # keep the unregistered target on the same device/dtype
        super().to(*args, **kwargs)
        if self._target:
            self._target[0].to(*args, **kwargs)
        return self

    @torch.no_grad()
    def update_target(self, momentum: float, skip: torch.Tensor | None = None) -> None:
        """EMA step: target <- momentum * target + (1 - momentum) * student; a no-op where the
        0-dim bool tensor ``skip`` is true (decided on the device, no host sync)."""
        if self.target is not None:
            ema_update(self.target, self.encoder, momentum, skip=skip)

    def shared_params(self) -> list[nn.Parameter]:
        """Parameters of the last student block: where per-loss gradient norms are measured
        (GradNorm's W and the logged ``gradnorm_*``)."""
        return [p for p in self.encoder.blocks[-1].parameters() if p.requires_grad]

    # ------------------------------------------------------------------ forward
    def _segments(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return batch["segment_ids"] if self.cfg.objective.attention_mask else None

    def compute_losses(self, batch: dict[str, torch.Tensor], with_stats: bool = False
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Unweighted losses ``{"mlm": .., "jepa": ..}`` for one batch (keys as in
        docs/architecture.md), plus detached collapse statistics when ``with_stats`` (scalars, and
        ``targets``: the JEPA target states of every token, (B, T, D))."""
        pos = batch["position_ids"]
        seg = self._segments(batch)
        losses: dict[str, torch.Tensor] = {}
        stats: dict[str, torch.Tensor] = {}
        shared_pass = self.cfg.objective.student_path == "shared" and self.use_mlm
        h_full = None
        row_seg = None if _single_unpadded(seg) else seg  # full rows: no attention mask when none is needed
        if self.use_mlm:
            h_full = self.encoder(batch["mlm_input_ids"], pos, row_seg).last_hidden_state  # (B, T, D)
            # decoder + cross-entropy fused, a chunk of slots at a time: no (B, M, V) logits
            losses["mlm"] = self.mlm_head.loss(h_full, batch["mlm_index"], batch["mlm_labels"])
        if self.use_jepa:
            ctx_index, ctx_valid = batch["ctx_index"], batch["ctx_valid"]
            ctx_pos = gather_tokens(pos, ctx_index)  # (B, C)
            if shared_pass:
                ctx_states = gather_tokens(h_full, ctx_index)  # (B, C, D)
            else:
                corrupted = self.cfg.jepa.context_corrupted and "mlm_input_ids" in batch
                src = batch["mlm_input_ids"] if corrupted else batch["input_ids"]
                ctx_ids = gather_tokens(src, ctx_index)  # (B, C)
                ctx_seg = None
                if seg is not None:
                    ctx_seg = gather_tokens(seg, ctx_index) * ctx_valid.long()  # invalid slots -> padding
                ctx_states = self.encoder(ctx_ids, ctx_pos, ctx_seg).last_hidden_state  # (B, C, D)
            tgt_index, tgt_valid = batch["tgt_index"], batch["tgt_valid"]
            with torch.no_grad():
                k = self.cfg.jepa.target_layers
                t_out = self.target(batch["input_ids"], pos, row_seg, output_hidden_states=k > 1)
                states = t_out.hidden_states if k > 1 else (t_out.last_hidden_state,)
                real = batch["segment_ids"].ne(0) if seg is not None else None  # (B, T)
                full = build_targets(states, k, norm=self.cfg.jepa.target_norm, token_mask=real,
                                     segments=batch["segment_ids"] if seg is not None else None)  # (B, T, D) fp32
                target = gather_tokens(full, tgt_index)  # (B, N, D) fp32
            segs = {}
            if seg is not None:  # packed rows: a target attends to its own document's context only
                segs = dict(ctx_seg=gather_tokens(seg, ctx_index), tgt_seg=gather_tokens(seg, tgt_index))
            pred = self.predictor(ctx_states, ctx_pos, ctx_valid, gather_tokens(pos, tgt_index),
                                  batch["tgt_block"], tgt_valid, **segs,
                                  slots_valid=batch.get("pred_valid"))  # (B, N, D)
            losses["jepa"] = jepa_loss(pred, target, tgt_valid, kind=self.cfg.jepa.loss,
                                       over_padding=self.cfg.jepa.loss_over_padding)
            if with_stats:
                stats["std_ctx"] = _feature_std(ctx_states.detach(), ctx_valid)
                stats["std_pred"] = _feature_std(pred.detach(), tgt_valid)
                stats["std_tgt"] = _feature_std(target, tgt_valid)
                stats["targets"] = full  # (B, T, D): for the position-only baseline (diagnostics)
        return losses, stats

    def loss_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The number each loss of :meth:`compute_losses` averages over in ``batch`` (0-dim long
        tensors, no host sync): MLM — labelled slots; JEPA — real target slots (all slots with
        ``jepa.loss_over_padding``). Gradient accumulation weighs micro-batches by these."""
        counts: dict[str, torch.Tensor] = {}
        if self.use_mlm:
            counts["mlm"] = batch["mlm_labels"].ne(-100).sum()
        if self.use_jepa:
            v = batch["tgt_valid"]
            counts["jepa"] = (v.new_full((), v.numel(), dtype=torch.long) if self.cfg.jepa.loss_over_padding
                              else v.sum())  # new_full: filled on the device, no blocking host copy
        return counts

    def forward(self, batch: dict[str, torch.Tensor], with_stats: bool = False, *,
                loss_scale: dict[str, torch.Tensor] | None = None, update_balancer: bool = True
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Balanced total loss for one batch -> (total, detached logs incl. lambda).

        ``loss_scale`` multiplies each unweighted loss before balancing (and in the logs): the
        trainer's exact gradient accumulation (``train.loop.forward_backward``). ``update_balancer``
        is passed to the balancer as ``update`` (GradNorm's weight update and its extra backward).
        """
        losses, logs = self.compute_losses(batch, with_stats)
        if loss_scale is not None:
            losses = {name: v * loss_scale[name] for name, v in losses.items()}
        gradnorm = self.cfg.objective.balancer == "gradnorm" and update_balancer
        shared = self.shared_params() if gradnorm else None
        total, bal_logs = self.balancer(losses, shared_params=shared, update=update_balancer)
        for name, v in losses.items():
            logs[f"loss_{name}"] = v.detach()
        logs.update(bal_logs)
        logs["loss"] = total.detach()
        return total, logs

    def loss_grad_norms(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """L2 norm of the gradient of each unweighted loss w.r.t. the whole student encoder.

        A diagnostic (one extra forward and one backward per loss); does not touch ``.grad``.
        """
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        losses, _ = self.compute_losses(batch)
        out: dict[str, float] = {}
        names = list(losses)
        for i, name in enumerate(names):
            grads = torch.autograd.grad(losses[name], params, retain_graph=i < len(names) - 1,
                                        allow_unused=True)
            sq = torch.stack([(g.float() ** 2).sum() for g in grads if g is not None]).sum()
            out[f"gradnorm_{name}"] = float(sq.sqrt())
        return out


def _feature_std(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over features of the std across valid tokens of ``x`` (B, K, D) — collapse signal."""
    flat = x.float()[valid]  # (n, D)
    if flat.shape[0] < 2:
        return torch.zeros((), device=x.device)
    return flat.std(dim=0).mean()

