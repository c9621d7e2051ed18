"""The chunked linear + cross-entropy equals the plain logits path (loss and every gradient)."""

import pytest
import torch
import torch.nn.functional as F

from predrecon.model.heads import MLMHead
from predrecon.objectives.mlm import linear_cross_entropy, mlm_loss


def _case(n=37, d=16, v=53, ignored=0.3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=dtype, requires_grad=True)
    lab = torch.randint(v, (n,), generator=g)
    lab[torch.rand(n, generator=g) < ignored] = -100
    return x, w, b, lab


def _grads(loss, *ts):
    return torch.autograd.grad(loss, ts)


@pytest.mark.parametrize("chunk", [1, 5, 16, 37, 1000])
def test_loss_and_gradients_equal_the_plain_path(chunk):
    x, w, b, lab = _case()
    ref = F.cross_entropy(x @ w.T + b, lab, ignore_index=-100)
    got = linear_cross_entropy(x, w, b, lab, chunk=chunk)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    for g_ref, g_got in zip(_grads(ref, x, w, b), _grads(got * 2.5, x, w, b)):  # upstream gradient scales
        torch.testing.assert_close(g_got, 2.5 * g_ref, rtol=1e-5, atol=1e-7)


def test_fp32_inputs_match_within_fp32_tolerance():
    x, w, b, lab = (t.detach().float().requires_grad_(t.is_floating_point()) if t.is_floating_point() else t
                    for t in _case(n=64, d=32, v=300, seed=1))
    ref = F.cross_entropy(x @ w.T + b, lab, ignore_index=-100)
    got = linear_cross_entropy(x, w, b, lab, chunk=10)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for g_ref, g_got in zip(_grads(ref, x, w, b), _grads(got, x, w, b)):
        torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-6)


def test_no_label_gives_zero_and_zero_gradients():
    x, w, b, lab = _case(ignored=1.1)
    got = linear_cross_entropy(x, w, b, lab, chunk=8)
    assert got.item() == 0.0
    assert all(bool((g == 0).all()) for g in _grads(got, x, w, b))


def test_without_grad_and_shape_errors():
    x, w, b, lab = _case()
    with torch.no_grad():
        got = linear_cross_entropy(x, w, b, lab, chunk=4)
    assert not got.requires_grad
    assert got.item() == pytest.approx(F.cross_entropy(x @ w.T + b, lab, ignore_index=-100).item(), rel=1e-6)
    with pytest.raises(ValueError, match="disagree"):
        linear_cross_entropy(x, w[:, :3], b, lab)


def test_bf16_autocast_is_close_to_the_plain_bf16_path():
    x, w, b, lab = (t.detach().float().requires_grad_(True) if t.is_floating_point() else t
                    for t in _case(n=48, d=32, v=200, seed=2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy((x @ w.T + b).float(), lab, ignore_index=-100)
        got = linear_cross_entropy(x, w, b, lab, chunk=7)
    assert got.item() == pytest.approx(ref.item(), rel=2e-2)
    gr, gg = _grads(ref, x, w, b), _grads(got, x, w, b)
    for a, c in zip(gr, gg):
        assert a.dtype == c.dtype == torch.float32
        assert float((a - c).norm() / a.norm()) < 3e-2


@pytest.mark.parametrize("tied", [False, True])
def test_head_loss_equals_logits_then_mlm_loss(tied):
    torch.manual_seed(0)
    V, Vp, D = 50, 64, 16
    emb = torch.nn.Embedding(Vp, D) if tied else None
    head = MLMHead(D, Vp, V, tie_to=emb).double()
    hidden = torch.randn(3, 10, D, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[1, 4, 0], [2, 3, 9], [0, 0, 0]])
    labels = torch.tensor([[5, 49, -100], [0, 7, 8], [-100, -100, -100]])
    logits = head(hidden, index)
    ref = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)  # fp64 reference
    assert mlm_loss(logits, labels).item() == pytest.approx(ref.item(), rel=1e-6)
    params = [hidden, *head.parameters()]
    g_ref = torch.autograd.grad(ref, params)
    got = head.loss(hidden, index, labels, chunk=2)
    g_got = torch.autograd.grad(got, params)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, c in zip(g_ref, g_got):
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-7)
    assert bool((g_got[-1][V:] == 0).all())  # padded decoder rows get no gradient


