"""Encoder: shapes, masks, positions, init, parameter count."""

from __future__ import annotations

import math

import pytest
import torch

from predrecon.config import ModelConfig, replace
from predrecon.model.encoder import (
    Encoder,
    EncoderOutput,
    num_parameters,
    padded_vocab_size,
    segment_attention_mask,
    sincos_table,
)
from predrecon.presets import paper

V = 50


def small_cfg(**kw) -> ModelConfig:
    base = dict(dim=32, depth=2, heads=4, mlp_ratio=2.0, max_len=64, pad_vocab_multiple=8)
    base.update(kw)
    return ModelConfig(**base)


def make(positions="sincos", seed=0, **kw) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(small_cfg(positions=positions, **kw), V).eval()


@pytest.mark.parametrize("positions", ["sincos", "learned", "rope"])
def test_shapes_and_hidden_states(positions):
    enc = make(positions)
    ids = torch.randint(0, V, (3, 10))
    out = enc(ids, output_hidden_states=True)
    assert isinstance(out, EncoderOutput)
    assert out.last_hidden_state.shape == (3, 10, 32)
    assert len(out.hidden_states) == enc.depth + 1
    assert all(h.shape == (3, 10, 32) for h in out.hidden_states)
    # last entry is the final-LayerNorm output
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    # entry 0 is the embedding output (token + absolute positions)
    emb = enc.tok_emb(ids)
    if enc.pos_emb is not None:
        emb = emb + enc.pos_emb(torch.arange(10))
    torch.testing.assert_close(out.hidden_states[0], emb)
    assert enc(ids).hidden_states is None


def test_vocab_padding():
    enc = make()
    assert enc.padded_vocab == 56 == padded_vocab_size(V, 8)
    assert enc.tok_emb.weight.shape == (56, 32)
    assert padded_vocab_size(30522, 64) == 30528


def test_default_positions_are_arange():
    enc = make("learned")
    ids = torch.randint(0, V, (2, 12))
    pos = torch.arange(12).expand(2, 12)
    torch.testing.assert_close(enc(ids).last_hidden_state, enc(ids, pos).last_hidden_state)
    shifted = enc(ids, pos + 3).last_hidden_state
    assert not torch.allclose(shifted, enc(ids).last_hidden_state)


def test_rope_is_relative():
    """With rotary positions only relative offsets matter: shifting all ids changes nothing."""
    enc = make("rope")
    ids = torch.randint(0, V, (2, 12))
    pos = torch.arange(12).expand(2, 12)
    torch.testing.assert_close(enc(ids, pos).last_hidden_state, enc(ids, pos + 7).last_hidden_state,
                               atol=1e-5, rtol=1e-5)
    perm = torch.randperm(12)
    assert not torch.allclose(enc(ids, pos[:, perm]).last_hidden_state, enc(ids, pos).last_hidden_state)


