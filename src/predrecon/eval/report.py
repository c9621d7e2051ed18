"""Compare evaluated encoders: paired or across-seed tests, Holm correction, Markdown/HTML report.

:func:`compare` reads eval directories written by :func:`predrecon.eval.runner.evaluate`.

* One directory per arm (``[dir_a, dir_b]`` or ``{"hybrid": dir, "mlm": dir}``): **paired**
  tests on the same examples. Metrics with per-example correctness get a sign-flip
  permutation test (:func:`~predrecon.eval.stats.paired_permutation_test`) and a bootstrap
  interval of the mean difference; Spearman, balance and geometry metrics get a paired
  bootstrap (:func:`~predrecon.eval.stats.paired_bootstrap_test`), geometry from the stored
  replicates (the same resamples in both arms when their seeds and ``n_boot_geometry`` match,
  bias-corrected as in the runner) or else recomputed from the saved embeddings.
* Several directories per arm (``{"hybrid": [s0, s1, s2], "mlm": [...]}``): per-arm mean with
  a t-interval, Welch interval of the difference, and the permutation p-value across seeds
  (:func:`~predrecon.eval.stats.across_seeds`; with 3 vs 3 seeds its smallest value is 0.1).

Every arm is compared with the first one (difference = first - other). All p-values of the
whole table are Holm-adjusted together; a row is *significant* only when its adjusted p < alpha.
Outputs in ``out_dir``: ``comparison.json``, ``report.md`` (figures as PNG files next to it) and
a self-contained ``report.html`` (figures embedded as base64 PNG).
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from . import stats
from .runner import _jsonable, bootstrap_indices, load_result, make_statistic

KEY_METRICS = ("geometry.uniformity", "geometry.alignment", "geometry.effective_rank", "lexical.probe",
               "lexical.probe_paper", "semantic.probe", "semantic.sts_regressor", "semantic.sts_zero_shot",
               "semantic.cv_paper", "balance.difference", "linear_probe.paper")


@dataclass
class _Run:
    """One eval directory: results keyed by (task, pooling)."""

    path: Path
    results: dict = field(default_factory=dict)

    def emb(self, task: str, pooling: str) -> np.ndarray:
        return np.load(self.path / task / f"{pooling}.npy")


def _load_run(path: Path) -> _Run:
    if not path.is_dir():
        raise FileNotFoundError(f"eval directory {str(path)!r} does not exist")
    run = _Run(path)
    for f in sorted(path.glob("*/*.json")):
        if f.parent.name == "extras":  # evaluations beyond the paper: see extras_report
            continue
        res = load_result(f)
        run.results[(res["task"], res["pooling"])] = res
    if not run.results:
        raise FileNotFoundError(f"{path}: no <task>/<pooling>.json results (run evaluate first)")
    return run


def _normalise(eval_dirs_or_groups, labels) -> dict[str, list[Path]]:
    if isinstance(eval_dirs_or_groups, Mapping):
        arms = {str(k): [Path(p) for p in ([v] if isinstance(v, (str, Path)) else v)]
                for k, v in eval_dirs_or_groups.items()}
    else:
        dirs = [Path(p) for p in eval_dirs_or_groups]
        names = list(labels) if labels is not None else [p.name for p in dirs]
        if len(names) != len(dirs):
            raise ValueError(f"compare: {len(dirs)} eval dirs but {len(names)} labels")
        if len(set(names)) != len(names):
            names = [f"{n}#{i}" for i, n in enumerate(names)]
        arms = {n: [d] for n, d in zip(names, dirs)}
    if len(arms) < 2:
        raise ValueError(f"compare: need at least two arms, got {list(arms)}")
    for k, v in arms.items():
        if not v:
            raise ValueError(f"compare: arm {k!r} has no eval directory")
    return arms


# --------------------------------------------------------------------------- tests

def _geometry_stat(run: _Run, res: dict, name: str, n_boot: int, seed: int, cache: dict):
    """stat(idx) for a geometry metric: stored (bias-corrected) replicate when idx is one of
    the runner's resamples, else recomputed from the saved embeddings."""
    reps = res.get("geometry_replicates") or {}
    point = res["metrics"][f"geometry.{name}"]["value"]
    table = {}
    if reps.get("seed") == seed and reps.get("n_boot") == n_boot and name in reps.get("values", {}):
        vals = np.array([math.nan if v is None else v for v in reps["values"][name]], dtype=np.float64)
        bias = float(np.nanmean(vals)) - point if np.isfinite(vals).any() else 0.0
        for idx, v in zip(bootstrap_indices(res["n_report"], n_boot, seed), vals):
            table[idx.tobytes()] = v - bias
    slow = None

    def stat(idx):
        idx = np.asarray(idx)
        if idx.size == res["n_report"] and np.array_equal(idx, np.arange(idx.size)):
            return point
        v = table.get(idx.tobytes())
        if v is not None:
            return v
        nonlocal slow
        if slow is None:
            slow = make_statistic({"type": "geometry", "name": name}, res["per_example"],
                                  embeddings=run.emb(res["task"], res["pooling"]), seed=res["meta"]["seed"],
                                  cache=cache)
        return slow(idx)
    return stat


