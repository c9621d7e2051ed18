"""Evaluation runner: one frozen encoder x tasks x poolings -> metrics with intervals and floors.

:func:`evaluate` encodes every split of a task once (token states cached), pools them each
way and computes, on the task's reported split (``TaskData.report_split``, GLUE dev, or a
seeded stratified subset of it — never the first rows):

* ``geometry.*`` — :func:`~predrecon.eval.geometry.geometry_suite` (uniformity, anisotropy,
  spectra: effective rank, RankMe on the uncentred matrix, sigma^2 spectral entropy, power-law
  alpha and its R^2 on a fixed rank range; the paper's same-class ``alignment_paper``) and,
  for pair tasks, ``geometry.alignment`` on real positive pairs (MRPC paraphrases, MNLI
  entailments, STS-B pairs scoring >= 4): their mean squared distance over that of all
  non-matching pairs (:func:`~predrecon.eval.geometry.pair_alignment`);
* ``probe.glue`` — the headline probe (:func:`~predrecon.eval.probes.glue_probe`): standardised
  features, L2 logistic regression (Ridge for regression) with C / alpha chosen on a held-out
  20 % of train, scored with GLUE's own metric (:data:`~predrecon.eval.names.GLUE_METRIC`);
  ``probe.<score>`` beside it (accuracy, F1, MCC, balanced accuracy; Pearson, Spearman).
  Features: the pooled text, or for pairs ``[u; v; |u-v|; u*v]`` of the pooled sides;
* ``lexical.content_auc`` — recovery of mid-frequency content wordpieces, macro-AUC
  (:mod:`~predrecon.eval.lexical`), with ``lexical.bow_ceiling`` (the same probe on the true
  bag of words);
* ``balance.normalised`` — :func:`~predrecon.eval.probes.normalised_balance` of ``probe.glue``
  and ``lexical.content_auc``;
* ``semantic.sts_zero_shot`` — STS: Spearman of cos(u, v);
* faithful replicas of the paper (flag ``faithful_replica``): ``linear_probe.paper`` (mean
  pooling; LayerNorm -> Dropout -> Linear), ``lexical.probe_paper`` (most frequent wordpiece,
  3-fold CV on the reported split), ``geometry.alignment_paper``; with ``faithful=True`` also
  ``semantic.cv_paper`` and ``balance.difference``.

Floors (``floors`` of a metric entry): ``majority`` (train majority class / train mean, scored
with the same metric; 0.5 for AUCs), ``length_only`` (the same probe on token counts of each
side, :func:`~predrecon.eval.probes.length_features`) and ``random_init`` (the whole evaluation
repeated on the same-shape random-init encoder, :func:`~predrecon.eval.encoders.random_init_like`,
seed ``floor_seed``; cached under ``floor_cache`` keyed by its weights, tokenizer, task examples
and settings, so the seeds of an experiment share it).

Intervals: every metric is ``{value, low, high}`` from a bootstrap over examples of the
reported split. Probes are never refit: their per-example predictions (or correctness, or AUC
placement values) are resampled by the recipe in ``resample`` (:func:`make_statistic`).
Geometry metrics are recomputed on ``n_boot_geometry`` resamples drawn like
:func:`~predrecon.eval.stats.paired_bootstrap_test` (``default_rng(seed).integers(0, n, n)``
per replicate); the replicate values are stored for ``compare``. A resample holds only ~63 %
distinct rows, which biases pairwise and rank metrics; geometry intervals are therefore
*bias-corrected percentile* intervals (``bootstrap_bias``) and remain approximate.

Output, per (task, pooling): ``out_dir/<task>/<pooling>.json`` (metrics, per-example vectors,
metadata) and ``out_dir/<task>/<pooling>.npy`` (pooled embeddings of the reported split,
float32 (n, D)); plus ``out_dir/summary.json`` naming the encoder (spec, weights sha256) and
the floors' source. A directory holding another encoder's results is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import geometry, lexical, probes, stats
from .encoders import (TextEncoder, load_text_encoder, random_init_like, reference_tokenizer, tokenizer_sha,
                       weights_sha)
from .names import DEFAULT_POOLINGS, PROBE_SCORES, glue_metric, metric_info
from .pooling import POOLINGS, build_pooler
from .scores import SCORES
from .tasks import SUBSET_SEED, Split, TaskData, available_tasks, get_task, stratified_subset

RESULT_VERSION = 2
#: positive pairs for ``geometry.alignment``: the label of a positive pair per task;
#: regression tasks: gold score >= POSITIVE_SCORE.
POSITIVE_LABEL = {"mrpc": 1, "mnli": 0, "mnli-mm": 0}
POSITIVE_SCORE = 4.0
FLOOR_DIRNAME = "random_init"

__all__ = ["DEFAULT_POOLINGS", "evaluate", "load_result", "make_statistic", "bootstrap_indices"]


# --------------------------------------------------------------------------- statistics

def _nanmean(a: np.ndarray) -> np.ndarray | float:
    with np.errstate(invalid="ignore"):
        cnt = np.sum(~np.isnan(a), axis=-1)
        s = np.nansum(a, axis=-1)
        return np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan)


def _as_out(v, idx):
    return float(np.asarray(v)) if np.asarray(idx).ndim == 1 else np.asarray(v, dtype=np.float64)


def vectorized(spec: dict) -> bool:
    """Whether the recipe accepts a (B, n) batch of index rows (all but spearman-on-NaN and geometry)."""
    kind = spec["type"]
    if kind in ("mean", "score"):
        return True
    if kind in ("difference", "ratio"):
        return vectorized(spec["a"]) and vectorized(spec["b"])
    if kind == "normalised":
        return vectorized(spec["a"])
    return False


def make_statistic(spec: dict, per_example: dict, *, embeddings: np.ndarray | None = None,
                   seed: int = 0, cache: dict | None = None) -> Callable[[np.ndarray], float]:
    """Turn a stored metric recipe into ``statistic(idx) -> float`` over example indices.

    Recipes: ``{"type": "mean", "key": k}`` (mean of ``per_example[k]`` ignoring NaN = not
    evaluated), ``{"type": "score", "score": s, "pred": k, "target": k2}`` (a score of
    :data:`predrecon.eval.scores.SCORES` of predictions against targets),
    ``{"type": "spearman", "pred": k, "target": k2}`` (rows with NaN dropped),
    ``{"type": "difference"|"ratio", "a": recipe, "b": recipe}``, ``{"type": "normalised",
    "a": recipe, "chance": c, "ceiling": h}`` (``(a - c) / (h - c)``), ``{"type": "geometry",
    "name": m}`` (:func:`geometry_suite` on ``embeddings[idx]`` with
    ``per_example['geometry_labels']``; memoised per ``idx`` in ``cache``). Recipes for which
    :func:`vectorized` holds also accept ``idx`` of shape (B, n) and return (B,).
    Used by :func:`evaluate` for intervals and by ``compare`` for paired tests.
    """
    kind = spec["type"]
    if kind == "mean":
        arr = np.asarray(per_example[spec["key"]], dtype=np.float64)
        return lambda idx: _nanmean(arr[np.asarray(idx)])
    if kind == "score":
        fn = SCORES[spec["score"]]
        p = np.asarray(per_example[spec["pred"]], dtype=np.float64)
        y = np.asarray(per_example[spec["target"]], dtype=np.float64)
        return lambda idx: _as_out(fn(p[np.asarray(idx)], y[np.asarray(idx)]), idx)
    if kind == "spearman":
        p = np.asarray(per_example[spec["pred"]], dtype=np.float64)
        y = np.asarray(per_example[spec["target"]], dtype=np.float64)

        def rho(idx):
            a, b = p[idx], y[idx]
            ok = ~(np.isnan(a) | np.isnan(b))
            return SCORES["spearman"](a[ok], b[ok]) if ok.sum() >= 3 else math.nan
        return rho
    if kind in ("difference", "ratio"):
        fa = make_statistic(spec["a"], per_example, embeddings=embeddings, seed=seed, cache=cache)
        fb = make_statistic(spec["b"], per_example, embeddings=embeddings, seed=seed, cache=cache)
        if kind == "difference":
            return lambda idx: _as_out(np.asarray(fa(idx)) - np.asarray(fb(idx)), idx)

        def ratio(idx):
            a, b = np.asarray(fa(idx), dtype=np.float64), np.asarray(fb(idx), dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                return _as_out(np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan), idx)
        return ratio
    if kind == "normalised":
        fa = make_statistic(spec["a"], per_example, embeddings=embeddings, seed=seed, cache=cache)
        c, h = float(spec["chance"]), float(spec.get("ceiling", 1.0))
        if not h > c:
            return lambda idx: _as_out(np.full(np.shape(np.asarray(idx))[:-1], np.nan), idx)
        return lambda idx: _as_out((np.asarray(fa(idx)) - c) / (h - c), idx)
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
    """Bootstrap CI (stats.bootstrap_ci, percentile) of a per-example recipe (none if n_boot=0)."""
    stat = make_statistic(spec, pe)
    value = float(stat(np.arange(n)))
    if not math.isfinite(value) or n_boot < 1:
        return _entry(value, math.nan, math.nan, n, "none", spec)
    try:
        est = stats.bootstrap_ci(n, stat, n_boot=n_boot, seed=seed, vectorized=vectorized(spec))
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
    ref_ids: dict  # split -> list of reference wordpiece ids of the (joined) text (no specials)
    ref_len: dict  # split -> (len_a, len_b | None) reference wordpiece counts per side
    special: set
    encode_seconds: float
    n_encoded: int
    id_to_token: Callable[[int], str | None] = str
    cache: dict = field(default_factory=dict)  # encoder-independent results (content targets, floors)


def _load(task: str, glue_dir, max_examples: int | None) -> TaskData:
    import inspect

    from .tasks import TASKS

    if task not in available_tasks():  # imports the loaders without loading any data
        raise KeyError(f"unknown task {task!r} (known: {', '.join(available_tasks())})")
    params = inspect.signature(TASKS[task]).parameters
    kw = {k: v for k, v in (("glue_dir", glue_dir), ("max_examples", max_examples)) if k in params}
    data = get_task(task, **kw)
    if data.kind not in ("classification", "regression"):
        raise ValueError(f"task {task!r}: kind {data.kind!r} is not supported by the runner "
                         "(classification or regression only)")
    return data


def _select(task: str, glue_dir, max_examples, max_train) -> tuple[TaskData, Split, Split | None]:
    """The task, its reported split and train split after the seeded stratified caps."""
    data = _load(task, glue_dir, max_examples)
    report = stratified_subset(data.report_split, max_examples, SUBSET_SEED)
    train = None if data.train is None else stratified_subset(data.train, max_train, SUBSET_SEED)
    return data, report, train


def _prepare(enc: TextEncoder, task: str, *, glue_dir, faithful, max_examples, max_train, seed,
             batch_size, max_len, ref_tok, selected=None) -> _Prepared:
    data, report, train = selected or _select(task, glue_dir, max_examples, max_train)
    splits = {"report": report} | ({"train": train} if train is not None else {})
    joint, sides, ref_ids, ref_len = {}, {}, {}, {}
    t0, n_enc = time.perf_counter(), 0
    for name, sp in splits.items():
        joint[name] = enc.encode_tokens(sp.text_a, sp.text_b, batch_size, max_len, faithful=faithful)
        n_enc += len(sp)
        if sp.is_pair:
            sides[name] = (enc.encode_tokens(sp.text_a, None, batch_size, max_len, faithful=faithful),
                           enc.encode_tokens(sp.text_b, None, batch_size, max_len, faithful=faithful))
            n_enc += 2 * len(sp)
        ids_a = [e.ids for e in ref_tok.encode_batch(list(sp.text_a), add_special_tokens=False)]
        ids_b = None if not sp.is_pair else [e.ids for e in ref_tok.encode_batch(list(sp.text_b),
                                                                                  add_special_tokens=False)]
        ref_ids[name] = ids_a if ids_b is None else [a + b for a, b in zip(ids_a, ids_b)]
        ref_len[name] = (np.array([len(i) for i in ids_a]), None if ids_b is None else np.array([len(i) for i in ids_b]))
    special = {ref_tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")} - {None}
    return _Prepared(data, train, report, joint, sides, ref_ids, ref_len, special,
                     time.perf_counter() - t0, n_enc, ref_tok.id_to_token)


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
        metrics[f"geometry.{m}"] = _entry(point[m], lo, hi, len(x), "bootstrap-bias-corrected-percentile"
                                          if n_boot else "none", {"type": "geometry", "name": m})
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
    floors: dict = field(default_factory=dict)  # metric name -> {floor name: value}
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

    def features(self, split: str) -> np.ndarray:
        """Probe input: the pooled text, or ``[u; v; |u-v|; u*v]`` of the pooled sides for pairs."""
        if self.prep.report.is_pair:
            return probes.pair_features(*self.sides(split))
        return self.x if split == "report" else self.x_tr


def _scores_of(kind: str, n_classes: int) -> tuple[str, ...]:
    if kind == "regression":
        return PROBE_SCORES["regression"]
    return PROBE_SCORES["binary" if n_classes <= 2 else "multiclass"]


def _length_x(prep: _Prepared, split: str) -> np.ndarray:
    la, lb = prep.ref_len[split]
    return probes.length_features(la, lb)


def _probe(c: _Ctx) -> dict | None:
    """``probe.glue`` and ``probe.<score>`` with majority and length-only floors. Returns the
    recipe of ``probe.glue`` and its majority floor (for the balance)."""
    prep, train = c.prep, c.prep.train
    if train is None:
        c.notes.append("probe.glue skipped: the task has no train split")
        return None
    data, y = prep.data, prep.report.labels
    reg = data.kind == "regression"
    metric = glue_metric(data.name, data.kind)
    names = _scores_of(data.kind, data.num_classes or int(np.max(y)) + 1)
    r = probes.glue_probe(c.features("train"), train.labels, c.features("report"), y, metric=metric,
                          regression=reg, seed=c.seed)
    c.pe["probe_pred"] = np.asarray(r.predictions, dtype=np.float64)
    c.details["probe_glue"] = {"metric": metric, **_jsonable(r.chosen)}
    specs = {}
    for sc in names:
        if sc == "accuracy":
            c.pe["probe_correct"] = (np.asarray(r.predictions) == y).astype(np.float64)
            specs[sc] = {"type": "mean", "key": "probe_correct"}
        else:
            specs[sc] = {"type": "score", "score": sc, "pred": "probe_pred", "target": "labels"}
        c.add(f"probe.{sc}", specs[sc])
    c.m["probe.glue"] = dict(c.m[f"probe.{metric}"], label=f"{metric} ({data.name}) of the standardised L2 probe")
    # floors (encoder-independent: computed once per task)
    key = ("probe_floors", metric)
    if key not in prep.cache:
        maj = probes.majority_predictions(train.labels, len(y), reg)
        fl = {sc: {"majority": float(SCORES[sc](maj, y))} for sc in names}
        rl = probes.glue_probe(_length_x(prep, "train"), train.labels, _length_x(prep, "report"), y,
                               metric=metric, regression=reg, seed=c.seed)
        for sc in names:
            fl[sc]["length_only"] = float(SCORES[sc](rl.predictions, y))
        prep.cache[key] = fl
    fl = prep.cache[key]
    for sc in names:
        c.floors[f"probe.{sc}"] = dict(fl[sc])
    c.floors["probe.glue"] = dict(fl[metric])
    return {"spec": specs[metric], "chance": fl[metric]["majority"], "length_only": fl[metric]["length_only"]}


def _content(c: _Ctx) -> dict | None:
    """``lexical.content_auc`` with its bag-of-words ceiling and length-only floor."""
    prep = c.prep
    if prep.train is None:
        c.notes.append("lexical.content_auc skipped: the task has no train split")
        return None
    if "content" not in prep.cache:
        try:
            vocab = lexical.content_vocabulary(prep.ref_ids["train"], prep.id_to_token, prep.special,
                                               max_df=prep.cache.get("content_max_df", 0.05))
            y_tr, y_te = lexical.presence(prep.ref_ids["train"], vocab), lexical.presence(prep.ref_ids["report"], vocab)
            bow_tr, bow_te = lexical.bow_features(prep.ref_ids["train"], prep.ref_ids["report"], prep.special)
            ceil = lexical.multilabel_probe(bow_tr, y_tr, bow_te, y_te, seed=c.seed)
            length = lexical.multilabel_probe(_length_x(prep, "train"), y_tr, _length_x(prep, "report"), y_te,
                                              seed=c.seed)
            prep.cache["content"] = {"vocab": vocab, "y_tr": y_tr, "y_te": y_te, "ceiling": ceil, "length": length}
        except ValueError as e:
            prep.cache["content"] = {"error": str(e)}
    info = prep.cache["content"]
    if "error" in info:
        c.notes.append(f"lexical.content_auc skipped: {info['error']}")
        return None
    r = lexical.multilabel_probe(c.x_tr, info["y_tr"], c.x, info["y_te"], seed=c.seed)
    c.pe["lexical_content"] = r.per_example
    c.add("lexical.content_auc", {"type": "mean", "key": "lexical_content"})
    c.pe["lexical_bow"] = info["ceiling"].per_example
    c.add("lexical.bow_ceiling", {"type": "mean", "key": "lexical_bow"})
    c.floors["lexical.content_auc"] = {"majority": 0.5, "length_only": info["length"].auc}
    c.m["lexical.content_auc"]["ceiling"] = {"bag_of_words": info["ceiling"].auc}
    c.details["lexical_content"] = {"alpha": r.chosen["alpha"], "n_words": len(info["vocab"]),
                                    "words": [prep.id_to_token(t) for t in info["vocab"]]}
    return {"spec": {"type": "mean", "key": "lexical_content"}, "length_only": info["length"].auc}


def _balance(c: _Ctx, sem: dict | None, lex: dict | None) -> None:
    if sem is None or lex is None:
        return
    if not sem["chance"] < 1.0:
        c.notes.append("balance.normalised skipped: the majority floor already scores 1")
        return
    spec = {"type": "difference", "a": {"type": "normalised", "a": sem["spec"], "chance": sem["chance"], "ceiling": 1.0},
            "b": {"type": "normalised", "a": lex["spec"], "chance": 0.5, "ceiling": 1.0}}
    c.add("balance.normalised", spec)
    c.floors["balance.normalised"] = {"majority": 0.0, "length_only": probes.normalised_balance(
        sem["length_only"], sem["chance"], lex["length_only"])}


def _alignment(c: _Ctx) -> None:
    """``geometry.alignment`` on the task's real positive pairs (pair tasks only)."""
    prep, data, y = c.prep, c.prep.data, c.prep.report.labels
    if not prep.report.is_pair:
        return
    if data.kind == "regression":
        positive = y >= POSITIVE_SCORE
    elif data.name in POSITIVE_LABEL:
        positive = y == POSITIVE_LABEL[data.name]
    else:
        return
    if positive.sum() < 1 or len(y) < 3:
        c.notes.append("geometry.alignment skipped: no positive pair on the reported split")
        return
    pos, rand = geometry.pair_alignment_terms(*c.sides("report"))
    c.pe["align_pos"] = np.where(positive, pos, np.nan)
    c.pe["align_rand"] = rand
    c.add("geometry.alignment", {"type": "ratio", "a": {"type": "mean", "key": "align_pos"},
                                 "b": {"type": "mean", "key": "align_rand"}})
    c.details["alignment"] = {"positive_pairs": int(positive.sum()),
                              "rule": f"score >= {POSITIVE_SCORE}" if data.kind == "regression"
                              else f"label == {POSITIVE_LABEL[data.name]}"}