def test_sincos_table_closed_form():
    t = sincos_table(5, 8)
    p, i = 3, 1
    w = 10000 ** (-i / 4)
    assert t[p, i].item() == pytest.approx(math.sin(p * w), abs=1e-6)
    assert t[p, 4 + i].item() == pytest.approx(math.cos(p * w), abs=1e-6)
    torch.testing.assert_close(t[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    enc = make("sincos")
    assert not enc.pos_emb.weight.requires_grad
    torch.testing.assert_close(enc.pos_emb.weight, sincos_table(64, 32))


@pytest.mark.parametrize("positions", ["sincos", "rope"])
def test_segments_isolate_documents(positions):
    """A packed row [doc1 | doc2 | pad] encodes doc1 exactly as doc1 alone."""
    enc = make(positions)
    a, b = torch.randint(0, V, (1, 5)), torch.randint(0, V, (1, 4))
    row = torch.cat([a, b, torch.zeros(1, 3, dtype=torch.long)], 1)  # (1, 12)
    seg = torch.tensor([[1] * 5 + [2] * 4 + [0] * 3])
    pos = torch.tensor([list(range(5)) + list(range(4)) + [0] * 3])
    packed = enc(row, pos, seg).last_hidden_state
    alone_a = enc(a, torch.arange(5)[None]).last_hidden_state
    alone_b = enc(b, torch.arange(4)[None]).last_hidden_state
    torch.testing.assert_close(packed[:, :5], alone_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[:, 5:9], alone_b, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(packed).all()
    # without segments everything attends everywhere: doc1 sees doc2 and the padding
    assert not torch.allclose(enc(row, pos).last_hidden_state[:, :5], alone_a, atol=1e-4)


def test_segment_mask_closed_form():
    seg = torch.tensor([[1, 1, 2, 0]])
    m = segment_attention_mask(seg)[0, 0]
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)


def test_all_padding_row_is_finite_and_grads_flow():
    enc = make().train()
    ids = torch.randint(0, V, (2, 6))
    seg = torch.tensor([[1, 1, 1, 0, 0, 0], [0] * 6])
    out = enc(ids, segment_ids=seg).last_hidden_state
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert enc.pos_emb.weight.grad is None  # frozen sin/cos table


def test_init_std_and_output_projection_scaling():
    torch.manual_seed(0)
    cfg = ModelConfig(dim=256, depth=3, heads=4, mlp_ratio=4.0, max_len=64, init_std=0.02)
    enc = Encoder(cfg, 1000)
    assert enc.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert enc.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.03)
    for layer, block in enumerate(enc.blocks, start=1):
        want = 0.02 / math.sqrt(2 * layer)
        assert block.attn.proj.weight.std().item() == pytest.approx(want, rel=0.05)
        assert block.mlp.fc2.weight.std().item() == pytest.approx(want, rel=0.05)
        assert torch.count_nonzero(block.attn.qkv.bias) == 0
    assert torch.equal(enc.norm.weight, torch.ones(256))


def test_paper_parameter_count():
    """PAPER.md: the encoder has ~34.8 M parameters, 45 % of them the embedding table.

    That is the encoder alone, counting the frozen 512 x 512 sin/cos table as the reference does
    (34.81 M); the encoder + untied MLM head would be ~50.7 M and without the table 34.55 M.
    """
    from predrecon.model.heads import MLMHead

    cfg = replace(paper().model, positions="sincos")  # the reference's frozen table, whatever the preset's
    with torch.device("meta"):
        enc = Encoder(cfg, 30522)
        head = MLMHead(cfg.dim, enc.padded_vocab, 30522)
    n = num_parameters(enc)
    assert n == pytest.approx(34.8e6, abs=0.05e6)
    assert enc.tok_emb.weight.numel() / n == pytest.approx(0.45, abs=0.005)
    assert num_parameters(enc, trainable_only=True) == n - 512 * 512
    assert num_parameters(enc, exclude_embeddings=True) == n - enc.tok_emb.weight.numel() - 512 * 512
    both = n + num_parameters(head)
    assert both == pytest.approx(50.7e6, abs=0.1e6)  # so 34.8 M is NOT encoder + head


def test_bf16_autocast_runs():
    enc = make("rope")
    ids = torch.randint(0, V, (2, 8))
    seg = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(ids, segment_ids=seg).last_hidden_state
    assert torch.isfinite(out.float()).all()


def test_bad_vocab_is_rejected():
    with pytest.raises(ValueError, match="vocab_size"):
        Encoder(small_cfg(), 0)


def test_dropout_only_in_train_mode():
    enc = make(dropout=0.5)
    ids = torch.randint(0, V, (2, 8))
    torch.testing.assert_close(enc(ids).last_hidden_state, enc(ids).last_hidden_state)
    enc.train()
    assert not torch.allclose(enc(ids).last_hidden_state, enc(ids).last_hidden_state)


def test_forward_traces_as_one_graph():
    """No data-dependent Python control flow: dynamo captures the whole forward."""
    enc = make("rope")
    compiled = torch.compile(enc, backend="eager", fullgraph=True)
    ids = torch.randint(0, V, (2, 8))
    seg = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    torch.testing.assert_close(compiled(ids, segment_ids=seg).last_hidden_state,
                               enc(ids, segment_ids=seg).last_hidden_state)


# ------------------------------------------------------------------------------ bert family
def make_bert(seed=0, **kw) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(small_cfg(positions="learned", family="bert", norm_eps=1e-12, **kw), V).eval()


def test_bert_family_layout_and_hidden_states():
    """Embedding = LN(word + type[0] + pos); each block's output is post-LN (zero mean, unit
    variance per token at init); no final LayerNorm; hidden_states[-1] is the last block's output."""
    enc = make_bert()
    assert enc.norm is None and enc.type_emb.weight.shape == (2, 32) and enc.emb_norm is not None
    assert not any(k.startswith("norm.") for k in enc.state_dict())
    ids = torch.randint(0, V, (2, 9))
    out = enc(ids, output_hidden_states=True)
    emb = enc.tok_emb(ids) + enc.type_emb.weight[0] + enc.pos_emb(torch.arange(9))
    torch.testing.assert_close(out.hidden_states[0], torch.nn.functional.layer_norm(emb, (32,), eps=1e-12))
    for h in out.hidden_states:  # LayerNorm weight 1 / bias 0 at init
        torch.testing.assert_close(h.mean(-1), torch.zeros(2, 9), atol=1e-5, rtol=0)
        torch.testing.assert_close(h.var(-1, unbiased=False), torch.ones(2, 9), atol=1e-4, rtol=0)
    blk = enc.blocks[0]
    x = out.hidden_states[0]
    y = blk.norm1(x + blk.attn(x))
    torch.testing.assert_close(out.hidden_states[1], blk.norm2(y + blk.mlp(y)))
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)


