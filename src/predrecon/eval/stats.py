"""Uncertainty and significance for encoder comparisons: pure, seeded functions.

* Over examples (one trained encoder each, evaluated on the same n examples):
  :func:`bootstrap_ci` for any metric, :func:`paired_bootstrap_test` for a difference of two
  metrics, :func:`paired_permutation_test` for per-example scores (e.g. correct / incorrect).
* Over seeds (several pre-training runs per arm): :func:`across_seeds`.
* Many comparisons at once: :func:`holm`, then :func:`significance_label`.

Every random draw comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

BOOTSTRAP_METHODS = {"percentile": "percentile", "basic": "basic", "bca": "BCa"}


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval."""

    value: float
    low: float
    high: float
    n_boot: int
    method: str


@dataclass(frozen=True)
class TestResult:
    """A two-sided test of ``diff = a - b == 0``; ``low``/``high`` is a CI of ``diff`` when the
    method provides one (NaN otherwise)."""

    diff: float
    p_value: float
    n_resamples: int
    method: str
    low: float = math.nan
    high: float = math.nan


@dataclass(frozen=True)
class ArmSummary:
    """Mean of one arm across seeds with a Student-t interval (NaN for a single seed)."""

    mean: float
    std: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class SeedComparison:
    """Two arms across seeds: summaries, Welch's t-test and a permutation test on the mean
    difference ``a.mean - b.mean``."""

    a: ArmSummary
    b: ArmSummary
    diff: float
    welch_t: float
    welch_p: float
    permutation_p: float
    permutation_exact: bool


def _rng_kw(fn: Callable, seed: int) -> dict:
    """scipy >= 1.15 takes ``rng``; older versions ``random_state``."""
    key = "rng" if "rng" in inspect.signature(fn).parameters else "random_state"
    return {key: np.random.default_rng(seed)}


def _n_of(data) -> int:
    n = int(data) if isinstance(data, (int, np.integer)) else len(data)
    if n < 2:
        raise ValueError(f"need at least 2 examples to resample, got {n}")
    return n


def bootstrap_ci(data, statistic: Callable, n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
                 method: str = "percentile", vectorized: bool = False) -> Estimate:
    """Bootstrap confidence interval of ``statistic`` over examples (scipy.stats.bootstrap).

    ``data`` is either an int ``n`` (then ``statistic`` receives an int array of resampled
    example indices, so any metric computed from per-example data it closes over can be
    bootstrapped) or an array whose first axis is the examples (then ``statistic`` receives
    ``data[idx]``). ``statistic`` returns a float; with ``vectorized=True`` it receives a
    (B, n[, ...]) batch and returns (B,). ``value`` is the statistic on all examples.
    ``method``: 'percentile' | 'basic' | 'bca' (BCa costs n extra jackknife evaluations).
    """
    key = method.lower()
    if key not in BOOTSTRAP_METHODS:
        raise ValueError(f"bootstrap_ci: unknown method {method!r}; known: {sorted(BOOTSTRAP_METHODS)}")
    if not 0 < ci < 1:
        raise ValueError(f"bootstrap_ci: ci must be in (0, 1), got {ci}")
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_boot must be >= 1, got {n_boot}")
    n = _n_of(data)
    arr = None if isinstance(data, (int, np.integer)) else np.asarray(data)

    def on_idx(idx: np.ndarray):
        return statistic(idx if arr is None else arr[idx])

    value = float(on_idx(np.arange(n)[None])[0] if vectorized else on_idx(np.arange(n)))
    if vectorized:
        def stat(idx, axis=-1):
            return np.asarray(on_idx(np.moveaxis(idx, axis, -1)), dtype=np.float64)
    else:
        def stat(idx):
            return float(on_idx(idx))
    res = sps.bootstrap((np.arange(n),), stat, n_resamples=n_boot, vectorized=vectorized,
                        confidence_level=ci, method=BOOTSTRAP_METHODS[key],
                        **_rng_kw(sps.bootstrap, seed))
    return Estimate(value, float(res.confidence_interval.low), float(res.confidence_interval.high),
                    n_boot, key)


