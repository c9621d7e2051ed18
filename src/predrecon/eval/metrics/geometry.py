"""Geometry of an embedding matrix: pure functions of numpy arrays.

Inputs are ``x``: float array ``(n, d)`` (one row per example) and, where a metric needs
classes, integer ``labels`` of shape ``(n,)``. All arithmetic is done in float64 (the inputs
may be float32). Pairwise quantities cost O(m^2 d) for m rows, so they take an optional
row subsample (``max_samples`` / ``n_samples``) drawn without replacement from
``numpy.random.default_rng(seed)``; spectral quantities always use every row.

Spectral metrics take the singular values ``sv`` of the centred matrix (see :func:`spectrum`)
and are collected in the registry :data:`SPECTRAL_METRICS`. :func:`geometry_suite` computes
everything in one call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

_BLOCK = 1024  # rows per block in the pairwise loops (bounds memory to BLOCK * m floats)


# --------------------------------------------------------------------------- validation


def _check_x(x: np.ndarray, name: str = "x", min_rows: int = 2) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n, d), got shape {x.shape}")
    if x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"{name}: need at least {min_rows} rows and 1 column, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric array, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise ValueError(f"{name}: non-finite value in row {bad}")
    return x


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},), got {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("labels: got non-integer float labels; bin regression scores first "
                             "with bin_scores()")
        labels = labels.astype(np.int64)
    return labels


def _check_sv(sv: np.ndarray) -> np.ndarray:
    sv = np.asarray(sv, dtype=np.float64)
    if sv.ndim != 1 or sv.size == 0:
        raise ValueError(f"sv: expected a non-empty 1-D array of singular values, got shape {sv.shape}")
    if not np.all(np.isfinite(sv)) or np.any(sv < 0):
        raise ValueError("sv: singular values must be finite and >= 0")
    if sv.sum() <= 0:
        raise ValueError("sv: all singular values are zero (fully collapsed embeddings)")
    return np.sort(sv)[::-1]


def _subsample(n: int, n_samples: int | None, seed: int) -> np.ndarray | None:
    """Row indices of a seeded subsample without replacement, or None for all rows."""
    if n_samples is None or n_samples >= n:
        return None
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    return np.sort(np.random.default_rng(seed).choice(n, size=n_samples, replace=False))


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` divided by their L2 norm (float64); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def _pair_blocks(a: np.ndarray):
    """Yield (rows, d2_block, upper_mask) over blocks of rows: squared Euclidean distances of
    rows ``s:e`` to all rows, and the mask of pairs (i, j) with i < j (each pair once)."""
    n = a.shape[0]
    sq = np.einsum("ij,ij->i", a, a)
    cols = np.arange(n)
    for s in range(0, n, _BLOCK):
        e = min(n, s + _BLOCK)
        d2 = sq[s:e, None] + sq[None, :] - 2.0 * (a[s:e] @ a.T)  # (e-s, n)
        np.maximum(d2, 0.0, out=d2)
        yield slice(s, e), d2, cols[None, :] > np.arange(s, e)[:, None]


# --------------------------------------------------------------------------- pairwise metrics


def uniformity(x: np.ndarray, t: float = 2.0, n_samples: int | None = 1000, seed: int = 0) -> float:
    """Uniformity loss of Wang & Isola (ICML 2020), ``log E_{i<j} exp(-t ||u_i - u_j||^2)``.

    ``u`` are the L2-normalised rows; the mean runs over all distinct unordered pairs of a
    seeded subsample of ``n_samples`` rows (None: all rows; the paper uses at most 1000).
    Range ``[-4t, 0]``: 0 when all points coincide, more negative = more uniform on the sphere.
    Computed with a log-sum-exp, so it does not underflow for large ``t``.
    """
    x = _check_x(x)
    if t <= 0:
        raise ValueError(f"uniformity: t must be > 0, got {t}")
    idx = _subsample(x.shape[0], n_samples, seed)
    u = l2_normalize(x if idx is None else x[idx])
    parts, count = [], 0
    for _, d2, upper in _pair_blocks(u):
        vals = -t * d2[upper]
        if vals.size:
            parts.append(logsumexp(vals))
            count += vals.size
    return float(logsumexp(parts) - np.log(count))


def alignment(x: np.ndarray, labels: np.ndarray, alpha: float = 2.0, *, normalize: bool = True,
              max_samples: int | None = None, seed: int = 0) -> float:
    """Alignment of Wang & Isola (2020) with class labels as positives:
    ``E_{(i,j) positive} ||u_i - u_j||_2^alpha``.

    Positive pairs are all distinct unordered pairs (i < j) with equal labels, pooled over
    classes (so a class with m members weighs m(m-1)/2 pairs). ``u`` are L2-normalised rows
    when ``normalize``. Lower = positives closer. ``max_samples`` draws a seeded row subsample
    first (None: all rows; cost O(m^2 d)). Raises if no class has two members.
    """
    x = _check_x(x)
    labels = _check_labels(labels, x.shape[0])
    if alpha <= 0:
        raise ValueError(f"alignment: alpha must be > 0, got {alpha}")
    idx = _subsample(x.shape[0], max_samples, seed)
    if idx is not None:
        x, labels = x[idx], labels[idx]
    u = l2_normalize(x) if normalize else np.asarray(x, dtype=np.float64)
    total, count = 0.0, 0
    for rows, d2, upper in _pair_blocks(u):
        pos = upper & (labels[rows, None] == labels[None, :])
        vals = d2[pos]
        total += float(np.sum(vals ** (alpha / 2.0)))
        count += vals.size
    if count == 0:
        raise ValueError("alignment: no class has two members, so there is no positive pair")
    return total / count


def alignment_paper(x: np.ndarray, labels: np.ndarray, *, max_samples: int | None = None,
                    seed: int = 0) -> float:
    """The paper's alignment: mean 4th power of the distance between L2-normalised embeddings
    of the same class, i.e. :func:`alignment` with ``alpha=4`` (PAPER.md, evaluation).
    For STS-B the labels are the gold scores binned into 5 classes by :func:`bin_scores`."""
    return alignment(x, labels, alpha=4.0, normalize=True, max_samples=max_samples, seed=seed)


def pair_alignment_terms(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair terms of :func:`pair_alignment` on L2-normalised rows: ``pos[i] =
    ||u_i - v_i||^2`` and ``rand[i] = mean_{j != i} ||u_i - v_j||^2`` (exact, O(m d) via
    ``2 - 2 (u_i . sum_j v_j - u_i . v_i) / (m - 1)``). ``mean(rand)`` is the mean squared
    distance over all m(m-1) ordered non-matching pairs."""
    u, v = l2_normalize(_check_x(u, "u")), l2_normalize(_check_x(v, "v"))
    if u.shape != v.shape:
        raise ValueError(f"pair_alignment: u and v differ in shape: {u.shape} vs {v.shape}")
    m = u.shape[0]
    dot = np.einsum("ij,ij->i", u, v)
    pos = np.maximum(np.einsum("ij,ij->i", u, u) + np.einsum("ij,ij->i", v, v) - 2 * dot, 0.0)
    cross = u @ v.sum(axis=0) - dot  # sum_{j != i} u_i . v_j
    sq_u = np.einsum("ij,ij->i", u, u)
    sq_v_sum = np.einsum("ij,ij->", v, v) - np.einsum("ij,ij->i", v, v)  # sum_{j != i} ||v_j||^2
    rand = (sq_u * (m - 1) + sq_v_sum - 2 * cross) / (m - 1)
    return pos, np.maximum(rand, 0.0)


