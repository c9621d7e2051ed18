"""Complete, atomic, checksummed checkpoints (house rule 9).

A checkpoint is a directory ``<run>/checkpoints/step_XXXXXXXX/`` holding

* ``model.safetensors``    student encoder, MLM head, predictor, balancer (``HybridModel.state_dict()``)
* ``target.safetensors``   the EMA target encoder (JEPA objectives only)
* ``optimizer.pt``         optimizer state (tensors and numbers only; loaded with ``weights_only=True``)
* ``rng.safetensors``      CPU (and CUDA) RNG states as uint8 tensors
* ``state.json``           step, data-loader cursor, resolved config, extra metadata
* ``MANIFEST.json``        step and sha256 of every file above — written last

It is written into a temporary sibling directory (named after its writer, ``.tmp_<pid>@<host>~``),
fsynced and renamed into place, so a crash mid-save never leaves a half-written checkpoint under a
valid name. A state holding NaN/Inf is never saved (:class:`NonFiniteStateError`). Only after the new
checkpoint verifies are others pruned: those that fail verification and the older ones (by the step
stored inside, never by name or mtime) beyond ``keep``. Nothing is ever unpickled: tensors come from
safetensors, the optimizer state through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..data.shards import write_failure
from .rundir import owned_by_dead_writer, owner_tag

MANIFEST = "MANIFEST.json"
_PREFIX = "step_"
_TMP = ".tmp_"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or incompatible."""


class NonFiniteStateError(CheckpointError):
    """Refused to save a state holding NaN or Inf."""


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    return False