def test_padded_rows_get_zero_gradient_and_are_never_scored():
    x, w, b, lab = _case(v=53)
    lab = lab.clamp(max=40)  # labels inside the first 41 classes
    ref = F.cross_entropy(x @ w[:41].T + b[:41], lab, ignore_index=-100)
    got = linear_cross_entropy(x, w, b, lab, chunk=6, num_classes=41)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    gw, gb = _grads(got, w, b)
    assert gw.shape == w.shape and gb.shape == b.shape
    assert bool((gw[41:] == 0).all()) and bool((gb[41:] == 0).all())
    rw, rb = _grads(ref, w, b)
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gb, rb)
    with pytest.raises(ValueError, match="num_classes"):
        linear_cross_entropy(x, w, b, lab, num_classes=54)


def test_weight_gradient_handed_over_once():
    """The weight gradient is scaled in place and given to autograd: a backward that needs only
    x's gradient (GradNorm's autograd.grad) leaves it, a second weight backward is refused."""
    x, w, b, lab = _case()
    got = linear_cross_entropy(x, w, b, lab, chunk=8)
    (gx,) = torch.autograd.grad(got * 3.0, x, retain_graph=True)
    got.backward(retain_graph=True)
    ref = F.cross_entropy(x @ w.T + b, lab, ignore_index=-100)
    rx, rw = _grads(ref, x, w)
    torch.testing.assert_close(gx, 3.0 * rx)
    torch.testing.assert_close(w.grad, rw)  # scaled once, by 1
    with pytest.raises(RuntimeError, match="second backward"):
        got.backward()


def test_weight_gradient_by_autograd_grad_is_handed_over_too():
    x, w, b, lab = _case()
    got = linear_cross_entropy(x, w, b, lab, chunk=8)
    (gw,) = torch.autograd.grad(got * 0.5, w, retain_graph=True)
    (rw,) = _grads(F.cross_entropy(x @ w.T + b, lab, ignore_index=-100), w)
    torch.testing.assert_close(gw, 0.5 * rw)
    with pytest.raises(RuntimeError, match="second backward"):
        got.backward()


def test_without_bias_equals_the_plain_path():
    x, w, _, lab = _case()
    ref = F.cross_entropy(x @ w.T, lab, ignore_index=-100)
    got = linear_cross_entropy(x, w, None, lab, chunk=9)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, c in zip(_grads(ref, x, w), _grads(got, x, w)):
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-7)


def test_without_the_engine_query_the_weight_gradient_is_a_scaled_copy(monkeypatch):
    """Where torch cannot say whether the weight's gradient is wanted, every backward gets a
    scaled copy (so a second backward is correct too, not refused)."""
    monkeypatch.delattr(torch._C, "_will_engine_execute_node")
    x, w, b, lab = _case()
    got = linear_cross_entropy(x, w, b, lab, chunk=8)
    (rw,) = _grads(F.cross_entropy(x @ w.T + b, lab, ignore_index=-100), w)
    (g1,) = torch.autograd.grad(got * 2.0, w, retain_graph=True)
    (g2,) = torch.autograd.grad(got * 0.5, w)
    torch.testing.assert_close(g1, 2.0 * rw)
    torch.testing.assert_close(g2, 0.5 * rw)


def test_fp16_gradients_do_not_flush_to_zero():
    """Under fp16 autocast the gradients are made in the forward, before the GradScaler's factor:
    softmax / count (≈ 1 / (V n) = 3e-8 here) is below fp16's smallest subnormal. Dividing by the
    count after the fp16 products keeps them: within 2e-3 of fp32 (measured 3e-4; the old order
    lost 18 % of dL/dx and 6 % of dL/dW)."""
    from predrecon.objectives.mlm import _ChunkedLinearCE
    g = torch.Generator().manual_seed(0)
    n, d, v = 2048, 16, 16384
    x, w = torch.randn(n, d, generator=g), torch.randn(v, d, generator=g) * 0.02
    lab = torch.randint(v, (n,), generator=g)

    def grads(cdt):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        b = torch.zeros(v, requires_grad=True)
        (_ChunkedLinearCE.apply(xx, ww, b, lab, 1024, cdt, True, v) * 65536.0).backward()  # a GradScaler's scale
        return [t.grad / 65536.0 for t in (xx, ww, b)]

    for got, ref in zip(grads(torch.float16), grads(torch.float32)):
        assert float((got - ref).norm() / ref.norm()) < 2e-3
