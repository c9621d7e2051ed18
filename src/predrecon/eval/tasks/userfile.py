"""A user's own labelled file as an evaluation task: ``file:PATH[?OPTIONS]``.

    predrecon eval runs/hybrid --tasks 'file:reviews.tsv?text=review&label=stars&train=reviews_train.tsv'
    predrecon eval minilm --tasks 'file:pairs.jsonl?text=s1&text_b=s2&label=score&kind=similarity'

Formats, by extension (or ``format=tsv|csv|jsonl``): ``.tsv`` / ``.tab`` (tab-separated, header
row), ``.csv`` (comma-separated, header row; both read with Python's :mod:`csv`, so a field may be
double-quoted as spreadsheet programs and pandas write it), ``.jsonl`` / ``.ndjson`` (one JSON
object per line; blank lines skipped).

Options (query string after ``?``, ``&``-separated; URL-escape ``&``, ``?``, ``=`` in values):

* ``text`` (default ``text``), ``text_b`` (second text of a pair; default none), ``label``
  (default ``label``): column names;
* ``kind``: ``classification`` (default; labels are class names, sorted numerically when all are
  integers, else alphabetically), ``regression`` (float scores, one text or a pair) or
  ``similarity`` (float scores of a pair: needs ``text_b``; adds the zero-shot cosine Spearman);
* ``train=PATH2``: the file that fits the probes and poolers (same format rules and columns);
  without it, the one file is split by a seeded stratified holdout: a fraction ``holdout``
  (default 0.5) of its rows is the reported split and the rest train, drawn with
  :func:`~predrecon.eval.tasks.registry.stratified_indices` and :data:`~predrecon.eval.tasks.registry.SUBSET_SEED`,
  so every encoder sees the same rows;
* ``name``: the task's name in results and reports (default ``file-<file stem>``).

The task then runs through the same runner as the built-in ones: the same metrics, the
majority / length-only / random-init floors, bootstrap intervals and comparisons.

Errors (:class:`UserFileError`, a ``ValueError``) are one line naming the file and, where it
applies, the line: a missing file, an empty file, a missing column (naming the columns found),
an empty text, a label that is not a number (regression / similarity) or is empty, fewer than
two classes, an unknown option.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from ...data.sources import json_object_line
from .registry import SUBSET_SEED, TASK_SCHEMES, Split, TaskData, strata, stratified_indices

SCHEME = "file"
KINDS = ("classification", "regression", "similarity")
FORMATS = {".tsv": "tsv", ".tab": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
OPTIONS = ("text", "text_b", "label", "kind", "train", "holdout", "name", "format")


class UserFileError(ValueError):
    """Bad user evaluation file or spec (one line, naming the file and line)."""


def parse_spec(spec: str) -> tuple[Path, dict[str, str]]:
    """``file:PATH?k=v&...`` -> (path, options); raises on a bad spec or an unknown option."""
    if not spec.startswith(SCHEME + ":"):
        raise UserFileError(f"task {spec!r}: expected file:PATH[?OPTIONS]")
    path, _, query = spec[len(SCHEME) + 1:].partition("?")
    if not path:
        raise UserFileError(f"task {spec!r}: no path after 'file:'")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise UserFileError(f"task {spec!r}: options must be KEY=VALUE joined by '&'") from None
    opts: dict[str, str] = {}
    for k, v in pairs:
        if k not in OPTIONS:
            raise UserFileError(f"task {spec!r}: unknown option {k!r} (known: {', '.join(OPTIONS)})")
        if k in opts:
            raise UserFileError(f"task {spec!r}: option {k!r} given twice")
        opts[k] = v
    kind = opts.get("kind", "classification")
    if kind not in KINDS:
        raise UserFileError(f"task {spec!r}: kind={kind!r} (known: {', '.join(KINDS)})")
    if kind == "similarity" and not opts.get("text_b"):
        raise UserFileError(f"task {spec!r}: kind=similarity needs a pair: pass text_b=COLUMN")
    return Path(path).expanduser(), opts


def _format(path: Path, opts: dict[str, str]) -> str:
    fmt = opts.get("format") or FORMATS.get(path.suffix.lower())
    if fmt not in ("tsv", "csv", "jsonl"):
        raise UserFileError(f"{path}: unknown format (extension {path.suffix!r}; known: "
                            f"{', '.join(FORMATS)}; or pass format=tsv|csv|jsonl)")
    return fmt


def read_rows(path: Path, fmt: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """(columns, [(line number, record)]) of a TSV/CSV (header row) or JSONL file. The columns of
    a JSONL file are its first record's keys."""
    if not path.is_file():
        raise UserFileError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserFileError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})") from None
    if not text.strip():
        raise UserFileError(f"{path}: empty file")
    rows: list[tuple[int, dict]] = []
    if fmt == "jsonl":
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            rows.append((i, json_object_line(path, i, line, UserFileError)))
        return list(rows[0][1]), rows
    reader = csv.reader(text.splitlines(), delimiter="\t" if fmt == "tsv" else ",")
    try:
        header = next(reader)
        for rec in reader:
            if not any(f.strip() for f in rec):
                continue
            if len(rec) != len(header):
                raise UserFileError(f"{path}:{reader.line_num}: {len(rec)} fields, the header has {len(header)} "
                                    f"({', '.join(header)})")
            rows.append((reader.line_num, dict(zip(header, rec))))
    except csv.Error as e:
        raise UserFileError(f"{path}:{reader.line_num}: {e}") from None
    if not rows:
        raise UserFileError(f"{path}: a header ({', '.join(header)}) but no rows")
    return header, rows


