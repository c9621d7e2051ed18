"""Masking: pure functions drawing from an explicit ``torch.Generator``, and the batch collator.

Maskable positions are real tokens: ``segment_ids > 0`` and not one of the five special ids
(pad, unk, cls, sep, mask). Neither MLM nor JEPA ever selects anything else.

**MLM** (:func:`mlm_mask`): per row ``k = round(prob * n_maskable)`` positions (at least 1 when the
row has a maskable token; at most the number of candidates), uniformly without replacement or,
with ``span=True``, as contiguous spans of geometric length (mean ``mean_span``). Of the selected
positions ``mask_frac`` become ``[MASK]``, ``random_frac`` a uniformly drawn non-special token and
the rest stay unchanged (each position draws independently).

**JEPA** blocks come from the sampler named by ``jepa.sampler`` (registry in
:mod:`predrecon.data.samplers`: ``ours`` per document, ``reference`` the reference code's literal
rule). The ``ours`` rule (:func:`jepa_blocks`) works on one document's maskable positions taken
as a sequence of length L ("compact coordinates"); in packed rows every document of the row is
drawn separately, so no block crosses a document boundary. Per document: ``num_targets`` target
blocks and one context block. Sizes are fractions (uniform in ``target_scale`` /
``context_scale``) of L (``size_reference='length'``) or of ``max_tokens`` clipped to L
(``'max_tokens'``). Starts are uniform over the valid range, or such that every block ends at L
(``tail_blocks``). Target blocks may overlap each other (as in I-JEPA); an overlapped position
appears once per block. With ``context_excludes_targets`` (default) every target position is
removed from the context and, if fewer than ``min_keep`` context tokens remain, all target blocks
are shrunk from their end one token at a time (block 0 keeps at least one token, the others may
vanish) until they do; the context block itself is at least ``min(min_keep + 1, L)`` long, so
``min_keep`` holds for every document with ``L >= min_keep + 1``. Documents with
``L < min_keep + 1`` get no targets and their whole sequence as context. Without
``context_excludes_targets`` the context block keeps the targets inside it.

**Collator**: ``Collator(...)(rows, step)`` seeds its generator from ``(seed, step)`` so masks are
reproducible and resuming needs no RNG state. Keys as in docs/architecture.md; JEPA keys only for
objectives 'jepa'/'hybrid', ``mlm_index``/``mlm_labels`` only for 'mlm'/'hybrid';
``mlm_input_ids`` always. In the ``shared`` student path the target positions are ``[MASK]`` in
``mlm_input_ids`` and MLM positions are drawn from the other positions; in ``separate`` they are
independent. ``jepa.context_corrupted`` (the paper) changes nothing here: the trainer gathers the
context from ``mlm_input_ids`` instead of ``input_ids``. With ``jepa.sampler=reference`` padding
slots get ``position_ids`` = their slot index (the reference adds its position table to every
slot) and the batch carries ``tgt_real`` (B, N): drawn target slots, as opposed to index padding
(which points at position 0 and stays valid). ``mlm.jepa_blocks`` (``mlm-matched`` arm): see
:class:`Collator`. ``fixed_widths=True`` pads every index tensor to a width fixed per run
(:meth:`Collator.width_caps`; padding slots hold index 0, label -100, valid False), so the
shapes do not change between steps (compiled models, CUDA graphs). :func:`corruption_rates`
measures what the student sees.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import JEPAConfig, MLMConfig, ObjectiveConfig
from .samplers import compact as _compact
from .samplers import get_sampler, jepa_blocks, ours_width_caps
from .tokenizer import SpecialIds

__all__ = ["Collator", "corruption_rates", "jepa_blocks", "maskable_positions", "mlm_mask", "non_special_ids",
           "pred_width_cap", "predictor_slots",
           "step_seed"]

Batch = dict[str, torch.Tensor]


def maskable_positions(input_ids: torch.Tensor, segment_ids: torch.Tensor, special: SpecialIds) -> torch.Tensor:
    """(B, T) bool: real tokens (non-padding segment, not a special id)."""
    specials = torch.tensor(special.all(), dtype=input_ids.dtype, device=input_ids.device)
    return (segment_ids > 0) & ~torch.isin(input_ids, specials)


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


def predictor_slots(ctx_valid: torch.Tensor, tgt_valid: torch.Tensor) -> torch.Tensor:
    """``pred_valid`` (B, L) bool: the occupied slots of the predictor's compact sequence — each
    row's valid context entries, then its valid target entries, left-aligned — with L the batch's
    largest count (:class:`~predrecon.model.heads.Predictor`). Padding the context and the target
    lists to their own batch maxima would give the predictor C + N slots (≈ 1.2 T with the default
    block sizes); L is at most T when the context excludes the targets and the blocks do not overlap."""
    counts = ctx_valid.sum(1) + tgt_valid.sum(1)  # (B,)
    width = int(counts.max()) if counts.numel() else 0
    return torch.arange(width)[None, :] < counts[:, None]


def pred_width_cap(cfg: JEPAConfig, seq_len: int, ctx_cap: int, tgt_cap: int) -> int:
    """Fixed width of ``pred_valid`` (``fixed_widths``): at most ``ctx_cap + tgt_cap``; with
    ``jepa.context_excludes_targets`` also at most ``seq_len + floor(tgt_cap (K - 1) / K)`` for K
    target blocks. (Per document of L maskable positions whose K blocks hold n entries: the blocks
    cover at least n / K distinct positions, none of them in the context, so context + targets
    <= L - n / K + n; the documents of a row share at most ``seq_len`` positions and n <= tgt_cap.)"""
    cap = ctx_cap + tgt_cap
    if cfg.context_excludes_targets:
        K = cfg.num_targets
        cap = min(cap, int(seq_len) + (tgt_cap * (K - 1)) // K)
    return cap


def step_seed(seed: int, step: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, step)`` (numpy SeedSequence)."""
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be >= 0, got seed={seed}, step={step}")
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def corruption_rates(batch: Batch, special: SpecialIds) -> dict[str, float]:
    """How much of the student's input is corrupted, over the maskable (real, non-special) tokens:
    ``altered`` = fraction whose id in ``mlm_input_ids`` differs from ``input_ids`` (``[MASK]`` or a
    different random token; a random draw equal to the original counts as unaltered), ``masked`` =
    fraction that are ``[MASK]``, ``tokens`` = their number."""
    ids, seg = batch["input_ids"], batch["segment_ids"]
    real = maskable_positions(ids, seg, special)
    n = int(real.sum())
    student = batch["mlm_input_ids"]
    altered = int(((student != ids) & real).sum())
    masked = int(((student == special.mask_id) & real).sum())
    return {"altered": altered / max(n, 1), "masked": masked / max(n, 1), "tokens": float(n)}


