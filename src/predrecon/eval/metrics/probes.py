"""Probes on frozen embeddings: lexical (what surface form is encoded), semantic (task labels),
STS, and the paper's torch linear probe. Pure functions of numpy arrays; seeded.

Two protocols live side by side:

* **paper** (``*_paper``): the reference's protocol, kept for re-deriving its numbers —
  cross-validation on the evaluation split itself (3-fold lexical, 5-fold semantic, plain
  sklearn defaults), and the torch LayerNorm → Dropout → Linear probe.
* **improved**: hyper-parameters chosen on a held-out part of the training data, refit on all
  of it, reported once on a separate split, with per-example correctness for paired tests
  (:mod:`predrecon.eval.metrics.stats`). Features are standardised (StandardScaler in a pipeline).

Every result is a :class:`ProbeResult`. Convergence of sklearn's lbfgs is recorded in
``chosen['converged']`` instead of warning. Probe problems are small (thousands x hundreds),
so fits run with BLAS / torch limited to ``PROBE_THREADS`` threads (default 1): on a loaded
2-core machine a 2000 x 512 lbfgs fit took 0.06 s single-threaded and 0.5 s with two threads.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
DEFAULT_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
TIE_BREAKS = ("smallest_id", "first")
#: BLAS / torch threads used while fitting probes (None: leave the libraries' defaults).
PROBE_THREADS: int | None = 1


@contextlib.contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    torch = sys.modules.get("torch")  # only touch torch when it is already loaded
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


def _limited(fn):
    """Run ``fn`` with at most ``PROBE_THREADS`` BLAS / torch threads."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _threads(PROBE_THREADS):
            return fn(*args, **kwargs)

    return wrapper


@dataclass
class ProbeResult:
    """Outcome of one probe on its reported split.

    ``score``: accuracy (classification) or Spearman rho (regression). ``predictions``: (n,)
    predicted labels / values on the reported split (out-of-fold for CV protocols).
    ``correct``: (n,) bool per example (classification only). ``chosen``: selected
    hyper-parameters and protocol details. ``val_score``: the selection score of the chosen
    setting (NaN for CV protocols)."""

    score: float
    metric: str
    predictions: np.ndarray
    correct: np.ndarray | None = None
    chosen: dict = field(default_factory=dict)
    val_score: float = math.nan


# ----------------------------------------------------------------------------- validation


