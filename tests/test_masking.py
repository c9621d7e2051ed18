"""Masking rules: MLM selection and 80/10/10, JEPA multi-block properties, the collator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from predrecon.config import JEPAConfig, MLMConfig, ObjectiveConfig
from predrecon.data.masking import Collator, jepa_blocks, maskable_positions, mlm_mask, step_seed

from fixtures_data import SMALL_SPECIAL, SMALL_VOCAB, gen, packed_rows

SP, V = SMALL_SPECIAL, SMALL_VOCAB
_gen, _rows = gen, packed_rows


# --- MLM -------------------------------------------------------------------------------------------

def test_mlm_counts_positions_and_labels():
    rows = _rows([[40], [10, 7], [1], [0 + 2]], T=48)  # includes a 1-token and a 2-token row
    ids = rows["input_ids"]
    maskable = maskable_positions(ids, rows["segment_ids"], SP)
    cfg = MLMConfig(prob=0.15)
    corrupted, idx, labels = mlm_mask(ids, maskable, cfg, SP, V, _gen())
    n = maskable.sum(1)
    k = torch.clamp(torch.round(0.15 * n.double()).long(), min=1)
    valid = labels != -100
    assert valid.sum(1).tolist() == k.tolist() == [6, 3, 1, 1]
    assert idx.shape[1] == int(k.max())  # M = batch maximum
    for r in range(ids.shape[0]):
        pos = idx[r][valid[r]]
        assert pos.tolist() == sorted(set(pos.tolist()))
        assert maskable[r, pos].all()  # never padding or special tokens
        assert (labels[r][valid[r]] == ids[r, pos]).all()
        assert (idx[r][~valid[r]] == 0).all()
    untouched = torch.ones_like(maskable)
    untouched[torch.arange(4)[:, None].expand_as(idx)[valid], idx[valid]] = False
    assert torch.equal(corrupted[untouched], ids[untouched])


def test_mlm_80_10_10_statistics():
    B, T = 64, 512
    ids = torch.randint(5, V, (B, T), generator=_gen(1))
    maskable = torch.ones(B, T, dtype=torch.bool)
    corrupted, idx, labels = mlm_mask(ids, maskable, MLMConfig(prob=0.5), SP, V, _gen(2))
    sel_orig = labels.flatten()
    sel_new = corrupted.gather(1, idx).flatten()
    n = sel_orig.numel()
    assert n == B * 256
    frac_mask = (sel_new == SP.mask_id).float().mean().item()
    changed = (sel_new != SP.mask_id) & (sel_new != sel_orig)
    same = (sel_new == sel_orig).float().mean().item()
    # random replacements equal the original with probability 1/45 (45 non-special ids)
    assert abs(frac_mask - 0.8) < 0.015
    assert abs(changed.float().mean().item() - 0.1 * 44 / 45) < 0.01
    assert abs(same - (0.1 + 0.1 / 45)) < 0.01
    assert not torch.isin(sel_new[changed], torch.tensor(SP.all())).any()  # random ids are non-special
    assert (corrupted != SP.mask_id).sum() + (corrupted == SP.mask_id).sum() == B * T


def test_mlm_exclude_is_respected_and_counts_from_maskable():
    rows = _rows([[30], [30]], T=32)
    ids = rows["input_ids"]
    maskable = maskable_positions(ids, rows["segment_ids"], SP)
    exclude = torch.zeros_like(maskable)
    exclude[:, 1:26] = True  # only 5 candidates left per row
    _, idx, labels = mlm_mask(ids, maskable, MLMConfig(prob=0.3), SP, V, _gen(), exclude=exclude)
    assert (labels != -100).sum(1).tolist() == [5, 5]  # round(0.3 * 30) = 9 capped at 5 candidates
    assert (idx >= 26).all()


@pytest.mark.parametrize("mean_span", [1.0, 3.0])
def test_mlm_span_mode_exact_count_and_contiguous_runs(mean_span):
    B, T = 16, 200
    ids = torch.randint(5, V, (B, T), generator=_gen(3))
    maskable = torch.ones(B, T, dtype=torch.bool)
    maskable[:, 100] = False  # a hole spans must not cross
    cfg = MLMConfig(prob=0.15, span=True, mean_span=mean_span)
    _, idx, labels = mlm_mask(ids, maskable, cfg, SP, V, _gen(4))
    valid = labels != -100
    assert valid.sum(1).eq(round(0.15 * 199)).all()
    runs = []
    for r in range(B):
        pos = idx[r][valid[r]].tolist()
        assert 100 not in pos
        run = 1
        for a, b in zip(pos, pos[1:]):
            if b == a + 1:
                run += 1
            else:
                runs.append(run)
                run = 1
        runs.append(run)
    mean_run = sum(runs) / len(runs)
    if mean_span == 1.0:
        assert mean_run < 1.3  # independent single tokens (adjacent by chance only)
    else:
        assert 2.0 < mean_run < 4.5


# --- JEPA ------------------------------------------------------------------------------------------

def _sets(out, b):
    ctx_i, ctx_v, tgt_i, tgt_v, tgt_b = out
    ctx = ctx_i[b][ctx_v[b]].tolist()
    blocks = {}
    for i, k in zip(tgt_i[b][tgt_v[b]].tolist(), tgt_b[b][tgt_v[b]].tolist()):
        blocks.setdefault(k, []).append(i)
    return ctx, blocks


jepa_cfgs = st.builds(
    JEPAConfig,
    num_targets=st.integers(1, 4),
    target_scale=st.tuples(st.floats(0.05, 0.2), st.floats(0.2, 0.4)),
    context_scale=st.tuples(st.floats(0.5, 0.85), st.floats(0.85, 1.0)),
    min_keep=st.integers(1, 8),
)


@settings(max_examples=60, deadline=None)
@given(cfg=jepa_cfgs, lengths=st.lists(st.integers(0, 64), min_size=1, max_size=6), seed=st.integers(0, 10**6))
def test_jepa_improved_properties(cfg, lengths, seed):
    T = 64
    out = jepa_blocks(torch.tensor(lengths), cfg, _gen(seed), T)
    ctx_i, ctx_v, tgt_i, tgt_v, tgt_b = out
    assert ctx_i.shape == ctx_v.shape and tgt_i.shape == tgt_v.shape == tgt_b.shape
    assert ctx_i.shape[1] == max(1, int(ctx_v.sum(1).max())) and tgt_i.shape[1] == max(1, int(tgt_v.sum(1).max()))
    for b, L in enumerate(lengths):
        ctx, blocks = _sets(out, b)
        tgt = {i for blk in blocks.values() for i in blk}
        assert ctx == sorted(set(ctx)) and all(0 <= i < L for i in ctx) and all(0 <= i < L for i in tgt)
        assert not set(ctx) & tgt  # improved: context excludes every target position
        if L >= cfg.min_keep + 1:
            assert len(ctx) >= cfg.min_keep and 0 in blocks
        else:
            assert not tgt and ctx == list(range(L))  # too short for targets: all context
        for k, blk in blocks.items():
            assert 0 <= k < cfg.num_targets
            assert blk == list(range(blk[0], blk[0] + len(blk)))  # contiguous, sorted
            assert len(blk) <= max(1, round(cfg.target_scale[1] * L))
        order = tgt_b[b][tgt_v[b]].tolist()
        assert order == sorted(order)  # block-major


@settings(max_examples=30, deadline=None)
@given(L=st.integers(24, 128), seed=st.integers(0, 10**6))
def test_jepa_target_fraction_within_bounds(L, seed):
    cfg = JEPAConfig()  # 2 targets of 10-25 %, context 85-100 %: never needs shrinking at L >= 24
    ctx, blocks = _sets(jepa_blocks(torch.tensor([L]), cfg, _gen(seed), 128), 0)
    assert sorted(blocks) == [0, 1]
    for blk in blocks.values():
        assert round(0.10 * L) <= len(blk) <= round(0.25 * L)
    assert len(ctx) >= round(0.85 * L) - 2 * round(0.25 * L)


def test_jepa_min_keep_shrinks_targets():
    cfg = JEPAConfig(num_targets=3, target_scale=(0.6, 0.9), context_scale=(0.9, 1.0), min_keep=6)
    for seed in range(20):
        out = jepa_blocks(torch.tensor([20, 10, 7]), cfg, _gen(seed), 20)
        for b in range(3):
            ctx, blocks = _sets(out, b)
            assert len(ctx) >= 6 and len(blocks.get(0, [])) >= 1


def test_jepa_faithful_quirks():
    cfg = dataclasses.replace(JEPAConfig(), size_reference="max_tokens", max_tokens=512, tail_blocks=True,
                              context_scale=(0.65, 0.85), context_excludes_targets=False)
    lengths = torch.tensor([126, 90, 40, 126])
    for seed in range(10):
        out = jepa_blocks(lengths, cfg, _gen(seed), 128)
        for b, L in enumerate(lengths.tolist()):
            ctx, blocks = _sets(out, b)
            assert ctx == list(range(L))  # 65-85 % of 512 tokens clipped to L: the whole sequence
            for blk in blocks.values():
                assert blk[-1] == L - 1  # every block runs to the end of the sequence
                assert len(blk) >= min(L, round(0.10 * 512))  # sized from max_tokens, not L
                assert set(blk) <= set(ctx)  # the context contains the target blocks


# --- Collator --------------------------------------------------------------------------------------

def _collator(kind="hybrid", path="shared", seed=0, **jepa):
    return Collator(MLMConfig(), JEPAConfig(**jepa), ObjectiveConfig(kind=kind, student_path=path), SP, V, seed)


MLM_KEYS = {"mlm_index", "mlm_labels"}
JEPA_KEYS = {"ctx_index", "ctx_valid", "tgt_index", "tgt_valid", "tgt_block", "pred_valid"}
BASE = {"input_ids", "position_ids", "segment_ids", "mlm_input_ids"}


@pytest.mark.parametrize("kind,keys", [("mlm", BASE | MLM_KEYS), ("jepa", BASE | JEPA_KEYS),
                                       ("hybrid", BASE | MLM_KEYS | JEPA_KEYS)])
def test_collator_keys_dtypes_and_shapes(kind, keys):
    rows = _rows([[20, 9], [30], [5, 5, 5]], T=40)
    batch = _collator(kind)(rows, step=3)
    assert set(batch) == keys
    B, T = rows["input_ids"].shape
    for k, v in batch.items():
        assert v.shape[0] == B
        assert v.dtype == (torch.bool if k.endswith("_valid") else torch.long), k
    for k in ("input_ids", "position_ids", "segment_ids", "mlm_input_ids"):
        assert batch[k].shape == (B, T)
    if "mlm_labels" in batch:
        assert batch["mlm_index"].shape == batch["mlm_labels"].shape
        assert batch["mlm_index"].shape[1] == int((batch["mlm_labels"] != -100).sum(1).max())
    if "tgt_index" in batch:
        assert batch["ctx_index"].shape == batch["ctx_valid"].shape
        assert batch["tgt_index"].shape == batch["tgt_valid"].shape == batch["tgt_block"].shape
    if kind == "mlm":
        assert torch.equal(batch["input_ids"], rows["input_ids"])


@settings(max_examples=25, deadline=None)
@given(docs=st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=3), min_size=1, max_size=5),
       step=st.integers(0, 10**6), path=st.sampled_from(["shared", "separate"]))
@example(docs=[[1, 4]], step=0, path="shared")  # two short documents, 5 real tokens together: no targets
def test_collator_positions_are_real_tokens(docs, step, path):
    T = 100
    rows = _rows(docs, T, seed=step % 97)
    batch = _collator("hybrid", path)(rows, step)
    real = maskable_positions(rows["input_ids"], rows["segment_ids"], SP)
    for idx, valid in ((batch["ctx_index"], batch["ctx_valid"]), (batch["tgt_index"], batch["tgt_valid"]),
                       (batch["mlm_index"], batch["mlm_labels"] != -100)):
        rr = torch.arange(idx.shape[0])[:, None].expand_as(idx)
        assert real[rr[valid], idx[valid]].all()  # never padding, [CLS], [SEP] or other specials
    ids, mlm_in = rows["input_ids"], batch["mlm_input_ids"]
    tv = batch["tgt_valid"]
    tr = torch.arange(ids.shape[0])[:, None].expand_as(batch["tgt_index"])
    tgt = torch.zeros_like(real)
    tgt[tr[tv], batch["tgt_index"][tv]] = True
    mv = batch["mlm_labels"] != -100
    mr = torch.arange(ids.shape[0])[:, None].expand_as(batch["mlm_index"])
    mlm = torch.zeros_like(real)
    mlm[mr[mv], batch["mlm_index"][mv]] = True
    if path == "shared":
        assert (mlm_in[tgt] == SP.mask_id).all()  # the student sees [MASK] on every target
        assert not (mlm & tgt).any()  # MLM drawn from non-target positions
    assert torch.equal(mlm_in[~(mlm | tgt)], ids[~(mlm | tgt)])  # nothing else is touched
    # targets are drawn per document: a row has some iff one of its documents has min_keep + 1
    # real tokens (a row of short documents has none, however many tokens they add up to)
    seg = rows["segment_ids"]
    doc_len = torch.stack([(real & (seg == d)).sum(1) for d in range(1, int(seg.max()) + 1)], 1)
    long_rows = (doc_len >= JEPAConfig().min_keep + 1).any(1)
    assert (batch["ctx_valid"].sum(1)[long_rows] >= JEPAConfig().min_keep).all()
    assert tv[long_rows].any(1).all() and not tv[~long_rows].any()


def test_collator_is_deterministic_in_seed_and_step():
    rows = _rows([[50], [20, 20], [60]], T=64)
    a, b = _collator(seed=1)(rows, 5), _collator(seed=1)(rows, 5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c, d = _collator(seed=1)(rows, 6), _collator(seed=2)(rows, 5)
    for other in (c, d):
        assert not torch.equal(a["mlm_input_ids"], other["mlm_input_ids"]) or \
            not torch.equal(a["tgt_index"], other["tgt_index"])
    assert step_seed(1, 5) != step_seed(5, 1)
    with pytest.raises(ValueError, match="step"):
        step_seed(0, -1)


def test_separate_path_leaves_targets_to_mlm_only():
    rows = _rows([[60], [60]], T=64)
    sep = _collator("hybrid", "separate", seed=3)(rows, 0)
    mlm_only = Collator(MLMConfig(), JEPAConfig(), ObjectiveConfig(kind="mlm"), SP, V, 3)(rows, 0)
    # targets are not [MASK]ed: the corrupted ids come from MLM alone (same count as pure MLM)
    assert (sep["mlm_input_ids"] != rows["input_ids"]).sum() <= (sep["mlm_labels"] != -100).sum()
    assert sep["mlm_index"].shape == mlm_only["mlm_index"].shape


# --- arms that differ in one thing: mlm-matched ----------------------------------------------------

def _mlm_collator(blocks, seed=0, **mlm):
    return Collator(MLMConfig(jepa_blocks=blocks, **mlm), JEPAConfig(), ObjectiveConfig(kind="mlm"), SP, V, seed)


@pytest.mark.parametrize("step", [0, 7, 123])
def test_mlm_matched_student_input_is_the_hybrids(step):
    rows = _rows([[50, 20], [70], [9, 9, 30], [3]], T=80, seed=step)
    hyb = _collator("hybrid", "shared", seed=2)(rows, step)
    matched = _mlm_collator("mask", seed=2)(rows, step)
    assert set(matched) == BASE | MLM_KEYS  # no JEPA keys: no JEPA loss
    assert torch.equal(matched["mlm_input_ids"], hyb["mlm_input_ids"])
    assert torch.equal(matched["mlm_index"], hyb["mlm_index"]) and torch.equal(matched["mlm_labels"], hyb["mlm_labels"])
    plain = _mlm_collator("off", seed=2)(rows, step)
    assert (plain["mlm_input_ids"] == SP.mask_id).sum() < (matched["mlm_input_ids"] == SP.mask_id).sum()


def test_mlm_matched_predict_adds_the_blocks_to_the_mlm_targets():
    rows = _rows([[50, 20], [70]], T=80, seed=4)
    hyb = _collator("hybrid", "shared", seed=5)(rows, 1)
    pred = _mlm_collator("predict", seed=5)(rows, 1)
    assert torch.equal(pred["mlm_input_ids"], hyb["mlm_input_ids"])
    for b in range(2):
        want = set(hyb["mlm_index"][b][hyb["mlm_labels"][b] != -100].tolist())
        want |= set(hyb["tgt_index"][b][hyb["tgt_valid"][b]].tolist())
        got = pred["mlm_index"][b][pred["mlm_labels"][b] != -100]
        assert got.tolist() == sorted(want)
        assert torch.equal(pred["mlm_labels"][b][pred["mlm_labels"][b] != -100], rows["input_ids"][b, got])


def test_corruption_rates_of_the_arms():
    """Plain MLM alters prob x (mask + random x (1 - 1/|pool|)) of the real tokens; the hybrid and
    mlm-matched alter the same, much larger, fraction on the same rows."""
    from predrecon.data.masking import corruption_rates

    g = torch.Generator().manual_seed(0)
    docs = [[int(n) for n in torch.randint(20, 60, (2,), generator=g)] for _ in range(64)]
    rows = _rows(docs, T=128, seed=1)
    rates = {}
    for name, col in (("mlm", _mlm_collator("off")), ("matched", _mlm_collator("mask")),
                      ("hybrid", _collator("hybrid", "shared"))):
        r = [corruption_rates(col(rows, s), SP) for s in range(8)]
        rates[name] = (np.mean([x["altered"] for x in r]), np.mean([x["masked"] for x in r]), r[0]["tokens"])
    n = rates["mlm"][2] * 8
    cfg = MLMConfig()
    want = cfg.prob * (cfg.mask_frac + cfg.random_frac * (1 - 1 / (V - 5)))
    assert abs(rates["mlm"][0] - want) < 4 * np.sqrt(want * (1 - want) / n) + 0.005  # + rounding of k per row
    assert abs(rates["mlm"][1] - cfg.prob * cfg.mask_frac) < 0.01
    assert rates["matched"][:2] == rates["hybrid"][:2]  # identical draws
    assert rates["hybrid"][1] > 0.35  # 2 blocks of 10-25 % (overlapping) + 15 % MLM


# --- the reference sampler in the collator --------------------------------------------------------

def test_reference_collator_layout_and_positions():
    rows = _rows([[40], [100], [10]], T=128, seed=2)
    col = Collator(MLMConfig(), JEPAConfig(sampler="reference", max_tokens=512, context_scale=(0.65, 0.85)),
                   ObjectiveConfig(kind="hybrid", student_path="separate"), SP, V, seed=1)
    batch = col(rows, 3)
    assert set(batch) == BASE | MLM_KEYS | JEPA_KEYS | {"tgt_real"}
    seg, pos = rows["segment_ids"], batch["position_ids"]
    assert torch.equal(pos[seg > 0], rows["position_ids"][seg > 0])
    assert torch.equal(pos, torch.arange(128).expand(3, 128))  # padding slots at their slot index
    assert batch["tgt_valid"].all() and (batch["tgt_index"][~batch["tgt_real"]] == 0).all()
    assert torch.equal(batch["mlm_input_ids"][seg == 0], rows["input_ids"][seg == 0])
    again = col(rows, 3)
    assert all(torch.equal(batch[k], again[k]) for k in batch)  # a function of (seed, step): exact resume
    shared = Collator(MLMConfig(), col.jepa_cfg, ObjectiveConfig(kind="hybrid"), SP, V, seed=1)(rows, 3)
    real = maskable_positions(rows["input_ids"], seg, SP)
    tr = batch["tgt_real"]
    rr = torch.arange(3)[:, None].expand_as(tr)
    hit = torch.zeros_like(real)
    hit[rr[tr], batch["tgt_index"][tr]] = True
    assert (hit & ~real).any()  # some drawn target slots lie on [PAD] ...
    assert (shared["mlm_input_ids"][hit & real] == SP.mask_id).all()  # real ones are [MASK]ed in the shared path
    assert (shared["mlm_input_ids"][~real] == rows["input_ids"][~real]).all()  # [CLS]/[SEP]/[PAD] never


def test_config_checks_for_arms_and_samplers():
    from predrecon.config import ConfigError, apply_overrides
    from predrecon.presets import apply_faithful, debug

    with pytest.raises(ConfigError, match="mlm.jepa_blocks"):
        apply_overrides(debug(), ["mlm.jepa_blocks=mask"])  # hybrid
    assert apply_overrides(debug(), ["objective.kind=mlm", "mlm.jepa_blocks=predict"]).mlm.jepa_blocks == "predict"
    with pytest.raises(ConfigError, match="separate"):  # the faithful hybrid's MLM pass: plain MLM corruption
        apply_overrides(debug(), ["objective.kind=mlm", "mlm.jepa_blocks=mask", "objective.student_path=separate"])
    with pytest.raises(ConfigError, match="jepa.sampler"):
        apply_overrides(debug(), ["jepa.sampler=reference"])  # packed rows
    with pytest.raises(ConfigError, match="jepa.sampler"):
        apply_overrides(debug(), ["jepa.sampler=paper"])
    f = apply_faithful(debug())
    assert (f.jepa.sampler, f.jepa.predictor_mode) == ("reference", "per_block")


def test_pred_valid_marks_each_rows_context_and_target_entries():
    rows = _rows([[20, 9], [30], [5, 5, 5]], T=40)
    batch = _collator("hybrid")(rows, step=3)
    counts = batch["ctx_valid"].sum(1) + batch["tgt_valid"].sum(1)
    pv = batch["pred_valid"]
    assert pv.shape == (3, int(counts.max()))
    assert pv.sum(1).tolist() == counts.tolist()
    assert torch.equal(pv, torch.arange(pv.shape[1])[None] < counts[:, None])  # left-aligned
    assert pv.shape[1] <= 40  # the context excludes the targets: at most one slot per position here