def _cell(path: Path, line: int, rec: dict, col: str, what: str):
    if col not in rec:
        raise UserFileError(f"{path}:{line}: no field {col!r} ({what}; fields found: {', '.join(map(str, rec))})")
    return rec[col]


def _text(path: Path, line: int, rec: dict, col: str) -> str:
    v = _cell(path, line, rec, col, "text")
    if not isinstance(v, str) or not v.strip():
        raise UserFileError(f"{path}:{line}: empty or non-text value {v!r} in text column {col!r}")
    return v.strip()


def _label(path: Path, line: int, rec: dict, col: str, kind: str):
    v = _cell(path, line, rec, col, "label")
    if kind == "classification":
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, int) or (isinstance(v, str) and v.strip()):
            return str(v).strip()
        raise UserFileError(f"{path}:{line}: bad class label {v!r} in column {col!r} (a class name or integer)")
    try:
        y = float(v) if not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        y = math.nan
    if not math.isfinite(y):
        raise UserFileError(f"{path}:{line}: label {v!r} in column {col!r} is not a finite number (kind={kind})")
    return y


def read_split(path: Path, opts: dict[str, str]) -> tuple[list[str], list[str] | None, list, list[int]]:
    """(text_a, text_b or None, raw labels, line numbers) of one file, every row checked."""
    fmt = _format(path, opts)
    columns, rows = read_rows(path, fmt)
    text, text_b, label = opts.get("text", "text"), opts.get("text_b") or None, opts.get("label", "label")
    kind = opts.get("kind", "classification")
    for role, col in (("text", text), ("text_b", text_b), ("label", label)):
        if col is not None and col not in columns:
            found = ", ".join(map(str, columns))
            raise UserFileError(f"{path}: no column {col!r} for {role} (columns found: {found}); pass {role}=COLUMN")
    a = [_text(path, ln, r, text) for ln, r in rows]
    b = None if text_b is None else [_text(path, ln, r, text_b) for ln, r in rows]
    y = [_label(path, ln, r, label, kind) for ln, r in rows]
    return a, b, y, [ln for ln, _ in rows]