def pair_alignment(u: np.ndarray, v: np.ndarray, positive: np.ndarray | None = None) -> float:
    """Alignment on real positive pairs: the mean squared distance of the L2-normalised
    positive pairs ``(u_i, v_i)`` divided by the mean over all non-matching pairs
    ``(u_i, v_j), i != j`` of every row. 1 = positives no closer than random pairs, 0 =
    positives coincide; lower = better aligned. Being a ratio, it does not move with a global
    collapse (anisotropy) that shrinks every distance alike. ``positive``: bool (m,) mask of
    positive pairs (default: all)."""
    pos, rand = pair_alignment_terms(u, v)
    if pos.shape[0] < 2:
        raise ValueError("pair_alignment: need at least 2 pairs")
    mask = np.ones(pos.shape[0], bool) if positive is None else np.asarray(positive, bool)
    if mask.shape != pos.shape or not mask.any():
        raise ValueError("pair_alignment: positive must be a (m,) bool mask with at least one True")
    den = float(rand.mean())
    if den <= 0:
        raise ValueError("pair_alignment: all pairs coincide (collapsed embeddings)")
    return float(pos[mask].mean()) / den


def bin_scores(scores: np.ndarray, n_bins: int = 5, low: float | None = 0.0,
               high: float | None = 5.0) -> np.ndarray:
    """Bin regression scores into ``n_bins`` equal-width classes over ``[low, high]``.

    Class ``k`` holds ``low + k*w <= s < low + (k+1)*w`` with ``w = (high-low)/n_bins``; the top
    edge ``high`` goes to the last class. Defaults fit STS-B (0..5 → floor(s), with 5 → 4).
    ``low``/``high`` None use the data's min/max. Scores outside the range raise.
    Returns int64 labels ``(n,)``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)):
        raise ValueError(f"bin_scores: expected a non-empty finite 1-D array, got shape {s.shape}")
    if n_bins < 1:
        raise ValueError(f"bin_scores: n_bins must be >= 1, got {n_bins}")
    lo = float(s.min()) if low is None else float(low)
    hi = float(s.max()) if high is None else float(high)
    if not hi > lo:
        raise ValueError(f"bin_scores: need high > low, got low={lo}, high={hi}")
    if s.min() < lo or s.max() > hi:
        bad = int(np.argmax((s < lo) | (s > hi)))
        raise ValueError(f"bin_scores: score {s[bad]} at row {bad} outside [{lo}, {hi}]")
    return np.clip(np.floor((s - lo) / (hi - lo) * n_bins), 0, n_bins - 1).astype(np.int64)


def anisotropy(x: np.ndarray, n_pairs: int | None = None, seed: int = 0) -> float:
    """Mean cosine similarity between distinct rows (Ethayarajh 2019's anisotropy baseline).

    ``n_pairs=None`` (default) gives the exact mean over all ordered pairs i != j in O(n d) via
    ``(||sum_i u_i||^2 - sum_i ||u_i||^2) / (n (n-1))``; an integer draws that many random
    ordered pairs (i != j, uniform, seeded) and averages over them instead.
    """
    x = _check_x(x)
    u = l2_normalize(x)
    n = u.shape[0]
    if n_pairs is None:
        s = u.sum(axis=0)
        return float((s @ s - np.einsum("ij,ij->", u, u)) / (n * (n - 1)))
    if n_pairs < 1:
        raise ValueError(f"anisotropy: n_pairs must be >= 1, got {n_pairs}")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=n_pairs)
    j = (i + rng.integers(1, n, size=n_pairs)) % n  # uniform over j != i
    return float(np.mean(np.einsum("ij,ij->i", u[i], u[j])))


def class_distance_ratio(x: np.ndarray, labels: np.ndarray, *, normalize: bool = False,
                         max_samples: int | None = None, seed: int = 0) -> float:
    """Intra/inter-class distance ratio: mean Euclidean distance over all distinct pairs with
    equal labels divided by the mean over all pairs with different labels.

    Pairs are pooled over classes (not averaged per class). Raw embeddings unless ``normalize``
    (the ratio is invariant to a global scale either way). Near 0: tight, separated classes;
    about 1: no class structure. ``max_samples`` draws a seeded row subsample first.
    """
    x = _check_x(x)
    labels = _check_labels(labels, x.shape[0])
    idx = _subsample(x.shape[0], max_samples, seed)
    if idx is not None:
        x, labels = x[idx], labels[idx]
    a = l2_normalize(x) if normalize else np.asarray(x, dtype=np.float64)
    w_sum = b_sum = 0.0
    w_n = b_n = 0
    for rows, d2, upper in _pair_blocks(a):
        same = labels[rows, None] == labels[None, :]
        d = np.sqrt(d2)
        w, b = upper & same, upper & ~same
        w_sum += float(d[w].sum())
        b_sum += float(d[b].sum())
        w_n += int(w.sum())
        b_n += int(b.sum())
    if w_n == 0 or b_n == 0:
        raise ValueError("class_distance_ratio: need a class with two members and two classes")
    if b_sum == 0:
        raise ValueError("class_distance_ratio: all between-class distances are zero")
    return (w_sum / w_n) / (b_sum / b_n)


# --------------------------------------------------------------------------- spectrum


def spectrum(x: np.ndarray, center: bool = True) -> np.ndarray:
    """Singular values (descending, float64) of the column-centred matrix ``x - mean(x, 0)``.

    Length ``min(n, d)``. When ``n >= 2d`` they are computed as the square roots of the
    eigenvalues of the d x d Gram matrix ``Xc^T Xc`` (fp64), which equals the SVD up to fp error
    (absolute error ~1e-8 * sigma_max on the smallest values); otherwise by an fp64 SVD.
    """
    x = _check_x(x, min_rows=1)
    a = np.asarray(x, dtype=np.float64)
    if center:
        a = a - a.mean(axis=0)
    n, d = a.shape
    if n >= 2 * d:
        ev = np.linalg.eigvalsh(a.T @ a)  # ascending
        return np.sqrt(np.clip(ev, 0.0, None))[::-1].copy()
    return np.linalg.svd(a, compute_uv=False)


def _probs(sv: np.ndarray) -> np.ndarray:
    return sv / sv.sum()


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def effective_rank(sv: np.ndarray) -> float:
    """Effective rank of Roy & Vetterli (2007): ``exp(H(p))``, ``p = sigma / sum(sigma)``,
    Shannon entropy in nats with 0 log 0 = 0. Equals k for k equal non-zero values, 1 for a
    rank-1 matrix."""
    return float(np.exp(_entropy(_probs(_check_sv(sv)))))


def rankme(sv: np.ndarray, eps: float = 1e-7) -> float:
    """RankMe of Garrido et al. (ICML 2023): ``exp(-sum_k p_k log p_k)`` with
    ``p_k = sigma_k / ||sigma||_1 + eps`` (their eps = 1e-7). Equals :func:`effective_rank` up to
    the eps term on the same spectrum; Garrido et al. use the *uncentred* embedding matrix
    (``spectrum(x, center=False)``), which is what :func:`geometry_suite` passes."""
    sv = _check_sv(sv)
    p = _probs(sv) + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def rank_at_variance(sv: np.ndarray, threshold: float = 0.9) -> int:
    """Smallest k such that the top-k share of the variance ``sum_{i<=k} sigma_i^2 / sum sigma^2``
    is >= ``threshold`` (compared with a 1e-12 tolerance against fp rounding)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"rank_at_variance: threshold must be in (0, 1], got {threshold}")
    var = _check_sv(sv) ** 2
    cum = np.cumsum(var) / var.sum()
    return int(min(np.searchsorted(cum, threshold - 1e-12, side="left") + 1, var.size))


