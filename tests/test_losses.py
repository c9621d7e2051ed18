"""MLM and JEPA losses and JEPA targets against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from predrecon.objectives.jepa import JEPA_LOSSES, build_targets, jepa_loss
from predrecon.objectives.mlm import mlm_accuracy, mlm_loss


# ----------------------------------------------------------------------------- MLM
def test_mlm_loss_closed_form_uniform_logits():
    logits = torch.zeros(2, 3, 8)
    labels = torch.tensor([[1, -100, 2], [-100, -100, 7]])
    assert mlm_loss(logits, labels).item() == pytest.approx(math.log(8), rel=1e-6)


def test_mlm_loss_equals_mean_over_real_slots():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    labels = torch.randint(0, 11, (3, 5))
    labels[0, :2] = -100
    labels[2, 4] = -100
    valid = labels != -100
    want = F.cross_entropy(logits[valid], labels[valid])
    torch.testing.assert_close(mlm_loss(logits, labels), want)
    # padded slots' logits do not matter
    logits2 = logits.clone()
    logits2[~valid] = 1e3
    torch.testing.assert_close(mlm_loss(logits2, labels), want)


def test_mlm_loss_no_real_slot_is_zero_with_zero_grad():
    logits = torch.randn(2, 4, 6, requires_grad=True)
    labels = torch.full((2, 4), -100)
    loss = mlm_loss(logits, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_mlm_loss_is_fp32_for_bf16_logits():
    torch.manual_seed(0)
    logits = torch.randn(4, 9).bfloat16()
    labels = torch.randint(0, 9, (4,))
    loss = mlm_loss(logits, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(logits.float(), labels))


def test_mlm_loss_shape_mismatch():
    with pytest.raises(ValueError, match="labels"):
        mlm_loss(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_mlm_accuracy():
    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])  # argmax 1, 0, 1
    labels = torch.tensor([[1, 1, -100]])
    assert mlm_accuracy(logits, labels).item() == pytest.approx(0.5)
    assert mlm_accuracy(logits, torch.full((1, 3), -100)).item() == 0.0


# ----------------------------------------------------------------------------- JEPA targets
def test_build_targets_single_layer_is_param_free_layernorm():
    torch.manual_seed(0)
    h = torch.randn(2, 5, 8) * 3 + 1
    t = build_targets((h,), 1)
    torch.testing.assert_close(t, F.layer_norm(h, (8,)))
    assert t.mean(-1).abs().max() < 1e-5
    torch.testing.assert_close(t.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-4, rtol=1e-4)
    # uses the LAST entry of a longer tuple
    torch.testing.assert_close(build_targets((torch.randn(2, 5, 8), h), 1), t)


def test_build_targets_top_k_mean_of_normalised_layers():
    torch.manual_seed(0)
    hs = tuple(torch.randn(2, 4, 6) * (i + 1) for i in range(4))
    t = build_targets(hs, 2)
    want = (F.layer_norm(hs[2], (6,)) + F.layer_norm(hs[3], (6,))) / 2
    torch.testing.assert_close(t, want)
    # per-layer normalisation: rescaling one layer changes nothing
    hs2 = hs[:3] + (hs[3] * 100.0,)
    torch.testing.assert_close(build_targets(hs2, 2), want, atol=1e-5, rtol=1e-5)


def test_build_targets_fp32_detached_and_checked():
    h = torch.randn(2, 3, 4, requires_grad=True)
    t = build_targets((h.bfloat16(),), 1)
    assert t.dtype == torch.float32 and not t.requires_grad
    with pytest.raises(ValueError, match="num_layers"):
        build_targets((h, h), 3)
    with pytest.raises(ValueError, match="num_layers"):
        build_targets((h,), 0)


# ----------------------------------------------------------------------------- JEPA loss
def test_cosine_loss_closed_forms():
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    pred = torch.stack([e0, e0, e0 * 3])[None]  # (1, 3, 2)
    target = torch.stack([e0 * 2, -e0, e1])[None]
    valid = torch.ones(1, 3, dtype=torch.bool)
    # per slot: identical direction 0, opposite 2, orthogonal 1 -> mean 1
    assert jepa_loss(pred, target, valid).item() == pytest.approx(1.0)
    valid[0, 2] = False
    assert jepa_loss(pred, target, valid).item() == pytest.approx(1.0)  # (0 + 2) / 2
    valid[0, 1] = False
    assert jepa_loss(pred, target, valid).item() == pytest.approx(0.0, abs=1e-7)


def test_over_padding_divides_by_all_slots():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    valid = torch.rand(2, 5) > 0.4
    valid[0, 0] = True
    per_slot = 1 - F.cosine_similarity(pred, target, dim=-1)
    assert jepa_loss(pred, target, valid).item() == pytest.approx(per_slot[valid].mean().item(), rel=1e-6)
    # zero-padded slots: cos(0, 0) = 0, so each adds 1 to the cosine loss, 0 to mse
    n_pad = int((~valid).sum())
    assert jepa_loss(pred, target, valid, over_padding=True).item() == pytest.approx(
        (per_slot[valid].sum().item() + n_pad) / 10, rel=1e-6)
    sq = (pred - target).pow(2).mean(-1)
    assert jepa_loss(pred, target, valid, kind="mse", over_padding=True).item() == pytest.approx(
        sq[valid].sum().item() / 10, rel=1e-6)


@pytest.mark.parametrize("kind,ref", [
    ("mse", lambda p, t: F.mse_loss(p, t)),
    ("smooth_l1", lambda p, t: F.smooth_l1_loss(p, t, beta=1.0)),
    ("cosine", lambda p, t: (1 - F.cosine_similarity(p, t, dim=-1)).mean()),
])
def test_kinds_match_torch_on_valid_slots(kind, ref):
    torch.manual_seed(0)
    pred, target = torch.randn(3, 4, 5) * 2, torch.randn(3, 4, 5)
    valid = torch.ones(3, 4, dtype=torch.bool)
    valid[1, 2:] = False
    got = jepa_loss(pred, target, valid, kind=kind)
    torch.testing.assert_close(got, ref(pred[valid], target[valid]))
    # padded-slot values (finite) change neither the value nor the gradient of the real slots
    p2 = pred.clone()
    p2[~valid] = 50.0
    p2.requires_grad_(True)
    loss = jepa_loss(p2, target, valid, kind=kind)
    torch.testing.assert_close(loss, got)
    loss.backward()
    assert torch.equal(p2.grad[~valid], torch.zeros_like(p2.grad[~valid]))


def test_jepa_loss_no_valid_slot_is_zero_and_fp32():
    pred = torch.randn(1, 3, 4, requires_grad=True)
    loss = jepa_loss(pred.bfloat16(), torch.randn(1, 3, 4), torch.zeros(1, 3, dtype=torch.bool))
    assert loss.dtype == torch.float32 and loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_jepa_loss_rejects_unknown_kind_and_bad_shapes():
    assert set(JEPA_LOSSES) == {"cosine", "smooth_l1", "mse"}
    x = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="l1"):
        jepa_loss(x, x, torch.ones(1, 2, dtype=torch.bool), kind="l1")
    with pytest.raises(ValueError, match="shapes"):
        jepa_loss(x, x, torch.ones(1, 3, dtype=torch.bool))


def test_instance_norm_targets_use_only_real_tokens():
    from predrecon.objectives.jepa import instance_norm_tokens

    torch.manual_seed(0)
    h = torch.randn(2, 6, 4) * 3 + 5  # a large shared component, as in an anisotropic encoder
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    t = build_targets((h,), 1, norm="instance", token_mask=mask)
    real = t[1, :4]
    torch.testing.assert_close(real.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(real.var(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    h2 = h.clone()
    h2[1, 4:] = 1e4  # padding values never enter the statistics
    torch.testing.assert_close(instance_norm_tokens(h2, mask)[1, :4], real)
    # a component shared by all tokens vanishes, so a constant prediction cannot match the targets
    shared = torch.randn(1, 1, 4).expand(2, 6, 4)
    torch.testing.assert_close(build_targets((h + 50 * shared,), 1, norm="instance", token_mask=mask)[0], t[0],
                               atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="target norm"):
        build_targets((h,), 1, norm="batch")


def test_instance_norm_per_document_equals_the_document_alone():
    """Packed rows: with segment ids every document is normalised with its own statistics, exactly
    as if it were alone in its row; padding never enters them."""
    from predrecon.objectives.jepa import instance_norm_tokens

    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        lens = torch.randint(1, 9, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist()
        T = sum(lens) + 3
        h = torch.randn(1, T, 5, generator=g) * 2 + torch.randn(1, 1, 5, generator=g) * 10
        seg = torch.zeros(1, T, dtype=torch.long)
        start = 0
        for s, n in enumerate(lens, 1):
            seg[0, start:start + n] = s
            start += n
        h[0, start:] += 1e3 * trial  # padding: any value
        real = seg > 0
        out = instance_norm_tokens(h, real, segments=seg)
        start = 0
        for n in lens:
            doc = h[:, start:start + n]
            alone = instance_norm_tokens(doc, torch.ones(1, n, dtype=torch.bool))
            torch.testing.assert_close(out[:, start:start + n], alone, atol=1e-5, rtol=1e-5)
            start += n
        if len(lens) > 1:  # the row-wide statistics differ: the test can fail
            assert not torch.allclose(out[real], instance_norm_tokens(h, real)[real], atol=1e-3)
    t = build_targets((h,), 1, norm="instance", token_mask=real, segments=seg)
    torch.testing.assert_close(t, instance_norm_tokens(h, real, segments=seg))
