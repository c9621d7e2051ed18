"""MLM head (sparse, padded vocabulary, tying) and JEPA predictor (masking, shapes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from predrecon.config import JEPAConfig
from predrecon.model.heads import MLMHead, Predictor, build_predictor
from predrecon.presets import debug

D, VP, VR = 16, 24, 20


def test_mlm_head_matches_dense_computation_at_index():
    torch.manual_seed(0)
    head = MLMHead(D, VP, VR)
    hidden = torch.randn(2, 7, D)
    index = torch.tensor([[0, 3, 6], [2, 2, 0]])
    logits = head(hidden, index)
    assert logits.shape == (2, 3, VR)
    full = head.decoder(head.norm(head.act(head.dense(hidden))))  # (2, 7, VP)
    want = torch.stack([full[b, index[b]] for b in range(2)])[..., :VR]
    torch.testing.assert_close(logits, want)


def test_mlm_head_is_sparse():
    """The head's MLP sees only the M gathered positions, never all T."""
    head = MLMHead(D, VP, VR)
    seen = []
    head.dense.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    head(torch.randn(2, 50, D), torch.zeros(2, 4, dtype=torch.long))
    assert seen == [(2, 4, D)]


def test_mlm_head_tied_shares_embedding():
    emb = nn.Embedding(VP, D)
    head = MLMHead(D, VP, VR, tie_to=emb)
    assert head.decoder.weight is emb.weight
    assert head.decoder.bias.shape == (VP,)
    names = {n for n, _ in head.named_parameters()}
    assert "decoder.bias" in names
    with pytest.raises(ValueError, match="tie_to"):
        MLMHead(D, VP + 8, VR, tie_to=emb)
    with pytest.raises(ValueError, match="real_vocab"):
        MLMHead(D, VP, VP + 1)


def make_predictor(num_targets=2) -> Predictor:
    torch.manual_seed(0)
    cfg = JEPAConfig(predictor_dim=16, predictor_depth=2, predictor_heads=2)
    return Predictor(12, cfg, max_len=32, num_targets=num_targets).eval()


def inputs(B=2, C=6, N=4):
    torch.manual_seed(1)
    ctx = torch.randn(B, C, 12)
    ctx_pos = torch.arange(C).expand(B, C).clone()
    ctx_valid = torch.ones(B, C, dtype=torch.bool)
    ctx_valid[B - 1, 4:] = False
    tgt_pos = (torch.arange(N) + C).expand(B, N).clone()
    tgt_block = torch.tensor([[0, 0, 1, 1]] * B)
    tgt_valid = torch.ones(B, N, dtype=torch.bool)
    tgt_valid[0, 3] = False
    return ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid


def test_predictor_shape_and_finiteness():
    pred = make_predictor()
    out = pred(*inputs())
    assert out.shape == (2, 4, 12)
    assert torch.isfinite(out).all()


def test_predictor_ignores_invalid_slots():
    """Changing the content of invalid context slots, or the position/block of an invalid
    target slot, leaves every valid target output unchanged."""
    pred = make_predictor()
    ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid = inputs()
    ref = pred(ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid)
    ctx2 = ctx.clone()
    ctx2[1, 4:] = 100.0 * torch.randn(2, 12)
    tgt_pos2, tgt_block2 = tgt_pos.clone(), tgt_block.clone()
    tgt_pos2[0, 3], tgt_block2[0, 3] = 20, 0
    out = pred(ctx2, ctx_pos, ctx_valid, tgt_pos2, tgt_block2, tgt_valid)
    torch.testing.assert_close(out[tgt_valid], ref[tgt_valid])
    # a valid context slot does matter
    ctx3 = ctx.clone()
    ctx3[1, 0] += 1.0
    assert not torch.allclose(pred(ctx3, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid)[1], ref[1])


def test_predictor_all_invalid_row_is_finite_with_grads():
    pred = make_predictor().train()
    ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid = inputs()
    ctx_valid[1] = False
    tgt_valid[1] = False
    out = pred(ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid)
    assert torch.isfinite(out).all()
    out[tgt_valid].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in pred.parameters() if p.grad is not None)
    assert pred.mask_tokens.grad is not None


