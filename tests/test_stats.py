"""Tests for predrecon.eval.metrics.stats: coverage, null calibration, power, hand examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from predrecon.eval.metrics import stats as st


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
        r = st.paired_bootstrap_test(lambda i, a=a: a[i].mean(), lambda i, b=b: b[i].mean(), n,
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


# ----------------------------------------------------------------------------- empirical p floors


def test_empirical_p_and_bootstrap_p_floors():
    assert st.empirical_p(0, 99) == pytest.approx(0.01) and st.empirical_p(99, 99) == 1.0
    with pytest.raises(ValueError, match="not in"):
        st.empirical_p(5, 4)
    assert st.bootstrap_p(0.0, np.random.default_rng(0).normal(size=50)) == (1.0, 50)  # identical: p = 1
    assert st.bootstrap_p(0.3, np.full(20, 0.3)) == (pytest.approx(1 / 21), 20)  # SE = 0: the floor, not 0
    p, b = st.bootstrap_p(1.0, [1.0, 2.5, np.nan, 0.4, -0.1])  # |d_b - 1| >= 1 for 2.5 and -0.1
    assert b == 4 and p == pytest.approx(3 / 5)
    assert math.isnan(st.bootstrap_p(math.nan, [1.0])[0])


def test_paired_bootstrap_returns_replicates_and_respects_floor():
    rng = np.random.default_rng(4)
    a = rng.normal(size=50)
    r = st.paired_bootstrap_test(lambda i: a[i].mean() + 2, lambda i: a[i].mean(), 50, n_boot=40, seed=1)
    assert r.p_value == pytest.approx(1 / 41) and r.n_resamples == 40
    np.testing.assert_allclose(r.replicates, 2.0)


# ----------------------------------------------------------------------------- BH


def test_benjamini_hochberg_hand_example_and_scipy():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4p/i = 0.02, 0.02, 0.04, 0.04 (already monotone)
    np.testing.assert_allclose(st.benjamini_hochberg([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])
    p = np.random.default_rng(5).random(30) ** 2
    np.testing.assert_allclose(st.benjamini_hochberg(p), sps.false_discovery_control(p))
    assert np.all(st.benjamini_hochberg(p) <= st.holm(p) + 1e-15)  # BH never stricter than Holm
    with pytest.raises(ValueError, match="position 0"):
        st.benjamini_hochberg([-0.1])


# ----------------------------------------------------------------------------- the seed test


def test_welch_test_matches_scipy_and_degenerate_cases():
    a, b = [0.61, 0.64, 0.60, 0.66, 0.63], [0.58, 0.57, 0.61, 0.55, 0.59]
    r = st.welch_test(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert r.method == "welch_t" and r.p_value == pytest.approx(ref.pvalue) and r.t == pytest.approx(ref.statistic)
    assert (r.low, r.high) == pytest.approx((ci.low, ci.high)) and r.df == pytest.approx(ref.df)
    assert st.welch_test([1.0, 1.0], [1.0, 1.0]).p_value == 1.0  # identical constants
    c = st.welch_test([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])  # no variance: exact permutation p, not 0
    assert c.p_value == pytest.approx(2 / 20) and c.method.startswith("permutation_exact")
    assert st.welch_test([0.0, 1e-9], [1e6, 1e6 + 1e-9]).p_value == st.P_MIN_PARAMETRIC  # floored, never 0
    one = st.welch_test([0.7], [0.6, 0.5])
    assert math.isnan(one.p_value) and one.method.startswith("none")


def test_welch_tost_hand_values():
    a, b = [0.80, 0.81, 0.79, 0.80, 0.80], [0.80, 0.80, 0.81, 0.79, 0.80]  # equal means, sd ~0.007
    p = st.welch_tost(a, b, 0.02)
    r = st.welch_test(a, b)
    assert p == pytest.approx(sps.t.sf(0.02 / r.se, r.df)) and p < 0.01
    assert st.welch_tost([0.9, 0.91, 0.89], [0.8, 0.81, 0.79], 0.02) > 0.5  # differ by 0.1: not equivalent
    with pytest.raises(ValueError, match="margin"):
        st.welch_tost(a, b, 0.0)


def test_bootstrap_tost():
    assert st.bootstrap_tost(np.linspace(-0.01, 0.01, 99), 0.02) == pytest.approx(1 / 100)
    assert st.bootstrap_tost(np.linspace(0.0, 0.04, 101), 0.02) > 0.4


# ----------------------------------------------------------------------------- power


def test_power_closed_form_and_simulation():
    assert st.t_test_power(0.0, 5, 5, 0.05) == pytest.approx(0.05, abs=1e-6)  # size
    # Cohen's d = 2.024 gives 80 % power at 5 vs 5 (pooled t; noncentral t)
    d = st.detectable_effect(5, 5, method="student")
    assert d == pytest.approx(2.0244, abs=1e-3) and st.t_test_power(d, 5, 5) == pytest.approx(0.8, abs=1e-6)
    rng = np.random.default_rng(6)  # the closed form against a simulation of the pooled t-test
    x, y = rng.normal(size=(20_000, 5)), rng.normal(size=(20_000, 5)) + d
    sim = np.mean(sps.ttest_ind(x, y, axis=1).pvalue < 0.05)
    assert sim == pytest.approx(0.8, abs=0.015)
    dw = st.detectable_effect(5, 5)  # Welch pays a little power for not assuming equal variances
    assert d < dw < 2.2 and st.welch_power(dw, 5, 5) == pytest.approx(0.8, abs=0.01)
    assert st.detectable_effect(5, 5, alpha=0.002) > 3.3 and st.detectable_effect(3, 3) > 3.0
    assert math.isnan(st.detectable_effect(1, 5))


def test_seed_null_fpr_exact_splits_and_inputs():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) + 10.0  # a huge real difference
    r = st.seed_null_fpr(a, b)
    assert r.exact and r.n_sim == 252 and r.n_metrics == 3 and r.per_test < 0.1  # the difference is removed
    c = st.seed_null_fpr(np.c_[a, np.ones(5)], np.c_[b, np.ones(5)])  # a constant metric is left out
    assert c.n_metrics == 3 and c.per_test == pytest.approx(r.per_test)
    mc = st.seed_null_fpr(rng.normal(size=(8, 2)), rng.normal(size=(8, 2)), n_sim=500)
    assert not mc.exact and mc.n_sim == 500
    assert math.isnan(st.seed_null_fpr(a[:1], b).per_test)


def test_fmt_helpers():
    assert st.fmt_number(0.12345) == "0.123" and st.fmt_number(1e-5) == "1.00e-05" and st.fmt_number(None) == "–"
    assert st.fmt_interval(0.5, 0.4, 0.6) == "0.500 [0.400, 0.600]" and st.fmt_interval(0.5, math.nan, 1) == "0.500"