def stable_rank(sv: np.ndarray) -> float:
    """Stable rank ``sum sigma^2 / sigma_max^2`` (= ||X||_F^2 / ||X||_2^2)."""
    sv = _check_sv(sv)
    return float((sv ** 2).sum() / sv[0] ** 2)


def spectral_entropy(sv: np.ndarray) -> float:
    """Normalised spectral entropy of the eigenspectrum, ``H(p) / log(k)`` with
    ``p = sigma^2 / sum(sigma^2)`` (the variance shares, as the reference's
    ``compute_eigenspectrum``), k = len(sv) (zeros included). In [0, 1]: 1 for a flat spectrum,
    0 for rank 1. Needs k >= 2."""
    sv = _check_sv(sv)
    if sv.size < 2:
        raise ValueError("spectral_entropy: need at least 2 singular values")
    lam = sv ** 2
    return _entropy(lam / lam.sum()) / float(np.log(sv.size))


#: Default rank range of the power-law fit, as fractions of k = len(sv): ranks
#: ``max(2, ceil(0.02 k)) .. max(k_min + 1, floor(0.5 k))`` (d = 384: ranks 8..192; d = 768:
#: 16..384). Rank 1 and the bottom half (the noise / sampling tail, which bends an isotropic
#: Gaussian's spectrum) are left out.
POWERLAW_RANGE = (0.02, 0.5)


