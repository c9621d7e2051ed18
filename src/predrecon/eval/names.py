"""The one registry of evaluation names: default poolings, metric names and their reading.

Every module that names a pooling default or a metric imports it from here. A metric entry of a
result file (``<eval_dir>/<task>/<pooling>.json`` -> ``metrics[name]``) carries ``label``,
``better`` and, for the paper's own definitions kept for ``--faithful``, ``faithful_replica``
taken from :data:`METRICS`.
"""

from __future__ import annotations

#: Poolings evaluated by default, in report order.
DEFAULT_POOLINGS: tuple[str, ...] = ("mean", "max", "cls", "weighted", "attention")

#: GLUE's own metric per task (the headline ``probe.glue``); other classification tasks use
#: accuracy, other regression tasks Spearman.
GLUE_METRIC: dict[str, str] = {"sst2": "accuracy", "mnli": "accuracy", "mnli-mm": "accuracy",
                               "mrpc": "f1", "cola": "mcc", "stsb": "spearman"}
#: Scores reported beside ``probe.glue`` (``probe.<score>``) by task kind.
PROBE_SCORES: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "f1", "mcc", "balanced_accuracy"),
    "multiclass": ("accuracy", "balanced_accuracy"),
    "regression": ("pearson", "spearman"),
}
SCORE_LABELS = {"accuracy": "accuracy", "f1": "F1", "mcc": "MCC", "balanced_accuracy": "balanced accuracy",
                "pearson": "Pearson r", "spearman": "Spearman rho"}


def glue_metric(task: str, kind: str) -> str:
    """The headline score of ``task``: GLUE's own metric, else accuracy / Spearman by kind."""
    return GLUE_METRIC.get(task, "spearman" if kind == "regression" else "accuracy")


def _m(label: str, better: str | None, faithful: bool = False) -> dict:
    return {"label": label, "better": better, "faithful_replica": faithful}


#: metric name -> {label, better ('higher' | 'lower' | None), faithful_replica}.
METRICS: dict[str, dict] = {
    "geometry.uniformity": _m("uniformity (Wang & Isola, t=2)", "lower"),
    "geometry.anisotropy": _m("anisotropy (mean cosine of distinct rows)", "lower"),
    "geometry.alignment": _m("alignment: positive-pair / all-pair mean squared distance", "lower"),
    "geometry.alignment_paper": _m("alignment (paper: same-class pairs, alpha=4)", "lower", True),
    "geometry.class_distance_ratio": _m("intra/inter-class distance ratio", "lower"),
    "geometry.effective_rank": _m("effective rank (centred, sigma)", "higher"),
    "geometry.rankme": _m("RankMe (uncentred, Garrido et al.)", "higher"),
    "geometry.rank_at_90": _m("rank at 90 % variance", "higher"),
    "geometry.stable_rank": _m("stable rank", "higher"),
    "geometry.spectral_entropy": _m("spectral entropy (sigma^2, normalised)", "higher"),
    "geometry.powerlaw_alpha": _m("power-law decay alpha (fixed rank range)", None),
    "geometry.powerlaw_r2": _m("R^2 of the power-law fit", None),
    "lexical.content_auc": _m("content-wordpiece recovery (macro-AUC)", "lower"),
    "lexical.bow_ceiling": _m("content-wordpiece recovery from true bag of words (ceiling)", None),
    "lexical.probe_paper": _m("lexical probe (paper: most frequent wordpiece, 3-fold CV)", "lower", True),
    "probe.glue": _m("GLUE metric of the standardised L2 probe", "higher"),
    "probe.accuracy": _m("accuracy", "higher"),
    "probe.f1": _m("F1 (positive class)", "higher"),
    "probe.mcc": _m("MCC", "higher"),
    "probe.balanced_accuracy": _m("balanced accuracy", "higher"),
    "probe.pearson": _m("Pearson r", "higher"),
    "probe.spearman": _m("Spearman rho", "higher"),
    "semantic.sts_zero_shot": _m("STS zero-shot Spearman of cos(u, v)", "higher"),
    "semantic.cv_paper": _m("semantic probe (paper: CV on the reported split)", "higher", True),
    "balance.normalised": _m("chance-normalised semantic minus lexical", "higher"),
    "balance.difference": _m("semantic minus lexical accuracy (paper)", "higher", True),
    "linear_probe.paper": _m("LayerNorm-Dropout-Linear probe (paper)", "higher", True),
}

#: The pre-registered headline family: (metric, pooling), one row per task.
HEADLINE: tuple[tuple[str, str], ...] = (
    ("geometry.uniformity", "mean"),
    ("geometry.effective_rank", "max"),
    ("lexical.content_auc", "mean"),
    ("balance.normalised", "mean"),
    ("probe.glue", "mean"),
)


def metric_info(name: str) -> dict:
    """Registry entry of ``name`` (``{'label': name, 'better': None, ...}`` when unregistered)."""
    return METRICS.get(name, _m(name, None))
