"""Evaluations beyond the paper, per frozen encoder: few-shot probes, robustness to text
perturbations, zero-shot cross-lingual topic transfer and zero-shot similarity.

Registry :data:`EXTRAS` (name -> function); :func:`run_extras` runs a selection and writes one
JSON per extra to ``out_dir/extras/<name>.json`` (plus ``fewshot.png``). Every file follows one
schema (:func:`extra_record`), read by :func:`predrecon.eval.report.extras_report.compare_extras`:

``{"extra", "schema", "encoder", "dim", "seed", "params", "seconds", "notes",
"metrics": {name: entry}, "per_example": {key: [float]}, "details": {...}}``

Each ``entry`` is the metric entry of every suite (:func:`predrecon.eval.records.entry`):
``{"value", "low", "high", "n", "method", "resample"}`` with ``label``, ``tested``, ``coords``,
``examples`` and, where they apply, ``better`` and ``floors``. ``resample`` is a
:func:`~predrecon.eval.records.make_statistic` recipe over ``per_example`` (``{"type": "mean",
"key": k}`` for per-example scores, e.g. 0/1 correctness; ``{"type": "spearman", "pred": k,
"target": k}``) that the paired tests of :func:`~predrecon.eval.records.paired_entry_test`
resample; ``examples`` is a SHA-1 of the evaluated texts and labels (paired tests need equal
hashes). ``tested: false`` marks values drawn in figures only (per-rate robustness drops,
majority baselines).

Protocol: the encoder is frozen and texts are mean-pooled over their tokens (attention mask on,
not the paper's faithful mode). Training pools and test sets are *fixed* subsets
(:data:`SUBSET_SEED`, independent of ``seed``), so every arm and seed sees the same examples;
``seed`` drives the probes and the few-shot draws.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import stats as sps
from threadpoolctl import threadpool_limits

from ..encode.encoders import TextEncoder
from ..encode.pooling import build_pooler
from ..metrics.fewshot import EmbedFn, embed_texts, fit_probe, mean_ci, pair_features, plot_fewshot, sample_k_per_class
from ..metrics.stats import bootstrap_ci, t_interval
from ..records import check_entries, entry, jsonable
from ..tasks.registry import TASKS, Split, TaskData, available_tasks, get_task, stratified_subset
from .robustness import perturb_split

SCHEMA_VERSION = 2  # 2: entries of the shared record contract (method, better, floors)
SUBSET_SEED = 20240607  # fixed subsets of train/test: the same examples for every arm and seed
SIMILARITY_SETS = ("wordsim353", "simlex999", "lee")
CROSSLINGUAL_LANGS = ("es", "fr")
#: numpy/scipy BLAS threads while running extras: small lbfgs probes are ~50x slower with 2
#: threads on a loaded 2-core machine (measured 14 s vs 0.2 s for 1000 x 128, 11 classes).
PROBE_BLAS_THREADS = 1


# --------------------------------------------------------------------------- embedding

def embed_fn(encoder: TextEncoder, pooling: str = "mean", batch_size: int = 64,
             max_len: int = 128, chunk: int = 1024) -> EmbedFn:
    """``texts -> (n, D) float32`` embeddings of a frozen ``encoder`` (order preserved).

    Texts are encoded with the attention mask (``encoder.encode_tokens``) and pooled by the
    parameter-free pooling ``pooling`` ('mean' | 'max' | 'cls'; masked, padding never pooled).
    ``chunk`` texts are encoded at a time to bound the memory of per-token states.
    """
    pooler = build_pooler(pooling, encoder.dim)
    if pooler.trainable:
        raise ValueError(f"embed_fn: pooling {pooling!r} has parameters that must be trained; "
                         "use a parameter-free pooling ('mean', 'max', 'cls')")
    if chunk < 1:
        raise ValueError(f"embed_fn: chunk must be >= 1, got {chunk}")

    def embed(texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        parts = []
        for s in range(0, len(texts), chunk):
            states = encoder.encode_tokens(texts[s:s + chunk], batch_size=batch_size, max_len=max_len)
            parts.append(pooler.pool(states))  # (c, D)
        return np.concatenate(parts, axis=0).astype(np.float32, copy=False)

    return embed


class CachedEmbed:
    """An :data:`EmbedFn` that encodes every distinct text once (memoised by the text).

    ``n_encoded`` / ``seconds`` count the texts actually sent to the encoder and the time spent.
    """

    def __init__(self, embed: EmbedFn):
        self.embed = embed
        self.cache: dict[str, np.ndarray] = {}
        self.n_encoded = 0
        self.seconds = 0.0

    def __call__(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        new = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if new:
            t0 = time.perf_counter()
            x = embed_texts(self.embed, new, "new texts")  # (m, D)
            self.seconds += time.perf_counter() - t0
            self.n_encoded += len(new)
            self.cache.update(zip(new, x))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts]).astype(np.float32, copy=False)  # (n, D)


# --------------------------------------------------------------------------- record helpers

def metric_entry(value: float, low: float = math.nan, high: float = math.nan, n: int = 0, *, label: str = "",
                 method: str = "none", tested: bool = True, coords: dict | None = None,
                 resample: dict | None = None, examples: str | None = None, better: str | None = None,
                 floors: dict | None = None) -> dict:
    """One metric of a suite record: the shared entry of :func:`predrecon.eval.records.entry`
    with ``label``, ``tested``, ``coords``, ``examples`` (and ``better`` / ``floors`` when given)."""
    return entry(value, low, high, n, method, resample, label=label, tested=bool(tested), coords=dict(coords or {}),
                 examples=examples, better=better, floors=None if floors is None else dict(floors))


def extra_record(extra: str, encoder: str, dim: int, seed: int, params: dict, metrics: dict,
                 per_example: dict | None = None, details: dict | None = None,
                 notes: Sequence[str] = (), seconds: float = math.nan) -> dict:
    """A suite record in schema :data:`SCHEMA_VERSION`; checks every entry against the record
    contract (:func:`predrecon.eval.records.check_entries`: required fields, ``resample`` keys
    naming ``per_example`` vectors of length ``n``)."""
    per_example = {k: np.asarray(v, dtype=np.float64) for k, v in (per_example or {}).items()}
    check_entries(f"extra {extra!r}", metrics, per_example)
    return {"extra": extra, "schema": SCHEMA_VERSION, "encoder": encoder, "dim": int(dim), "seed": int(seed),
            "params": params, "seconds": float(seconds), "notes": list(notes), "metrics": metrics,
            "per_example": per_example, "details": details or {}}


def examples_sha1(split: Split) -> str:
    """SHA-1 of a split's texts and labels (identifies the evaluated examples)."""
    h = hashlib.sha1()
    for i in range(len(split)):
        h.update(split.text_a[i].encode() + b"\x00")
        h.update((split.text_b[i].encode() if split.text_b is not None else b"") + b"\x01")
        h.update(repr(float(split.labels[i])).encode())
    return h.hexdigest()


