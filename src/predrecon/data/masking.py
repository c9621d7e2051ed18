"""Masking: pure functions drawing from an explicit ``torch.Generator``, and the batch collator.

Maskable positions are real tokens: ``segment_ids > 0`` and not one of the five special ids
(pad, unk, cls, sep, mask). Neither MLM nor JEPA ever selects anything else.

**MLM** (:func:`mlm_mask`): per row ``k = round(prob * n_maskable)`` positions (at least 1 when the
row has a maskable token; at most the number of candidates), uniformly without replacement or,
with ``span=True``, as contiguous spans of geometric length (mean ``mean_span``). Of the selected
positions ``mask_frac`` become ``[MASK]``, ``random_frac`` a uniformly drawn non-special token and
the rest stay unchanged (each position draws independently).

**JEPA** (:func:`jepa_blocks`) works on the row's maskable positions taken as one sequence of
length L ("compact coordinates"; in packed rows the documents' tokens are simply concatenated),
and the collator maps the result back to row positions. Per row: ``num_targets`` target blocks
and one context block. Sizes are fractions (uniform in ``target_scale`` / ``context_scale``) of L
(``size_reference='length'``) or of ``max_tokens`` clipped to L (``'max_tokens'``, the paper).
Starts are uniform over the valid range, or such that every block ends at L (``tail_blocks``, the
paper). Target blocks may overlap each other (as in I-JEPA); an overlapped position appears once
per block. With ``context_excludes_targets`` (default) every target position is removed from the
context and, if fewer than ``min_keep`` context tokens remain, all target blocks are shrunk from
their end one token at a time (block 0 keeps at least one token, the others may vanish) until
they do; the context block itself is at least ``min(min_keep + 1, L)`` long, so ``min_keep`` holds
for every row with ``L >= min_keep + 1``. Rows with ``L < min_keep + 1`` get no targets and their
whole sequence as context. Without ``context_excludes_targets`` (the paper) the context block
keeps the targets inside it.

**Collator**: ``Collator(...)(rows, step)`` seeds its generator from ``(seed, step)`` so masks are
reproducible and resuming needs no RNG state. Keys as in docs/architecture.md; JEPA keys only for
objectives 'jepa'/'hybrid', ``mlm_index``/``mlm_labels`` only for 'mlm'/'hybrid';
``mlm_input_ids`` always. In the ``shared`` student path the target positions are ``[MASK]`` in
``mlm_input_ids`` and MLM positions are drawn from the other positions; in ``separate`` they are
independent. ``jepa.context_corrupted`` (the paper) changes nothing here: the trainer gathers the
context from ``mlm_input_ids`` instead of ``input_ids``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import JEPAConfig, MLMConfig, ObjectiveConfig
from .tokenizer import SpecialIds

Batch = dict[str, torch.Tensor]


def maskable_positions(input_ids: torch.Tensor, segment_ids: torch.Tensor, special: SpecialIds) -> torch.Tensor:
    """(B, T) bool: real tokens (non-padding segment, not a special id)."""
    specials = torch.tensor(special.all(), dtype=input_ids.dtype, device=input_ids.device)
    return (segment_ids > 0) & ~torch.isin(input_ids, specials)


def _compact(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True positions of each row of a (B, T) mask, sorted, left-aligned into (B, W), W = max count
    (at least 1). Returns (index, valid, count); padded slots hold index 0."""
    B, T = mask.shape
    ar = torch.arange(T, device=mask.device).expand(B, T)
    key = torch.where(mask, ar, ar + T)  # real positions first, in order
    count = mask.sum(1)
    W = max(int(count.max()) if B else 0, 1)
    idx = key.sort(dim=1).values[:, :W]  # (B, W)
    valid = torch.arange(W, device=mask.device).expand(B, W) < count[:, None]
    if idx.shape[1] < W:  # T < W cannot happen unless T == 0
        idx = torch.nn.functional.pad(idx, (0, W - idx.shape[1]))
    return torch.where(valid, idx, torch.zeros_like(idx)), valid, count


