"""Packed rows end to end: a JEPA target's prediction and its target depend on its own document only."""

from __future__ import annotations

import pytest
import torch

from predrecon.config import ObjectiveConfig, apply_overrides
from predrecon.data.batching import assemble_rows
from predrecon.data.masking import Collator
from predrecon.data.tokenizer import SpecialIds
from predrecon.presets import debug
from predrecon.train import meta
from predrecon.train.meta import HybridModel, gather_tokens

SP = SpecialIds(pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)
V = 50


def _rows(docs_per_row, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = [[torch.randint(5, V, (n,), generator=g).numpy() for n in lens] for lens in docs_per_row]
    return assemble_rows(rows, T, SP.cls_id, SP.sep_id, SP.pad_id)


@pytest.mark.parametrize("path", ["shared", "separate"])
def test_other_document_never_reaches_a_prediction_or_target(monkeypatch, path):
    torch.manual_seed(0)
    cfg = apply_overrides(debug(), [f"objective.student_path={path}", "jepa.target_norm=instance"])
    model = HybridModel(cfg, V, SP).eval()
    with torch.no_grad():  # a target encoder unlike the student, so both paths are exercised
        for p in model.target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    seen = []
    real_loss = meta.jepa_loss
    monkeypatch.setattr(meta, "jepa_loss", lambda pred, tgt, valid, **kw: seen.append((pred, tgt)) or
                        real_loss(pred, tgt, valid, **kw))
    rows = _rows([[20, 14], [25, 12]], T=48, seed=1)
    col = Collator(cfg.mlm, cfg.jepa, ObjectiveConfig(kind="hybrid", student_path=path), SP, V, seed=3)
    batch = col(rows, 0)
    seg = batch["segment_ids"]
    other = seg == 2
    g = torch.Generator().manual_seed(7)
    new = torch.randint(5, V, seg.shape, generator=g)
    changed = dict(batch)
    changed["input_ids"] = torch.where(other, new, batch["input_ids"])
    visible = batch["mlm_input_ids"] == batch["input_ids"]
    changed["mlm_input_ids"] = torch.where(other & visible, new, batch["mlm_input_ids"])
    with torch.no_grad():
        model.compute_losses(batch)
        model.compute_losses(changed)
    (p0, t0), (p1, t1) = seen
    tseg = gather_tokens(seg, batch["tgt_index"])
    own = batch["tgt_valid"] & (tseg == 1)
    assert own.any() and (batch["tgt_valid"] & (tseg == 2)).any()
    torch.testing.assert_close(p1[own], p0[own])  # prediction: attention stays in the document
    torch.testing.assert_close(t1[own], t0[own])  # target: encoder and normalisation per document
    moved = batch["tgt_valid"] & (tseg == 2)
    assert not torch.allclose(p1[moved], p0[moved]) and not torch.allclose(t1[moved], t0[moved])


def test_predictor_without_segments_would_mix_documents():
    """The same check fails when the predictor is not given the segments (what the fix changed)."""
    torch.manual_seed(0)
    cfg = debug()
    model = HybridModel(cfg, V, SP).eval()
    rows = _rows([[20, 14]], T=48, seed=1)
    batch = Collator(cfg.mlm, cfg.jepa, cfg.objective, SP, V, seed=3)(rows, 0)
    pos, seg = batch["position_ids"], batch["segment_ids"]
    ci, ti = batch["ctx_index"], batch["tgt_index"]
    with torch.no_grad():
        h = model.encoder(batch["mlm_input_ids"], pos, seg).last_hidden_state
        ctx = gather_tokens(h, ci)
        ctx2 = torch.where((gather_tokens(seg, ci) == 2)[..., None], ctx + 1.0, ctx)
        args = (gather_tokens(pos, ci), batch["ctx_valid"], gather_tokens(pos, ti), batch["tgt_block"],
                batch["tgt_valid"])
        own = batch["tgt_valid"] & (gather_tokens(seg, ti) == 1)
        a, b = model.predictor(ctx, *args), model.predictor(ctx2, *args)
        assert not torch.allclose(a[own], b[own])
        segs = (gather_tokens(seg, ci), gather_tokens(seg, ti))
        torch.testing.assert_close(model.predictor(ctx, *args, *segs)[own], model.predictor(ctx2, *args, *segs)[own])