def save_record(record: dict, path: str | Path) -> Path:
    """Write a record as JSON (NaN -> null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(record), indent=1, allow_nan=False))
    return path


def load_record(path: str | Path) -> dict:
    """Read a record written by :func:`save_record` (schema 1 records too: their ``interval``
    becomes ``method``); null -> NaN in metrics and per-example vectors (float arrays). Raises
    ``ValueError`` naming the file on a wrong schema."""
    path = Path(path)
    rec = json.loads(path.read_text())
    if rec.get("schema") not in (1, SCHEMA_VERSION) or "metrics" not in rec:
        raise ValueError(f"{path}: not an extras record of schema {SCHEMA_VERSION}")
    for m in rec["metrics"].values():
        if "method" not in m:  # schema 1 named the interval's method "interval"
            m["method"] = m.pop("interval", None) or "none"
        for k in ("value", "low", "high"):
            m[k] = math.nan if m[k] is None else m[k]
    rec["per_example"] = {k: np.array([math.nan if v is None else v for v in vals], dtype=np.float64)
                          for k, vals in rec.get("per_example", {}).items()}
    return rec


# --------------------------------------------------------------------------- shared pieces

class _Context:
    """What every extra of one :func:`run_extras` call shares: the cached embedder, loaded tasks."""

    def __init__(self, encoder: TextEncoder, embed: CachedEmbed, *, seed, n_boot, max_train, max_test, glue_dir):
        self.encoder, self.embed, self.seed, self.n_boot = encoder, embed, seed, n_boot
        self.max_train, self.max_test, self.glue_dir = max_train, max_test, glue_dir
        self._tasks: dict[str, TaskData] = {}

    def task(self, name: str) -> TaskData:
        if name not in self._tasks:
            if name not in available_tasks():  # imports the loaders without loading any data
                raise KeyError(f"unknown task {name!r} (known: {', '.join(available_tasks())})")
            kw = {"glue_dir": self.glue_dir} if "glue_dir" in inspect.signature(TASKS[name]).parameters else {}
            self._tasks[name] = get_task(name, **kw)
        return self._tasks[name]

    def classification(self, name: str) -> tuple[TaskData, Split, Split]:
        """The task with its fixed train pool (<= max_train) and test set (<= max_test)."""
        task = self.task(name)
        if task.kind != "classification" or task.train is None:
            raise ValueError(f"task {name!r}: need a classification task with a train split, got {task.kind!r}")
        return task, fixed_subset(task.train, self.max_train), fixed_subset(task.report_split, self.max_test)


def fixed_subset(split: Split, cap: int | None) -> Split:
    """``cap`` rows of ``split``: a stratified (by class) subset drawn with :data:`SUBSET_SEED`
    (kept in order), or all of it."""
    return stratified_subset(split, cap, SUBSET_SEED)


def _features(embed: EmbedFn, split: Split) -> np.ndarray:
    ea = embed_texts(embed, split.text_a, "text_a")
    return ea if split.text_b is None else pair_features(ea, embed_texts(embed, split.text_b, "text_b"))


def spearman_rows(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair: (..., n), (..., n) -> (...) (average ranks for
    ties; NaN for a constant row)."""
    rp = sps.rankdata(pred, axis=-1)
    rt = sps.rankdata(target, axis=-1)
    rp = rp - rp.mean(axis=-1, keepdims=True)
    rt = rt - rt.mean(axis=-1, keepdims=True)
    den = np.sqrt((rp * rp).sum(-1) * (rt * rt).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rp * rt).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _row_cosine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    den = np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
    return np.clip((u * v).sum(axis=1) / den, -1.0, 1.0)