def _testable(ra: dict, rb: dict, metric: str) -> bool:
    spec = ra["metrics"][metric].get("resample")
    return (spec is not None and spec == rb["metrics"][metric].get("resample")
            and ra["meta"]["examples_sha1"] == rb["meta"]["examples_sha1"])


def _bootstrap_test(sa, sb, n: int, n_boot: int, seed: int) -> dict:
    """stats.paired_bootstrap_test plus a normal-approximation p from the bootstrap standard
    error of the difference (not floored at 1 / (n_boot + 1), so it survives Holm over a
    large table); the empirical bootstrap p is kept as ``p_empirical``."""
    rec_a: list[float] = []
    rec_b: list[float] = []
    t = stats.paired_bootstrap_test(lambda i: rec_a.append(float(sa(i))) or rec_a[-1],
                                    lambda i: rec_b.append(float(sb(i))) or rec_b[-1], n, n_boot=n_boot, seed=seed)
    d = np.asarray(rec_a[1:]) - np.asarray(rec_b[1:])
    d = d[np.isfinite(d)]
    se = float(d.std(ddof=1)) if d.size >= 2 else math.nan
    if not math.isfinite(t.diff) or not math.isfinite(se):
        p = math.nan
    elif se == 0:
        p = 1.0 if t.diff == 0 else 0.0
    else:
        p = float(2 * sps.norm.sf(abs(t.diff) / se))
    return {"diff": t.diff, "diff_low": t.low, "diff_high": t.high, "p": p, "p_empirical": t.p_value,
            "diff_se": se, "test": f"paired_bootstrap_normal(B={n_boot})"}


def _paired(run_a: _Run, ra: dict, run_b: _Run, rb: dict, metric: str, *, n_boot: int, n_boot_geometry: int,
            n_perm: int, seed: int) -> dict:
    ea, eb = ra["metrics"][metric], rb["metrics"][metric]
    spec = ea.get("resample")
    out = {"value_a": ea["value"], "low_a": ea["low"], "high_a": ea["high"], "value_b": eb["value"],
           "low_b": eb["low"], "high_b": eb["high"], "diff": ea["value"] - eb["value"],
           "diff_low": math.nan, "diff_high": math.nan, "p": math.nan, "test": "none"}
    if not _testable(ra, rb, metric):
        if spec is not None and ra["meta"]["examples_sha1"] != rb["meta"]["examples_sha1"]:
            out["test"] = "none (different examples)"
        return out
    n = ra["n_report"]
    if spec["type"] == "mean":
        a = np.asarray(ra["per_example"][spec["key"]])
        b = np.asarray(rb["per_example"][spec["key"]])
        ok = ~(np.isnan(a) | np.isnan(b))
        if ok.sum() < 2:
            return out
        d = a[ok] - b[ok]
        t = stats.paired_permutation_test(a[ok], b[ok], n_perm=n_perm, seed=seed)
        ci = stats.bootstrap_ci(d, lambda v: v.mean(axis=-1), n_boot=n_boot, seed=seed, vectorized=True) \
            if np.ptp(d) > 0 else stats.Estimate(float(d.mean()), float(d.mean()), float(d.mean()), 0, "none")
        out.update(diff=t.diff, diff_low=ci.low, diff_high=ci.high, p=t.p_value, test=t.method)
        return out
    if spec["type"] == "geometry":
        ga, gb = ra.get("geometry_replicates") or {}, rb.get("geometry_replicates") or {}
        same = ga.get("seed") == gb.get("seed") and ga.get("n_boot") == gb.get("n_boot") and ga.get("n_boot")
        gseed, gboot = (ga["seed"], ga["n_boot"]) if same else (seed, n_boot_geometry)
        sa = _geometry_stat(run_a, ra, spec["name"], gboot, gseed, {})
        sb = _geometry_stat(run_b, rb, spec["name"], gboot, gseed, {})
        out.update(_bootstrap_test(sa, sb, n, gboot, gseed))
    else:
        out.update(_bootstrap_test(make_statistic(spec, ra["per_example"]), make_statistic(spec, rb["per_example"]),
                                   n, n_boot, seed))
    return out


