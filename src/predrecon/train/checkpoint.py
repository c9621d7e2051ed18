"""Complete, atomic, checksummed checkpoints (house rule 9).

A checkpoint is a directory ``<run>/checkpoints/step_XXXXXXXX/`` holding

* ``model.safetensors``    student encoder, MLM head, predictor, balancer (``HybridModel.state_dict()``)
* ``target.safetensors``   the EMA target encoder (JEPA objectives only)
* ``optimizer.pt``         optimizer state (tensors and numbers only; loaded with ``weights_only=True``)
* ``rng.safetensors``      CPU (and CUDA) RNG states as uint8 tensors
* ``state.json``           step, data-loader cursor, resolved config, extra metadata
* ``MANIFEST.json``        sha256 of every file above — written last

It is written into a temporary sibling directory and renamed into place, so a crash mid-save never
leaves a half-written checkpoint under a valid name. Nothing is ever unpickled: tensors come from
safetensors, the optimizer state through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

MANIFEST = "MANIFEST.json"
_PREFIX = "step_"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or incompatible."""


@contextlib.contextmanager
def atomic_dir(final: Path, prefix: str = ".tmp_"):
    """Yield a temporary sibling of ``final`` to fill; on success it replaces ``final`` in one
    rename, on any error it is removed and ``final`` is left as it was."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage (tied weights) and non-contiguous tensors
    out, seen = {}, {}
    for k, v in sd.items():
        v = v.detach().cpu()
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        out[k] = v.clone().contiguous() if key in seen else v.contiguous()
        seen[key] = k
    return out


@dataclass
class Loaded:
    """What :func:`load_checkpoint` returns."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any] | None
    rng: dict[str, torch.Tensor]
    state: dict[str, Any]


def rng_state() -> dict[str, torch.Tensor]:
    st = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            st[f"torch_cuda_{i}"] = s
    return st


def set_rng_state(st: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(st["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [st[k] for k in sorted(st) if k.startswith("torch_cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(run_dir: str | Path, step: int, *, model: dict[str, torch.Tensor],
                    target: dict[str, torch.Tensor] | None, optimizer: dict[str, Any] | None,
                    state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically under ``run_dir/checkpoints``; prune to ``keep`` newest."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{step:08d}"
    with atomic_dir(final) as tmp:
        save_file(_contiguous(model), str(tmp / "model.safetensors"))
        if target is not None:
            save_file(_contiguous(target), str(tmp / "target.safetensors"))
        if optimizer is not None:
            torch.save(optimizer, tmp / "optimizer.pt")
        save_file({k: v.contiguous() for k, v in rng_state().items()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2, sort_keys=True))
        files = sorted(p.name for p in tmp.iterdir())
        manifest = {"step": step, "files": {n: _sha256(tmp / n) for n in files}}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    ckpts = list_checkpoints(root.parent)
    for p in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp_*"):  # leftovers of a crash mid-save
        shutil.rmtree(p, ignore_errors=True)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (no validity check)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))


def verify_checkpoint(path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless every file listed in the manifest matches its sha256."""
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST} (incomplete or not a checkpoint)")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{mf}: unreadable manifest ({e})") from None
    for name, digest in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path}: missing file {name}")
        if _sha256(f) != digest:
            raise CheckpointError(f"{path}: checksum mismatch in {name} (corrupt checkpoint)")


def latest_valid_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest checkpoint whose checksums verify; corrupt ones are skipped with a warning."""
    for p in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(p)
            return p
        except CheckpointError as e:
            import warnings

            warnings.warn(f"skipping checkpoint: {e}", stacklevel=2)
    return None


def load_checkpoint(path: str | Path, *, verify: bool = True, map_location: str = "cpu") -> Loaded:
    """Load a checkpoint directory (safetensors + ``weights_only`` torch.load; no pickles run)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if verify:
        verify_checkpoint(path)
    state = json.loads((path / "state.json").read_text())
    model = load_file(str(path / "model.safetensors"), device=map_location)
    tgt_file = path / "target.safetensors"
    target = load_file(str(tgt_file), device=map_location) if tgt_file.exists() else None
    opt_file = path / "optimizer.pt"
    optimizer = None
    if opt_file.exists():
        try:
            optimizer = torch.load(opt_file, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - surface any unpickling refusal as a clear error
            raise CheckpointError(f"{opt_file}: refused to load ({e})") from None
    rng = load_file(str(path / "rng.safetensors"))
    return Loaded(path, int(state["step"]), model, target, optimizer, rng, state)
