"""The evaluation record contract: metric recipes, intervals and result files.

Every suite writes the same metric entry (:func:`entry`, :data:`ENTRY_REQUIRED`):
``{value, low, high, n, method, resample}`` plus optional ``floors``, ``better``, ``label``,
``faithful_replica``, ``tested``, ``coords``, ``examples``;
``resample`` is a recipe that :func:`make_statistic` turns into a statistic of resampled
example indices over the stored ``per_example`` vectors, so intervals and paired tests
(``compare``) never refit a probe. :func:`load_result` reads a result file back.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .metrics import geometry, stats
from .metrics.scores import SCORES


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
    :data:`predrecon.eval.metrics.scores.SCORES` of predictions against targets),
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
                memo[key] = safe_suite(embeddings[idx], None if labels is None else labels[idx], seed)
            return memo[key].get(spec["name"], math.nan)
        return stat
    raise KeyError(f"unknown statistic type {kind!r}")


def safe_suite(x: np.ndarray, labels: np.ndarray | None, seed: int) -> dict:
    try:
        return geometry.geometry_suite(x, labels, seed=seed)
    except ValueError:  # e.g. a resample without two members of any class
        try:
            return geometry.geometry_suite(x, None, seed=seed)
        except ValueError:
            return {}


def bootstrap_indices(n: int, n_boot: int, seed: int) -> list[np.ndarray]:
    """The resamples of :func:`predrecon.eval.metrics.stats.paired_bootstrap_test` for (n, n_boot, seed)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=n) for _ in range(n_boot)]


#: The fields of a metric entry, in every suite's records (``metrics[name]``). Required:
#: ``value`` (point estimate), ``low`` / ``high`` (its interval, NaN when none), ``n`` (examples),
#: ``method`` (how the interval was made: ``bootstrap-percentile``, ``t over 5 draws``, ``none``, ...),
#: ``resample`` (a :func:`make_statistic` recipe over the record's ``per_example`` vectors, or
#: None when no paired test applies). Optional: ``label``, ``better`` ('higher' | 'lower' | None),
#: ``floors`` ({name: value}), ``faithful_replica``, ``tested`` (False: drawn, never tested),
#: ``coords`` (figure coordinates, e.g. ``{"k": 8}``), ``examples`` (SHA-1 of the evaluated
#: examples; paired tests need equal hashes), ``bootstrap_bias`` (geometry).
ENTRY_REQUIRED = ("value", "low", "high", "n", "method", "resample")
ENTRY_OPTIONAL = ("label", "better", "floors", "faithful_replica", "tested", "coords", "examples", "bootstrap_bias")


def entry(est_value: float, low: float, high: float, n: int, method: str, spec: dict | None, **optional) -> dict:
    """One metric entry of the record contract (:data:`ENTRY_REQUIRED`; optional fields of
    :data:`ENTRY_OPTIONAL` are kept when not None). Unknown optional keys raise ``KeyError``."""
    bad = [k for k in optional if k not in ENTRY_OPTIONAL]
    if bad:
        raise KeyError(f"metric entry: unknown field(s) {bad} (known: {', '.join(ENTRY_OPTIONAL)})")
    out = {"value": float(est_value), "low": float(low), "high": float(high), "n": int(n),
           "method": method, "resample": spec}
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


def recipe_keys(spec: dict | None) -> list[str]:
    """The ``per_example`` keys a recipe reads (``geometry_labels`` for geometry)."""
    if not spec:
        return []
    kind = spec["type"]
    if kind == "mean":
        return [spec["key"]]
    if kind in ("score", "spearman"):
        return [spec["pred"], spec["target"]]
    if kind in ("difference", "ratio"):
        return recipe_keys(spec["a"]) + recipe_keys(spec["b"])
    if kind == "normalised":
        return recipe_keys(spec["a"])
    return []


def check_entries(where: str, metrics: dict, per_example: dict) -> None:
    """Raise ``ValueError`` naming ``where`` and the metric when an entry lacks a field of
    :data:`ENTRY_REQUIRED` or its recipe reads a ``per_example`` vector that is missing or not
    of length ``n``."""
    for name, m in metrics.items():
        missing = [k for k in ENTRY_REQUIRED if k not in m]
        if missing:
            raise ValueError(f"{where}, metric {name!r}: missing field(s) {missing}")
        for k in recipe_keys(m.get("resample")):
            if k not in per_example or len(per_example[k]) != m["n"]:
                raise ValueError(f"{where}, metric {name!r}: per-example vector {k!r} is missing or "
                                 f"not of length n={m['n']}")


def interval_entry(spec: dict, pe: dict, n: int, n_boot: int, seed: int) -> dict:
    """Bootstrap CI (stats.bootstrap_ci, percentile) of a per-example recipe (none if n_boot=0)."""
    stat = make_statistic(spec, pe)
    value = float(stat(np.arange(n)))
    if not math.isfinite(value) or n_boot < 1:
        return entry(value, math.nan, math.nan, n, "none", spec)
    try:
        est = stats.bootstrap_ci(n, stat, n_boot=n_boot, seed=seed, vectorized=vectorized(spec))
        return entry(value, est.low, est.high, n, f"bootstrap-{est.method}", spec)
    except ValueError:  # e.g. a degenerate resample distribution
        return entry(value, math.nan, math.nan, n, "none", spec)