def replace_dir(new: Path, final: Path) -> None:
    """Put directory ``new`` at ``final``; an existing ``final`` is swapped out atomically where the
    OS allows (else moved aside first) and then removed. Only for directories we wrote."""
    if not final.exists():
        os.replace(new, final)
        return
    if _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # now holds the old contents
        return
    aside = final.parent / f"{new.name}.old"
    os.replace(final, aside)
    os.replace(new, final)
    shutil.rmtree(aside, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for p in root.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    with contextlib.suppress(OSError):  # directory fsync is not allowed everywhere
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def written_by_us(path: Path) -> bool:
    """True when ``path`` is missing, empty, or a directory a predrecon writer made (it holds a
    ``MANIFEST.json`` or a ``predrecon.json``): the only directories :func:`atomic_dir` replaces."""
    if not path.exists():
        return True
    if not path.is_dir():
        return False
    return not any(path.iterdir()) or (path / MANIFEST).is_file() or (path / "predrecon.json").is_file()


@contextlib.contextmanager
def atomic_dir(final: Path, prefix: str = _TMP, may_replace: Any = written_by_us) -> Iterator[Path]:
    """Yield a temporary sibling of ``final`` (tagged with this writer's pid and host) to fill; on
    success it is fsynced and replaces ``final`` (:func:`replace_dir`), on any error it is removed
    and ``final`` is left as it was. ``final`` is replaced only when ``may_replace(final)``
    (default :func:`written_by_us`), else :class:`CheckpointError` — nothing is written."""
    if not may_replace(final):
        found = sorted(p.name for p in final.iterdir()) if final.is_dir() else []
        raise CheckpointError(f"{final}: " + (f"not empty and not written by predrecon (holds {', '.join(found[:4])}"
                                              f"{' ...' if len(found) > 4 else ''})" if final.is_dir() else
                                              "exists and is not a directory")
                              + "; nothing was written — choose a new or empty directory")
    tmp = Path(tempfile.mkdtemp(prefix=prefix + owner_tag(), dir=final.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _tensors(obj: Any, name: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{name}.{k}" if name else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{name}.{i}" if name else str(i))


def non_finite_tensors(**parts: Any) -> list[str]:
    """Names (``part.key``) of floating-point tensors holding NaN or Inf in nested state dicts
    (one host sync per device)."""
    by_dev: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for part, obj in parts.items():
        for name, t in _tensors(obj, part):
            if t.is_floating_point() or t.is_complex():
                by_dev.setdefault(t.device, []).append((name, t))
    bad = []
    for items in by_dev.values():
        flags = torch.stack([torch.isfinite(t.detach()).all() for _, t in items]).cpu()
        bad += [n for (n, _), ok in zip(items, flags.tolist()) if not ok]
    return bad


def state_is_finite(*states: Any) -> bool:
    """True when every floating-point tensor in ``states`` (state dicts, optimizer state dicts,
    nested dicts/lists, ``None`` ignored) is finite. The training loop may call it before
    :func:`save_checkpoint`, which refuses a non-finite state anyway."""
    return not non_finite_tensors(**{f"s{i}": s for i, s in enumerate(states) if s is not None})


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
        keys = sorted((k for k in st if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))
        cuda = [st[k] for k in keys]  # by device number: as strings, "torch_cuda_10" sorts before "_2"
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(run_dir: str | Path, step: int, *, model: dict[str, torch.Tensor],
                    target: dict[str, torch.Tensor] | None, optimizer: dict[str, Any] | None,
                    state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically under ``run_dir/checkpoints``, verify it, then prune.

    Raises :class:`NonFiniteStateError` (nothing written, nothing pruned) when a tensor of
    ``model``/``target``/``optimizer`` holds NaN/Inf, and :class:`CheckpointError` when the disk is
    full (the temporary is removed, existing checkpoints are untouched). Pruning (``keep > 0``) removes
    checkpoints that fail verification and keeps the ``keep`` newest by stored step; checkpoints
    with a stored step above ``step`` (another trajectory) and other live writers' temporaries are
    never removed.
    """
    root = Path(run_dir) / "checkpoints"
    bad = non_finite_tensors(model=model, target=target, optimizer=optimizer)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteStateError(f"{root}: refusing to save step {step}: non-finite values (NaN/Inf) in "
                                  f"{', '.join(bad[:3])}{more}; the previous checkpoints are kept")
    final = root / f"{_PREFIX}{step:08d}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with atomic_dir(final, may_replace=lambda p: True) as tmp:  # step_* names are ours
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
    except Exception as e:  # noqa: BLE001 - filtered: only failed writes are rephrased
        why = write_failure(e)
        if why is None:
            raise
        raise CheckpointError(f"{final}: saving the checkpoint failed: {why}; nothing was replaced, the previous "
                              "checkpoints are kept") from None
    verify_checkpoint(final)
    if keep > 0:
        _prune(root, keep, final, step)
    _remove_dead_temporaries(root)
    return final


def _prune(root: Path, keep: int, new: Path, step: int) -> None:
    """Remove invalid checkpoints and the older ones beyond ``keep`` (``new`` counts as one)."""
    older = []
    for p in list_checkpoints(root.parent):
        if p == new:
            continue
        s = checkpoint_step(p)
        if s is None:
            shutil.rmtree(p, ignore_errors=True)
        elif s < step:
            older.append(p)
        else:
            try:  # same or later stored step: kept unless corrupt
                verify_checkpoint(p)
            except CheckpointError:
                shutil.rmtree(p, ignore_errors=True)
    kept = 1
    for p in reversed(older):  # newest first
        if kept < keep:
            try:
                verify_checkpoint(p, cached=True)
                kept += 1
                continue
            except CheckpointError:
                pass
        shutil.rmtree(p, ignore_errors=True)


def _remove_dead_temporaries(root: Path) -> None:
    for p in root.glob(_TMP + "*"):  # leftovers of a writer that died mid-save; never a live one's
        if owned_by_dead_writer(p, _TMP):
            shutil.rmtree(p, ignore_errors=True)


def checkpoint_step(path: str | Path) -> int | None:
    """The step stored in a checkpoint's manifest, or None when it has no readable manifest."""
    try:
        step = json.loads((Path(path) / MANIFEST).read_text())["step"]
        return int(step)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first by the step stored inside (those without a
    readable manifest first); no checksum verification."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)]
    steps = {p: checkpoint_step(p) for p in dirs}
    return sorted(dirs, key=lambda p: (steps[p] is not None, steps[p] or 0, p.name))


_VERIFIED: set[tuple[Any, ...]] = set()  # checkpoints verified by this process, with their files' stats


def _signature(path: Path) -> tuple[Any, ...]:
    return (str(path.resolve()),) + tuple(sorted((p.name, st.st_size, st.st_mtime_ns, st.st_ino)
                                                 for p in path.iterdir() for st in [p.stat()]))


def verify_checkpoint(path: str | Path, *, cached: bool = False) -> None:
    """Raise :class:`CheckpointError` unless every file listed in the manifest matches its sha256
    and ``state.json`` holds the manifest's step. ``cached``: skip a checkpoint this process
    already verified and whose files are unchanged since (size, mtime, inode)."""
    path = Path(path)
    try:
        sig = _signature(path)
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable checkpoint directory ({e})") from None
    if cached and sig in _VERIFIED:
        return
    _verify(path)
    _VERIFIED.add(sig)


def _verify(path: Path) -> None:
    mf = path / MANIFEST
    if not mf.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST} (incomplete or not a checkpoint)")
    try:
        manifest = json.loads(mf.read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or "state.json" not in files:
            raise ValueError("no file list")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{mf}: unreadable manifest ({e})") from None
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path}: missing file {name}")
        if _sha256(f) != digest:
            raise CheckpointError(f"{path}: checksum mismatch in {name} (corrupt checkpoint)")
    try:
        step = json.loads((path / "state.json").read_text())["step"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}/state.json: unreadable ({e})") from None
    if step != manifest.get("step"):
        raise CheckpointError(f"{path}: state.json step {step} differs from the manifest's {manifest.get('step')}")


def latest_valid_checkpoint(run_dir: str | Path) -> Path | None:
    """Checkpoint with the highest stored step whose checksums verify; corrupt ones are skipped
    with a warning."""
    for p in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(p)
            return p
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint: {e}", stacklevel=2)
    return None


def _safetensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=device)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None


def load_checkpoint(path: str | Path, *, verify: bool = True, map_location: str = "cpu") -> Loaded:
    """Load a checkpoint directory (safetensors + ``weights_only`` torch.load; no pickles run)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if verify:
        verify_checkpoint(path)
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}/state.json: unreadable ({e})") from None
    model = _safetensors(path / "model.safetensors", map_location)
    tgt_file = path / "target.safetensors"
    target = _safetensors(tgt_file, map_location) if tgt_file.exists() else None
    opt_file = path / "optimizer.pt"
    optimizer = None
    if opt_file.exists():
        try:
            optimizer = torch.load(opt_file, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - surface any unpickling refusal as a clear error
            raise CheckpointError(f"{opt_file}: refused to load ({e})") from None
    rng = _safetensors(path / "rng.safetensors")
    return Loaded(path, int(state["step"]), model, target, optimizer, rng, state)
