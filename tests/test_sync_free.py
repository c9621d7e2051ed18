"""The accelerator path of a training step never reads a device value back to the host.

On a GPU every ``.item()`` / ``int()`` / ``bool()`` of a tensor (``aten._local_scalar_dense``) and
every ``torch.tensor(value, device=...)`` (a blocking copy) stalls the host until the device has
caught up, so the next step cannot be queued while this one runs. The step takes that path when
``StepContext.sync_free`` (any device but the CPU); here it is forced on a CPU, the batches made
beforehand (the data pipeline runs on the host by design), and every such call counted."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

from predrecon.data.batching import make_batcher
from predrecon.data.masking import Collator
from predrecon.data.shards import TokenDataset
from predrecon.train import meta
from predrecon.train import step as S
from predrecon.train.diagnostics import FaultMonitor
from predrecon.train.loop import build_optimizer
from predrecon.train.meta import HybridModel
from predrecon.train.syncs import HostReads

from fixtures_data import debug_cfg, tiny_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory, "syncfree", 60, 3)


@pytest.mark.parametrize("ov", [
    (),  # the debug preset: hybrid, packed rows, instance-normalised targets per document
    ("objective.kind=mlm",),
    ("jepa.loss_over_padding=true", "jepa.predictor_mode=per_block", "optim.accum_steps=2"),
], ids=["hybrid", "mlm", "paper-options"])
def test_the_accelerator_step_never_syncs(data, monkeypatch, ov):
    cfg = debug_cfg(data, "train.device=cpu", *ov)
    ds = TokenDataset(data)
    torch.manual_seed(0)
    model = HybridModel(cfg, ds.vocab_size, ds.special_ids)
    opt = build_optimizer(model, cfg, fused=True)
    batcher = make_batcher(ds, cfg.data, "train", cfg.train.batch_size, cfg.train.seed)
    col = Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, cfg.train.seed)
    local = S.LocalSource(batcher, col, cfg.optim.accum_steps, torch.device("cpu"))
    made = {s: local(s) for s in range(2)}
    monkeypatch.setattr(S.StepContext, "sync_free", property(lambda self: True))
    monkeypatch.setattr(meta, "_single_unpadded", lambda seg: False)  # as off the CPU: never checked
    ctx = S.StepContext(cfg, model, opt, made.__getitem__, torch.device("cpu"),
                        monitor=FaultMonitor(torch.device("cpu"), 5))
    S.train_step(ctx, 0)  # lazy state (optimizer moments, balancer) made outside the count
    hits: Counter = Counter()
    real = torch.tensor

    def spy(*a, **k):
        if "device" in k and "/predrecon/" in sys._getframe(1).f_code.co_filename:
            f = sys._getframe(1)
            hits[f"host copy at {f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno}"] += 1
        return real(*a, **k)

    monkeypatch.setattr(torch, "tensor", spy)
    with HostReads() as reads:
        res = S.train_step(ctx, 1)
    monkeypatch.setattr(torch, "tensor", real)
    hits.update({f"read-back at {k}": v for k, v in reads.hits.items()})
    assert not hits, dict(hits)
    assert torch.isfinite(res.logs["loss"]) and not bool(res.bad)  # a real step was counted