def _seeds(va: list[float], vb: list[float], n_perm: int, seed: int) -> dict:
    va = [v for v in va if math.isfinite(v)]
    vb = [v for v in vb if math.isfinite(v)]
    out = {"value_a": math.nan, "low_a": math.nan, "high_a": math.nan, "value_b": math.nan, "low_b": math.nan,
           "high_b": math.nan, "diff": math.nan, "diff_low": math.nan, "diff_high": math.nan, "p": math.nan,
           "test": "none", "n_a": len(va), "n_b": len(vb)}
    if not va or not vb:
        return out
    c = stats.across_seeds(va, vb, n_perm=n_perm, seed=seed)
    out.update(value_a=c.a.mean, low_a=c.a.low, high_a=c.a.high, value_b=c.b.mean, low_b=c.b.low,
               high_b=c.b.high, diff=c.diff, p=c.permutation_p, welch_p=c.welch_p,
               test="permutation_across_seeds" + ("_exact" if c.permutation_exact else ""))
    if len(va) >= 2 and len(vb) >= 2 and (np.std(va) > 0 or np.std(vb) > 0):
        ci = sps.ttest_ind(va, vb, equal_var=False).confidence_interval(0.95)
        out.update(diff_low=float(ci.low), diff_high=float(ci.high))
    return out


# --------------------------------------------------------------------------- entry point

