"""GLUE task loaders for the classic ``download_glue_data.py`` TSV layout.

Registered tasks: ``sst2``, ``cola``, ``mrpc``, ``stsb``, ``mnli`` (matched reported) and
``mnli-mm`` (mismatched reported). Every loader takes::

    glue_dir=None       # folder holding SST-2/, CoLA/, MRPC/, STS-B/, MNLI/
    max_examples=None   # seeded stratified subset of N rows of the reported split (by class;
                        # STS-B by genre); the paper took the first 2000
    max_train=None      # the same for train

and returns a :class:`~predrecon.eval.tasks.registry.TaskData` whose ``dev`` split (GLUE dev) is the
reported split. Probes carve their own held-out part out of ``train`` for model selection.

Directory resolution: ``glue_dir`` argument, else ``$PREDRECON_GLUE_DIR``, else
``../shared/data/glue`` relative to the working directory, else relative to the repository
checkout. Files are read with ``csv.reader(delimiter='\\t', quoting=csv.QUOTE_NONE)`` (GLUE
text holds bare ``"``); a row with the wrong number of columns or an unparsable label raises
``ValueError`` naming the file and line.

MNLI: the official train/dev files are used when present (``MNLI/train.tsv``,
``dev_matched.tsv``, ``dev_mismatched.tsv``). Otherwise the loader falls back to the two
1,000-example TextFooler samples under ``MNLI/textfooler_1k/`` (no header: label, premise,
hypothesis; PTB-tokenised): the *other* sample is the training split and the caveat is put in
``TaskData.notes``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .registry import Split, TaskData, register_task, stratified_subset

GLUE_ENV = "PREDRECON_GLUE_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_DEFAULT_REL = Path("..") / "shared" / "data" / "glue"

MNLI_LABELS = ["entailment", "neutral", "contradiction"]  # the order of GLUE / HF `glue/mnli`


def resolve_glue_dir(glue_dir: str | os.PathLike | None = None) -> Path:
    """Return the GLUE folder: ``glue_dir`` > ``$PREDRECON_GLUE_DIR`` > ``../shared/data/glue``
    (from the working directory, then from the repository checkout).

    Raises ``FileNotFoundError`` listing the places searched and how to point to the data.
    """
    if glue_dir is not None:
        p = Path(glue_dir).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"GLUE directory {str(p)!r} (from the glue_dir argument) does not exist")
        return p
    env = os.environ.get(GLUE_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"GLUE directory {env!r} (from ${GLUE_ENV}) does not exist")
        return p
    tried = [Path.cwd() / _DEFAULT_REL, _REPO_ROOT / _DEFAULT_REL]
    for p in tried:
        if p.is_dir():
            return p.resolve()
    raise FileNotFoundError(
        "no GLUE directory found (looked at " + ", ".join(str(p) for p in tried) + "); "
        f"pass glue_dir= (CLI: --glue-dir) or set ${GLUE_ENV} to a folder in the "
        "download_glue_data.py layout (SST-2/, CoLA/, MRPC/, STS-B/, MNLI/)")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"GLUE file {str(path)!r} is missing; pass glue_dir= (CLI: --glue-dir) or set "
            f"${GLUE_ENV} to a folder in the download_glue_data.py layout")
    return path


def read_tsv(path: str | os.PathLike, ncols: int | None, *,
             header: bool) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a GLUE TSV with ``QUOTE_NONE``; strip a UTF-8 BOM.

    Returns ``(header_fields, [(line_number, fields), ...])`` (1-based line numbers; header is
    ``[]`` when ``header=False``). ``ncols`` = expected column count (``None``: the header's
    count). Raises ``ValueError`` naming file and line for a row with another column count,
    including blank lines.
    """
    path = Path(path)
    rows: list[tuple[int, list[str]]] = []
    head: list[str] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        seen_header = not header
        try:
            for fields in reader:
                line = reader.line_num
                if not seen_header:
                    seen_header = True
                    head = [h.strip() for h in fields]
                    if ncols is None:
                        ncols = len(head)
                    elif len(head) != ncols:
                        raise ValueError(f"{path}:{line}: header has {len(head)} columns, expected {ncols}")
                    continue
                if len(fields) != ncols:
                    raise ValueError(f"{path}:{line}: expected {ncols} tab-separated columns, got {len(fields)}")
                rows.append((line, fields))
        except UnicodeDecodeError:  # binary junk
            raise ValueError(f"{path}: not UTF-8 text (binary, or another encoding)") from None
        except csv.Error as e:  # a NUL byte, or a field over csv's limit (131072 characters)
            raise ValueError(f"{path}:{reader.line_num}: unreadable TSV row ({e})") from None
    if not seen_header or (header and not any(head)):
        raise ValueError(f"{path}:1: missing header line")
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return head, rows


