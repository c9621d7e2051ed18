"""benchmarks/gpu_check.py, the prepared device check: it runs end to end on a CPU (so it cannot
rot before a GPU is lent), and each correctness check fails on a planted fault."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from predrecon import bench

_SPEC = importlib.util.spec_from_file_location(
    "gpu_check", Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py")
gc = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gc)
CPU = torch.device("cpu")


def test_runs_on_a_cpu_and_writes_one_json(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setitem(bench.SHAPES, "debug", (32, 2, 2))
    monkeypatch.setattr(bench, "VOCAB", 2048)
    monkeypatch.setattr(bench, "synthetic_dataset", _tiny_dataset)
    rc = gc.main(["--device", "cpu", "--bench-shape", "debug", "--bench-batch", "2", "--bench-seq", "32",
                  "--bench-steps", "1", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rc == 0
    assert all(report[k]["pass"] for k in ("fused_ce", "attention", "bf16_losses"))
    assert report["sync_free"]["skipped"]  # a CPU: see test_sync_free_check_counts_host_reads
    assert 0 < report["bf16_losses"]["max_rel_diff"] <= report["bf16_losses"]["tol"]
    assert {"hf_bert_mlm", "ours_hybrid_shared", "loop_hybrid_shared", "loop_hybrid_shared+prefetch"} \
        <= set(report["bench"]["results"])


def _tiny_dataset(out, seq, **kw):
    from fixtures_data import build_tiny, make_docs

    build_tiny(out, docs=make_docs(30, seed=1))
    return out


def test_fused_ce_check_fails_on_a_wrong_loss(monkeypatch):
    assert gc.check_fused_ce(CPU)["pass"]
    real = gc.linear_cross_entropy
    monkeypatch.setattr(gc, "linear_cross_entropy", lambda *a, **k: real(*a, **k) * 1.05)  # 5 % off
    out = gc.check_fused_ce(CPU)
    assert not out["pass"] and not out["fp32"]["pass"] and not out["bf16"]["pass"]


def test_attention_check_fails_when_the_mask_is_ignored(monkeypatch):
    real = gc.attention

    def eager_without_mask(q, k, v, mask=None, dropout_p=0.0, impl="auto"):
        return real(q, k, v, None if impl == "eager" else mask, dropout_p, impl)

    monkeypatch.setattr(gc, "attention", eager_without_mask)
    out = gc.check_attention(CPU)
    assert not out["pass"] and not out["fp32"]["pass"]


def test_bf16_check_fails_when_the_curves_differ_more_than_stated():
    out = gc.check_bf16_losses(CPU, steps=3, rtol=1e-9)  # bf16 really differs from fp32
    assert not out["pass"] and out["max_rel_diff"] > 0


def test_sync_free_check_counts_host_reads(monkeypatch):
    """On a CPU the check is skipped (the step branches there by design); its body, forced onto the
    accelerator path, passes on a clean step and fails on a planted ``bool(tensor)``."""
    from predrecon.train import meta
    from predrecon.train import step as S

    assert gc.check_sync_free(CPU) == {"pass": True, "skipped": "cpu: not an accelerator"}
    monkeypatch.setattr(S.StepContext, "sync_free", property(lambda self: True))
    monkeypatch.setattr(meta, "_single_unpadded", lambda seg: False)
    out = gc._step_syncs(CPU)
    assert out["pass"] and out["finite"] and out["host_reads"] == {}
    monkeypatch.setattr(meta, "_single_unpadded", lambda seg: bool((seg == 1).all()) and False)
    out = gc._step_syncs(CPU)
    assert not out["pass"] and out["host_reads"] and all(k.startswith("meta.py:") for k in out["host_reads"])
