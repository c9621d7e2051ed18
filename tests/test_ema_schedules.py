"""EMA update arithmetic and step-indexed schedules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from predrecon.config import ModelConfig
from predrecon.model.encoder import Encoder
from predrecon.train.ema import ema_update, make_target
from predrecon.train.schedules import SCHEDULES, constant, linear, warmup_cosine


class Net(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)  # has buffers
        with torch.no_grad():
            self.bn.running_mean.normal_()


# ----------------------------------------------------------------------------- EMA
@pytest.mark.parametrize("m", [0.0, 1.0, 0.9, 0.996])
def test_ema_update_closed_form(m):
    tgt, onl = Net(0), Net(1)
    before = {k: v.clone() for k, v in tgt.state_dict().items()}
    ema_update(tgt, onl, m)
    for name, p in tgt.named_parameters():
        o, t0 = dict(onl.named_parameters())[name], before[name]
        if m == 0.0:
            assert torch.equal(p, o)  # exact copy
        elif m == 1.0:
            assert torch.equal(p, t0)  # exactly unchanged
        else:
            torch.testing.assert_close(p, m * t0 + (1 - m) * o)
    for name, b in tgt.named_buffers():
        assert torch.equal(b, dict(onl.named_buffers())[name])  # buffers copied


def test_ema_update_on_tensor_lists_and_errors():
    t, o = [torch.ones(3), torch.zeros(2)], [torch.zeros(3), torch.ones(2)]
    ema_update(t, o, 0.75)
    torch.testing.assert_close(t[0], torch.full((3,), 0.75))
    torch.testing.assert_close(t[1], torch.full((2,), 0.25))
    with pytest.raises(ValueError, match="momentum"):
        ema_update(t, o, 1.5)
    with pytest.raises(ValueError, match="target tensors"):
        ema_update(t, o[:1], 0.5)
    with pytest.raises(ValueError, match="shape"):
        ema_update([torch.ones(3)], [torch.ones(4)], 0.5)
    with pytest.raises(ValueError, match="names"):
        ema_update(Net(0), nn.Linear(3, 4), 0.5)


@pytest.mark.parametrize("m", [0.0, 0.9, 0.996])
def test_ema_update_skip_flag_on_device(m):
    """``skip`` false: bit-identical to the plain update; true: parameters exactly unchanged."""
    ref, tgt, onl = Net(0), Net(0), Net(1)
    ema_update(ref, onl, m)
    ema_update(tgt, onl, m, skip=torch.tensor(False))
    for a, b in zip(ref.parameters(), tgt.parameters()):
        assert torch.equal(a, b)
    before = [p.clone() for p in tgt.parameters()]
    ema_update(tgt, onl, m, skip=torch.tensor(True))
    assert all(torch.equal(a, b) for a, b in zip(before, tgt.parameters()))


def test_make_target_is_frozen_copy_without_grads():
    enc = Encoder(ModelConfig(dim=16, depth=1, heads=2, max_len=16, pad_vocab_multiple=8), 20).train()
    tgt = make_target(enc)
    assert not tgt.training and enc.training
    assert all(not p.requires_grad for p in tgt.parameters())
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(tgt.parameters(), enc.parameters()))
    ids = torch.randint(0, 20, (2, 5))
    loss = enc(ids).last_hidden_state.sum() + tgt(ids).last_hidden_state.sum()
    loss.backward()
    assert all(p.grad is None for p in tgt.parameters())
    assert enc.blocks[0].attn.qkv.weight.grad is not None
    # the EMA step moves the target towards the student and never builds a graph
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(1.0)
    w0 = tgt.blocks[0].attn.qkv.weight.clone()
    ema_update(tgt, enc, 0.9)
    torch.testing.assert_close(tgt.blocks[0].attn.qkv.weight, 0.9 * w0 + 0.1 * enc.blocks[0].attn.qkv.weight)
    assert all(p.grad_fn is None and not p.requires_grad for p in tgt.parameters())


# ----------------------------------------------------------------------------- schedules
def test_warmup_cosine_end_points_and_midpoints():
    kw = dict(total=110, warmup=10, peak=5e-5, start=1e-6, end=1e-6)
    assert warmup_cosine(0, **kw) == pytest.approx(1e-6)
    assert warmup_cosine(5, **kw) == pytest.approx(1e-6 + (5e-5 - 1e-6) / 2)  # warm-up midpoint
    assert warmup_cosine(10, **kw) == pytest.approx(5e-5)
    assert warmup_cosine(60, **kw) == pytest.approx((5e-5 + 1e-6) / 2)  # cosine midpoint
    assert warmup_cosine(35, **kw) == pytest.approx(1e-6 + (5e-5 - 1e-6) * (1 + math.cos(math.pi / 4)) / 2)
    assert warmup_cosine(110, **kw) == pytest.approx(1e-6)
    assert warmup_cosine(500, **kw) == pytest.approx(1e-6)
    vals = [warmup_cosine(s, **kw) for s in range(111)]
    assert all(b >= a for a, b in zip(vals[:10], vals[1:11]))  # rising during warm-up
    assert all(b <= a for a, b in zip(vals[10:], vals[11:]))  # falling afterwards
    assert warmup_cosine(0, 100, 0, peak=1.0) == 1.0  # no warm-up starts at the peak


def test_warmup_cosine_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warm"):
        warmup_cosine(0, 10, 10, 1.0)
    with pytest.raises(ValueError, match="total"):
        warmup_cosine(0, 0, 0, 1.0)
    with pytest.raises(ValueError, match="step"):
        warmup_cosine(-1, 10, 2, 1.0)


def test_linear_and_constant():
    assert linear(0, 1000, 0.996, 1.0) == pytest.approx(0.996)
    assert linear(500, 1000, 0.996, 1.0) == pytest.approx(0.998)
    assert linear(1000, 1000, 0.996, 1.0) == 1.0
    assert linear(2000, 1000, 0.996, 1.0) == 1.0
    vals = [linear(s, 50, 0.996, 1.0) for s in range(60)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert constant(123, 0.5) == 0.5
    assert set(SCHEDULES) == {"warmup_cosine", "linear", "constant"}