def powerlaw_range(k: int, rel: tuple[float, float] = POWERLAW_RANGE) -> tuple[int, int]:
    """The 1-based inclusive rank range ``(k_min, k_max)`` of :data:`POWERLAW_RANGE` for k values."""
    k_min = max(2, int(np.ceil(rel[0] * k)))
    return k_min, max(k_min + 1, int(np.floor(rel[1] * k)))


def powerlaw_fit(sv: np.ndarray, k_range: tuple[int, int | None] | None = None,
                 min_rel: float = 1e-10) -> tuple[float, float]:
    """Decay exponent alpha of the eigenspectrum ``lambda_k = sigma_k^2 ~ C k^(-alpha)``
    (alpha-ReQ, Agrawal et al. 2022) and the R^2 of the fit: least squares of ``log lambda_k``
    on ``log k`` over a fixed rank range.

    Ranks are 1-based; ``k_range=None`` uses :func:`powerlaw_range` (documented there);
    ``(k_min, k_max)`` sets it (``k_max`` None = last rank). Ranks with
    ``lambda_k <= min_rel * lambda_1`` (numerically zero, e.g. the one removed by centring) are
    dropped. Needs at least 3 ranks in range. Returns ``(alpha, r2)``.
    """
    lam = _check_sv(sv) ** 2
    k_min, k_max = powerlaw_range(lam.size) if k_range is None else k_range
    k_max = lam.size if k_max is None else min(int(k_max), lam.size)
    if k_min < 1:
        raise ValueError(f"powerlaw_fit: k_range must start at rank >= 1, got {k_range}")
    k = np.arange(1, lam.size + 1)
    keep = (k >= k_min) & (k <= k_max) & (lam > min_rel * lam[0])
    if keep.sum() < 3:
        raise ValueError(f"powerlaw_fit: fewer than 3 non-zero eigenvalues in ranks {k_min}..{k_max}")
    lx, ly = np.log(k[keep]), np.log(lam[keep])
    slope, icept = np.polyfit(lx, ly, 1)
    ss_res = float(((ly - (slope * lx + icept)) ** 2).sum())
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    return float(-slope), (1.0 - ss_res / ss_tot) if ss_tot > 0 else 1.0


