"""Compare the beyond-the-paper extras of several arms (one or more seeds each).

:func:`compare_extras` reads ``<eval_dir>/extras/*.json`` written by
:func:`predrecon.eval.suites.extras.run_extras` and returns tables, p-values and figures for a report;
:func:`extras_markdown` renders the tables. Conventions follow :mod:`predrecon.eval.report.report`:

* The first arm is the reference; differences are ``reference - other``.
* Several seeds per arm (claims about objectives): arm mean with a Student-t interval across
  seeds and the seed test of the report, Welch's t-test with its interval of the difference
  (:func:`~predrecon.eval.metrics.stats.welch_test`). An arm with one seed allows no test.
* One seed per arm (two fixed networks: says nothing about objectives): paired tests on the same
  examples from the stored per-example vectors — sign-flip permutation test for per-example
  scores (correctness, drops, cosines), paired bootstrap for Spearman with the empirical p
  ``(1 + #extreme) / (B + 1)`` (:func:`~predrecon.eval.metrics.stats.bootstrap_p`; never 0).

These comparisons are exploratory: by default Benjamini-Hochberg over these tables' tests.
P-values are also returned unadjusted (``pvalues``) so a caller can adjust them otherwise; a row
is marked significant only where its *adjusted* p < alpha. This module imports only
:mod:`~predrecon.eval.metrics.stats` and the extras themselves (no import of the report module).
"""

from __future__ import annotations

import base64
import io
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..metrics import stats
from ..metrics.fewshot import plot_fewshot
from ..records import paired_entry_test, seed_test
from ..suites.extras import EXTRAS, load_record

_fmt, _ci = stats.fmt_number, stats.fmt_interval  # one number format for every report table
FIXED_NETWORKS = "two fixed networks: says nothing about objectives"

TITLES = {
    "fewshot": "Few-shot linear probe",
    "robustness": "Robustness to text perturbations",
    "crosslingual": "Zero-shot cross-lingual topic transfer (wiki-topic, probe trained on English)",
    "similarity": "Zero-shot similarity (Spearman of cosine with human scores)",
}
COLUMNS_TAIL = ["diff [95% CI]", "p", "test", "p (adj.)", "result"]


# --------------------------------------------------------------------------- loading

