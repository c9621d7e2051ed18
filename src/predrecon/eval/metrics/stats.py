"""Uncertainty and significance for encoder comparisons: pure, seeded functions.

* Two FIXED networks evaluated on the same n examples (says nothing about objectives):
  :func:`bootstrap_ci` for any metric, :func:`paired_bootstrap_test` /
  :func:`bootstrap_p` for a difference of two metrics, :func:`paired_permutation_test` for
  per-example scores (e.g. correct / incorrect). Resampling p-values are empirical,
  ``(1 + #extreme) / (B + 1)``: never 0, never below ``1 / (B + 1)``.
* Objectives, from several pre-training runs (seeds) per arm: :func:`welch_test` (the seed
  test), :func:`welch_tost` (equivalence), :func:`welch_power` / :func:`detectable_effect`
  (power), :func:`seed_null_fpr` (false-positive rate of the seed test matched to a design).
  :func:`across_seeds` keeps the older summary with a permutation p.
* Families of tests: :func:`holm` (pre-registered headline family), :func:`benjamini_hochberg`
  (exploratory tables), then :func:`significance_label`.
* Rendering of numbers shared by every report table: :func:`fmt_number`, :func:`fmt_interval`.

Every random draw comes from ``numpy.random.default_rng(seed)``. Rationale: docs/statistics.md.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    replicates: np.ndarray | None = field(default=None, compare=False, repr=False)


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


def empirical_p(n_extreme: int, n_resamples: int) -> float:
    """Monte Carlo p-value ``(1 + n_extreme) / (n_resamples + 1)`` (Davison & Hinkley 1997,
    eq. 4.11): the observed statistic counts as one of the resamples, so the p-value is never 0
    and never below what ``n_resamples`` can resolve, ``1 / (n_resamples + 1)``."""
    if n_resamples < 1:
        raise ValueError(f"empirical_p: need at least one resample, got {n_resamples}")
    if not 0 <= n_extreme <= n_resamples:
        raise ValueError(f"empirical_p: n_extreme={n_extreme} not in [0, {n_resamples}]")
    return (1 + int(n_extreme)) / (int(n_resamples) + 1)


def bootstrap_p(diff: float, replicates: Sequence[float]) -> tuple[float, int]:
    """Two-sided bootstrap p-value of ``E[d] = 0`` from the observed difference ``diff`` and
    its bootstrap replicates (shifted to the null: Efron & Tibshirani 1993, sec. 16.4).

    ``p = (1 + #{|d_b - diff| >= |diff|}) / (B + 1)`` over the finite replicates (B of them).
    Returns ``(p, B)``: ``p = 1`` when ``diff == 0`` (identical systems), NaN with ``B = 0``
    when ``diff`` is not finite or no replicate is; never 0, never below ``1 / (B + 1)``.
    """
    d = float(diff)
    reps = np.asarray(replicates, dtype=np.float64).ravel()
    reps = reps[np.isfinite(reps)]
    if not math.isfinite(d) or reps.size == 0:
        return math.nan, 0
    tol = 1e-12 * max(1.0, abs(d))
    extreme = int(np.count_nonzero(np.abs(reps - d) >= abs(d) - tol))
    return empirical_p(extreme, reps.size), int(reps.size)


def paired_bootstrap_test(stat_a: Callable[[np.ndarray], float], stat_b: Callable[[np.ndarray], float],
                          n: int, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> TestResult:
    """Paired bootstrap test for two FIXED encoders evaluated on the same ``n`` examples.

    ``stat_a(idx)`` / ``stat_b(idx)`` compute each encoder's metric on the examples ``idx``. Both
    see the same resampled indices (``default_rng(seed).integers(0, n, n)`` per replicate). With
    ``d = a(all) - b(all)`` and bootstrap differences ``d_b``, the p-value is
    :func:`bootstrap_p` (empirical, never below ``1 / (B + 1)``; replicates where a metric is
    undefined are dropped and ``n_resamples`` counts the rest). ``low``/``high``: percentile
    CI of d; ``replicates``: the B differences ``d_b`` (NaN where undefined). The test
    conditions on the two networks: it says nothing about their objectives.
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
    p, n_ok = bootstrap_p(d, diffs)
    finite = diffs[np.isfinite(diffs)]
    q = (1 - ci) / 2
    low, high = np.quantile(finite, [q, 1 - q]) if finite.size else (math.nan, math.nan)
    return TestResult(d, float(p), n_ok, "paired_bootstrap", float(low), float(high), diffs)


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
    and are NaN otherwise. The permutation p cannot go below ``2 / C(n_a + n_b, n_a)`` (0.1
    for 3 vs 3, 0.008 for 5 vs 5), so it cannot pass a multiple-test correction at these
    sizes; the report's seed test is :func:`welch_test` (calibration and power:
    docs/statistics.md).
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


