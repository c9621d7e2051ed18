"""The training loop's throughput options change nothing but speed: prefetched batches give the
same run (and resume exactly), the chunked MLM loss gives the plain one's curve, and a compiled
model (slow) follows the eager curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from predrecon.train.loop import train

from fixtures_data import debug_cfg, tiny_dataset

OV = ("train.steps=10", "train.log_every=1", "train.ckpt_every=100", "optim.warmup_steps=2", "train.diag_every=0")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory, "pipe", 120, 7)


def cfg_for(data: str, *ov: str):
    return debug_cfg(data, *OV, *ov)


def curve(run: Path, key: str) -> list[tuple[int, float]]:
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in recs if key in r and "event" not in r]


def test_prefetched_run_equals_main_thread_run_and_resumes(data, tmp_path):
    plain, pf, part = tmp_path / "plain", tmp_path / "pf", tmp_path / "part"
    train(cfg_for(data), plain)
    train(cfg_for(data, "train.prefetch=2"), pf)
    train(cfg_for(data, "train.prefetch=3"), part, max_steps=4)  # interrupted, checkpoint at step 4
    train(cfg_for(data, "train.prefetch=3"), part, resume="auto")
    for key in ("loss", "loss_mlm", "loss_jepa"):
        assert curve(plain, key) == curve(pf, key) == curve(part, key), key  # bit for bit on CPU
    assert len(curve(plain, "loss")) == 10


@pytest.mark.slow
@pytest.mark.parametrize("path", ["shared", "separate"])
def test_compiled_run_follows_the_eager_curve(data, tmp_path, path):
    """GradNorm updates every 2 steps: its autograd.grad differentiates the compiled graph before
    the step's backward does (no donated buffers)."""
    eager, comp = tmp_path / "eager", tmp_path / "comp"
    ov = (f"objective.student_path={path}", "objective.gradnorm_every=2")
    train(cfg_for(data, *ov), eager)
    train(cfg_for(data, *ov, "train.compile=true"), comp)
    for key in ("loss_mlm", "loss_jepa"):
        a, b = curve(eager, key), curve(comp, key)
        assert [s for s, _ in a] == [s for s, _ in b]
        assert max(abs(x - y) / abs(x) for (_, x), (_, y) in zip(a, b)) < 1e-3, key