def _lexical_paper(c: _Ctx) -> dict | None:
    """The paper's most-frequent-wordpiece probe (3-fold CV on the reported split): a faithful
    replica. Returns its recipe."""
    prep, x, n, seed = c.prep, c.x, c.n, c.seed
    lex_dev, keep_dev = probes.most_frequent_wordpiece_labels(prep.ref_ids["report"], prep.special, 5)
    if np.unique(lex_dev[keep_dev]).size < 2:
        c.notes.append("lexical probe (paper) skipped: fewer than 2 wordpiece classes with >= 5 texts")
        return None
    try:
        r = probes.lexical_probe_paper(x[keep_dev], lex_dev[keep_dev], seed=seed)
    except ValueError as e:
        c.notes.append(f"lexical probe (paper) skipped: {e}")
        return None
    c.pe["lexical_paper_correct"] = _nan_full(n, np.flatnonzero(keep_dev), r.correct)
    spec = {"type": "mean", "key": "lexical_paper_correct"}
    c.add("lexical.probe_paper", spec)
    c.details["lexical_probe_paper"] = {"fold_mean": r.score, **_jsonable(r.chosen)}
    return spec


def _semantic_paper(c: _Ctx, lex_paper: dict | None) -> None:
    """``semantic.cv_paper`` (the paper's CV on the reported split) and the paper's balance
    (its semantic minus its lexical score): faithful replicas, ``faithful=True`` only."""
    x, y, seed = c.x, c.prep.report.labels, c.seed
    try:
        if c.prep.data.kind == "regression":
            r = probes.sts_regressor_cv_paper(x, y, seed=seed)
            c.pe["semantic_cv_pred"] = r.predictions.astype(np.float64)
            spec = {"type": "spearman", "pred": "semantic_cv_pred", "target": "labels"}
        else:
            r = probes.semantic_probe_cv_paper(x, y, seed=seed)
            c.pe["semantic_cv_correct"] = r.correct.astype(np.float64)
            spec = {"type": "mean", "key": "semantic_cv_correct"}
    except ValueError as e:
        c.notes.append(f"semantic CV (paper) skipped: {e}")
        return
    c.add("semantic.cv_paper", spec)
    c.details["semantic_cv_paper"] = {"fold_mean": r.score, **_jsonable(r.chosen)}
    if lex_paper is not None:
        c.add("balance.difference", {"type": "difference", "a": spec, "b": lex_paper})