def _col(head: list[str], name: str, path: Path) -> int:
    try:
        return head.index(name)
    except ValueError:
        raise ValueError(f"{path}:1: header has no column {name!r} (columns: {head})") from None


def _int_label(raw: str, allowed: range, path: Path, line: int) -> int:
    try:
        v = int(raw.strip())
    except ValueError:
        raise ValueError(f"{path}:{line}: unparsable label {raw!r} (expected an integer)") from None
    if v not in allowed:
        raise ValueError(f"{path}:{line}: label {v} outside {allowed.start}..{allowed.stop - 1}")
    return v


def _float_score(raw: str, lo: float, hi: float, path: Path, line: int) -> float:
    try:
        v = float(raw.strip())
    except ValueError:
        raise ValueError(f"{path}:{line}: unparsable score {raw!r} (expected a number)") from None
    if not (lo <= v <= hi):
        raise ValueError(f"{path}:{line}: score {v} outside [{lo}, {hi}]")
    return v


def _head(split: Split, n: int | None) -> Split:
    """At most ``n`` rows: a seeded stratified subset (by class; STS-B by genre), never the
    first rows (files such as STS-B dev are sorted by genre)."""
    if n is not None and n < 1:
        raise ValueError(f"max_examples/max_train must be >= 1, got {n}")
    return stratified_subset(split, n)


# --- per-file readers: path -> Split ---------------------------------------------------------

def _read_sst2(path: Path) -> Split:
    head, rows = read_tsv(path, 2, header=True)
    i_s, i_l = _col(head, "sentence", path), _col(head, "label", path)
    return Split([r[i_s].strip() for _, r in rows],
                 np.array([_int_label(r[i_l], range(2), path, ln) for ln, r in rows], dtype=np.int64))


def _read_cola(path: Path) -> Split:
    _, rows = read_tsv(path, 4, header=False)  # source, label, author mark, sentence
    return Split([r[3].strip() for _, r in rows],
                 np.array([_int_label(r[1], range(2), path, ln) for ln, r in rows], dtype=np.int64))


def _read_mrpc(path: Path) -> Split:
    head, rows = read_tsv(path, 5, header=True)  # BOM stripped by utf-8-sig
    i_q, i_a, i_b = _col(head, "Quality", path), _col(head, "#1 String", path), _col(head, "#2 String", path)
    return Split([r[i_a].strip() for _, r in rows],
                 np.array([_int_label(r[i_q], range(2), path, ln) for ln, r in rows], dtype=np.int64),
                 [r[i_b].strip() for _, r in rows])


def _read_stsb(path: Path) -> Split:
    head, rows = read_tsv(path, None, header=True)
    i_a, i_b, i_s = _col(head, "sentence1", path), _col(head, "sentence2", path), _col(head, "score", path)
    i_g = head.index("genre") if "genre" in head else None
    return Split([r[i_a].strip() for _, r in rows],
                 np.array([_float_score(r[i_s], 0.0, 5.0, path, ln) for ln, r in rows], dtype=np.float32),
                 [r[i_b].strip() for _, r in rows],
                 None if i_g is None else [r[i_g].strip() for _, r in rows])


def _mnli_label(raw: str, path: Path, line: int) -> int:
    s = raw.strip()
    if s in MNLI_LABELS:
        return MNLI_LABELS.index(s)
    raise ValueError(f"{path}:{line}: unparsable label {raw!r} (expected one of {MNLI_LABELS})")


def _read_mnli_official(path: Path) -> Split:
    head, rows = read_tsv(path, None, header=True)
    i_a, i_b = _col(head, "sentence1", path), _col(head, "sentence2", path)
    i_l = _col(head, "gold_label", path)
    return Split([r[i_a].strip() for _, r in rows],
                 np.array([_mnli_label(r[i_l], path, ln) for ln, r in rows], dtype=np.int64),
                 [r[i_b].strip() for _, r in rows])