def nan_full(n: int, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(n, np.nan)
    out[idx] = values
    return out


# --------------------------------------------------------------------------- I/O helpers

def jsonable(obj):
    """Recursively convert numpy values to JSON types; NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
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


# --------------------------------------------------------------------------- paired tests of two entries

def bootstrap_difference(stat_a, stat_b, n: int, n_boot: int, seed: int, ci: float = 0.95) -> dict:
    """Paired bootstrap over examples of ``stat_a(idx) - stat_b(idx)`` for two fixed networks
    (:func:`~predrecon.eval.metrics.stats.paired_bootstrap_test`): percentile interval and the empirical
    two-sided p, ``(1 + #{|d_b - d| >= |d|}) / (B + 1)``, so p is 1 for identical inputs, never
    0 and never below ``1 / (B + 1)``. Returns ``{diff, diff_low, diff_high, p, p_floor,
    n_resamples, test, replicates}`` (replicates: the B differences, for equivalence tests)."""
    t = stats.paired_bootstrap_test(stat_a, stat_b, n, n_boot=n_boot, seed=seed, ci=ci)
    return {"diff": t.diff, "diff_low": t.low, "diff_high": t.high, "p": t.p_value,
            "p_floor": 1 / (t.n_resamples + 1) if t.n_resamples else math.nan, "n_resamples": t.n_resamples,
            "test": f"paired_bootstrap(B={t.n_resamples})", "replicates": t.replicates}


def paired_entry_test(spec: dict, pe_a: dict, pe_b: dict, n: int, *, n_boot: int, n_perm: int, seed: int) -> dict:
    """The paired test of one metric of two fixed networks on the same ``n`` examples, from the
    stored ``per_example`` vectors and the entry's ``resample`` recipe ``spec`` (every suite):
    ``mean`` recipes get the sign-flip permutation test
    (:func:`~predrecon.eval.metrics.stats.paired_permutation_test`) with a percentile bootstrap interval
    of the mean difference; other recipes (scores, Spearman, differences, ratios) the paired
    bootstrap of :func:`bootstrap_difference`. Geometry recipes are the caller's (they need the
    embeddings). Returns ``{diff, diff_low, diff_high, p, test, p_floor, n_resamples,
    replicates}``; ``test`` is 'none (...)' and p NaN when too few examples are defined."""
    if spec["type"] == "geometry":
        raise ValueError("paired_entry_test: geometry recipes are resampled from the stored replicates")
    if spec["type"] == "mean":
        a = np.asarray(pe_a[spec["key"]], dtype=np.float64)
        b = np.asarray(pe_b[spec["key"]], dtype=np.float64)
        ok = ~(np.isnan(a) | np.isnan(b))
        if ok.sum() < 2:
            return {"diff": math.nan, "diff_low": math.nan, "diff_high": math.nan, "p": math.nan,
                    "test": "none (too few examples)"}
        d = a[ok] - b[ok]
        t = stats.paired_permutation_test(a[ok], b[ok], n_perm=n_perm, seed=seed)
        idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))  # (B, n)
        reps = d[idx].mean(axis=1)
        lo, hi = np.quantile(reps, [0.025, 0.975])
        return {"diff": t.diff, "diff_low": float(lo), "diff_high": float(hi), "p": t.p_value, "test": t.method,
                "p_floor": 1 / (t.n_resamples + 1) if t.method.endswith("carlo") else 2 / t.n_resamples,
                "n_resamples": t.n_resamples, "replicates": reps}
    return bootstrap_difference(make_statistic(spec, pe_a), make_statistic(spec, pe_b), n, n_boot, seed)


def seed_test(va: list[float], vb: list[float]) -> dict:
    """The seed test (claims about objectives): arm means with Student-t intervals across seeds
    and Welch's t-test of the difference with its interval (:func:`~predrecon.eval.metrics.stats.welch_test`);
    NaN entries are dropped; p is NaN and ``test`` 'none' when an arm has no value. Returns
    ``{value_a, low_a, high_a, value_b, low_b, high_b, diff, diff_low, diff_high, p, test, n_a, n_b,
    values_a, values_b}``."""
    va = [v for v in va if math.isfinite(v)]
    vb = [v for v in vb if math.isfinite(v)]
    out = {"value_a": math.nan, "low_a": math.nan, "high_a": math.nan, "value_b": math.nan, "low_b": math.nan,
           "high_b": math.nan, "diff": math.nan, "diff_low": math.nan, "diff_high": math.nan, "p": math.nan,
           "test": "none", "n_a": len(va), "n_b": len(vb), "values_a": va, "values_b": vb}
    if not va or not vb:
        return out
    sa, sb = stats.t_interval(va), stats.t_interval(vb)
    t = stats.welch_test(va, vb)
    out.update(value_a=sa.mean, low_a=sa.low, high_a=sa.high, value_b=sb.mean, low_b=sb.low, high_b=sb.high,
               diff=t.diff, diff_low=t.low, diff_high=t.high, p=t.p_value, test=t.method)
    return out
