"""Numerical guards of the trainer: non-finite steps skipped and counted, a stop after
``train.max_nonfinite`` consecutive ones, divergence and collapse caught at the default thresholds,
the position-only JEPA baseline, GradNorm's diagnostics in the log."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from predrecon.data.masking import Collator
from predrecon.data.shards import TokenDataset
from predrecon.train.checkpoint import list_checkpoints
from predrecon.train.diagnostics import Diagnostics, FaultMonitor, TrainingStopped, position_only_predictions
from predrecon.train.loop import apply_update, build_optimizer, train
from predrecon.train.meta import HybridModel

from fixtures_data import debug_cfg, tiny_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory, "numerics", 120, 7)


cfg_for = debug_cfg


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- skipping a step
def _model_and_grads(data: str):
    cfg = cfg_for(data, "objective.kind=jepa")
    ds = TokenDataset(data)
    torch.manual_seed(0)
    model = HybridModel(cfg, ds.vocab_size, ds.special_ids)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p) * 0.1
    return cfg, model


def _state(model, opt) -> list[torch.Tensor]:
    out = [p.detach().clone() for p in model.parameters()]
    out += [t.detach().clone() for t in model.target.parameters()]
    out += [v.clone() for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    return out


@pytest.mark.parametrize("sync_free", [False, True])
def test_a_bad_step_changes_nothing_and_a_good_one_matches_the_plain_update(data, sync_free):
    """``bad``: parameters, EMA target and optimizer state unchanged (the fused kernel's found_inf
    path when ``sync_free``); good: identical to a plain AdamW step + EMA."""
    cfg, model = _model_and_grads(data)
    try:
        opt = build_optimizer(model, cfg, fused=True)  # fused AdamW runs on CPU in torch >= 2.4
        ref_model = copy.deepcopy(model)
        ref_opt = build_optimizer(ref_model, cfg, fused=True)
        ref_model.load_state_dict(model.state_dict())
        ref_model.target.load_state_dict(model.target.state_dict())
        for p, q in zip(model.parameters(), ref_model.parameters()):
            q.grad = None if p.grad is None else p.grad.clone()
        apply_update(ref_model, ref_opt, torch.tensor(False), 0.9, sync_free=False)  # warm the state
    except RuntimeError as e:
        pytest.skip(f"fused AdamW unavailable on CPU here: {e}")
    apply_update(model, opt, torch.tensor(False), 0.9, sync_free=sync_free)
    for a, b in zip(_state(model, opt), _state(ref_model, ref_opt)):
        assert torch.equal(a, b)
    before = _state(model, opt)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, float("nan"))
    apply_update(model, opt, torch.tensor(True), 0.5, sync_free=sync_free)
    after = _state(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.grad is None for p in model.parameters())


def test_fault_monitor_counts_runs_without_reading_until_check():
    mon = FaultMonitor(torch.device("cpu"), limit=3)
    for bad in (1, 1, 0, 1, 1):
        mon.record(torch.tensor(bool(bad)))
    assert mon.check(5) == 4  # longest run 2 < 3
    mon.record(torch.tensor(True))  # the current run continues: 3
    with pytest.raises(TrainingStopped, match=r"^train.max_nonfinite: 3 consecutive steps"):
        mon.check(6)


def _nan_at(monkeypatch, steps: set[int]) -> None:
    """Training forward passes (one per step here) at the given 0-based steps return NaN losses."""
    real = HybridModel.compute_losses
    calls = {"n": 0}

    def patched(self, batch, with_stats=False):
        losses, stats = real(self, batch, with_stats)
        if self.training and torch.is_grad_enabled():
            step, calls["n"] = calls["n"], calls["n"] + 1
            if step in steps:
                losses = {k: v * float("nan") for k, v in losses.items()}
        return losses, stats

    monkeypatch.setattr(HybridModel, "compute_losses", patched)


def test_nonfinite_steps_are_skipped_counted_and_never_checkpointed(data, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {3, 4, 9})
    cfg = cfg_for(data, "train.steps=12", "train.log_every=1", "train.ckpt_every=4", "train.diag_every=0",
                  "train.keep_ckpts=5")
    summary = train(cfg, tmp_path)
    assert summary["step"] == 12 and summary["skipped_steps"] == 3
    recs = {r["step"]: r for r in records(tmp_path) if "event" not in r}
    assert [recs[s]["skipped_steps"] for s in (3, 4, 5, 9, 10, 12)] == [0, 1, 2, 2, 3, 3]
    from safetensors.torch import load_file
    for ck in list_checkpoints(tmp_path):
        assert all(torch.isfinite(t).all() for t in load_file(str(ck / "model.safetensors")).values())
    import math
    assert math.isfinite(summary["loss"])


def test_consecutive_nonfinite_steps_stop_with_one_line(data, tmp_path, monkeypatch):
    _nan_at(monkeypatch, set(range(3, 100)))
    cfg = cfg_for(data, "train.steps=20", "train.ckpt_every=2", "train.diag_every=0")
    with pytest.raises(TrainingStopped, match=r"^train.max_nonfinite: 5 consecutive steps") as e:
        train(cfg, tmp_path)
    assert "\n" not in str(e.value)
    assert [c.name for c in list_checkpoints(tmp_path)][-1] <= "step_00000008"


def test_divergence_is_stopped_at_the_default_threshold(data, tmp_path):
    """MLM at lr 10 (loss ~ln V -> hundreds within a few steps) stops at the first log step."""
    cfg = cfg_for(data, "objective.kind=mlm", "optim.lr=10", "optim.min_lr=1", "train.steps=20",
                  "train.diag_every=0")
    with pytest.raises(TrainingStopped, match=r"^train.diverge_factor: loss_mlm = .* at step 5 is more than 3 x"):
        train(cfg, tmp_path)
    assert records(tmp_path)[-1]["event"] == "stopped"


def test_a_healthy_run_trips_no_guard(data, tmp_path):
    summary = train(cfg_for(data, "train.steps=20", "train.diag_every=10"), tmp_path)
    assert summary["skipped_steps"] == 0
    diag = [r for r in records(tmp_path) if r.get("event") == "diagnostics"]
    assert len(diag) == 2 and all(d["warnings"] == [] for d in diag), diag


# ----------------------------------------------------------------------------- position-only baseline
def test_position_only_predictions_are_cross_fitted_means():
    B, T, D = 4, 5, 3
    pos = torch.arange(T).repeat(B, 1)
    real = torch.ones(B, T, dtype=torch.bool)
    real[3, 4] = False
    t = torch.randn(B, T, D)
    idx = torch.tensor([[0, 4]] * B)
    pred = position_only_predictions(t, pos, real, idx)
    # even rows (0, 2) are predicted from odd rows (1, 3) and vice versa, per position
    torch.testing.assert_close(pred[0, 0], (t[1, 0] + t[3, 0]) / 2)
    torch.testing.assert_close(pred[0, 1], t[1, 4])  # row 3's position 4 is not real
    torch.testing.assert_close(pred[1, 0], (t[0, 0] + t[2, 0]) / 2)
    glob = t[[0, 2]].reshape(-1, D).mean(0)
    torch.testing.assert_close(position_only_predictions(t, pos, real, idx, use_position=False)[1, 1], glob)


def _diag_at_init(data: str, *ov: str):
    cfg = cfg_for(data, *ov)
    ds = TokenDataset(data)
    cfg.model.vocab_size = ds.vocab_size
    torch.manual_seed(0)
    model = HybridModel(cfg, ds.vocab_size, ds.special_ids)
    col = Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, 0)
    diag = Diagnostics(cfg, ds, col, torch.device("cpu"))
    diag.set_reference(model)
    return diag.run(model.eval(), diag.batch)


def test_position_only_baseline_flags_sincos_positions_and_not_the_default(data):
    """Targets of a position-dominated encoder (the reference's sin/cos table) are predictable
    from position alone; with the presets' learned positions they are not."""
    sincos = _diag_at_init(data, "model.positions=sincos")
    learned = _diag_at_init(data)
    for d in (sincos, learned):
        assert 0.9 < d["val_loss_jepa_mean_only"] < 1.1  # cosine: no information ~ 1
    assert sincos["val_loss_jepa_position_only"] < 0.25 * sincos["val_loss_jepa_mean_only"]
    assert learned["val_loss_jepa_position_only"] > 0.3 * learned["val_loss_jepa_mean_only"]
    assert any(w.startswith("JEPA task nearly trivial") for w in sincos["warnings"])
    assert learned["warnings"] == []


# ----------------------------------------------------------------------------- gradnorm logging
def test_gradnorm_diagnostics_reach_the_log_at_the_default_interval(data, tmp_path):
    """debug: log every 5, GradNorm every 10 — the last update's values are carried to every log."""
    train(cfg_for(data, "train.steps=20", "train.diag_every=0"), tmp_path)
    recs = {r["step"]: r for r in records(tmp_path) if "event" not in r}
    assert "gradnorm_G_jepa" not in recs[5]
    for s, src in ((10, 10), (15, 10), (20, 20)):
        assert recs[s]["gradnorm_step"] == src and recs[s]["gradnorm_G_mlm"] > 0, s
    assert recs[15]["gradnorm_G_mlm"] == recs[10]["gradnorm_G_mlm"]


def test_collapse_is_flagged_at_the_default_threshold(data):
    """A student whose token states collapse onto one direction (what JEPA alone with EMA momentum
    0 reaches on wiki leads at debug size: token effective rank 29.2 -> 4.5 within 150 steps,
    docs/balancing.md) is flagged at the default train.collapse_rank_frac; the init is not."""
    cfg = cfg_for(data, "objective.kind=jepa")
    ds = TokenDataset(data)
    cfg.model.vocab_size = ds.vocab_size
    torch.manual_seed(0)
    model = HybridModel(cfg, ds.vocab_size, ds.special_ids).eval()
    diag = Diagnostics(cfg, ds, Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, 0),
                       torch.device("cpu"))
    init = diag.set_reference(model)
    healthy = diag.run(model, diag.batch)
    assert healthy["erank_tokens_student"] == pytest.approx(init) and healthy["warnings"] == []
    with torch.no_grad():  # final LayerNorm keeps 2 features: every token state in a 2-d subspace
        keep = torch.zeros_like(model.encoder.norm.weight)
        keep[:2] = 1.0
        model.encoder.norm.weight.copy_(keep)
        model.encoder.norm.bias.zero_()
    collapsed = diag.run(model, diag.batch)
    assert collapsed["erank_tokens_student"] < 2.01
    assert any(w.startswith("representation collapse") and "train.collapse_rank_frac=0.25" in w
               for w in collapsed["warnings"]), collapsed["warnings"]
