"""Closed-form and property tests for predrecon.eval.metrics.geometry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from predrecon.eval.metrics import geometry as g


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- uniformity


def test_uniformity_identical_points_is_zero():
    x = np.tile(np.array([[3.0, -1.0, 2.0]]), (50, 1))
    assert g.uniformity(x, n_samples=None) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("t", [0.5, 2.0, 100.0])
def test_uniformity_antipodal_pair(t):
    # ||u - (-u)||^2 = 4  ->  log exp(-4t) = -4t  (also checks no underflow at t = 100)
    x = np.array([[1.0, 2.0, 2.0], [-2.0, -4.0, -4.0]])
    assert g.uniformity(x, t=t) == pytest.approx(-4.0 * t, rel=1e-12)


def test_uniformity_regular_simplex():
    # k unit vectors with pairwise cosine -1/(k-1): ||u-v||^2 = 2 + 2/(k-1), all pairs equal.
    k = 5
    e = np.eye(k)
    x = e - e.mean(axis=0)  # centred basis = regular simplex in a (k-1)-dim subspace
    expected = -2.0 * (2.0 + 2.0 / (k - 1))
    assert g.uniformity(x, t=2.0) == pytest.approx(expected, rel=1e-12)


def test_uniformity_random_high_dim_close_to_minus_2t():
    # cos ~ N(0, 1/d): E exp(-t(2 - 2c)) = exp(-2t + 2t^2/d)  ->  -4 + 8/d for t = 2
    d = 768
    x = _rng(1).standard_normal((1500, d))
    assert g.uniformity(x, n_samples=None) == pytest.approx(-4.0 + 8.0 / d, abs=5e-3)


def test_uniformity_is_scale_invariant_and_seeded():
    x = _rng(2).standard_normal((3000, 16))
    a = g.uniformity(x, n_samples=500, seed=3)
    assert g.uniformity(7.0 * x, n_samples=500, seed=3) == pytest.approx(a, rel=1e-10)
    assert g.uniformity(x, n_samples=500, seed=3) == a
    assert g.uniformity(x, n_samples=500, seed=4) != a


def test_uniformity_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        g.uniformity(np.zeros(5))
    with pytest.raises(ValueError, match="row 1"):
        g.uniformity(np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="t must be"):
        g.uniformity(np.eye(3), t=0.0)


# ----------------------------------------------------------------------------- alignment


def test_alignment_hand_example():
    e1, e2 = np.eye(2)
    # class 0: {e1, e2}: one pair, d^2 = 2 ; class 1: {e1, e1, -e1}: d^2 = 0, 4, 4
    x = np.stack([e1, e2, e1, e1, -e1])
    y = np.array([0, 0, 1, 1, 1])
    assert g.alignment(x, y, alpha=2) == pytest.approx((2 + 0 + 4 + 4) / 4)
    assert g.alignment_paper(x, y) == pytest.approx((4 + 0 + 16 + 16) / 4)
    assert g.alignment(x, y, alpha=1) == pytest.approx((np.sqrt(2) + 0 + 2 + 2) / 4)


def test_alignment_collapsed_classes_is_zero_and_singletons_ignored():
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 5.0], [1.0, 1.0]])
    y = np.array([0, 0, 1, 1, 2])  # class 2 is a singleton: no pair
    assert g.alignment(x, y) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="no class has two members"):
        g.alignment(x[:3], np.array([0, 1, 2]))


def test_alignment_rejects_float_scores():
    with pytest.raises(ValueError, match="bin_scores"):
        g.alignment(np.eye(3), np.array([0.5, 1.2, 3.3]))


def test_bin_scores_stsb_edges():
    s = np.array([0.0, 0.99, 1.0, 2.5, 3.999, 4.0, 5.0])
    np.testing.assert_array_equal(g.bin_scores(s), [0, 0, 1, 2, 3, 4, 4])
    np.testing.assert_array_equal(g.bin_scores(np.array([1.0, 2.0, 3.0]), n_bins=2, low=None,
                                               high=None), [0, 1, 1])
    with pytest.raises(ValueError, match="row 1"):
        g.bin_scores(np.array([1.0, 5.5]))


# ----------------------------------------------------------------------------- anisotropy


def test_anisotropy_closed_forms():
    same = np.tile([[1.0, 1.0]], (10, 1))
    assert g.anisotropy(same) == pytest.approx(1.0)
    assert g.anisotropy(same, n_pairs=100) == pytest.approx(1.0)
    pm = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert g.anisotropy(pm) == pytest.approx(-1.0)
    # k orthonormal vectors: all cosines 0
    assert g.anisotropy(np.eye(6)) == pytest.approx(0.0, abs=1e-15)


def test_anisotropy_sampled_matches_exact():
    x = _rng(3).standard_normal((400, 8)) + 0.7  # shifted cloud: clearly anisotropic
    exact = g.anisotropy(x)
    u = g.l2_normalize(x)
    c = u @ u.T
    brute = (c.sum() - np.trace(c)) / (400 * 399)
    assert exact == pytest.approx(brute, rel=1e-10)
    assert g.anisotropy(x, n_pairs=50_000, seed=1) == pytest.approx(exact, abs=0.01)


# ----------------------------------------------------------------------------- class distance


def test_class_distance_ratio_hand_example():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    y = np.array([0, 0, 1, 1])
    # within: 1, 1 ; between: 10, 11, 9, 10  -> 1 / 10
    assert g.class_distance_ratio(x, y) == pytest.approx(0.1)


def test_class_distance_ratio_separated_vs_random():
    rng = _rng(4)
    centres = rng.standard_normal((3, 32)) * 20
    y = np.repeat(np.arange(3), 100)
    x = centres[y] + rng.standard_normal((300, 32))
    assert g.class_distance_ratio(x, y) < 0.1
    y_rand = rng.permutation(y)
    assert g.class_distance_ratio(x, y_rand) == pytest.approx(1.0, abs=0.05)


# ----------------------------------------------------------------------------- spectrum


@pytest.mark.parametrize("shape", [(500, 20), (15, 40)])
def test_spectrum_matches_svd(shape):
    x = (_rng(5).standard_normal(shape) * np.linspace(0.1, 3, shape[1])).astype(np.float32)
    ref = np.linalg.svd(x.astype(np.float64) - x.astype(np.float64).mean(0), compute_uv=False)
    sv = g.spectrum(x)
    assert sv.shape == (min(shape),)
    np.testing.assert_allclose(sv, ref, rtol=0, atol=1e-7 * ref[0])
    assert np.all(np.diff(sv) <= 0)


def test_spectrum_is_centred():
    x = np.ones((50, 4)) * np.array([1.0, 2.0, 3.0, 4.0])  # constant rows: centred matrix = 0
    np.testing.assert_allclose(g.spectrum(x), 0.0, atol=1e-10)
    assert g.spectrum(x, center=False)[0] == pytest.approx(np.sqrt(50 * 30))


def test_identity_covariance_gaussian_full_rank():
    d = 32
    x = _rng(6).standard_normal((20_000, d))
    sv = g.spectrum(x)
    assert g.effective_rank(sv) == pytest.approx(d, rel=0.01)
    assert g.rankme(sv) == pytest.approx(d, rel=0.01)
    assert g.spectral_entropy(sv) == pytest.approx(1.0, abs=1e-3)
    assert g.stable_rank(sv) == pytest.approx(d, rel=0.1)


def test_collapsed_embeddings_rank_one():
    rng = _rng(7)
    direction = rng.standard_normal(16)
    x = rng.standard_normal((200, 1)) * direction  # every row on one line
    sv = g.spectrum(x)
    assert g.effective_rank(sv) == pytest.approx(1.0, abs=1e-6)
    assert g.rank_at_variance(sv, 0.9) == 1
    assert g.stable_rank(sv) == pytest.approx(1.0)
    assert g.spectral_entropy(sv) == pytest.approx(0.0, abs=1e-6)
    # a line through 0 normalises to two antipodal points: pairs at d^2 = 0 or 4
    pos = int((x[:, 0] * direction[0] > 0).sum())
    n = x.shape[0]
    same = (pos * (pos - 1) + (n - pos) * (n - pos - 1)) / 2
    opposite = pos * (n - pos)
    expected = np.log((same + opposite * np.exp(-8.0)) / (same + opposite))
    assert g.uniformity(x, n_samples=None) == pytest.approx(expected, rel=1e-10)
    # all rows on one ray: fully collapsed on the sphere
    ray = np.abs(rng.standard_normal((200, 1))) * direction
    assert g.uniformity(ray) == pytest.approx(0.0, abs=1e-12)


def test_effective_rank_equal_values_and_stable_rank_diag():
    assert g.effective_rank(np.array([2.0, 2.0, 2.0, 0.0])) == pytest.approx(3.0)
    sv = np.array([4.0, 2.0, 1.0])  # singular values of diag(4, 2, 1)
    assert g.stable_rank(sv) == pytest.approx((16 + 4 + 1) / 16)
    p = sv / sv.sum()
    assert g.effective_rank(sv) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    q = sv ** 2 / (sv ** 2).sum()  # the entropy is of the variance shares sigma^2 (16, 4, 1) / 21
    assert g.spectral_entropy(sv) == pytest.approx(-(q * np.log(q)).sum() / np.log(3))
    assert g.spectral_entropy(sv) != pytest.approx(np.log(g.effective_rank(sv)) / np.log(3))  # not erank again
    # rankme differs from the effective rank only through eps
    assert g.rankme(sv, eps=0.0) == pytest.approx(g.effective_rank(sv))
    assert g.rankme(sv) != g.effective_rank(sv)


def test_rank_at_variance_constructed_spectrum():
    sv = np.sqrt(np.array([0.5, 0.4, 0.06, 0.04]))  # variance shares 0.5, 0.4, 0.06, 0.04
    assert g.rank_at_variance(sv, 0.5) == 1
    assert g.rank_at_variance(sv, 0.9) == 2  # cumulative 0.9 exactly (fp rounding tolerated)
    assert g.rank_at_variance(sv, 0.91) == 3
    assert g.rank_at_variance(sv, 1.0) == 4
    with pytest.raises(ValueError, match="threshold"):
        g.rank_at_variance(sv, 0.0)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.3])
def test_powerlaw_alpha_recovers_exact_power_law(alpha):
    k = np.arange(1, 301)
    sv = np.sqrt(5.0 * k ** (-alpha))  # sigma_k^2 = 5 k^-alpha
    a, r2 = g.powerlaw_fit(sv)
    assert a == pytest.approx(alpha, rel=1e-10) and r2 == pytest.approx(1.0, abs=1e-12)
    assert g.powerlaw_alpha(sv, k_range=(11, 200)) == pytest.approx(alpha, rel=1e-10)
    assert g.powerlaw_r2(sv) == pytest.approx(1.0, abs=1e-12)


def test_powerlaw_default_range_is_fixed_and_documented():
    assert g.powerlaw_range(384) == (8, 192) and g.powerlaw_range(768) == (16, 384)
    assert g.powerlaw_range(32) == (2, 16)
    # a spectrum that follows k^-1 inside the range and anything outside gives alpha = 1
    k = np.arange(1, 385)
    lam = 1.0 / k
    lam[:7] = 1000.0 * lam[:7]  # rank 1..7 (outside the range) far above the law
    lam[192:] = 1e-6 * lam[192:]  # the tail (outside the range) far below
    a, r2 = g.powerlaw_fit(np.sqrt(np.sort(lam)[::-1]))
    assert a == pytest.approx(1.0, rel=1e-9) and r2 == pytest.approx(1.0, abs=1e-9)


def test_powerlaw_alpha_isotropic_gaussian_is_near_zero():
    """Isotropic data has no decay: alpha ~ 0 on the fixed range (all ranks gave 0.67 before)."""
    x = _rng(12).standard_normal((100_000, 128))
    sv = g.spectrum(x)
    a, r2 = g.powerlaw_fit(sv)
    assert abs(a) < 0.03
    # n close to d (the 872 x 384): fitting every rank follows the sampling tail (0.67);
    # the fixed range leaves most of it out
    sv = g.spectrum(_rng(15).standard_normal((872, 384)))
    assert g.powerlaw_alpha(sv, k_range=(1, None)) > 0.6 and g.powerlaw_alpha(sv) < 0.45


def test_powerlaw_alpha_on_embeddings_with_power_law_covariance():
    d, alpha = 64, 1.5
    scale = np.arange(1, d + 1) ** (-alpha / 2)  # std per axis: variance k^-alpha
    x = _rng(8).standard_normal((50_000, d)) * scale
    assert g.powerlaw_alpha(g.spectrum(x), k_range=(1, 48)) == pytest.approx(alpha, abs=0.05)


def test_powerlaw_alpha_drops_zero_eigenvalues():
    sv = np.array([1.0, 2 ** -0.5, 3 ** -0.5, 0.5, 0.0])  # lambda_k = 1/k, last one numerically zero
    assert g.powerlaw_alpha(sv, k_range=(1, None)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="fewer than 3"):
        g.powerlaw_alpha(np.array([1.0, 0.5, 0.0, 0.0]), k_range=(1, None))
    assert np.isnan(g.spectral_metrics(np.array([1.0, 0.5, 0.0]))["powerlaw_alpha"])  # suite: NaN, no raise


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.floats(0.0, 1e3), min_size=2, max_size=40).filter(lambda v: sum(v) > 1e-6))
def test_spectral_metric_bounds(values):
    sv = np.array(values)
    k = sv.size
    er = g.effective_rank(sv)
    assert 1.0 - 1e-9 <= er <= k + 1e-9
    assert 0.0 - 1e-12 <= g.spectral_entropy(sv) <= 1.0 + 1e-12
    assert 1.0 - 1e-9 <= g.stable_rank(sv) <= k + 1e-9
    r50, r90 = g.rank_at_variance(sv, 0.5), g.rank_at_variance(sv, 0.9)
    assert 1 <= r50 <= r90 <= k
    np.testing.assert_allclose(g.effective_rank(np.sort(sv)), er)  # order does not matter


def test_spectral_metric_input_checks():
    with pytest.raises(ValueError, match="all singular values are zero"):
        g.effective_rank(np.zeros(3))
    with pytest.raises(ValueError, match=">= 0"):
        g.stable_rank(np.array([1.0, -1.0]))
    with pytest.raises(KeyError, match="unknown spectral metric"):
        g.spectral_metrics(np.ones(3), ["nope"])


# ----------------------------------------------------------------------------- suite


def test_rankme_is_uncentred_in_the_suite():
    """Garrido et al.'s RankMe uses the raw embedding matrix: a large common offset (anisotropy)
    collapses it to ~1 while the centred effective rank is unchanged."""
    x = _rng(13).standard_normal((2000, 16)) + 500.0 * np.ones(16)
    out = g.geometry_suite(x)
    assert out["rankme"] == pytest.approx(g.rankme(g.spectrum(x, center=False)))
    assert out["rankme"] < 1.1 and out["effective_rank"] > 15


def test_one_hot_spectrum_closed_forms():
    sv = np.array([3.0, 0.0, 0.0, 0.0])
    assert g.effective_rank(sv) == pytest.approx(1.0) and g.spectral_entropy(sv) == pytest.approx(0.0)
    assert g.rankme(sv) == pytest.approx(1.0, abs=1e-4) and g.stable_rank(sv) == 1.0
    flat = np.ones(5)
    assert g.spectral_entropy(flat) == pytest.approx(1.0) and g.effective_rank(flat) == pytest.approx(5.0)


def test_pair_alignment_closed_form():
    # positives coincide -> 0; random cross pairs of orthonormal vectors are at distance^2 = 2
    e = np.eye(4)
    assert g.pair_alignment(e, e) == pytest.approx(0.0)
    pos, rand = g.pair_alignment_terms(e, e)
    np.testing.assert_allclose(rand, 2.0)
    # v_i at 90 degrees from u_i in a plane of its own: ||u_i - v_i||^2 = 2 for every pair
    u = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    v = np.array([[0, 1.0, 0, 0], [0, 0, 0, 1.0]])
    assert g.pair_alignment(u, v) == pytest.approx(1.0)  # positives no closer than random pairs
    # hand example with a mask: brute force over all i != j pairs
    rng = _rng(14)
    a, b = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    mask = np.array([1, 0, 1, 1, 0, 0, 1], bool)
    ua, vb = g.l2_normalize(a), g.l2_normalize(b)
    d2 = ((ua[:, None, :] - vb[None, :, :]) ** 2).sum(-1)
    brute = np.diag(d2)[mask].mean() / d2[~np.eye(7, dtype=bool)].mean()
    assert g.pair_alignment(a, b, mask) == pytest.approx(brute, rel=1e-12)
    # a global offset (collapse) shrinks every distance alike: the ratio stays ~ 1 for random pairs
    z = rng.standard_normal((3000, 8))
    assert g.pair_alignment(z + 20, rng.standard_normal((3000, 8)) + 20) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="positive"):
        g.pair_alignment(a, b, np.zeros(7, bool))


def test_geometry_suite_keys_and_consistency():
    rng = _rng(9)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    y = rng.integers(0, 4, 300)
    out = g.geometry_suite(x, y, seed=1, n_uniformity=None, n_pairwise=None)
    assert set(out) == {"n", "dim", "uniformity", "anisotropy", "rankme", "alignment_paper",
                        "class_distance_ratio", *g.SPECTRAL_METRICS}
    assert all(isinstance(v, float) and np.isfinite(v) for v in out.values())
    assert out["uniformity"] == pytest.approx(g.uniformity(x, n_samples=None))
    assert out["alignment_paper"] == pytest.approx(g.alignment(x, y, alpha=4))
    assert out["effective_rank"] == pytest.approx(g.effective_rank(g.spectrum(x)))
    assert "alignment_paper" not in g.geometry_suite(x)
    assert g.geometry_suite(x, y, seed=1) == g.geometry_suite(x, y, seed=1)
