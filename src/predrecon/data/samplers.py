"""JEPA block samplers: a registry (:data:`SAMPLERS`, key ``jepa.sampler``) of pure functions that
draw the context and target blocks of a batch from an explicit ``torch.Generator``.

Every sampler has the signature ``sampler(input_ids, segment_ids, maskable, cfg, gen) -> JepaDraw``
on CPU (B, T) tensors and returns the batch keys ``ctx_index, ctx_valid, tgt_index, tgt_valid,
tgt_block`` (docs/architecture.md) plus ``tgt_real`` (B, N) bool: the slot holds a drawn target
position (as opposed to an index-padding slot). ``tgt_valid`` marks the slots that enter the
loss and the predictor's attention; for ``ours`` it equals ``tgt_real``.

``ours`` (default, :func:`sample_ours`) — **per document**: every document (segment) of a row is
treated as its own sequence of maskable positions ("compact coordinates", 0 .. L-1) and gets its
own ``num_targets`` target blocks and context block from :func:`jepa_blocks`. A block therefore
never crosses a document boundary, and a document's context only holds its own tokens; the
predictor is given segment ids (train/meta.py) so a target attends to its own document only.
Rows are merged back: context sorted by position, targets ordered by (document, block, position);
``tgt_block`` is the block number within the document. With one document per row this is exactly
:func:`jepa_blocks` on the row.

``reference`` (:func:`sample_reference`) — literal port of the reference code's text multi-block
collator (``src/dataset/masks/all_masks.py`` with ``src/help/utils.py: sample_block_size,
sample_block_mask``), in row-slot coordinates 0 .. T-1 of the padded row:

* block sizes are drawn **once per batch**: ``p = max(1, int(max_tokens * U(target_scale)))``
  and then ``e = max(1, int(max_tokens * U(context_scale)))``;
* per row, each of the ``num_targets`` target blocks starts at a slot drawn uniformly among all
  T slots (padding included) and covers ``[s, min(s + p, T))``;
* the context start is drawn from the concatenation of the targets' complements (a slot outside
  every target appears ``num_targets`` times, one inside some but not all targets fewer times,
  one inside all of them never); the context covers ``[c, min(c + e, T))`` — with e >= T it is
  the row's tail and may contain targets. If that candidate list has fewer than ``min_keep``
  entries the context size is its length (0 candidates: an empty context starting at 0);
* index lists are padded per block to the batch's longest with index **0**: those slots gather
  position 0 and the target there is the ``[CLS]`` state. Padded slots are *valid* (they enter
  the loss and attention, as in the reference) but not *real*. Context lists are padded the same
  way (valid, index 0).

The reference draws starts with Python's unseeded ``random``; here every draw comes from ``gen``
(seeded by ``(seed, step)`` in the collator), so runs and resumes are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..config import JEPAConfig


class JepaDraw(NamedTuple):
    ctx_index: torch.Tensor  # (B, C) long, row positions, padded 0
    ctx_valid: torch.Tensor  # (B, C) bool
    tgt_index: torch.Tensor  # (B, N) long
    tgt_valid: torch.Tensor  # (B, N) bool: enters loss and attention
    tgt_block: torch.Tensor  # (B, N) long
    tgt_real: torch.Tensor  # (B, N) bool: a drawn target position (not index padding)


def compact(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _uniform(lo: float, hi: float, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def jepa_blocks(lengths: torch.Tensor, cfg: JEPAConfig, gen: torch.Generator, seq_len: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D multi-block masking in compact coordinates ``0 .. L-1`` of each sequence (the
    ``ours`` rule; see docs in :mod:`predrecon.data.masking`).

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
    ctx_index, ctx_valid, _ = compact(ctx)
    flat, tgt_valid, _ = compact(tmask.reshape(B, K * T))  # (B, N) keys k*T + t, block-major
    tgt_index = torch.where(tgt_valid, flat % T, torch.zeros_like(flat))
    tgt_block = torch.where(tgt_valid, flat // T, torch.zeros_like(flat))
    return ctx_index, ctx_valid, tgt_index, tgt_valid, tgt_block


def sample_ours(input_ids: torch.Tensor, segment_ids: torch.Tensor, maskable: torch.Tensor,
                cfg: JEPAConfig, gen: torch.Generator) -> JepaDraw:
    """Per-document :func:`jepa_blocks` over the maskable positions (module doc)."""
    B, T = maskable.shape
    K = cfg.num_targets
    S = max(int(segment_ids.max()) if segment_ids.numel() else 0, 1)
    segs = torch.arange(1, S + 1)
    doc_mask = (maskable[:, None, :] & (segment_ids[:, None, :] == segs[None, :, None])).reshape(B * S, T)
    pos_of, _, lengths = compact(doc_mask)  # (B*S, Lmax): row position of each compact index
    c_i, c_v, t_i, t_v, t_b = jepa_blocks(lengths, cfg, gen, T)
    last = pos_of.shape[1] - 1
    ctx_pos = torch.where(c_v, pos_of.gather(1, c_i.clamp(max=last)), 0)  # (B*S, C')
    tgt_pos = torch.where(t_v, pos_of.gather(1, t_i.clamp(max=last)), 0)  # (B*S, N')
    # context: union over the row's documents (positions are disjoint), sorted by position
    ctx_mask = torch.zeros(B * S, T, dtype=torch.long).scatter_add_(1, ctx_pos, c_v.long()) > 0
    ctx_index, ctx_valid, _ = compact(ctx_mask.reshape(B, S, T).any(1))
    # targets: order by (document, block, position); keys never collide within a row
    doc = (segs - 1).repeat(B)[:, None]  # (B*S, 1) document number within the row
    key = (doc * K + t_b) * T + tgt_pos  # (B*S, N')
    key = torch.where(t_v, key, torch.full_like(key, -1)).reshape(B, -1)  # (B, S*N')
    n = (key >= 0).sum(1)
    N = max(int(n.max()) if B else 0, 1)
    big = S * K * T
    key = torch.where(key >= 0, key, torch.full_like(key, big)).sort(dim=1).values[:, :N]
    if key.shape[1] < N:
        key = torch.nn.functional.pad(key, (0, N - key.shape[1]), value=big)
    tgt_valid = key < big
    tgt_index = torch.where(tgt_valid, key % T, 0)
    tgt_block = torch.where(tgt_valid, (key // T) % K, 0)
    return JepaDraw(ctx_index, ctx_valid, tgt_index, tgt_valid, tgt_block, tgt_valid.clone())


def ours_width_caps(cfg: JEPAConfig, seq_len: int, max_docs: int | None = None) -> tuple[int, int]:
    """Upper bounds ``(C, N)`` on the context / target widths that :func:`sample_ours` can return
    for rows of width ``seq_len`` holding at most ``max_docs`` documents (default ``seq_len``).

    Per document of L maskable tokens (a row's documents share at most ``seq_len`` of them):
    the context is at most ``max(round(hi_c * R), min_keep + 1)`` positions and each of the
    ``num_targets`` target blocks at most ``max(1, round(hi_t * R))``, with R = L
    (``size_reference='length'``; ``round(hi * L) <= hi * L + 1/2``) or ``max_tokens``. The bound
    is the largest sum of these over S documents (S = 1 .. ``max_docs``), capped by the row's
    positions (context) and ``num_targets`` times them (targets). The widths are batch maxima,
    so they are bounded by the same numbers."""
    T, K = int(seq_len), cfg.num_targets
    hi_c, hi_t = cfg.context_scale[1], cfg.target_scale[1]
    floor_c = cfg.min_keep + 1
    best_c = best_t = 1
    for S in range(1, max(1, min(max_docs or T, T)) + 1):
        if cfg.size_reference == "length":  # sum_d max(hi * L_d + 1/2, floor) with sum_d L_d <= T
            c = max(hi_c * T + 0.5, floor_c) if S == 1 else hi_c * T + S * floor_c
            t = K * (math.floor(max(1.0, hi_t * T + 0.5)) if S == 1 else hi_t * T + S)
        else:
            c = S * max(round(hi_c * cfg.max_tokens), floor_c)
            t = K * S * max(1, round(hi_t * cfg.max_tokens))
        best_c = max(best_c, min(T, math.floor(c)))
        best_t = max(best_t, min(K * T, math.floor(t)))
    return best_c, best_t


def reference_block_sizes(cfg: JEPAConfig, gen: torch.Generator) -> tuple[int, int]:
    """The reference's per-batch sizes ``(p, e)``: ``max(1, int(max_tokens * U(scale)))`` for the
    target scale, then the context scale (drawn in that order)."""
    sizes = []
    for lo, hi in (cfg.target_scale, cfg.context_scale):
        u = float(torch.rand(1, generator=gen, dtype=torch.float64))
        sizes.append(max(1, int(cfg.max_tokens * (lo + (hi - lo) * u))))
    return sizes[0], sizes[1]


def sample_reference(input_ids: torch.Tensor, segment_ids: torch.Tensor, maskable: torch.Tensor,
                     cfg: JEPAConfig, gen: torch.Generator) -> JepaDraw:
    """The reference code's sampler, literally (module doc), on padded rows of width T."""
    B, T = input_ids.shape
    K = cfg.num_targets
    p, e = reference_block_sizes(cfg, gen)
    ar = torch.arange(T)
    start_t = torch.randint(0, T, (B, K), generator=gen)  # uniform over all T slots
    len_t = torch.clamp(T - start_t, max=p)  # (B, K): [s, min(s + p, T))
    in_t = (ar >= start_t[..., None]) & (ar < (start_t + len_t)[..., None])  # (B, K, T)
    weight = (~in_t).sum(1)  # (B, T): multiplicity of each slot in the concatenated complements
    n_cand = weight.sum(1)  # (B,)
    probs = torch.where(n_cand[:, None] > 0, weight, torch.ones_like(weight)).double()
    start_c = torch.multinomial(probs, 1, generator=gen).squeeze(1)  # (B,)
    size_c = torch.where(n_cand < cfg.min_keep, n_cand, torch.full_like(n_cand, e))
    start_c = torch.where(n_cand > 0, start_c, torch.zeros_like(start_c))
    len_c = torch.clamp(T - start_c, max=size_c.clamp(min=0)).clamp(min=0)  # (B,)
    C = max(int(len_c.max()) if B else 0, 1)
    j = torch.arange(C)
    ctx_index = torch.where(j < len_c[:, None], start_c[:, None] + j, 0)
    widths = [max(int(len_t[:, k].max()) if B else 0, 1) for k in range(K)]
    idx, real, blk = [], [], []
    for k, w in enumerate(widths):
        jk = torch.arange(w)
        r = jk < len_t[:, k:k + 1]  # (B, w)
        idx.append(torch.where(r, start_t[:, k:k + 1] + jk, 0))
        real.append(r)
        blk.append(torch.full((B, w), k, dtype=torch.long))
    tgt_index, tgt_real, tgt_block = torch.cat(idx, 1), torch.cat(real, 1), torch.cat(blk, 1)
    return JepaDraw(ctx_index, torch.ones(B, C, dtype=torch.bool), tgt_index,
                    torch.ones_like(tgt_real), tgt_block, tgt_real)


JepaSampler = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, JEPAConfig, torch.Generator], JepaDraw]

#: ``jepa.sampler`` -> sampler function.
SAMPLERS: dict[str, JepaSampler] = {"ours": sample_ours, "reference": sample_reference}


def get_sampler(name: str) -> JepaSampler:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"jepa.sampler: unknown sampler {name!r} (known: {', '.join(SAMPLERS)})") from None
