"""Tests for predrecon.eval.stats: coverage, null calibration, power, hand examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predrecon.eval import stats as st


def _mean_vec(x, axis=-1):
    return x.mean(axis=axis)


# ----------------------------------------------------------------------------- bootstrap CI


def test_bootstrap_ci_value_and_interface():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 1.0, size=200)
    by_rows = st.bootstrap_ci(x, np.mean, n_boot=500, seed=1)
    by_idx = st.bootstrap_ci(len(x), lambda idx: x[idx].mean(), n_boot=500, seed=1)
    vec = st.bootstrap_ci(x, lambda b: b.mean(axis=-1), n_boot=500, seed=1, vectorized=True)
    assert by_rows.value == pytest.approx(x.mean())
    assert (by_rows.low, by_rows.high) == (by_idx.low, by_idx.high)  # same seed, same draws
    assert vec.low == pytest.approx(by_rows.low) and vec.high == pytest.approx(by_rows.high)
    assert by_rows.low < x.mean() < by_rows.high
    # width ~ 2 * 1.96 * sd / sqrt(n)
    assert by_rows.high - by_rows.low == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.2)
    assert st.bootstrap_ci(x, np.mean, n_boot=500, seed=1) == by_rows  # deterministic
    assert by_rows.n_boot == 500 and by_rows.method == "percentile"


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_coverage_on_normal_data(method):
    # 95% intervals of the mean should cover the true mean ~95% of the time.
    rng = np.random.default_rng(42)
    trials, hits = 150, 0
    for k in range(trials):
        x = rng.normal(0.0, 1.0, size=60)
        e = st.bootstrap_ci(x, _mean_vec, n_boot=400, seed=k, method=method, vectorized=True)
        hits += e.low <= 0.0 <= e.high
    assert 0.87 <= hits / trials <= 0.99


def test_bootstrap_ci_bad_input():
    with pytest.raises(ValueError, match="unknown method"):
        st.bootstrap_ci(10, lambda i: 0.0, method="studentized")
    with pytest.raises(ValueError, match="at least 2"):
        st.bootstrap_ci(1, lambda i: 0.0)


# ----------------------------------------------------------------------------- paired tests


def test_paired_bootstrap_null_calibrated_and_detects_effect():
    rng = np.random.default_rng(1)
    n, trials = 100, 150
    pvals = []
    for k in range(trials):
        a, b = rng.normal(size=n), rng.normal(size=n)
        r = st.paired_bootstrap_test(lambda i: a[i].mean(), lambda i: b[i].mean(), n,
                                     n_boot=200, seed=k)
        pvals.append(r.p_value)
    pvals = np.array(pvals)
    assert 0.0 <= np.mean(pvals < 0.05) <= 0.12
    assert 0.35 <= np.mean(pvals) <= 0.65  # roughly uniform
    a = rng.normal(size=n)
    b = a - 0.5 + 0.3 * rng.normal(size=n)  # clear paired effect
    r = st.paired_bootstrap_test(lambda i: a[i].mean(), lambda i: b[i].mean(), n, n_boot=500)
    assert r.p_value < 0.01
    assert r.low < r.diff < r.high and r.low > 0
    assert r.diff == pytest.approx(a.mean() - b.mean())


def test_paired_bootstrap_identical_systems_p_one():
    s = np.arange(30.0)
    r = st.paired_bootstrap_test(lambda i: s[i].mean(), lambda i: s[i].mean(), 30, n_boot=100)
    assert r.diff == 0 and r.p_value == 1.0


def test_paired_permutation_exact_hand_example():
    # diffs (1, 2, 3): T = 2; of the 8 sign vectors only (+,+,+) and (-,-,-) reach |T| >= 2
    r = st.paired_permutation_test(np.array([1.0, 2.0, 3.0]), np.zeros(3), n_perm=100)
    assert r.method == "sign_flip_exact" and r.n_resamples == 8
    assert r.p_value == pytest.approx(2 / 8)
    assert r.diff == pytest.approx(2.0)


def test_paired_permutation_null_and_effect_on_correctness_vectors():
    rng = np.random.default_rng(2)
    n = 300
    pvals = []
    for k in range(100):
        a = (rng.random(n) < 0.7).astype(float)
        b = (rng.random(n) < 0.7).astype(float)
        pvals.append(st.paired_permutation_test(a, b, n_perm=1000, seed=k).p_value)
    assert np.mean(np.array(pvals) < 0.05) <= 0.12
    assert 0.35 <= np.mean(pvals) <= 0.65
    a = (rng.random(n) < 0.9).astype(float)  # encoder A: ~90% correct
    b = np.where(rng.random(n) < 0.25, 0.0, a)  # B: wrong on a further ~25% of A's hits
    r = st.paired_permutation_test(a, b, n_perm=2000, seed=0)
    assert r.p_value < 0.001 and r.method == "sign_flip_monte_carlo"
    assert r == st.paired_permutation_test(a, b, n_perm=2000, seed=0)


def test_paired_permutation_shape_errors():
    with pytest.raises(ValueError, match="equal length"):
        st.paired_permutation_test(np.zeros(3), np.zeros(4))


# ----------------------------------------------------------------------------- Holm


def test_holm_hand_example():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    np.testing.assert_allclose(st.holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(st.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert st.holm([]).size == 0
    with pytest.raises(ValueError, match="position 1"):
        st.holm([0.1, 1.5])


def test_holm_is_at_least_raw_and_at_most_bonferroni():
    p = np.random.default_rng(3).random(20) ** 3
    adj = st.holm(p)
    assert np.all(adj >= p - 1e-15)
    assert np.all(adj <= np.minimum(1, 20 * p) + 1e-15)


# ----------------------------------------------------------------------------- across seeds


def test_across_seeds_hand_values():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    r = st.across_seeds(a, b)
    assert r.a.mean == 2.0 and r.b.mean == 5.0 and r.diff == -3.0
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n)
    assert r.a.low == pytest.approx(2.0 - half) and r.a.high == pytest.approx(2.0 + half)
    # Welch: t = -3 / sqrt(1/3 + 1/3)
    assert r.welch_t == pytest.approx(-3 / math.sqrt(2 / 3))
    assert r.welch_p < 0.05
    # exact permutation over C(6,3) = 20 splits: only the observed split and its mirror
    assert r.permutation_exact and r.permutation_p == pytest.approx(2 / 20)


def test_across_seeds_single_seed_is_nan_not_error():
    r = st.across_seeds([0.7], [0.6])
    assert math.isnan(r.a.low) and math.isnan(r.welch_p) and math.isnan(r.permutation_p)
    assert r.diff == pytest.approx(0.1)
    assert st.significance_label(r.welch_p) == "n/a"


def test_significance_label():
    assert [st.significance_label(p) for p in (0.0005, 0.005, 0.03, 0.05, 0.2)] == \
        ["***", "**", "*", "n.s.", "n.s."]
    assert st.significance_label(0.015, alpha=0.1) == "**"
