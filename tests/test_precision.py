"""train.precision=auto: bf16 autocast where the CPU has native bf16 (and on CUDA), fp32
elsewhere; bf16's first losses match fp32's within a stated tolerance."""

from __future__ import annotations

import pytest
import torch

from predrecon.config import apply_overrides
from predrecon.data.batching import make_batcher
from predrecon.data.masking import Collator
from predrecon.presets import debug
from predrecon.train import step as step_mod
from predrecon.train.loop import build_optimizer, seed_everything
from predrecon.train.meta import HybridModel
from predrecon.train.step import LocalSource, StepContext, autocast_dtype, cpu_supports_bf16, train_step

from fixtures_data import build_tiny, make_docs

CPU = torch.device("cpu")
# relative |loss_bf16 - loss_fp32| / loss_fp32 allowed on each of the first 10 steps at debug size
# (measured: <= 1e-4 for the MLM and JEPA losses)
BF16_LOSS_RTOL = 1e-3


@pytest.mark.parametrize("flags,expected", [("fpu sse2 avx512f avx512_bf16 avx2", True),
                                            ("fpu sse2 amx_bf16 amx_tile", True),
                                            ("fpu sse2 avx2 avx512f", False)])
def test_cpu_bf16_detection_reads_the_flags(tmp_path, flags, expected):
    f = tmp_path / "cpuinfo"
    f.write_text(f"processor\t: 0\nmodel name\t: X\nflags\t\t: {flags}\n")
    assert cpu_supports_bf16(str(f)) is expected
    assert cpu_supports_bf16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_precision(monkeypatch, has_bf16):
    monkeypatch.setattr(step_mod, "cpu_supports_bf16", lambda: has_bf16)
    want = torch.bfloat16 if has_bf16 else None
    assert autocast_dtype("auto", CPU) is want
    assert autocast_dtype("auto", CPU, dim=step_mod.AUTO_BF16_MIN_DIM_CPU) is want
    assert autocast_dtype("auto", CPU, dim=step_mod.AUTO_BF16_MIN_DIM_CPU - 1) is None
    assert autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert autocast_dtype("fp32", CPU) is None and autocast_dtype("bf16", CPU) is torch.bfloat16
    with pytest.raises(ValueError, match="train.precision"):
        autocast_dtype("fp8", CPU)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("prec") / "ds", docs=make_docs(80, seed=5))


def _losses(ds, amp, kind, steps=10):
    cfg = apply_overrides(debug(), [f"objective.kind={kind}", "data.seq_len=64", "train.batch_size=8"])
    seed_everything(0)
    model = HybridModel(cfg, ds.vocab_size, ds.special_ids)
    opt = build_optimizer(model, cfg)
    src = LocalSource(make_batcher(ds, cfg.data, "train", 8, 0),
                      Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, 0), 1, CPU)
    ctx = StepContext(cfg, model, opt, src, CPU, amp=amp)
    return [{k: float(v) for k, v in train_step(ctx, s).logs.items() if k in ("loss_mlm", "loss_jepa")}
            for s in range(steps)]


@pytest.mark.parametrize("kind", ["mlm", "hybrid"])
def test_bf16_first_losses_match_fp32(ds, kind):
    fp32, bf16 = _losses(ds, None, kind), _losses(ds, torch.bfloat16, kind)
    diffs = [abs(b[k] - a[k]) / abs(a[k]) for a, b in zip(fp32, bf16) for k in a]
    assert max(diffs) <= BF16_LOSS_RTOL
    assert max(diffs) > 0  # bf16 really ran (an identical curve would mean no autocast)
    assert fp32[-1]["loss_mlm"] < fp32[0]["loss_mlm"] and bf16[-1]["loss_mlm"] < bf16[0]["loss_mlm"]
