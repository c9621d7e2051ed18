"""Fixed index widths: the caps are never exceeded, every step has the same shapes, the capped
batch is the per-batch one plus padding, and the padding never changes a loss."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from predrecon.config import JEPAConfig, MLMConfig, ObjectiveConfig, apply_overrides
from predrecon.data.batching import assemble_rows
from predrecon.data.masking import Collator
from predrecon.data.samplers import ours_width_caps
from predrecon.data.tokenizer import SpecialIds
from predrecon.presets import debug
from predrecon.train.meta import HybridModel

SP = SpecialIds(pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)
V = 60
KEYS = {"mlm": ("mlm_index", "mlm_labels"), "ctx": ("ctx_index", "ctx_valid"),
        "tgt": ("tgt_index", "tgt_valid", "tgt_block"), "pred": ("pred_valid",)}


def _rows(docs_per_row, T, seed):
    g = torch.Generator().manual_seed(seed)
    rows = [[torch.randint(5, V, (n,), generator=g).numpy() for n in lens] for lens in docs_per_row]
    return assemble_rows(rows, T, SP.cls_id, SP.sep_id, SP.pad_id)


@st.composite
def cases(draw):
    T = draw(st.integers(12, 80))
    max_docs = draw(st.integers(1, 4))
    B = draw(st.integers(1, 5))
    docs = []
    for _ in range(B):
        n = draw(st.integers(1, max_docs))
        room, lens = T, []
        for _ in range(n):
            if room < 3:
                break
            L = draw(st.integers(1, room - 2))
            lens.append(L)
            room -= L + 2
        docs.append(lens)
    lo_t = draw(st.floats(0.01, 0.5))
    lo_c = draw(st.floats(0.1, 1.0))
    jepa = JEPAConfig(num_targets=draw(st.integers(1, 4)),
                      target_scale=(lo_t, draw(st.floats(lo_t, 0.6))),
                      context_scale=(lo_c, draw(st.floats(lo_c, 1.0))),
                      min_keep=draw(st.integers(1, 8)),
                      size_reference=draw(st.sampled_from(["length", "max_tokens"])),
                      max_tokens=draw(st.integers(8, 96)),
                      tail_blocks=draw(st.booleans()),
                      context_excludes_targets=draw(st.booleans()))
    mlm = MLMConfig(prob=draw(st.floats(0.01, 0.6)), span=draw(st.booleans()))
    obj = ObjectiveConfig(kind=draw(st.sampled_from(["mlm", "jepa", "hybrid"])),
                          student_path=draw(st.sampled_from(["shared", "separate"])))
    return T, max_docs, docs, jepa, mlm, obj, draw(st.integers(0, 2**20))


@settings(max_examples=150, deadline=None)
@given(cases())
def test_caps_hold_and_padding_is_inert(case):
    T, max_docs, docs, jepa, mlm, obj, step = case
    rows = _rows(docs, T, seed=step)
    free = Collator(mlm, jepa, obj, SP, V, seed=5)
    fixed = Collator(mlm, jepa, obj, SP, V, seed=5, fixed_widths=True, max_docs=max_docs)
    caps = fixed.width_caps(T)
    assert set(caps) == {k for k, on in (("mlm", obj.kind != "jepa"), ("ctx", obj.kind != "mlm"),
                                        ("tgt", obj.kind != "mlm"), ("pred", obj.kind != "mlm")) if on}
    a, b = free(rows, step), fixed(rows, step)
    assert set(a) == set(b)
    for name, cap in caps.items():
        for key in KEYS[name]:
            w = a[key].shape[1]
            assert w <= cap  # the per-batch width never exceeds the cap
            assert b[key].shape == (len(docs), cap)
            assert torch.equal(b[key][:, :w], a[key])  # same draws, same order
            pad = b[key][:, w:]
            if key == "mlm_labels":
                assert bool((pad == -100).all())
            elif key.endswith("_valid"):
                assert not bool(pad.any())
            else:
                assert bool((pad == 0).all())
    for key in set(a) - {k for name in caps for k in KEYS[name]}:
        assert torch.equal(a[key], b[key])


def test_caps_are_tight_for_single_documents():
    """Single-document rows: the caps are the mask ratio's bounds, reached by some draw."""
    jepa = JEPAConfig(num_targets=2, target_scale=(0.25, 0.25), context_scale=(1.0, 1.0), min_keep=4)
    obj = ObjectiveConfig(kind="hybrid", student_path="shared")
    col = Collator(MLMConfig(prob=0.15), jepa, obj, SP, V, fixed_widths=True, max_docs=1)
    assert col.width_caps(128) == {"mlm": 19, "ctx": 128, "tgt": 64, "pred": 160}
    assert ours_width_caps(jepa, 128, 1) == (128, 64)
    # full rows of 126 real tokens: each block is round(0.25 * 126) = 32 positions
    batch = Collator(MLMConfig(prob=0.15), jepa, obj, SP, V)(_rows([[126]] * 4, 128, 0), 0)
    assert batch["tgt_index"].shape[1] == 64 and batch["mlm_index"].shape[1] <= 19