def compare(eval_dirs_or_groups: Sequence[str | Path] | Mapping[str, str | Path | Sequence[str | Path]],
            out_dir: str | Path, *, labels: Sequence[str] | None = None, n_boot: int = 1000,
            n_boot_geometry: int = 100, n_perm: int = 10_000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Compare two or more evaluated encoders and write ``comparison.json``, ``report.md`` and
    ``report.html`` to ``out_dir``.

    ``eval_dirs_or_groups``: a list of eval dirs (one arm each, names from ``labels`` or the
    folder names) or a mapping ``arm -> dir | [dirs]`` (several dirs = seeds of one arm). The
    first arm is the reference: ``diff = first - other``. Returns the comparison dict.
    """
    arms = _normalise(eval_dirs_or_groups, labels)
    runs = {a: [_load_run(p) for p in dirs] for a, dirs in arms.items()}
    mode = "paired" if all(len(v) == 1 for v in runs.values()) else "seeds"
    keys = set.intersection(*(set(r.results) for rs in runs.values() for r in rs))
    if not keys:
        raise ValueError("compare: the eval dirs share no (task, pooling) result")
    notes: list[str] = []
    modes = {r.results[k]["meta"]["faithful"] for rs in runs.values() for r in rs for k in keys}
    if len(modes) > 1:
        notes.append("WARNING: faithful and improved evaluations are mixed; differences include the protocol.")
    names = list(runs)
    ref = names[0]
    if mode == "paired":  # permutation p-values must be able to pass Holm over the whole table
        m = sum(_testable(runs[ref][0].results[k], runs[o][0].results[k], met)
                for o in names[1:] for k in keys for met in runs[ref][0].results[k]["metrics"]
                if met in runs[o][0].results[k]["metrics"])
        n_perm = max(n_perm, math.ceil(2 * m / alpha))
    rows = []
    for other in names[1:]:
        for task, pooling in sorted(keys):
            ra_all = [r.results[(task, pooling)] for r in runs[ref]]
            rb_all = [r.results[(task, pooling)] for r in runs[other]]
            metrics = [m for m in ra_all[0]["metrics"]
                       if all(m in r["metrics"] for r in ra_all + rb_all)]
            for metric in metrics:
                if mode == "paired":
                    row = _paired(runs[ref][0], ra_all[0], runs[other][0], rb_all[0], metric, n_boot=n_boot,
                                  n_boot_geometry=n_boot_geometry, n_perm=n_perm, seed=seed)
                else:
                    row = _seeds([r["metrics"][metric]["value"] for r in ra_all],
                                 [r["metrics"][metric]["value"] for r in rb_all], n_perm, seed)
                rows.append({"a": ref, "b": other, "task": task, "pooling": pooling, "metric": metric,
                             "status_a": ra_all[0]["pooling_status"], "status_b": rb_all[0]["pooling_status"],
                             **row})
    ps = np.array([r["p"] for r in rows], dtype=np.float64)
    finite = np.isfinite(ps)
    adj = np.full(ps.shape, math.nan)
    if finite.any():
        adj[finite] = stats.holm(ps[finite])
    for r, pa in zip(rows, adj):
        r["p_holm"] = float(pa)
        r["significant"] = bool(math.isfinite(pa) and pa < alpha)
        r["label"] = stats.significance_label(float(pa), alpha) if math.isfinite(pa) else "n/a"
    task_notes = {}
    for rs in runs.values():
        for r in rs:
            for (task, pooling), res in r.results.items():
                if (task, pooling) not in keys:
                    continue
                task_notes.setdefault(task, [])
                for nt in res["notes"]:
                    if nt not in task_notes[task]:
                        task_notes[task].append(nt)
    comparison = {
        "mode": mode, "reference": ref, "alpha": alpha, "n_tests": int(finite.sum()), "n_perm": n_perm,
        "arms": {a: {"dirs": [str(r.path) for r in rs],
                     "encoders": sorted({res["meta"]["encoder"] for r in rs for res in r.results.values()}),
                     "faithful": sorted({res["meta"]["faithful"] for r in rs for res in r.results.values()})}
                 for a, rs in runs.items()},
        "tasks": sorted({k[0] for k in keys}), "poolings": sorted({k[1] for k in keys}),
        "notes": notes, "task_notes": task_notes, "rows": rows,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(_jsonable(comparison), indent=1))
    from .plots import make_figures

    figures = make_figures(runs, comparison, out / "figures")
    extras = None
    if any((p / "extras").is_dir() for dirs in arms.values() for p in dirs):
        from .extras_report import compare_extras

        extras = compare_extras(arms, n_boot=n_boot, n_perm=n_perm, seed=seed, alpha=alpha)
        comparison["extras"] = {k: v for k, v in extras.items() if k != "figures"}
        (out / "comparison.json").write_text(json.dumps(_jsonable(comparison), indent=1))
    _write_markdown(comparison, figures, out / "report.md", extras)
    _write_html(comparison, figures, out / "report.html", extras)
    return comparison


# --------------------------------------------------------------------------- rendering

def _extras_html(extras: dict) -> str:
    """The beyond-the-paper section: tables (significant rows shaded) and embedded figures."""
    from .extras_report import extras_tables

    e = html.escape
    out = ["<h2>Beyond the paper: few-shot, robustness, cross-lingual, similarity</h2>",
           "<p>Holm-corrected as their own family of tests (separate from the paper's table).</p>"]
    for t in extras_tables(extras):
        out.append(f"<h3>{e(t['title'])}</h3><table><thead><tr>"
                   + "".join(f"<th>{e(str(c))}</th>" for c in t["columns"]) + "</tr></thead><tbody>")
        for row in t["rows"]:
            cls = ' class="sig"' if any(str(c).startswith("significant") for c in row) else ""
            out.append(f"<tr{cls}>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
        out.append("</tbody></table>")
    for f in extras.get("figures", []):
        out.append(f"<h3>{e(f['title'])}</h3><img alt='{e(f['title'])}' src='data:image/png;base64,{f['png_base64']}'>")
    return "\n".join(out)


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float) and v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.2e}"
    return f"{v:.{digits}f}"


def _ci(v, lo, hi) -> str:
    s = _fmt(v)
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        s += f" [{_fmt(lo)}, {_fmt(hi)}]"
    return s


def _table_rows(comp: dict, rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["task", "pooling", "metric", comp["reference"], "other", "diff [95% CI]", "p", "p (Holm)", "result"]
    body = []
    for r in rows:
        body.append([r["task"], f"{r['pooling']} ({r['status_a']})", r["metric"],
                     _ci(r["value_a"], r["low_a"], r["high_a"]), f"{r['b']}: " + _ci(r["value_b"], r["low_b"], r["high_b"]),
                     _ci(r["diff"], r["diff_low"], r["diff_high"]), _fmt(r["p"], 4), _fmt(r["p_holm"], 4),
                     ("significant " + r["label"]) if r["significant"] else ("n.s." if r["label"] != "n/a" else "n/a")])
    return head, body


def _headline(comp: dict) -> list[dict]:
    rows = comp["rows"]
    pick = [r for r in rows if r["metric"] in KEY_METRICS and (r["pooling"] == "mean" or (
        r["pooling"] == "max" and r["metric"] == "geometry.effective_rank"))]
    return sorted(pick, key=lambda r: (r["b"], r["task"], KEY_METRICS.index(r["metric"]), r["pooling"]))


def _method_notes(comp: dict) -> list[str]:
    notes = [f"Differences are {comp['reference']} minus the other arm. p-values are Holm-adjusted over all "
             f"{comp['n_tests']} tests of this report; 'significant' only where the adjusted p < {comp['alpha']}."]
    if comp["mode"] == "paired":
        notes.append(f"Paired design (same examples): per-example correctness -> sign-flip permutation test "
                     f"({comp['n_perm']} sign vectors, enough for Holm over this table); Spearman / balance / "
                     "geometry -> paired bootstrap over examples, p from the bootstrap standard error of the "
                     "difference (normal approximation; the empirical bootstrap p is in comparison.json as "
                     "p_empirical). Geometry intervals are bias-corrected bootstrap percentiles (approximate: "
                     "duplicated rows in resamples bias pairwise and rank metrics).")
    else:
        sizes = [len(a["dirs"]) for a in comp["arms"].values()]
        n_a, n_b = sizes[0], min(sizes[1:])
        floor = 1.0 / math.comb(n_a + n_b, n_a)
        notes.append("Across seeds: arm means with Student-t intervals, Welch interval of the difference, "
                     f"permutation p-value across seeds ({n_a} vs {n_b} seeds: two-sided p cannot go below "
                     f"{2 * floor:.3g}, so nothing can reach significance below that).")
    notes.append("Bag-of-words probe scores have no interval (the probe returns aggregates only).")
    return notes


def _write_markdown(comp: dict, figures: dict[str, Path], path: Path, extras: dict | None = None) -> None:
    L = ["# Encoder comparison", "", "## Inputs", ""]
    for a, info in comp["arms"].items():
        L.append(f"- **{a}**: {', '.join(info['encoders'])} (faithful={info['faithful']}); dirs: "
                 + ", ".join(f"`{d}`" for d in info["dirs"]))
    L += ["", f"Mode: {comp['mode']}; reference arm: {comp['reference']}; tasks: {', '.join(comp['tasks'])}; "
          f"poolings: {', '.join(comp['poolings'])}.", "", "## Method", ""]
    L += [f"- {n}" for n in _method_notes(comp) + comp["notes"]]
    L += ["", "## Task notes", ""]
    for t, ns in comp["task_notes"].items():
        L += [f"- **{t}**: " + " ".join(ns)]
    for title, rows in (("## Headline (mean pooling; effective rank also under max pooling)", _headline(comp)),
                        ("## All results", comp["rows"])):
        head, body = _table_rows(comp, rows)
        L += ["", title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        L += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    L += ["", "## Figures", ""]
    for name, fp in figures.items():
        L += [f"### {name}", "", f"![{name}](figures/{fp.name})", ""]
    if extras is not None:
        from .extras_report import extras_markdown

        L += [extras_markdown(extras, figures=True), "",
              "_These tests are Holm-corrected as their own family, separate from the paper's table above._"]
    path.write_text("\n".join(L) + "\n")


def _write_html(comp: dict, figures: dict[str, Path], path: Path, extras: dict | None = None) -> None:
    e = html.escape

    def table(rows):
        head, body = _table_rows(comp, rows)
        out = ["<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
        for r, row in zip(rows, body):
            cls = ' class="sig"' if r["significant"] else ""
            out.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        return "\n".join(out + ["</tbody></table>"])

    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Encoder comparison</title><style>",
             "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "tr.sig{background:#e6f4e6}img{max-width:100%}</style></head><body>",
             "<h1>Encoder comparison</h1><h2>Inputs</h2><ul>"]
    for a, info in comp["arms"].items():
        parts.append(f"<li><b>{e(a)}</b>: {e(', '.join(info['encoders']))} (faithful={e(str(info['faithful']))}); "
                     f"dirs: {e(', '.join(info['dirs']))}</li>")
    parts.append(f"</ul><p>Mode: {e(comp['mode'])}; reference arm: {e(comp['reference'])}; tasks: "
                 f"{e(', '.join(comp['tasks']))}; poolings: {e(', '.join(comp['poolings']))}.</p><h2>Method</h2><ul>")
    parts += [f"<li>{e(n)}</li>" for n in _method_notes(comp) + comp["notes"]]
    parts.append("</ul><h2>Task notes</h2><ul>")
    parts += [f"<li><b>{e(t)}</b>: {e(' '.join(ns))}</li>" for t, ns in comp["task_notes"].items()]
    parts.append("</ul><h2>Headline (mean pooling; effective rank also under max pooling)</h2>")
    parts.append(table(_headline(comp)))
    parts.append("<h2>Figures</h2>")
    for name, fp in figures.items():
        b64 = base64.b64encode(fp.read_bytes()).decode("ascii")
        parts.append(f"<h3>{e(name)}</h3><img alt='{e(name)}' src='data:image/png;base64,{b64}'>")
    if extras is not None:
        parts.append(_extras_html(extras))
    parts.append("<h2>All results</h2>")
    parts.append(table(comp["rows"]))
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
