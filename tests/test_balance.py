"""Balancers: arithmetic, learning dynamics (closed-form stationary points), logs, state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from predrecon.config import ObjectiveConfig
from predrecon.objectives.balance import (
    BALANCERS,
    FixedBalancer,
    GradNormBalancer,
    IdentityBalancer,
    SigmoidBalancer,
    UncertaintyBalancer,
    build_balancer,
)
from predrecon.train.schedules import warmup_cosine


def const_losses(lj: float, lm: float) -> dict[str, torch.Tensor]:
    return {"jepa": torch.tensor(lj), "mlm": torch.tensor(lm)}


def assert_logs(logs: dict[str, torch.Tensor]) -> None:
    assert {"lambda", "w_jepa", "w_mlm"} <= set(logs)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in logs.values())


# ----------------------------------------------------------------------------- registry
def test_registry_and_build():
    assert set(BALANCERS) == {"none", "fixed", "sigmoid", "uncertainty", "gradnorm"}
    for name, cls in [("fixed", FixedBalancer), ("sigmoid", SigmoidBalancer),
                      ("uncertainty", UncertaintyBalancer), ("gradnorm", GradNormBalancer)]:
        assert type(build_balancer(ObjectiveConfig(kind="hybrid", balancer=name))) is cls
    for kind in ("mlm", "jepa"):
        bal = build_balancer(ObjectiveConfig(kind=kind, balancer="sigmoid"))
        assert isinstance(bal, IdentityBalancer) and bal.task == kind
    with pytest.raises(ValueError, match="objective.balancer"):
        build_balancer(ObjectiveConfig(kind="hybrid", balancer="magic"))
    with pytest.raises(KeyError, match="mlm"):
        SigmoidBalancer()({"jepa": torch.tensor(1.0)})


def test_identity():
    bal = IdentityBalancer("mlm")
    total, logs = bal({"mlm": torch.tensor(3.0)})
    assert total.item() == 3.0 and logs["lambda"].item() == 0.0 and logs["w_mlm"].item() == 1.0
    total, logs = IdentityBalancer("jepa")({"jepa": torch.tensor(0.7)})
    assert total.item() == pytest.approx(0.7) and logs["lambda"].item() == 1.0
    assert_logs(logs)
    with pytest.raises(KeyError):
        IdentityBalancer("jepa")(const_losses(1.0, 2.0))


def test_fixed():
    total, logs = FixedBalancer(0.3)(const_losses(1.0, 5.0))
    assert total.item() == pytest.approx(0.3 * 1.0 + 0.7 * 5.0)
    assert logs["lambda"].item() == pytest.approx(0.3) and logs["w_mlm"].item() == pytest.approx(0.7)
    assert list(FixedBalancer(0.3).parameters()) == []
    with pytest.raises(ValueError, match="fixed_lambda"):
        FixedBalancer(1.5)


# ----------------------------------------------------------------------------- sigmoid
def test_sigmoid_arithmetic_and_gradient():
    bal = SigmoidBalancer()
    total, logs = bal(const_losses(1.0, 5.0))
    assert total.item() == pytest.approx(3.0) and logs["lambda"].item() == pytest.approx(0.5)
    with torch.no_grad():
        bal.w.fill_(math.log(3.0))  # sigmoid = 0.75
    total, logs = bal(const_losses(1.0, 5.0))
    assert total.item() == pytest.approx(0.75 * 1 + 0.25 * 5)
    total.backward()
    # d total / d w = λ (1 - λ) (L_jepa - L_mlm)
    assert bal.w.grad.item() == pytest.approx(0.75 * 0.25 * (1.0 - 5.0))
    assert_logs(logs)


def test_sigmoid_minimises_instead_of_balancing():
    """PAPER.md: with L_JEPA < L_MLM, AdamW on w drives λ -> 1 (MLM switched off)."""
    bal = SigmoidBalancer()
    opt = torch.optim.AdamW(bal.parameters(), lr=0.05, weight_decay=0.05)
    lams = []
    for _ in range(300):
        total, logs = bal(const_losses(0.4, 6.0))
        opt.zero_grad()
        total.backward()
        opt.step()
        lams.append(logs["lambda"].item())
    assert lams[0] == pytest.approx(0.5)
    assert all(b >= a for a, b in zip(lams, lams[1:]))  # monotone
    assert lams[-1] > 0.97  # and still rising: w grows without bound
    assert lams[-1] > lams[-50]


# ----------------------------------------------------------------------------- uncertainty
def test_uncertainty_arithmetic():
    bal = UncertaintyBalancer()
    total, logs = bal(const_losses(2.0, 3.0))
    assert total.item() == pytest.approx(5.0)  # s = 0: L_j + L_m
    with torch.no_grad():
        bal.log_vars.copy_(torch.tensor([math.log(2.0), -1.0]))
    total, logs = bal(const_losses(2.0, 3.0))
    assert total.item() == pytest.approx(2.0 / 2.0 + math.log(2.0) + math.e * 3.0 - 1.0, rel=1e-6)
    assert logs["w_jepa"].item() == pytest.approx(0.5)
    assert logs["w_mlm"].item() == pytest.approx(math.e, rel=1e-6)
    assert logs["lambda"].item() == pytest.approx(0.5 / (0.5 + math.e), rel=1e-6)
    assert_logs(logs)


def test_uncertainty_converges_to_inverse_losses():
    """Stationary point of exp(-s) L + s is exp(-s) = 1 / L; weights stay positive and finite."""
    lj, lm = 0.4, 6.0
    bal = UncertaintyBalancer()
    opt = torch.optim.AdamW(bal.parameters(), lr=0.1, weight_decay=0.0)
    steps = 600
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, steps, 0, peak=0.1, end=0.0)
        total, logs = bal(const_losses(lj, lm))
        opt.zero_grad()
        total.backward()
        opt.step()
        w = torch.stack([logs["w_jepa"], logs["w_mlm"]])
        assert torch.isfinite(w).all() and (w > 0).all()
    _, logs = bal(const_losses(lj, lm))
    assert logs["w_jepa"].item() == pytest.approx(1 / lj, rel=0.02)
    assert logs["w_mlm"].item() == pytest.approx(1 / lm, rel=0.02)
    assert logs["lambda"].item() == pytest.approx(lm / (lj + lm), rel=0.02)  # balanced, not 1


# ----------------------------------------------------------------------------- gradnorm
class TwoTask(nn.Module):
    """Shared linear layer, two linear heads; task losses differ in scale."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(4, 8)
        self.h1, self.h2 = nn.Linear(8, 1), nn.Linear(8, 1)
        self.x = torch.randn(64, 4)
        self.y1, self.y2 = torch.randn(64, 1), torch.randn(64, 1)

    def losses(self) -> dict[str, torch.Tensor]:
        z = torch.tanh(self.shared(self.x))
        return {"jepa": 10.0 * (self.h1(z) - self.y1).pow(2).mean(), "mlm": (self.h2(z) - self.y2).pow(2).mean()}


