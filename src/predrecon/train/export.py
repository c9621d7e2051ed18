"""Export the student encoder alone, and load an encoder back for evaluation.

An exported encoder is a directory::

    model.safetensors   the Encoder's state dict
    config.json         {"format": "predrecon-encoder", "version": 2, "model": ModelConfig,
                         "vocab_size": int, "special_ids": {...}, "source": {...}}
    tokenizer.json      the run's tokenizer (``tokenizers`` format)
    MANIFEST.json       {"files": {name: sha256}} of the three files above, written last

Exporting never deletes what it did not write: ``--out`` must be new, empty or a previous export;
a previous export is replaced atomically (written beside, then swapped in), and when it also holds
other files (e.g. evaluation results) only the export's own four files are replaced, one rename each.
An export cannot go into (or above) its run or checkpoint directory.

:func:`load_encoder` accepts such a directory, a training run directory (its ``encoder/`` export if
present, else the newest valid checkpoint) or a checkpoint directory. An export is verified against
its manifest before anything is parsed (version-1 exports, which had none, load with a warning);
weights come only from safetensors, never from a pickle.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from ..config import ModelConfig, RunConfig
from ..data.shards import sha256_file, write_failure
from ..data.tokenizer import SpecialIds
from ..model.encoder import Encoder
from .checkpoint import (
    MANIFEST,
    CheckpointError,
    _fsync_tree,
    _safetensors,
    latest_valid_checkpoint,
    load_checkpoint,
    replace_dir,
    verify_checkpoint,
)
from .rundir import owner_tag

FORMAT = "predrecon-encoder"
VERSION = 2
PAYLOAD = ("model.safetensors", "config.json", "tokenizer.json")
OWNED = (*PAYLOAD, MANIFEST)


class ExportError(CheckpointError):
    """An export cannot be written where asked, or an exported encoder is corrupt or inconsistent."""


def _tokenizer_and_special(run_cfg: RunConfig) -> tuple[Path, SpecialIds]:
    from ..data.shards import TokenDataset

    ds = TokenDataset(run_cfg.data.path, verify=False)  # only its tokenizer is needed: check that one
    tok = Path(run_cfg.data.path) / "tokenizer.json"
    digest = ds.manifest.files.get("tokenizer.json")
    if digest is not None and sha256_file(tok) != digest:
        raise ExportError(f"{tok}: sha256 mismatch with the dataset manifest (corrupt tokenizer)")
    return tok, ds.special_ids


def _read_config(path: Path) -> dict | None:
    try:
        d = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def is_export(path: str | Path) -> bool:
    """True when ``path/config.json`` declares a predrecon encoder export."""
    d = _read_config(Path(path))
    return d is not None and d.get("format") == FORMAT


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies below it."""
    return a == b or b in a.parents


