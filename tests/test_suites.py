"""One record contract, one evaluate, one set of statistics: the suite registry, the metric
entry contract and the shared paired / seed tests (fast: no encoder is run here; the paper
suite's end-to-end path is exercised by tests/test_runner_report.py's fixture)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from predrecon.eval import records
from predrecon.eval.records import check_entries, entry, paired_entry_test, seed_test
from predrecon.eval.report.extras_report import _paired as extras_paired
from predrecon.eval.report.extras_report import _seeds as extras_seeds
from predrecon.eval.suites.extras import extra_record, metric_entry
from predrecon.eval.suites.registry import SUITES, evaluate, parse_suites


def test_registry_names_families_and_parse():
    assert list(SUITES) == ["paper", "fewshot", "robustness", "crosslingual", "similarity"]
    assert [s.family for s in SUITES.values()] == ["headline"] + ["exploratory"] * 4
    assert "faithful" in SUITES["paper"].accepts and "faithful" not in SUITES["fewshot"].accepts
    assert "draws" in SUITES["fewshot"].accepts and "draws" not in SUITES["paper"].accepts
    assert parse_suites("paper, fewshot,paper") == ["paper", "fewshot"]
    with pytest.raises(KeyError, match="bogus"):
        parse_suites("paper,bogus")
    with pytest.raises(ValueError, match="no suites"):
        parse_suites("")


def test_evaluate_refuses_a_keyword_no_chosen_suite_accepts():
    # checked before any encoder is loaded: 'faithful' belongs to the paper suite only
    with pytest.raises(TypeError, match="faithful"):
        evaluate("no-such-encoder", suites="fewshot", faithful=True)
    with pytest.raises(KeyError, match="robustness"):
        evaluate("no-such-encoder", suites="fewshot", suite_kw={"robustness": {"draws": 2}})


def test_entry_contract_and_checks():
    e = entry(0.5, 0.4, 0.6, 3, "bootstrap-percentile", {"type": "mean", "key": "c"}, better="higher", label=None)
    assert set(e) == set(records.ENTRY_REQUIRED) | {"better"}  # None-valued optional fields are left out
    with pytest.raises(KeyError, match="colour"):
        entry(0.5, 0.4, 0.6, 3, "none", None, colour="red")
    check_entries("x", {"m": e}, {"c": np.zeros(3)})
    with pytest.raises(ValueError, match="'m'.*'c'"):
        check_entries("x", {"m": e}, {"c": np.zeros(4)})
    with pytest.raises(ValueError, match="missing field"):
        check_entries("x", {"m": {k: v for k, v in e.items() if k != "method"}}, {"c": np.zeros(3)})
    nested = {"type": "difference", "a": {"type": "mean", "key": "p"},
              "b": {"type": "score", "score": "accuracy", "pred": "q", "target": "y"}}
    assert records.recipe_keys(nested) == ["p", "q", "y"]
    # a suite's entries are the shared contract
    m = metric_entry(0.7, 0.6, 0.8, 3, label="acc", method="t over 5 draws", better="higher",
                     resample={"type": "mean", "key": "c"}, examples="h")
    assert set(m) >= set(records.ENTRY_REQUIRED) and m["method"] == "t over 5 draws" and m["tested"]
    with pytest.raises(ValueError, match="fewshot.*'c'"):
        extra_record("fewshot", "enc", 4, 0, {}, {"acc": m}, {"c": [1.0, 0.0]})


def test_paired_entry_test_mean_closed_form_and_identity():
    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.8).astype(float)
    b = (rng.random(200) < 0.5).astype(float)
    spec = {"type": "mean", "key": "c"}
    t = paired_entry_test(spec, {"c": a}, {"c": b}, 200, n_boot=300, n_perm=2000, seed=1)
    assert t["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert t["diff_low"] < t["diff"] < t["diff_high"] and t["p"] <= 1 / 2001 + 1e-12
    same = paired_entry_test(spec, {"c": a}, {"c": a}, 200, n_boot=300, n_perm=2000, seed=1)
    assert same["diff"] == 0 and same["p"] == pytest.approx(1.0)
    nan = paired_entry_test(spec, {"c": np.full(5, np.nan)}, {"c": np.ones(5)}, 5, n_boot=10, n_perm=10, seed=0)
    assert math.isnan(nan["p"]) and nan["test"].startswith("none")


def test_paired_entry_test_spearman_is_the_report_bootstrap():
    rng = np.random.default_rng(2)
    y = rng.normal(size=120)
    good, noise = y + 0.3 * rng.normal(size=120), rng.normal(size=120)
    spec = {"type": "spearman", "pred": "p", "target": "y"}
    t = paired_entry_test(spec, {"p": good, "y": y}, {"p": noise, "y": y}, 120, n_boot=200, n_perm=0, seed=0)
    want = sps.spearmanr(good, y).statistic - sps.spearmanr(noise, y).statistic
    assert t["diff"] == pytest.approx(want, abs=1e-12)
    assert t["p"] == pytest.approx(1 / 201) and t["test"] == "paired_bootstrap(B=200)"
    ref = records.bootstrap_difference(records.make_statistic(spec, {"p": good, "y": y}),
                                       records.make_statistic(spec, {"p": noise, "y": y}), 120, 200, 0)
    assert t["diff_low"] == ref["diff_low"] and t["diff_high"] == ref["diff_high"]


def test_extras_compare_uses_the_shared_tests():
    """compare_extras' paired and seed tests are the records' ones, value for value."""
    rng = np.random.default_rng(3)
    a, b = (rng.random(60) < 0.7).astype(float), (rng.random(60) < 0.6).astype(float)
    spec = {"type": "mean", "key": "c"}
    ea = metric_entry(a.mean(), n=60, resample=spec, examples="h")
    eb = metric_entry(b.mean(), n=60, resample=spec, examples="h")
    got = extras_paired(ea, eb, {"c": a}, {"c": b}, n_boot=100, n_perm=500, seed=4)
    want = paired_entry_test(spec, {"c": a}, {"c": b}, 60, n_boot=100, n_perm=500, seed=4)
    assert {k: got[k] for k in ("diff", "diff_low", "diff_high", "p", "test")} == \
        {k: want[k] for k in ("diff", "diff_low", "diff_high", "p", "test")}
    va, vb = [0.61, 0.64, 0.66], [0.55, 0.57, 0.52]
    s = extras_seeds({"values": va, "mean": np.mean(va)}, {"values": vb, "mean": np.mean(vb)})
    welch = sps.ttest_ind(va, vb, equal_var=False)
    assert s["p"] == pytest.approx(welch.pvalue, rel=1e-9) and s["p"] == seed_test(va, vb)["p"]
    assert s["diff"] == pytest.approx(np.mean(va) - np.mean(vb), abs=1e-12)


def test_cli_eval_suites_flag(tmp_path):
    from predrecon.cli import build_parser, cmd_eval

    args = build_parser().parse_args(["eval", "enc", "--out", str(tmp_path / "o")])
    assert args.suites == "paper"  # the paper suite by default: today's runner path
    args = build_parser().parse_args(["eval", "enc", "--out", str(tmp_path / "o"), "--suites", "paper,nope"])
    with pytest.raises(KeyError, match="nope"):
        cmd_eval(args)  # refused before any encoder is loaded or folder made
    assert not (tmp_path / "o").exists()


def test_schema_1_extras_record_reads_into_the_contract(tmp_path):
    import json

    from predrecon.eval.suites.extras import load_record

    old = {"extra": "similarity", "schema": 1, "metrics": {"spearman.s": {
        "value": 0.5, "low": 0.4, "high": None, "n": 3, "label": "rho", "interval": "bootstrap over pairs",
        "tested": True, "coords": {}, "resample": None, "examples": "h"}}, "per_example": {}}
    (tmp_path / "s.json").write_text(json.dumps(old))
    m = load_record(tmp_path / "s.json")["metrics"]["spearman.s"]
    assert m["method"] == "bootstrap over pairs" and "interval" not in m and math.isnan(m["high"])
    check_entries("s", {"spearman.s": m}, {})
    (tmp_path / "x.json").write_text(json.dumps({**old, "schema": 7}))
    with pytest.raises(ValueError, match="x.json"):
        load_record(tmp_path / "x.json")
