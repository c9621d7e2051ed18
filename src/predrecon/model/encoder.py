"""Transformer text encoder (native PyTorch; attention through SDPA, or on a CPU a plain
matmul-softmax-matmul where that is faster: ``model.attention``), in two families
(``model.family``, registry :data:`FAMILIES`):

* ``prenorm`` (default; PAPER.md, "Encoder"): token embedding (+ absolute positions for
  ``sincos`` / ``learned``), no segment embeddings, no embedding LayerNorm; ``depth`` blocks of
  ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` (fused qkv, exact GELU); a final LayerNorm.
* ``bert``: the parameterisation of ``transformers.BertModel``, so that a checkpoint maps onto
  it exactly (``predrecon.interop.hf``): word + token-type (row 0: every token is type 0) +
  learned absolute position embeddings, embedding LayerNorm, post-LN blocks
  ``LN(x + Attn(x))``, ``LN(x + MLP(x))`` (exact GELU, biases everywhere), no final LayerNorm;
  init normal(0, ``init_std``) without the depth rescaling.

Parameter names are chosen so that a state dict maps one-to-one onto the usual BERT-style
layout (fused ``qkv`` splits row-wise into query / key / value, ``[q; k; v]``, heads contiguous):

* ``tok_emb.weight`` (V_pad, D), ``pos_emb.weight`` (max_len, D) — absent for ``rope``
* ``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``,
  ``blocks.{i}.norm2``, ``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2``
* ``norm`` (final LayerNorm) — ``prenorm`` only
* ``type_emb.weight`` (2, D), ``emb_norm`` — ``bert`` only (post-LN blocks keep the names above)

With ``positions="sincos"`` the position table is a *frozen* ``nn.Embedding`` filled with the
fixed sin/cos table (``requires_grad=False``), as the reference keeps it as a non-trainable
parameter; it therefore counts in :func:`num_parameters` (that is how the paper's 34.8 M is
counted) and is never updated by an optimiser.

The module holds no training, precision or distributed logic; ``forward`` has no
data-dependent Python control flow (compile-friendly) and no host synchronisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig

ROPE_BASE = 10000.0


class EncoderOutput(NamedTuple):
    """``last_hidden_state`` (B, T, D): output of the final LayerNorm (``bert``: of the last block).

    ``hidden_states`` (only when asked, else ``None``): tuple of ``depth + 1`` tensors (B, T, D):
    entry 0 is the embedding output (token + absolute position embedding, after dropout;
    ``bert``: + token-type row 0, after the embedding LayerNorm), entry ``l`` for
    ``1 <= l < depth`` is the raw residual stream after block ``l`` (not normalised; ``bert``:
    the block's output, post-LN), and entry ``depth`` (the last) is identical to
    ``last_hidden_state``. For ``bert`` this is exactly ``BertModel``'s ``hidden_states``.
    """

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


# ----------------------------------------------------------------------------- positions
def sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sin/cos position table (num_positions, dim), float32.

    ``table[p, i] = sin(p * w_i)`` for ``i < dim/2`` and ``cos(p * w_{i - dim/2})`` otherwise,
    with ``w_i = 10000^(-i / (dim/2))`` (halves concatenated, as in I-JEPA / MAE).
    """
    if dim % 2 != 0:
        raise ValueError(f"sincos positions need an even dimension, got dim={dim}")
    half = dim // 2
    omega = 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float64) / half))  # (D/2,)
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * omega[None, :]  # (P, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()  # (P, D)


