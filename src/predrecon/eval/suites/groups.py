"""Metric groups of one (task, pooling): each fills the shared :class:`Ctx` with per-example
vectors, metric entries (via the recipes of :mod:`predrecon.eval.records`) and floors.
Definitions are documented in :mod:`predrecon.eval.suites.runner`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..metrics import geometry, lexical, probes
from ..metrics.scores import SCORES
from ..names import PROBE_SCORES, glue_metric, metric_info
from ..records import interval_entry, jsonable, nan_full
from ..tasks.registry import Split, TaskData

#: positive pairs for ``geometry.alignment``: the label of a positive pair per task;
#: regression tasks: gold score >= POSITIVE_SCORE.
POSITIVE_LABEL = {"mrpc": 1, "mnli": 0, "mnli-mm": 0}
POSITIVE_SCORE = 4.0


@dataclass
class Prepared:
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


@dataclass
class Ctx:
    """What the metric groups of one (task, pooling) share and fill in."""

    prep: Prepared
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
        self.m[name] = interval_entry(spec, self.pe, self.n, self.n_boot, self.seed)

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


def _length_x(prep: Prepared, split: str) -> np.ndarray:
    la, lb = prep.ref_len[split]
    return probes.length_features(la, lb)


def probe_group(c: Ctx) -> dict | None:
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
    c.details["probe_glue"] = {"metric": metric, **jsonable(r.chosen)}
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


def content_group(c: Ctx) -> dict | None:
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


def balance_group(c: Ctx, sem: dict | None, lex: dict | None) -> None:
    if sem is None or lex is None:
        return
    if not sem["chance"] < 1.0:
        c.notes.append("balance.normalised skipped: the majority floor already scores 1")
        return
    spec = {"type": "difference",
            "a": {"type": "normalised", "a": sem["spec"], "chance": sem["chance"], "ceiling": 1.0},
            "b": {"type": "normalised", "a": lex["spec"], "chance": 0.5, "ceiling": 1.0}}
    c.add("balance.normalised", spec)
    c.floors["balance.normalised"] = {"majority": 0.0, "length_only": probes.normalised_balance(
        sem["length_only"], sem["chance"], lex["length_only"])}


def alignment_group(c: Ctx) -> None:
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


def lexical_paper_group(c: Ctx) -> dict | None:
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
    c.pe["lexical_paper_correct"] = nan_full(n, np.flatnonzero(keep_dev), r.correct)
    spec = {"type": "mean", "key": "lexical_paper_correct"}
    c.add("lexical.probe_paper", spec)
    c.details["lexical_probe_paper"] = {"fold_mean": r.score, **jsonable(r.chosen)}
    return spec


def semantic_paper_group(c: Ctx, lex_paper: dict | None) -> None:
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
    c.details["semantic_cv_paper"] = {"fold_mean": r.score, **jsonable(r.chosen)}
    if lex_paper is not None:
        c.add("balance.difference", {"type": "difference", "a": spec, "b": lex_paper})


def sts_zero_shot_group(c: Ctx) -> None:
    if c.prep.data.kind != "regression" or not c.prep.report.is_pair:
        return
    u, v = c.sides("report")
    c.pe["sts_cosine"] = np.einsum("ij,ij->i", u, v) / np.maximum(
        np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
    c.add("semantic.sts_zero_shot", {"type": "spearman", "pred": "sts_cosine", "target": "labels"})


def linear_probe_group(c: Ctx) -> None:
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
    c.details["linear_probe_paper"] = jsonable(r.chosen)
    score = "spearman" if reg else "accuracy"  # the paper probe's own score: floors with the same score
    for key, fl in c.prep.cache.items():
        if isinstance(key, tuple) and key[0] == "probe_floors" and score in fl:
            c.floors["linear_probe.paper"] = dict(fl[score])


def decorate(c: Ctx, floor_metrics: dict | None, floor_note: str | None) -> None:
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
