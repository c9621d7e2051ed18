"""Task scores of predictions against gold labels, in the registry :data:`SCORES`.

Every score takes ``(pred, target)`` as 1-D arrays, or 2-D ``(B, n)`` batches (one bootstrap
resample per row) and then returns ``(B,)``: the bootstrap and the paired tests resample
examples and call these on the resampled rows. Conventions for degenerate inputs follow
scikit-learn: F1 is 0 with no positive prediction and no positive label, MCC is 0 when a row or
column of the confusion matrix is empty, a correlation with a constant side is 0.
Binary scores treat class 1 as the positive class (GLUE's convention for MRPC and CoLA).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata


def _pair(pred, target):
    p, y = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if p.shape != y.shape or p.ndim not in (1, 2):
        raise ValueError(f"scores: pred and target must be equal-shape 1-D or 2-D arrays, got {p.shape}, {y.shape}")
    return p, y


def _out(v: np.ndarray, one_d: bool):
    return float(v) if one_d else v


def accuracy(pred, target):
    """Share of exact matches."""
    p, y = _pair(pred, target)
    return _out(np.mean(p == y, axis=-1), p.ndim == 1)


def _counts(p, y):
    pp, yy = p == 1, y == 1
    tp = np.sum(pp & yy, axis=-1).astype(np.float64)
    fp = np.sum(pp & ~yy, axis=-1).astype(np.float64)
    fn = np.sum(~pp & yy, axis=-1).astype(np.float64)
    tn = np.sum(~pp & ~yy, axis=-1).astype(np.float64)
    return tp, fp, fn, tn


def f1(pred, target):
    """Binary F1 of class 1: ``2 tp / (2 tp + fp + fn)`` (0 when the denominator is 0)."""
    p, y = _pair(pred, target)
    tp, fp, fn, _ = _counts(p, y)
    den = 2 * tp + fp + fn
    return _out(np.where(den > 0, 2 * tp / np.maximum(den, 1e-300), 0.0), p.ndim == 1)


def mcc(pred, target):
    """Binary Matthews correlation ``(tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn))``."""
    p, y = _pair(pred, target)
    tp, fp, fn, tn = _counts(p, y)
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return _out(np.where(den > 0, (tp * tn - fp * fn) / np.maximum(den, 1e-300), 0.0), p.ndim == 1)


def balanced_accuracy(pred, target):
    """Mean recall over the classes present in ``target``."""
    p, y = _pair(pred, target)
    p2, y2 = np.atleast_2d(p), np.atleast_2d(y)
    classes = np.unique(y2)
    hit = np.zeros(p2.shape[0])
    present = np.zeros(p2.shape[0])
    for c in classes:
        is_c = y2 == c
        n_c = is_c.sum(axis=-1)
        rec = np.sum(is_c & (p2 == c), axis=-1) / np.maximum(n_c, 1)
        hit += np.where(n_c > 0, rec, 0.0)
        present += n_c > 0
    return _out((hit / np.maximum(present, 1))[0] if p.ndim == 1 else hit / np.maximum(present, 1), p.ndim == 1)


def _corr(a, b):
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    return np.where(den > 0, (a * b).sum(axis=-1) / np.maximum(den, 1e-300), 0.0)


def pearson(pred, target):
    """Pearson correlation (0 when either side is constant)."""
    p, y = _pair(pred, target)
    return _out(_corr(p, y), p.ndim == 1)


def spearman(pred, target):
    """Spearman rank correlation (average ranks for ties; 0 when either side is constant)."""
    p, y = _pair(pred, target)
    return _out(_corr(rankdata(p, axis=-1), rankdata(y, axis=-1)), p.ndim == 1)


#: score name -> fn(pred, target); names match :data:`predrecon.eval.names.SCORE_LABELS`.
SCORES: dict[str, Callable] = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "balanced_accuracy": balanced_accuracy,
                               "pearson": pearson, "spearman": spearman}


def score(name: str, pred, target):
    """``SCORES[name](pred, target)``; unknown names raise ``KeyError`` listing the known ones."""
    try:
        fn = SCORES[name]
    except KeyError:
        raise KeyError(f"unknown score {name!r} (known: {', '.join(SCORES)})") from None
    return fn(pred, target)
