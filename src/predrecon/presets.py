"""Named presets: functions returning a :class:`RunConfig`.

``debug`` (tests, seconds), ``tiny`` (CPU demo, minutes), ``paper`` (the reference's
512 x 6 x 8 encoder, ~34.8 M parameters with the bert-base-uncased vocabulary), ``base``
(BERT-base shape, for GPUs). :func:`apply_faithful` switches every documented quirk of the
reference code on (see docs/faithful.md).

Every preset uses learned absolute positions (initialised like the token embeddings, std 0.02):
with the reference's fixed sin/cos table (RMS 0.707, ~35x the token embeddings at init) a
predictor that knows only a target's position already reaches a small fraction of the
no-information JEPA loss, so the JEPA task is close to trivial (measured in docs/balancing.md;
the diagnostics log this position-only baseline). Learned positions are BERT's parameterisation
(the ``bert`` family, exportable to ``transformers``, uses them too); ``rope`` removes absolute
position from the states altogether (its floor equals the no-information loss) and stays
available as ``model.positions=rope``. ``--faithful`` keeps sin/cos.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import (
    ConfigError,
    DataConfig,
    JEPAConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)


def debug() -> RunConfig:
    return RunConfig(
        preset="debug",
        data=DataConfig(seq_len=32),
        model=ModelConfig(dim=32, depth=2, heads=2, mlp_ratio=2.0, max_len=64, pad_vocab_multiple=8,
                          positions="learned"),
        jepa=JEPAConfig(predictor_dim=16, predictor_depth=1, predictor_heads=2, min_keep=2),
        optim=OptimConfig(lr=3e-3, warmup_steps=2, min_lr=3e-4),
        train=TrainConfig(steps=20, batch_size=8, log_every=5, ckpt_every=10, diag_every=10),
    )


def tiny() -> RunConfig:
    return RunConfig(
        preset="tiny",
        data=DataConfig(seq_len=128),
        model=ModelConfig(dim=128, depth=4, heads=4, mlp_ratio=4.0, max_len=512, positions="learned"),
        jepa=JEPAConfig(predictor_dim=64, predictor_depth=2, predictor_heads=4),
        optim=OptimConfig(lr=1e-3, warmup_steps=30, min_lr=1e-4),
        train=TrainConfig(steps=300, batch_size=32, log_every=10, ckpt_every=100, diag_every=50),
    )


def paper() -> RunConfig:
    return RunConfig(
        preset="paper",
        data=DataConfig(seq_len=128),
        model=ModelConfig(dim=512, depth=6, heads=8, mlp_ratio=4.0, max_len=512, positions="learned"),
        jepa=JEPAConfig(predictor_dim=192, predictor_depth=6, predictor_heads=4),
        optim=OptimConfig(lr=5e-5, start_lr=1e-6, min_lr=1e-6, warmup_steps=1000, weight_decay=0.05),
        train=TrainConfig(steps=20000, batch_size=64, log_every=50, ckpt_every=2000, diag_every=500),
    )


def base() -> RunConfig:
    return RunConfig(
        preset="base",
        data=DataConfig(seq_len=128),
        model=ModelConfig(dim=768, depth=12, heads=12, mlp_ratio=4.0, max_len=512, positions="learned"),
        jepa=JEPAConfig(predictor_dim=384, predictor_depth=4, predictor_heads=6),
        optim=OptimConfig(lr=5e-4, warmup_steps=2000, min_lr=5e-5),
        train=TrainConfig(steps=100000, batch_size=256, log_every=100, ckpt_every=5000, diag_every=2000),
    )


def bert_tiny() -> RunConfig:
    """``tiny``'s size in the BERT-compatible family (post-LN, embedding LayerNorm, learned
    positions, eps 1e-12): exports with ``--format hf`` / ``sentence-transformers``."""
    cfg = tiny()
    cfg.preset = "bert-tiny"
    cfg.model = ModelConfig(dim=128, depth=4, heads=4, mlp_ratio=4.0, max_len=512, positions="learned",
                            family="bert", norm_eps=1e-12)
    return cfg


PRESETS: dict[str, Callable[[], RunConfig]] = {"debug": debug, "tiny": tiny, "paper": paper, "base": base,
                                               "bert-tiny": bert_tiny}


def get_preset(name: str) -> RunConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"preset: unknown preset {name!r} (known: {', '.join(PRESETS)})") from None


def apply_faithful(cfg: RunConfig) -> RunConfig:
    """Switch on every quirk of the reference implementation (PAPER.md), in place; returns cfg."""
    cfg.faithful = True
    cfg.model.positions = "sincos"  # the reference's fixed table (it dominates the JEPA targets: docs/balancing.md)
    cfg.data.mode = "document"
    cfg.data.doc_chars = 512
    cfg.jepa.sampler = "reference"  # the reference's block rule, literally (data/samplers.py)
    cfg.jepa.predictor_mode = "per_block"  # one shared mask token, one predictor pass per block
    cfg.jepa.size_reference = "max_tokens"  # with tail_blocks, context_excludes_targets: `ours` only
    cfg.jepa.max_tokens = 512
    cfg.jepa.tail_blocks = True
    cfg.jepa.target_scale = (0.10, 0.25)
    cfg.jepa.context_scale = (0.65, 0.85)
    cfg.jepa.context_excludes_targets = False
    cfg.jepa.context_corrupted = True
    cfg.jepa.loss_over_padding = True
    cfg.jepa.target_layers = 1
    cfg.jepa.target_norm = "layer"
    cfg.jepa.loss = "cosine"
    cfg.objective.student_path = "separate"
    cfg.objective.balancer = "sigmoid"
    cfg.objective.attention_mask = False
    cfg.mlm.tie_decoder = False
    cfg.mlm.span = False
    cfg.optim.balancer_weight_decay = 0.05
    cfg.optim.balancer_lr = cfg.optim.lr
    cfg.optim.betas = (0.9, 0.999)
    cfg.optim.eps = 1e-8
    return cfg