def make_position_embedding(kind: str, max_len: int, dim: int) -> nn.Embedding | None:
    """Absolute position table for ``kind`` in {sincos, learned}; ``None`` for ``rope``.

    ``sincos`` returns a frozen embedding (``requires_grad=False``) holding :func:`sincos_table`.
    """
    if kind == "rope":
        return None
    if kind not in ("sincos", "learned"):
        raise ValueError(f"positions must be sincos|learned|rope, got {kind!r}")
    emb = nn.Embedding(max_len, dim)
    if kind == "sincos":
        with torch.no_grad():
            emb.weight.copy_(sincos_table(max_len, dim))
        emb.weight.requires_grad_(False)
    return emb


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, base: float = ROPE_BASE
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables for ``position_ids`` (B, T) -> ``cos, sin`` each (B, 1, T, head_dim), fp32.

    Rotate-half convention (GPT-NeoX / Hugging Face ``rotate_half``): frequency ``j`` acts on
    the pair of channels ``(j, j + head_dim/2)``.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=position_ids.device,
                                             dtype=torch.float32) / head_dim))  # (hd/2,)
    freqs = position_ids.float()[:, :, None] * inv_freq[None, None, :]  # (B, T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, hd)
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, H, T, hd) by the tables from :func:`rope_cos_sin`; keeps ``x.dtype``."""
    return x * cos.to(x.dtype) + _rotate_half(x) * sin.to(x.dtype)


def segment_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Boolean SDPA mask (B, 1, T, T) from ``segment_ids`` (B, T), True = may attend.

    Query ``i`` attends key ``j`` iff ``seg[i] == seg[j]`` and ``seg[j] > 0`` (0 = padding);
    the diagonal is always allowed so padding query rows have one key and stay finite.
    """
    return key_attention_mask(segment_ids > 0, segment_ids)


