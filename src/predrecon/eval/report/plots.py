"""Figures for :func:`predrecon.eval.report.report.compare` (matplotlib, Agg backend, PNG files).

:func:`make_figures` draws eigenspectra (log-log), alignment vs uniformity, probe scores with
intervals, the pooling ablation and per-task differences with intervals, and returns
``{title: png_path}``. Arms are colours; with several seeds per arm each seed is drawn and
bars show the mean with a t-interval. Probe bars carry their floors (black lines: solid =
random init, dotted = majority, dashed = length only) where the results store them.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..metrics import stats  # noqa: E402

POOLING_ORDER = ("mean", "max", "cls", "weighted", "attention")
MARKERS = "osD^vP*Xh"
SEMANTIC_MAIN = ("probe.glue", "semantic.probe", "semantic.sts_regressor", "semantic.cv_paper",
                 "semantic.sts_zero_shot")
FLOOR_STYLES = {"random_init": "solid", "majority": "dotted", "length_only": "dashed"}
LEXICAL_MAIN = ("lexical.content_auc", "lexical.probe", "lexical.probe_paper")


def _colors(arms):
    cmap = plt.get_cmap("tab10")
    return {a: cmap(i % 10) for i, a in enumerate(arms)}


def _first(metrics: dict, names) -> str | None:
    return next((m for m in names if m in metrics), None)


def _arm_value(runs, task: str, pooling: str, metric: str) -> tuple[float, float, float]:
    """(value, low, high) of one arm: the interval of a single run, else mean and t-interval."""
    entries = [r.results[(task, pooling)]["metrics"].get(metric) for r in runs if (task, pooling) in r.results]
    entries = [e for e in entries if e is not None and math.isfinite(e["value"])]
    if not entries:
        return math.nan, math.nan, math.nan
    if len(entries) == 1:
        e = entries[0]
        return e["value"], e["low"], e["high"]
    s = stats.t_interval([e["value"] for e in entries])
    return s.mean, s.low, s.high


def _yerr(v, lo, hi):
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [[0.0], [0.0]]
    return [[max(v - lo, 0.0)], [max(hi - v, 0.0)]]


def _grid(n: int, ncols: int = 3, w: float = 4.2, h: float = 3.4):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _spectra(runs, tasks, colors, path):
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        for arm, rs in runs.items():
            for i, r in enumerate(rs):
                for pooling, ls in (("mean", "-"), ("max", "--")):
                    res = r.results.get((task, pooling))
                    if res is None or not res.get("spectrum"):
                        continue
                    sv = np.asarray([v for v in res["spectrum"] if v is not None], dtype=np.float64)
                    sv = sv[sv > sv.max() * 1e-8] if sv.size else sv  # drop the numerical zero tail
                    if sv.size == 0:
                        continue
                    ax.loglog(np.arange(1, sv.size + 1), sv / sv[0], ls, color=colors[arm],
                              alpha=0.9 if len(rs) == 1 else 0.5,
                              label=f"{arm} ({pooling})" if i == 0 else None)
        ax.set_title(f"{task}: eigenspectrum")
        ax.set_xlabel("rank k")
        ax.set_ylabel("σ_k / σ_1")
        ax.legend(fontsize=7)
    return _save(fig, path)


def _align_uniform(runs, tasks, colors, path):
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for arm, rs in runs.items():
        for ti, task in enumerate(tasks):
            for r in rs:
                res = r.results.get((task, "mean"))
                if res is None:
                    continue
                a, u = res["metrics"].get("geometry.alignment"), res["metrics"].get("geometry.uniformity")
                if a is None or u is None:
                    continue
                ax.errorbar(a["value"], u["value"], xerr=_yerr(a["value"], a["low"], a["high"]),
                            yerr=_yerr(u["value"], u["low"], u["high"]), fmt=MARKERS[ti % len(MARKERS)],
                            color=colors[arm], ms=7, capsize=2)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=a) for a, c in colors.items()]
    handles += [plt.Line2D([], [], color="gray", marker=MARKERS[i % len(MARKERS)], ls="", label=t)
                for i, t in enumerate(tasks)]
    ax.legend(handles=handles, fontsize=8)
    ax.set_xlabel("alignment (α=2, lower = same-class closer)")
    ax.set_ylabel("uniformity (t=2, lower = more uniform)")
    ax.set_title("Alignment vs uniformity (mean pooling)")
    return _save(fig, path)


def _bars(ax, runs, colors, groups, getter):
    arms = list(runs)
    width = 0.8 / max(len(arms), 1)
    for j, arm in enumerate(arms):
        labelled = False
        for g, key in enumerate(groups):
            v, lo, hi = getter(arm, key)
            if not math.isfinite(v):
                continue
            ax.bar(g + (j - (len(arms) - 1) / 2) * width, v, width, color=colors[arm], yerr=_yerr(v, lo, hi),
                   capsize=2, label=None if labelled else arm)
            labelled = True
    ax.set_xticks(range(len(groups)))


def _probe_bars(runs, tasks, colors, path):
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        any_res = next(r.results[(task, "mean")] for rs in runs.values() for r in rs if (task, "mean") in r.results)
        mets = [m for m in (_first(any_res["metrics"], SEMANTIC_MAIN), _first(any_res["metrics"], LEXICAL_MAIN),
                            "lexical.control", "linear_probe.paper") if m and m in any_res["metrics"]]
        _bars(ax, runs, colors, mets, lambda arm, m, task=task: _arm_value(runs[arm], task, "mean", m))
        for g, m in enumerate(mets):  # floors beside the scores: one short line per floor
            for k, (fl, style) in enumerate(((any_res["metrics"][m].get("floors") or {}).get(name), style)
                                            for name, style in FLOOR_STYLES.items()):
                if fl is not None and math.isfinite(fl):
                    ax.hlines(fl, g - 0.45, g + 0.45, colors="black", linestyles=style, lw=1,
                              label=list(FLOOR_STYLES)[k] if g == 0 else None)
        ax.set_xticklabels([m.replace(".", "\n", 1) for m in mets], fontsize=7)
        ax.set_title(f"{task}: probes (mean pooling)")
        ax.set_ylabel("accuracy / Spearman ρ")
        ax.legend(fontsize=7)
    return _save(fig, path)


def _pooling_ablation(runs, tasks, poolings, colors, path):
    pools = [p for p in POOLING_ORDER if p in poolings] + [p for p in poolings if p not in POOLING_ORDER]
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 6.4), squeeze=False)
    for c, task in enumerate(tasks):
        any_res = next(r.results[k] for rs in runs.values() for r in rs for k in r.results if k[0] == task)
        sem = _first(any_res["metrics"], SEMANTIC_MAIN)
        for row, metric, ylabel in ((0, sem, "semantic score"), (1, "geometry.uniformity", "uniformity")):
            ax = axes[row][c]
            if metric is None:
                ax.set_visible(False)
                continue
            _bars(ax, runs, colors, pools,
                  lambda arm, p, task=task, metric=metric: _arm_value(runs[arm], task, p, metric))
            ax.set_xticklabels(pools, fontsize=8)
            ax.set_title(f"{task}: {metric}")
            ax.set_xlabel("pooling")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7)
    return _save(fig, path)


def _deltas(comparison, tasks, path):
    rows = comparison["rows"]
    wanted = [("geometry.uniformity", "mean"), ("geometry.alignment", "mean"), ("geometry.effective_rank", "max"),
              ("semantic", "mean"), ("lexical", "mean"), ("balance.normalised", "mean"), ("balance.difference", "mean")]
    panels = []
    for metric, pooling in wanted:
        if metric in ("semantic", "lexical"):
            names = SEMANTIC_MAIN if metric == "semantic" else LEXICAL_MAIN
            sel = []
            for t in tasks:
                cand = [r for r in rows if r["task"] == t and r["pooling"] == pooling and r["metric"] in names]
                cand.sort(key=lambda r: names.index(r["metric"]))
                sel += [r for r in cand if r["metric"] == cand[0]["metric"]] if cand else []
            title = f"{metric} probe ({pooling})"
        else:
            sel = [r for r in rows if r["metric"] == metric and r["pooling"] == pooling]
            title = f"{metric} ({pooling})"
        if sel:
            panels.append((title, sel))
    if not panels:
        panels = [("no shared key metric", [])]
    fig, axes = _grid(len(panels), ncols=3, w=4.4, h=0.5 + 0.45 * max(3, len(tasks) * 2))
    for ax, (title, sel) in zip(axes, panels):
        labels = []
        for y, r in enumerate(sel):
            d, lo, hi = r["diff"], r["diff_low"], r["diff_high"]
            if not math.isfinite(d):
                continue
            ax.errorbar(d, y, xerr=_yerr(d, lo, hi), fmt="o", color="tab:green" if r["significant"] else "tab:gray",
                        mfc="tab:green" if r["significant"] else "white", capsize=3)
            short = r["metric"].split(".", 1)[-1] if title.split()[0] in ("semantic", "lexical") else ""
            labels.append((y, f"{r['task']}{': ' + short if short else ''} ({r['a']}−{r['b']})"))
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks([y for y, _ in labels])
        ax.set_yticklabels([s for _, s in labels], fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("difference (95% CI)")
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    fig.suptitle("first arm minus other; filled green = significant in its family (headline: Holm; "
                 "others: Benjamini-Hochberg)", fontsize=9)
    return _save(fig, path)


def make_figures(runs: dict, comparison: dict, fig_dir: str | Path) -> dict[str, Path]:
    """Draw the report's figures into ``fig_dir``; returns ``{title: png path}``."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    tasks, poolings = comparison["tasks"], comparison["poolings"]
    colors = _colors(runs)
    figs = {"Eigenspectra (log-log; solid = mean, dashed = max pooling)":
            _spectra(runs, tasks, colors, fig_dir / "eigenspectra.png")}
    if "mean" in poolings:
        figs["Alignment vs uniformity"] = _align_uniform(runs, tasks, colors, fig_dir / "alignment_uniformity.png")
        figs["Probe scores with 95% intervals"] = _probe_bars(runs, tasks, colors, fig_dir / "probes.png")
    figs["Pooling ablation"] = _pooling_ablation(runs, tasks, poolings, colors, fig_dir / "pooling_ablation.png")
    figs["Per-task differences with 95% intervals"] = _deltas(comparison, tasks, fig_dir / "deltas.png")
    return figs
