"""Lexical information: how well a linear probe recovers which content words a text contains.

Target (``lexical.content_auc``): multi-label presence of mid-frequency *content* wordpieces of
the reference (bert-base-uncased) tokenizer, so every encoder faces the same labels. The
vocabulary is chosen on train only (:func:`content_vocabulary`): whole-word pieces (no ``##``
continuation), alphabetic, at least 3 characters, not an English stopword (scikit-learn's list)
and not a special token, with a train document frequency in ``[min_df, max_df]`` (defaults:
at least max(5, 0.2 % of texts) and at most 5 % of texts); of those the ``top_k`` with the
highest document frequency (ties: smaller id). Punctuation, function words and very frequent or
rare pieces are therefore never targets.

Probe (:func:`multilabel_probe`): standardised features, one multi-output ridge regression on
0/1 targets (a linear scorer per word; AUC needs only a ranking), alpha chosen on a held-out 20 %
of train by macro-AUC, refit on all of train, scored once on the reported split. Score:
macro-AUC over the words with both classes in the reported split.

Per-example vector (:func:`auc_placements`): the AUC's influence values from DeLong placement
values. For word j with P_j positive and N_j negative texts (n in all), a positive text's
placement ``V10`` is the share of negatives it out-scores (ties 1/2), a negative's ``V01`` the
share of positives that out-score it; the example's value is ``A + (1/K) sum_j [y_ij (V10_ij -
A_j) n / P_j + (1 - y_ij) (V01_ij - A_j) n / N_j]`` (A_j the word's AUC, A their mean). Its mean
over examples equals the macro-AUC exactly and the variance of that mean is DeLong et al.'s
(1988) ``S10/P + S01/N`` averaged over words, so the bootstrap of a mean and paired tests apply.

Ceiling: the same probe on the true bag of words (:func:`bow_features`: wordpiece counts over
the train vocabulary). Floors (computed by the runner): 0.5 (constant scores), a length-only
probe and the same-shape random-init encoder. No control task: selectivity is not reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DEFAULT_ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def is_content_piece(piece: str) -> bool:
    """Whole-word, alphabetic, >= 3 characters, not an English stopword."""
    return (not piece.startswith("##") and piece.isalpha() and len(piece) >= 3
            and piece.lower() not in ENGLISH_STOP_WORDS)


def content_vocabulary(train_ids: Sequence[Sequence[int]], id_to_token, special_ids=frozenset(), *,
                       top_k: int = 100, min_df: float | int | None = None, max_df: float = 0.05) -> list[int]:
    """Target wordpiece ids chosen on train (see the module docstring).

    ``id_to_token``: callable id -> piece string. ``min_df``: an int count or a fraction of the
    train texts (default ``max(5, 0.002 n)``); ``max_df``: fraction of train texts. Raises when
    fewer than 2 pieces qualify."""
    n = len(train_ids)
    lo = max(5, int(np.ceil(0.002 * n))) if min_df is None else (
        int(np.ceil(min_df * n)) if isinstance(min_df, float) else int(min_df))
    hi = max_df * n
    special = {int(s) for s in special_ids}
    df = Counter(t for ids in train_ids for t in {int(t) for t in ids} if t not in special)
    ok = [t for t, c in df.items() if lo <= c <= hi and is_content_piece(id_to_token(t) or "")]
    vocab = sorted(ok, key=lambda t: (-df[t], t))[:top_k]
    if len(vocab) < 2:
        raise ValueError(f"content_vocabulary: only {len(vocab)} content wordpieces have a train document "
                         f"frequency in [{lo}, {hi:.0f}] ({n} texts)")
    return vocab


def presence(token_id_lists: Sequence[Sequence[int]], vocab: Sequence[int]) -> np.ndarray:
    """(n, len(vocab)) uint8: 1 where text i contains wordpiece ``vocab[j]``."""
    pos = {int(t): j for j, t in enumerate(vocab)}
    out = np.zeros((len(token_id_lists), len(pos)), dtype=np.uint8)
    for i, ids in enumerate(token_id_lists):
        for t in {int(t) for t in ids}:
            j = pos.get(t)
            if j is not None:
                out[i, j] = 1
    return out


def bow_features(train_ids, test_ids, special_ids=frozenset(), max_features: int = 3000):
    """Wordpiece count features of train and test over the ``max_features`` pieces with the
    highest train document frequency (>= 2 texts): the bag-of-words ceiling's input."""
    special = {int(s) for s in special_ids}
    df = Counter(t for ids in train_ids for t in {int(t) for t in ids} if t not in special)
    vocab = sorted((t for t, c in df.items() if c >= 2), key=lambda t: (-df[t], t))[:max_features]
    pos = {t: j for j, t in enumerate(vocab)}

    def counts(lists):
        out = np.zeros((len(lists), len(vocab)), dtype=np.float32)
        for i, ids in enumerate(lists):
            for t in ids:
                j = pos.get(int(t))
                if j is not None:
                    out[i, j] += 1
        return out

    return counts(train_ids), counts(test_ids)