def non_special_ids(vocab_size: int, special: SpecialIds) -> torch.Tensor:
    """(V - #special,) long: the ids a random MLM replacement is drawn from."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    keep[[i for i in special.all() if 0 <= i < vocab_size]] = False
    return keep.nonzero().squeeze(1)


def _span_select(cand: torch.Tensor, k: torch.Tensor, mean_span: float, gen: torch.Generator) -> torch.Tensor:
    """(B, T) bool: exactly ``k[b]`` candidate positions per row, as spans of geometric length.

    Vectorised equivalent of adding spans one by one: S spans per row start at uniformly drawn
    candidates and extend (length ~ Geometric(1 / mean_span), support 1, 2, ...) over following
    positions while those are contiguous candidates. Positions are taken in span order (earlier
    spans first, the last span trimmed at its end) until ``k[b]``; if the spans cover fewer, the
    rest are uniform single positions.
    """
    B, T = cand.shape
    pos, valid, n = _compact(cand)  # (B, W): row positions of the candidates
    W = pos.shape[1]
    j = torch.arange(W)
    starts_run = torch.ones(B, W, dtype=torch.bool)
    starts_run[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    run_id = starts_run.long().cumsum(1) - 1  # (B, W) contiguous-run index of each candidate
    run_end = torch.zeros(B, W, dtype=torch.long).scatter_reduce(
        1, run_id, (j + 1).expand(B, W).contiguous(), reduce="amax", include_self=False)
    run_end = run_end.gather(1, run_id)  # (B, W): one past the end of the run
    S = int(math.ceil(2.0 * float(k.max() if B else 0) / mean_span)) + 8
    starts = (torch.rand(B, S, generator=gen, dtype=torch.float64) * n[:, None]).long()
    starts = torch.minimum(starts, (n[:, None] - 1).clamp(min=0))  # (B, S)
    u = torch.rand(B, S, generator=gen, dtype=torch.float64).clamp(min=1e-12)
    if mean_span <= 1.0:
        lengths = torch.ones(B, S, dtype=torch.long)
    else:
        lengths = torch.floor(torch.log(u) / math.log(1.0 - 1.0 / mean_span)).long() + 1
    ends = torch.minimum(starts + lengths, run_end.gather(1, starts))  # (B, S)
    cover = (j >= starts[..., None]) & (j < ends[..., None])  # (B, S, W)
    prio = torch.where(cover, torch.arange(S)[:, None], S).min(dim=1).values  # (B, W) first span covering
    key = torch.where(prio < S, prio * W + j, (S + torch.rand(B, W, generator=gen, dtype=torch.float64)) * W)
    key = torch.where(valid, key.double(), torch.full((B, W), float("inf"), dtype=torch.float64))
    rank = torch.empty(B, W, dtype=torch.long)
    rank.scatter_(1, key.argsort(dim=1), j.expand(B, W).contiguous())
    chosen = (rank < k[:, None]) & valid  # (B, W)
    out = torch.zeros(B, T, dtype=torch.long)
    out.scatter_add_(1, pos, chosen.long())
    return out > 0


def mlm_mask(input_ids: torch.Tensor, maskable: torch.Tensor, cfg: MLMConfig, special: SpecialIds,
             vocab_size: int, gen: torch.Generator, exclude: torch.Tensor | None = None,
             replacement_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT masking of (B, T) ``input_ids`` (CPU tensors).

    Selects ``k = round(prob * maskable.sum(1))`` positions per row among ``maskable & ~exclude``
    (>= 1 when there is a candidate, <= #candidates), i.i.d. or as geometric spans (``cfg.span``),
    then applies ``mask_frac`` [MASK] / ``random_frac`` random non-special token / rest unchanged.
    Returns ``(corrupted_ids (B, T), mlm_index (B, M) sorted positions with 0 in padded slots,
    mlm_labels (B, M) original ids with -100 in padded slots)``, M = max k (at least 1).
    """
    B, T = input_ids.shape
    cand = maskable if exclude is None else maskable & ~exclude
    n_cand = cand.sum(1)
    k = torch.round(cfg.prob * maskable.sum(1).double()).long()
    k = torch.minimum(torch.where(n_cand > 0, k.clamp(min=1), torch.zeros_like(k)), n_cand)  # (B,)
    if cfg.span:
        sel = _span_select(cand, k, cfg.mean_span, gen)
    else:
        scores = torch.rand(B, T, generator=gen)
        scores = torch.where(cand, scores, torch.full_like(scores, 2.0))
        rank = torch.empty(B, T, dtype=torch.long)
        rank.scatter_(1, scores.argsort(dim=1), torch.arange(T).expand(B, T).contiguous())
        sel = rank < k[:, None]  # (B, T)
    mlm_index, valid, _ = _compact(sel)  # (B, M)
    mlm_labels = torch.where(valid, input_ids.gather(1, mlm_index), torch.full_like(mlm_index, -100))
    u = torch.rand(B, T, generator=gen)
    to_mask = sel & (u < cfg.mask_frac)
    to_rand = sel & (u >= cfg.mask_frac) & (u < cfg.mask_frac + cfg.random_frac)
    pool = replacement_ids if replacement_ids is not None else non_special_ids(vocab_size, special)
    rand_tok = pool[torch.randint(len(pool), (B, T), generator=gen)]
    corrupted = torch.where(to_mask, torch.full_like(input_ids, special.mask_id), input_ids)
    corrupted = torch.where(to_rand, rand_tok.to(input_ids.dtype), corrupted)
    return corrupted, mlm_index, mlm_labels


