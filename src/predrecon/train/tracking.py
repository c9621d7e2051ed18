"""Where training records go besides ``log.jsonl``: TensorBoard and (optionally) Weights & Biases.

:class:`Tracker` wraps the run's JSONL logger (anything with ``write(rec)`` / ``close()``) and
fans every record out to the sinks registered in :data:`SINKS` that the config switches on:

* ``tensorboard`` (``train.tensorboard``: ``auto`` = when the ``tensorboard`` package is
  installed, ``on`` = required, ``off``): event files in ``<run>/tensorboard/``, written with
  ``torch.utils.tensorboard.SummaryWriter``; on resume, events after the resumed step are purged
  (``purge_step``), as the JSONL log drops its records after it.
* ``wandb`` (``train.wandb=PROJECT``; off by default, and ``wandb`` is imported only then): one
  W&B run per run directory (its id is kept in ``<run>/wandb_id`` so a resume continues it).

Scalars: a training record (no ``event`` key) gives ``train/<key>`` for every finite number
(losses, ``lambda``, ``w_*``, ``lr``, ``momentum``, ``grad_norm``, ``gradnorm_*``, tokens/s ...);
a ``diagnostics`` record gives ``diag/<key>``; other events (start, end, stopped) are JSONL-only.
All scalars are logged at the record's ``step``.
"""

from __future__ import annotations

import importlib.util
import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..config import ConfigError, RunConfig

TB_DIR = "tensorboard"
_SKIP = {"step", "gradnorm_step"}


class Sink(Protocol):
    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def record_scalars(rec: dict[str, Any]) -> dict[str, float] | None:
    """``{tag: value}`` for a JSONL record (see module docstring), or ``None`` when the record is
    not a scalar record. Booleans, strings, lists and non-finite numbers are left out."""
    event = rec.get("event")
    if event is None:
        prefix = "train/"
    elif event == "diagnostics":
        prefix = "diag/"
    else:
        return None
    out = {}
    for k, v in rec.items():
        if k in _SKIP or k == "event" or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[prefix + k] = float(v)
    return out


class TensorBoardSink:
    """Scalars into ``<run>/tensorboard/`` event files (``purge_step`` on resume)."""

    def __init__(self, out: Path, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = out / TB_DIR
        self.writer = SummaryWriter(log_dir=str(self.dir), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, v in values.items():
            self.writer.add_scalar(tag, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Scalars to a Weights & Biases run (project ``train.wandb``), resumed across restarts."""

    def __init__(self, out: Path, cfg: RunConfig, resuming: bool):
        try:
            import wandb
        except ImportError:
            raise ConfigError(f"train.wandb={cfg.train.wandb!r}: the wandb package is not installed "
                              "(pip install wandb), or leave train.wandb empty") from None
        id_file = out / "wandb_id"
        if not (resuming and id_file.exists()):
            id_file.write_text(uuid.uuid4().hex[:16])
        self.run = wandb.init(project=cfg.train.wandb, id=id_file.read_text().strip(), resume="allow",
                              name=out.name, dir=str(out), config=cfg.to_dict())

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def _tensorboard(out: Path, cfg: RunConfig, start: int, resuming: bool) -> Sink | None:
    mode = cfg.train.tensorboard
    if mode == "off":
        return None
    if importlib.util.find_spec("tensorboard") is None:
        if mode == "on":
            raise ConfigError("train.tensorboard=on: the tensorboard package is not installed "
                              "(pip install tensorboard, or pip install 'predrecon[log]')")
        return None
    return TensorBoardSink(out, purge_step=start + 1 if resuming else None)


def _wandb(out: Path, cfg: RunConfig, start: int, resuming: bool) -> Sink | None:
    return WandbSink(out, cfg, resuming) if cfg.train.wandb else None


# name -> factory(out, cfg, start step, resuming) returning a sink or None (switched off)
SINKS: dict[str, Callable[[Path, RunConfig, int, bool], Sink | None]] = {"tensorboard": _tensorboard,
                                                                         "wandb": _wandb}


class Tracker:
    """``jsonl`` plus every sink the config switches on; ``write(rec)`` / ``close()`` like the
    JSONL logger it wraps. ``start``: the step the run (re)starts at; ``resuming``: from a checkpoint."""

    def __init__(self, jsonl: Any, cfg: RunConfig, out: str | Path, start: int = 0, resuming: bool = False):
        self.jsonl = jsonl
        self.sinks: dict[str, Sink] = {}
        for name, make in SINKS.items():
            sink = make(Path(out), cfg, start, resuming)
            if sink is not None:
                self.sinks[name] = sink

    def write(self, rec: dict[str, Any]) -> None:
        self.jsonl.write(rec)
        values = record_scalars(rec) if self.sinks else None
        if values:
            for sink in self.sinks.values():
                sink.scalars(values, int(rec["step"]))

    def close(self) -> None:
        self.jsonl.close()
        for sink in self.sinks.values():
            sink.close()
