"""Row batchers over a :class:`~predrecon.data.shards.TokenDataset`: deterministic, resumable.

Both batchers yield ``dict`` batches of ``torch.long`` tensors of shape (B, T), T = ``seq_len``:

* ``input_ids``: ``[CLS] tokens [SEP]`` per document (piece), then ``pad_id``;
* ``position_ids``: 0, 1, ... restarting at every ``[CLS]``; 0 on padding;
* ``segment_ids``: 1, 2, ... per document piece within the row; **0 on padding**.

:class:`PackedBatcher` packs documents: each document is cut into pieces of at most T - 2 tokens,
each wrapped in ``[CLS]``/``[SEP]``, and rows are filled greedily (best-fit decreasing within
groups of consecutive documents) with whole pieces. Documents shorter than ``min_doc_tokens`` are
skipped. :class:`DocumentBatcher` is the paper's
layout: one document per row, its ``head`` tokens (first ``doc_chars`` characters) truncated to
T - 2 and padded.

Document order is a permutation drawn per epoch from ``numpy.random.default_rng([seed, epoch])``;
iteration is infinite (epochs follow each other, a batch may straddle two). ``state_dict()`` is
``{epoch, cursor, ...}`` taken between batches; ``load_state_dict`` makes a fresh batcher continue
with exactly the batches an uninterrupted one would yield. :func:`iter_eval_batches` is a finite,
unshuffled single pass for validation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..config import DataConfig
from .shards import TokenDataset

Batch = dict[str, torch.Tensor]


class RowBatcher:
    """Shared machinery: epoch orders, the row generator, batch assembly and the cursor state."""

    kind = ""

    def __init__(self, dataset: TokenDataset, split: str, seq_len: int, batch_size: int, seed: int = 0,
                 *, shuffle: bool = True):
        if seq_len < 3:
            raise ValueError(f"seq_len must be >= 3 ([CLS] token [SEP]), got {seq_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.split, self.seq_len, self.batch_size = dataset, split, seq_len, batch_size
        self.seed, self.shuffle = int(seed), shuffle
        self.special = dataset.special_ids
        self.docs = self._eligible()
        if len(self.docs) == 0:
            raise ValueError(f"{dataset.path}: split {split!r} has no usable documents for {type(self).__name__}")
        self.epoch = 0
        self._cursor: Any = self._start()
        self._rows_iter: Iterator[tuple[list[np.ndarray], Any]] | None = None

    # --- subclass hooks ------------------------------------------------------------------------
    def _eligible(self) -> np.ndarray:
        raise NotImplementedError

    def _start(self) -> Any:
        raise NotImplementedError

    def _rows(self, epoch: int, cursor: Any) -> Iterator[tuple[list[np.ndarray], Any]]:
        """Yield (pieces of one row of ``epoch``, cursor at which the next row starts)."""
        raise NotImplementedError

    # --- iteration -----------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """Document ids of ``epoch`` in visiting order."""
        if not self.shuffle:
            return self.docs
        return self.docs[np.random.default_rng([self.seed, epoch]).permutation(len(self.docs))]

    def __iter__(self) -> RowBatcher:
        return self

    def __next__(self) -> Batch:
        rows = self._take()
        return assemble_rows(rows, self.seq_len, self.special.cls_id, self.special.sep_id, self.special.pad_id)

    def skip(self) -> None:
        """Advance past one batch exactly as ``next`` would, without reading its tokens (its
        pieces are memmap views never touched): how a rank passes over the micro-batches of the
        others (:mod:`predrecon.train.distributed`)."""
        self._take()

    def _take(self) -> list[list[np.ndarray]]:
        rows: list[list[np.ndarray]] = []
        while len(rows) < self.batch_size:
            if self._rows_iter is None:
                self._rows_iter = self._rows(self.epoch, self._cursor)
            try:
                pieces, self._cursor = next(self._rows_iter)
            except StopIteration:
                self.epoch += 1
                self._cursor, self._rows_iter = self._start(), None
                continue
            rows.append(pieces)
        return rows

    def rows_of_epoch(self, epoch: int = 0) -> Iterator[list[np.ndarray]]:
        """All rows of one epoch from its start (does not touch the batcher's state)."""
        for pieces, _ in self._rows(epoch, self._start()):
            yield pieces

    # --- resume --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Position between batches: ``epoch``, ``cursor`` plus fingerprints checked on load."""
        cur = list(self._cursor) if isinstance(self._cursor, tuple) else self._cursor
        return {"kind": self.kind, "epoch": self.epoch, "cursor": cur, "seed": self.seed, "split": self.split,
                "seq_len": self.seq_len, "num_docs": int(len(self.docs))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; raises ValueError if it came from a different configuration."""
        for key in ("kind", "seed", "split", "seq_len", "num_docs"):
            mine = self.state_dict()[key]
            if state.get(key) != mine:
                raise ValueError(f"batcher state mismatch: {key}={state.get(key)!r}, this batcher has {mine!r}")
        self.epoch = int(state["epoch"])
        cur = state["cursor"]
        self._cursor = tuple(int(c) for c in cur) if isinstance(cur, (list, tuple)) else int(cur)
        self._rows_iter = None


def assemble_rows(rows: list[list[np.ndarray]], seq_len: int, cls_id: int, sep_id: int, pad_id: int) -> Batch:
    """Write rows of pieces as ``[CLS] piece [SEP]`` runs into (B, T) long tensors.

    Positions restart at 0 for each piece, segments count pieces from 1; padding has
    ``pad_id`` / position 0 / segment 0. Raises ValueError if a row does not fit ``seq_len``.
    """
    B = len(rows)
    ids = np.full((B, seq_len), pad_id, dtype=np.int64)
    pos = np.zeros((B, seq_len), dtype=np.int64)
    seg = np.zeros((B, seq_len), dtype=np.int64)
    for r, pieces in enumerate(rows):
        t = 0
        for s, toks in enumerate(pieces, 1):
            n = len(toks)
            if t + n + 2 > seq_len:
                raise ValueError(f"row {r} needs {t + n + 2} > seq_len={seq_len} positions")
            ids[r, t] = cls_id
            ids[r, t + 1:t + 1 + n] = toks
            ids[r, t + 1 + n] = sep_id
            pos[r, t:t + n + 2] = np.arange(n + 2)
            seg[r, t:t + n + 2] = s
            t += n + 2
    return {"input_ids": torch.from_numpy(ids), "position_ids": torch.from_numpy(pos),
            "segment_ids": torch.from_numpy(seg)}


class PackedBatcher(RowBatcher):
    """Packed rows: documents cut into ``[CLS] <= T-2 tokens [SEP]`` pieces, packed into rows.

    The epoch's document order is cut into consecutive *groups* of about ``group_rows * T``
    tokens; each group is packed by best-fit decreasing (pieces longest first, each into the
    fullest row that still has room) and its rows are shuffled with ``rng([seed, epoch, group])``.
    ``cursor`` = (group, row within the group); a group is re-packed deterministically on resume.
    """

    kind = "packed"

    def __init__(self, dataset: TokenDataset, split: str, seq_len: int, batch_size: int, seed: int = 0,
                 *, min_doc_tokens: int = 1, group_rows: int = 128, shuffle: bool = True):
        if group_rows < 1:
            raise ValueError(f"group_rows must be >= 1, got {group_rows}")
        self.min_doc_tokens = max(1, int(min_doc_tokens))
        self.group_rows = int(group_rows)
        self.lengths = dataset.doc_lengths(split)
        super().__init__(dataset, split, seq_len, batch_size, seed, shuffle=shuffle)

    def _eligible(self) -> np.ndarray:
        return np.nonzero(self.lengths >= self.min_doc_tokens)[0]

    def _start(self) -> tuple[int, int]:
        return (0, 0)

    def groups(self, order: np.ndarray) -> np.ndarray:
        """(G + 1,) start indices into ``order`` of each packing group (last = len(order))."""
        body = self.seq_len - 2
        n = self.lengths[order]
        cost = n + 2 * -(-n // body)  # tokens incl. [CLS]/[SEP] of every piece
        first = (np.cumsum(cost) - cost) // (self.group_rows * self.seq_len)  # group of each document
        starts = np.flatnonzero(np.diff(first)) + 1
        return np.concatenate([[0], starts, [len(order)]]).astype(np.int64)

    def pack(self, docs: np.ndarray) -> list[list[tuple[int, int, int]]]:
        """Best-fit-decreasing packing of the pieces of ``docs``: rows of (doc, start, end)."""
        T, body = self.seq_len, self.seq_len - 2
        pieces = [(int(d), a, min(a + body, int(self.lengths[d]))) for d in docs
                  for a in range(0, int(self.lengths[d]), body)]
        pieces.sort(key=lambda p: p[1] - p[2])  # longest first; stable
        rows: list[list[tuple[int, int, int]]] = []
        free: dict[int, list[int]] = {}  # remaining capacity -> rows with it
        for pc in pieces:
            need = pc[2] - pc[1] + 2
            r = -1
            for cap in range(need, T):  # best fit: the smallest capacity that suffices
                if free.get(cap):
                    r = free[cap].pop()
                    break
            if r < 0:
                r, cap = len(rows), T
                rows.append([])
            rows[r].append(pc)
            if cap - need >= 3:  # room for at least [CLS] token [SEP]
                free.setdefault(cap - need, []).append(r)
        return rows

    def _rows(self, epoch: int, cursor: tuple[int, int]) -> Iterator[tuple[list[np.ndarray], tuple[int, int]]]:
        g, r0 = cursor
        order = self.order(epoch)
        starts = self.groups(order)
        while g < len(starts) - 1:
            rows = self.pack(order[starts[g]:starts[g + 1]])
            if self.shuffle:
                perm = np.random.default_rng([self.seed, epoch, g]).permutation(len(rows))
                rows = [rows[i] for i in perm]
            for r in range(r0, len(rows)):
                nxt = (g, r + 1) if r + 1 < len(rows) else (g + 1, 0)
                yield [self.dataset.doc(self.split, d)[a:b] for d, a, b in rows[r]], nxt
            g, r0 = g + 1, 0


class DocumentBatcher(RowBatcher):
    """The paper's rows: one document per row, its head tokens truncated to T - 2 and padded.

    ``cursor`` = index in the epoch's order.
    """

    kind = "document"

    def _eligible(self) -> np.ndarray:
        return np.arange(self.dataset.num_docs(self.split))

    def _start(self) -> int:
        return 0

    def _rows(self, epoch: int, cursor: int) -> Iterator[tuple[list[np.ndarray], int]]:
        order = self.order(epoch)
        for i in range(cursor, len(order)):
            yield [self.dataset.head(self.split, int(order[i]))[:self.seq_len - 2]], i + 1


def _open(dataset: TokenDataset | str | os.PathLike[str]) -> TokenDataset:
    return dataset if isinstance(dataset, TokenDataset) else TokenDataset(dataset)


def make_batcher(dataset: TokenDataset | str | os.PathLike[str], data_cfg: DataConfig, split: str,
                 batch_size: int, seed: int = 0, *, shuffle: bool = True) -> RowBatcher:
    """The batcher for ``data_cfg.mode`` ('packed' | 'document').

    Document mode needs heads built with the same ``doc_chars``; raises ValueError otherwise.
    """
    ds = _open(dataset)
    if data_cfg.mode == "packed":
        return PackedBatcher(ds, split, data_cfg.seq_len, batch_size, seed,
                             min_doc_tokens=data_cfg.min_doc_tokens, shuffle=shuffle)
    if data_cfg.mode == "document":
        if ds.manifest.doc_chars != data_cfg.doc_chars:
            raise ValueError(f"data.doc_chars={data_cfg.doc_chars} but {ds.path} was built with "
                             f"doc_chars={ds.manifest.doc_chars}; rebuild the shards with that value")
        return DocumentBatcher(ds, split, data_cfg.seq_len, batch_size, seed, shuffle=shuffle)
    raise ValueError(f"data.mode: unknown mode {data_cfg.mode!r} (packed | document)")


def iter_eval_batches(dataset: TokenDataset | str | os.PathLike[str], data_cfg: DataConfig, split: str = "val",
                      batch_size: int = 32, max_batches: int | None = None) -> Iterator[Batch]:
    """One deterministic pass over ``split`` in stored order (no shuffling), rows laid out as in
    training; the last batch may be smaller. Stops after ``max_batches`` when given."""
    b = make_batcher(dataset, data_cfg, split, batch_size, seed=0, shuffle=False)
    rows: list[list[np.ndarray]] = []
    n = 0
    sp = b.special
    for pieces in b.rows_of_epoch(0):
        rows.append(pieces)
        if len(rows) == batch_size:
            yield assemble_rows(rows, b.seq_len, sp.cls_id, sp.sep_id, sp.pad_id)
            rows, n = [], n + 1
            if max_batches is not None and n >= max_batches:
                return
    if rows:
        yield assemble_rows(rows, b.seq_len, sp.cls_id, sp.sep_id, sp.pad_id)
