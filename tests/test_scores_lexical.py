"""Task scores against scikit-learn, and the content-word lexical probe (predrecon.eval.metrics.lexical)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

from predrecon.eval.metrics import lexical as lx
from predrecon.eval.metrics import scores as sc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_sklearn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    assert sc.accuracy(p, y) == pytest.approx(accuracy_score(y, p))
    assert sc.f1(p, y) == pytest.approx(f1_score(y, p))
    assert sc.mcc(p, y) == pytest.approx(matthews_corrcoef(y, p))
    assert sc.balanced_accuracy(p, y) == pytest.approx(balanced_accuracy_score(y, p))
    y3, p3 = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    assert sc.balanced_accuracy(p3, y3) == pytest.approx(balanced_accuracy_score(y3, p3))
    a, b = rng.standard_normal(40), rng.standard_normal(40)
    b[:5] = b[5]  # ties
    assert sc.pearson(a, b) == pytest.approx(pearsonr(a, b).statistic)
    assert sc.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)


def test_scores_batched_and_degenerate():
    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 2, 30), rng.integers(0, 2, 30)
    idx = rng.integers(0, 30, (4, 30))
    for name, fn in sc.SCORES.items():
        batch = fn(p[idx], y[idx])
        assert batch.shape == (4,)
        np.testing.assert_allclose(batch, [fn(p[i], y[i]) for i in idx], err_msg=name)
    const = np.ones(10)
    assert sc.mcc(const, np.r_[np.ones(5), np.zeros(5)]) == 0.0  # sklearn's convention
    assert sc.f1(np.zeros(4), np.zeros(4)) == 0.0
    assert sc.spearman(const, np.arange(10.0)) == 0.0
    # majority-class floors: F1 of always-positive = 2p / (1 + p); MCC = 0
    y = np.r_[np.ones(68), np.zeros(32)]
    assert sc.f1(np.ones(100), y) == pytest.approx(2 * 0.68 / 1.68)
    with pytest.raises(KeyError, match="unknown score"):
        sc.score("auc", y, y)


# ----------------------------------------------------------------------------- lexical


def test_auc_placements_mean_is_macro_auc():
    rng = np.random.default_rng(0)
    y = (rng.random((80, 6)) < 0.3).astype(np.uint8)
    y[:, 5] = 0  # a word absent from the split: left out of the macro average
    s = rng.standard_normal((80, 6)) + y
    s[:10, 0] = 0.0  # ties
    pe = lx.auc_placements(s, y)
    expected = np.mean([roc_auc_score(y[:, j], s[:, j]) for j in range(5)])
    assert pe.shape == (80,) and pe.mean() == pytest.approx(expected, rel=1e-12)
    assert lx.macro_auc(s, y) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        lx.auc_placements(s, np.zeros((80, 6)))


def test_auc_influence_values_give_delong_variance():
    """The variance of the mean of the per-example values is DeLong's S10/P + S01/N (population
    form) and matches a bootstrap that recomputes the AUC, even for a rare word near AUC 1."""
    rng = np.random.default_rng(3)
    n = 400
    y = np.zeros((n, 2), np.uint8)
    y[:8, 0] = 1  # a rare word (P = 8) ...
    y[rng.random(n) < 0.3, 1] = 1
    s = rng.standard_normal((n, 2)) + 3.0 * y  # ... recovered almost perfectly
    pos = y[:, 0].astype(bool)  # one word: the identity with DeLong's variance is exact
    pe1 = lx.auc_placements(s[:, :1], y[:, :1])
    v10 = np.array([np.mean((s[~pos, 0] < v) + 0.5 * (s[~pos, 0] == v)) for v in s[pos, 0]])
    v01 = np.array([np.mean((s[pos, 0] > v) + 0.5 * (s[pos, 0] == v)) for v in s[~pos, 0]])
    assert ((pe1 - pe1.mean()) ** 2).sum() / n ** 2 == pytest.approx(v10.var() / 8 + v01.var() / (n - 8), rel=1e-10)
    pe = lx.auc_placements(s, y)  # two words: against a bootstrap that recomputes the macro-AUC
    var_mean = ((pe - pe.mean()) ** 2).sum() / n ** 2
    boot = [lx.macro_auc(s[i], y[i]) for i in rng.integers(0, n, (300, n))]
    assert np.var(boot) == pytest.approx(var_mean, rel=0.35)


def test_content_vocabulary_keeps_mid_frequency_content_words_only():
    vocab = {1: "the", 2: ",", 3: "##ing", 4: "movie", 5: "plot", 6: "rare", 7: "everywhere", 8: "ab",
             9: "[CLS]", 10: "actor"}
    rng = np.random.default_rng(1)
    texts = []
    for i in range(200):
        ids = [9, 1, 2, 3, 7]  # specials, stopword, punctuation, continuation piece, a word in every text
        ids += [4] * (i % 10 == 0) + [5] * (i % 20 == 0) + [10] * (i % 25 == 0) + [8] * (i % 10 == 0)
        ids += [6] * (i == 0)
        texts.append(ids + rng.integers(1000, 1003, 2).tolist())  # unknown pieces: id_to_token None
    got = lx.content_vocabulary(texts, vocab.get, {9}, min_df=5, max_df=0.15)
    assert got == [4, 5, 10]  # by document frequency: 20, 10, 8 texts
    with pytest.raises(ValueError, match="content wordpieces"):
        lx.content_vocabulary(texts, vocab.get, {9}, min_df=50, max_df=0.15)
    assert lx.is_content_piece("movie") and not lx.is_content_piece("which") and not lx.is_content_piece("##s")


def test_multilabel_probe_encoded_vs_random_vs_bow():
    rng = np.random.default_rng(6)
    words = np.arange(5000, 5030)
    texts = [rng.choice(words, size=6, replace=False).tolist() for _ in range(600)]
    y = lx.presence(texts, words[:10])
    pres_all = lx.presence(texts, words).astype(float)
    x = pres_all @ rng.standard_normal((30, 64)) + 0.1 * rng.standard_normal((600, 64))
    enc = lx.multilabel_probe(x[:400], y[:400], x[400:], y[400:])
    assert enc.auc > 0.95 and enc.per_example.mean() == pytest.approx(enc.auc)
    xr = rng.standard_normal((600, 64))
    rnd = lx.multilabel_probe(xr[:400], y[:400], xr[400:], y[400:])
    assert 0.4 < rnd.auc < 0.6
    b_tr, b_te = lx.bow_features(texts[:400], texts[400:])
    assert lx.multilabel_probe(b_tr, y[:400], b_te, y[400:]).auc > 0.99  # the ceiling
    np.testing.assert_array_equal(lx.presence([[1, 2, 2], [3]], [2, 3, 9]), [[1, 0, 0], [0, 1, 0]])
