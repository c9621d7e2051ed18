"""Evaluation runner: one frozen encoder x tasks x poolings -> metrics with intervals on disk.

:func:`evaluate` encodes every split of a task once (token states cached), pools them each
way and computes, on the task's reported split (``TaskData.report_split``, GLUE dev):

* ``geometry.*`` — :func:`~predrecon.eval.geometry.geometry_suite` (labels for alignment and
  class distance ratio; regression scores binned into 5 classes);
* ``lexical.*`` — the paper's most-frequent-wordpiece probe (3-fold CV on the reported split),
  in improved mode the same target learned on train and scored on the reported split, the
  Hewitt & Liang control task and selectivity, and a bag-of-words probe. Wordpieces always come
  from the bert-base-uncased tokenizer (the paper's), so every encoder faces the same labels;
* ``semantic.*`` — logistic regression train -> reported split (C chosen on held-out train);
  STS-B: zero-shot Spearman of cos(u, v) and a Ridge regressor on [u; v; |u-v|; u*v]; in
  faithful mode also the paper's 5-fold CV on the reported split;
* ``balance.*`` — semantic minus lexical (difference and ratio);
* ``linear_probe.paper`` — mean pooling only: LayerNorm -> Dropout -> Linear on the pooled
  text (single) or [u; v; |u-v|; u*v] (pairs), lr/epoch chosen on held-out train.

Intervals: every metric is ``{value, low, high}`` from a bootstrap over examples of the
reported split. Probes are never refit: their per-example correctness (or predictions) is
resampled. Geometry metrics are recomputed on ``n_boot_geometry`` resamples drawn exactly like
:func:`~predrecon.eval.stats.paired_bootstrap_test` (``default_rng(seed).integers(0, n, n)``
per replicate); the replicate values are stored so that ``compare`` can run paired tests
without recomputing. A resample holds only ~63 % distinct rows, and duplicated rows bias
pairwise metrics (zero distances) and rank metrics (rank <= distinct rows, severe when n is
close to D); geometry intervals are therefore *bias-corrected percentile* intervals (the
percentiles shifted by the bootstrap bias ``mean(replicates) - value``, stored as
``bootstrap_bias``) and remain approximate; paired differences are the more reliable output.

Output, per (task, pooling): ``out_dir/<task>/<pooling>.json`` (metrics, per-example vectors,
metadata) and ``out_dir/<task>/<pooling>.npy`` (pooled embeddings of the reported split,
float32 (n, D)); plus ``out_dir/summary.json``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import geometry, probes, stats
from .encoders import TextEncoder, TokenStates, load_text_encoder, reference_tokenizer
from .pooling import POOLINGS, build_pooler
from .tasks import TASKS, Split, TaskData, get_task

DEFAULT_POOLINGS = ("mean", "max", "cls", "weighted", "attention")
RESULT_VERSION = 1


# --------------------------------------------------------------------------- statistics

def _nanmean(a: np.ndarray) -> np.ndarray | float:
    with np.errstate(invalid="ignore"):
        cnt = np.sum(~np.isnan(a), axis=-1)
        s = np.nansum(a, axis=-1)
        return np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan)


def _spearman(p: np.ndarray, y: np.ndarray) -> float:
    ok = ~(np.isnan(p) | np.isnan(y))
    return probes._spearman(p[ok], y[ok]) if ok.sum() >= 3 else math.nan


def make_statistic(spec: dict, per_example: dict, *, embeddings: np.ndarray | None = None,
                   seed: int = 0, cache: dict | None = None) -> Callable[[np.ndarray], float]:
    """Turn a stored metric recipe into ``statistic(idx) -> float`` over example indices.

    Recipes: ``{"type": "mean", "key": k}`` (mean of ``per_example[k]`` ignoring NaN = not
    evaluated; ``idx`` may be (B, n) -> (B,)), ``{"type": "spearman", "pred": k, "target": k2}``,
    ``{"type": "difference"|"ratio", "a": recipe, "b": recipe}``, ``{"type": "geometry",
    "name": m}`` (:func:`geometry_suite` on ``embeddings[idx]`` with
    ``per_example['geometry_labels']``; suites are memoised per ``idx`` in ``cache``).
    Used by :func:`evaluate` for intervals and by ``compare`` for paired tests.
    """
    kind = spec["type"]
    if kind == "mean":
        arr = np.asarray(per_example[spec["key"]], dtype=np.float64)
        return lambda idx: _nanmean(arr[np.asarray(idx)])
    if kind == "spearman":
        p = np.asarray(per_example[spec["pred"]], dtype=np.float64)
        y = np.asarray(per_example[spec["target"]], dtype=np.float64)
        return lambda idx: _spearman(p[idx], y[idx])
    if kind in ("difference", "ratio"):
        fa = make_statistic(spec["a"], per_example, embeddings=embeddings, seed=seed, cache=cache)
        fb = make_statistic(spec["b"], per_example, embeddings=embeddings, seed=seed, cache=cache)
        if kind == "difference":
            return lambda idx: float(fa(idx)) - float(fb(idx))
        return lambda idx: float(fa(idx)) / float(fb(idx)) if float(fb(idx)) != 0 else math.nan
    if kind == "geometry":
        if embeddings is None:
            raise ValueError(f"geometry statistic {spec['name']!r} needs the embeddings")
        labels = per_example.get("geometry_labels")
        labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        memo = {} if cache is None else cache

        def stat(idx):
            idx = np.asarray(idx)
            key = hashlib.sha1(idx.tobytes()).hexdigest()
            if key not in memo:
                memo[key] = _safe_suite(embeddings[idx], None if labels is None else labels[idx], seed)
            return memo[key].get(spec["name"], math.nan)
        return stat
    raise KeyError(f"unknown statistic type {kind!r}")


def _safe_suite(x: np.ndarray, labels: np.ndarray | None, seed: int) -> dict:
    try:
        return geometry.geometry_suite(x, labels, seed=seed)
    except ValueError:  # e.g. a resample without two members of any class
        try:
            return geometry.geometry_suite(x, None, seed=seed)
        except ValueError:
            return {}


def bootstrap_indices(n: int, n_boot: int, seed: int) -> list[np.ndarray]:
    """The resamples of :func:`predrecon.eval.stats.paired_bootstrap_test` for (n, n_boot, seed)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=n) for _ in range(n_boot)]