def _check_xy(x: np.ndarray, y: np.ndarray, name: str, classification: bool):
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name}: expected features (n >= 2, d), got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name}: {x.shape[0]} feature rows but labels of shape {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: non-finite feature in row {int(np.argwhere(~np.isfinite(x))[0][0])}")
    if classification:
        if y.dtype.kind == "f" and np.any(y != np.round(y)):
            raise ValueError(f"{name}: classification labels must be integers")
        y = y.astype(np.int64)
    else:
        y = y.astype(np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{name}: non-finite regression target")
    return x, y


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    rho = spearmanr(a, b).statistic
    return float(rho) if np.isfinite(rho) else 0.0  # constant predictions carry no ranking


def _logreg(C: float = 1.0, standardize: bool = True, max_iter: int = 1000, seed: int = 0):
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    return make_pipeline(StandardScaler(), clf) if standardize else clf


def _ridge(alpha: float = 1.0, standardize: bool = True):
    reg = Ridge(alpha=alpha)
    return make_pipeline(StandardScaler(), reg) if standardize else reg


def _fit(model, x, y):
    """Fit quietly; return whether every lbfgs run converged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    est = model[-1] if isinstance(model, Pipeline) else model
    n_iter = getattr(est, "n_iter_", None)
    return True if n_iter is None else bool(np.all(np.asarray(n_iter) < est.max_iter))


# ----------------------------------------------------------------------------- lexical targets


def _mode_token(ids: Iterable[int], special: set[int], tie_break: str) -> int:
    counts = Counter(int(t) for t in ids if int(t) not in special)
    if not counts:
        return -1
    if tie_break == "first":  # Counter.most_common(1): first-seen among the tied
        return counts.most_common(1)[0][0]
    best = max(counts.values())
    return min(t for t, c in counts.items() if c == best)


def most_frequent_wordpiece_labels(token_id_lists: Sequence[Sequence[int]], special_ids: set[int],
                                   min_count: int = 5, tie_break: str = "smallest_id"):
    """The paper's lexical target: each text's most frequent non-special wordpiece id.

    Ties are broken by the smallest token id (``tie_break='smallest_id'``) or by first
    occurrence in the text (``'first'``, what ``collections.Counter.most_common(1)`` returns).
    ``special_ids`` must include padding. Returns ``(labels, keep_mask)``: int64 (n,) token ids
    (-1 for a text with no non-special token) and a bool (n,) mask of texts whose label
    occurs in at least ``min_count`` texts (the paper keeps classes with >= 5 examples).
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break {tie_break!r}; known: {TIE_BREAKS}")
    special = {int(s) for s in special_ids}
    labels = np.array([_mode_token(ids, special, tie_break) for ids in token_id_lists], dtype=np.int64)
    if labels.size == 0:
        raise ValueError("most_frequent_wordpiece_labels: no texts given")
    valid = labels >= 0
    counts = Counter(labels[valid].tolist())
    keep = valid & np.array([counts.get(int(t), 0) >= min_count for t in labels], dtype=bool)
    return labels, keep


# ----------------------------------------------------------------------------- CV (paper)


def _cv_predict(x, y, folds: int, seed: int, shuffle: bool, make_model: Callable,
                score: Callable, stratified: bool):
    """Out-of-fold predictions and per-fold scores."""
    split = (StratifiedKFold if stratified else KFold)(
        folds, shuffle=shuffle, random_state=seed if shuffle else None)
    pred = np.empty(y.shape, dtype=y.dtype)
    fold_scores, converged = [], True
    for tr, te in split.split(x, y):
        model = make_model()
        converged &= _fit(model, x[tr], y[tr])
        pred[te] = model.predict(x[te])
        fold_scores.append(score(y[te], pred[te]))
    return pred, fold_scores, converged


def _acc(a, b) -> float:
    return float(np.mean(a == b))


@_limited
def lexical_probe_paper(x: np.ndarray, labels: np.ndarray, folds: int = 3, seed: int = 0, *,
                        shuffle: bool = True, standardize: bool = False,
                        max_iter: int = 1000) -> ProbeResult:
    """The paper's lexical probe: logistic regression (sklearn defaults, C = 1, lbfgs) under
    ``folds``-fold stratified CV on the given texts; ``score`` is the mean fold accuracy.

    Pass the rows kept by :func:`most_frequent_wordpiece_labels` (``x[keep], labels[keep]``).
    Folds are shuffled (seeded) by default: ``shuffle=False`` matches the reference's
    ``cross_val_score(..., cv=3)``, whose contiguous folds follow any ordering of the file (STS-B
    dev is sorted by genre). Raw features unless ``standardize``. Lower = less lexical information in the embeddings.
    """
    return _classify_cv(x, labels, folds, seed, shuffle, standardize, max_iter, "lexical_probe_paper")


@_limited
def semantic_probe_cv_paper(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0, *,
                            shuffle: bool = True, standardize: bool = False,
                            max_iter: int = 1000) -> ProbeResult:
    """The paper's semantic probe: logistic regression, ``folds``-fold stratified CV on the
    evaluation (validation) split itself; ``score`` = mean fold accuracy. No held-out
    selection: the same split trains and scores (documented quirk of the reference)."""
    return _classify_cv(x, y, folds, seed, shuffle, standardize, max_iter, "semantic_probe_cv_paper")


def _classify_cv(x, y, folds, seed, shuffle, standardize, max_iter, name) -> ProbeResult:
    x, y = _check_xy(x, y, name, classification=True)
    if folds < 2:
        raise ValueError(f"{name}: folds must be >= 2, got {folds}")
    smallest = min(Counter(y.tolist()).values())
    if smallest < folds:
        raise ValueError(f"{name}: the rarest class has {smallest} examples, fewer than "
                         f"folds={folds}; filter classes first (min_count)")
    pred, fold_scores, conv = _cv_predict(
        x, y, folds, seed, shuffle, lambda: _logreg(1.0, standardize, max_iter, seed), _acc, True)
    return ProbeResult(float(np.mean(fold_scores)), "accuracy", pred, pred == y,
                       {"folds": folds, "fold_scores": fold_scores, "converged": conv,
                        "n_classes": int(np.unique(y).size)})


@_limited
def sts_regressor_cv_paper(x: np.ndarray, scores: np.ndarray, folds: int = 5, alpha: float = 1.0,
                           seed: int = 0, *, shuffle: bool = True,
                           standardize: bool = False) -> ProbeResult:
    """The paper's STS-B semantic probe: Ridge(alpha) under ``folds``-fold CV on the
    evaluation split (one embedding per "s1 [SEP] s2" text); ``score`` = mean fold Spearman."""
    x, y = _check_xy(x, scores, "sts_regressor_cv_paper", classification=False)
    pred, fold_scores, _ = _cv_predict(x, y, folds, seed, shuffle,
                                       lambda: _ridge(alpha, standardize), _spearman, False)
    return ProbeResult(float(np.mean(fold_scores)), "spearman", pred, None,
                       {"folds": folds, "fold_scores": fold_scores, "alpha": alpha})


# ----------------------------------------------------------------------------- held-out selection


def _holdout(y: np.ndarray, val_fraction: float, seed: int, stratify: bool):
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    idx = np.arange(y.size)
    strat = y if stratify and min(Counter(y.tolist()).values()) >= 2 else None
    return train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=strat)


@_limited
def semantic_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   Cs: Sequence[float] = DEFAULT_CS, seed: int = 0, val_fraction: float = 0.2,
                   max_iter: int = 1000) -> ProbeResult:
    """Logistic-regression probe with held-out selection of C.

    StandardScaler + LogisticRegression(lbfgs); each C in ``Cs`` is fit on a stratified
    ``1 - val_fraction`` part of train and scored on the rest; the best C (ties: the smallest,
    i.e. strongest regularisation) is refit on all of train and scored once on test. The test
    split is never used for selection. ``correct``: (n_test,) per-example correctness.
    """
    x_train, y_train = _check_xy(x_train, y_train, "semantic_probe train", True)
    x_test, y_test = _check_xy(x_test, y_test, "semantic_probe test", True)
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(f"semantic_probe: train has {x_train.shape[1]} features, test {x_test.shape[1]}")
    if np.unique(y_train).size < 2:
        raise ValueError("semantic_probe: train labels have a single class")
    fit_i, val_i = _holdout(y_train, val_fraction, seed, stratify=True)
    val_scores = {}
    for C in sorted(Cs):
        m = _logreg(C, True, max_iter, seed)
        _fit(m, x_train[fit_i], y_train[fit_i])
        val_scores[C] = _acc(m.predict(x_train[val_i]), y_train[val_i])
    best = max(val_scores, key=lambda c: (val_scores[c], -c))
    model = _logreg(best, True, max_iter, seed)
    conv = _fit(model, x_train, y_train)
    pred = model.predict(x_test)
    return ProbeResult(_acc(pred, y_test), "accuracy", pred, pred == y_test,
                       {"C": best, "val_scores": val_scores, "converged": conv}, val_scores[best])


