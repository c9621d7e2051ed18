"""Logging sinks: TensorBoard event files hold the JSONL scalars; W&B only when asked for."""

from __future__ import annotations

import json
import sys
import types

import pytest

from predrecon.config import ConfigError
from predrecon.presets import get_preset
from predrecon.train import tracking
from predrecon.train.loop import train
from predrecon.train.tracking import Tracker, record_scalars

from fixtures_data import debug_cfg, has_package, tiny_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory, "data", 60, 11)


cfg_for = debug_cfg


class ListLog:
    def __init__(self):
        self.recs, self.closed = [], False

    def write(self, rec):
        self.recs.append(rec)

    def close(self):
        self.closed = True


def test_record_scalars_selects_finite_numbers():
    rec = {"step": 5, "loss": 1.5, "lambda": 0.3, "grad_norm": None, "gradnorm_step": 0, "lr": float("nan"),
           "skipped_steps": 0}
    assert record_scalars(rec) == {"train/loss": 1.5, "train/lambda": 0.3, "train/skipped_steps": 0.0}
    diag = {"event": "diagnostics", "step": 10, "split": "val", "erank_student": 3.5, "warnings": ["x"], "ok": True}
    assert record_scalars(diag) == {"diag/erank_student": 3.5}
    assert record_scalars({"event": "start", "step": 0, "params_encoder": 10}) is None


@pytest.mark.skipif(not has_package("tensorboard"), reason="tensorboard not installed")
def test_tensorboard_event_files_hold_the_logged_scalars(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(cfg_for(tiny_data, "train.steps=10", "train.log_every=5", "train.diag_every=5", "train.tensorboard=on"), run)
    files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    for rec in recs:
        for tag, value in (record_scalars(rec) or {}).items():
            assert tag in tags, tag
            got = {e.step: e.value for e in acc.Scalars(tag)}
            assert got[rec["step"]] == pytest.approx(value, rel=1e-6), (tag, rec["step"])
    assert {"train/loss", "train/loss_mlm", "train/loss_jepa", "train/lambda", "train/lr"} <= tags
    assert any(t.startswith("diag/") for t in tags)
    assert [e.step for e in acc.Scalars("train/loss")] == [5, 10]


def test_tensorboard_on_without_the_package_is_a_clear_error(monkeypatch, tmp_path):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda n, *a: None if n == "tensorboard" else real(n, *a))
    cfg = get_preset("debug")
    cfg.train.tensorboard = "on"
    with pytest.raises(ConfigError, match="train.tensorboard=on: the tensorboard package is not installed"):
        Tracker(ListLog(), cfg, tmp_path)
    cfg.train.tensorboard = "auto"  # silently JSONL only
    t = Tracker(ListLog(), cfg, tmp_path)
    assert t.sinks == {} and not (tmp_path / "tensorboard").exists()


def test_wandb_is_off_by_default_and_never_imported(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    cfg = get_preset("debug")
    cfg.train.tensorboard = "off"
    t = Tracker(ListLog(), cfg, tmp_path)
    t.write({"step": 1, "loss": 1.0})
    t.close()
    assert "wandb" not in sys.modules and t.sinks == {}


def test_wandb_hook_logs_the_scalars_and_resumes_the_same_run(monkeypatch, tmp_path):
    calls: list = []

    class FakeRun:
        def log(self, values, step):
            calls.append(("log", step, dict(values)))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = get_preset("debug")
    cfg.train.tensorboard, cfg.train.wandb = "off", "my-project"
    log = ListLog()
    t = Tracker(log, cfg, tmp_path)
    t.write({"event": "start", "step": 0})
    t.write({"step": 5, "loss": 2.0, "lambda": 0.5})
    t.write({"event": "diagnostics", "step": 5, "erank_student": 4.0})
    t.close()
    init = calls[0][1]
    assert init["project"] == "my-project" and init["config"]["train"]["wandb"] == "my-project"
    assert calls[1:] == [("log", 5, {"train/loss": 2.0, "train/lambda": 0.5}),
                         ("log", 5, {"diag/erank_student": 4.0}), ("finish",)]
    assert len(log.recs) == 3 and log.closed
    Tracker(ListLog(), cfg, tmp_path, start=5, resuming=True)  # a resume continues the same W&B run
    assert calls[-1][1]["id"] == init["id"] == (tmp_path / "wandb_id").read_text()


def test_wandb_asked_for_but_absent(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    cfg = get_preset("debug")
    cfg.train.tensorboard, cfg.train.wandb = "off", "p"
    with pytest.raises(ConfigError, match="train.wandb='p': the wandb package is not installed"):
        Tracker(ListLog(), cfg, tmp_path)


@pytest.mark.skipif(not has_package("tensorboard"), reason="tensorboard not installed")
def test_tensorboard_resume_drops_the_events_after_the_resumed_step(tmp_path):
    """As log.jsonl drops its records after the checkpoint a run resumes from, TensorBoard purges
    the events after it (purge_step), so a resumed curve has each step once, with the new value."""
    import time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = get_preset("debug")
    cfg.train.tensorboard = "on"
    first = Tracker(ListLog(), cfg, tmp_path)
    for step in (2, 4, 6):
        first.write({"step": step, "loss": float(step)})
    first.close()
    time.sleep(1.1)  # event file names carry a timestamp in seconds
    second = Tracker(ListLog(), cfg, tmp_path, start=4, resuming=True)  # the checkpoint was at step 4
    for step in (6, 8):
        second.write({"step": step, "loss": 100.0 + step})
    second.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(2, 2.0), (4, 4.0), (6, 106.0), (8, 108.0)]
