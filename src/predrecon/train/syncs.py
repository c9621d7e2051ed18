"""Counting the host syncs of a step: :class:`HostReads`.

On a GPU every read of a tensor's value back to the host stalls the host until the device has
caught up. :func:`~predrecon.train.step.train_step` makes none on an accelerator; the test suite
(on a CPU, forced onto that path) and ``benchmarks/gpu_check.py`` (on a GPU) check it with this
counter. Kept out of the training modules: it uses torch's ``TorchDispatchMode``, a private API.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class HostReads(TorchDispatchMode):
    """While active, counts every read of a tensor's value back to the host
    (``aten._local_scalar_dense``: ``.item()``, ``int()``, ``bool()``, ``float()`` of a tensor; on a
    GPU each one waits for the device) in ``hits``, keyed by the innermost predrecon source line
    that caused it (``"?"`` when none did)."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        if func is torch.ops.aten._local_scalar_dense.default:
            f = sys._getframe(1)
            while f is not None and "predrecon" not in f.f_code.co_filename.replace("\\", "/").split("/")[-3:-1]:
                f = f.f_back
            self.hits[f"{Path(f.f_code.co_filename).name}:{f.f_lineno}" if f is not None else "?"] += 1
        return func(*args, **(kwargs or {}))
