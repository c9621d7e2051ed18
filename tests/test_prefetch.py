"""Prefetched batches equal the ones made on the main thread, step by step, and the source's
state resumes into the same rows."""

from __future__ import annotations

import pytest
import torch

from predrecon.config import DataConfig
from predrecon.data.batching import make_batcher
from predrecon.data.masking import Collator
from predrecon.data.prefetch import PrefetchSource
from predrecon.presets import debug
from predrecon.train.step import LocalSource, make_source

from fixtures_data import build_tiny, make_docs


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("pf") / "ds", docs=make_docs(60, seed=11))


def _parts(ds, seed=3):
    cfg = debug()
    batcher = make_batcher(ds, DataConfig(seq_len=32), "train", 3, seed)
    col = Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, seed)
    return batcher, col


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("accum", [1, 2])
def test_prefetched_equals_local_and_resumes(ds, accum):
    cpu = torch.device("cpu")
    b1, col = _parts(ds)
    local = LocalSource(b1, col, accum, cpu)
    b2, _ = _parts(ds)
    pf = PrefetchSource(b2, col, accum, cpu, start=0, end=8, depth=2)
    states = []
    for step in range(8):
        (la, lt), (pa, pt) = local(step), pf(step)
        _same(la, pa)
        assert lt == pt and lt > 0
        assert pf.state_dict() == local.state_dict()
        states.append(pf.state_dict())
    # the caller's batcher was copied, not advanced: its next rows are a fresh batcher's first
    first, fresh = next(b2), next(_parts(ds)[0])
    assert all(torch.equal(first[k], fresh[k]) for k in fresh)
    # resume from the state after step 4: a new source continues with steps 5..7 exactly
    b3, _ = _parts(ds)
    b3.load_state_dict(states[4])
    resumed = make_source(b3, col, accum, cpu, start=5, end=8, prefetch=3)
    b4, _ = _parts(ds)
    ref = LocalSource(b4, col, accum, cpu)
    for step in range(5):
        ref(step)
    for step in range(5, 8):
        _same(resumed(step)[0], ref(step)[0])
    with pytest.raises(RuntimeError, match="stream is at step"):
        resumed(3)


def test_bad_depth_is_refused(ds):
    b, col = _parts(ds)
    with pytest.raises(ValueError, match="depth"):
        PrefetchSource(b, col, 1, torch.device("cpu"), 0, 4, depth=0)
