"""Run-directory safety: one writer per directory, owner-tagged temporaries, finished runs, logs.

* :class:`RunLock` — ``<run>/.lock`` names the writer (pid, host, start time, command). It is held
  with ``fcntl.flock`` for the writer's lifetime, so the kernel releases it when the writer dies
  (SIGKILL included); a lock file left by a dead writer is taken over with a warning. Where
  ``flock`` is unavailable the file is created exclusively and a lock naming a dead pid on this
  host is stale. A lock held by a live writer — or naming another host, whose pids cannot be
  checked — is refused with :class:`RunLockedError` naming the owner.
* :func:`owner_tag` / :func:`owned_by_dead_writer` — temporary directories carry
  ``<pid>@<host>~`` so that cleaning up never deletes another live writer's work in progress.
* :func:`finished_summary` — what ``--resume auto`` reports for a run that already reached its
  last step (nothing is rewritten, no record appended).
* :func:`read_jsonl` — a log whose last line was torn by a crash is read without it (warning).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_LEGACY_TMP_AGE_S = 3600.0  # a temporary without an owner tag is removed only when this old


class RunLockedError(RuntimeError):
    """Another live writer holds the run directory."""


def hostname() -> str:
    return socket.gethostname() or "localhost"


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (a permission refusal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_tag() -> str:
    """``<pid>@<host>~``: the prefix a writer gives its temporaries (see :func:`owned_by_dead_writer`)."""
    return f"{os.getpid()}@{hostname()}~"


def owned_by_dead_writer(path: Path, prefix: str) -> bool:
    """True when the temporary ``path`` (named ``<prefix><pid>@<host>~...``) belongs to a writer that
    is no longer alive on this host. Another host's, this process's or a live process's temporaries
    are never reported dead; an untagged (older-format) one only when untouched for an hour."""
    rest = path.name[len(prefix):]
    pid_s, at, tail = rest.partition("@")
    host, tilde, _ = tail.rpartition("~")
    if not (at and tilde and pid_s.isdigit()):
        try:
            return time.time() - path.stat().st_mtime > _LEGACY_TMP_AGE_S
        except OSError:
            return False
    pid = int(pid_s)
    if host != hostname() or pid == os.getpid():
        return False
    return not pid_alive(pid)


def _describe(info: dict[str, Any]) -> str:
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('started', '?')}"
            + (f" ({info['command']})" if info.get("command") else ""))


def _read_info(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """Exclusive writer lock on a run directory (a context manager; also ``acquire``/``release``).

    Raises :class:`RunLockedError` naming the owner when another live writer holds it.
    """

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None

    def _info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": hostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}

    def _refuse(self, info: dict[str, Any]) -> RunLockedError:
        return RunLockedError(f"{self.run_dir}: in use by another writer, {_describe(info)} (lock file "
                              f"{self.path}); wait for it to finish or choose another --out"
                              + ("" if info.get("host") in (None, hostname()) else
                                 "; if that run is no longer alive, delete the lock file"))

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not self._flock(fd):
                    raise self._refuse(_read_info(self.path))
                if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                    os.close(fd)  # the file was replaced between open and flock: try again
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            old = _read_info(self.path)
            if old and old.get("host") not in (None, hostname()):
                os.close(fd)
                raise self._refuse(old)
            if old.get("pid") not in (None, os.getpid()):
                self.took_over = old
                warnings.warn(f"{self.path}: taking over a stale lock of {_describe(old)} (writer no longer running)",
                              stacklevel=2)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self._info()).encode(), 0)
            os.fsync(fd)
            self._fd = fd
            return self
        raise RunLockedError(f"{self.path}: could not take the lock (it keeps being replaced)")

    def _flock(self, fd: int) -> bool:
        """Take ``flock``; False when another process holds it. Falls back to pid liveness where
        the filesystem has no ``flock``."""
        if fcntl is None:
            return self._pid_fallback()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return self._pid_fallback()
            raise

    def _pid_fallback(self) -> bool:
        info = _read_info(self.path)
        if not info or info.get("pid") == os.getpid():
            return True
        return info.get("host") == hostname() and not pid_alive(int(info.get("pid", 0)))

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()  # still holding the flock: a waiter re-checks the inode
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def locked_run(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for ``fn(cfg, out_dir, ...)``: refuse an ``out_dir`` that is a file, hold
    :class:`RunLock` on it for the call, and remove the directory again if the call created it
    and fails leaving it empty. Under torchrun only rank 0 (the one writer) takes the lock."""

    @functools.wraps(fn)
    def wrapper(cfg: Any, out_dir: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        out = Path(out_dir)
        if int(os.environ.get("RANK", "0") or 0) != 0:
            return fn(cfg, out, *args, **kwargs)
        if out.exists() and not out.is_dir():
            from ..config import ConfigError

            raise ConfigError(f"--out {out}: exists and is not a directory")
        created = not out.exists()
        try:
            with RunLock(out):
                return fn(cfg, out, *args, **kwargs)
        except BaseException:
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            raise

    return wrapper


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL log. A torn last line (a crash mid-write) is dropped with a warning; an
    unreadable line elsewhere raises ``ValueError`` naming the file and line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    out = []
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: ignoring a torn last line (line {i + 1}: {ln[:40]!r})", stacklevel=2)
                break
            raise ValueError(f"{path}:{i + 1}: unreadable log record ({e})") from None
        out.append(rec)
    return out


def finished_summary(out: Path, step: int) -> dict[str, Any]:
    """The summary of a run whose newest valid checkpoint is its last step ``step``: its
    ``summary.json`` when that names ``step``, else one rebuilt from the log's last records (a crash
    between the last checkpoint and the summary), which is then written. Carries
    ``already_finished: True``; never appends to the log."""
    spath = out / "summary.json"
    if spath.is_file():
        try:
            s = json.loads(spath.read_text())
            if isinstance(s, dict) and s.get("step") == step:
                return {**s, "already_finished": True}
        except ValueError:
            pass
    recs = read_jsonl(out / "log.jsonl") if (out / "log.jsonl").is_file() else []
    last = next((r for r in reversed(recs) if "event" not in r and r.get("step", 1 << 62) <= step), {})
    s = {"event": "end", "step": step, "tokens_per_s": last.get("tokens_per_s"), "wall_s": None,
         **{k: v for k, v in last.items() if k.startswith(("loss", "lambda", "w_"))}}
    spath.write_text(json.dumps(s, indent=2))
    return {**s, "already_finished": True}