def test_bert_family_init_has_no_depth_rescaling():
    enc = make_bert(seed=1, depth=4, dim=64, mlp_ratio=4.0)
    stds = [b.attn.proj.weight.std().item() for b in enc.blocks]
    assert all(abs(s - 0.02) < 0.002 for s in stds), stds  # prenorm divides block l by sqrt(2 l)
    pre = make("learned", seed=1, depth=4, dim=64, mlp_ratio=4.0)
    assert pre.blocks[3].attn.proj.weight.std().item() < 0.02 / math.sqrt(8) * 1.2


def test_bert_family_segments_isolate_documents():
    enc = make_bert()
    ids = torch.randint(5, V, (1, 8))
    seg = torch.tensor([[1, 1, 1, 2, 2, 2, 2, 0]])
    pos = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0]])
    full = enc(ids, pos, seg).last_hidden_state
    second = enc(ids[:, 3:7], pos[:, 3:7]).last_hidden_state
    torch.testing.assert_close(full[:, 3:7], second, atol=1e-5, rtol=0)


def test_family_config_is_checked():
    with pytest.raises(ValueError, match="model.positions.*family=bert"):
        small_cfg(family="bert", positions="sincos")  # not BERT's
    with pytest.raises(ValueError, match="model.family"):
        small_cfg(family="gpt")


# ------------------------------------------------------------------------------ attention kernels
@pytest.mark.parametrize("family,positions", [("prenorm", "learned"), ("prenorm", "rope"), ("bert", "learned")])
def test_eager_and_sdpa_attention_agree_with_masks_and_gradients(family, positions):
    """The eager kernel is the SDPA function: same outputs and parameter gradients (fp32, 1e-5),
    with padding and packed documents (block-diagonal mask) in the rows."""
    ids = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(1))
    seg = torch.tensor([[1] * 12, [1] * 5 + [2] * 4 + [0] * 3, [1] * 3 + [2] * 3 + [3] * 6])
    outs, grads = [], []
    for impl in ("sdpa", "eager"):
        enc = make(positions, family=family, attention=impl, **({"norm_eps": 1e-12} if family == "bert" else {}))
        out = enc(ids, segment_ids=seg).last_hidden_state
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 4
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4, msg=n)
    # and the two differ from an encoder that ignores the mask: the mask is honoured by both
    unmasked = make(positions, family=family, attention="eager",
                    **({"norm_eps": 1e-12} if family == "bert" else {}))(ids).last_hidden_state
    assert (unmasked[1] - outs[1][1]).abs().max() > 1e-3


