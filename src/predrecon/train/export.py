"""Export the student encoder alone, and load an encoder back for evaluation.

An exported encoder is a directory::

    model.safetensors   the Encoder's state dict
    config.json         {"format": "predrecon-encoder", "version": 1, "model": ModelConfig,
                         "vocab_size": int, "special_ids": {...}, "source": {...}}
    tokenizer.json      the run's tokenizer (``tokenizers`` format)

:func:`load_encoder` accepts such a directory, a training run directory (its ``encoder/``
export if present, else the newest valid checkpoint) or a checkpoint directory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from ..config import ModelConfig, RunConfig
from ..data.tokenizer import SpecialIds
from ..model.encoder import Encoder
from .checkpoint import CheckpointError, atomic_dir, latest_valid_checkpoint, load_checkpoint, verify_checkpoint

FORMAT = "predrecon-encoder"


def _tokenizer_and_special(run_cfg: RunConfig) -> tuple[Path, SpecialIds]:
    from ..data.shards import TokenDataset

    ds = TokenDataset(run_cfg.data.path)
    return Path(run_cfg.data.path) / "tokenizer.json", ds.special_ids


def export_encoder(run_or_ckpt: str | Path, out_dir: str | Path) -> Path:
    """Write the student encoder of a run (newest valid checkpoint) or of a checkpoint dir."""
    src = Path(run_or_ckpt)
    ckpt = src if (src / "state.json").exists() else latest_valid_checkpoint(src)
    if ckpt is None:
        raise CheckpointError(f"{src}: no valid checkpoint to export (train first, or pass a checkpoint dir)")
    loaded = load_checkpoint(ckpt)
    cfg = RunConfig.from_dict(loaded.state["config"])
    enc_sd = {k[len("encoder."):]: v for k, v in loaded.model.items() if k.startswith("encoder.")}
    tok_path, special = _tokenizer_and_special(cfg)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, prefix=".export_") as tmp:
        save_file({k: v.contiguous() for k, v in enc_sd.items()}, str(tmp / "model.safetensors"))
        meta = {"format": FORMAT, "version": 1, "model": asdict(cfg.model), "vocab_size": cfg.model.vocab_size,
                "special_ids": asdict(special),
                "source": {"checkpoint": str(ckpt), "step": loaded.step, "objective": cfg.objective.kind,
                           "balancer": cfg.objective.balancer, "preset": cfg.preset, "faithful": cfg.faithful,
                           "seed": cfg.train.seed}}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        shutil.copyfile(tok_path, tmp / "tokenizer.json")
    return out


def _load_export(path: Path) -> tuple[Encoder, Tokenizer, SpecialIds, ModelConfig]:
    meta = json.loads((path / "config.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}/config.json: not a predrecon encoder export (format={meta.get('format')!r})")
    mcfg = ModelConfig(**meta["model"])
    enc = Encoder(mcfg, meta["vocab_size"])
    enc.load_state_dict(load_file(str(path / "model.safetensors")))
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    return enc.eval(), tok, SpecialIds(**meta["special_ids"]), mcfg


def _load_from_checkpoint(ckpt: Path) -> tuple[Encoder, Tokenizer, SpecialIds, ModelConfig]:
    loaded = load_checkpoint(ckpt)
    cfg = RunConfig.from_dict(loaded.state["config"])
    enc = Encoder(cfg.model, cfg.model.vocab_size)
    enc.load_state_dict({k[len("encoder."):]: v for k, v in loaded.model.items() if k.startswith("encoder.")})
    tok_path, special = _tokenizer_and_special(cfg)
    return enc.eval(), Tokenizer.from_file(str(tok_path)), special, cfg.model


def load_encoder(path: str | Path) -> tuple[Encoder, Tokenizer, SpecialIds, ModelConfig]:
    """Load ``(encoder in eval mode, tokenizer, special ids, model config)`` from an export dir,
    a run dir (``encoder/`` export if present, else newest valid checkpoint) or a checkpoint dir."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such encoder, run or checkpoint directory")
    if (p / "config.json").exists() and (p / "model.safetensors").exists():
        try:
            return _load_export(p)
        except ValueError:
            pass  # a run dir also has config.json; fall through
    if (p / "encoder" / "model.safetensors").exists():
        return _load_export(p / "encoder")
    if (p / "state.json").exists():
        verify_checkpoint(p)
        return _load_from_checkpoint(p)
    ckpt = latest_valid_checkpoint(p)
    if ckpt is None:
        raise FileNotFoundError(f"{p}: neither an exported encoder nor a run with a valid checkpoint")
    return _load_from_checkpoint(ckpt)


@torch.no_grad()
def random_like(mcfg: ModelConfig, vocab_size: int, seed: int = 0) -> Encoder:
    """A randomly initialised encoder of the same shape (the evaluation floor)."""
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        enc = Encoder(mcfg, vocab_size)
    return enc.eval()