# --------------------------------------------------------------------------- families of tests

def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values; Benjamini & Hochberg 1995), in the input
    order. With p sorted ascending, ``q_(i) = min_{j >= i} min(1, m p_(j) / j)``; rejecting
    ``q_i <= alpha`` controls the false discovery rate at alpha (independent or PRDS tests)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"benjamini_hochberg: expected a 1-D sequence of p-values, got shape {p.shape}")
    if p.size and (np.any(~np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        bad = int(np.argmax(~np.isfinite(p) | (p < 0) | (p > 1)))
        raise ValueError(f"benjamini_hochberg: p-value {p[bad]} at position {bad} is not in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, m * p[order] / np.arange(1, m + 1))
    out = np.empty(m)
    out[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return out


def _holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values of every row of ``p`` (S, m) at once."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * np.take_along_axis(p, order, axis=-1))
    out = np.empty_like(p)
    np.put_along_axis(out, order, np.maximum.accumulate(scaled, axis=-1), axis=-1)
    return out


# --------------------------------------------------------------------------- the seed test

#: Parametric p-values are reported down to this value (double precision of ``1 - p``), never 0.
P_MIN_PARAMETRIC = 1e-16


@dataclass(frozen=True)
class SeedTest:
    """Welch's t-test of ``diff = mean(a) - mean(b)`` over independent runs (one value per seed);
    ``low``/``high``: Welch confidence interval of ``diff``."""

    diff: float
    se: float
    df: float
    t: float
    p_value: float
    low: float
    high: float
    n_a: int
    n_b: int
    method: str


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def _welch_parts(a: np.ndarray, b: np.ndarray):
    """Welch's t, df and se along the last axis of ``a`` (..., n_a) and ``b`` (..., n_b)."""
    na, nb = a.shape[-1], b.shape[-1]
    va, vb = a.var(axis=-1, ddof=1) / na, b.var(axis=-1, ddof=1) / nb
    se = np.sqrt(va + vb)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (a.mean(axis=-1) - b.mean(axis=-1)) / se
        df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return t, df, se


def _welch_p(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-sided Welch p-values along the last axis (NaN where both arms have no variance)."""
    t, df, _ = _welch_parts(a, b)
    return 2 * sps.t.sf(np.abs(t), df)


def welch_test(values_a: Sequence[float], values_b: Sequence[float], ci: float = 0.95) -> SeedTest:
    """The seed test: Welch's unequal-variance t-test on one metric value per seed and arm
    (Welch 1947). Non-finite values are dropped. Needs >= 2 seeds per arm (else NaN, method
    'none ...'). When neither arm varies across seeds: p = 1 for equal means, else the exact
    permutation p of the mean difference (never below ``2 / C(n_a + n_b, n_a)``). The p-value
    is floored at :data:`P_MIN_PARAMETRIC`, never 0. Power: :func:`welch_power`."""
    a, b = _finite(values_a), _finite(values_b)
    na, nb = a.size, b.size
    diff = float(a.mean() - b.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return SeedTest(diff, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, na, nb,
                        "none (needs >= 2 seeds per arm)")
    t, df, se = (float(x) for x in _welch_parts(a, b))
    if se == 0:
        if diff == 0:
            return SeedTest(diff, 0.0, math.nan, math.nan, 1.0, diff, diff, na, nb, "welch_t (no seed variance)")
        perm = sps.permutation_test((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                                    permutation_type="independent", vectorized=True, n_resamples=math.inf)
        return SeedTest(diff, 0.0, math.nan, math.nan, float(perm.pvalue), math.nan, math.nan, na, nb,
                        "permutation_exact (no seed variance)")
    p = max(float(2 * sps.t.sf(abs(t), df)), P_MIN_PARAMETRIC)
    half = float(sps.t.ppf(0.5 + ci / 2, df)) * se
    return SeedTest(diff, se, df, t, p, diff - half, diff + half, na, nb, "welch_t")


def welch_tost(values_a: Sequence[float], values_b: Sequence[float], margin: float) -> float:
    """Equivalence test (two one-sided Welch tests, Schuirmann 1987) of ``|mean(a) - mean(b)| <
    margin``: p = max of the one-sided p-values of ``diff <= -margin`` and ``diff >= margin``.
    Small p = evidence of equivalence within ``margin``. NaN with < 2 seeds per arm or no seed
    variance."""
    if not margin > 0:
        raise ValueError(f"welch_tost: margin must be > 0, got {margin}")
    a, b = _finite(values_a), _finite(values_b)
    if a.size < 2 or b.size < 2:
        return math.nan
    _, df, se = (float(x) for x in _welch_parts(a, b))
    if se == 0:
        return math.nan
    d = float(a.mean() - b.mean())
    p_low = float(sps.t.sf((d + margin) / se, df))
    p_high = float(sps.t.cdf((d - margin) / se, df))
    return max(p_low, p_high, P_MIN_PARAMETRIC)


def bootstrap_tost(replicates: Sequence[float], margin: float) -> float:
    """Equivalence p from bootstrap replicates of a paired difference: ``max(P*(d <= -margin),
    P*(d >= margin))`` with empirical p-values (:func:`empirical_p`); equivalent at level alpha
    iff the percentile interval at level ``1 - 2 alpha`` lies inside ``(-margin, margin)``."""
    if not margin > 0:
        raise ValueError(f"bootstrap_tost: margin must be > 0, got {margin}")
    r = _finite(replicates)
    if r.size == 0:
        return math.nan
    return max(empirical_p(int(np.count_nonzero(r <= -margin)), r.size),
               empirical_p(int(np.count_nonzero(r >= margin)), r.size))


# --------------------------------------------------------------------------- power and calibration

def t_test_power(effect: float, n_a: int, n_b: int, alpha: float = 0.05) -> float:
    """Power of the two-sided pooled-variance Student t-test for a mean difference of
    ``effect`` seed-SDs (closed form: the noncentral t, integrated over the chi-square of the
    variance estimate with scipy.integrate.quad)."""
    from scipy import integrate

    df = n_a + n_b - 2
    nc = abs(effect) * math.sqrt(n_a * n_b / (n_a + n_b))
    tc = float(sps.t.ppf(1 - alpha / 2, df))

    def f(v):
        s = tc * math.sqrt(v / df)
        return (sps.norm.sf(s - nc) + sps.norm.cdf(-s - nc)) * sps.chi2.pdf(v, df)
    return float(integrate.quad(f, 0, np.inf)[0])


def _welch_draws(n_a: int, n_b: int, n_sim: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_sim, n_a)), rng.standard_normal((n_sim, n_b))


def welch_power(effect: float, n_a: int, n_b: int, alpha: float = 0.05, n_sim: int = 20_000,
                seed: int = 0) -> float:
    """Power of :func:`welch_test` at level ``alpha`` for normal seeds with equal SDs and a mean
    difference of ``effect`` SDs, by simulation (``n_sim`` designs; Monte Carlo SE <= 0.5 /
    sqrt(n_sim))."""
    a, b = _welch_draws(n_a, n_b, n_sim, seed)
    return float(np.mean(_welch_p(a + effect, b) < alpha))


def detectable_effect(n_a: int, n_b: int, alpha: float = 0.05, power: float = 0.8, method: str = "welch",
                      n_sim: int = 20_000, seed: int = 0) -> float:
    """The smallest mean difference, in seed-SD units, that the seed test detects with
    ``power`` at two-sided level ``alpha``: 'welch' by simulation with common random numbers
    (:func:`welch_power`), 'student' from the closed form (:func:`t_test_power`)."""
    if n_a < 2 or n_b < 2:
        return math.nan
    if method == "student":
        from scipy.optimize import brentq

        return float(brentq(lambda d: t_test_power(d, n_a, n_b, alpha) - power, 0.0, 50.0))
    if method != "welch":
        raise ValueError(f"detectable_effect: unknown method {method!r}; known: welch, student")
    a, b = _welch_draws(n_a, n_b, n_sim, seed)
    lo, hi = 0.0, 1.0
    while np.mean(_welch_p(a + hi, b) < alpha) < power:
        lo, hi = hi, hi * 2
        if hi > 1e3:
            return math.inf
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(_welch_p(a + mid, b) < alpha) < power else (lo, mid)
    return float(hi)


@dataclass(frozen=True)
class NullRate:
    """False-positive rate of the seed test under a null matched to a design: ``per_test`` (the
    fraction of single tests with p < alpha) and ``familywise`` (the fraction of null designs
    where Holm over the metrics rejects anything)."""

    per_test: float
    familywise: float
    n_sim: int
    n_metrics: int
    exact: bool
    method: str


def seed_null_fpr(values_a, values_b, alpha: float = 0.05, n_sim: int = 2000, seed: int = 0) -> NullRate:
    """False-positive rate of :func:`welch_test` on null designs built from the data.

    ``values_a`` (n_a, m) and ``values_b`` (n_b, m): one row per seed, one column per metric.
    Each arm is centred on its own means (any real difference is removed) and scaled by
    ``sqrt(n / (n - 1))`` (so the residuals keep the seed variance); the pooled residual rows
    are split at random into arms of ``n_a`` and ``n_b`` seeds (all ``C(n_a + n_b, n_a)``
    splits when that is <= ``n_sim``), jointly for all metrics so that their correlation is
    kept; Welch's test runs on every metric of every split. Metrics that are not finite for
    every seed, or have no residual variance, are left out. NaN rates when fewer than 2 seeds
    per arm or no metric remains.
    """
    A = np.asarray(values_a, dtype=np.float64)
    B = np.asarray(values_b, dtype=np.float64)
    A, B = (x.reshape(-1, 1) if x.ndim == 1 else x for x in (A, B))
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"seed_null_fpr: need (n_a, m) and (n_b, m) arrays, got {A.shape} and {B.shape}")
    na, nb = A.shape[0], B.shape[0]
    method = "pooled arm-centred seed residuals, split at random into the design's arms"
    if na < 2 or nb < 2:
        return NullRate(math.nan, math.nan, 0, 0, False, method)
    ra = (A - A.mean(axis=0)) * math.sqrt(na / (na - 1))
    rb = (B - B.mean(axis=0)) * math.sqrt(nb / (nb - 1))
    pooled = np.vstack([ra, rb])  # (n, m)
    keep = np.all(np.isfinite(pooled), axis=0) & (np.ptp(pooled, axis=0) > 1e-12 * (1 + np.abs(
        np.vstack([A, B])).max(axis=0, initial=0)))
    pooled = pooled[:, keep]
    m, n = pooled.shape[1], na + nb
    if m == 0:
        return NullRate(math.nan, math.nan, 0, 0, False, method)
    exact = math.comb(n, na) <= n_sim
    if exact:
        sel = np.array(list(itertools.combinations(range(n), na)))  # (S, na)
        rest = np.array([[i for i in range(n) if i not in set(s)] for s in sel])  # (S, nb)
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((n_sim, n)), axis=1)
        sel, rest = perms[:, :na], perms[:, na:]
    xa = np.moveaxis(pooled[sel], 1, -1)  # (S, m, na)
    xb = np.moveaxis(pooled[rest], 1, -1)  # (S, m, nb)
    p = _welch_p(xa, xb)  # (S, m)
    p = np.where(np.isfinite(p), p, 1.0)
    fw = np.any(_holm_rows(p) < alpha, axis=1)
    return NullRate(float(np.mean(p < alpha)), float(np.mean(fw)), int(sel.shape[0]), int(m), exact, method)


# --------------------------------------------------------------------------- number rendering

def fmt_number(v, digits: int = 3) -> str:
    """One number in every report table: fixed ``digits``, scientific when tiny or huge, '–' for
    missing or non-finite."""
    if v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (float, np.floating)) and v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.2e}"
    return f"{v:.{digits}f}"


def fmt_interval(v, lo, hi) -> str:
    """``value [low, high]``, or the value alone when the interval is missing."""
    s = fmt_number(v)
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        s += f" [{fmt_number(lo)}, {fmt_number(hi)}]"
    return s