def macro_auc(scores: np.ndarray, y: np.ndarray) -> float:
    """Mean over columns with both classes of the ROC AUC of ``scores[:, j]`` for ``y[:, j]``."""
    aucs = [_auc(scores[:, j], y[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _auc(s: np.ndarray, y: np.ndarray) -> float:
    r = rankdata(s)
    pos = y.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_placements(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example influence values of the macro-AUC (module docstring) over the columns with
    both classes; ``mean`` of the result equals :func:`macro_auc` exactly. Shape (n,)."""
    n, k = y.shape
    cols = [j for j in range(k) if 0 < y[:, j].sum() < n]
    if not cols:
        raise ValueError("auc_placements: no target word has both classes on this split")
    dev = np.zeros(n)
    aucs = []
    for j in cols:
        s, pos = scores[:, j], y[:, j].astype(bool)
        r_all = rankdata(s)
        n1, n0 = pos.sum(), (~pos).sum()
        v10 = (r_all[pos] - rankdata(s[pos])) / n0  # negatives below a positive (ties 1/2)
        v01 = 1.0 - (r_all[~pos] - rankdata(s[~pos])) / n1  # positives above a negative
        a = float(v10.mean())  # the word's AUC (= v01.mean())
        aucs.append(a)
        dev[pos] += (v10 - a) * n / n1
        dev[~pos] += (v01 - a) * n / n0
    return float(np.mean(aucs)) + dev / len(cols)


@dataclass
class MultilabelResult:
    """``auc``: macro-AUC on the reported split; ``per_example``: placement values (mean = auc);
    ``scores``: (n, K) probe outputs; ``chosen``: alpha and the validation AUCs."""

    auc: float
    per_example: np.ndarray
    scores: np.ndarray
    chosen: dict = field(default_factory=dict)


def _ridge(alpha):
    return make_pipeline(StandardScaler(), Ridge(alpha=alpha))


def multilabel_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
                     alphas: Sequence[float] = DEFAULT_ALPHAS, seed: int = 0,
                     val_fraction: float = 0.2) -> MultilabelResult:
    """Standardised multi-output ridge on 0/1 targets; alpha chosen on a held-out part of train
    by macro-AUC (ties: the larger alpha), refit on all of train, scored on test."""
    x_train, x_test = np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)
    y_train, y_test = np.asarray(y_train, np.float64), np.asarray(y_test, np.float64)
    if x_train.shape[0] != y_train.shape[0] or x_test.shape[0] != y_test.shape[0]:
        raise ValueError("multilabel_probe: feature rows and target rows differ")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"multilabel_probe: train has {x_train.shape[1]} features, test {x_test.shape[1]}")
    fit_i, val_i = train_test_split(np.arange(len(x_train)), test_size=val_fraction, random_state=seed)
    val = {}
    for a in sorted(alphas):
        m = _ridge(a).fit(x_train[fit_i], y_train[fit_i])
        val[a] = macro_auc(m.predict(x_train[val_i]), y_train[val_i])
    finite = {a: v for a, v in val.items() if np.isfinite(v)}
    best = max(finite, key=lambda a: (finite[a], a)) if finite else max(alphas)
    s = _ridge(best).fit(x_train, y_train).predict(x_test).reshape(len(x_test), -1)
    pe = auc_placements(s, y_test)
    return MultilabelResult(float(pe.mean()), pe, s, {"alpha": best, "val_auc": val})
