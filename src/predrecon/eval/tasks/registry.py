"""Labelled evaluation tasks: data containers and the task registry.

Loaders live in :mod:`predrecon.eval.tasks.glue` (GLUE TSV layout) and
:mod:`predrecon.eval.tasks.builtin` (sets shipped by registry packages); each registers itself here
with :func:`register_task`. ``get_task(name, **kw)`` raises on unknown names.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: Task kinds. "classification": integer labels, one text or a pair;
#: "regression": float scores (STS-B: pairs); "word_similarity": word pairs with a score.
KINDS = ("classification", "regression", "word_similarity")


@dataclass
class Split:
    """One split of a task. ``text_b`` is None for single-text tasks. ``groups``: an optional
    per-row stratum name (e.g. the STS-B genre column) used by :func:`stratified_subset`."""

    text_a: list[str]
    labels: np.ndarray  # (n,) int64 for classification, float32 for regression/similarity
    text_b: list[str] | None = None
    groups: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        if len(self.text_a) != len(self.labels):
            raise ValueError(f"Split: {len(self.text_a)} texts but {len(self.labels)} labels")
        if self.text_b is not None and len(self.text_b) != len(self.text_a):
            raise ValueError(f"Split: text_a has {len(self.text_a)} rows, text_b {len(self.text_b)}")
        if self.groups is not None and len(self.groups) != len(self.text_a):
            raise ValueError(f"Split: text_a has {len(self.text_a)} rows, groups {len(self.groups)}")

    def __len__(self) -> int:
        return len(self.text_a)

    @property
    def is_pair(self) -> bool:
        return self.text_b is not None

    def subset(self, idx: np.ndarray) -> Split:
        idx = np.asarray(idx)
        return Split([self.text_a[i] for i in idx], self.labels[idx],
                     None if self.text_b is None else [self.text_b[i] for i in idx],
                     None if self.groups is None else [self.groups[i] for i in idx])


#: Seed of every reported/train subset (fixed, so that all encoders and seeds of an experiment
#: see the same examples and their per-example vectors can be paired).
SUBSET_SEED = 0


def strata(split: Split, n_bins: int = 5) -> np.ndarray:
    """Stratum of each row: ``groups`` (e.g. genre) when present, else integer class labels,
    else (float scores) ``n_bins`` equal-width score bins over the observed range."""
    if split.groups is not None:
        return np.asarray(split.groups, dtype=object)
    y = np.asarray(split.labels)
    if y.dtype.kind in "iub":
        return y
    lo, hi = float(np.min(y)), float(np.max(y))
    if hi <= lo:
        return np.zeros(len(y), dtype=np.int64)
    return np.clip(np.floor((y - lo) / (hi - lo) * n_bins), 0, n_bins - 1).astype(np.int64)


def stratified_indices(keys: np.ndarray, n: int, seed: int = SUBSET_SEED) -> np.ndarray:
    """Sorted indices of a seeded stratified sample of ``n`` rows without replacement.

    Each stratum (distinct value of ``keys``) gets ``n * share`` rows rounded by largest
    remainder, and at least one row whenever ``n >= number of strata`` (taken from the largest
    strata), so no stratum present in the full split disappears from the subset. Rows inside a
    stratum are drawn with ``numpy.random.default_rng(seed)``.
    """
    keys = np.asarray(keys)
    total = len(keys)
    if n < 1:
        raise ValueError(f"max_examples/max_train must be >= 1, got {n}")
    if n >= total:
        return np.arange(total)
    uniq, inv = np.unique(keys.astype(str), return_inverse=True)
    counts = np.bincount(inv, minlength=len(uniq))
    quota = n * counts / total
    alloc = np.floor(quota).astype(np.int64)
    for j in np.argsort(-(quota - alloc), kind="stable")[: n - int(alloc.sum())]:
        alloc[j] += 1
    if n >= len(uniq):  # every stratum keeps at least one row
        for j in np.flatnonzero(alloc == 0):
            donor = int(np.argmax(alloc))
            alloc[donor] -= 1
            alloc[j] = 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(inv == j), size=int(alloc[j]), replace=False)
              for j in range(len(uniq)) if alloc[j] > 0]
    return np.sort(np.concatenate(picked))


def stratified_subset(split: Split, n: int | None, seed: int = SUBSET_SEED) -> Split:
    """``split`` itself when ``n`` is None or >= its size, else a seeded stratified subset of
    ``n`` rows (strata from :func:`strata`; rows kept in their original order)."""
    if n is None or n >= len(split):
        return split
    return split.subset(stratified_indices(strata(split), n, seed))


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
#: Tasks named by a spec, ``SCHEME:REST`` -> ``loader(spec, **kw)`` (``file:PATH?...``: a user's
#: own labelled file, :mod:`predrecon.eval.tasks.userfile`).
TASK_SCHEMES: dict[str, Callable[..., TaskData]] = {}

_LOADER_MODULES = ("predrecon.eval.tasks.glue", "predrecon.eval.tasks.builtin", "predrecon.eval.tasks.userfile")


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


def task_loader(name: str) -> TaskLoader:
    """The loader of a registered task name or of a ``SCHEME:...`` spec (bound to the spec)."""
    _import_loaders()
    scheme, sep, _ = name.partition(":")
    if sep and scheme in TASK_SCHEMES:
        return functools.partial(TASK_SCHEMES[scheme], name)
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(sorted(TASKS))}, or "
                       f"{', '.join(s + ':...' for s in sorted(TASK_SCHEMES))})") from None


def get_task(name: str, **kw) -> TaskData:
    """Load task ``name`` (or a ``SCHEME:...`` spec); keyword arguments go to its loader (e.g. ``glue_dir``)."""
    return task_loader(name)(**kw)