class Collator:
    """Turns batcher rows into a training batch (docs/architecture.md) with masks drawn from a
    generator seeded by ``(seed, step)``. Works on CPU tensors.

    ``mlm_cfg.jepa_blocks`` (objective ``mlm`` only, the ``mlm-matched`` arm): ``mask`` draws the
    JEPA target blocks with the configured sampler and ``[MASK]``s them in ``mlm_input_ids``
    exactly as the hybrid's shared path does (same draws in the same order, so on the same rows,
    seed and step the student input is identical to the hybrid's), with no JEPA keys in the
    batch; ``predict`` also adds the block positions to ``mlm_index``/``mlm_labels``."""

    def __init__(self, mlm_cfg: MLMConfig, jepa_cfg: JEPAConfig, objective_cfg: ObjectiveConfig,
                 special: SpecialIds, vocab_size: int, seed: int = 0, *, fixed_widths: bool = False,
                 max_docs: int | None = None):
        self.fixed_widths, self.max_docs = bool(fixed_widths), max_docs
        self.mlm_cfg, self.jepa_cfg, self.objective_cfg = mlm_cfg, jepa_cfg, objective_cfg
        self.special, self.vocab_size, self.seed = special, int(vocab_size), int(seed)
        self.need_jepa = objective_cfg.kind in ("jepa", "hybrid")
        self.need_mlm = objective_cfg.kind in ("mlm", "hybrid")
        blocks = getattr(mlm_cfg, "jepa_blocks", "off")
        self.matched = objective_cfg.kind == "mlm" and blocks != "off"
        self.predict_blocks = self.matched and blocks == "predict"
        self.draw_blocks = self.need_jepa or self.matched
        self.shared = (objective_cfg.student_path == "shared" and self.need_jepa) or self.matched
        self.sampler_name = getattr(jepa_cfg, "sampler", "ours")
        self.sampler = get_sampler(self.sampler_name)
        self._pool = non_special_ids(self.vocab_size, special)

    def width_caps(self, seq_len: int) -> dict[str, int]:
        """Fixed widths of the index tensors for rows of width ``seq_len`` (``fixed_widths``):
        ``mlm`` (``mlm_index``/``mlm_labels``): ``max(1, round(mlm.prob * seq_len))`` — a row
        selects ``round(prob * n_maskable)`` positions, n_maskable <= seq_len — or ``seq_len``
        when block positions are added (``mlm.jepa_blocks=predict``); ``ctx``/``tgt`` (JEPA
        keys, sampler ``ours`` without ``jepa.loss_over_padding``):
        :func:`~predrecon.data.samplers.ours_width_caps` with ``max_docs`` documents per row.
        Keys absent from the result keep their per-batch width."""
        T = int(seq_len)
        caps: dict[str, int] = {}
        if self.need_mlm:
            caps["mlm"] = T if self.predict_blocks else max(1, min(T, round(self.mlm_cfg.prob * T)))
        if self.need_jepa and self.sampler_name == "ours" and not getattr(self.jepa_cfg, "loss_over_padding", False):
            caps["ctx"], caps["tgt"] = ours_width_caps(self.jepa_cfg, T, self.max_docs)
            caps["pred"] = pred_width_cap(self.jepa_cfg, T, caps["ctx"], caps["tgt"])
        return caps

    def _pad_to_caps(self, batch: Batch, T: int) -> Batch:
        groups = {"mlm": (("mlm_index", 0), ("mlm_labels", -100)),
                  "ctx": (("ctx_index", 0), ("ctx_valid", False)),
                  "tgt": (("tgt_index", 0), ("tgt_valid", False), ("tgt_block", 0)),
                  "pred": (("pred_valid", False),)}
        for name, cap in self.width_caps(T).items():
            for key, fill in groups[name]:
                if key not in batch:
                    continue
                w = batch[key].shape[1]
                if w > cap:
                    raise RuntimeError(f"collator: {key} width {w} exceeds its cap {cap} (seq_len {T}, "
                                       f"max_docs {self.max_docs})")
                if w < cap:
                    pad = torch.full((batch[key].shape[0], cap - w), fill, dtype=batch[key].dtype)
                    batch[key] = torch.cat([batch[key], pad], dim=1)
        return batch

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(step_seed(self.seed, step))

    def __call__(self, rows: Batch, step: int) -> Batch:
        """``rows`` holds ``input_ids``, ``position_ids``, ``segment_ids`` (B, T); returns the batch."""
        ids, seg = rows["input_ids"], rows["segment_ids"]
        B, T = ids.shape
        gen = self.generator(step)
        maskable = maskable_positions(ids, seg, self.special)
        batch: Batch = {k: rows[k] for k in ("input_ids", "position_ids", "segment_ids")}
        if self.sampler_name == "reference":  # the reference adds the position table to every slot
            batch["position_ids"] = torch.where(seg == 0, torch.arange(T).expand(B, T), rows["position_ids"])
        tgt_pos = None
        if self.draw_blocks:
            draw = self.sampler(ids, seg, maskable, self.jepa_cfg, gen)
            hits = torch.zeros(B, T, dtype=torch.long).scatter_add_(1, draw.tgt_index, draw.tgt_real.long())
            tgt_pos = (hits > 0) & maskable  # (B, T): drawn target positions that are real tokens
            if self.need_jepa:
                batch.update(ctx_index=draw.ctx_index, ctx_valid=draw.ctx_valid, tgt_index=draw.tgt_index,
                             tgt_valid=draw.tgt_valid, tgt_block=draw.tgt_block,
                             pred_valid=predictor_slots(draw.ctx_valid, draw.tgt_valid))
                if self.sampler_name != "ours":
                    batch["tgt_real"] = draw.tgt_real
        if self.need_mlm:
            corrupted, mlm_index, mlm_labels = mlm_mask(
                ids, maskable, self.mlm_cfg, self.special, self.vocab_size, gen,
                exclude=tgt_pos if self.shared else None, replacement_ids=self._pool)
            if self.predict_blocks and tgt_pos is not None:
                sel = torch.zeros(B, T, dtype=torch.long)
                sel.scatter_add_(1, mlm_index, (mlm_labels != -100).long())
                mlm_index, valid, _ = _compact((sel > 0) | tgt_pos)
                mlm_labels = torch.where(valid, ids.gather(1, mlm_index), torch.full_like(mlm_index, -100))
            batch.update(mlm_index=mlm_index, mlm_labels=mlm_labels)
        else:
            corrupted = ids.clone()
        if self.shared and tgt_pos is not None:
            corrupted = torch.where(tgt_pos, torch.full_like(corrupted, self.special.mask_id), corrupted)
        batch["mlm_input_ids"] = corrupted
        return self._pad_to_caps(batch, T) if self.fixed_widths else batch
