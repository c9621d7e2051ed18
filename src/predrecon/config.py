"""Run configuration: one dataclass per component, nested in :class:`RunConfig`.

A run is a named preset (see :mod:`predrecon.presets`) plus ``key.sub=value`` overrides.
Invariants are checked in ``__post_init__``/:meth:`RunConfig.validate` and fail at start-up
with a :class:`ConfigError` that names the offending key.

Every difference between the paper's reference code and our default behaviour is a named
switch here; ``faithful=True`` in :func:`predrecon.presets.apply_faithful` sets all of them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _finite(section: Any, name: str) -> None:
    """Refuse NaN/inf in every float (and float-tuple) field of a section dataclass."""
    for f in fields(section):
        v = getattr(section, f.name)
        vals = v if isinstance(v, (tuple, list)) else (v,)
        for x in vals:
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"{name}.{f.name}: must be a finite number, got {v!r}")


def _pair(value: Any, key: str) -> tuple[float, float]:
    """A (lo, hi) pair of numbers; a scalar or another length is refused naming the key."""
    if isinstance(value, (int, float)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ConfigError(f"{key}: expected a pair of numbers written lo,hi, got {value!r}")
    try:
        return (float(value[0]), float(value[1]))
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected two numbers, got {value!r}") from None


MAX_TARGETS = 64  # more JEPA target blocks per sequence than this is a typo, not a recipe
DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass
class DataConfig:
    path: str = ""  # shard directory written by `predrecon data build`
    seq_len: int = 128
    # "packed": documents concatenated into fixed-length rows, attention never crosses a
    #           document boundary (segment ids), positions restart per document.
    # "document": the paper's layout, one document per row, first `doc_chars` characters,
    #           truncated/padded to seq_len.
    mode: str = "packed"
    doc_chars: int = 512
    min_doc_tokens: int = 8  # packed mode: documents shorter than this are dropped

    def __post_init__(self) -> None:
        _check(self.seq_len >= 8, "data.seq_len", f"must be >= 8, got {self.seq_len}")
        _check(self.min_doc_tokens >= 1, "data.min_doc_tokens", f"must be >= 1, got {self.min_doc_tokens}")
        _check(self.mode in ("packed", "document"), "data.mode",
               f"must be 'packed' or 'document', got {self.mode!r}")
        _check(self.doc_chars > 0, "data.doc_chars", "must be > 0")


@dataclass
class ModelConfig:
    vocab_size: int = 0  # 0 = take it from the data manifest's tokenizer
    pad_vocab_multiple: int = 64  # embedding/decoder rows padded to a multiple of this
    dim: int = 512
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    max_len: int = 512
    positions: str = "learned"  # sincos (the reference; position dominates JEPA targets) | learned | rope
    # "prenorm": ours (pre-LN blocks, final LayerNorm); "bert": post-LN, embedding LayerNorm,
    # token-type row 0, no final LayerNorm: the parameterisation of transformers' BertModel
    # (needs positions=learned; exports with `--format hf`; model/encoder.py FAMILIES)
    family: str = "prenorm"
    dropout: float = 0.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    pad_id: int = 0
    # attention kernel: "sdpa" (torch's scaled_dot_product_attention), "eager" (matmul + fp32
    # softmax + matmul; materialises the (B, H, T, T) scores), "auto" = eager on a CPU for short
    # rows (there torch's fused CPU kernel is slower: its bf16 backward ~4x), sdpa elsewhere
    attention: str = "auto"

    def __post_init__(self) -> None:
        _finite(self, "model")
        _check(self.dim > 0 and self.depth > 0 and self.heads > 0, "model", "dim/depth/heads must be > 0")
        _check(self.mlp_ratio > 0, "model.mlp_ratio", f"must be > 0, got {self.mlp_ratio}")
        _check(self.max_len >= 1, "model.max_len", f"must be >= 1, got {self.max_len}")
        _check(self.vocab_size >= 0, "model.vocab_size", f"must be >= 0 (0 = from the data), got {self.vocab_size}")
        _check(self.norm_eps > 0, "model.norm_eps", f"must be > 0, got {self.norm_eps}")
        _check(self.init_std > 0, "model.init_std", f"must be > 0, got {self.init_std}")
        _check(self.dim % self.heads == 0, "model.heads",
               f"dim={self.dim} is not divisible by heads={self.heads}")
        _check(self.positions in ("sincos", "learned", "rope"), "model.positions",
               f"must be sincos|learned|rope, got {self.positions!r}")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        _check(self.pad_vocab_multiple >= 1, "model.pad_vocab_multiple", "must be >= 1")
        _check(self.family in ("prenorm", "bert"), "model.family", f"must be prenorm|bert, got {self.family!r}")
        _check(self.attention in ("auto", "sdpa", "eager"), "model.attention",
               f"must be auto|sdpa|eager, got {self.attention!r}")
        _check(self.family != "bert" or self.positions == "learned", "model.positions",
               f"model.family=bert uses learned absolute positions, got {self.positions!r}")


@dataclass
class MLMConfig:
    prob: float = 0.15
    mask_frac: float = 0.8  # of the selected positions: [MASK]
    random_frac: float = 0.1  # random token; the rest stay unchanged
    span: bool = False  # span masking (geometric span lengths) instead of i.i.d. tokens
    mean_span: float = 3.0
    tie_decoder: bool = False  # tie the decoder to the input embedding (paper: untied)
    # objective kind "mlm" only (the mlm-matched arm): "mask" = the JEPA sampler's target blocks are
    # [MASK]ed in the student input as in the hybrid's shared path, without a JEPA loss;
    # "predict" = also predicted by MLM; "off" = plain MLM
    jepa_blocks: str = "off"

    def __post_init__(self) -> None:
        _finite(self, "mlm")
        _check(0.0 < self.prob < 1.0, "mlm.prob", f"must be in (0, 1), got {self.prob}")
        _check(self.jepa_blocks in ("off", "mask", "predict"), "mlm.jepa_blocks",
               f"must be off|mask|predict, got {self.jepa_blocks!r}")
        _check(self.mask_frac >= 0 and self.random_frac >= 0 and self.mask_frac + self.random_frac <= 1.0,
               "mlm.mask_frac", "mask_frac + random_frac must be <= 1")
        _check(self.mean_span >= 1.0, "mlm.mean_span", "must be >= 1")


@dataclass
class JEPAConfig:
    num_targets: int = 2
    target_scale: tuple[float, float] = (0.10, 0.25)  # fraction of the reference length per target block
    context_scale: tuple[float, float] = (0.85, 1.0)  # fraction kept as context (before removing targets)
    min_keep: int = 4  # minimum number of context tokens
    # block sampler (registry in data/samplers.py): "ours" = per document in packed rows;
    # "reference" = the reference code's rule, literally (faithful; docs/faithful.md)
    sampler: str = "ours"
    # "joint": one predictor pass over all target blocks, one mask token per block;
    # "per_block": the reference's one pass per target block with one shared mask token
    predictor_mode: str = "joint"
    # faithful quirks (each documented in docs/faithful.md):
    size_reference: str = "length"  # "length" = each sequence's real length; "max_tokens" = paper (512)
    max_tokens: int = 512
    tail_blocks: bool = False  # paper: blocks start such that they run to the sequence end
    context_excludes_targets: bool = True  # paper: False (context may contain target blocks)
    context_corrupted: bool = False  # paper: True (context encoder sees MLM-corrupted tokens)
    loss_over_padding: bool = False  # paper: True (mean over zero-padded target slots)
    # targets and loss
    target_layers: int = 1  # 1 = last layer (paper); K>1 = data2vec top-K mean
    # "instance": per-feature normalisation over each sequence's real tokens (data2vec), which keeps
    # the targets from being trivially predictable when the encoder is anisotropic;
    # "layer": the paper's parameter-free LayerNorm per token
    target_norm: str = "instance"
    loss: str = "cosine"  # cosine | smooth_l1 | mse
    # predictor
    predictor_dim: int = 192
    predictor_depth: int = 6
    predictor_heads: int = 4
    # EMA target encoder momentum, linear by step from start to end
    ema_start: float = 0.996
    ema_end: float = 1.0

    def __post_init__(self) -> None:
        self.target_scale = _pair(self.target_scale, "jepa.target_scale")
        self.context_scale = _pair(self.context_scale, "jepa.context_scale")
        _finite(self, "jepa")
        _check(1 <= self.num_targets <= MAX_TARGETS, "jepa.num_targets",
               f"must be in [1, {MAX_TARGETS}], got {self.num_targets}")
        _check(self.max_tokens >= 1, "jepa.max_tokens", f"must be >= 1, got {self.max_tokens}")
        _check(self.predictor_dim > 0 and self.predictor_depth > 0 and self.predictor_heads > 0,
               "jepa.predictor_dim", "predictor_dim/depth/heads must be > 0")
        lo, hi = self.target_scale
        _check(0 < lo <= hi < 1, "jepa.target_scale", f"need 0 < lo <= hi < 1, got {self.target_scale}")
        lo, hi = self.context_scale
        _check(0 < lo <= hi <= 1, "jepa.context_scale", f"need 0 < lo <= hi <= 1, got {self.context_scale}")
        _check(self.min_keep >= 1, "jepa.min_keep", "must be >= 1")
        _check(self.sampler in ("ours", "reference"), "jepa.sampler",
               f"must be ours|reference, got {self.sampler!r}")
        _check(self.predictor_mode in ("joint", "per_block"), "jepa.predictor_mode",
               f"must be joint|per_block, got {self.predictor_mode!r}")
        _check(self.size_reference in ("length", "max_tokens"), "jepa.size_reference",
               f"must be 'length' or 'max_tokens', got {self.size_reference!r}")
        _check(self.target_layers >= 1, "jepa.target_layers", "must be >= 1")
        _check(self.target_norm in ("layer", "instance"), "jepa.target_norm",
               f"must be 'layer' or 'instance', got {self.target_norm!r}")
        _check(self.loss in ("cosine", "smooth_l1", "mse"), "jepa.loss",
               f"must be cosine|smooth_l1|mse, got {self.loss!r}")
        _check(0.0 <= self.ema_start <= self.ema_end <= 1.0, "jepa.ema_start",
               f"need 0 <= ema_start <= ema_end <= 1, got {self.ema_start} -> {self.ema_end}")
        _check(self.predictor_dim % self.predictor_heads == 0, "jepa.predictor_heads",
               f"predictor_dim={self.predictor_dim} not divisible by predictor_heads={self.predictor_heads}")


@dataclass
class ObjectiveConfig:
    kind: str = "hybrid"  # hybrid | mlm | jepa
    # "shared": one student pass on the corrupted sequence (JEPA targets replaced by [MASK])
    #           serves both losses; "separate": the paper's two student passes.
    student_path: str = "shared"
    balancer: str = "gradnorm"  # sigmoid | fixed | uncertainty | gradnorm (see docs/balancing.md)
    fixed_lambda: float = 0.5  # weight of JEPA for `fixed` (L = λ·JEPA + (1-λ)·MLM)
    gradnorm_alpha: float = 1.5
    gradnorm_every: int = 10  # GradNorm updates its weights every k steps (its extra backward costs 1/k)
    attention_mask: bool = True  # paper: False (padding attended to)

    def __post_init__(self) -> None:
        _finite(self, "objective")
        _check(self.gradnorm_alpha >= 0, "objective.gradnorm_alpha", f"must be >= 0, got {self.gradnorm_alpha}")
        _check(self.kind in ("hybrid", "mlm", "jepa"), "objective.kind",
               f"must be hybrid|mlm|jepa, got {self.kind!r}")
        _check(self.student_path in ("shared", "separate"), "objective.student_path",
               f"must be shared|separate, got {self.student_path!r}")
        _check(0.0 <= self.fixed_lambda <= 1.0, "objective.fixed_lambda", "must be in [0, 1]")
        _check(self.gradnorm_every >= 1, "objective.gradnorm_every", "must be >= 1")


@dataclass
class OptimConfig:
    lr: float = 5e-4
    min_lr: float = 1e-5
    start_lr: float = 0.0  # lr at step 0 (paper: 1e-6)
    warmup_steps: int = 100
    weight_decay: float = 0.01
    balancer_lr: float = 1e-2  # lr of the balancer's own parameters (paper: same group as heads)
    balancer_weight_decay: float = 0.0  # paper: 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0  # 0 disables
    accum_steps: int = 1

    def __post_init__(self) -> None:
        self.betas = _pair(self.betas, "optim.betas")
        _finite(self, "optim")
        _check(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.min_lr <= self.lr, "optim.min_lr", "must be in [0, lr]")
        _check(0 <= self.start_lr <= self.lr, "optim.start_lr", f"must be in [0, lr], got {self.start_lr}")
        _check(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.balancer_lr >= 0, "optim.balancer_lr", f"must be >= 0, got {self.balancer_lr}")
        _check(self.balancer_weight_decay >= 0, "optim.balancer_weight_decay",
               f"must be >= 0, got {self.balancer_weight_decay}")
        _check(all(0 <= b < 1 for b in self.betas), "optim.betas", f"each must be in [0, 1), got {self.betas}")
        _check(self.eps > 0, "optim.eps", f"must be > 0, got {self.eps}")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        _check(self.accum_steps >= 1, "optim.accum_steps", "must be >= 1")
        _check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA and, for dim >= 128, on CPUs with AVX-512 BF16/AMX; else fp32)
    compile: bool = False  # torch.compile the encoder and predictor; index widths fixed per run
    prefetch: int = 0  # steps of batches + masks made ahead in a worker process; 0 = on the main thread
    log_every: int = 10
    ckpt_every: int = 200
    keep_ckpts: int = 2
    diag_every: int = 100  # collapse diagnostics
    collapse_std: float = 1e-3  # warn when a feature std falls below this
    collapse_rank: float = 1.1  # warn when effective rank (>= 1 by definition) falls below this
    collapse_rank_frac: float = 0.25  # warn when the student's token effective rank < this x its init value
    trivial_jepa: float = 0.25  # warn when position-only JEPA loss < this x the no-information loss
    max_nonfinite: int = 5  # stop after this many consecutive skipped (non-finite) steps
    diverge_factor: float = 3.0  # stop when the logged MLM loss exceeds this x its best value; 0 = off
    progress: bool = True
    init: str = ""  # "hf:DIR": start from a transformers BERT checkpoint (its shape sets model.*)
    tensorboard: str = "auto"  # auto (when the package is installed) | on (required) | off
    wandb: str = ""  # Weights & Biases project name; "" = off (never imported)
    distributed: str = "ddp"  # under torchrun: ddp (default) | fsdp (FSDP2 fully_shard); see docs/distributed.md
    dist_timeout: float = 600.0  # seconds any collective may wait for a peer before the job fails

    def __post_init__(self) -> None:
        _finite(self, "train")
        _check(self.steps >= 1, "train.steps", "must be >= 1")
        _check(isinstance(self.device, str) and DEVICE_RE.fullmatch(self.device) is not None, "train.device",
               f"must be auto|cpu|cuda|cuda:N|mps, got {self.device!r}")
        _check(self.keep_ckpts >= 1, "train.keep_ckpts", f"must be >= 1, got {self.keep_ckpts}")
        _check(self.collapse_std >= 0, "train.collapse_std", f"must be >= 0, got {self.collapse_std}")
        _check(self.collapse_rank >= 0, "train.collapse_rank", f"must be >= 0, got {self.collapse_rank}")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.precision in ("auto", "fp32", "bf16", "fp16"), "train.precision",
               f"must be auto|fp32|bf16|fp16, got {self.precision!r}")
        _check(self.log_every >= 1, "train.log_every", "must be >= 1")
        _check(self.distributed in ("ddp", "fsdp"), "train.distributed", f"must be ddp|fsdp, got {self.distributed!r}")
        _check(self.dist_timeout > 0, "train.dist_timeout", f"must be > 0 seconds, got {self.dist_timeout}")
        _check(isinstance(self.prefetch, int) and 0 <= self.prefetch <= 64, "train.prefetch",
               f"must be an integer in [0, 64], got {self.prefetch!r}")
        _check(self.ckpt_every >= 1, "train.ckpt_every", "must be >= 1")
        _check(self.diag_every >= 0, "train.diag_every", "must be >= 0")
        _check(0 <= self.collapse_rank_frac < 1, "train.collapse_rank_frac",
               f"must be in [0, 1), got {self.collapse_rank_frac}")
        _check(0 <= self.trivial_jepa < 1, "train.trivial_jepa", f"must be in [0, 1), got {self.trivial_jepa}")
        _check(self.max_nonfinite >= 1, "train.max_nonfinite", f"must be >= 1, got {self.max_nonfinite}")
        _check(self.tensorboard in ("auto", "on", "off"), "train.tensorboard",
               f"must be auto|on|off, got {self.tensorboard!r}")
        _check(not self.init or self.init.startswith("hf:"), "train.init",
               f"expected hf:DIR (a transformers BERT checkpoint), got {self.init!r}")
        _check(self.diverge_factor == 0 or self.diverge_factor > 1, "train.diverge_factor",
               f"must be 0 (off) or > 1, got {self.diverge_factor}")


@dataclass
class RunConfig:
    preset: str = "tiny"
    faithful: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mlm: MLMConfig = field(default_factory=MLMConfig)
    jepa: JEPAConfig = field(default_factory=JEPAConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        """Cross-component invariants; returns self."""
        _check(self.optim.warmup_steps < self.train.steps, "optim.warmup_steps",
               f"warm-up ({self.optim.warmup_steps}) must be shorter than train.steps ({self.train.steps})")
        _check(self.data.seq_len <= self.model.max_len, "data.seq_len",
               f"{self.data.seq_len} exceeds model.max_len={self.model.max_len}")
        if self.objective.kind != "mlm":
            _check(self.jepa.num_targets < self.data.seq_len, "jepa.num_targets",
                   f"{self.jepa.num_targets} target blocks do not fit in data.seq_len={self.data.seq_len}")
        if self.objective.kind != "mlm":
            _check(self.jepa.min_keep < self.data.seq_len, "jepa.min_keep",
                   f"min_keep={self.jepa.min_keep} must be < data.seq_len={self.data.seq_len}")
        _check(self.mlm.jepa_blocks == "off" or self.objective.kind == "mlm", "mlm.jepa_blocks",
               f"{self.mlm.jepa_blocks!r} needs objective.kind=mlm (the hybrid masks its blocks itself)")
        _check(self.mlm.jepa_blocks == "off" or self.objective.student_path == "shared", "mlm.jepa_blocks",
               "matches the shared student path; with objective.student_path=separate the hybrid's MLM pass "
               "sees plain MLM corruption, so plain mlm is the matched arm")
        _check(self.jepa.sampler != "reference" or self.data.mode == "document", "jepa.sampler",
               "'reference' works on one document per row: needs data.mode=document")
        return self

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            sub = _SECTIONS.get(f.name)
            if sub is not None:
                known = {g.name for g in fields(sub)}
                unknown = set(v) - known
                _check(not unknown, f.name, f"unknown keys {sorted(unknown)}")
                v = sub(**v)
            kw[f.name] = v
        return cls(**kw)


_SECTIONS: dict[str, type] = {
    "data": DataConfig, "model": ModelConfig, "mlm": MLMConfig, "jepa": JEPAConfig,
    "objective": ObjectiveConfig, "optim": OptimConfig, "train": TrainConfig,
}


def _parse_value(raw: str, current: Any, key: str) -> Any:
    """Parse an override string to the type of the current value."""
    if isinstance(current, bool):
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean, got {raw!r}")
    if isinstance(current, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {raw!r}") from None
    if isinstance(current, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {raw!r}") from None
    if isinstance(current, tuple):
        parts = [p for p in raw.replace("(", "").replace(")", "").split(",") if p.strip()]
        try:
            return tuple(type(current[0])(p) if current else float(p) for p in parts)
        except ValueError:
            raise ConfigError(f"{key}: expected a comma-separated tuple, got {raw!r}") from None
    return raw


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.key=value`` overrides and re-run every section's checks.

    Raises :class:`ConfigError` naming the key for unknown keys or unparsable values.
    """
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. train.steps=100)")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if len(parts) == 1:
            if parts[0] not in d or isinstance(d[parts[0]], dict):
                raise ConfigError(f"{key}: unknown key")
            d[parts[0]] = _parse_value(raw, d[parts[0]], key)
            continue
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise ConfigError(f"{key}: unknown key (sections: {', '.join(_SECTIONS)})")
        sec, name = parts
        if name not in d[sec]:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(d[sec]))})")
        cur = d[sec][name]
        d[sec][name] = _parse_value(raw, tuple(cur) if isinstance(cur, list) else cur, key)
    return RunConfig.from_dict(d).validate()


def replace(cfg: Any, **kw: Any) -> Any:
    """dataclasses.replace that re-runs __post_init__ checks."""
    return dataclasses.replace(cfg, **kw)