# --------------------------------------------------------------------------- the extras

def extra_fewshot(ctx: _Context, *, task: str, ks: Sequence[int], draws: int, C: float = 1.0) -> dict:
    """Few-shot linear probes (the :func:`~predrecon.eval.metrics.fewshot.fewshot_curve` protocol and
    seeds), keeping each test example's accuracy over the draws for paired tests."""
    data, train, test = ctx.classification(task)
    x_train, x_test = _features(ctx.embed, train), _features(ctx.embed, test)
    y_train, y_test = train.labels, test.labels
    smallest = int(np.unique(y_train, return_counts=True)[1].min())
    used = sorted(int(k) for k in ks if k <= smallest)
    curve = {"ks": used, "mean": [], "low": [], "high": [], "accuracies": [],
             "skipped": sorted(int(k) for k in ks if k > smallest), "smallest_class": smallest,
             "draws": draws, "ci": 0.95, "interval": "t", "full": None}
    ex, metrics, per_example = examples_sha1(test), {}, {}
    for k in used:
        correct = np.zeros((draws, len(y_test)))  # (draws, n)
        for d in range(draws):
            draw_seed = int(np.random.SeedSequence([ctx.seed, k, d]).generate_state(1)[0])
            idx = sample_k_per_class(y_train, k, draw_seed)
            correct[d] = fit_probe(x_train[idx], y_train[idx], C=C, seed=ctx.seed).predict(x_test) == y_test
        accs = correct.mean(axis=1)
        s = t_interval(accs)
        for key, v in zip(("mean", "low", "high"), (s.mean, s.low, s.high)):
            curve[key].append(v)
        curve["accuracies"].append(accs.tolist())
        per_example[f"correct@k={k}"] = correct.mean(axis=0)  # fraction of draws right, (n,)
        metrics[f"accuracy@k={k}"] = metric_entry(
            s.mean, s.low, s.high, len(y_test), label=f"accuracy, k={k} per class", method=f"t over {draws} draws",
            better="higher", coords={"k": k}, resample={"type": "mean", "key": f"correct@k={k}"}, examples=ex)
    correct = (fit_probe(x_train, y_train, C=C, seed=ctx.seed).predict(x_test) == y_test).astype(float)
    curve["full"] = float(correct.mean())
    per_example["correct@all"] = correct
    b = bootstrap_ci(correct, lambda v: v.mean(axis=-1), n_boot=ctx.n_boot, seed=ctx.seed, vectorized=True)
    metrics["accuracy@all"] = metric_entry(
        correct.mean(), b.low, b.high, len(y_test), label=f"accuracy, all {len(y_train)} training examples",
        method="bootstrap-percentile", better="higher", coords={"k": "all"},
        resample={"type": "mean", "key": "correct@all"}, examples=ex)
    notes = [f"{task}: probes trained on k examples per class from a fixed pool of {len(train)} training "
             f"examples, tested on {len(test)} fixed examples; k > {smallest} (smallest class) skipped"]
    return {"params": {"task": task, "ks": list(ks), "draws": draws, "C": C, "n_train": len(train),
                       "n_test": len(test)},
            "metrics": metrics, "per_example": per_example, "details": {"curve": curve}, "notes": notes + data.notes}


