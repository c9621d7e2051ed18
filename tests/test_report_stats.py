"""The statistics of ``compare``: the bootstrap difference test that replaced the normal
approximation, families (Holm headline, BH exploratory), duplicates, floors and the verdict,
the seed test with its power and null false-positive rate. Eval dirs are written by hand here
(the record contract of docs/statistics.md), so no encoder is needed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from predrecon.eval.metrics import stats
from predrecon.eval.report.report import (
    EQUIV_MARGIN,
    FIXED_NETWORKS,
    HEADLINE,
    NO_CONCLUSION,
    bootstrap_difference,
    compare,
)

N = 40


# --------------------------------------------------------------------------- bootstrap_difference


def test_bootstrap_difference_known_difference_rejects_at_the_floor():
    rng = np.random.default_rng(0)
    a = rng.normal(size=N)
    b = a - 1.0 + 0.1 * rng.normal(size=N)  # a exceeds b by ~1 on every example
    r = bootstrap_difference(lambda i: a[i].mean(), lambda i: b[i].mean(), N, n_boot=99, seed=0)
    assert r["diff"] == pytest.approx(a.mean() - b.mean())
    assert r["p"] == pytest.approx(1 / 100) and r["p_floor"] == pytest.approx(1 / 100)  # none as extreme
    assert 0 < r["diff_low"] < r["diff"] < r["diff_high"] and r["n_resamples"] == 99


def test_bootstrap_difference_identical_inputs_p_one():
    x = np.random.default_rng(1).normal(size=N)
    r = bootstrap_difference(lambda i: x[i].mean(), lambda i: x[i].mean(), N, n_boot=50, seed=3)
    assert r["diff"] == 0 and r["p"] == 1.0


def test_bootstrap_difference_zero_se_is_floored_not_zero():
    # a constant shift: every replicate difference equals the observed one (SE = 0); the old
    # normal approximation returned p = 0 here
    x = np.random.default_rng(2).normal(size=N)
    r = bootstrap_difference(lambda i: x[i].mean() + 0.5, lambda i: x[i].mean(), N, n_boot=30, seed=0)
    assert r["p"] == pytest.approx(1 / 31) and r["p"] > 0


def test_bootstrap_difference_never_below_its_floor_and_drops_undefined_replicates():
    rng = np.random.default_rng(3)
    for k in range(20):
        a, b = rng.normal(size=N), rng.normal(loc=rng.normal(), size=N)
        r = bootstrap_difference(lambda i, a=a: a[i].mean(), lambda i, b=b: b[i].mean(), N, n_boot=40, seed=k)
        assert 1 / 41 - 1e-12 <= r["p"] <= 1.0
    # a statistic undefined on some resamples (NaN): those replicates are not counted
    r = bootstrap_difference(lambda i: math.nan if 0 not in i else a[i].mean(), lambda i: b[i].mean(), N,
                             n_boot=200, seed=0)
    assert 0 < r["n_resamples"] < 200 and r["p"] >= 1 / (r["n_resamples"] + 1)


# --------------------------------------------------------------------------- hand-written eval dirs


def _entry(value, *, floors=None, better=None, faithful=False, spec=None):
    e = {"value": float(value), "low": float(value) - 0.01, "high": float(value) + 0.01, "n": N,
         "method": "bootstrap-percentile", "resample": spec}
    if floors is not None:
        e["floors"] = floors
    if better is not None:
        e["better"] = better
    if faithful:
        e["faithful_replica"] = True
    return e


def _write_eval(d, values: dict, *, correct=None, floors=True, encoder="enc", geometry_reps=None):
    """One eval dir with tasks 'sst2' (mean, max): ``values[(pooling, metric)] -> value``."""
    rng = np.random.default_rng(abs(hash(str(d))) % 2 ** 32)
    for pooling in ("mean", "max"):
        metrics, pe = {}, {}
        for (p, m), v in values.items():
            if p != pooling:
                continue
            default = {"majority": 0.5, "length_only": 0.55, "random_init": 0.6}
            fl = (floors if isinstance(floors, dict) else default) if (floors and m == "probe.glue") else None
            spec = None
            if m == "probe.glue" and correct is not None:
                spec = {"type": "mean", "key": "probe_correct"}
                pe["probe_correct"] = correct
            metrics[m] = _entry(v, floors=fl, better="higher" if m == "probe.glue" else None,
                                faithful=m == "linear_probe.paper", spec=spec)
        res = {"version": 1, "task": "sst2", "kind": "single", "pooling": pooling, "pooling_status": "parameter-free",
               "n_report": N, "n_train": 100, "metrics": metrics, "details": {}, "notes": [],
               "spectrum": [3.0, 2.0, 1.0],
               "geometry_replicates": geometry_reps or {},
               "per_example": {k: np.asarray(v).tolist() for k, v in pe.items()},
               "meta": {"encoder": encoder, "faithful": False, "seed": 0, "examples_sha1": "x"}}
        (d / "sst2").mkdir(parents=True, exist_ok=True)
        (d / "sst2" / f"{pooling}.json").write_text(json.dumps(res))
        np.save(d / "sst2" / f"{pooling}.npy", rng.normal(size=(N, 4)).astype(np.float32))
    return d


def _values(unif, erank, probe, lex=0.7, bal=0.3, paper=0.5):
    return {("mean", "geometry.uniformity"): unif, ("max", "geometry.effective_rank"): erank,
            ("mean", "geometry.rankme"): erank, ("max", "geometry.rankme"): erank,  # exact duplicate at max
            ("mean", "lexical.content_auc"): lex, ("mean", "balance.normalised"): bal, ("mean", "probe.glue"): probe,
            ("mean", "linear_probe.paper"): paper}


@pytest.fixture(scope="module")
def seed_arms(tmp_path_factory):
    """5 vs 5 seeds: uniformity differs by ~10 seed-SDs, everything else is seed noise."""
    tmp = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(7)
    arms = {}
    for arm, shift in (("hybrid", -0.5), ("mlm", 0.0)):
        arms[arm] = [_write_eval(tmp / f"{arm}{s}", _values(-2 + shift + 0.05 * rng.normal(), 10 + rng.normal(),
                                                            0.8 + 0.01 * rng.normal(), 0.7 + 0.01 * rng.normal()),
                                 encoder=f"{arm}{s}") for s in range(5)]
    return arms


def test_seed_mode_welch_headline_holm_and_bh(seed_arms, tmp_path):
    comp = compare(seed_arms, tmp_path / "cmp", n_null=300)
    assert comp["mode"] == "seeds"
    rows = {(r["pooling"], r["metric"]): r for r in comp["rows"]}
    u = rows[("mean", "geometry.uniformity")]
    va = [json.loads((d / "sst2" / "mean.json").read_text())["metrics"]["geometry.uniformity"]["value"]
          for d in seed_arms["hybrid"]]
    vb = [json.loads((d / "sst2" / "mean.json").read_text())["metrics"]["geometry.uniformity"]["value"]
          for d in seed_arms["mlm"]]
    ref = sps.ttest_ind(va, vb, equal_var=False)
    assert u["test"] == "welch_t" and u["p"] == pytest.approx(ref.pvalue) and u["family"] == "headline"
    assert u["significant"] and u["p_holm"] < 0.05
    head = [r for r in comp["rows"] if r["family"] == "headline"]
    assert {(r["metric"], r["pooling"]) for r in head} == {(m, p) for _, m, p, _ in HEADLINE}
    np.testing.assert_allclose([r["p_holm"] for r in head], stats.holm([r["p"] for r in head]))
    tested = [r for r in comp["rows"] if math.isfinite(r["p"])]
    np.testing.assert_allclose([r["q_bh"] for r in tested], sps.false_discovery_control([r["p"] for r in tested]))
    # the exact duplicate is not tested, the headline metric it duplicates is
    assert rows[("max", "geometry.rankme")]["test"] == "none (duplicate of geometry.effective_rank)"
    assert math.isnan(rows[("max", "geometry.rankme")]["p"]) and math.isfinite(rows[("mean", "geometry.rankme")]["p"])
    assert all(r["p"] > 0 for r in tested)


def test_seed_mode_report_prints_power_null_rate_floors_and_verdict(seed_arms, tmp_path):
    comp = compare(seed_arms, tmp_path / "cmp", n_null=300)
    x = comp["design"]["per_arm"]["mlm"]
    assert (x["n_a"], x["n_b"]) == (5, 5)
    assert x["effect_80"] == pytest.approx(stats.detectable_effect(5, 5, 0.05))
    assert x["null"]["exact"] and x["null"]["n_sim"] == math.comb(10, 5)
    assert x["null"]["n_metrics"] == 4  # balance.normalised has no seed variance: left out
    assert 0 <= x["null"]["per_test"] <= 1
    md = (tmp_path / "cmp" / "report.md").read_text()
    head_sec = md.split("## Headline", 1)[1].split("## Method", 1)[0]
    assert "**Null false-positive rate**" in head_sec and "**Power**" in head_sec
    assert f"{x['effect_80']:.2f} seed-SDs" in head_sec
    assert "maj 0.500 / len 0.550 / rand 0.600" in head_sec  # floors beside the probe score
    assert "above the random-init floor" in md.split("## Verdict", 1)[1]
    assert "linear_probe.paper [faithful replica]" in md
    assert "Equal probe score: equivalence (TOST)" in md and f"±{EQUIV_MARGIN}" in md
    assert "<table>" in (tmp_path / "cmp" / "report.html").read_text()


def test_verdict_below_random_init_floor_withholds_conclusions(tmp_path):
    rng = np.random.default_rng(0)
    arms = {a: [_write_eval(tmp_path / f"{a}{s}", _values(-2 + sh + 0.01 * rng.normal(), 10 + rng.normal(),
                                                          0.55 + 0.01 * rng.normal()), encoder=f"{a}{s}")
                for s in range(3)] for a, sh in (("hybrid", -1.0), ("mlm", 0.0))}
    comp = compare(arms, tmp_path / "cmp", n_null=100)
    assert comp["verdict"]["per_task"] == {"sst2": "below floor"}
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert NO_CONCLUSION in md.split("## Verdict", 1)[1].split("## Headline", 1)[0]
    u = next(r for r in comp["rows"] if r["metric"] == "geometry.uniformity")
    assert u["significant"]  # the test itself rejects (a 100-SD shift) ...
    line = next(ln for ln in md.splitlines() if ln.startswith("| sst2 | more uniform"))
    assert "no conclusion" in line and "significant" not in line  # ... but it is not presented as a finding


def test_floors_absent_say_not_computed(tmp_path):
    a = _write_eval(tmp_path / "a", _values(-2.0, 10.0, 0.8), floors=False, encoder="a")
    b = _write_eval(tmp_path / "b", _values(-2.1, 11.0, 0.7), floors=False, encoder="b")
    comp = compare([a, b], tmp_path / "cmp")
    assert comp["verdict"]["per_task"] == {"sst2": "floors not computed"}
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "floors not computed" in md.split("## Verdict", 1)[1]


def test_paired_mode_is_labelled_fixed_networks_and_has_no_zero_p(tmp_path):
    rng = np.random.default_rng(5)
    ca, cb = (rng.random(N) < 0.9).astype(float), (rng.random(N) < 0.5).astype(float)
    a = _write_eval(tmp_path / "a", _values(-2.0, 10.0, ca.mean()), correct=ca, encoder="a")
    b = _write_eval(tmp_path / "b", _values(-2.1, 11.0, cb.mean()), correct=cb, encoder="b")
    comp = compare([a, b], tmp_path / "cmp", labels=["x", "y"], n_boot=200)
    assert comp["mode"] == "paired" and comp["design"]["kind"] == "fixed networks"
    probe = next(r for r in comp["rows"] if r["metric"] == "probe.glue")
    assert probe["test"].startswith("sign_flip") and 0 < probe["p"] < 0.01
    assert probe["p"] >= probe["p_floor"] - 1e-15
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert md.count(FIXED_NETWORKS) >= 3  # mode line, headline heading, all-results heading
    assert all(r["p"] > 0 for r in comp["rows"] if math.isfinite(r["p"]))
    eq = comp["equivalence"][0]
    assert eq["task"] == "sst2" and not eq["equivalent"]  # a 0.4 difference is not within ±0.02


def test_verdict_counts_an_interval_reaching_the_floor_as_at_the_floor(tmp_path):
    """Means just above the random-init floor (0.6) whose t-intervals reach it: no conclusion;
    the same means with tight seeds are above the floor."""
    out = {}
    for name, sd in (("wide", 0.05), ("tight", 0.001)):
        rng = np.random.default_rng(1)
        arms = {a: [_write_eval(tmp_path / name / f"{a}{s}", _values(-2 + 0.1 * rng.normal(), 10 + rng.normal(),
                                                                     0.62 + sd * (s - 2)), encoder=f"{a}{s}")
                    for s in range(5)] for a in ("hybrid", "mlm")}
        out[name] = compare(arms, tmp_path / name / "cmp", n_null=50)["verdict"]["per_task"]["sst2"]
    assert out == {"wide": "below floor", "tight": "above floor"}


def test_compare_renders_extras_with_the_same_rules(tmp_path):
    """An eval dir with an extras record: compare renders the section (Markdown and HTML), the
    extras' Spearman test has an empirical p (never 0) and no import cycle is needed."""
    from predrecon.eval.suites.extras import extra_record, metric_entry, save_record

    rng = np.random.default_rng(9)
    y = np.arange(N, dtype=float)
    dirs = []
    for name, noise in (("a", 1.0), ("b", 30.0)):
        d = _write_eval(tmp_path / name, _values(-2.0, 10.0, 0.8), encoder=name)
        cos = y + rng.normal(scale=noise, size=N)
        rho = float(sps.spearmanr(cos, y).statistic)
        rec = extra_record("similarity", name, 4, 0, {}, {
            "spearman.s": metric_entry(rho, rho - 0.1, rho + 0.1, N, label="Spearman, s", coords={"set": "s"},
                                       resample={"type": "spearman", "pred": "cos.s", "target": "score.s"},
                                       examples="ex")}, {"cos.s": cos, "score.s": y})
        save_record(rec, d / "extras" / "similarity.json")
        dirs.append(d)
    comp = compare(dirs, tmp_path / "cmp", n_boot=99)
    row = comp["extras"]["comparisons"][0]
    assert row["test"] == "paired_bootstrap(B=99)" and row["p"] == pytest.approx(1 / 100)
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Beyond the paper" in md and "Benjamini-Hochberg" in md.split("## Beyond the paper", 1)[1]
    assert "Beyond the paper" in (tmp_path / "cmp" / "report.html").read_text()
    import subprocess
    import sys

    code = "import sys, predrecon.eval.report.extras_report; print('predrecon.eval.report.report' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_verdict_reads_the_probe_against_its_highest_floor(tmp_path):
    """Scores clear of the random-init encoder (0.60) but under the always-majority score (0.81, as
    MRPC's F1 of always-positive): no conclusion, and the line names the majority floor."""
    fl = {"majority": 0.81, "length_only": 0.7, "random_init": 0.6}
    rng = np.random.default_rng(3)
    arms = {a: [_write_eval(tmp_path / f"{a}{s}", _values(-2 + 0.1 * rng.normal(), 10 + rng.normal(),
                                                          0.75 + 0.002 * rng.normal()), floors=fl, encoder=f"{a}{s}")
                for s in range(4)] for a in ("hybrid", "mlm")}
    comp = compare(arms, tmp_path / "cmp", n_null=50)
    assert comp["verdict"]["per_task"] == {"sst2": "below floor"}
    line = next(ln for ln in comp["verdict"]["lines"] if ln.startswith("sst2:"))
    assert "at or below the majority floor: no conclusion" in line and "majority floor 0.810" in line
    # the same scores above every floor are read as findings
    fl2 = {"majority": 0.5, "length_only": 0.7, "random_init": 0.6}
    arms2 = {a: [_write_eval(tmp_path / f"b{a}{s}", _values(-2 + 0.1 * rng.normal(), 10 + rng.normal(),
                                                            0.75 + 0.002 * rng.normal()), floors=fl2,
                             encoder=f"b{a}{s}") for s in range(4)] for a in ("hybrid", "mlm")}
    assert compare(arms2, tmp_path / "cmp2", n_null=50)["verdict"]["per_task"] == {"sst2": "above floor"}