def key_attention_mask(key_valid: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean SDPA mask (B, 1, L, L): query ``i`` attends key ``j`` iff ``key_valid[j]`` (and
    ``groups[i] == groups[j]`` when ``groups`` is given), plus the diagonal (finite padded rows)."""
    L = key_valid.shape[1]
    allowed = key_valid[:, None, :].expand(-1, L, -1)  # (B, L, L)
    if groups is not None:
        allowed = allowed & (groups[:, :, None] == groups[:, None, :])
    eye = torch.eye(L, dtype=torch.bool, device=key_valid.device)
    return (allowed | eye)[:, None]  # (B, 1, L, L)


# ----------------------------------------------------------------------------- attention
ATTENTION_IMPLS = ("auto", "sdpa", "eager")
# ``auto`` uses the eager kernel on a CPU up to these row lengths (fp32 / 16-bit activations).
# Measured on 2 cores (AVX-512 BF16), B x 8 heads x T x 64, forward + backward, eager vs SDPA:
# T = 128 (B = 8) fp32 10.1 vs 11.6 ms, bf16 6.2 vs 17.5 ms; T = 256 (B = 2) fp32 6.8 vs 7.3 ms,
# bf16 4.2 vs 7.4 ms; T = 512 fp32 32.3 vs 27.2 ms, bf16 16.6 vs 25.4 ms; T = 1024 eager loses in both.
EAGER_MAX_LEN_CPU = {torch.float32: 256, torch.bfloat16: 512, torch.float16: 512}


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T / sqrt(hd) + mask) v`` as three plain ops in the input dtype (a bf16 or fp16
    softmax accumulates in fp32 inside torch's kernel).
    ``attn_mask``: bool (True = may attend; every query row must allow one key) or additive
    float, broadcastable to the scores — the semantics of ``F.scaled_dot_product_attention``."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.to(scores.dtype)
    # softmax in the scores' dtype: torch computes a bf16/fp16 softmax in fp32 and rounds the
    # result, so the probabilities are those of an fp32 softmax cast back (a few in 10^4 differ by
    # one ulp), without the two (B, H, Tq, Tk) casts and the fp32 copy kept for the backward (whose
    # gradients then differ by bf16 rounding); measured at 8 x 8 heads x 128 x 64 bf16 on 2 cores,
    # forward + backward 13.3 -> 8.8 ms
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    return probs @ v


def resolve_attention(impl: str, q: torch.Tensor) -> str:
    """``sdpa`` or ``eager`` for ``impl`` (see :data:`ATTENTION_IMPLS`) on queries ``q`` (B, H, T, hd):
    ``auto`` is eager on a CPU for ``T <= EAGER_MAX_LEN_CPU[q.dtype]`` and sdpa otherwise
    (device, dtype and shape only: fixed for a compiled graph)."""
    if impl == "auto":
        cap = EAGER_MAX_LEN_CPU.get(q.dtype, 0) if q.device.type == "cpu" else 0
        return "eager" if q.shape[-2] <= cap else "sdpa"
    if impl not in ("sdpa", "eager"):
        raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {impl!r}")
    return impl


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, impl: str = "auto") -> torch.Tensor:
    """Scaled dot-product attention (B, H, T, hd) by the kernel :func:`resolve_attention` picks."""
    if resolve_attention(impl, q) == "eager":
        return eager_attention(q, k, v, attn_mask, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


# ----------------------------------------------------------------------------- blocks
class Attention(nn.Module):
    """Multi-head self-attention: fused ``qkv`` Linear, :func:`attention` (``impl``), output ``proj``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, impl: str = "auto"):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.impl = impl
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        q, k, v = qkv.unbind(0)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = attention(q, k, v, attn_mask, self.dropout if self.training else 0.0, self.impl)  # (B, H, T, hd)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))  # (B, T, D)

    def forward_rows(self, x_rows: torch.Tensor, x: torch.Tensor, attn_mask: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Attention output (B, R, D) for the queries ``x_rows`` (B, R, D) over the keys and values
        of ``x`` (B, T, D); ``attn_mask`` broadcastable to (B, H, R, T). The query projection runs
        on the R rows only (the fused ``qkv`` weight's first D rows), keys and values on all T."""
        B, T, D = x.shape
        R = x_rows.shape[1]
        w, b = self.qkv.weight, self.qkv.bias
        q = F.linear(x_rows, w[:D], b[:D]).view(B, R, self.heads, self.head_dim).transpose(1, 2)
        kv = F.linear(x, w[D:], b[D:]).view(B, T, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = attention(q, kv[0], kv[1], attn_mask, self.dropout if self.training else 0.0, self.impl)
        return self.proj(out.transpose(1, 2).reshape(B, R, D))  # (B, R, D)


class MLP(nn.Module):
    """``fc2(GELU(fc1(x)))`` with hidden width ``int(dim * ratio)``."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN Transformer block: ``x + drop(Attn(LN(x)))`` then ``x + drop(MLP(LN(x)))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6,
                 dropout: float = 0.0, attention: str = "auto"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, dropout, attention)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_ratio)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), attn_mask, rope))
        return x + self.drop(self.mlp(self.norm2(x)))

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor, attn_mask: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """The block's output at the rows ``rows`` (B, R) of ``x`` (B, T, D) only: equal to
        ``self(x, mask)`` gathered at ``rows`` when ``attn_mask`` holds those rows of ``mask``
        (broadcastable to (B, H, R, T)), for a fraction of the work when R < T (where only some
        outputs are read, as the predictor's last block). No rotary positions."""
        idx = rows[..., None].expand(*rows.shape, x.shape[-1])  # (B, R, D)
        h = self.norm1(x)
        xr = x.gather(1, idx) + self.drop(self.attn.forward_rows(h.gather(1, idx), h, attn_mask))
        return xr + self.drop(self.mlp(self.norm2(xr)))


class PostNormBlock(Block):
    """Post-LN block (BERT): ``LN1(x + drop(Attn(x)))`` then ``LN2(x + drop(MLP(x)))``; the same
    parameters (and names) as :class:`Block`."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, attn_mask, rope)))
        return self.norm2(x + self.drop(self.mlp(x)))

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor, attn_mask: torch.Tensor | None = None
                     ) -> torch.Tensor:
        xr = x.gather(1, rows[..., None].expand(*rows.shape, x.shape[-1]))  # (B, R, D)
        xr = self.norm1(xr + self.drop(self.attn.forward_rows(xr, x, attn_mask)))
        return self.norm2(xr + self.drop(self.mlp(xr)))


@dataclass(frozen=True)
class Family:
    """What distinguishes an encoder family: block type, final / embedding LayerNorm, number of
    token-type rows (0 = none), and whether output projections get the depth rescaling at init."""

    block: type[Block]
    final_norm: bool
    embed_norm: bool
    type_vocab: int
    rescale_init: bool


FAMILIES: dict[str, Family] = {
    "prenorm": Family(Block, final_norm=True, embed_norm=False, type_vocab=0, rescale_init=True),
    "bert": Family(PostNormBlock, final_norm=False, embed_norm=True, type_vocab=2, rescale_init=False),
}


def get_family(name: str) -> Family:
    """The :class:`Family` registered as ``name``; raises ``ValueError`` naming the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"model.family: unknown family {name!r} (known: {', '.join(FAMILIES)})") from None


def init_weights_(module: nn.Module, std: float) -> None:
    """Initialise in place: Linear/Embedding weights trunc-normal(0, std) (truncated at the
    absolute bounds ±2, as timm / I-JEPA, i.e. effectively untruncated for std 0.02), biases 0,
    LayerNorm weight 1 / bias 0. Frozen (``requires_grad=False``) tables are left untouched."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            if m.weight.requires_grad:
                nn.init.trunc_normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def rescale_output_projections_(blocks: nn.ModuleList) -> None:
    """Divide ``attn.proj`` and ``mlp.fc2`` weights of block ``l`` (1-based) by ``sqrt(2 l)``
    (I-JEPA's ``fix_init_weight``; PAPER.md "Init")."""
    with torch.no_grad():
        for layer, block in enumerate(blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple``."""
    return ((vocab_size + multiple - 1) // multiple) * multiple


# ----------------------------------------------------------------------------- encoder
class Encoder(nn.Module):
    """Transformer encoder for ``cfg`` of family ``cfg.family`` (see module docstring).

    ``vocab_size`` is the tokenizer's real vocabulary; the embedding has
    ``padded_vocab = ceil(vocab_size / cfg.pad_vocab_multiple) * cfg.pad_vocab_multiple`` rows
    (the padded rows are never predicted by the heads).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be > 0, got {vocab_size} (model.vocab_size=0 means "
                             "'take it from the tokenizer': resolve it before building the encoder)")
        if cfg.positions == "rope" and (cfg.dim // cfg.heads) % 2 != 0:
            raise ValueError(f"model.positions=rope needs an even head dim, got {cfg.dim // cfg.heads}")
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.padded_vocab = padded_vocab_size(vocab_size, cfg.pad_vocab_multiple)
        self.dim = cfg.dim
        self.depth = cfg.depth
        self.positions = cfg.positions
        self.head_dim = cfg.dim // cfg.heads
        self.family = cfg.family
        fam = get_family(cfg.family)

        self.tok_emb = nn.Embedding(self.padded_vocab, cfg.dim)
        self.pos_emb = make_position_embedding(cfg.positions, cfg.max_len, cfg.dim)
        self.type_emb = nn.Embedding(fam.type_vocab, cfg.dim) if fam.type_vocab else None
        self.emb_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps) if fam.embed_norm else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            fam.block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.norm_eps, cfg.dropout, cfg.attention)
            for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps) if fam.final_norm else None

        init_weights_(self, cfg.init_std)
        if fam.rescale_init:
            rescale_output_projections_(self.blocks)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                segment_ids: torch.Tensor | None = None, output_hidden_states: bool = False
                ) -> EncoderOutput:
        """Encode ``input_ids`` (B, T) -> :class:`EncoderOutput`.

        ``position_ids`` (B, T) default ``arange(T)`` for every row; ``segment_ids`` (B, T)
        restricts attention to equal non-zero segments (0 = padding, see
        :func:`segment_attention_mask`); ``None`` = attend everywhere (the paper's no-mask mode).
        """
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        x = self.tok_emb(input_ids)  # (B, T, D)
        if self.type_emb is not None:  # every token is of type 0 (BertModel's addition order)
            x = x + self.type_emb.weight[0]
        rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb(position_ids)
        else:
            rope = rope_cos_sin(position_ids, self.head_dim)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        x = self.drop(x)
        attn_mask = segment_attention_mask(segment_ids) if segment_ids is not None else None

        hidden: list[torch.Tensor] = [x] if output_hidden_states else []
        for block in self.blocks:
            x = block(x, attn_mask, rope)
            if output_hidden_states:
                hidden.append(x)
        if self.norm is not None:
            x = self.norm(x)
        if output_hidden_states:
            hidden[-1] = x
            return EncoderOutput(x, tuple(hidden))
        return EncoderOutput(x, None)


def num_parameters(model: nn.Module, exclude_embeddings: bool = False, trainable_only: bool = False) -> int:
    """Number of (distinct) parameters of ``model``.

    ``exclude_embeddings`` drops every ``nn.Embedding`` weight (token and position tables);
    ``trainable_only`` drops parameters with ``requires_grad=False`` (e.g. the frozen sin/cos
    table). Shared (tied) parameters are counted once.
    """
    skip: set[int] = set()
    if exclude_embeddings:
        skip = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return sum(p.numel() for p in model.parameters()
               if id(p) not in skip and (p.requires_grad or not trainable_only))
