"""Compare evaluated encoders: the seed test or paired tests, test families, floors, a verdict,
and a Markdown/HTML report.

:func:`compare` reads eval directories written by :func:`predrecon.eval.suites.runner.evaluate`.

* Several directories per arm (``{"hybrid": [s0, ..., s4], "mlm": [...]}``): claims about
  **objectives**. Per metric, one value per seed and arm; Welch's t-test across seeds
  (:func:`~predrecon.eval.metrics.stats.welch_test`), arm means with t-intervals. The report states the
  test's power (:func:`~predrecon.eval.metrics.stats.detectable_effect`) and its false-positive rate on
  a null matched to the design (:func:`~predrecon.eval.metrics.stats.seed_null_fpr`).
* One directory per arm (``[dir_a, dir_b]``): **two fixed networks**, paired over the same
  examples. Per-example scores get a sign-flip permutation test, other metrics a paired
  bootstrap with an empirical p (:func:`bootstrap_difference`; geometry from the runner's stored
  replicates when both arms share them). These tests say nothing about objectives.

Families: the pre-registered headline family (:data:`HEADLINE`, one row per task, claim and
other arm) is Holm-corrected; the full table is exploratory, Benjamini-Hochberg FDR. Exact
duplicate metrics are not tested. Every score is shown beside its floors (metric key
``floors``); when every arm's headline probe score is at or below the random-init floor the
verdict withholds any conclusion. Every arm is compared with the first (diff = first - other).
Outputs in ``out_dir``: ``comparison.json``, ``report.md`` (figures as PNG files next to it) and
``report.html`` (figures embedded). Rationale: docs/statistics.md.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..metrics import stats
from ..records import (
    bootstrap_difference,
    bootstrap_indices,
    jsonable,
    load_result,
    make_statistic,
    paired_entry_test,
    seed_test,
)

#: The paper's claims (hybrid vs MLM), tested per task: (claim, metric, pooling, expected sign).
HEADLINE = (
    ("more uniform", "geometry.uniformity", "mean", "lower"),
    ("richer spectrum under max pooling", "geometry.effective_rank", "max", "higher"),
    ("less lexical", "lexical.content_auc", "mean", "lower"),
    ("better balance", "balance.normalised", "mean", "higher"),
    ("equal probe score", "probe.glue", "mean", "equal"),
)
#: The headline probe / STS score read against the random-init floor for the verdict.
FLOOR_METRIC = ("probe.glue", "mean")
#: Equivalence margin of the "equal probe score" claim, on the GLUE metric's own scale.
EQUIV_MARGIN = 0.02
FIXED_NETWORKS = "two fixed networks: says nothing about objectives"
FLOOR_NAMES = {"majority": "maj", "length_only": "len", "random_init": "rand"}
FLOOR_LABELS = {"majority": "majority floor", "length_only": "length-only floor", "random_init": "random-init floor"}


def no_conclusion(floor: str = "random-init floor") -> str:
    """The verdict for encoders whose headline probe does not clear ``floor``."""
    return f"encoders at or below the {floor}: no conclusion about the objectives"


NO_CONCLUSION = no_conclusion()
_fmt, _ci = stats.fmt_number, stats.fmt_interval  # kept for callers of the old names


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
        try:
            res = load_result(f)
            key = (res["task"], res["pooling"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # truncated or foreign JSON
            raise ValueError(f"{f}: not a readable result file ({type(e).__name__}: {e}); "
                             "re-run evaluate for this task") from None
        run.results[key] = res
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


# --------------------------------------------------------------------------- paired tests (fixed networks)

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
    if spec["type"] == "geometry":
        ga, gb = ra.get("geometry_replicates") or {}, rb.get("geometry_replicates") or {}
        same = ga.get("seed") == gb.get("seed") and ga.get("n_boot") == gb.get("n_boot") and ga.get("n_boot")
        gseed, gboot = (ga["seed"], ga["n_boot"]) if same else (seed, n_boot_geometry)
        sa = _geometry_stat(run_a, ra, spec["name"], gboot, gseed, {})
        sb = _geometry_stat(run_b, rb, spec["name"], gboot, gseed, {})
        out.update(bootstrap_difference(sa, sb, n, gboot, gseed))
    else:
        t = paired_entry_test(spec, ra["per_example"], rb["per_example"], n, n_boot=n_boot, n_perm=n_perm, seed=seed)
        if t["test"].startswith("none"):
            return out
        out.update(t)
    return out


# --------------------------------------------------------------------------- seed test (objectives)

def _seeds(va: list[float], vb: list[float]) -> dict:
    """:func:`~predrecon.eval.records.seed_test` plus ``mde``, the difference detectable with
    80 % power in the metric's units (>= 2 seeds per arm)."""
    out = seed_test(va, vb)
    va, vb = out["values_a"], out["values_b"]
    if len(va) >= 2 and len(vb) >= 2:
        sa, sb = stats.t_interval(va), stats.t_interval(vb)
        pooled = math.sqrt(((len(va) - 1) * sa.std ** 2 + (len(vb) - 1) * sb.std ** 2) / (len(va) + len(vb) - 2))
        out["mde"] = _effect_80(len(va), len(vb)) * pooled
    return out


