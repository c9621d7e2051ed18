"""Labelled evaluation tasks: data containers and the task registry.

Loaders live in :mod:`predrecon.eval.glue` (GLUE TSV layout) and
:mod:`predrecon.eval.builtin` (sets shipped by registry packages); each registers itself here
with :func:`register_task`. ``get_task(name, **kw)`` raises on unknown names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

#: Task kinds. "classification": integer labels, one text or a pair;
#: "regression": float scores (STS-B: pairs); "word_similarity": word pairs with a score.
KINDS = ("classification", "regression", "word_similarity")


@dataclass
class Split:
    """One split of a task. ``text_b`` is None for single-text tasks."""

    text_a: list[str]
    labels: np.ndarray  # (n,) int64 for classification, float32 for regression/similarity
    text_b: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        if len(self.text_a) != len(self.labels):
            raise ValueError(f"Split: {len(self.text_a)} texts but {len(self.labels)} labels")
        if self.text_b is not None and len(self.text_b) != len(self.text_a):
            raise ValueError(f"Split: text_a has {len(self.text_a)} rows, text_b {len(self.text_b)}")

    def __len__(self) -> int:
        return len(self.text_a)

    @property
    def is_pair(self) -> bool:
        return self.text_b is not None

    def subset(self, idx: np.ndarray) -> "Split":
        idx = np.asarray(idx)
        return Split([self.text_a[i] for i in idx], self.labels[idx],
                     None if self.text_b is None else [self.text_b[i] for i in idx])


@dataclass
class TaskData:
    """A loaded task. ``train`` fits probes/poolers, ``dev`` selects hyper-parameters where a
    separate ``test`` exists, and the reported split is ``test`` if present else ``dev``."""

    name: str
    kind: str
    train: Split | None
    dev: Split
    test: Split | None = None
    num_classes: int = 0  # classification only
    label_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # protocol caveats printed in reports

    @property
    def report_split(self) -> Split:
        return self.test if self.test is not None else self.dev


TaskLoader = Callable[..., TaskData]
TASKS: dict[str, TaskLoader] = {}

_LOADER_MODULES = ("predrecon.eval.glue", "predrecon.eval.builtin")


def register_task(name: str) -> Callable[[TaskLoader], TaskLoader]:
    """Decorator: register a loader ``fn(**kw) -> TaskData`` under ``name``."""

    def deco(fn: TaskLoader) -> TaskLoader:
        if name in TASKS:
            raise ValueError(f"task {name!r} registered twice")
        TASKS[name] = fn
        return fn

    return deco


def _import_loaders() -> None:
    for mod in _LOADER_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a loader module not written yet must not hide the others
            if e.name != mod:
                raise


def available_tasks() -> list[str]:
    _import_loaders()
    return sorted(TASKS)


def get_task(name: str, **kw) -> TaskData:
    """Load task ``name``; keyword arguments go to its loader (e.g. ``glue_dir``)."""
    _import_loaders()
    try:
        loader = TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(sorted(TASKS))})") from None
    return loader(**kw)