def _grad_norm(loss, params):
    gs = torch.autograd.grad(loss, params, retain_graph=True)
    return torch.sqrt(sum((g ** 2).sum() for g in gs))


def test_gradnorm_arithmetic_and_gradient_routing():
    model = TwoTask()
    bal = GradNormBalancer(alpha=1.5)
    shared = list(model.shared.parameters())
    losses = model.losses()
    g = torch.stack([_grad_norm(losses[t], shared) for t in ("jepa", "mlm")])
    total, logs = bal(losses, shared_params=shared)
    # value = weighted sum with w = (1, 1); initial losses recorded
    assert total.item() == pytest.approx((losses["jepa"] + losses["mlm"]).item(), rel=1e-6)
    torch.testing.assert_close(bal.initial_losses, torch.stack([losses["jepa"], losses["mlm"]]).detach())
    # at the first step r_i = 1, target = mean(G), aux = |g1 - g2|
    assert logs["gradnorm_aux"].item() == pytest.approx(abs(g[0] - g[1]).item(), rel=1e-5)
    assert_logs(logs)
    total.backward()
    # model gradient: through the weighted sum only (weights detached)
    model2 = TwoTask()
    l2 = model2.losses()
    (l2["jepa"] + l2["mlm"]).backward()
    for p, q in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    # weight gradient: d aux / d θ with G = w g, w = 2 softmax(θ), target constant
    theta = torch.zeros(2, requires_grad=True)
    w = 2 * torch.softmax(theta, 0)
    G = w * g.detach()
    (G - G.mean().detach()).abs().sum().backward()
    torch.testing.assert_close(bal.logits.grad, theta.grad)


