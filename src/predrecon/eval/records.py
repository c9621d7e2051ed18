"""The evaluation record contract: metric recipes, intervals and result files.

A metric entry of ``<eval_dir>/<task>/<pooling>.json`` is ``{value, low, high, n, method,
resample}`` (plus ``floors``, ``better``, ``label``, ``faithful_replica`` added by the runner);
``resample`` is a recipe that :func:`make_statistic` turns into a statistic of resampled
example indices over the stored ``per_example`` vectors, so intervals and paired tests
(``compare``) never refit a probe. :func:`load_result` reads a result file back.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from . import geometry, stats
from .scores import SCORES



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