@functools.lru_cache(maxsize=64)
def _effect_80(n_a: int, n_b: int, alpha: float = 0.05) -> float:
    return stats.detectable_effect(n_a, n_b, alpha)


# --------------------------------------------------------------------------- families, duplicates, floors

def _same(x: np.ndarray, y: np.ndarray) -> bool:
    if x.shape != y.shape or not np.array_equal(np.isnan(x), np.isnan(y)) or not np.isfinite(x).any():
        return False
    ok = ~np.isnan(x)
    return bool(np.allclose(x[ok], y[ok], rtol=1e-12, atol=1e-15))


def _duplicates(results: list[dict], metrics: list[str]) -> dict[str, str]:
    """``{metric: earlier metric}`` for metrics equal to an earlier one in every run: values, and
    the stored per-example vectors or geometry replicates that their tests would resample."""
    def signature(m):
        parts = [np.array([r["metrics"][m]["value"] for r in results], dtype=np.float64)]
        for r in results:
            spec = r["metrics"][m].get("resample") or {}
            if spec.get("type") == "mean" and spec.get("key") in r["per_example"]:
                parts.append(np.asarray(r["per_example"][spec["key"]], dtype=np.float64))
            elif spec.get("type") == "geometry":
                vals = ((r.get("geometry_replicates") or {}).get("values") or {}).get(spec["name"])
                if vals is not None:
                    parts.append(np.array([math.nan if v is None else v for v in vals], dtype=np.float64))
        return parts
    sigs, out = {}, {}
    for m in metrics:
        s = signature(m)
        for k, sk in sigs.items():
            if len(s) == len(sk) and all(_same(x, y) for x, y in zip(s, sk)):
                out[m] = k
                break
        else:
            sigs[m] = s
    return out