def extra_robustness(ctx: _Context, *, task: str, kinds: Sequence[str], rates: Sequence[float],
                     C: float = 1.0, test_clean: bool = True) -> dict:
    """Robustness to text perturbations on fixed subsets (the protocol of
    :func:`~predrecon.eval.suites.robustness.robustness_eval`: one probe fit on clean training
    embeddings, test texts perturbed by :func:`~predrecon.eval.suites.robustness.perturb_split` per
    (kind, rate), intervals by :func:`~predrecon.eval.metrics.fewshot.mean_ci`), computed once from the
    per-example correctness and cosine kept for paired tests. ``test_clean=False`` marks the
    clean accuracy untested (it repeats few-shot's ``accuracy@all`` when both use the same task)."""
    data, train, test = ctx.classification(task)
    clf = fit_probe(_features(ctx.embed, train), train.labels, C=C, seed=ctx.seed)
    ex, y = examples_sha1(test), test.labels
    clean_parts = [ctx.embed(test.text_a)] + ([ctx.embed(test.text_b)] if test.is_pair else [])
    correct_clean = (clf.predict(_features(ctx.embed, test)) == y).astype(float)
    ca = mean_ci(correct_clean, ctx.n_boot, 0.95, ctx.seed)
    res = {"task": data.name, "n_train": len(train), "n_test": len(test), "clean_accuracy": ca, "results": []}
    metrics = {"clean_accuracy": metric_entry(ca["value"], ca["low"], ca["high"], len(y), label="clean accuracy",
                                              method="bootstrap-percentile", better="higher", coords={"kind": "clean"},
                                              tested=test_clean,
                                              resample={"type": "mean", "key": "correct.clean"}, examples=ex)}
    per_example = {"correct.clean": correct_clean}
    for kind in kinds:
        drops, coss = [], []
        for rate in rates:
            pert = perturb_split(test, kind, rate, ctx.seed)
            correct = (clf.predict(_features(ctx.embed, pert)) == y).astype(float)
            pert_parts = [ctx.embed(pert.text_a)] + ([ctx.embed(pert.text_b)] if pert.is_pair else [])
            cos_parts = [_row_cosine(c, p) for c, p in zip(clean_parts, pert_parts)]  # each (n,)
            drop = mean_ci(correct_clean - correct, ctx.n_boot, 0.95, ctx.seed)
            res["results"].append({"kind": kind, "rate": float(rate),
                                   "accuracy": mean_ci(correct, ctx.n_boot, 0.95, ctx.seed), "drop": drop,
                                   "cosine": mean_ci(np.concatenate(cos_parts), ctx.n_boot, 0.95, ctx.seed),
                                   "changed": float(np.mean([p != t for p, t in zip(pert.text_a, test.text_a)]))})
            drops.append(correct_clean - correct)
            coss.append(np.mean(cos_parts, axis=0))
            metrics[f"drop.{kind}@{rate:g}"] = metric_entry(
                drop["value"], drop["low"], drop["high"], len(y), label=f"accuracy drop, {kind} @ {rate:g}",
                method="bootstrap-percentile", better="lower", tested=False,
                coords={"kind": kind, "rate": float(rate)}, examples=ex)
        for what, vals in (("drop", drops), ("cosine", coss)):
            key = f"{what}.{kind}"
            per_example[key] = np.asarray(vals, dtype=np.float64).mean(axis=0)  # mean over rates, (n,)
            b = bootstrap_ci(per_example[key], lambda v: v.mean(axis=-1), n_boot=ctx.n_boot, seed=ctx.seed,
                             vectorized=True)
            label = (f"accuracy drop, {kind} (mean over rates)" if what == "drop"
                     else f"cosine(clean, perturbed), {kind} (mean over rates)")
            metrics[key] = metric_entry(b.value, b.low, b.high, len(y), label=label, method="bootstrap-percentile",
                                        better="lower" if what == "drop" else "higher", coords={"kind": kind},
                                        resample={"type": "mean", "key": key}, examples=ex)
    notes = [f"{task}: probe fit on {len(train)} clean training examples; {len(test)} test examples perturbed "
             f"at rates {', '.join(f'{r:g}' for r in rates)}; drop = clean minus perturbed accuracy"]
    return {"params": {"task": task, "kinds": list(kinds), "rates": [float(r) for r in rates], "C": C,
                       "n_train": len(train), "n_test": len(test)},
            "metrics": metrics, "per_example": per_example, "details": res, "notes": notes + data.notes}