def test_gradnorm_equalises_gradient_norms_fixed_model():
    """Model frozen, L_jepa = 10 f: rates equal, so GradNorm drives w_j g_j = w_m g_m,
    i.e. w = 2 * (1/11, 10/11) when g_j = 10 g_m."""
    model = TwoTask()
    model.requires_grad_(True)
    bal = GradNormBalancer(alpha=1.5)
    opt = torch.optim.AdamW(bal.parameters(), lr=0.05, weight_decay=0.0)
    shared = [model.shared.weight]
    steps = 250
    for step in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = warmup_cosine(step, steps, 0, peak=0.05, end=0.0)
        total, logs = bal(model.losses(), shared_params=shared)
        opt.zero_grad()
        total.backward()
        opt.step()
    w = bal.weights().detach()
    assert w.sum().item() == pytest.approx(2.0)
    assert w[0].item() == pytest.approx(2 / 11, rel=0.03)
    assert w[1].item() == pytest.approx(20 / 11, rel=0.03)
    G = torch.stack([logs["gradnorm_G_jepa"], logs["gradnorm_G_mlm"]])
    assert (G[0] / G[1]).item() == pytest.approx(1.0, abs=0.05)


def test_gradnorm_balances_while_training_the_model():
    """Joint training: the ratio of weighted gradient norms moves from ~10 towards the
    GradNorm target (r_j / r_m)^alpha; weights stay positive and sum to 2."""
    model = TwoTask()
    bal = GradNormBalancer(alpha=0.0)  # alpha = 0: target is equal gradient norms
    opt = torch.optim.SGD(model.parameters(), lr=0.005)
    opt_w = torch.optim.Adam(bal.parameters(), lr=0.02)
    shared = [model.shared.weight]
    ratios = []
    for _ in range(300):
        total, logs = bal(model.losses(), shared_params=shared)
        opt.zero_grad()
        opt_w.zero_grad()
        total.backward()
        opt.step()
        opt_w.step()
        ratios.append((logs["gradnorm_G_jepa"] / logs["gradnorm_G_mlm"]).item())
    assert ratios[0] > 3.0
    assert abs(math.log(sum(ratios[-20:]) / 20)) < 0.15
    w = bal.weights().detach()
    assert (w > 0).all() and w.sum().item() == pytest.approx(2.0)


def test_gradnorm_modes_and_errors():
    model = TwoTask()
    bal = GradNormBalancer()
    with pytest.raises(ValueError, match="shared_params"):
        bal(model.losses())
    with pytest.raises(ValueError, match="does not depend"):
        bal(model.losses(), shared_params=[nn.Parameter(torch.zeros(2))])
    bal.eval()
    total, logs = bal(model.losses())  # no aux in eval mode, no shared params needed
    assert "gradnorm_aux" not in logs and not bool(bal.initialised)
    with torch.no_grad():
        bal.train()(model.losses())
    assert not bool(bal.initialised)


def test_gradnorm_records_initial_losses_once():
    model = TwoTask()
    bal = GradNormBalancer()
    shared = list(model.shared.parameters())
    first = model.losses()
    bal(first, shared_params=shared)
    bal({k: v * 0.5 for k, v in model.losses().items()}, shared_params=shared)
    torch.testing.assert_close(bal.initial_losses, torch.stack([first["jepa"], first["mlm"]]).detach())