def powerlaw_alpha(sv: np.ndarray, k_range: tuple[int, int | None] | None = None) -> float:
    """alpha of :func:`powerlaw_fit` (its R^2 is :func:`powerlaw_r2`)."""
    return powerlaw_fit(sv, k_range)[0]


def powerlaw_r2(sv: np.ndarray, k_range: tuple[int, int | None] | None = None) -> float:
    """R^2 of the log-log fit of :func:`powerlaw_fit`."""
    return powerlaw_fit(sv, k_range)[1]


#: name -> fn(sv) -> float; the spectral entries of :func:`geometry_suite`, computed on the
#: centred spectrum. ``rankme`` is not here: it is computed on the uncentred spectrum.
SPECTRAL_METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "effective_rank": effective_rank,
    "rank_at_90": lambda sv: float(rank_at_variance(sv, 0.9)),
    "stable_rank": stable_rank,
    "spectral_entropy": spectral_entropy,
    "powerlaw_alpha": powerlaw_alpha,
    "powerlaw_r2": powerlaw_r2,
}


def spectral_metrics(sv: np.ndarray, names: list[str] | None = None) -> dict[str, float]:
    """Evaluate the named entries of :data:`SPECTRAL_METRICS` (all by default) on ``sv``;
    an entry that cannot be computed (e.g. too few ranks for the power-law fit) gives NaN."""
    names = list(SPECTRAL_METRICS) if names is None else names
    unknown = [m for m in names if m not in SPECTRAL_METRICS]
    if unknown:
        raise KeyError(f"unknown spectral metric(s) {unknown}; known: {sorted(SPECTRAL_METRICS)}")
    out = {}
    for m in names:
        try:
            out[m] = float(SPECTRAL_METRICS[m](sv))
        except ValueError:
            out[m] = float("nan")
    return out