def test_shapes_do_not_change_between_steps():
    cfg = debug()
    rows = [_rows([[30, 10], [6]], 48, 0), _rows([[5], [44]], 48, 1), _rows([[46], [20, 4, 8]], 48, 2)]
    obj = ObjectiveConfig(kind="hybrid")
    col = Collator(cfg.mlm, cfg.jepa, obj, SP, V, fixed_widths=True, max_docs=3)
    free = Collator(cfg.mlm, cfg.jepa, obj, SP, V)
    shape_set = {tuple((k, tuple(v.shape)) for k, v in sorted(col(r, i).items())) for i, r in enumerate(rows)}
    assert len(shape_set) == 1
    assert len({free(r, i)["tgt_index"].shape for i, r in enumerate(rows)}) > 1  # without caps they vary


@pytest.mark.parametrize("path", ["shared", "separate"])
def test_losses_ignore_the_padding_slots(path):
    torch.manual_seed(0)
    cfg = apply_overrides(debug(), [f"objective.student_path={path}"])
    model = HybridModel(cfg, V, SP).eval()
    rows = _rows([[20, 14], [40], [9, 9, 9]], 48, 3)
    kw = dict(seed=1)
    a = Collator(cfg.mlm, cfg.jepa, cfg.objective, SP, V, **kw)(rows, 7)
    b = Collator(cfg.mlm, cfg.jepa, cfg.objective, SP, V, fixed_widths=True, max_docs=3, **kw)(rows, 7)
    assert b["mlm_index"].shape[1] > a["mlm_index"].shape[1] and b["tgt_index"].shape[1] > a["tgt_index"].shape[1]
    with torch.no_grad():
        la, _ = model.compute_losses(a)
        lb, _ = model.compute_losses(b)
    assert set(la) == {"mlm", "jepa"}
    for k in la:
        torch.testing.assert_close(lb[k], la[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", ["shared", "separate"])
def test_the_predictors_width_does_not_change_the_losses(path):
    """The predictor's sequence is as wide as ``pred_valid`` (the batch's largest row of context +
    target entries), C + N without it, the fixed cap with ``fixed_widths``: the same JEPA loss and
    gradients each way, and the compact width is below C + N on these packed rows."""
    torch.manual_seed(0)
    cfg = apply_overrides(debug(), [f"objective.student_path={path}"])
    model = HybridModel(cfg, V, SP).train()
    rows = _rows([[44], [30, 12], [10, 10, 10]], 48, 3)
    a = Collator(cfg.mlm, cfg.jepa, cfg.objective, SP, V, seed=1)(rows, 7)
    fixed = Collator(cfg.mlm, cfg.jepa, cfg.objective, SP, V, seed=1, fixed_widths=True, max_docs=3)
    b = fixed(rows, 7)
    wide = {k: v for k, v in a.items() if k != "pred_valid"}
    counts = a["ctx_valid"].sum(1) + a["tgt_valid"].sum(1)
    assert a["pred_valid"].shape[1] == int(counts.max()) < a["ctx_index"].shape[1] + a["tgt_index"].shape[1]
    assert b["pred_valid"].shape[1] == fixed.width_caps(48)["pred"]
    params = [p for p in model.predictor.parameters() if p.requires_grad]
    results = []
    for batch in (a, wide, b):
        loss = model.compute_losses(batch)[0]["jepa"]
        results.append((loss, torch.autograd.grad(loss, params)))
    for loss, grads in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-5, atol=1e-6)
        for g, r in zip(grads, results[0][1]):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
