"""The side-by-side benchmark: ratios follow from the measured step times, every contestant is
reported, and the arithmetic is checked exactly on a fake clock."""

import math
import statistics

import pytest

from predrecon import bench
from predrecon.bench import format_table, run_bench

CONTESTANTS = {"hf_bert_mlm", "ours_mlm", "ours_hybrid_shared", "ours_hybrid_separate"}


def test_ratios_follow_from_step_times_on_a_fake_clock(monkeypatch):
    """Each contestant advances a fake clock by a known step time: the reported tokens/s and
    ratios must be exactly batch*seq/time and t_hf/t_ours."""
    clock = [0.0]
    step_s = {"hf_bert_mlm": 0.004, "ours_mlm": 0.002, "ours_hybrid_shared": 0.0025, "ours_hybrid_separate": 0.005}
    kinds = {("mlm", "shared"): "ours_mlm", ("hybrid", "shared"): "ours_hybrid_shared",
             ("hybrid", "separate"): "ours_hybrid_separate"}

    def ticker(name):
        def step():
            clock[0] += step_s[name]
        return step

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(bench, "_hf", lambda *a, **k: ticker("hf_bert_mlm"))
    monkeypatch.setattr(bench, "_ours",
                        lambda cfg, *a, **k: ticker(kinds[cfg.objective.kind, cfg.objective.student_path]))
    out = run_bench("tiny", batch=4, seq=16, steps=3, warmup=1, rounds=2, device="cpu")
    res = out["results"]
    assert set(res) == CONTESTANTS
    for name, r in res.items():
        assert r["step_s_median"] == pytest.approx(step_s[name], rel=1e-9)
        assert r["tokens_per_s"] == pytest.approx(64 / step_s[name], rel=1e-9)
        assert r["ratio_vs_hf_mlm"] == pytest.approx(step_s["hf_bert_mlm"] / step_s[name], rel=1e-9)
    assert res["ours_mlm"]["ratio_vs_hf_mlm"] == pytest.approx(2.0)
    table = format_table(out)
    assert "| ours_mlm | 32,000 | 2.00 |" in table and "| ours_hybrid_separate | 12,800 | 0.80 |" in table


def test_without_hf_there_is_no_ratio(monkeypatch):
    monkeypatch.setattr(bench, "_ours", lambda *a, **k: (lambda: None))
    out = run_bench("tiny", batch=2, seq=8, steps=1, warmup=0, rounds=1, device="cpu", include_hf=False)
    assert set(out["results"]) == CONTESTANTS - {"hf_bert_mlm"}
    assert all(r["ratio_vs_hf_mlm"] is None for r in out["results"].values())
    assert format_table(out).count("| – |") == 3


def test_real_run_is_consistent_and_reports_every_contestant(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setitem(bench.SHAPES, "debug", (32, 2, 2))  # a debug shape and vocabulary: seconds, not minutes
    monkeypatch.setattr(bench, "VOCAB", 2048)
    out = run_bench("debug", batch=2, seq=32, steps=1, warmup=1, rounds=2, device="cpu")
    res = out["results"]
    assert set(res) == CONTESTANTS
    assert out["config"]["batch"] == 2 and out["config"]["seq"] == 32 and out["config"]["rounds"] == 2
    hf = res["hf_bert_mlm"]
    for name, r in res.items():
        assert len(r["step_s_all"]) == 2 and all(t > 0 and math.isfinite(t) for t in r["step_s_all"])
        assert r["step_s_median"] == statistics.median(r["step_s_all"])
        assert r["tokens_per_s"] == pytest.approx(64 / r["step_s_median"], rel=1e-12)
        # the ratio is computed from the two measured medians, not set to a constant
        assert r["ratio_vs_hf_mlm"] == pytest.approx(hf["step_s_median"] / r["step_s_median"], rel=1e-12)
        assert f"| {name} | {r['tokens_per_s']:,.0f} | {r['ratio_vs_hf_mlm']:.2f} |" in format_table(out)
