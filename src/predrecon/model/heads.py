"""Heads on top of the encoder: the sparse MLM head and the JEPA predictor.

* :class:`MLMHead` — ``Linear(d, d) -> GELU -> LayerNorm -> Linear(d, V)`` (PAPER.md "MLM head"),
  run only on the gathered masked positions.
* :class:`Predictor` — I-JEPA-style narrow Transformer: projects the context states, appends one
  learned mask token + position embedding per target slot, runs ``predictor_depth`` pre-LN blocks
  (the encoder's :class:`~predrecon.model.encoder.Block`), LayerNorm, and projects back to the
  encoder width. ``jepa.predictor_mode``: ``joint`` (default) — one pass over the context and
  every target block, one mask token per block; ``per_block`` (the reference) — one shared mask
  token and one pass per target block, so the slots of one block never see another block's.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import JEPAConfig, RunConfig
from .encoder import Block, init_weights_, key_attention_mask, make_position_embedding, rescale_output_projections_


class MLMHead(nn.Module):
    """Sparse MLM head.

    ``vocab_size_padded`` decoder rows (a multiple of the padding multiple, for fast matmuls);
    only the first ``real_vocab`` logits are returned, so padded rows are never predicted.
    ``tie_to``: share the decoder weight with this embedding (its weight must be
    (vocab_size_padded, dim)); the head keeps its own bias. ``None`` = untied (paper).
    """

    def __init__(self, dim: int, vocab_size_padded: int, real_vocab: int,
                 tie_to: nn.Embedding | None = None, eps: float = 1e-6, init_std: float = 0.02):
        super().__init__()
        if not 0 < real_vocab <= vocab_size_padded:
            raise ValueError(f"need 0 < real_vocab <= vocab_size_padded, got {real_vocab} > {vocab_size_padded}")
        self.real_vocab = real_vocab
        self.dense = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.decoder = nn.Linear(dim, vocab_size_padded)
        init_weights_(self, init_std)
        if tie_to is not None:
            if tuple(tie_to.weight.shape) != (vocab_size_padded, dim):
                raise ValueError(f"tie_to weight has shape {tuple(tie_to.weight.shape)}, "
                                 f"expected ({vocab_size_padded}, {dim})")
            self.decoder.weight = tie_to.weight  # shared Parameter (Hugging Face convention)

    def forward(self, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Logits (B, M, real_vocab) for ``hidden`` (B, T, D) at positions ``index`` (B, M).

        The positions are gathered first: logits are never computed for unmasked tokens.
        Padded slots of ``index`` (any valid position, e.g. 0) produce logits that the loss
        ignores through label -100.
        """
        D = hidden.shape[-1]
        x = torch.gather(hidden, 1, index.unsqueeze(-1).expand(-1, -1, D))  # (B, M, D)
        x = self.norm(self.act(self.dense(x)))
        return self.decoder(x)[..., : self.real_vocab]  # (B, M, V_real)

    def loss(self, hidden: torch.Tensor, index: torch.Tensor, labels: torch.Tensor, chunk: int = 1024
             ) -> torch.Tensor:
        """``mlm_loss(self(hidden, index), labels)`` without the (B, M, V) logits: the decoder and
        the cross-entropy run fused, ``chunk`` slots at a time
        (:func:`~predrecon.objectives.mlm.linear_cross_entropy`). ``labels`` (B, M), -100 = ignored."""
        from ..objectives.mlm import linear_cross_entropy

        D = hidden.shape[-1]
        x = torch.gather(hidden, 1, index.unsqueeze(-1).expand(-1, -1, D))  # (B, M, D)
        x = self.norm(self.act(self.dense(x)))
        V = self.real_vocab
        return linear_cross_entropy(x.reshape(-1, D), self.decoder.weight, self.decoder.bias,
                                    labels.reshape(-1), chunk, num_classes=V)