def test_predictor_mask_token_per_block_and_position():
    pred = make_predictor()
    ctx, ctx_pos, ctx_valid, _, _, _ = inputs(B=1)
    tgt_pos = torch.tensor([[7, 7]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    same = pred(ctx, ctx_pos, ctx_valid, tgt_pos, torch.tensor([[0, 0]]), valid)
    torch.testing.assert_close(same[0, 0], same[0, 1])  # same block, same position -> same output
    diff = pred(ctx, ctx_pos, ctx_valid, tgt_pos, torch.tensor([[0, 1]]), valid)
    assert not torch.allclose(diff[0, 0], diff[0, 1])
    moved = pred(ctx, ctx_pos, ctx_valid, torch.tensor([[7, 9]]), torch.tensor([[0, 0]]), valid)
    assert not torch.allclose(moved[0, 0], moved[0, 1])


def test_predictor_segments_restrict_attention():
    pred = make_predictor()
    ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid = inputs(B=1)
    ctx_valid[:] = True
    ctx_seg = torch.tensor([[1, 1, 1, 2, 2, 2]])
    tgt_seg = torch.tensor([[1, 1, 2, 2]])
    ref = pred(ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid, ctx_seg, tgt_seg)
    ctx2 = ctx.clone()
    ctx2[0, 3:] += 5.0  # segment 2 changes: segment-1 targets must not move
    out = pred(ctx2, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid, ctx_seg, tgt_seg)
    torch.testing.assert_close(out[0, :2], ref[0, :2])
    assert not torch.allclose(out[0, 2], ref[0, 2])
    with pytest.raises(ValueError, match="together"):
        pred(ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid, ctx_seg, None)


def test_build_predictor_from_config():
    cfg = debug()
    pred = build_predictor(cfg)
    assert pred.embed.in_features == cfg.model.dim
    assert pred.embed.out_features == cfg.jepa.predictor_dim
    assert pred.proj.out_features == cfg.model.dim
    assert len(pred.blocks) == cfg.jepa.predictor_depth
    assert pred.mask_tokens.shape == (cfg.jepa.num_targets, cfg.jepa.predictor_dim)
    assert not pred.pos_emb.weight.requires_grad


def test_the_trained_models_predictor_follows_the_run_config():
    """HybridModel builds its predictor from the config: ``model.attention``, ``model.norm_eps``
    and ``model.init_std`` reach it (it once ignored them and kept the defaults)."""
    from predrecon.config import apply_overrides
    from predrecon.data.tokenizer import SpecialIds
    from predrecon.train.meta import HybridModel

    cfg = apply_overrides(debug(), ["objective.kind=hybrid", "model.attention=sdpa", "model.norm_eps=1e-5",
                                    "model.init_std=0.5"])
    pred = HybridModel(cfg, 64, SpecialIds(0, 1, 2, 3, 4)).predictor
    assert {b.attn.impl for b in pred.blocks} == {"sdpa"}
    assert {b.norm1.eps for b in pred.blocks} == {1e-5} and pred.norm.eps == 1e-5
    assert 0.3 < float(pred.blocks[0].mlp.fc1.weight.std()) < 0.7  # drawn with std 0.5, not 0.02


def _per_block_predictor() -> Predictor:
    torch.manual_seed(0)
    cfg = JEPAConfig(predictor_dim=16, predictor_depth=2, predictor_heads=2, predictor_mode="per_block")
    return Predictor(12, cfg, max_len=32, num_targets=2).eval()


def test_per_block_predictor_equals_one_pass_per_block_with_a_shared_mask_token():
    """The reference's predictor: one shared mask token, one pass over [context, block k] per block."""
    pred = _per_block_predictor()
    assert pred.mask_tokens.shape == (1, 16)
    ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid = inputs(B=2)
    tgt_valid[:] = True
    out = pred(ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid)
    joint = Predictor(12, JEPAConfig(predictor_dim=16, predictor_depth=2, predictor_heads=2), 32, 1).eval()
    joint.load_state_dict(pred.state_dict())  # same weights; with one block "joint" is one pass
    for k in range(2):
        cols = (tgt_block[0] == k).nonzero().squeeze(1)
        alone = joint(ctx, ctx_pos, ctx_valid, tgt_pos[:, cols], torch.zeros_like(tgt_block[:, cols]),
                      tgt_valid[:, cols])
        torch.testing.assert_close(out[:, cols], alone)
    # the joint pass lets the blocks see each other: different numbers
    both = joint(ctx, ctx_pos, ctx_valid, tgt_pos, torch.zeros_like(tgt_block), tgt_valid)
    assert not torch.allclose(both, out)
    # the same position in two blocks gives the same output (no per-block token)
    same = pred(ctx, ctx_pos, ctx_valid, torch.tensor([[7, 7]] * 2), torch.tensor([[0, 1]] * 2),
                torch.ones(2, 2, dtype=torch.bool))
    torch.testing.assert_close(same[:, 0], same[:, 1])
