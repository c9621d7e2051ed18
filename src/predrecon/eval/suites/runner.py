"""Evaluation runner: one frozen encoder x tasks x poolings -> metrics with intervals and floors.

:func:`evaluate` encodes every split of a task once (token states cached), pools them each
way and computes, on the task's reported split (``TaskData.report_split``, GLUE dev, or a
seeded stratified subset of it — never the first rows):

* ``geometry.*`` — :func:`~predrecon.eval.metrics.geometry.geometry_suite` (uniformity, anisotropy,
  spectra: effective rank, RankMe on the uncentred matrix, sigma^2 spectral entropy, power-law
  alpha and its R^2 on a fixed rank range; the paper's same-class ``alignment_paper``) and,
  for pair tasks, ``geometry.alignment`` on real positive pairs (MRPC paraphrases, MNLI
  entailments, STS-B pairs scoring >= 4): their mean squared distance over that of all
  non-matching pairs (:func:`~predrecon.eval.metrics.geometry.pair_alignment`);
* ``probe.glue`` — the headline probe (:func:`~predrecon.eval.metrics.probes.glue_probe`): standardised
  features, L2 logistic regression (Ridge for regression) with C / alpha chosen on a held-out
  20 % of train, scored with GLUE's own metric (:data:`~predrecon.eval.names.GLUE_METRIC`);
  ``probe.<score>`` beside it (accuracy, F1, MCC, balanced accuracy; Pearson, Spearman).
  Features: the pooled text, or for pairs ``[u; v; |u-v|; u*v]`` of the pooled sides;
* ``lexical.content_auc`` — recovery of mid-frequency content wordpieces, macro-AUC
  (:mod:`~predrecon.eval.metrics.lexical`), with ``lexical.bow_ceiling`` (the same probe on the true
  bag of words);
* ``balance.normalised`` — :func:`~predrecon.eval.metrics.probes.normalised_balance` of ``probe.glue``
  and ``lexical.content_auc``;
* ``semantic.sts_zero_shot`` — STS: Spearman of cos(u, v);
* faithful replicas of the paper (flag ``faithful_replica``): ``linear_probe.paper`` (mean
  pooling; LayerNorm -> Dropout -> Linear), ``lexical.probe_paper`` (most frequent wordpiece,
  3-fold CV on the reported split), ``geometry.alignment_paper``; with ``faithful=True`` also
  ``semantic.cv_paper`` and ``balance.difference``.

Floors (``floors`` of a metric entry): ``majority`` (train majority class / train mean, scored
with the same metric; 0.5 for AUCs), ``length_only`` (the same probe on token counts of each
side, :func:`~predrecon.eval.metrics.probes.length_features`) and ``random_init`` (the whole evaluation
repeated on the same-shape random-init encoder, :func:`~predrecon.eval.encode.encoders.random_init_like`,
seed ``floor_seed``; cached under ``floor_cache`` keyed by its weights, tokenizer, task examples
and settings, so the seeds of an experiment share it).

Intervals: every metric is ``{value, low, high}`` from a bootstrap over examples of the
reported split. Probes are never refit: their per-example predictions (or correctness, or AUC
placement values) are resampled by the recipe in ``resample`` (:func:`make_statistic`).
Geometry metrics are recomputed on ``n_boot_geometry`` resamples drawn like
:func:`~predrecon.eval.metrics.stats.paired_bootstrap_test` (``default_rng(seed).integers(0, n, n)``
per replicate); the replicate values are stored for ``compare``. A resample holds only ~63 %
distinct rows, which biases pairwise and rank metrics; geometry intervals are therefore
*bias-corrected percentile* intervals (``bootstrap_bias``) and remain approximate.

Output, per (task, pooling): ``out_dir/<task>/<pooling>.json`` (metrics, per-example vectors,
metadata) and ``out_dir/<task>/<pooling>.npy`` (pooled embeddings of the reported split,
float32 (n, D)); plus ``out_dir/summary.json`` naming the encoder (spec, weights sha256) and
the floors' source. A directory holding another encoder's results is refused.

Modules: the record contract (recipes, intervals, result files) is :mod:`.records`; the metric
groups of one (task, pooling) are :mod:`.groups`; this module prepares tasks, runs the groups
per pooling, computes the random-init floor and writes the results.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..encode.encoders import (
    TextEncoder,
    load_text_encoder,
    random_init_like,
    reference_tokenizer,
    tokenizer_sha,
    weights_sha,
)
from ..encode.pooling import POOLINGS, build_pooler
from ..metrics import geometry
from ..names import DEFAULT_POOLINGS
from ..records import bootstrap_indices, entry, jsonable, load_result, make_statistic, safe_suite, vectorized
from ..tasks.registry import SUBSET_SEED, Split, TaskData, get_task, stratified_subset
from .groups import (
    Ctx,
    Prepared,
    alignment_group,
    balance_group,
    content_group,
    decorate,
    lexical_paper_group,
    linear_probe_group,
    probe_group,
    semantic_paper_group,
    sts_zero_shot_group,
)

RESULT_VERSION = 2
FLOOR_DIRNAME = "random_init"

__all__ = ["DEFAULT_POOLINGS", "evaluate", "load_result", "make_statistic", "bootstrap_indices", "vectorized",
           "jsonable"]


# --------------------------------------------------------------------------- task preparation

def _load(task: str, glue_dir, max_examples: int | None) -> TaskData:
    import inspect

    from ..tasks.registry import task_loader

    params = inspect.signature(task_loader(task)).parameters  # raises on unknown names, loads no data
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
             batch_size, max_len, ref_tok, selected=None) -> Prepared:
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
        ref_len[name] = (np.array([len(i) for i in ids_a]),
                         None if ids_b is None else np.array([len(i) for i in ids_b]))
    special = {ref_tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")} - {None}
    return Prepared(data, train, report, joint, sides, ref_ids, ref_len, special,
                     time.perf_counter() - t0, n_enc, ref_tok.id_to_token)


# --------------------------------------------------------------------------- metrics per pooling

def _geometry(x: np.ndarray, geo_labels: np.ndarray | None, n_boot: int, seed: int):
    point = safe_suite(x, geo_labels, seed)
    names = [k for k in point if k not in ("n", "dim")]
    reps = {m: [] for m in names}
    for idx in bootstrap_indices(len(x), n_boot, seed):
        suite = safe_suite(x[idx], None if geo_labels is None else geo_labels[idx], seed)
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
        metrics[f"geometry.{m}"] = entry(point[m], lo, hi, len(x), "bootstrap-bias-corrected-percentile"
                                          if n_boot else "none", {"type": "geometry", "name": m})
        metrics[f"geometry.{m}"]["bootstrap_bias"] = bias
    return metrics, {"seed": seed, "n_boot": n_boot, "values": reps}, geometry.spectrum(x)


def _evaluate_pooling(prep: Prepared, pooling: str, enc: TextEncoder, *, faithful: bool, seed: int,
                      n_boot: int, n_boot_geometry: int, max_len: int, pooler_epochs: int,
                      floor_metrics: dict | None = None, floor_note: str | None = None) -> tuple[dict, np.ndarray]:
    data, train, y = prep.data, prep.train, prep.report.labels
    pooler = build_pooler(pooling, enc.dim, max_len=max(max_len, 8), seed=seed, faithful=faithful)
    fit_log: dict = {}
    if pooler.trainable and not faithful and train is not None:
        fit_log = pooler.fit(prep.joint["train"], train.labels, data.kind, data.num_classes, seed=seed,
                             epochs=pooler_epochs)
    c = Ctx(prep, pooler, pooler.pool(prep.joint["report"]),
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
    alignment_group(c)
    sem = probe_group(c)
    lex = content_group(c)
    balance_group(c, sem, lex)
    sts_zero_shot_group(c)
    lex_paper = lexical_paper_group(c)
    if faithful:
        semantic_paper_group(c, lex_paper)
    if pooling == "mean" and train is not None:
        linear_probe_group(c)
    decorate(c, floor_metrics, floor_note)
    result = {"version": RESULT_VERSION, "task": data.name, "kind": data.kind, "pooling": pooling,
              "pooling_status": pooler.status, "n_report": c.n, "n_train": 0 if train is None else len(train),
              "metrics": c.m, "details": c.details, "notes": list(data.notes) + c.notes,
              "spectrum": sv.tolist(), "geometry_replicates": reps,
              "per_example": {k: np.asarray(v) for k, v in c.pe.items()}}
    return result, c.x


# --------------------------------------------------------------------------- output directory and floors

def _identity(spec_str: str, enc: TextEncoder) -> dict:
    try:
        sha = weights_sha(enc)
    except AttributeError:  # an encoder without a torch model: identified by name only
        sha = None
    return {"encoder": spec_str, "encoder_name": enc.name, "weights_sha256": sha}


def _claimed_by(out: Path) -> dict | None:
    """The identity recorded in ``out`` (encoder.json, summary.json, else any task result), or None."""
    cand = [out / "encoder.json", out / "summary.json"] + sorted(
        p for p in out.glob("*/*.json") if p.parent.name not in (FLOOR_DIRNAME, "extras"))
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
        tdir = self.cache_dir / f"{data.name}-{key}"  # data.name: a file: spec holds a path
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
                tmp.write_text(json.dumps(jsonable(res), indent=1))
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
             progress: bool = True, spec_name: str | None = None) -> list[dict]:
    """Evaluate one frozen encoder on ``tasks`` under ``poolings``; write results to ``out_dir``.

    ``encoder_spec``: a :class:`TextEncoder` or a spec for :func:`load_text_encoder`
    ('minilm', 'random:<dir>', an export/run/checkpoint dir). ``faithful``: the paper's protocol
    (joined "s1 [SEP] s2" without attention mask, untrained weighted/attention poolings) and its
    CV-on-dev probes beside the headline ones. ``max_examples`` / ``max_train``: seeded
    stratified subsets (by class; STS-B by genre) of the reported split / train, drawn with
    :data:`~predrecon.eval.tasks.registry.SUBSET_SEED` so every encoder and seed sees the same examples.
    ``n_boot``: bootstrap resamples for probe metrics; ``n_boot_geometry``: for geometry (each
    recomputes the suite). ``random_floor``: also evaluate the same-shape random-init encoder
    (seed ``floor_seed``) and store its values as ``floors.random_init``; cached under
    ``floor_cache`` (default ``out_dir/random_init``; pass one shared folder to reuse it across
    runs). ``content_max_df``: the largest train document frequency of a content-word target
    (:func:`~predrecon.eval.metrics.lexical.content_vocabulary`). ``out_dir`` holding another
    encoder's results is refused with ``ValueError``.
    ``spec_name``: the spec recorded for an already loaded encoder (default: the spec
    string, else ``enc.name``). Returns the per-(task, pooling) result dicts (as written, without per-example vectors).
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
    from ..tasks.userfile import check_unique_names

    check_unique_names(tasks)  # results are stored by task name
    enc = encoder_spec if isinstance(encoder_spec, TextEncoder) else load_text_encoder(encoder_spec, device=device,
                                                                                      seed=seed)
    spec_str = spec_name or (encoder_spec if isinstance(encoder_spec, str) else enc.name)
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
    (out / "encoder.json").write_text(json.dumps(jsonable(base), indent=1))
    floor_dir = Path(floor_cache) if floor_cache else out / FLOOR_DIRNAME
    floors = _Floors(enc, floor_seed, floor_dir) if random_floor else None
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
            (tdir / f"{pooling}.json").write_text(json.dumps(jsonable(res), indent=1))
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
    (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=1))
    return results