def _entry(est_value: float, low: float, high: float, n: int, method: str, spec: dict | None) -> dict:
    return {"value": float(est_value), "low": float(low), "high": float(high), "n": int(n),
            "method": method, "resample": spec}


def _interval(spec: dict, pe: dict, n: int, n_boot: int, seed: int) -> dict:
    """Bootstrap CI (stats.bootstrap_ci, percentile) of a per-example recipe."""
    stat = make_statistic(spec, pe)
    value = float(stat(np.arange(n)))
    if not math.isfinite(value):
        return _entry(math.nan, math.nan, math.nan, n, "none", spec)
    try:
        est = stats.bootstrap_ci(n, stat, n_boot=n_boot, seed=seed, vectorized=spec["type"] == "mean")
        return _entry(value, est.low, est.high, n, f"bootstrap-{est.method}", spec)
    except ValueError:  # e.g. a degenerate resample distribution
        return _entry(value, math.nan, math.nan, n, "none", spec)


def _nan_full(n: int, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(n, np.nan)
    out[idx] = values
    return out


# --------------------------------------------------------------------------- task preparation

@dataclass
class _Prepared:
    data: TaskData
    train: Split | None
    report: Split
    joint: dict  # split -> TokenStates
    sides: dict  # split -> (TokenStates a, TokenStates b) for pairs
    ref_ids: dict  # split -> list of reference wordpiece ids (no specials)
    special: set
    encode_seconds: float
    n_encoded: int


def _load(task: str, glue_dir, max_examples: int | None) -> TaskData:
    if task not in TASKS:
        get_task(task)  # imports loaders; raises KeyError naming the known tasks
    params = inspect.signature(TASKS[task]).parameters
    kw = {k: v for k, v in (("glue_dir", glue_dir), ("max_examples", max_examples)) if k in params}
    data = get_task(task, **kw)
    if data.kind not in ("classification", "regression"):
        raise ValueError(f"task {task!r}: kind {data.kind!r} is not supported by the runner "
                         "(classification or regression only)")
    return data


def _prepare(enc: TextEncoder, task: str, *, glue_dir, faithful, max_examples, max_train, seed,
             batch_size, max_len, ref_tok) -> _Prepared:
    data = _load(task, glue_dir, max_examples)
    report = data.report_split
    if max_examples and len(report) > max_examples:
        report = report.subset(np.arange(max_examples))
    train = data.train
    if train is not None and max_train and len(train) > max_train:
        rng = np.random.default_rng(seed)
        train = train.subset(np.sort(rng.choice(len(train), max_train, replace=False)))
    splits = {"report": report} | ({"train": train} if train is not None else {})
    joint, sides, ref_ids = {}, {}, {}
    t0, n_enc = time.perf_counter(), 0
    for name, sp in splits.items():
        joint[name] = enc.encode_tokens(sp.text_a, sp.text_b, batch_size, max_len, faithful=faithful)
        n_enc += len(sp)
        if sp.is_pair:
            sides[name] = (enc.encode_tokens(sp.text_a, None, batch_size, max_len, faithful=faithful),
                           enc.encode_tokens(sp.text_b, None, batch_size, max_len, faithful=faithful))
            n_enc += 2 * len(sp)
        texts = sp.text_a if not sp.is_pair else [f"{a} {b}" for a, b in zip(sp.text_a, sp.text_b)]
        ref_ids[name] = [e.ids for e in ref_tok.encode_batch(texts, add_special_tokens=False)]
    special = {ref_tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")} - {None}
    return _Prepared(data, train, report, joint, sides, ref_ids, special, time.perf_counter() - t0, n_enc)


# --------------------------------------------------------------------------- metrics per pooling

def _geometry(x: np.ndarray, geo_labels: np.ndarray | None, n_boot: int, seed: int):
    point = _safe_suite(x, geo_labels, seed)
    names = [k for k in point if k not in ("n", "dim")]
    reps = {m: [] for m in names}
    for idx in bootstrap_indices(len(x), n_boot, seed):
        suite = _safe_suite(x[idx], None if geo_labels is None else geo_labels[idx], seed)
        for m in names:
            reps[m].append(float(suite.get(m, math.nan)))
    metrics = {}
    for m in names:
        r = np.asarray(reps[m])
        ok = r[np.isfinite(r)]
        if ok.size >= 2 and math.isfinite(point[m]):
            bias = float(ok.mean()) - float(point[m])
            lo, hi = np.quantile(ok, [0.025, 0.975]) - bias
        else:
            bias, lo, hi = math.nan, math.nan, math.nan
        metrics[f"geometry.{m}"] = _entry(point[m], lo, hi, len(x), "bootstrap-bias-corrected-percentile",
                                          {"type": "geometry", "name": m})
        metrics[f"geometry.{m}"]["bootstrap_bias"] = bias
    return metrics, {"seed": seed, "n_boot": n_boot, "values": reps}, geometry.spectrum(x)


@dataclass
class _Ctx:
    """What the metric groups of one (task, pooling) share and fill in."""

    prep: _Prepared
    pooler: object
    x: np.ndarray  # (n, D) pooled reported split
    x_tr: np.ndarray | None  # (n_train, D) pooled train subset
    n_boot: int
    seed: int
    pe: dict = field(default_factory=dict)  # per-example vectors (NaN = not evaluated)
    m: dict = field(default_factory=dict)  # metric name -> entry
    details: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    _sides: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.x)

    def add(self, name: str, spec: dict) -> None:
        self.m[name] = _interval(spec, self.pe, self.n, self.n_boot, self.seed)

    def sides(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (u, v) of a pair split, float64, computed once."""
        if split not in self._sides:
            a, b = self.prep.sides[split]
            self._sides[split] = (self.pooler.pool(a).astype(np.float64), self.pooler.pool(b).astype(np.float64))
        return self._sides[split]


def _lexical(c: _Ctx, faithful: bool) -> str | None:
    """Lexical probes, control task, selectivity, bag of words. Returns the per-example key of
    the main lexical probe (train->report in improved mode, the paper's CV in faithful mode)."""
    prep, x, x_tr, n, seed = c.prep, c.x, c.x_tr, c.n, c.seed
    lex_dev, keep_dev = probes.most_frequent_wordpiece_labels(prep.ref_ids["report"], prep.special, 5)
    main, ctrl_rows, ctrl_fit, lex_tr = None, None, None, None
    if np.unique(lex_dev[keep_dev]).size >= 2:
        r = probes.lexical_probe_paper(x[keep_dev], lex_dev[keep_dev], seed=seed)
        c.pe["lexical_paper_correct"] = _nan_full(n, np.flatnonzero(keep_dev), r.correct)
        c.add("lexical.probe_paper", {"type": "mean", "key": "lexical_paper_correct"})
        c.details["lexical_probe_paper"] = {"fold_mean": r.score, **_jsonable(r.chosen)}
        main, ctrl_rows = "lexical_paper_correct", np.flatnonzero(keep_dev)
    else:
        c.notes.append("lexical probe (paper) skipped: fewer than 2 wordpiece classes with >= 5 texts")
    if x_tr is not None and not faithful:
        lex_tr, keep_tr = probes.most_frequent_wordpiece_labels(prep.ref_ids["train"], prep.special, 5)
        classes = np.unique(lex_tr[keep_tr])
        rows = np.flatnonzero(np.isin(lex_dev, classes) & (lex_dev >= 0))
        if classes.size >= 2 and rows.size >= 2:
            r = probes.semantic_probe(x_tr[keep_tr], lex_tr[keep_tr], x[rows], lex_dev[rows], seed=seed)
            c.pe["lexical_correct"] = _nan_full(n, rows, r.correct)
            c.add("lexical.probe", {"type": "mean", "key": "lexical_correct"})
            c.details["lexical_probe"] = _jsonable(r.chosen)
            main, ctrl_rows, ctrl_fit = "lexical_correct", rows, np.flatnonzero(keep_tr)
        else:
            c.notes.append("lexical probe (train->report) skipped: too few wordpiece classes")
    if main is not None:  # control task (Hewitt & Liang) under the main probe's protocol
        n_cls = np.unique(lex_dev[ctrl_rows] if ctrl_fit is None else lex_tr[ctrl_fit]).size
        ids = prep.ref_ids["report"] + (prep.ref_ids["train"] if ctrl_fit is not None else [])
        ctrl = probes.control_task_labels(ids, max(int(n_cls), 2), seed=seed, special_ids=prep.special)
        c_dev, c_tr = ctrl[:n], ctrl[n:]
        try:
            if ctrl_fit is None:
                rc = probes.lexical_probe_paper(x[ctrl_rows], c_dev[ctrl_rows], seed=seed)
            else:
                rc = probes.semantic_probe(x_tr[ctrl_fit], c_tr[ctrl_fit], x[ctrl_rows], c_dev[ctrl_rows], seed=seed)
            c.pe["control_correct"] = _nan_full(n, ctrl_rows, rc.correct)
            c.add("lexical.control", {"type": "mean", "key": "control_correct"})
            c.add("lexical.selectivity", {"type": "difference", "a": {"type": "mean", "key": main},
                                          "b": {"type": "mean", "key": "control_correct"}})
        except ValueError as e:
            c.notes.append(f"control task skipped: {e}")
    if x_tr is not None:
        try:
            bow = probes.bow_probe(x_tr, prep.ref_ids["train"], x, prep.ref_ids["report"],
                                   special_ids=prep.special, seed=seed)
            for k in ("micro_f1", "mean_auc"):
                c.m[f"lexical.bow_{k}"] = _entry(bow[k], math.nan, math.nan, n, "none (no per-example output)", None)
        except ValueError as e:
            c.notes.append(f"bag-of-words probe skipped: {e}")
    return main


def _semantic(c: _Ctx, faithful: bool) -> dict | None:
    """Semantic probes; returns the recipe of the main semantic score (for the balance)."""
    prep, x, seed = c.prep, c.x, c.seed
    data, train, y = prep.data, prep.train, prep.report.labels
    reg = data.kind == "regression"
    main = None
    if train is not None and not reg:
        r = probes.semantic_probe(c.x_tr, train.labels, x, y, seed=seed)
        c.pe["semantic_correct"] = r.correct.astype(np.float64)
        main = {"type": "mean", "key": "semantic_correct"}
        c.add("semantic.probe", main)
        c.details["semantic_probe"] = _jsonable(r.chosen)
    if reg and prep.report.is_pair:
        u, v = c.sides("report")
        c.pe["sts_cosine"] = np.einsum("ij,ij->i", u, v) / np.maximum(
            np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
        c.add("semantic.sts_zero_shot", {"type": "spearman", "pred": "sts_cosine", "target": "labels"})
        if train is not None:
            r = probes.sts_regressor(probes.pair_features(*c.sides("train")), train.labels,
                                     probes.pair_features(u, v), y, seed=seed)
            c.pe["sts_regressor_pred"] = r.predictions.astype(np.float64)
            main = {"type": "spearman", "pred": "sts_regressor_pred", "target": "labels"}
            c.add("semantic.sts_regressor", main)
            c.details["sts_regressor"] = _jsonable(r.chosen)
    if faithful:
        try:
            if reg:
                r = probes.sts_regressor_cv_paper(x, y, seed=seed)
                c.pe["semantic_cv_pred"] = r.predictions.astype(np.float64)
                spec = {"type": "spearman", "pred": "semantic_cv_pred", "target": "labels"}
            else:
                r = probes.semantic_probe_cv_paper(x, y, seed=seed)
                c.pe["semantic_cv_correct"] = r.correct.astype(np.float64)
                spec = {"type": "mean", "key": "semantic_cv_correct"}
            c.add("semantic.cv_paper", spec)
            c.details["semantic_cv_paper"] = {"fold_mean": r.score, **_jsonable(r.chosen)}
            main = spec  # the paper's balance uses its CV protocol on both sides
        except ValueError as e:
            c.notes.append(f"semantic CV (paper) skipped: {e}")
    return main


def _linear_probe(c: _Ctx) -> None:
    """The paper's LayerNorm -> Dropout -> Linear probe; lr/epoch chosen on 10 % of train."""
    train, report, reg = c.prep.train, c.prep.report, c.prep.data.kind == "regression"
    if report.is_pair:
        f_tr, f_te = probes.pair_features(*c.sides("train")), probes.pair_features(*c.sides("report"))
    else:
        f_tr, f_te = c.x_tr, c.x
    perm = np.random.default_rng(c.seed).permutation(len(train))
    va, fi = perm[:max(2, len(train) // 10)], perm[max(2, len(train) // 10):]
    r = probes.linear_probe_paper(f_tr[fi], train.labels[fi], f_tr[va], train.labels[va], f_te, report.labels,
                                  seed=c.seed, regression=reg)
    if reg:
        c.pe["linear_probe_pred"] = r.predictions.astype(np.float64)
        c.add("linear_probe.paper", {"type": "spearman", "pred": "linear_probe_pred", "target": "labels"})
    else:
        c.pe["linear_probe_correct"] = r.correct.astype(np.float64)
        c.add("linear_probe.paper", {"type": "mean", "key": "linear_probe_correct"})
    c.details["linear_probe_paper"] = _jsonable(r.chosen)


def _evaluate_pooling(prep: _Prepared, pooling: str, enc: TextEncoder, *, faithful: bool, seed: int,
                      n_boot: int, n_boot_geometry: int, max_len: int, pooler_epochs: int) -> tuple[dict, np.ndarray]:
    data, train, y = prep.data, prep.train, prep.report.labels
    pooler = build_pooler(pooling, enc.dim, max_len=max(max_len, 8), seed=seed, faithful=faithful)
    fit_log: dict = {}
    if pooler.trainable and not faithful and train is not None:
        fit_log = pooler.fit(prep.joint["train"], train.labels, data.kind, data.num_classes, seed=seed,
                             epochs=pooler_epochs)
    c = _Ctx(prep, pooler, pooler.pool(prep.joint["report"]),
             pooler.pool(prep.joint["train"]) if train is not None else None, n_boot, seed)
    c.details["pooler"] = {"status": pooler.status, **fit_log}
    c.pe["labels"] = y.astype(np.float64)
    if data.kind == "regression":  # STS-B: scores binned into 5 classes for alignment / class ratio
        lo, hi = (0.0, 5.0) if y.min() >= 0 and y.max() <= 5 else (None, None)
        c.pe["geometry_labels"] = geometry.bin_scores(y, 5, lo, hi)
    else:
        c.pe["geometry_labels"] = y.astype(np.int64)
    geo, reps, sv = _geometry(c.x, c.pe["geometry_labels"], n_boot_geometry, seed)
    c.m.update(geo)
    lex = _lexical(c, faithful)
    sem = _semantic(c, faithful)
    if sem is not None and lex is not None:
        for kind in ("difference", "ratio"):
            c.add(f"balance.{kind}", {"type": kind, "a": sem, "b": {"type": "mean", "key": lex}})
    if pooling == "mean" and train is not None:
        _linear_probe(c)
    result = {"version": RESULT_VERSION, "task": data.name, "kind": data.kind, "pooling": pooling,
              "pooling_status": pooler.status, "n_report": c.n, "n_train": 0 if train is None else len(train),
              "metrics": c.m, "details": c.details, "notes": list(data.notes) + c.notes,
              "spectrum": sv.tolist(), "geometry_replicates": reps,
              "per_example": {k: np.asarray(v) for k, v in c.pe.items()}}
    return result, c.x


# --------------------------------------------------------------------------- I/O helpers

def _jsonable(obj):
    """Recursively convert numpy values to JSON types; NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def _examples_hash(sp: Split) -> str:
    h = hashlib.sha1()
    for i in range(len(sp)):
        h.update(sp.text_a[i].encode())
        h.update(b"\x00" + (sp.text_b[i].encode() if sp.text_b is not None else b"") + b"\x01")
        h.update(repr(float(sp.labels[i])).encode())
    return h.hexdigest()


def load_result(path: str | Path) -> dict:
    """Read one ``<task>/<pooling>.json``; per-example lists come back as float arrays (None -> NaN)."""
    res = json.loads(Path(path).read_text())
    res["per_example"] = {k: np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
                          for k, vals in res.get("per_example", {}).items()}
    for e in res["metrics"].values():
        for k in ("value", "low", "high"):
            e[k] = math.nan if e[k] is None else e[k]
    return res


# --------------------------------------------------------------------------- entry point

def evaluate(encoder_spec: str | TextEncoder, tasks: Sequence[str], poolings: Sequence[str] = DEFAULT_POOLINGS,
             out_dir: str | Path = "eval", *, glue_dir: str | Path | None = None, faithful: bool = False,
             max_examples: int | None = 2000, max_train: int | None = 4000, seed: int = 0, n_boot: int = 1000,
             n_boot_geometry: int = 100, batch_size: int = 64, max_len: int = 128, device: str | None = None,
             pooler_epochs: int = 8, progress: bool = True) -> list[dict]:
    """Evaluate one frozen encoder on ``tasks`` under ``poolings``; write results to ``out_dir``.

    ``encoder_spec``: a :class:`TextEncoder` or a spec for :func:`load_text_encoder`
    ('minilm', 'random:<dir>', an export/run/checkpoint dir). ``faithful``: the paper's protocol
    (joined "s1 [SEP] s2" without attention mask, untrained weighted/attention poolings, CV on
    the reported split). ``max_examples``: first N rows of the reported split (paper: 2000);
    ``max_train``: seeded random subset of train for probes and poolers. ``n_boot``: bootstrap
    resamples for probe metrics; ``n_boot_geometry``: for geometry (each recomputes the suite).
    Returns the per-(task, pooling) result dicts (as written, without per-example vectors).
    Memory: token states are cached as float32, about ``tokens * D * 4`` bytes per encoded
    text list (pairs: the joint sequence and each side); faithful mode pads every text to
    ``max_len``, so e.g. 4000 + 2000 pairs at 128 x 512 take about 4.7 GB.
    """
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    poolings = [poolings] if isinstance(poolings, str) else list(poolings)
    unknown = [p for p in poolings if p not in POOLINGS]
    if unknown:
        raise KeyError(f"unknown pooling(s) {unknown} (known: {', '.join(POOLINGS)})")
    if not tasks:
        raise ValueError("evaluate: no tasks given")
    enc = encoder_spec if isinstance(encoder_spec, TextEncoder) else load_text_encoder(encoder_spec, device=device,
                                                                                      seed=seed)
    spec_str = encoder_spec if isinstance(encoder_spec, str) else enc.name
    try:
        ref_tok = reference_tokenizer()
    except Exception:  # no bert-base-uncased package: fall back to the encoder's own tokenizer
        ref_tok = enc.tokenizer
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks) * len(poolings), disable=not progress, desc="eval")
    results, summary_rows = [], []
    for task in tasks:
        bar.set_description(f"eval {task}: encoding")
        t_task = time.perf_counter()
        prep = _prepare(enc, task, glue_dir=glue_dir, faithful=faithful, max_examples=max_examples,
                        max_train=max_train, seed=seed, batch_size=batch_size, max_len=max_len, ref_tok=ref_tok)
        ex_hash = _examples_hash(prep.report)
        for pooling in poolings:
            bar.set_description(f"eval {task}/{pooling}")
            t0 = time.perf_counter()
            res, emb = _evaluate_pooling(prep, pooling, enc, faithful=faithful, seed=seed, n_boot=n_boot,
                                         n_boot_geometry=n_boot_geometry, max_len=max_len,
                                         pooler_epochs=pooler_epochs)
            res["meta"] = {"encoder": spec_str, "encoder_name": enc.name, "dim": enc.dim, "faithful": faithful,
                           "seed": seed, "max_examples": max_examples, "max_train": max_train, "max_len": max_len,
                           "n_boot": n_boot, "n_boot_geometry": n_boot_geometry, "examples_sha1": ex_hash,
                           "encode_seconds": prep.encode_seconds,
                           "sentences_per_s": prep.n_encoded / max(prep.encode_seconds, 1e-9),
                           "pooling_seconds": time.perf_counter() - t0,
                           "wall_seconds": time.perf_counter() - t_task}
            tdir = out / prep.data.name
            tdir.mkdir(parents=True, exist_ok=True)
            np.save(tdir / f"{pooling}.npy", emb.astype(np.float32))
            (tdir / f"{pooling}.json").write_text(json.dumps(_jsonable(res), indent=1))
            res.pop("per_example")
            results.append(res)
            summary_rows.append({"task": res["task"], "pooling": pooling, "status": res["pooling_status"],
                                 "sentences_per_s": res["meta"]["sentences_per_s"],
                                 **{k: v["value"] for k, v in res["metrics"].items()}})
            bar.update(1)
    bar.close()
    summary = {"version": RESULT_VERSION, "encoder": spec_str, "encoder_name": enc.name, "faithful": faithful,
               "seed": seed, "tasks": list(tasks), "poolings": list(poolings), "rows": summary_rows}
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=1))
    return results