def _floors(results: list[dict], metric: str) -> dict[str, float]:
    """Mean over runs of each floor of ``metric`` (contract key ``floors``); {} when absent."""
    acc: dict[str, list[float]] = {}
    for r in results:
        for k, v in ((r["metrics"].get(metric) or {}).get("floors") or {}).items():
            if v is not None and math.isfinite(float(v)):
                acc.setdefault(k, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _floor_text(floors: dict[str, float]) -> str:
    if not floors:
        return "not computed"
    return " / ".join(f"{FLOOR_NAMES.get(k, k)} {stats.fmt_number(v)}" for k, v in floors.items())


def _below(value: float, floor: float, better: str | None) -> bool:
    return value >= floor if better == "lower" else value <= floor


def _arm_estimate(entries: list[dict]) -> tuple[float, float, float]:
    """(value, low, high) of one arm: mean and t-interval over seeds, or the single run's own."""
    vals = [e["value"] for e in entries if math.isfinite(e["value"])]
    if len(vals) >= 2:
        t = stats.t_interval(vals)
        return t.mean, t.low, t.high
    e = next((e for e in entries if math.isfinite(e["value"])), entries[0])
    return e["value"], e["low"], e["high"]


def _verdict(runs: dict, tasks: list[str], fixed: bool = False) -> dict:
    """Per task: are all arms' headline probe scores at or below the highest of their floors
    (majority, length-only, random-init; the value or its 95 % interval reaching it)?"""
    metric, pooling = FLOOR_METRIC
    per_task, lines = {}, []
    for task in tasks:
        res = [r.results.get((task, pooling)) for rs in runs.values() for r in rs]
        if any(x is None or metric not in x["metrics"] for x in res):
            per_task[task] = "not computed"
            lines.append(f"{task}: {metric} ({pooling}) not computed: floors not computed, no floor check.")
            continue
        floors = _floors(res, metric)
        if "random_init" not in floors:
            per_task[task] = "floors not computed"
            lines.append(f"{task}: floors not computed (older results): scores cannot be read against a "
                         "random-init floor.")
            continue
        better = res[0]["metrics"][metric].get("better") or "higher"
        # the strictest floor binds: a probe under the majority or length-only score has learned
        # nothing usable even when it beats the random-init encoder (e.g. MRPC F1 vs always-positive)
        fl_key = (min if better == "lower" else max)(floors, key=floors.get)
        fl, fl_label = floors[fl_key], FLOOR_LABELS.get(fl_key, fl_key)
        est = {a: _arm_estimate([r.results[(task, pooling)]["metrics"][metric] for r in rs]) for a, rs in runs.items()}
        means = {a: v[0] for a, v in est.items()}
        # at or below: the value, or the end of its 95 % interval towards the floor, reaches it
        below = [a for a, (v, lo, hi) in est.items()
                 if _below(v, fl, better) or _below(hi if better == "lower" else lo, fl, better)]
        vals = ", ".join(f"{a} {stats.fmt_interval(*v)}" for a, v in est.items())
        others = "; floors: " + _floor_text(floors)
        if len(below) == len(means):
            per_task[task] = "below floor"
            lines.append(f"{task}: {no_conclusion(fl_label)} ({metric}: {vals}; {fl_label} {stats.fmt_number(fl)}"
                         f"{others}; at or below = the value or its 95 % interval reaches the highest floor).")
        else:
            per_task[task] = "above floor"
            note = f"; at or below it (value or interval): {', '.join(below)}" if below else ""
            lines.append(f"{task}: above the {fl_label} ({metric}: {vals}; {fl_label} {stats.fmt_number(fl)}"
                         f"{others}{note}).")
    states = set(per_task.values())
    if states == {"below floor"}:
        overall = no_conclusion("floors") + "."
    elif "above floor" not in states:
        overall = "floors not computed: differences below are not read against a random-init floor."
    else:
        overall = ("headline rows of tasks above their floors are read as findings (in their family)"
                   + (f" about these networks only ({FIXED_NETWORKS})." if fixed else " about the objectives."))
    return {"per_task": per_task, "lines": lines, "overall": overall}


def _adjust(rows: list[dict], alpha: float) -> None:
    """Holm over the headline family, Benjamini-Hochberg over the whole table; ``significant``
    = adjusted p < alpha in the row's own family."""
    for r in rows:
        r["p_holm"], r["q_bh"] = math.nan, math.nan
    head = [r for r in rows if r["family"] == "headline" and math.isfinite(r["p"])]
    for r, pa in zip(head, stats.holm([r["p"] for r in head])):
        r["p_holm"] = float(pa)
    tested = [r for r in rows if math.isfinite(r["p"])]
    for r, q in zip(tested, stats.benjamini_hochberg([r["p"] for r in tested])):
        r["q_bh"] = float(q)
    for r in rows:
        pa = r["p_holm"] if r["family"] == "headline" else r["q_bh"]
        r["p_adj"] = pa
        r["significant"] = bool(math.isfinite(pa) and pa < alpha)
        r["stars"] = stats.significance_label(pa, alpha)


def _design(runs: dict, rows: list[dict], mode: str, alpha: float, n_null: int, seed: int) -> dict:
    """What the tests can say: seed mode -> power and the null false-positive rate of the seed
    test per compared arm; paired mode -> the fixed-network label and the p floors."""
    head = [r for r in rows if r["family"] == "headline" and math.isfinite(r["p"])]
    m = max(len(head), 1)
    if mode == "paired":
        stuck = sorted({f"{r['task']} {r['metric']} ({r['test']}, p >= {stats.fmt_number(r['p_floor'])})"
                        for r in head if r.get("p_floor", 0) >= alpha / m})
        return {"kind": "fixed networks", "label": FIXED_NETWORKS, "holm_first_threshold": alpha / m,
                "unresolvable": stuck}
    ref, out = rows[0]["a"] if rows else next(iter(runs)), {"kind": "seeds", "per_arm": {}}
    for other in [a for a in runs if a != ref]:
        hr = [r for r in head if r["b"] == other]
        cols = [(r["task"], r["pooling"], r["metric"]) for r in hr]
        va = [[ru.results[(t, p)]["metrics"][mt]["value"] for t, p, mt in cols] for ru in runs[ref]]
        vb = [[ru.results[(t, p)]["metrics"][mt]["value"] for t, p, mt in cols] for ru in runs[other]]
        na, nb = len(runs[ref]), len(runs[other])
        null = stats.seed_null_fpr(np.array(va).reshape(na, -1), np.array(vb).reshape(nb, -1), alpha,
                                   n_sim=n_null, seed=seed) if cols else None
        out["per_arm"][other] = {
            "n_a": na, "n_b": nb, "alpha": alpha, "m": m,
            "effect_80": _effect_80(na, nb, alpha),
            "effect_80_holm": stats.detectable_effect(na, nb, alpha / m),
            "effect_80_student": stats.detectable_effect(na, nb, alpha, method="student") if na > 1 < nb else math.nan,
            "synthetic_null_fpr": stats.welch_power(0.0, na, nb, alpha) if na > 1 < nb else math.nan,
            "null": None if null is None else {"per_test": null.per_test, "familywise": null.familywise,
                                               "n_sim": null.n_sim, "n_metrics": null.n_metrics,
                                               "exact": null.exact, "method": null.method}}
    return out


def _equivalence(rows: list[dict], reps: dict, mode: str, alpha: float) -> list[dict]:
    """TOST of ``|diff| < EQUIV_MARGIN`` for the 'equal probe score' rows, Holm over them."""
    out = []
    for r in rows:
        if r["family"] != "headline" or r["metric"] != FLOOR_METRIC[0] or not math.isfinite(r["p"]):
            continue
        if mode == "seeds":
            p = stats.welch_tost(r["values_a"], r["values_b"], EQUIV_MARGIN)
            t90 = stats.welch_test(r["values_a"], r["values_b"], ci=0.90)
            lo, hi = t90.low, t90.high
        else:
            rep = reps.get(id(r))
            p = stats.bootstrap_tost(rep, EQUIV_MARGIN) if rep is not None else math.nan
            lo, hi = np.nanquantile(rep, [0.05, 0.95]) if rep is not None else (math.nan, math.nan)
        out.append({"task": r["task"], "a": r["a"], "b": r["b"], "diff": r["diff"], "low90": float(lo),
                    "high90": float(hi), "margin": EQUIV_MARGIN, "p_tost": p})
    ok = [e for e in out if math.isfinite(e["p_tost"])]
    for e, pa in zip(ok, stats.holm([e["p_tost"] for e in ok])):
        e["p_tost_holm"] = float(pa)
    for e in out:
        e.setdefault("p_tost_holm", math.nan)
        e["equivalent"] = bool(math.isfinite(e["p_tost_holm"]) and e["p_tost_holm"] < alpha)
    return out


# --------------------------------------------------------------------------- entry point

def compare(eval_dirs_or_groups: Sequence[str | Path] | Mapping[str, str | Path | Sequence[str | Path]],
            out_dir: str | Path, *, labels: Sequence[str] | None = None, n_boot: int = 1000,
            n_boot_geometry: int = 100, n_perm: int = 10_000, seed: int = 0, alpha: float = 0.05,
            n_null: int = 2000) -> dict:
    """Compare two or more evaluated encoders and write ``comparison.json``, ``report.md`` and
    ``report.html`` to ``out_dir``.

    ``eval_dirs_or_groups``: a list of eval dirs (one arm each, names from ``labels`` or the
    folder names) or a mapping ``arm -> dir | [dirs]`` (several dirs = seeds of one arm). The
    first arm is the reference: ``diff = first - other``. ``n_null``: null designs for the
    false-positive rate of the seed test. Returns the comparison dict (rows carry ``family``
    'headline' with ``p_holm``, and ``q_bh`` over the whole table).
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
    head_keys = {(m, p) for _, m, p, _ in HEADLINE}
    if mode == "paired":  # permutation p-values must be able to pass Holm over the headline family
        m = sum((met, k[1]) in head_keys for k in keys for met in runs[ref][0].results[k]["metrics"])
        n_perm = max(n_perm, math.ceil(2 * max(m, 1) * (len(names) - 1) / alpha))
    rows, reps = [], {}
    for other in names[1:]:
        for task, pooling in sorted(keys):
            ra_all = [r.results[(task, pooling)] for r in runs[ref]]
            rb_all = [r.results[(task, pooling)] for r in runs[other]]
            metrics = [m for m in ra_all[0]["metrics"] if all(m in r["metrics"] for r in ra_all + rb_all)]
            metrics.sort(key=lambda m: (m, pooling) not in head_keys)  # a headline metric is kept over its twin
            dups = _duplicates(ra_all + rb_all, metrics)
            for metric in metrics:
                entry = ra_all[0]["metrics"][metric]
                if metric in dups:
                    row = _seeds([r["metrics"][metric]["value"] for r in ra_all],
                                 [r["metrics"][metric]["value"] for r in rb_all])
                    if mode == "paired":
                        eb = rb_all[0]["metrics"][metric]
                        row.update(low_a=entry["low"], high_a=entry["high"], low_b=eb["low"], high_b=eb["high"])
                    row.update(p=math.nan, diff_low=math.nan, diff_high=math.nan,
                               test=f"none (duplicate of {dups[metric]})")
                elif mode == "paired":
                    row = _paired(runs[ref][0], ra_all[0], runs[other][0], rb_all[0], metric, n_boot=n_boot,
                                  n_boot_geometry=n_boot_geometry, n_perm=n_perm, seed=seed)
                else:
                    row = _seeds([r["metrics"][metric]["value"] for r in ra_all],
                                 [r["metrics"][metric]["value"] for r in rb_all])
                r = {"a": ref, "b": other, "task": task, "pooling": pooling, "metric": metric,
                     "label": entry.get("label") or metric, "better": entry.get("better"),
                     "faithful_replica": bool(entry.get("faithful_replica")),
                     "floors": _floors(ra_all + rb_all, metric),
                     "family": "headline" if (metric, pooling) in head_keys else "exploratory",
                     "status_a": ra_all[0]["pooling_status"], "status_b": rb_all[0]["pooling_status"], **row}
                reps[id(r)] = r.pop("replicates", None)
                rows.append(r)
    _adjust(rows, alpha)
    verdict = _verdict(runs, sorted({k[0] for k in keys}), fixed=mode == "paired")
    design = _design(runs, rows, mode, alpha, n_null, seed)
    equivalence = _equivalence(rows, reps, mode, alpha)
    task_notes = {}
    for rs in runs.values():
        for r in rs:
            for (task, pooling), res in r.results.items():
                if (task, pooling) in keys:
                    task_notes.setdefault(task, [])
                    task_notes[task] += [nt for nt in res["notes"] if nt not in task_notes[task]]
    for r in rows:
        r.pop("values_a", None), r.pop("values_b", None)
    comparison = {
        "mode": mode, "reference": ref, "alpha": alpha, "n_perm": n_perm,
        "n_tests": sum(math.isfinite(r["p"]) for r in rows),
        "n_headline_tests": sum(r["family"] == "headline" and math.isfinite(r["p"]) for r in rows),
        "arms": {a: {"dirs": [str(r.path) for r in rs],
                     "encoders": sorted({res["meta"]["encoder"] for r in rs for res in r.results.values()}),
                     "faithful": sorted({res["meta"]["faithful"] for r in rs for res in r.results.values()})}
                 for a, rs in runs.items()},
        "tasks": sorted({k[0] for k in keys}), "poolings": sorted({k[1] for k in keys}),
        "design": design, "verdict": verdict, "equivalence": equivalence,
        "notes": notes, "task_notes": task_notes, "rows": rows,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .plots import make_figures

    figures = make_figures(runs, comparison, out / "figures")
    extras = None
    from ..suites.registry import SUITES  # the exploratory suites' records, read with the same tests

    others = [s.records for s in SUITES.values() if s.family == "exploratory"]
    if any(any(p.glob(g)) for dirs in arms.values() for p in dirs for g in others):
        from .extras_report import compare_extras

        extras = compare_extras(arms, n_boot=n_boot, n_perm=n_perm, seed=seed, alpha=alpha)
        comparison["extras"] = {k: v for k, v in extras.items() if k != "figures"}
    (out / "comparison.json").write_text(json.dumps(jsonable(comparison), indent=1))
    blocks = _blocks(comparison, figures, extras)
    (out / "report.md").write_text(_markdown(blocks))
    (out / "report.html").write_text(_html(blocks))
    return comparison


# --------------------------------------------------------------------------- rendering (Markdown and HTML)

def _metric_cell(r: dict) -> str:
    s = r["metric"] + (f" ({r['label']})" if r["label"] != r["metric"] else "")
    return s + (" [faithful replica]" if r["faithful_replica"] else "")


def _result(r: dict, comp: dict, adj_key: str) -> str:
    pa = r[adj_key]
    if not math.isfinite(pa):
        return "n/a"
    below = comp["verdict"]["per_task"].get(r["task"]) == "below floor"
    if r["family"] == "headline" and adj_key == "p_holm" and below:
        return "no conclusion (at/below random-init floor)"
    if pa < comp["alpha"]:
        tail = (" (FDR)" if adj_key == "q_bh" else "") + (" (fixed networks)" if comp["mode"] == "paired" else "")
        order = ">" if r["diff"] > 0 else "<"
        return f"significant {stats.significance_label(pa, comp['alpha'])}{tail}: {r['a']} {order} {r['b']}"
    return f"n.s. (80 % power needs |diff| ≥ {stats.fmt_number(r['mde'])})" if "mde" in r else "n.s."


def _row_cells(r: dict, comp: dict, adj_key: str) -> list[str]:
    f = stats.fmt_number
    return [stats.fmt_interval(r["value_a"], r["low_a"], r["high_a"]),
            f"{r['b']}: " + stats.fmt_interval(r["value_b"], r["low_b"], r["high_b"]), _floor_text(r["floors"]),
            stats.fmt_interval(r["diff"], r["diff_low"], r["diff_high"]), r["test"], f(r["p"], 4), f(r[adj_key], 4),
            _result(r, comp, adj_key)]


def _headline_table(comp: dict) -> tuple[list[str], list[list[str]], list[bool]]:
    idx = {(r["b"], r["task"], r["metric"], r["pooling"]): r for r in comp["rows"]}
    head = ["task", "claim (hybrid vs MLM)", "metric (pooling)", comp["reference"], "other",
            "floors (maj / len / rand)", "diff [95% CI]", "test", "p", "p (Holm)", "result"]
    body, sig = [], []
    for other in [a for a in comp["arms"] if a != comp["reference"]]:
        for task in comp["tasks"]:
            for claim, metric, pooling, sign in HEADLINE:
                r = idx.get((other, task, metric, pooling))
                lead = [task, f"{claim} ({sign})", f"{metric} ({pooling})"]
                if r is None:
                    body.append(lead + ["not computed", other] + ["–"] * 6)
                    sig.append(False)
                    continue
                body.append(lead + _row_cells(r, comp, "p_holm"))
                sig.append(r["significant"] and comp["verdict"]["per_task"].get(task) != "below floor")
    return head, body, sig


def _design_lines(comp: dict) -> list[str]:
    d, f = comp["design"], stats.fmt_number
    if d["kind"] == "fixed networks":
        out = [f"One run per arm: {FIXED_NETWORKS}. Tests are paired over the examples of one evaluation of "
               "each network; a difference here may be a seed's, not an objective's. Null false-positive rate: "
               "not applicable (no seed replication); the paired tests' calibration on a synthetic null is "
               "tested in tests/test_calibration.py."]
        if d["unresolvable"]:
            out.append(f"These headline tests cannot reach the first Holm threshold {f(d['holm_first_threshold'], 4)} "
                       "at their resampling size (raise n_boot / n_boot_geometry): " + "; ".join(d["unresolvable"]))
        return out
    out = []
    for other, x in d["per_arm"].items():
        null = x["null"]
        nl = ("no headline metric to simulate" if null is None or not null["n_metrics"] else
              f"per test {f(null['per_test'])}, family-wise (Holm over {null['n_metrics']} headline metrics) "
              f"{f(null['familywise'])}, from {null['n_sim']} {'(all) ' if null['exact'] else ''}null designs of "
              f"{null['method']}")
        out.append(f"**Null false-positive rate** ({comp['reference']} vs {other}, {x['n_a']} vs {x['n_b']} seeds, "
                   f"α = {x['alpha']}): {nl}; synthetic normal null at this design: {f(x['synthetic_null_fpr'])}.")
        out.append(f"**Power**: with {x['n_a']} vs {x['n_b']} seeds Welch's test detects a difference of "
                   f"{f(x['effect_80'], 2)} seed-SDs with 80 % power at α = {x['alpha']} (Student closed form: "
                   f"{f(x['effect_80_student'], 2)}), and {f(x['effect_80_holm'], 2)} seed-SDs at the first Holm "
                   f"threshold α/{x['m']}. Smaller effects are not ruled out by an n.s. row.")
    return out


def _method_notes(comp: dict) -> list[str]:
    a = comp["alpha"]
    notes = [f"Differences are {comp['reference']} minus the other arm. Headline family: the paper's claims "
             f"({'; '.join(f'{c}: {m} @ {p}' for c, m, p, _ in HEADLINE)}), one test per task and compared arm, "
             f"Holm-corrected over {comp['n_headline_tests']} tests (p (Holm) < {a}). All results: exploratory, "
             f"Benjamini-Hochberg FDR over all {comp['n_tests']} tests (q (BH) < {a}). Exact duplicate metrics "
             "(equal values and resampled data in every run) are not tested.",
             "'Equal probe score' is tested two-sided (in the family) and for equivalence (TOST, margin "
             f"±{EQUIV_MARGIN} on the task's GLUE metric, Holm over tasks).",
             "No p-value is 0: resampling p-values are (1 + #extreme) / (B + 1), never below 1 / (B + 1); "
             f"parametric ones are floored at {stats.P_MIN_PARAMETRIC:g}.",
             "Floors (contract key 'floors'): maj = majority class, len = length-only probe, rand = same-shape "
             "random-init encoder; 'not computed' for older results."]
    if comp["mode"] == "paired":
        notes.append(f"Paired design ({FIXED_NETWORKS}): per-example scores -> sign-flip permutation test "
                     f"({comp['n_perm']} sign vectors); other metrics -> paired bootstrap over examples with the "
                     "empirical p; geometry from the runner's stored replicates (bias-corrected percentiles, "
                     "approximate: duplicated rows bias pairwise and rank metrics).")
    else:
        notes.append("Across seeds (claims about objectives): arm means with Student-t 95 % intervals; Welch's "
                     "t-test of the difference with its 95 % interval (exact permutation p when no arm varies).")
    notes.append("Bag-of-words probe scores have no interval (the probe returns aggregates only).")
    return notes


def _equivalence_table(comp: dict) -> tuple[list[str], list[list[str]], list[bool]]:
    f = stats.fmt_number
    head = ["task", "compared", "diff [90% CI]", "margin", "p (TOST)", "p (Holm)", "result"]
    body = [[e["task"], f"{e['a']} - {e['b']}", stats.fmt_interval(e["diff"], e["low90"], e["high90"]),
             f"±{e['margin']}", f(e["p_tost"], 4), f(e["p_tost_holm"], 4),
             f"equivalent within ±{e['margin']}" if e["equivalent"] else "not shown equivalent"]
            for e in comp["equivalence"]]
    return head, body, [e["equivalent"] for e in comp["equivalence"]]


def _blocks(comp: dict, figures: dict[str, Path], extras: dict | None) -> list[tuple]:
    ref = comp["reference"]
    full_head = ["task", "pooling", "metric", ref, "other", "floors (maj / len / rand)", "diff [95% CI]", "test",
                 "p", "q (BH)", "result"]
    full = [([r["task"], f"{r['pooling']} ({r['status_a']})", _metric_cell(r)] + _row_cells(r, comp, "q_bh"),
             math.isfinite(r["q_bh"]) and r["q_bh"] < comp["alpha"]) for r in comp["rows"]]
    fixed = comp["mode"] == "paired"
    b: list[tuple] = [("h", 1, "Encoder comparison"), ("h", 2, "Inputs"), ("ul", [
        f"**{a}**: {', '.join(i['encoders'])} (faithful={i['faithful']}); dirs: "
        + ", ".join(f"`{d}`" for d in i["dirs"])
        for a, i in comp["arms"].items()]),
        ("p", f"Mode: {comp['mode']} ({FIXED_NETWORKS if fixed else 'claims about objectives rest on seeds'}); "
              f"reference arm: {ref}; tasks: {', '.join(comp['tasks'])}; poolings: {', '.join(comp['poolings'])}."),
        ("h", 2, "Verdict"), ("p", comp["verdict"]["overall"]), ("ul", comp["verdict"]["lines"]),
        ("h", 2, "Headline (pre-registered family, Holm)" + (f" — {FIXED_NETWORKS}" if fixed else "")),
        ("table", *_headline_table(comp)), ("ul", _design_lines(comp))]
    if comp["equivalence"]:
        b += [("h", 3, "Equal probe score: equivalence (TOST)"), ("table", *_equivalence_table(comp))]
    b += [("h", 2, "Method"), ("ul", _method_notes(comp) + comp["notes"]), ("h", 2, "Task notes"),
          ("ul", [f"**{t}**: " + " ".join(ns) for t, ns in comp["task_notes"].items()]),
          ("h", 2, "All results (exploratory: Benjamini-Hochberg FDR" + (f"; {FIXED_NETWORKS})" if fixed else ")")),
          ("table", full_head, [c for c, _ in full], [s for _, s in full]), ("h", 2, "Figures"), ("figs", figures)]
    if extras is not None:
        b.append(("extras", extras))
    return b


def _markdown(blocks: list[tuple]) -> str:
    L: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            L += ["#" * blk[1] + " " + blk[2], ""]
        elif kind == "p":
            L += [blk[1], ""]
        elif kind == "ul":
            L += [f"- {x}" for x in blk[1]] + [""]
        elif kind == "table":
            head, body = blk[1], blk[2]
            L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            L += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body] + [""]
        elif kind == "figs":
            for name, fp in blk[1].items():
                L += [f"### {name}", "", f"![{name}](figures/{fp.name})", ""]
        elif kind == "extras":
            from .extras_report import extras_markdown

            L += [extras_markdown(blk[1], figures=True), ""]
    return "\n".join(L) + "\n"


def _html(blocks: list[tuple]) -> str:
    e = html.escape

    def inline(s: str) -> str:  # **bold** and `code` of the Markdown text
        parts = e(s).split("**")
        s = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
        parts = s.split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Encoder comparison</title><style>",
           "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
           "tr.sig{background:#e6f4e6}img{max-width:100%}</style></head><body>"]
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append(f"<h{blk[1]}>{e(blk[2])}</h{blk[1]}>")
        elif kind == "p":
            out.append(f"<p>{inline(blk[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{inline(x)}</li>" for x in blk[1]) + "</ul>")
        elif kind == "table":
            head, body, sig = blk[1], blk[2], blk[3]
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
            for row, s in zip(body, sig):
                cls = ' class="sig"' if s else ""
                out.append(f"<tr{cls}>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
            out.append("</tbody></table>")
        elif kind == "figs":
            for name, fp in blk[1].items():
                b64 = base64.b64encode(fp.read_bytes()).decode("ascii")
                out.append(f"<h3>{e(name)}</h3><img alt='{e(name)}' src='data:image/png;base64,{b64}'>")
        elif kind == "extras":
            from .extras_report import extras_html

            out.append(extras_html(blk[1]))
    out.append("</body></html>")
    return "\n".join(out)
