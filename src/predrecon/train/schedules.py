"""Schedules as pure functions of the step (resume needs no replay).

``step`` counts optimizer steps from 0; values past ``total`` stay at the end value.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def _check(step: int, total: int) -> None:
    if total <= 0:
        raise ValueError(f"schedule total must be > 0, got {total}")
    if step < 0:
        raise ValueError(f"schedule step must be >= 0, got {step}")


def warmup_cosine(step: int, total: int, warmup: int, peak: float, start: float = 0.0,
                  end: float = 0.0) -> float:
    """Linear warm-up from ``start`` (step 0) to ``peak`` (step ``warmup``), then half-cosine
    from ``peak`` to ``end`` (step ``total``, and after).

    For ``warmup <= step <= total``: ``end + (peak - end) * (1 + cos(pi * p)) / 2`` with
    ``p = (step - warmup) / (total - warmup)``. Requires ``0 <= warmup < total``.
    """
    _check(step, total)
    if not 0 <= warmup < total:
        raise ValueError(f"warm-up must satisfy 0 <= warmup < total, got warmup={warmup}, total={total}")
    if step < warmup:
        return start + (peak - start) * step / warmup
    p = min(1.0, (step - warmup) / (total - warmup))
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * p))


def linear(step: int, total: int, start: float, end: float) -> float:
    """``start + (end - start) * min(1, step / total)`` (e.g. EMA momentum 0.996 -> 1.0)."""
    _check(step, total)
    return start + (end - start) * min(1.0, step / total)


def constant(step: int, value: float) -> float:
    """``value`` at every step."""
    if step < 0:
        raise ValueError(f"schedule step must be >= 0, got {step}")
    return value


SCHEDULES: dict[str, Callable[..., float]] = {
    "warmup_cosine": warmup_cosine,
    "linear": linear,
    "constant": constant,
}