def _sts_zero_shot(c: _Ctx) -> None:
    if c.prep.data.kind != "regression" or not c.prep.report.is_pair:
        return
    u, v = c.sides("report")
    c.pe["sts_cosine"] = np.einsum("ij,ij->i", u, v) / np.maximum(
        np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
    c.add("semantic.sts_zero_shot", {"type": "spearman", "pred": "sts_cosine", "target": "labels"})


def _linear_probe(c: _Ctx) -> None:
    """The paper's LayerNorm -> Dropout -> Linear probe; lr/epoch chosen on 10 % of train."""
    train, report, reg = c.prep.train, c.prep.report, c.prep.data.kind == "regression"
    f_tr, f_te = c.features("train"), c.features("report")
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


def _decorate(c: _Ctx, floor_metrics: dict | None, floor_note: str | None) -> None:
    """Add label / better / faithful_replica from the registry and the floors to every entry."""
    for name, e in c.m.items():
        info = metric_info(name)
        e.setdefault("label", info["label"])
        e["better"] = info["better"]
        if info["faithful_replica"]:
            e["faithful_replica"] = True
        fl = dict(c.floors.get(name, {}))
        if floor_metrics is not None and name in floor_metrics:
            v = floor_metrics[name].get("value")
            fl["random_init"] = math.nan if v is None else float(v)
        if fl:
            e["floors"] = fl
    if floor_note:
        c.notes.append(floor_note)


def _evaluate_pooling(prep: _Prepared, pooling: str, enc: TextEncoder, *, faithful: bool, seed: int,
                      n_boot: int, n_boot_geometry: int, max_len: int, pooler_epochs: int,
                      floor_metrics: dict | None = None, floor_note: str | None = None) -> tuple[dict, np.ndarray]:
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
    if data.kind == "regression":  # STS-B: scores binned into 5 classes for the paper's alignment / class ratio
        lo, hi = (0.0, 5.0) if y.min() >= 0 and y.max() <= 5 else (None, None)
        c.pe["geometry_labels"] = geometry.bin_scores(y, 5, lo, hi)
    else:
        c.pe["geometry_labels"] = y.astype(np.int64)
    geo, reps, sv = _geometry(c.x, c.pe["geometry_labels"], n_boot_geometry, seed)
    c.m.update(geo)
    _alignment(c)
    sem = _probe(c)
    lex = _content(c)
    _balance(c, sem, lex)
    _sts_zero_shot(c)
    lex_paper = _lexical_paper(c)
    if faithful:
        _semantic_paper(c, lex_paper)
    if pooling == "mean" and train is not None:
        _linear_probe(c)
    _decorate(c, floor_metrics, floor_note)
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


def load_result(path: str | Path) -> dict:
    """Read one ``<task>/<pooling>.json``; per-example lists come back as float arrays (None -> NaN)."""
    res = json.loads(Path(path).read_text())
    res["per_example"] = {k: np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
                          for k, vals in res.get("per_example", {}).items()}
    for e in res["metrics"].values():
        for k in ("value", "low", "high"):
            e[k] = math.nan if e[k] is None else e[k]
    return res


# --------------------------------------------------------------------------- output directory and floors

def _identity(spec_str: str, enc: TextEncoder) -> dict:
    try:
        sha = weights_sha(enc)
    except AttributeError:  # an encoder without a torch model: identified by name only
        sha = None
    return {"encoder": spec_str, "encoder_name": enc.name, "weights_sha256": sha}


def _claimed_by(out: Path) -> dict | None:
    """The identity recorded in ``out`` (encoder.json, summary.json, else any task result), or None."""
    cand = [out / "encoder.json", out / "summary.json"] + sorted(p for p in out.glob("*/*.json") if p.parent.name not in (FLOOR_DIRNAME, "extras"))
    for p in cand:
        if p.is_file():
            try:
                rec = json.loads(p.read_text())
            except (ValueError, UnicodeDecodeError):
                raise ValueError(f"eval: {p} is not a readable result file; pass another --out or remove it") from None
            rec = rec.get("meta", rec) if p.parent != out else rec
            if isinstance(rec, dict) and "encoder_name" in rec:
                return rec
    return None


def _check_out_dir(out: Path, ident: dict) -> None:
    """Refuse a directory holding another encoder's results (never mix two encoders)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"eval: --out {out} is a file, not a directory")
    other = _claimed_by(out) if out.is_dir() else None
    if other is None:
        return
    same = (other.get("weights_sha256") == ident["weights_sha256"] if other.get("weights_sha256") and
            ident["weights_sha256"] else other.get("encoder_name") == ident["encoder_name"])
    if not same:
        sha = other.get("weights_sha256") or "unknown"
        raise ValueError(f"eval: {out} already holds results of another encoder "
                         f"({other.get('encoder', other.get('encoder_name'))!r}, weights sha256 {sha[:12]}); "
                         "pass another --out or remove that directory (results of two encoders are never mixed)")


def _examples_hash(sp: Split | None) -> str:
    h = hashlib.sha1()
    if sp is None:
        return h.hexdigest()
    for i in range(len(sp)):
        h.update(sp.text_a[i].encode())
        h.update(b"\x00" + (sp.text_b[i].encode() if sp.text_b is not None else b"") + b"\x01")
        h.update(repr(float(sp.labels[i])).encode())
    return h.hexdigest()


class _Floors:
    """The random-init floor: the same evaluation on ``random_init_like(enc, seed)``, cached on
    disk per (floor weights, tokenizer, task examples, settings) under ``cache_dir``."""

    def __init__(self, enc: TextEncoder, seed: int, cache_dir: Path):
        self.enc, self.seed, self.cache_dir = enc, seed, cache_dir
        self._floor: TextEncoder | None = None
        self.error: str | None = None
        self.info: dict | None = None

    def encoder(self) -> TextEncoder | None:
        if self._floor is None and self.error is None:
            try:
                self._floor = random_init_like(self.enc, self.seed)
                self.info = {"encoder": self._floor.name, "seed": self.seed, "weights_sha256": weights_sha(self._floor),
                             "tokenizer_sha256": tokenizer_sha(self._floor), "cache": str(self.cache_dir)}
            except (TypeError, AttributeError, OSError, ValueError) as e:
                self.error = f"random-init floor unavailable: {e}"
        return self._floor

    def task_floors(self, task: str, selected, poolings, settings: dict, run_kw: dict) -> tuple[dict, str | None]:
        """pooling -> metrics of the floor encoder (computed or read from the cache)."""
        fenc = self.encoder()
        if fenc is None:
            return {}, self.error
        data, report, train = selected
        key = hashlib.sha1(json.dumps({"v": RESULT_VERSION, "w": self.info["weights_sha256"],
                                       "t": self.info["tokenizer_sha256"], "task": task, "seed": self.seed,
                                       "report": _examples_hash(report), "train": _examples_hash(train),
                                       **settings}, sort_keys=True).encode()).hexdigest()[:16]
        tdir = self.cache_dir / f"{task}-{key}"
        out, todo = {}, []
        for p in poolings:
            f = tdir / f"{p}.json"
            if f.is_file():
                try:
                    out[p] = json.loads(f.read_text())["metrics"]
                    continue
                except (ValueError, KeyError):
                    pass
            todo.append(p)
        if todo:
            prep = _prepare(fenc, task, selected=selected, seed=self.seed, **run_kw)
            prep.cache["content_max_df"] = settings["content_max_df"]
            tdir.mkdir(parents=True, exist_ok=True)
            for p in todo:
                res, _ = _evaluate_pooling(prep, p, fenc, faithful=settings["faithful"], seed=self.seed, n_boot=0,
                                           n_boot_geometry=0, max_len=settings["max_len"],
                                           pooler_epochs=settings["pooler_epochs"])
                res.pop("per_example")
                res["meta"] = {"floor_of": self.enc.name, **self.info}
                tmp = tdir / f".{p}.json.tmp"
                tmp.write_text(json.dumps(_jsonable(res), indent=1))
                tmp.replace(tdir / f"{p}.json")
                out[p] = res["metrics"]
        return out, None


# --------------------------------------------------------------------------- entry point

def evaluate(encoder_spec: str | TextEncoder, tasks: Sequence[str], poolings: Sequence[str] = DEFAULT_POOLINGS,
             out_dir: str | Path = "eval", *, glue_dir: str | Path | None = None, faithful: bool = False,
             max_examples: int | None = 2000, max_train: int | None = 4000, seed: int = 0, n_boot: int = 1000,
             n_boot_geometry: int = 100, batch_size: int = 64, max_len: int = 128, device: str | None = None,
             pooler_epochs: int = 8, random_floor: bool = True, floor_seed: int = 0,
             floor_cache: str | Path | None = None, content_max_df: float = 0.05,
             progress: bool = True) -> list[dict]:
    """Evaluate one frozen encoder on ``tasks`` under ``poolings``; write results to ``out_dir``.

    ``encoder_spec``: a :class:`TextEncoder` or a spec for :func:`load_text_encoder`
    ('minilm', 'random:<dir>', an export/run/checkpoint dir). ``faithful``: the paper's protocol
    (joined "s1 [SEP] s2" without attention mask, untrained weighted/attention poolings) and its
    CV-on-dev probes beside the headline ones. ``max_examples`` / ``max_train``: seeded
    stratified subsets (by class; STS-B by genre) of the reported split / train, drawn with
    :data:`~predrecon.eval.tasks.SUBSET_SEED` so every encoder and seed sees the same examples.
    ``n_boot``: bootstrap resamples for probe metrics; ``n_boot_geometry``: for geometry (each
    recomputes the suite). ``random_floor``: also evaluate the same-shape random-init encoder
    (seed ``floor_seed``) and store its values as ``floors.random_init``; cached under
    ``floor_cache`` (default ``out_dir/random_init``; pass one shared folder to reuse it across
    runs). ``content_max_df``: the largest train document frequency of a content-word target
    (:func:`~predrecon.eval.lexical.content_vocabulary`). ``out_dir`` holding another encoder's results is refused with ``ValueError``.
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
    out = Path(out_dir)
    ident = _identity(spec_str, enc)
    _check_out_dir(out, ident)
    try:
        ref_tok = reference_tokenizer()
    except Exception:  # no bert-base-uncased package: fall back to the encoder's own tokenizer
        ref_tok = enc.tokenizer
    out.mkdir(parents=True, exist_ok=True)
    base = {"version": RESULT_VERSION, **ident, "faithful": faithful, "seed": seed, "subset_seed": SUBSET_SEED}
    # the directory's owner, written before any result (summary.json only at the end: its presence
    # marks a finished evaluation)
    (out / "encoder.json").write_text(json.dumps(_jsonable(base), indent=1))
    floors = _Floors(enc, floor_seed, Path(floor_cache) if floor_cache else out / FLOOR_DIRNAME) if random_floor else None
    run_kw = dict(glue_dir=glue_dir, faithful=faithful, max_examples=max_examples, max_train=max_train,
                  batch_size=batch_size, max_len=max_len, ref_tok=ref_tok)
    settings = {"faithful": faithful, "max_len": max_len, "pooler_epochs": pooler_epochs,
                "content_max_df": content_max_df}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks) * len(poolings), disable=not progress, desc="eval")
    results, summary_rows = [], []
    for task in tasks:
        t_task = time.perf_counter()
        selected = _select(task, glue_dir, max_examples, max_train)
        floor_res, floor_note = {}, None
        if floors is not None:
            bar.set_description(f"eval {task}: random-init floor")
            floor_res, floor_note = floors.task_floors(task, selected, poolings, settings, run_kw)
        bar.set_description(f"eval {task}: encoding")
        prep = _prepare(enc, task, selected=selected, seed=seed, **run_kw)
        prep.cache["content_max_df"] = content_max_df
        ex_hash = _examples_hash(prep.report)
        for pooling in poolings:
            bar.set_description(f"eval {task}/{pooling}")
            t0 = time.perf_counter()
            res, emb = _evaluate_pooling(prep, pooling, enc, faithful=faithful, seed=seed, n_boot=n_boot,
                                         n_boot_geometry=n_boot_geometry, max_len=max_len,
                                         pooler_epochs=pooler_epochs, floor_metrics=floor_res.get(pooling),
                                         floor_note=floor_note)
            res["meta"] = {**ident, "dim": enc.dim, "faithful": faithful, "seed": seed, "subset_seed": SUBSET_SEED,
                           "max_examples": max_examples, "max_train": max_train, "max_len": max_len,
                           "n_boot": n_boot, "n_boot_geometry": n_boot_geometry, "examples_sha1": ex_hash,
                           "floors": None if floors is None else (floors.info or {"error": floors.error}),
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
    summary = {**base, "tasks": list(tasks), "poolings": list(poolings),
               "floors": None if floors is None else {"random_init": floors.info, "error": floors.error},
               "rows": summary_rows}
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=1))
    return results