def _check_out(src: Path, ckpt: Path, out: Path) -> bool:
    """Refuse an unsafe ``out``; return True when it holds files that are not the export's own."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory")
    o = out.resolve()
    run = ckpt.resolve().parent.parent
    for d in dict.fromkeys((run, src.resolve(), ckpt.resolve())):  # the run dir named first
        if _inside(d, o):
            raise ExportError(f"--out {out}: would replace {d}, which holds the run; choose another directory "
                              f"(default: {src / 'encoder'})")
    if _inside(o, run / "checkpoints"):
        raise ExportError(f"--out {out}: inside the run's checkpoints, which are pruned; choose another directory")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not is_export(out):
        found = sorted(p.name for p in out.iterdir())
        raise ExportError(f"--out {out}: not empty and not a previous export (holds {', '.join(found[:4])}"
                          f"{' ...' if len(found) > 4 else ''}); nothing was written — choose a new or empty directory")
    return any(p.name not in OWNED for p in out.iterdir())


def export_encoder(run_or_ckpt: str | Path, out_dir: str | Path) -> Path:
    """Write the student encoder of a run (newest valid checkpoint) or of a checkpoint dir into
    ``out_dir`` (new, empty or a previous export; see the module docstring). Raises
    :class:`ExportError` for an unsafe ``out_dir`` or a full disk (nothing changed then)."""
    src = Path(run_or_ckpt)
    ckpt = src if (src / "state.json").exists() else latest_valid_checkpoint(src)
    if ckpt is None:
        raise CheckpointError(f"{src}: no valid checkpoint to export (train first, or pass a checkpoint dir)")
    out = Path(out_dir)
    _check_out(src, ckpt, out)
    loaded = load_checkpoint(ckpt)
    cfg = RunConfig.from_dict(loaded.state["config"])
    enc_sd = {k[len("encoder."):]: v for k, v in loaded.model.items() if k.startswith("encoder.")}
    tok_path, special = _tokenizer_and_special(cfg)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".export_" + owner_tag(), dir=out.parent))
        save_file({k: v.contiguous() for k, v in enc_sd.items()}, str(tmp / "model.safetensors"))
        meta = {"format": FORMAT, "version": VERSION, "model": asdict(cfg.model), "vocab_size": cfg.model.vocab_size,
                "special_ids": asdict(special),
                "source": {"checkpoint": str(ckpt), "step": loaded.step, "objective": cfg.objective.kind,
                           "balancer": cfg.objective.balancer, "preset": cfg.preset, "faithful": cfg.faithful,
                           "seed": cfg.train.seed}}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        shutil.copyfile(tok_path, tmp / "tokenizer.json")
        (tmp / MANIFEST).write_text(json.dumps({"files": {n: sha256_file(tmp / n) for n in PAYLOAD}}, indent=2))
        _fsync_tree(tmp)
        if _check_out(src, ckpt, out):  # re-checked just before the swap
            _replace_owned(tmp, out)
        else:
            replace_dir(tmp, out)
        tmp = None
    except Exception as e:  # noqa: BLE001 - filtered: only failed writes are rephrased
        why = write_failure(e)
        if why is None:
            raise
        raise ExportError(f"{out}: exporting failed: {why}; nothing was replaced") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _replace_owned(tmp: Path, out: Path) -> None:
    """Replace only the export's own files in ``out`` (which holds others too): the old manifest
    goes first and the new one comes last, so an interrupted swap never verifies."""
    (out / MANIFEST).unlink(missing_ok=True)
    for name in PAYLOAD:
        os.replace(tmp / name, out / name)
    os.replace(tmp / MANIFEST, out / MANIFEST)
    tmp.rmdir()


def verify_export(path: str | Path) -> dict:
    """Check an export against its manifest and return its parsed ``config.json``; raise
    :class:`ExportError` naming the first missing, corrupt or unreadable file."""
    path = Path(path)
    mf = path / MANIFEST
    if mf.is_file():
        try:
            files = json.loads(mf.read_text())["files"]
            assert isinstance(files, dict) and set(PAYLOAD) <= set(files)
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            raise ExportError(f"{mf}: unreadable or incomplete export manifest (re-export the encoder)") from None
        for name in PAYLOAD:
            f = path / name
            if not f.is_file():
                raise ExportError(f"{f}: missing from the export")
            if sha256_file(f) != files[name]:
                raise ExportError(f"{f}: sha256 differs from {MANIFEST} (corrupt or modified file; re-export)")
    meta = _read_config(path)
    if meta is None:
        raise ExportError(f"{path / 'config.json'}: unreadable (truncated or not JSON)")
    if meta.get("format") != FORMAT:
        raise ExportError(f"{path / 'config.json'}: not a predrecon encoder export (format={meta.get('format')!r})")
    if not mf.is_file():
        if meta.get("version", 1) >= 2:
            raise ExportError(f"{mf}: missing (incomplete export; re-export the encoder)")
        warnings.warn(f"{path}: export without {MANIFEST} (version 1): its files are not verified", stacklevel=3)
    return meta


def _load_state(enc: Encoder, sd: dict[str, torch.Tensor], weights: Path, config: Path) -> None:
    try:
        enc.load_state_dict(sd)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:160]
        raise ExportError(f"{weights}: weights do not match {config} ({detail})") from None


def _tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception
        raise ExportError(f"{path}: unreadable tokenizer ({str(e).splitlines()[0][:100]})") from None


def _load_export(path: Path) -> tuple[Encoder, Tokenizer, SpecialIds, ModelConfig]:
    meta = verify_export(path)
    try:
        mcfg = ModelConfig(**meta["model"])
        enc = Encoder(mcfg, int(meta["vocab_size"]))
        special = SpecialIds(**meta["special_ids"])
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{path / 'config.json'}: invalid encoder description ({e})") from None
    try:
        sd = _safetensors(path / "model.safetensors")
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    _load_state(enc, sd, path / "model.safetensors", path / "config.json")
    return enc.eval(), _tokenizer(path / "tokenizer.json"), special, mcfg


def _load_from_checkpoint(ckpt: Path) -> tuple[Encoder, Tokenizer, SpecialIds, ModelConfig]:
    loaded = load_checkpoint(ckpt)
    cfg = RunConfig.from_dict(loaded.state["config"])
    enc = Encoder(cfg.model, cfg.model.vocab_size)
    _load_state(enc, {k[len("encoder."):]: v for k, v in loaded.model.items() if k.startswith("encoder.")},
                ckpt / "model.safetensors", ckpt / "state.json")
    tok_path, special = _tokenizer_and_special(cfg)
    return enc.eval(), _tokenizer(tok_path), special, cfg.model


def _looks_like_export(p: Path) -> bool:
    """An export dir (possibly damaged): its files, and neither a checkpoint nor a run dir."""
    return ((p / "model.safetensors").exists() or (p / MANIFEST).exists() and (p / "tokenizer.json").exists()) \
        and not (p / "state.json").exists() and not (p / "checkpoints").is_dir()


def load_encoder(path: str | Path) -> tuple[Encoder, Tokenizer, SpecialIds, ModelConfig]:
    """Load ``(encoder in eval mode, tokenizer, special ids, model config)`` from an export dir,
    a run dir (``encoder/`` export if present, else newest valid checkpoint) or a checkpoint dir."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such encoder, run or checkpoint directory")
    if _looks_like_export(p):
        return _load_export(p)
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