class Predictor(nn.Module):
    """JEPA predictor: context states + mask tokens at target positions -> predicted target states.

    ``enc_dim`` is the encoder width; ``jepa_cfg`` gives ``predictor_dim``, ``predictor_depth``,
    ``predictor_heads`` and ``predictor_mode``; ``max_len`` bounds the position ids;
    ``num_targets`` mask tokens (one per target block; a single shared one in ``per_block``
    mode). ``positions``: ``sincos`` (fixed, paper) or ``learned``. ``attention``: the kernel
    (``model.attention``, :func:`~predrecon.model.encoder.resolve_attention`).
    """

    def __init__(self, enc_dim: int, jepa_cfg: JEPAConfig, max_len: int, num_targets: int,
                 positions: str = "sincos", mlp_ratio: float = 4.0, eps: float = 1e-6,
                 init_std: float = 0.02, attention: str = "auto"):
        super().__init__()
        if positions not in ("sincos", "learned"):
            raise ValueError(f"predictor positions must be sincos|learned, got {positions!r}")
        if num_targets < 1:
            raise ValueError(f"num_targets must be >= 1, got {num_targets}")
        pdim = jepa_cfg.predictor_dim
        self.num_targets = num_targets
        self.per_block = getattr(jepa_cfg, "predictor_mode", "joint") == "per_block"
        self.embed = nn.Linear(enc_dim, pdim)
        self.pos_emb = make_position_embedding(positions, max_len, pdim)
        self.mask_tokens = nn.Parameter(torch.zeros(1 if self.per_block else num_targets, pdim))
        self.blocks = nn.ModuleList(Block(pdim, jepa_cfg.predictor_heads, mlp_ratio, eps, attention=attention)
                                    for _ in range(jepa_cfg.predictor_depth))
        self.norm = nn.LayerNorm(pdim, eps=eps)
        self.proj = nn.Linear(pdim, enc_dim)
        init_weights_(self, init_std)
        nn.init.trunc_normal_(self.mask_tokens, std=init_std)
        rescale_output_projections_(self.blocks)

    def forward(self, ctx_states: torch.Tensor, ctx_pos: torch.Tensor, ctx_valid: torch.Tensor,
                tgt_pos: torch.Tensor, tgt_block: torch.Tensor, tgt_valid: torch.Tensor,
                ctx_seg: torch.Tensor | None = None, tgt_seg: torch.Tensor | None = None,
                slots_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Predict (B, N, enc_dim) target states.

        ``ctx_states`` (B, C, enc_dim) encoder states at the context slots, ``ctx_pos`` (B, C)
        their position ids, ``ctx_valid`` (B, C) bool; ``tgt_pos`` (B, N) position ids of the
        target slots, ``tgt_block`` (B, N) their block id in ``[0, num_targets)``, ``tgt_valid``
        (B, N) bool. Every valid slot attends to the valid slots (context and target) and to
        nothing else, so invalid slots never influence valid ones. Optional ``ctx_seg``/``tgt_seg``
        (B, C)/(B, N) further restrict attention to equal segment ids (packed rows). Outputs at
        invalid target slots are finite but meaningless.

        The sequence the blocks run over is compact: each row holds its valid context entries,
        then its valid target entries, in order, then padding, plus one last slot that every
        invalid entry is sent to (a zero vector that attends only to itself). Its width L + 1
        comes from ``slots_valid`` (B, L) — the collator's ``pred_valid``, ``L`` = the batch's
        largest count of valid entries, or a fixed cap; only its width is read, the occupied
        slots follow from ``ctx_valid`` and ``tgt_valid`` — and is ``C + N + 1`` without it. So
        a batch whose rows pad their context and target lists to different widths costs the
        predictor no more than its largest row. The last block computes only the target slots'
        outputs (its keys and values still come from every slot).

        ``per_block`` mode runs the stack once per block id ``k``, with the target slots of the
        other blocks removed from attention — the same result as running ``[context, block k]``
        alone — and returns each slot's output from its own block's pass.
        """
        B, C = ctx_valid.shape
        N = tgt_valid.shape[1]
        L = C + N if slots_valid is None else slots_valid.shape[1]
        ctx = self.embed(ctx_states) + self.pos_emb(ctx_pos)  # (B, C, P)
        tok = self.mask_tokens[torch.zeros_like(tgt_block) if self.per_block else tgt_block]
        tgt = (tok + self.pos_emb(tgt_pos)).to(ctx.dtype)  # (B, N, P)
        # slot of every entry: valid context first, then valid targets; invalid ones -> slot L
        n_ctx = ctx_valid.sum(1, keepdim=True)  # (B, 1)
        c_slot = torch.where(ctx_valid, ctx_valid.long().cumsum(1) - 1, L)  # (B, C)
        t_slot = torch.where(tgt_valid, n_ctx + tgt_valid.long().cumsum(1) - 1, L)  # (B, N)
        if slots_valid is not None and B:  # checked on the device (a CUDA-side assert), no host sync
            torch._assert_async((n_ctx[:, 0] + tgt_valid.sum(1)).max() <= L,
                                "predictor: a row has more valid context + target entries than the "
                                "batch's slots_valid (pred_valid) has slots")
        P = ctx.shape[-1]
        zero = ctx.new_zeros(B, L + 1, P)
        x = zero.scatter(1, c_slot[..., None].expand(B, C, P), ctx * ctx_valid[..., None].to(ctx.dtype))
        x = x.scatter(1, t_slot[..., None].expand(B, N, P), tgt * tgt_valid[..., None].to(tgt.dtype))
        groups = None
        if ctx_seg is not None or tgt_seg is not None:
            if ctx_seg is None or tgt_seg is None:
                raise ValueError("ctx_seg and tgt_seg must be given together")
            # invalid entries all write 0 into the dump slot: the same value whichever write lands last
            groups = ctx_seg.new_zeros(B, L + 1).scatter(1, c_slot, ctx_seg * ctx_valid).scatter(
                1, t_slot, tgt_seg * tgt_valid)

        def occupied(tv: torch.Tensor) -> torch.Tensor:  # (B, L + 1) bool: keys of one pass
            keys = torch.zeros(B, L + 1, dtype=torch.bool, device=tv.device)
            return keys.scatter(1, c_slot, ctx_valid).scatter(1, t_slot, tv)

        if not self.per_block:
            return self._run(x, occupied(tgt_valid), groups, t_slot)
        out = None
        for k in range(self.num_targets):  # every block, even one without valid slots in this batch:
            in_k = tgt_block == k  # (B, N)  asking would read the data back to the host (a GPU sync)
            y = self._run(x, occupied(tgt_valid & in_k), groups, t_slot)
            out = y if out is None else torch.where(in_k[..., None], y, out)
        return out

    def _run(self, x: torch.Tensor, keys: torch.Tensor, groups: torch.Tensor | None,
             t_slot: torch.Tensor) -> torch.Tensor:
        """The blocks over ``x`` (B, S, P) with key mask ``keys`` (B, S); the last block only at
        the rows ``t_slot`` (B, N). Returns (B, N, enc_dim)."""
        attn_mask = key_attention_mask(keys, groups)  # (B, 1, S, S)
        for block in self.blocks[:-1]:
            x = block(x, attn_mask)
        rows_mask = attn_mask.gather(2, t_slot[:, None, :, None].expand(-1, 1, -1, attn_mask.shape[-1]))
        y = self.blocks[-1].forward_rows(x, t_slot, rows_mask)  # (B, N, P)
        return self.proj(self.norm(y))  # (B, N, enc_dim)


def build_predictor(cfg: RunConfig) -> Predictor:
    """The predictor for a run: encoder width ``cfg.model.dim``, ``cfg.jepa`` sizes,
    ``cfg.model.max_len`` positions, ``cfg.jepa.num_targets`` mask tokens, fixed sin/cos positions."""
    return Predictor(cfg.model.dim, cfg.jepa, max_len=cfg.model.max_len, num_targets=cfg.jepa.num_targets,
                     positions="sincos", eps=cfg.model.norm_eps, init_std=cfg.model.init_std,
                     attention=cfg.model.attention)