def test_eager_attention_closed_form_and_float_mask():
    q = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])  # (1, 1, 2, 2)
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    v = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    from predrecon.model.encoder import eager_attention

    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]]) / math.sqrt(2)
    expect = torch.softmax(s, -1) @ v[0, 0]
    torch.testing.assert_close(eager_attention(q, k, v)[0, 0], expect)
    keep = torch.tensor([[True, False], [True, True]])
    out = eager_attention(q, k, v, keep)[0, 0]
    torch.testing.assert_close(out[0], v[0, 0, 0])  # row 0 sees key 0 only
    additive = torch.where(keep, 0.0, float("-inf"))
    torch.testing.assert_close(eager_attention(q, k, v, additive), eager_attention(q, k, v, keep))


def test_eager_attention_bf16_matches_fp32():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 32, generator=g) for _ in range(3))
    from predrecon.model.encoder import eager_attention

    ref = eager_attention(q, k, v)
    low = eager_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.03  # bf16 rounding of q, k, v and the output
    assert (low.float() - ref).abs().max() > 0  # (it did run in bf16)


def test_eager_attention_bf16_probabilities_are_the_fp32_softmax_rounded():
    """The bf16 softmax runs in the input dtype: its probabilities are an fp32 softmax of the same
    bf16 scores rounded to bf16 — equal for almost every entry, never more than one ulp apart."""
    from predrecon.model.encoder import eager_attention

    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(2, 3, 40, 16, generator=g).bfloat16() for _ in range(2))
    eye = torch.eye(40, dtype=torch.bfloat16).expand(2, 3, 40, 40)  # v = I: the output is the probabilities
    scores = (q * 16 ** -0.5) @ k.transpose(-2, -1)
    want = torch.softmax(scores.float(), dim=-1).bfloat16()
    got = eager_attention(q, k, eye).float()
    diff = (got - want.float()).abs()
    assert bool((diff <= want.float().abs() * 2.0**-7).all())  # at most one bf16 ulp
    assert float((diff == 0).float().mean()) > 0.99
    # the softmax of the raw scores in bf16 arithmetic throughout would be far off
    naive = (scores.exp() / scores.exp().sum(-1, keepdim=True)).float()
    assert float((naive - want.float()).abs().max()) > float(diff.max())


def test_resolve_attention_rule():
    from predrecon.model.encoder import EAGER_MAX_LEN_CPU, resolve_attention

    def q(T, dtype=torch.float32, device="cpu"):
        return torch.empty(1, 1, T, 8, dtype=dtype, device=device)

    cap32, cap16 = EAGER_MAX_LEN_CPU[torch.float32], EAGER_MAX_LEN_CPU[torch.bfloat16]
    assert resolve_attention("auto", q(cap32)) == "eager"
    assert resolve_attention("auto", q(cap32 + 1)) == "sdpa"
    assert resolve_attention("auto", q(cap16, torch.bfloat16)) == "eager"
    assert resolve_attention("auto", q(cap16 + 1, torch.bfloat16)) == "sdpa"
    assert resolve_attention("auto", q(8, torch.float64)) == "sdpa"
    assert resolve_attention("auto", q(8, device="meta")) == "sdpa"  # not a CPU
    assert resolve_attention("sdpa", q(8)) == "sdpa" and resolve_attention("eager", q(4096)) == "eager"
    with pytest.raises(ValueError, match="attention"):
        resolve_attention("flash", q(8))
    with pytest.raises(ValueError, match="model.attention"):
        small_cfg(attention="flash")


def test_eager_dropout_only_in_train_mode():
    enc = make(dropout=0.5, attention="eager")
    ids = torch.randint(0, V, (2, 8))
    torch.testing.assert_close(enc(ids).last_hidden_state, enc(ids).last_hidden_state)
    enc.train()
    assert not torch.allclose(enc(ids).last_hidden_state, enc(ids).last_hidden_state)
