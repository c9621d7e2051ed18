"""Loss balancers: combine the per-objective losses into one total.

Every balancer is an ``nn.Module`` called as ``bal(losses, shared_params=None, update=True)``
with ``losses = {"jepa": L_jepa, "mlm": L_mlm}`` (scalar tensors) and returns
``(total, logs)``; ``logs`` holds *detached* tensors and always contains ``lambda`` (the
effective weight of JEPA, ``w_jepa / (w_jepa + w_mlm)``), ``w_jepa`` and ``w_mlm``. Learned
balancers keep their weights as parameters; the trainer puts ``bal.parameters()`` in their own
optimizer group (``optim.balancer_lr``, ``optim.balancer_weight_decay``).

Registry :data:`BALANCERS` (name -> class with ``from_config``):

* ``none``        single objective: ``total = L_task`` (λ = 1 for jepa, 0 for mlm).
* ``fixed``       ``total = λ L_jepa + (1 - λ) L_mlm`` with ``λ = objective.fixed_lambda``.
* ``sigmoid``     the paper: ``λ = σ(w)``, ``w_0 = 0``, same total; ``w`` is trained by the
  optimizer. Since ``∂total/∂w = λ(1-λ)(L_jepa - L_mlm)`` is negative whenever
  ``L_jepa < L_mlm``, gradient descent drives λ -> 1: it minimises, it does not balance.
* ``uncertainty`` Kendall, Gal & Cipolla (2018), "classification" form without the 1/2:
  learned ``s_i = log σ_i²`` (init 0), ``total = Σ_i exp(-s_i) L_i + s_i``; weights
  ``w_i = exp(-s_i) > 0``. (The regression form ``Σ ½ exp(-s_i) L_i + ½ s_i`` is this total
  halved: same stationary point.) ``∂total/∂s_i = 0`` gives ``w_i = 1 / L_i``: every weighted
  loss is driven to 1.
* ``gradnorm``    Chen et al. (2018) with ``α = objective.gradnorm_alpha``: weights
  ``w = T softmax(θ)`` (positive, sum to the number of tasks T, θ_0 = 0). With
  ``G_i = w_i ||∇_W L_i||`` (W = ``shared_params``, e.g. the last shared block),
  ``r_i = L̃_i / mean(L̃)``, ``L̃_i = L_i / L_i(0)`` and the constant target
  ``Ĝ_i = mean(G) r_i^α``, the auxiliary loss is ``aux = Σ_i |G_i - Ĝ_i|``. The returned
  ``total = Σ_i sg(w_i) L_i + (aux - sg(aux))``: its value is the weighted loss, and one
  ``total.backward()`` trains the model through the weighted sum (weights detached) and θ
  through ``aux`` (the gradient norms are computed with ``torch.autograd.grad`` and detached,
  so ``aux`` has gradient w.r.t. θ only; no double backward). ``L_i(0)`` is recorded on the first
  training call with finite losses into a buffer (checkpointed with the state dict). The
  auxiliary term is only built in training mode with gradients enabled and ``update=True``;
  ``shared_params`` are required then. Its extra backward is the cost, so the trainer passes
  ``update=True`` only every ``objective.gradnorm_every`` steps (chosen by step index) and scales
  the balancer's lr by that interval (see ``train.loop.build_optimizer``), so θ moves per step as
  fast as when it is updated every step.

``update`` is ignored by the other balancers (their weights are trained through ``total``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ObjectiveConfig

TASKS: tuple[str, str] = ("jepa", "mlm")


def _check_losses(losses: dict[str, torch.Tensor], tasks: tuple[str, ...], who: str) -> None:
    if set(losses) != set(tasks):
        raise KeyError(f"{who} balancer expects losses {sorted(tasks)}, got {sorted(losses)}")


def _two_task_logs(w_jepa: torch.Tensor, w_mlm: torch.Tensor) -> dict[str, torch.Tensor]:
    w_jepa, w_mlm = w_jepa.detach(), w_mlm.detach()
    return {"lambda": w_jepa / (w_jepa + w_mlm), "w_jepa": w_jepa, "w_mlm": w_mlm}


def _weight_logs(tasks: tuple[str, ...], w: torch.Tensor) -> dict[str, torch.Tensor]:
    """``w_<task>`` for every task, ``lambda = w_jepa / (w_jepa + w_mlm)`` (detached)."""
    named = {t: wi.detach() for t, wi in zip(tasks, w)}
    logs = _two_task_logs(named["jepa"], named["mlm"])
    logs.update({f"w_{t}": wi for t, wi in named.items()})
    return logs


def _check_tasks(tasks: tuple[str, ...], who: str) -> tuple[str, ...]:
    tasks = tuple(tasks)
    if not set(TASKS) <= set(tasks) or len(set(tasks)) != len(tasks):
        raise ValueError(f"{who} balancer: tasks must be distinct and include {TASKS}, got {tasks}")
    return tasks


class Balancer(nn.Module):
    """Base class: ``forward(losses, shared_params=None) -> (total, logs)``."""

    tasks: tuple[str, ...] = TASKS

    @classmethod
    def from_config(cls, cfg: ObjectiveConfig) -> Balancer:
        return cls()


class IdentityBalancer(Balancer):
    """Single-objective runs: ``total = losses[task]``; λ = 1 for ``jepa``, 0 for ``mlm``."""

    def __init__(self, task: str):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"objective.kind: single-objective task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.tasks = (task,)

    @classmethod
    def from_config(cls, cfg: ObjectiveConfig) -> IdentityBalancer:
        return cls(cfg.kind)

    def forward(self, losses: dict[str, torch.Tensor], shared_params: list[torch.Tensor] | None = None,
                update: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _check_losses(losses, self.tasks, "none")
        loss = losses[self.task]
        one, zero = torch.ones_like(loss).detach(), torch.zeros_like(loss).detach()
        w_jepa, w_mlm = (one, zero) if self.task == "jepa" else (zero, one)
        return loss, {"lambda": w_jepa, "w_jepa": w_jepa, "w_mlm": w_mlm}


class FixedBalancer(Balancer):
    """``total = λ L_jepa + (1 - λ) L_mlm`` with a constant λ."""

    def __init__(self, lam: float = 0.5):
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"objective.fixed_lambda must be in [0, 1], got {lam}")
        self.lam = float(lam)

    @classmethod
    def from_config(cls, cfg: ObjectiveConfig) -> FixedBalancer:
        return cls(cfg.fixed_lambda)

    def forward(self, losses: dict[str, torch.Tensor], shared_params: list[torch.Tensor] | None = None,
                update: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _check_losses(losses, TASKS, "fixed")
        lj, lm = losses["jepa"], losses["mlm"]
        total = self.lam * lj + (1.0 - self.lam) * lm
        lam = torch.full_like(lj, self.lam).detach()
        return total, _two_task_logs(lam, 1.0 - lam)


class SigmoidBalancer(Balancer):
    """The paper's learnable weight: ``λ = σ(w)``, ``total = λ L_jepa + (1 - λ) L_mlm``."""

    def __init__(self, init: float = 0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(init)))

    def forward(self, losses: dict[str, torch.Tensor], shared_params: list[torch.Tensor] | None = None,
                update: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _check_losses(losses, TASKS, "sigmoid")
        lam = torch.sigmoid(self.w)
        total = lam * losses["jepa"] + (1.0 - lam) * losses["mlm"]
        logs = _two_task_logs(lam, 1.0 - lam)
        logs["balancer_w"] = self.w.detach().clone()  # a copy: FSDP2 frees gathered parameters
        return total, logs


class UncertaintyBalancer(Balancer):
    """Homoscedastic-uncertainty weighting: ``total = Σ exp(-s_i) L_i + s_i`` (see module doc)."""

    def __init__(self, tasks: tuple[str, ...] = TASKS):
        super().__init__()
        self.tasks = _check_tasks(tasks, "uncertainty")
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))  # s_i = log σ_i²

    def forward(self, losses: dict[str, torch.Tensor], shared_params: list[torch.Tensor] | None = None,
                update: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _check_losses(losses, self.tasks, "uncertainty")
        L = torch.stack([losses[t] for t in self.tasks]).float()  # (T,)
        w = torch.exp(-self.log_vars)  # (T,)
        total = (w * L + self.log_vars).sum()
        logs = _weight_logs(self.tasks, w)
        for t, s in zip(self.tasks, self.log_vars):
            logs[f"s_{t}"] = s.detach().clone()  # a copy: FSDP2 frees gathered parameters
        return total, logs


class GradNormBalancer(Balancer):
    """GradNorm (Chen et al., 2018) with asymmetry ``alpha`` (see module doc for the exact form)."""

    def __init__(self, alpha: float = 1.5, tasks: tuple[str, ...] = TASKS):
        super().__init__()
        if alpha < 0:
            raise ValueError(f"objective.gradnorm_alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.tasks = _check_tasks(tasks, "gradnorm")
        self.logits = nn.Parameter(torch.zeros(len(self.tasks)))  # w = T softmax(logits)
        self.register_buffer("initial_losses", torch.zeros(len(self.tasks)))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_config(cls, cfg: ObjectiveConfig) -> GradNormBalancer:
        return cls(cfg.gradnorm_alpha)

    def weights(self) -> torch.Tensor:
        """Current task weights (T,), positive, summing to T."""
        return len(self.tasks) * torch.softmax(self.logits, dim=0)

    def forward(self, losses: dict[str, torch.Tensor], shared_params: list[torch.Tensor] | None = None,
                update: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _check_losses(losses, self.tasks, "gradnorm")
        L = torch.stack([losses[t] for t in self.tasks]).float()  # (T,)
        w = self.weights()  # (T,)
        total = (w.detach() * L).sum()
        logs = _weight_logs(self.tasks, w)
        if not (self.training and torch.is_grad_enabled() and L.requires_grad):
            return total, logs
        if update:
            if not shared_params:
                raise ValueError("gradnorm balancer needs shared_params (e.g. the last shared block's "
                                 "parameters) in training mode")
            g = torch.stack([self._grad_norm(losses[t], t, shared_params) for t in self.tasks])  # (T,)
        with torch.no_grad():  # L_i(0): the first finite training losses (no host sync)
            record = ~self.initialised & torch.isfinite(L).all()
            self.initial_losses.copy_(torch.where(record, L.detach(), self.initial_losses))
            self.initialised.logical_or_(record)
        if not update:  # between updates the weights stay as they are
            return total, logs
        with torch.no_grad():
            ratio = L.detach() / self.initial_losses.clamp_min(1e-12)  # L̃_i
            rel = ratio / ratio.mean()  # r_i
        G = w * g  # (T,): gradient only w.r.t. the weights
        target = (G.mean() * rel.pow(self.alpha)).detach()
        aux = (G - target).abs().sum()
        total = total + (aux - aux.detach())
        logs["gradnorm_aux"] = aux.detach()
        for t, gi in zip(self.tasks, G):
            logs[f"gradnorm_G_{t}"] = gi.detach()
        return total, logs

    @staticmethod
    def _grad_norm(loss: torch.Tensor, name: str, params: list[torch.Tensor]) -> torch.Tensor:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        grads = [g for g in grads if g is not None]
        if not grads:
            raise ValueError(f"gradnorm: loss {name!r} does not depend on any of the shared_params")
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


BALANCERS: dict[str, type[Balancer]] = {
    "none": IdentityBalancer,
    "fixed": FixedBalancer,
    "sigmoid": SigmoidBalancer,
    "uncertainty": UncertaintyBalancer,
    "gradnorm": GradNormBalancer,
}


def build_balancer(objective_cfg: ObjectiveConfig) -> Balancer:
    """The balancer for ``objective_cfg``: ``none`` for single-objective kinds (``mlm``/``jepa``),
    else ``BALANCERS[objective.balancer]``. Raises ValueError naming the key for unknown names."""
    if objective_cfg.kind in ("mlm", "jepa"):
        return IdentityBalancer.from_config(objective_cfg)
    name = objective_cfg.balancer
    if name not in BALANCERS or name == "none":
        known = ", ".join(k for k in BALANCERS if k != "none")
        raise ValueError(f"objective.balancer: unknown balancer {name!r} for a hybrid run (known: {known})")
    return BALANCERS[name].from_config(objective_cfg)