# --------------------------------------------------------------------------- suite


def geometry_suite(x: np.ndarray, labels: np.ndarray | None = None, *, seed: int = 0,
                   n_uniformity: int | None = 1000, n_pairwise: int | None = 2000,
                   t: float = 2.0, n_threads: int | None = 1) -> dict[str, float]:
    """All geometry metrics of one embedding matrix, as ``{name: float}``.

    Always: ``n``, ``dim``, ``uniformity`` (t, seeded subsample of ``n_uniformity`` rows, the
    paper's protocol), ``anisotropy`` (exact, all pairs), every entry of
    :data:`SPECTRAL_METRICS` on the centred spectrum (all rows) and ``rankme`` on the
    uncentred spectrum (Garrido et al.). With integer ``labels`` (bin regression scores first
    with :func:`bin_scores`): ``alignment_paper`` (the paper's same-class alignment, alpha=4;
    kept as a faithful replica: on anisotropic embeddings it tracks ``2 - 2 anisotropy``) and
    ``class_distance_ratio``, each on one seeded subsample of ``n_pairwise`` rows (None: all
    rows, O(n^2 d)). Alignment on real positive pairs is :func:`pair_alignment`.

    BLAS runs with ``n_threads`` threads (None: library default). One thread is the default:
    on 10k x 768 it measured 1.0 s on a loaded 2-core machine where two threads took 5-6 s
    (timing script: ``benchmarks/geometry_speed.py``).
    """
    with threadpool_limits(limits=n_threads):
        return _suite(_check_x(x), labels, seed, n_uniformity, n_pairwise, t)


def _suite(x, labels, seed, n_uniformity, n_pairwise, t) -> dict[str, float]:
    sv = spectrum(x)
    out: dict[str, float] = {"n": float(x.shape[0]), "dim": float(x.shape[1]),
                             "uniformity": uniformity(x, t=t, n_samples=n_uniformity, seed=seed),
                             "anisotropy": anisotropy(x)}
    out.update(spectral_metrics(sv))
    out["rankme"] = rankme(spectrum(x, center=False))
    if labels is not None:
        labels = _check_labels(labels, x.shape[0])
        idx = _subsample(x.shape[0], n_pairwise, seed)
        xs, ys = (x, labels) if idx is None else (x[idx], labels[idx])
        out["alignment_paper"] = alignment_paper(xs, ys)
        out["class_distance_ratio"] = class_distance_ratio(xs, ys)
    return out