# ----------------------------------------------------------------------------- state
def test_state_dict_round_trip():
    model = TwoTask()
    gn = GradNormBalancer()
    gn(model.losses(), shared_params=list(model.shared.parameters()))
    with torch.no_grad():
        gn.logits.copy_(torch.tensor([0.3, -0.1]))
    unc, sig = UncertaintyBalancer(), SigmoidBalancer()
    with torch.no_grad():
        unc.log_vars.copy_(torch.tensor([0.5, -2.0]))
        sig.w.fill_(1.25)
    for src, fresh in [(gn, GradNormBalancer()), (unc, UncertaintyBalancer()), (sig, SigmoidBalancer())]:
        fresh.load_state_dict(src.state_dict())
        for k, v in src.state_dict().items():
            assert torch.equal(fresh.state_dict()[k], v), k
    assert set(gn.state_dict()) == {"logits", "initial_losses", "initialised"}
    fresh = GradNormBalancer()
    fresh.load_state_dict(gn.state_dict())
    before = fresh.initial_losses.clone()
    fresh({k: v * 3 for k, v in model.losses().items()}, shared_params=list(model.shared.parameters()))
    assert torch.equal(fresh.initial_losses, before)  # restored, not re-recorded


def test_gradnorm_updates_only_when_asked():
    """``update=False``: the plain weighted sum, no auxiliary term, no weight gradient; the
    initial losses are still recorded by the first training call."""
    model = TwoTask()
    bal = GradNormBalancer(alpha=1.5)
    shared = list(model.shared.parameters())
    first = model.losses()
    total, logs = bal(first, shared_params=None, update=False)
    assert "gradnorm_aux" not in logs
    total.backward()
    assert bal.logits.grad is None
    torch.testing.assert_close(bal.initial_losses, torch.stack([first["jepa"], first["mlm"]]).detach())
    total, logs = bal(model.losses(), shared_params=shared, update=True)
    total.backward()
    assert "gradnorm_aux" in logs and bal.logits.grad is not None and bal.logits.grad.abs().sum() > 0


def test_gradnorm_initial_losses_skip_a_nonfinite_first_call():
    model = TwoTask()
    bal = GradNormBalancer()
    bal({k: v * float("nan") for k, v in model.losses().items()}, update=False)
    assert not bool(bal.initialised)
    good = model.losses()
    bal(good, update=False)
    assert bool(bal.initialised)
    torch.testing.assert_close(bal.initial_losses, torch.stack([good["jepa"], good["mlm"]]).detach())


def _gradnorm_trajectory(every: int, lr: float, steps: int = 200) -> float:
    """w_jepa after ``steps`` training steps of the frozen TwoTask model (GradNorm's target:
    w_jepa = 2/11) with the weights updated every ``every`` steps by AdamW at ``lr``."""
    model = TwoTask()
    bal = GradNormBalancer(alpha=1.5)
    opt = torch.optim.AdamW(bal.parameters(), lr=lr, weight_decay=0.0)
    shared = [model.shared.weight]
    for step in range(steps):
        update = (step + 1) % every == 0
        total, _ = bal(model.losses(), shared_params=shared if update else None, update=update)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()  # parameters without a gradient (between updates) are left alone
    return float(bal.weights()[0].detach())


def test_gradnorm_lr_scaled_by_the_interval_moves_as_far_as_every_step_updates():
    """Updated every 10 steps, GradNorm with the every-step lr barely moves (the 0.50 -> 0.52
    of docs/balancing.md); with lr x 10 (what the trainer does) it travels as far as with
    every-step updates."""
    every_step = _gradnorm_trajectory(1, 0.005)
    scaled = _gradnorm_trajectory(10, 0.05)
    unscaled = _gradnorm_trajectory(10, 0.005)
    moved = [1.0 - w for w in (every_step, scaled, unscaled)]  # w_jepa starts at 1
    assert moved[0] > 0.5
    assert moved[1] == pytest.approx(moved[0], rel=0.15)
    assert moved[2] < 0.25 * moved[0]