def extra_crosslingual(ctx: _Context, *, langs: Sequence[str] = CROSSLINGUAL_LANGS, C: float = 1.0) -> dict:
    """Zero-shot topic transfer (the protocol of
    :func:`~predrecon.eval.tasks.builtin.crosslingual_transfer`: wiki-topic, probe trained on English
    leads, tested per language; ``accuracy_present`` takes the argmax over the classes present
    in a language's test split), computed once with per-example correctness. The majority-class
    rate is each accuracy's ``floors.majority`` (and a ``majority.<lang>`` entry drawn in figures)."""
    from ..tasks.builtin import SPLIT_VERSION, WIKI_TOPICS, load_wiki_topic

    train = load_wiki_topic("en", max_train=ctx.max_train).train
    clf = fit_probe(embed_texts(ctx.embed, train.text_a, "en train"), train.labels, C=C, seed=ctx.seed)
    res = {"train_lang": "en", "n_train": len(train), "split_version": SPLIT_VERSION, "results": {}}
    metrics, per_example = {}, {}
    for lang in dict.fromkeys(["en", *langs]):
        test = load_wiki_topic(lang, max_examples=ctx.max_test).test
        proba = clf.predict_proba(embed_texts(ctx.embed, test.text_a, f"{lang} test"))  # (n, C)
        present = np.isin(clf.classes_, np.unique(test.labels))
        counts = np.bincount(test.labels, minlength=len(WIKI_TOPICS))
        zero_shot, majority, ex = lang != "en", float(counts.max() / counts.sum()), examples_sha1(test)
        r = res["results"][lang] = {"n": len(test), "majority": majority, "zero_shot": zero_shot}
        for what, p in (("accuracy", proba), ("accuracy_present", np.where(present[None, :], proba, -np.inf))):
            correct = (clf.classes_[p.argmax(axis=1)] == test.labels).astype(float)
            r[what] = mean_ci(correct, ctx.n_boot, 0.95, ctx.seed)
            if what == "accuracy_present" and (not zero_shot or present.all()):
                continue  # equal to plain accuracy when every class occurs in the test split
            key = f"{what}.{lang}"
            per_example[f"correct.{key}"] = correct
            label = f"{'zero-shot ' if zero_shot else 'in-language '}accuracy, {lang}" + (
                " (argmax over classes present)" if what == "accuracy_present" else "")
            metrics[key] = metric_entry(r[what]["value"], r[what]["low"], r[what]["high"], len(test), label=label,
                                        method="bootstrap-percentile", better="higher",
                                        floors={"majority": majority}, coords={"lang": lang, "what": what},
                                        resample={"type": "mean", "key": f"correct.{key}"}, examples=ex)
        metrics[f"majority.{lang}"] = metric_entry(majority, n=len(test), label=f"majority class, {lang}",
                                                   tested=False, coords={"lang": lang, "what": "majority"})
    notes = [f"wiki-topic: probe on {len(train)} English training leads, tested on the first "
             f"{ctx.max_test or 'all'} test leads per language; es lacks 3 of the 11 topics"]
    return {"params": {"train_lang": "en", "langs": list(langs), "C": C, "n_train": len(train)},
            "metrics": metrics, "per_example": per_example, "details": res, "notes": notes}


