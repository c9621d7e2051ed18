"""Few-shot probes: accuracy of a linear probe trained on k labelled examples per class.

Also home of the small probe/interval helpers shared by :mod:`predrecon.eval.suites.robustness` and
:mod:`predrecon.eval.tasks.builtin`: a standardised logistic-regression probe (:func:`fit_probe`),
a bootstrap interval for a mean of per-example values (:func:`mean_ci`) and a checked call of
an ``embed`` function (:func:`embed_texts`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from predrecon.eval.metrics.stats import bootstrap_ci, t_interval

EmbedFn = Callable[[list[str]], np.ndarray]


# --------------------------------------------------------------------------- shared helpers

def embed_texts(embed: EmbedFn, texts: Sequence[str], what: str = "texts") -> np.ndarray:
    """Call ``embed(list_of_str)`` and check the result is a finite (len(texts), d) array.

    Returns float32 (n, d). ``what`` names the inputs in error messages.
    """
    x = np.asarray(embed(list(texts)), dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(texts):
        raise ValueError(f"embed({what}): expected shape ({len(texts)}, d), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"embed({what}): {int((~np.isfinite(x)).sum())} non-finite values")
    return x


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Standard sentence-pair features [u, v, |u - v|, u * v]: (n, d) x2 -> (n, 4d)."""
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)  # (n, 4d)


def fit_probe(x: np.ndarray, y: np.ndarray, C: float = 1.0, seed: int = 0,
              max_iter: int = 2000) -> Pipeline:
    """Fit a logistic-regression probe on standardised features; returns the sklearn pipeline.

    ``x`` (n, d) float, ``y`` (n,) integer labels with at least two classes.
    """
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        raise ValueError(f"fit_probe: need at least 2 classes, got {np.unique(y).tolist()}")
    clf = make_pipeline(StandardScaler(),
                        LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


def mean_ci(values: np.ndarray, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """Mean of per-example ``values`` with a percentile bootstrap interval over examples
    (:func:`predrecon.eval.metrics.stats.bootstrap_ci`). Returns ``{"value", "low", "high", "n"}``.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("mean_ci: no values")
    est = bootstrap_ci(values, lambda v: v.mean(axis=-1), n_boot=n_boot, ci=ci, seed=seed,
                       vectorized=True)  # v: (B, n) resampled values -> (B,)
    return {"value": float(values.mean()), "low": est.low, "high": est.high,
            "n": int(values.size)}


# --------------------------------------------------------------------------- few-shot

def sample_k_per_class(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of exactly ``k`` examples of every class in ``labels``, drawn without replacement.

    Deterministic in ``seed``; returned sorted (int64). Raises ``ValueError`` naming the class
    when one has fewer than ``k`` examples.
    """
    labels = np.asarray(labels)
    if k < 1:
        raise ValueError(f"sample_k_per_class: k must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise ValueError(f"sample_k_per_class: class {c.item()!r} has {len(idx)} examples, "
                             f"fewer than k={k}")
        out.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(out)).astype(np.int64)


def fewshot_curve(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray, ks: Sequence[int] = (8, 32, 128, 512), draws: int = 5,
                  seed: int = 0, C: float = 1.0, ci: float = 0.95,
                  include_full: bool = True) -> dict:
    """Probe accuracy on the test set when trained on k examples per class, for each k.

    For every usable k, ``draws`` stratified samples (seeded by ``(seed, k, draw)``) each train
    a standardised logistic-regression probe. k larger than the smallest training class is
    skipped and listed in ``"skipped"``. Returns ``{"ks", "mean", "low", "high", "accuracies"
    (per k, per draw), "skipped", "draws", "ci", "interval": "t", "full"}`` where low/high is a
    Student-t interval of the mean across draws (NaN with one draw) and ``"full"`` the accuracy
    of a probe on all training data (None unless ``include_full``).
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"fewshot_curve: x/y length mismatch (train {len(x_train)}/"
                         f"{len(y_train)}, test {len(x_test)}/{len(y_test)})")
    if draws < 1:
        raise ValueError(f"fewshot_curve: draws must be >= 1, got {draws}")
    smallest = int(np.unique(y_train, return_counts=True)[1].min())
    used = sorted(int(k) for k in ks if k <= smallest)
    skipped = sorted(int(k) for k in ks if k > smallest)
    res = {"ks": used, "mean": [], "low": [], "high": [], "accuracies": [],
           "skipped": skipped, "smallest_class": smallest, "draws": draws, "ci": ci,
           "interval": "t", "full": None}
    for k in used:
        accs = []
        for d in range(draws):
            draw_seed = int(np.random.SeedSequence([seed, k, d]).generate_state(1)[0])
            idx = sample_k_per_class(y_train, k, draw_seed)
            clf = fit_probe(x_train[idx], y_train[idx], C=C, seed=seed)
            accs.append(float((clf.predict(x_test) == y_test).mean()))
        summary = t_interval(accs, ci)
        res["mean"].append(summary.mean)
        res["low"].append(summary.low)
        res["high"].append(summary.high)
        res["accuracies"].append(accs)
    if include_full:
        clf = fit_probe(x_train, y_train, C=C, seed=seed)
        res["full"] = float((clf.predict(x_test) == y_test).mean())
    return res


def plot_fewshot(curves: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """Plot accuracy vs k (log x) with interval error bars, one line per encoder name.

    ``curves`` maps encoder name -> :func:`fewshot_curve` result. Writes ``path`` (format from
    the suffix) with the Agg backend and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_fewshot: no curves")
    path = Path(path)
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for name, r in curves.items():
        if not r["ks"]:
            continue
        mean, low, high = (np.asarray(r[key], dtype=float) for key in ("mean", "low", "high"))
        yerr = np.nan_to_num(np.stack([mean - low, high - mean]))  # (2, K); NaN -> no bar
        line = ax.errorbar(r["ks"], mean, yerr=yerr, marker="o", capsize=3, label=name)
        if r.get("full") is not None:
            ax.axhline(r["full"], ls=":", lw=1, color=line[0].get_color())
    ax.set_xscale("log", base=2)
    ks = sorted({k for r in curves.values() for k in r["ks"]})
    if ks:
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
    ax.set_xlabel("training examples per class (k)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "few-shot linear probe (dotted: all training data)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
