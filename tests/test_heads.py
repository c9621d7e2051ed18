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


def _alone(pred: Predictor, ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid, b: int) -> torch.Tensor:
    """Row ``b``'s valid target outputs from the plain computation: only its valid context and
    target tokens, in one unpadded sequence, every block in full, no attention mask."""
    cv, tv = ctx_valid[b], tgt_valid[b]
    c = pred.embed(ctx[b][cv]) + pred.pos_emb(ctx_pos[b][cv])
    t = pred.mask_tokens[tgt_block[b][tv]] + pred.pos_emb(tgt_pos[b][tv])
    x = torch.cat([c, t])[None]
    for block in pred.blocks:
        x = block(x)
    return pred.proj(pred.norm(x[0, int(cv.sum()):]))


def _ragged_inputs():
    """Rows whose valid entries are not left-aligned and whose counts differ: C + N = 14 slots
    for at most 9 valid entries in a row."""
    torch.manual_seed(3)
    B, C, N = 3, 8, 6
    ctx = torch.randn(B, C, 12)
    ctx_pos = torch.randint(0, 32, (B, C))
    ctx_valid = torch.tensor([[1, 1, 0, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0, 1]]).bool()
    tgt_pos = torch.randint(0, 32, (B, N))
    tgt_block = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0]])
    tgt_valid = torch.tensor([[0, 1, 1, 1, 0, 1], [1, 0, 0, 1, 1, 0], [1, 1, 1, 0, 1, 1]]).bool()
    return ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid


@pytest.mark.parametrize("width", [None, 9, 12])
def test_predictor_equals_each_row_computed_alone(width):
    """The compact slot layout, its dump slot, the last block's rows-only pass and any width from
    the largest row's count up (``slots_valid``, the collator's ``pred_valid``) give, for every
    valid target, the output and the parameter gradients of the row computed alone without padding
    or mask. (Mis-placed slots, a dump slot that leaks into attention, or a last block that drops
    keys would each change the numbers.)"""
    pred = make_predictor()
    args = _ragged_inputs()
    ctx_valid, tgt_valid = args[2], args[5]
    counts = ctx_valid.sum(1) + tgt_valid.sum(1)
    assert int(counts.max()) == 9
    sv = None if width is None else torch.arange(width)[None] < counts[:, None]
    out = pred(*args, slots_valid=sv)
    assert out.shape == (3, 6, 12) and torch.isfinite(out).all()
    want = [_alone(pred, *args, b) for b in range(3)]
    for b in range(3):
        torch.testing.assert_close(out[b][tgt_valid[b]], want[b], rtol=1e-5, atol=1e-5)
    named = [(n, p) for n, p in pred.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    grads = torch.autograd.grad(out[tgt_valid].square().sum(), params, allow_unused=True)
    ref = torch.autograd.grad(torch.cat(want).square().sum(), params, allow_unused=True)
    for (name, _), g, r in zip(named, grads, ref):
        if r is None:
            assert g is None or not g.any(), name
        else:
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6, msg=name)


def test_predictor_refuses_slots_narrower_than_a_row():
    pred = make_predictor()
    args = _ragged_inputs()
    with pytest.raises(RuntimeError, match="more valid context"):
        pred(*args, slots_valid=torch.ones(3, 8, dtype=torch.bool))


@pytest.mark.parametrize("family", ["prenorm", "bert"])
def test_block_forward_rows_equals_the_full_block_at_those_rows(family):
    from predrecon.model.encoder import get_family, key_attention_mask

    torch.manual_seed(0)
    block = get_family(family).block(16, 2).eval()
    x = torch.randn(2, 7, 16)
    valid = torch.tensor([[1, 1, 1, 0, 1, 1, 0], [1, 0, 1, 1, 1, 1, 1]]).bool()
    mask = key_attention_mask(valid)
    rows = torch.tensor([[6, 0, 4], [1, 1, 5]])
    full = block(x, mask)
    rows_mask = mask.gather(2, rows[:, None, :, None].expand(-1, 1, -1, 7))
    got = block.forward_rows(x, rows, rows_mask)
    torch.testing.assert_close(got, torch.stack([full[b, rows[b]] for b in range(2)]))


def test_invalid_entries_do_not_reach_even_the_invalid_outputs():
    """Invalid context/target entries all land in one dump slot, which the invalid target slots
    read; what those entries hold (states, segment ids) changes no output at all — so the dump's
    value does not depend on which of the colliding writes lands last (on a GPU an unspecified
    one). Segment ids 2 (no valid slot's) against 1 (the valid slots'): a dump that took an
    entry's id would attend to the valid slots in the second case only."""
    pred = make_predictor()
    ctx, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid = _ragged_inputs()
    outs = []
    for fill, value in ((2, 0.0), (1, 50.0)):
        ctx_seg, tgt_seg = torch.ones(3, 8, dtype=torch.long), torch.ones(3, 6, dtype=torch.long)
        ctx_seg[~ctx_valid], tgt_seg[~tgt_valid] = fill, fill
        c = ctx.clone()
        c[~ctx_valid] = value
        outs.append(pred(c, ctx_pos, ctx_valid, tgt_pos, tgt_block, tgt_valid, ctx_seg, tgt_seg))
    torch.testing.assert_close(outs[1], outs[0])


def test_only_the_width_of_slots_valid_is_read():
    """A ``pred_valid`` whose values are off (all True) but wide enough changes nothing: the
    occupied slots follow from ``ctx_valid``/``tgt_valid``, so padding never becomes a key."""
    pred = make_predictor()
    args = _ragged_inputs()
    counts = args[2].sum(1) + args[5].sum(1)
    good = torch.arange(11)[None] < counts[:, None]
    torch.testing.assert_close(pred(*args, slots_valid=torch.ones(3, 11, dtype=torch.bool)),
                               pred(*args, slots_valid=good))