def extra_similarity(ctx: _Context, *, sets: Sequence[str] = SIMILARITY_SETS) -> dict:
    """Zero-shot Spearman of the cosine of two embeddings with human similarity scores; word
    pairs encode each word alone, Lee encodes whole documents. Bootstrap interval over pairs."""
    metrics, per_example, details, notes = {}, {}, {}, []
    for name in sets:
        data = ctx.task(name)
        sp = data.report_split
        if sp.text_b is None:
            raise ValueError(f"similarity: task {name!r} has no second text (need pairs)")
        cos = _row_cosine(ctx.embed(sp.text_a), ctx.embed(sp.text_b)).astype(np.float64)  # (n,)
        y = sp.labels.astype(np.float64)
        b = bootstrap_ci(len(y), lambda idx, cos=cos, y=y: spearman_rows(cos[idx], y[idx]),  # idx (B, n) -> (B,)
                         n_boot=ctx.n_boot, seed=ctx.seed, vectorized=True)
        per_example[f"cos.{name}"], per_example[f"score.{name}"] = cos, y
        metrics[f"spearman.{name}"] = metric_entry(
            b.value, b.low, b.high, len(y), label=f"Spearman(cosine, human), {name}",
            method="bootstrap-percentile", better="higher", coords={"set": name},
            resample={"type": "spearman", "pred": f"cos.{name}", "target": f"score.{name}"},
            examples=examples_sha1(sp))
        details[name] = {"n_pairs": len(y), "spearman": b.value, "pearson": float(np.corrcoef(cos, y)[0, 1]),
                         "distinct_texts": len(set(sp.text_a) | set(sp.text_b))}
        notes += [f"{name}: {nt}" for nt in data.notes]
    notes.append("lee: the 1,225 pairs share 50 documents, so the bootstrap over pairs understates the uncertainty")
    return {"params": {"sets": list(sets)}, "metrics": metrics, "per_example": per_example, "details": details,
            "notes": notes}


#: name -> ``fn(ctx, **kw) -> {params, metrics, per_example, details, notes}``
EXTRAS: dict[str, Callable[..., dict]] = {
    "fewshot": extra_fewshot,
    "robustness": extra_robustness,
    "crosslingual": extra_crosslingual,
    "similarity": extra_similarity,
}