def sts_zero_shot(u: np.ndarray, v: np.ndarray, scores: np.ndarray) -> float:
    """Spearman rho between row-wise cosine(u_i, v_i) and the gold similarity scores."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if u.shape != v.shape or u.ndim != 2:
        raise ValueError(f"sts_zero_shot: u and v must be equal-shape 2-D arrays, got {u.shape}, {v.shape}")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (u.shape[0],):
        raise ValueError(f"sts_zero_shot: {u.shape[0]} pairs but scores of shape {s.shape}")
    norms = np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
    return _spearman(np.einsum("ij,ij->i", u, v) / norms, s)


@_limited
def sts_regressor(feat_train: np.ndarray, y_train: np.ndarray, feat_test: np.ndarray,
                  y_test: np.ndarray, alphas: Sequence[float] = DEFAULT_ALPHAS, seed: int = 0,
                  val_fraction: float = 0.2) -> ProbeResult:
    """Ridge regressor for STS with held-out selection of alpha by Spearman rho.

    StandardScaler + Ridge; each alpha fit on ``1 - val_fraction`` of train, scored by Spearman
    on the rest; the best (ties: the largest alpha) is refit on all of train and scored once on
    test (Spearman). Features are typically :func:`pair_features` of the two sentences.
    """
    feat_train, y_train = _check_xy(feat_train, y_train, "sts_regressor train", False)
    feat_test, y_test = _check_xy(feat_test, y_test, "sts_regressor test", False)
    fit_i, val_i = _holdout(y_train, val_fraction, seed, stratify=False)
    val_scores = {}
    for a in sorted(alphas):
        m = _ridge(a)
        m.fit(feat_train[fit_i], y_train[fit_i])
        val_scores[a] = _spearman(m.predict(feat_train[val_i]), y_train[val_i])
    best = max(val_scores, key=lambda a: (val_scores[a], a))
    model = _ridge(best).fit(feat_train, y_train)
    pred = model.predict(feat_test)
    return ProbeResult(_spearman(pred, y_test), "spearman", pred, None,
                       {"alpha": best, "val_scores": val_scores}, val_scores[best])


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sentence-pair features ``[u; v; |u - v|; u * v]`` (Conneau et al. 2017): (n, 4d)."""
    u, v = np.asarray(u), np.asarray(v)
    if u.shape != v.shape or u.ndim != 2:
        raise ValueError(f"pair_features: u and v must be equal-shape 2-D arrays, got {u.shape}, {v.shape}")
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)  # (n, 4d)


