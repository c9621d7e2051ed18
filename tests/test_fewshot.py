"""Few-shot probes: stratified k-per-class sampling, the accuracy-vs-k curve on synthetic data,
the interval helpers, and the plot."""

from __future__ import annotations

import numpy as np
import pytest

from predrecon.eval.metrics.fewshot import (
    fewshot_curve,
    fit_probe,
    mean_ci,
    pair_features,
    plot_fewshot,
    sample_k_per_class,
)


def blobs(n_per_class: int, n_classes: int = 4, dim: int = 64, sep: float = 0.6, seed: int = 0):
    """Gaussian classes whose means differ a little in every dimension: linearly separable in
    the limit, but a probe needs many examples to find the direction."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, dim)) * sep
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = means[y] + rng.normal(size=(len(y), dim))
    return x.astype(np.float32), y


def test_sample_k_per_class_exact_and_deterministic():
    y = np.array([0] * 10 + [1] * 7 + [5] * 20)
    idx = sample_k_per_class(y, 7, seed=3)
    assert idx.dtype == np.int64 and len(np.unique(idx)) == len(idx) == 21
    assert np.bincount(y[idx]).tolist() == [7, 7, 0, 0, 0, 7]
    assert np.array_equal(idx, sample_k_per_class(y, 7, seed=3))
    assert not np.array_equal(sample_k_per_class(y, 3, seed=1), sample_k_per_class(y, 3, seed=2))
    with pytest.raises(ValueError, match="class 1 has 7 examples, fewer than k=8"):
        sample_k_per_class(y, 8, seed=0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        sample_k_per_class(y, 0, seed=0)


def test_fewshot_curve_rises_to_one_and_reports_skipped():
    x, y = blobs(600)
    rng = np.random.default_rng(7)
    perm = rng.permutation(len(y))
    tr, te = perm[:2000], perm[2000:]
    r = fewshot_curve(x[tr], y[tr], x[te], y[te], ks=(1, 4, 16, 128, 4096), draws=3, seed=0)
    assert r["skipped"] == [4096] and r["ks"] == [1, 4, 16, 128]
    assert r["smallest_class"] == int(np.bincount(y[tr]).min())
    mean = np.asarray(r["mean"])
    assert mean[0] < 0.8 and mean[-1] > 0.98, mean
    assert np.all(np.diff(mean) > -0.02), mean  # non-decreasing up to noise
    assert mean[-1] - mean[0] > 0.3
    assert r["full"] > 0.98
    for m, lo, hi, accs in zip(r["mean"], r["low"], r["high"], r["accuracies"]):
        assert len(accs) == 3 and lo <= m <= hi and m == pytest.approx(np.mean(accs))
    again = fewshot_curve(x[tr], y[tr], x[te], y[te], ks=(1, 4, 16, 128, 4096), draws=3, seed=0)
    assert again["accuracies"] == r["accuracies"]


def test_fewshot_single_draw_interval_is_nan_and_errors():
    x, y = blobs(20, n_classes=2, dim=4, sep=3.0)
    r = fewshot_curve(x, y, x, y, ks=(4,), draws=1, include_full=False)
    assert np.isnan(r["low"][0]) and np.isnan(r["high"][0]) and r["full"] is None
    with pytest.raises(ValueError, match="length mismatch"):
        fewshot_curve(x, y[:-1], x, y)


def test_mean_ci_closed_form():
    e = mean_ci(np.full(50, 0.25), n_boot=200)
    assert e["value"] == e["low"] == e["high"] == pytest.approx(0.25) and e["n"] == 50
    v = np.r_[np.zeros(500), np.ones(500)]
    e = mean_ci(v, n_boot=2000, seed=1)
    half = 1.96 * 0.5 / np.sqrt(1000)  # normal approximation of the percentile bootstrap
    assert e["value"] == 0.5 and e["low"] == pytest.approx(0.5 - half, abs=0.01)
    assert e["high"] == pytest.approx(0.5 + half, abs=0.01)
    with pytest.raises(ValueError):
        mean_ci(np.array([]))


def test_probe_helpers():
    u = np.array([[1.0, -2.0]], dtype=np.float32)
    v = np.array([[3.0, 1.0]], dtype=np.float32)
    assert pair_features(u, v).tolist() == [[1, -2, 3, 1, 2, 3, 3, -2]]
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_probe(np.zeros((4, 2)), np.zeros(4))


def test_plot_fewshot(tmp_path):
    x, y = blobs(40, n_classes=3, dim=8, sep=1.0)
    curves = {"enc-a": fewshot_curve(x, y, x, y, ks=(2, 8), draws=2),
              "enc-b": fewshot_curve(x, y, x, y, ks=(4, 16, 64), draws=2)}
    assert curves["enc-b"]["skipped"] == [64]
    out = plot_fewshot(curves, tmp_path / "sub" / "fewshot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(ValueError):
        plot_fewshot({}, tmp_path / "x.png")
