"""Batches and masks made ahead in a worker process, in step order, resumable exactly.

:class:`PrefetchSource` is a batch source for :func:`predrecon.train.step.train_step`: called
with consecutive steps, it returns each step's collated micro-batches on the device and their
real-token count. A ``torch.utils.data.DataLoader`` with one worker runs a copy of the batcher
(started from its current state) and the collator ``depth`` steps ahead; each item also carries
the batcher's state after that step's rows, so :meth:`PrefetchSource.state_dict` is exactly what
the batcher on the main thread would report after the consumed step — a checkpoint written
then resumes into the same rows, and the collator's masks depend only on ``(seed, step)``.

On CUDA the worker's tensors are pinned (``pin_memory``) and copied with ``non_blocking=True``.
The worker uses one intra-op thread (it must not compete with the training step for cores).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

Batch = dict[str, torch.Tensor]


def collate_step(batcher: Any, collator: Any, accum: int, step: int, rank: int = 0,
                 world: int = 1) -> tuple[list[Batch], int]:
    """Rows and masks of optimizer step ``step`` for ``rank`` of ``world``: the step spans
    ``accum * world`` consecutive micro-batches of the global row stream; this rank collates
    micro-batches ``rank, rank + world, ...`` (each seeded by its global index
    ``step * accum * world + i``) and passes over the others with ``batcher.skip()``. One process
    (``world`` = 1) collates micro-batch ``step * accum + micro`` as always. Returns the CPU
    batches and their real-token count."""
    out, tokens = [], 0
    base = step * accum * world
    for i in range(accum * world):
        if i % world != rank:
            batcher.skip()
            continue
        rows = next(batcher)
        tokens += int(rows["segment_ids"].ne(0).sum())
        out.append(collator(rows, base + i))
    return out, tokens


class _StepStream(IterableDataset):
    """Yields ``(step, [collated micro-batch, ...], real tokens, batcher state)`` for
    ``start <= step < end`` in order (a single worker)."""

    def __init__(self, batcher: Any, collator: Any, accum: int, start: int, end: int, rank: int = 0,
                 world: int = 1):
        self.batcher, self.collator, self.accum, self.start, self.end = batcher, collator, accum, start, end
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[tuple[int, list[Batch], int, dict[str, Any]]]:
        info = get_worker_info()
        if info is not None and info.num_workers != 1:
            raise RuntimeError("prefetch: exactly one worker keeps the steps in order")
        batcher = self.batcher  # the worker's own copy (pickled or forked)
        for step in range(self.start, self.end):
            out, tokens = collate_step(batcher, self.collator, self.accum, step, self.rank, self.world)
            yield step, out, tokens, batcher.state_dict()


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class PrefetchSource:
    """Step-ordered batch source fed by a worker process (module doc).

    ``batcher`` is copied as it is now (the caller's object is not advanced); ``start``/``end``
    are the run's first and one-past-last steps; ``depth`` steps are made ahead."""

    def __init__(self, batcher: Any, collator: Any, accum: int, device: torch.device, start: int, end: int,
                 depth: int = 2, rank: int = 0, world: int = 1):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.device = device
        self._state = batcher.state_dict()
        self._next = start
        stream = _StepStream(copy.deepcopy(batcher), collator, accum, start, end, rank, world)
        self._loader = DataLoader(stream, batch_size=None, num_workers=1, prefetch_factor=depth,
                                  pin_memory=device.type == "cuda", worker_init_fn=_worker_init,
                                  persistent_workers=False)
        self._it = iter(self._loader)

    def __call__(self, step: int) -> tuple[list[Batch], int]:
        if step != self._next:
            raise RuntimeError(f"prefetch: step {step} requested, the stream is at step {self._next}")
        got, batches, tokens, state = next(self._it)
        if got != step:
            raise RuntimeError(f"prefetch: got step {got} for step {step}")
        self._next, self._state = step + 1, state
        nb = self.device.type == "cuda"
        return [{k: v.to(self.device, non_blocking=nb) for k, v in b.items()} for b in batches], tokens

    def state_dict(self) -> dict[str, Any]:
        """The batcher's state after the last consumed step (what a checkpoint stores)."""
        return copy.deepcopy(self._state)

    def close(self) -> None:
        """Stop the worker (also done when the object is collected)."""
        self._it = None  # DataLoader's iterator shuts its workers down when released