def balance(semantic_acc: float, lexical_acc: float) -> dict[str, float]:
    """The paper's semantic-to-lexical balance: ``difference`` = s - l and ``ratio`` = s / l
    (NaN when l = 0). Kept for ``--faithful``; the headline is :func:`normalised_balance`."""
    s, lex = float(semantic_acc), float(lexical_acc)
    return {"difference": s - lex, "ratio": s / lex if lex != 0 else math.nan}


def normalised_balance(semantic: float, semantic_chance: float, lexical_auc: float,
                       lexical_chance: float = 0.5, ceiling: float = 1.0) -> float:
    """Chance-normalised balance: ``(s - s0) / (1 - s0) - (l - l0) / (1 - l0)``: the share of
    the way from chance to perfect covered by the semantic score minus the same for the lexical
    score. ``s0``: the semantic metric's majority (or mean-predictor) floor on the same split;
    ``l0 = 0.5``, the AUC of a constant. Both terms are 0 at chance and 1 at the ceiling, so
    scores on different scales (accuracy, MCC, Spearman, AUC) become comparable."""
    return (float(semantic) - semantic_chance) / (ceiling - semantic_chance) - \
        (float(lexical_auc) - lexical_chance) / (ceiling - lexical_chance)


# ----------------------------------------------------------------------------- headline probe


def length_features(lengths_a: np.ndarray, lengths_b: np.ndarray | None = None) -> np.ndarray:
    """Features of the length-only floor: the token count of each side and its log; for pairs
    also ``|len_a - len_b|``. (n, 2) single texts, (n, 5) pairs."""
    la = np.asarray(lengths_a, dtype=np.float64)
    cols = [la, np.log1p(la)]
    if lengths_b is not None:
        lb = np.asarray(lengths_b, dtype=np.float64)
        cols += [lb, np.log1p(lb), np.abs(la - lb)]
    return np.stack(cols, axis=1)


def majority_predictions(y_train: np.ndarray, n: int, regression: bool) -> np.ndarray:
    """The trivial floor's predictions on n examples: the train majority class (ties: the
    smallest label) or, for regression, the train mean (a constant: correlation 0)."""
    y_train = np.asarray(y_train)
    if regression:
        return np.full(n, float(np.mean(y_train)))
    vals, counts = np.unique(y_train, return_counts=True)
    return np.full(n, vals[np.argmax(counts)])


@_limited
def glue_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
               metric: str, regression: bool, Cs: Sequence[float] = DEFAULT_CS,
               alphas: Sequence[float] = DEFAULT_ALPHAS, seed: int = 0, val_fraction: float = 0.2,
               max_iter: int = 1000) -> ProbeResult:
    """The headline probe: standardised features, L2-regularised logistic regression
    (classification) or Ridge (regression), with C / alpha chosen on a held-out
    ``val_fraction`` of train (stratified for classes) by ``metric`` (a name of
    :data:`predrecon.eval.metrics.scores.SCORES`; ties: the stronger regularisation), refit on all of
    train and scored once on test with ``metric``. Never selects on the test split.
    Returns predictions (and per-example correctness for classification)."""
    from .scores import score

    x_train, y_train = _check_xy(x_train, y_train, "glue_probe train", not regression)
    x_test, y_test = _check_xy(x_test, y_test, "glue_probe test", not regression)
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(f"glue_probe: train has {x_train.shape[1]} features, test {x_test.shape[1]}")
    if not regression and np.unique(y_train).size < 2:
        raise ValueError("glue_probe: train labels have a single class")
    fit_i, val_i = _holdout(y_train, val_fraction, seed, stratify=not regression)
    grid = sorted(alphas, reverse=True) if regression else sorted(Cs)  # strongest regularisation first
    make = (lambda h: _ridge(h)) if regression else (lambda h: _logreg(h, True, max_iter, seed))
    val_scores, conv = {}, True
    for h in grid:
        m = make(h)
        conv &= _fit(m, x_train[fit_i], y_train[fit_i])
        val_scores[h] = float(score(metric, m.predict(x_train[val_i]), y_train[val_i]))
    best = max(grid, key=lambda h: (val_scores[h], -grid.index(h)))
    model = make(best)
    conv &= _fit(model, x_train, y_train)
    pred = model.predict(x_test)
    return ProbeResult(float(score(metric, pred, y_test)), metric, pred,
                       None if regression else pred == y_test,
                       {("alpha" if regression else "C"): best, "val_scores": val_scores,
                        "converged": conv, "val_fraction": val_fraction}, val_scores[best])