def _read_mnli_textfooler(path: Path) -> Split:
    _, rows = read_tsv(path, 3, header=False)  # label, premise, hypothesis
    return Split([r[1].strip() for _, r in rows],
                 np.array([_mnli_label(r[0], path, ln) for ln, r in rows], dtype=np.int64),
                 [r[2].strip() for _, r in rows])


# --- task specs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Spec:
    name: str
    folder: str
    kind: str
    reader: Callable[[Path], Split]
    num_classes: int
    label_names: tuple[str, ...]


_SPECS = {
    "sst2": _Spec("sst2", "SST-2", "classification", _read_sst2, 2, ("negative", "positive")),
    "cola": _Spec("cola", "CoLA", "classification", _read_cola, 2, ("unacceptable", "acceptable")),
    "mrpc": _Spec("mrpc", "MRPC", "classification", _read_mrpc, 2, ("not_paraphrase", "paraphrase")),
    "stsb": _Spec("stsb", "STS-B", "regression", _read_stsb, 0, ()),
}


def _load_standard(spec: _Spec, glue_dir, max_examples, max_train) -> TaskData:
    root = resolve_glue_dir(glue_dir) / spec.folder
    train = spec.reader(_require(root / "train.tsv"))
    dev = spec.reader(_require(root / "dev.tsv"))
    notes = ["reported split: GLUE dev" + (f" (seeded stratified subset of {max_examples} rows)"
                                           if max_examples and max_examples < len(dev) else "")]
    return TaskData(spec.name, spec.kind, _head(train, max_train), _head(dev, max_examples),
                    num_classes=spec.num_classes, label_names=list(spec.label_names), notes=notes)


def _make_loader(spec: _Spec):
    def load(glue_dir=None, max_examples: int | None = None, max_train: int | None = None) -> TaskData:
        return _load_standard(spec, glue_dir, max_examples, max_train)

    load.__name__ = f"load_{spec.name}"
    load.__doc__ = (f"Load GLUE {spec.folder} (train.tsv, dev.tsv) from ``glue_dir``; dev is reported. "
                    "``max_examples``/``max_train``: seeded stratified subsets.")
    return load


for _spec in _SPECS.values():
    register_task(_spec.name)(_make_loader(_spec))


def _load_mnli(glue_dir, max_examples, max_train, *, mismatched: bool) -> TaskData:
    root = resolve_glue_dir(glue_dir) / "MNLI"
    name = "mnli-mm" if mismatched else "mnli"
    rep, other = ("mismatched", "matched") if mismatched else ("matched", "mismatched")
    official_train, official_dev = root / "train.tsv", root / f"dev_{rep}.tsv"
    if official_train.is_file() and official_dev.is_file():
        train, dev = _read_mnli_official(official_train), _read_mnli_official(official_dev)
        notes = [f"reported split: GLUE MNLI dev_{rep}"]
    else:
        tf = root / "textfooler_1k"
        dev = _read_mnli_textfooler(_require(tf / f"mnli_{rep}.tsv"))
        train = _read_mnli_textfooler(_require(tf / f"mnli_{other}.tsv"))
        notes = [
            f"MNLI official train/dev files not found under {root}: using the TextFooler 1k samples "
            f"(reported: 1,000-example sample of dev_{rep}; training split: the 1,000-example "
            f"sample of dev_{other}). PTB-tokenised text; not comparable with full-dev GLUE MNLI "
            "numbers (standard error about +-1.5 accuracy points).",
        ]
    if max_examples and max_examples < len(dev):
        notes.append(f"reported split: seeded stratified subset of {max_examples} rows")
    return TaskData(name, "classification", _head(train, max_train), _head(dev, max_examples),
                    num_classes=3, label_names=list(MNLI_LABELS), notes=notes)


@register_task("mnli")
def load_mnli(glue_dir=None, max_examples: int | None = None, max_train: int | None = None) -> TaskData:
    """MNLI, matched reported. Official files if present, else the TextFooler 1k samples
    (train = mismatched sample, reported = matched sample; caveat in ``notes``)."""
    return _load_mnli(glue_dir, max_examples, max_train, mismatched=False)


@register_task("mnli-mm")
def load_mnli_mm(glue_dir=None, max_examples: int | None = None, max_train: int | None = None) -> TaskData:
    """MNLI, mismatched reported (the mirror image of :func:`load_mnli`)."""
    return _load_mnli(glue_dir, max_examples, max_train, mismatched=True)


GLUE_TASKS = ("sst2", "mrpc", "cola", "stsb", "mnli")  # the paper's five tasks