def run_extras(encoder: TextEncoder, out_dir: str | Path, *,
               extras: Sequence[str] = ("fewshot", "robustness", "crosslingual", "similarity"),
               seed: int = 0, n_boot: int = 1000, max_train: int | None = 1000, max_test: int | None = 300,
               fewshot_task: str = "bbc-news", robustness_task: str = "bbc-news",
               ks: Sequence[int] = (8, 32, 128, 512), draws: int = 5, rates: Sequence[float] = (0.05, 0.1, 0.2),
               kinds: Sequence[str] = ("typo", "word_dropout", "word_swap", "case"), batch_size: int = 64,
               max_len: int = 128, glue_dir: str | Path | None = None, torch_threads: int | None = None,
               progress: bool = True) -> dict:
    """Run the ``extras`` on a frozen ``encoder`` (mean pooling) and write
    ``out_dir/extras/<name>.json`` per extra (plus ``fewshot.png``); returns ``{name: record}``.

    ``max_train`` / ``max_test`` cap the training pools and test sets (fixed subsets shared by
    all arms and seeds); ``seed`` seeds probes, few-shot draws, perturbations and bootstraps.
    Each distinct text is encoded once across all extras. Unknown names raise ``ValueError``.
    ``torch_threads``: torch intra-op threads while running (restored after; None = unchanged).
    On a 2-core machine shared with other jobs, 1 thread was 2.6x faster than 2 (30 s vs 80 s for
    the defaults on a dim-128, 4-layer encoder).
    """
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise ValueError(f"unknown extra(s) {unknown} (known: {', '.join(EXTRAS)})")
    for name, cap in (("max_train", max_train), ("max_test", max_test)):
        if cap is not None and cap < 2:
            raise ValueError(f"run_extras: {name} must be >= 2 or None, got {cap}")
    if draws < 1:
        raise ValueError(f"run_extras: draws must be >= 1, got {draws}")
    if torch_threads is not None and torch_threads < 1:
        raise ValueError(f"run_extras: torch_threads must be >= 1 or None, got {torch_threads}")
    out = Path(out_dir) / "extras"
    out.mkdir(parents=True, exist_ok=True)
    ctx = _Context(encoder, CachedEmbed(embed_fn(encoder, "mean", batch_size, max_len)), seed=seed, n_boot=n_boot,
                   max_train=max_train, max_test=max_test, glue_dir=glue_dir)
    kwargs = {"fewshot": {"task": fewshot_task, "ks": tuple(ks), "draws": draws},
              "robustness": {"task": robustness_task, "kinds": tuple(kinds), "rates": tuple(rates),
                             "test_clean": not ("fewshot" in extras and fewshot_task == robustness_task)},
              "crosslingual": {}, "similarity": {}}
    from tqdm.auto import tqdm

    records = {}
    with _torch_threads(torch_threads):
        for name in tqdm(list(dict.fromkeys(extras)), desc="extras", disable=not progress):
            t0, n0, s0 = time.perf_counter(), ctx.embed.n_encoded, ctx.embed.seconds
            with threadpool_limits(limits=PROBE_BLAS_THREADS, user_api="blas"):  # torch encoding is unaffected
                parts = EXTRAS[name](ctx, **kwargs[name])
            seconds = time.perf_counter() - t0
            params = {**parts["params"], "max_train": max_train, "max_test": max_test, "n_boot": n_boot,
                      "max_len": max_len, "pooling": "mean", "texts_encoded": ctx.embed.n_encoded - n0,
                      "encode_seconds": ctx.embed.seconds - s0, "torch_threads": torch.get_num_threads()}
            rec = extra_record(name, encoder.name, encoder.dim, seed, params, parts["metrics"],
                               parts["per_example"], parts["details"], parts["notes"], seconds)
            save_record(rec, out / f"{name}.json")
            if name == "fewshot":
                plot_fewshot({encoder.name: parts["details"]["curve"]}, out / "fewshot.png",
                             title=f"few-shot linear probe, {fewshot_task} (dotted: all training data)")
            if progress:
                tqdm.write(f"[extras] {name}: {seconds:.1f}s ({params['texts_encoded']} texts encoded)")
            records[name] = rec
    return records


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Set torch's intra-op threads to ``n`` for the block (None: leave them)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