def load_extras(eval_dir: str | Path) -> dict[str, dict]:
    """``{extra name: record}`` of one eval dir; ``FileNotFoundError`` naming the folder when it
    holds no ``extras/*.json``."""
    files = sorted(Path(eval_dir, "extras").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{Path(eval_dir) / 'extras'}: no extras JSON (run run_extras first)")
    return {rec["extra"]: rec for rec in map(load_record, files)}


def _normalise(groups: Mapping) -> dict[str, list[Path]]:
    arms = {str(k): [Path(p) for p in ([v] if isinstance(v, (str, Path)) else v)] for k, v in groups.items()}
    if len(arms) < 2:
        raise ValueError(f"compare_extras: need at least two arms, got {list(arms)}")
    empty = [k for k, v in arms.items() if not v]
    if empty:
        raise ValueError(f"compare_extras: arm(s) {empty} have no eval directory")
    return arms


# --------------------------------------------------------------------------- statistics

def summarise(entries: list[dict], ci: float = 0.95) -> dict:
    """One arm's value of a metric from its seeds' entries: mean with a t-interval across seeds
    (>= 2 finite values), the run's own interval (one), NaN (none)."""
    vals = [e["value"] for e in entries if math.isfinite(e["value"])]
    if len(vals) >= 2:
        s = stats.t_interval(vals, ci)
        return {"mean": s.mean, "low": s.low, "high": s.high, "n_seeds": len(vals), "values": vals,
                "interval": f"t across {len(vals)} seeds"}
    if len(vals) == 1:
        e = next(e for e in entries if math.isfinite(e["value"]))
        return {"mean": e["value"], "low": e["low"], "high": e["high"], "n_seeds": 1, "values": vals,
                "interval": e.get("method", "")}
    return {"mean": math.nan, "low": math.nan, "high": math.nan, "n_seeds": 0, "values": [], "interval": ""}


def paired_spearman_test(pred_a: np.ndarray, pred_b: np.ndarray, target: np.ndarray, n_boot: int = 1000,
                         seed: int = 0) -> dict:
    """Paired bootstrap over pairs of ``rho(pred_a, target) - rho(pred_b, target)`` (two fixed
    encoders): the shared test of a ``spearman`` recipe
    (:func:`~predrecon.eval.records.paired_entry_test`), percentile interval and the empirical
    two-sided p of :func:`~predrecon.eval.metrics.stats.bootstrap_p`: 1 for identical predictions, never
    0, never below ``1 / (B + 1)``."""
    spec = {"type": "spearman", "pred": "pred", "target": "target"}
    t = paired_entry_test(spec, {"pred": pred_a, "target": target}, {"pred": pred_b, "target": target},
                          len(target), n_boot=n_boot, n_perm=0, seed=seed)
    t.pop("replicates", None)
    return t


def _paired(ea: dict, eb: dict, pa: dict, pb: dict, *, n_boot: int, n_perm: int, seed: int) -> dict:
    """The paired test of the report (:func:`~predrecon.eval.records.paired_entry_test`) on one
    metric of two single-seed arms."""
    out = {"diff": ea["value"] - eb["value"], "diff_low": math.nan, "diff_high": math.nan, "p": math.nan}
    spec = ea.get("resample")
    if not spec or spec != eb.get("resample"):
        return {**out, "test": "none (no per-example data)"}
    if ea.get("examples") != eb.get("examples"):
        return {**out, "test": "none (different examples)"}
    t = paired_entry_test(spec, pa, pb, ea["n"], n_boot=n_boot, n_perm=n_perm, seed=seed)
    if t["test"].startswith("none"):
        return {**out, "test": t["test"]}
    return {k: t[k] for k in ("diff", "diff_low", "diff_high", "p", "test")}


def _seeds(sa: dict, sb: dict) -> dict:
    """The report's seed test (:func:`~predrecon.eval.records.seed_test`) across seeds."""
    va, vb = sa["values"], sb["values"]
    out = {"diff": sa["mean"] - sb["mean"], "diff_low": math.nan, "diff_high": math.nan, "p": math.nan}
    if len(va) < 2 or len(vb) < 2:
        return {**out, "test": "none (needs >= 2 seeds per arm)"}
    t = seed_test(va, vb)
    return {k: t[k] for k in ("diff", "diff_low", "diff_high", "p", "test")}


# --------------------------------------------------------------------------- entry point

def compare_extras(groups: Mapping[str, Sequence[str | Path] | str | Path], *, n_boot: int = 1000,
                   n_perm: int = 10_000, seed: int = 0, alpha: float = 0.05, ci: float = 0.95) -> dict:
    """Aggregate and compare the extras of arms ``groups`` (``arm -> eval dir | [eval dirs]``,
    several dirs = seeds). The first arm is the reference.

    Returns ``{"mode": "paired" | "seeds", "reference", "arms", "extras", "summaries"
    ({extra: {metric: {arm: summary}}}), "comparisons" (one row per tested metric and other arm),
    "pvalues" ([{name, p}], unadjusted, finite only), "tables" ([{title, columns, rows, p_names}];
    the 'p (Holm)' and 'result' cells are filled by :func:`extras_tables`), "figures"
    ([{title, png_base64}]), "notes"}``.
    """
    arms = _normalise(groups)
    runs = {a: [load_extras(d) for d in dirs] for a, dirs in arms.items()}
    mode = "paired" if all(len(r) == 1 for r in runs.values()) else "seeds"
    names = list(runs)
    ref, all_runs = names[0], [r for rs in runs.values() for r in rs]
    present = [e for e in EXTRAS if all(e in r for r in all_runs)]
    notes = []
    missing = sorted({e for r in all_runs for e in r} - set(present))
    if missing:
        notes.append(f"extras missing from some eval dirs, left out: {', '.join(missing)}")
    if not present:
        raise ValueError(f"compare_extras: the eval dirs share no extra (found {missing})")
    summaries: dict[str, dict] = {}
    metric_lists: dict[str, list[str]] = {}
    for extra in present:
        metric_lists[extra] = [m for m in runs[ref][0][extra]["metrics"]
                               if all(m in r[extra]["metrics"] for r in all_runs)]
        summaries[extra] = {m: {a: summarise([r[extra]["metrics"][m] for r in runs[a]], ci) for a in names}
                            for m in metric_lists[extra]}
    if mode == "paired":  # sign-flip p-values must be able to pass Holm over these tests
        m_tests = sum(runs[ref][0][e]["metrics"][m]["tested"] for e in present for m in metric_lists[e])
        n_perm = max(n_perm, math.ceil(2 * m_tests * (len(names) - 1) / alpha))
    rows = []
    for other in names[1:]:
        for extra in present:
            for m in metric_lists[extra]:
                ea = runs[ref][0][extra]["metrics"][m]
                if not ea["tested"]:
                    continue
                sa, sb = summaries[extra][m][ref], summaries[extra][m][other]
                if mode == "paired":
                    res = _paired(ea, runs[other][0][extra]["metrics"][m], runs[ref][0][extra]["per_example"],
                                  runs[other][0][extra]["per_example"], n_boot=n_boot, n_perm=n_perm, seed=seed)
                else:
                    res = _seeds(sa, sb)
                rows.append({"name": f"extras.{extra}.{m}:{ref}-vs-{other}", "extra": extra, "metric": m,
                             "label": ea["label"], "a": ref, "b": other, "value_a": sa["mean"], "low_a": sa["low"],
                             "high_a": sa["high"], "n_a": sa["n_seeds"], "value_b": sb["mean"], "low_b": sb["low"],
                             "high_b": sb["high"], "n_b": sb["n_seeds"], **res})
    notes += _method_notes(mode, n_perm)
    for extra in present:
        for nt in runs[ref][0][extra]["notes"]:
            if nt not in notes:
                notes.append(nt)
    result = {"mode": mode, "reference": ref, "alpha": alpha, "n_perm": n_perm,
              "arms": {a: {"dirs": [str(p) for p in arms[a]],
                           "encoders": sorted({rec["encoder"] for r in runs[a] for rec in r.values()})} for a in names},
              "extras": present, "summaries": summaries, "comparisons": rows,
              "pvalues": [{"name": r["name"], "p": r["p"]} for r in rows if math.isfinite(r["p"])],
              "notes": notes}
    result["tables"] = _tables(result, runs[ref][0])
    result["figures"] = _figures(result, names)
    return result


def _method_notes(mode: str, n_perm: int) -> list[str]:
    if mode == "paired":
        return [f"One seed per arm ({FIXED_NETWORKS}): paired tests on the same examples (sign-flip "
                f"permutation test, {n_perm} sign vectors, for per-example scores; paired bootstrap with the "
                "empirical p (1 + #extreme) / (B + 1) for Spearman)."]
    return ["Several seeds per arm (claims about objectives): means with Student-t intervals across seeds; "
            "Welch's t-test of the difference with its 95 % interval (the report's seed test; see its power "
            "statement)."]


# --------------------------------------------------------------------------- tables

def _title(extra: str, rec: dict) -> str:
    p = rec["params"]
    if extra == "fewshot":
        return f"{TITLES[extra]} — {p['task']} (accuracy; k examples per class, {p['draws']} draws)"
    if extra == "robustness":
        return f"{TITLES[extra]} — {p['task']} (drops and cosines averaged over rates {p['rates']})"
    return TITLES.get(extra, extra)


def _tables(result: dict, ref_run: dict) -> list[dict]:
    ref, tables = result["reference"], []
    for extra in result["extras"]:
        rows = [r for r in result["comparisons"] if r["extra"] == extra]
        body = [[r["label"], _ci(r["value_a"], r["low_a"], r["high_a"]) + f" (n={r['n_a']})",
                 f"{r['b']}: " + _ci(r["value_b"], r["low_b"], r["high_b"]) + f" (n={r['n_b']})",
                 _ci(r["diff"], r["diff_low"], r["diff_high"]), _fmt(r["p"], 4), r["test"], "–", "n/a"]
                for r in rows]
        tables.append({"title": _title(extra, ref_run[extra]), "columns": ["metric", ref, "other", *COLUMNS_TAIL],
                       "rows": body, "p_names": [r["name"] if math.isfinite(r["p"]) else None for r in rows]})
    return tables


def _adjusted(result: dict, adjusted_pvalues) -> dict[str, float]:
    names = [p["name"] for p in result["pvalues"]]
    if adjusted_pvalues is None:
        adj = stats.benjamini_hochberg([p["p"] for p in result["pvalues"]]) if names else []
        return dict(zip(names, map(float, adj)))
    if isinstance(adjusted_pvalues, Mapping):
        return {str(k): float(v) for k, v in adjusted_pvalues.items()}
    adj = list(adjusted_pvalues)
    if len(adj) != len(names):
        raise ValueError(f"extras: {len(adj)} adjusted p-values for {len(names)} p-values in result['pvalues']")
    return dict(zip(names, map(float, adj)))


def extras_tables(result: dict, adjusted_pvalues: Mapping[str, float] | Sequence[float] | None = None,
                  alpha: float | None = None) -> list[dict]:
    """The tables of ``result`` with 'p (Holm)' and 'result' filled in.

    ``adjusted_pvalues``: ``{name: adjusted p}`` or a sequence in the order of
    ``result['pvalues']``; None = Benjamini-Hochberg over this result's p-values only
    (exploratory). A row reads
    'significant' only when its adjusted p < ``alpha`` (default: ``result['alpha']``).
    """
    alpha = result.get("alpha", 0.05) if alpha is None else alpha
    adj = _adjusted(result, adjusted_pvalues)
    out = []
    for t in result["tables"]:
        rows = []
        for row, name in zip(t["rows"], t["p_names"]):
            pa = adj.get(name, math.nan) if name is not None else math.nan
            if math.isfinite(pa):
                verdict = f"significant {stats.significance_label(pa, alpha)}" if pa < alpha else "n.s."
            else:
                verdict = "n/a"
            rows.append([*row[:-2], _fmt(pa, 4), verdict])
        out.append({**t, "rows": rows})
    return out


def extras_markdown(result: dict, adjusted_pvalues: Mapping[str, float] | Sequence[float] | None = None,
                    alpha: float | None = None, figures: bool = False) -> str:
    """Markdown of :func:`compare_extras`'s tables (see :func:`extras_tables` for
    ``adjusted_pvalues``), with the method notes; ``figures`` embeds the PNGs as data URIs."""
    alpha = result.get("alpha", 0.05) if alpha is None else alpha
    L = ["## Beyond the paper: few-shot, robustness, cross-lingual transfer, similarity", "",
         _scope(result, adjusted_pvalues, alpha), ""]
    L += [f"- {n}" for n in result["notes"]]
    for t in extras_tables(result, adjusted_pvalues, alpha):
        L += ["", f"### {t['title']}", "", "| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
        L += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in t["rows"]]
    if figures:
        for f in result["figures"]:
            L += ["", f"### {f['title']}", "", f"![{f['title']}](data:image/png;base64,{f['png_base64']})"]
    return "\n".join(L) + "\n"


def _scope(result: dict, adjusted_pvalues, alpha: float) -> str:
    scope = ("adjusted p-values supplied by the caller" if adjusted_pvalues is not None
             else f"exploratory, Benjamini-Hochberg FDR over the {len(result['pvalues'])} tests of these tables only")
    return (f"Reference arm: {result['reference']}; differences are {result['reference']} minus the other arm. "
            f"'p (adj.)': {scope}; a result is marked only where the adjusted p < {alpha}.")


def extras_html(result: dict, adjusted_pvalues: Mapping[str, float] | Sequence[float] | None = None,
                alpha: float | None = None) -> str:
    """The same section as :func:`extras_markdown` in HTML (significant rows shaded, figures
    embedded)."""
    import html

    e = html.escape
    alpha = result.get("alpha", 0.05) if alpha is None else alpha
    out = ["<h2>Beyond the paper: few-shot, robustness, cross-lingual, similarity</h2>",
           f"<p>{e(_scope(result, adjusted_pvalues, alpha))}</p><ul>"]
    out += [f"<li>{e(n)}</li>" for n in result["notes"]] + ["</ul>"]
    for t in extras_tables(result, adjusted_pvalues, alpha):
        out.append(f"<h3>{e(t['title'])}</h3><table><thead><tr>"
                   + "".join(f"<th>{e(str(c))}</th>" for c in t["columns"]) + "</tr></thead><tbody>")
        for row in t["rows"]:
            cls = ' class="sig"' if str(row[-1]).startswith("significant") else ""
            out.append(f"<tr{cls}>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
        out.append("</tbody></table>")
    for f in result.get("figures", []):
        out.append(f"<h3>{e(f['title'])}</h3><img alt='{e(f['title'])}' src='data:image/png;base64,{f['png_base64']}'>")
    return "\n".join(out)


# --------------------------------------------------------------------------- figures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _yerr(s: list[dict]) -> np.ndarray:
    mean = np.array([x["mean"] for x in s], dtype=float)
    lo = np.array([x["low"] for x in s], dtype=float)
    hi = np.array([x["high"] for x in s], dtype=float)
    return np.nan_to_num(np.stack([mean - lo, hi - mean]))  # (2, K); NaN -> no bar


def _by_coords(summ: dict, prefix: str) -> dict[str, dict]:
    return {m: v for m, v in summ.items() if m.startswith(prefix)}


def _figures(result: dict, arms: list[str]) -> list[dict]:
    plt, figs, S = _plt(), [], result["summaries"]
    if "fewshot" in S:
        curves = {}
        for a in arms:
            pts = sorted((int(m.split("=")[1]), v[a]) for m, v in _by_coords(S["fewshot"], "accuracy@k=").items())
            full = S["fewshot"].get("accuracy@all", {}).get(a, {}).get("mean")
            curves[a] = {"ks": [k for k, _ in pts], "mean": [s["mean"] for _, s in pts],
                         "low": [s["low"] for _, s in pts], "high": [s["high"] for _, s in pts],
                         "full": full if full is not None and math.isfinite(full) else None}
        with tempfile.TemporaryDirectory() as tmp:
            what = "mean across seeds" if result["mode"] == "seeds" else "one seed per arm"
            path = plot_fewshot(curves, Path(tmp) / "fewshot.png",
                                title=f"few-shot probe, {what} (dotted: all training data)")
            figs.append({"title": "Few-shot accuracy vs k", "png_base64": base64.b64encode(path.read_bytes()).decode()})
    if "robustness" in S:
        per_rate = _by_coords(S["robustness"], "drop.")
        kinds = list(dict.fromkeys(m.split(".", 1)[1].split("@")[0] for m in per_rate if "@" in m))
        if kinds:
            fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 3.2), sharey=True, squeeze=False)
            for ax, kind in zip(axes[0], kinds):
                ms = sorted((float(m.split("@")[1]), m) for m in per_rate if m.startswith(f"drop.{kind}@"))
                for a in arms:
                    s = [per_rate[m][a] for _, m in ms]
                    ax.errorbar([r for r, _ in ms], [x["mean"] for x in s], yerr=_yerr(s), marker="o", capsize=3,
                                label=a)
                ax.axhline(0, color="grey", lw=0.8)
                ax.set_title(kind)
                ax.set_xlabel("perturbation rate")
                ax.grid(alpha=0.3)
            axes[0][0].set_ylabel("accuracy drop (clean - perturbed)")
            axes[0][0].legend()
            figs.append({"title": "Robustness: accuracy drop vs perturbation rate", "png_base64": _png(fig)})
    for extra, prefix, _key, ylabel, title in (
            ("crosslingual", "accuracy.", "lang", "test accuracy",
             "Cross-lingual transfer accuracy (en-trained probe)"),
            ("similarity", "spearman.", "set", "Spearman rho", "Zero-shot similarity")):
        if extra not in S:
            continue
        ms = _by_coords(S[extra], prefix)
        groups = [m[len(prefix):] for m in ms]
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(groups) * max(1, len(arms)) / 2, 3.4))
        width = 0.8 / len(arms)
        x = np.arange(len(groups))
        for i, a in enumerate(arms):
            s = [ms[prefix + g][a] for g in groups]
            ax.bar(x + (i - (len(arms) - 1) / 2) * width, [v["mean"] for v in s], width, yerr=_yerr(s), capsize=3,
                   label=a)
        if extra == "crosslingual":
            maj = [S[extra].get(f"majority.{g}", {}).get(arms[0], {}).get("mean", math.nan) for g in groups]
            ax.scatter(x, maj, marker="_", s=400, color="black", zorder=3, label="majority class")
        ax.set_xticks(x, groups)
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="grey", lw=0.8)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        figs.append({"title": title, "png_base64": _png(fig)})
    return figs