def _class_names(names: set[str]) -> list[str]:
    if all(re.fullmatch(r"[+-]?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def load_file_task(spec: str) -> TaskData:
    """The :class:`TaskData` of ``file:PATH[?OPTIONS]`` (module docstring). The reported split is
    ``dev``; ``train`` is ``train=PATH2`` or the holdout's remainder."""
    path, opts = parse_spec(spec)
    kind = opts.get("kind", "classification")
    a, b, y, _ = read_split(path, opts)
    train_path = Path(opts["train"]).expanduser() if opts.get("train") else None
    tr = read_split(train_path, opts) if train_path else None
    if kind == "classification":
        seen = set(y) | (set(tr[2]) if tr else set())
        names = _class_names(seen)
        if len(names) < 2:
            raise UserFileError(f"{path}: one class only ({names[0]!r}) in column {opts.get('label', 'label')!r}; "
                                "a classification task needs at least two")
        n_rows = len(y) + (len(tr[2]) if tr else 0)
        if len(names) > max(50, n_rows // 2):
            raise UserFileError(f"{path}: {len(names)} distinct labels in {n_rows} rows look like scores, not classes; "
                                "pass kind=regression")
        index = {n: i for i, n in enumerate(names)}
        to_labels = (lambda ys: np.array([index[v] for v in ys], dtype=np.int64))
    else:
        names = []
        to_labels = (lambda ys: np.asarray(ys, dtype=np.float32))
    report = Split(a, to_labels(y), b)
    notes = [f"user file {path} ({len(report)} rows, kind={kind})"]
    if tr is not None:
        train = Split(tr[0], to_labels(tr[2]), tr[1])
        notes.append(f"train: {train_path} ({len(train)} rows)")
    else:
        frac = _holdout(opts, path)
        if len(report) < 4:
            raise UserFileError(f"{path}: {len(report)} rows are too few to hold out a split; pass train=PATH2")
        n_rep = min(len(report) - 2, max(2, int(round(frac * len(report)))))
        rep_idx = stratified_indices(strata(report), n_rep, SUBSET_SEED)
        train = report.subset(np.setdiff1d(np.arange(len(report)), rep_idx))
        report = report.subset(rep_idx)
        notes.append(f"no train file: seeded stratified holdout, {len(report)} rows reported, {len(train)} train")
    if kind == "classification" and len(np.unique(train.labels)) < 2:
        raise UserFileError(f"{train_path or path}: the train split has one class only; a probe needs at least two")
    if kind == "similarity":
        notes.append("geometry.alignment counts pairs scoring >= 4 as positives (STS-B's 0-5 scale)")
    name = task_name(spec)
    return TaskData(name=name, kind="classification" if kind == "classification" else "regression",
                    train=train, dev=report, num_classes=len(names), label_names=names, notes=notes)


def task_name(spec: str) -> str:
    """The name a ``file:`` task is reported under: ``name=`` or ``file-<file stem>`` (sanitised)."""
    path, opts = parse_spec(spec)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", opts.get("name") or f"file-{path.stem}")


def check_unique_names(tasks: list[str]) -> None:
    """Refuse task lists where two entries would be reported under one name (e.g. two ``file:``
    tasks whose files share a stem): their results would overwrite each other."""
    names = [task_name(t) if t.startswith(SCHEME + ":") else t for t in tasks]
    for n in dict.fromkeys(names):
        same = [t for t, m in zip(tasks, names) if m == n]
        if len(same) > 1:
            raise UserFileError(f"tasks {', '.join(repr(t) for t in same)} would all be reported as {n!r}: give each "
                                "file task its own name (file:PATH?name=NAME)")


def _holdout(opts: dict[str, str], path: Path) -> float:
    try:
        f = float(opts.get("holdout", "0.5"))
    except ValueError:
        f = math.nan
    if not 0.0 < f < 1.0:
        raise UserFileError(f"{path}: holdout={opts.get('holdout')!r} must be a fraction in (0, 1)")
    return f


TASK_SCHEMES[SCHEME] = load_file_task