# ----------------------------------------------------------------------------- torch probe


def linear_probe_paper(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                       x_test: np.ndarray, y_test: np.ndarray, *, dropout: float = 0.2,
                       epochs: int = 20, lr: float | Sequence[float] = (1e-3, 1e-2),
                       batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0,
                       regression: bool = False) -> ProbeResult:
    """The paper's linear probe: LayerNorm(d) → Dropout(p) → Linear(d, k), trained with Adam.

    Classification: cross-entropy, accuracy; ``regression=True`` (STS-B): one output, MSE,
    Spearman rho. For every learning rate in ``lr`` the probe trains ``epochs`` epochs
    (mini-batches of ``batch_size``, seeded shuffling) and is scored on the val split after each;
    the (lr, epoch) with the best val score (ties: earlier) is restored and scored once on test.
    Torch's global RNG state is saved and restored. Returns test predictions (and per-example
    correctness for classification).
    """
    import torch

    with _threads(PROBE_THREADS):
        return _linear_probe(torch, x_train, y_train, x_val, y_val, x_test, y_test, dropout,
                             epochs, lr, batch_size, weight_decay, seed, regression)


def _linear_probe(torch, x_train, y_train, x_val, y_val, x_test, y_test, dropout, epochs, lr,
                  batch_size, weight_decay, seed, regression) -> ProbeResult:
    task = "regression" if regression else "classification"
    x_train, y_train = _check_xy(x_train, y_train, f"linear_probe_paper train ({task})", not regression)
    x_val, y_val = _check_xy(x_val, y_val, "linear_probe_paper val", not regression)
    x_test, y_test = _check_xy(x_test, y_test, "linear_probe_paper test", not regression)
    d = x_train.shape[1]
    if x_val.shape[1] != d or x_test.shape[1] != d:
        raise ValueError(f"linear_probe_paper: feature widths differ: {d}, {x_val.shape[1]}, {x_test.shape[1]}")
    if regression:
        n_out = 1
    else:
        if min(y_train.min(), y_val.min(), y_test.min()) < 0:
            raise ValueError("linear_probe_paper: class labels must be >= 0")
        n_out = int(max(y_train.max(), y_val.max(), y_test.max())) + 1
    lrs = [float(lr)] if np.isscalar(lr) else [float(v) for v in lr]
    tx = {k: torch.as_tensor(np.asarray(a, dtype=np.float32)) for k, a in
          (("train", x_train), ("val", x_val), ("test", x_test))}
    ty = torch.as_tensor(y_train.astype(np.float32) if regression else y_train)
    loss_fn = torch.nn.MSELoss() if regression else torch.nn.CrossEntropyLoss()

    def predict(model, x):
        model.eval()
        with torch.no_grad():
            out = model(x)
        return out[:, 0].numpy().astype(np.float64) if regression else out.argmax(1).numpy()

    def score(pred, y):
        return _spearman(pred, y) if regression else _acc(pred, y)

    best = (-math.inf, None, None, None)  # (val score, lr, epoch, state)
    with torch.random.fork_rng(devices=[]):
        for lr_i in lrs:
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.LayerNorm(d), torch.nn.Dropout(dropout),
                                        torch.nn.Linear(d, n_out))
            opt = torch.optim.Adam(model.parameters(), lr=lr_i, weight_decay=weight_decay)
            for epoch in range(1, epochs + 1):
                model.train()
                order = torch.randperm(tx["train"].shape[0], generator=gen)
                for s in range(0, order.numel(), batch_size):
                    b = order[s:s + batch_size]
                    out = model(tx["train"][b])  # (B, k)
                    loss = loss_fn(out[:, 0], ty[b]) if regression else loss_fn(out, ty[b])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                v = score(predict(model, tx["val"]), y_val)
                if v > best[0]:
                    best = (v, lr_i, epoch, copy.deepcopy(model.state_dict()))
        if best[3] is None:  # every val score was NaN/-inf: fall back to the last state
            best = (math.nan, lrs[-1], epochs, model.state_dict())
        model.load_state_dict(best[3])
        pred = predict(model, tx["test"])
    return ProbeResult(score(pred, y_test), "spearman" if regression else "accuracy", pred,
                       None if regression else pred == y_test,
                       {"lr": best[1], "epoch": best[2], "dropout": dropout}, float(best[0]))