def paired_bootstrap_test(stat_a: Callable[[np.ndarray], float], stat_b: Callable[[np.ndarray], float],
                          n: int, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> TestResult:
    """Paired bootstrap test for two encoders evaluated on the same ``n`` examples.

    ``stat_a(idx)`` / ``stat_b(idx)`` compute each encoder's metric on the examples ``idx``. Both
    see the same resampled indices. With ``d = a(all) - b(all)`` and bootstrap differences
    ``d_b``, the two-sided p-value tests ``E[d] = 0`` by shifting the bootstrap distribution to
    the null (Efron & Tibshirani 1993, sec. 16.4; Koehn 2004):
    ``p = (1 + #{|d_b - d| >= |d|}) / (n_boot + 1)``. ``low``/``high``: percentile CI of d.
    """
    n = _n_of(n)
    if n_boot < 1:
        raise ValueError(f"paired_bootstrap_test: n_boot must be >= 1, got {n_boot}")
    full = np.arange(n)
    d = float(stat_a(full)) - float(stat_b(full))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        diffs[b] = float(stat_a(idx)) - float(stat_b(idx))
    tol = 1e-12 * max(1.0, abs(d))
    p = (1 + np.count_nonzero(np.abs(diffs - d) >= abs(d) - tol)) / (n_boot + 1)
    q = (1 - ci) / 2
    low, high = np.quantile(diffs, [q, 1 - q])
    return TestResult(d, float(min(1.0, p)), n_boot, "paired_bootstrap", float(low), float(high))


def paired_permutation_test(scores_a: np.ndarray, scores_b: np.ndarray, n_perm: int = 10_000,
                            seed: int = 0) -> TestResult:
    """Sign-flip permutation test of the mean per-example difference (paired design).

    ``scores_a``/``scores_b``: (n,) per-example scores of two encoders on the same examples
    (e.g. 0/1 correctness, squared errors). Under H0 each difference ``a_i - b_i`` is symmetric
    about 0, so its sign is flipped at random. Exact over all ``2^n`` sign vectors when
    ``2^n <= n_perm``, else Monte Carlo with ``p = (1 + #{|T*| >= |T|}) / (n_perm + 1)``.
    """
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired_permutation_test: need two 1-D arrays of equal length, got "
                         f"{a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("paired_permutation_test: scores must be finite")
    n = _n_of(a)
    d = a - b
    obs = float(d.mean())
    tol = 1e-10 * (float(np.abs(d).mean()) + 1e-300)
    if n < 63 and 2 ** n <= n_perm:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))  # (2^n, n)
        count = np.count_nonzero(np.abs(signs @ d / n) >= abs(obs) - tol)
        return TestResult(obs, float(count / 2 ** n), 2 ** n, "sign_flip_exact")
    rng = np.random.default_rng(seed)
    count, done, chunk = 0, 0, max(1, 4_000_000 // n)
    while done < n_perm:
        c = min(chunk, n_perm - done)
        signs = rng.integers(0, 2, size=(c, n)).astype(np.float64) * 2.0 - 1.0  # (c, n)
        count += np.count_nonzero(np.abs(signs @ d / n) >= abs(obs) - tol)
        done += c
    return TestResult(obs, float((1 + count) / (n_perm + 1)), n_perm, "sign_flip_monte_carlo")


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the input order.

    With p sorted ascending, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))`` (1-based);
    reject H_i at family-wise level alpha iff ``adj_i <= alpha``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"holm: expected a 1-D sequence of p-values, got shape {p.shape}")
    if p.size and (np.any(~np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        bad = int(np.argmax(~np.isfinite(p) | (p < 0) | (p > 1)))
        raise ValueError(f"holm: p-value {p[bad]} at position {bad} is not in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(scaled)
    return out


def t_interval(values: Sequence[float], ci: float = 0.95) -> ArmSummary:
    """Mean, sample std (ddof=1) and Student-t confidence interval of independent values
    (one per seed). NaN std/interval for a single value."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"t_interval: need a non-empty 1-D array of finite values, got {v!r}")
    mean = float(v.mean())
    if v.size < 2:
        return ArmSummary(mean, math.nan, math.nan, math.nan, 1)
    std = float(v.std(ddof=1))
    half = float(sps.t.ppf(0.5 + ci / 2, df=v.size - 1)) * std / math.sqrt(v.size)
    return ArmSummary(mean, std, mean - half, mean + half, int(v.size))


def across_seeds(values_a: Sequence[float], values_b: Sequence[float], ci: float = 0.95,
                 n_perm: int = 10_000, seed: int = 0) -> SeedComparison:
    """Compare two arms from independent runs (one metric value per seed and arm).

    Per arm: mean with a t-interval. Between arms: Welch's t-test (scipy, unequal variances)
    and a two-sided permutation test of the mean difference (scipy.stats.permutation_test,
    exact when the number of distinct splits <= ``n_perm``). Tests need >= 2 seeds per arm
    and are NaN otherwise. With few seeds trust the
    permutation p-value: its smallest possible value is ``2 / C(n_a + n_b, n_a)`` (0.1 for 3
    vs 3), and Welch's normality assumption cannot be checked.
    """
    a = np.asarray(values_a, dtype=np.float64)
    b = np.asarray(values_b, dtype=np.float64)
    sa, sb = t_interval(a, ci), t_interval(b, ci)
    if a.size >= 2 and b.size >= 2 and (a.std() > 0 or b.std() > 0):
        welch = sps.ttest_ind(a, b, equal_var=False)
        wt, wp = float(welch.statistic), float(welch.pvalue)
    else:
        wt = wp = math.nan
    n_splits = math.comb(a.size + b.size, a.size)
    if a.size >= 2 and b.size >= 2:
        perm = sps.permutation_test((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                                    permutation_type="independent", vectorized=True,
                                    n_resamples=n_perm, alternative="two-sided",
                                    **_rng_kw(sps.permutation_test, seed))
        pp = float(perm.pvalue)
    else:  # scipy needs two values per arm; one seed allows no test at all
        pp = math.nan
    return SeedComparison(sa, sb, sa.mean - sb.mean, wt, wp, pp, n_splits <= n_perm)


def significance_label(p_adj: float, alpha: float = 0.05) -> str:
    """Stars for an (adjusted) p-value: '***' < alpha/50, '**' < alpha/5, '*' < alpha, else
    'n.s.'; 'n/a' for NaN (e.g. a single seed). With alpha = 0.05: 0.001 / 0.01 / 0.05."""
    if p_adj is None or math.isnan(p_adj):
        return "n/a"
    if p_adj < alpha / 50:
        return "***"
    if p_adj < alpha / 5:
        return "**"
    if p_adj < alpha:
        return "*"
    return "n.s."