def _uniform(lo: float, hi: float, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def jepa_blocks(lengths: torch.Tensor, cfg: JEPAConfig, gen: torch.Generator, seq_len: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D multi-block masking in compact coordinates ``0 .. L-1`` of each row (see module doc).

    ``lengths`` (B,) are the real-token counts (<= ``seq_len``). Returns ``ctx_index (B, C)``
    sorted, ``ctx_valid (B, C)``, ``tgt_index (B, N)`` block-major and sorted within blocks,
    ``tgt_valid (B, N)``, ``tgt_block (B, N)``; padded slots hold 0 / False; C, N = batch maxima
    (at least 1).
    """
    B, K, T = lengths.shape[0], cfg.num_targets, seq_len
    L = lengths.long().clamp(0, T)  # (B,)
    ref = L.double() if cfg.size_reference == "length" else torch.full((B,), float(cfg.max_tokens), dtype=torch.float64)
    has_tgt = L >= cfg.min_keep + 1  # (B,)
    size_t = torch.round(_uniform(*cfg.target_scale, (B, K), gen) * ref[:, None]).long().clamp(min=1)
    size_t = torch.minimum(size_t, L[:, None]) * has_tgt[:, None]  # (B, K)
    size_c = torch.round(_uniform(*cfg.context_scale, (B,), gen) * ref).long()
    size_c = torch.minimum(torch.maximum(size_c, torch.clamp(L, max=cfg.min_keep + 1)), L)
    size_c = torch.where(has_tgt, size_c, L)  # (B,)
    if cfg.tail_blocks:
        start_t, start_c = L[:, None] - size_t, L - size_c
    else:
        start_t = (torch.rand((B, K), generator=gen, dtype=torch.float64) * (L[:, None] - size_t + 1)).long()
        start_c = (torch.rand((B,), generator=gen, dtype=torch.float64) * (L - size_c + 1)).long()
        start_t = torch.minimum(start_t, L[:, None] - size_t)
        start_c = torch.minimum(start_c, L - size_c)
    ar = torch.arange(T)
    ctx_block = (ar >= start_c[:, None]) & (ar < (start_c + size_c)[:, None])  # (B, T)

    def target_mask() -> torch.Tensor:
        return (ar >= start_t[..., None]) & (ar < (start_t + size_t)[..., None])  # (B, K, T)

    tmask = target_mask()
    ctx = ctx_block
    if cfg.context_excludes_targets:
        ctx = ctx_block & ~tmask.any(1)
        floor = torch.zeros(K, dtype=torch.long)
        floor[0] = 1
        while True:
            short = (ctx.sum(1) < cfg.min_keep) & has_tgt  # (B,)
            can = (size_t > floor) & short[:, None]  # (B, K)
            if not bool(can.any()):
                break
            size_t = size_t - can.long()
            tmask = target_mask()
            ctx = ctx_block & ~tmask.any(1)
    ctx_index, ctx_valid, _ = _compact(ctx)
    flat, tgt_valid, _ = _compact(tmask.reshape(B, K * T))  # (B, N) keys k*T + t, block-major
    tgt_index = torch.where(tgt_valid, flat % T, torch.zeros_like(flat))
    tgt_block = torch.where(tgt_valid, flat // T, torch.zeros_like(flat))
    return ctx_index, ctx_valid, tgt_index, tgt_valid, tgt_block


def step_seed(seed: int, step: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, step)`` (numpy SeedSequence)."""
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be >= 0, got seed={seed}, step={step}")
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class Collator:
    """Turns batcher rows into a training batch (docs/architecture.md) with masks drawn from a
    generator seeded by ``(seed, step)``. Works on CPU tensors."""

    def __init__(self, mlm_cfg: MLMConfig, jepa_cfg: JEPAConfig, objective_cfg: ObjectiveConfig,
                 special: SpecialIds, vocab_size: int, seed: int = 0):
        self.mlm_cfg, self.jepa_cfg, self.objective_cfg = mlm_cfg, jepa_cfg, objective_cfg
        self.special, self.vocab_size, self.seed = special, int(vocab_size), int(seed)
        self.need_jepa = objective_cfg.kind in ("jepa", "hybrid")
        self.need_mlm = objective_cfg.kind in ("mlm", "hybrid")
        self.shared = objective_cfg.student_path == "shared" and self.need_jepa
        self._pool = non_special_ids(self.vocab_size, special)

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(step_seed(self.seed, step))

    def __call__(self, rows: Batch, step: int) -> Batch:
        """``rows`` holds ``input_ids``, ``position_ids``, ``segment_ids`` (B, T); returns the batch."""
        ids, seg = rows["input_ids"], rows["segment_ids"]
        B, T = ids.shape
        gen = self.generator(step)
        maskable = maskable_positions(ids, seg, self.special)
        batch: Batch = {k: rows[k] for k in ("input_ids", "position_ids", "segment_ids")}
        tgt_pos = None
        if self.need_jepa:
            pos_of, _, lengths = _compact(maskable)  # (B, L_max): row position of compact index
            c_i, c_v, t_i, t_v, t_b = jepa_blocks(lengths, self.jepa_cfg, gen, T)
            ctx_index = torch.where(c_v, pos_of.gather(1, c_i.clamp(max=pos_of.shape[1] - 1)), 0)
            tgt_index = torch.where(t_v, pos_of.gather(1, t_i.clamp(max=pos_of.shape[1] - 1)), 0)
            hits = torch.zeros(B, T, dtype=torch.long).scatter_add_(1, tgt_index, t_v.long())
            tgt_pos = hits > 0  # (B, T)
            batch.update(ctx_index=ctx_index, ctx_valid=c_v, tgt_index=tgt_index, tgt_valid=t_v, tgt_block=t_b)
        if self.need_mlm:
            corrupted, mlm_index, mlm_labels = mlm_mask(
                ids, maskable, self.mlm_cfg, self.special, self.vocab_size, gen,
                exclude=tgt_pos if self.shared else None, replacement_ids=self._pool)
            batch.update(mlm_index=mlm_index, mlm_labels=mlm_labels)
        else:
            corrupted = ids.clone()
        if self.shared and tgt_pos is not None:
            corrupted = torch.where(tgt_pos, torch.full_like(corrupted, self.special.mask_id), corrupted)
        batch["mlm_input_ids"] = corrupted
        return batch
