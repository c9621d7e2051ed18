"""Nothing lost, nothing silently corrupted: one writer per run directory, finished runs left alone,
torn logs, exports that never delete user data and are verified on load."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from predrecon.cli import main
from predrecon.train.checkpoint import list_checkpoints, load_checkpoint, state_is_finite
from predrecon.train.export import ExportError, export_encoder, load_encoder
from predrecon.train.loop import train
from predrecon.train.rundir import LOCK_NAME, RunLock, RunLockedError, read_jsonl

from fixtures_data import debug_cfg, tiny_dataset

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory, "data", 80, 11)


def cfg_for(data: str, *ov: str):
    return debug_cfg(data, "train.diag_every=0", "optim.warmup_steps=1", *ov)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """A finished 6-step run (checkpoints at 3 and 6)."""
    out = tmp_path_factory.mktemp("run") / "run"
    train(cfg_for(data, "train.steps=6", "train.ckpt_every=3"), out)
    return out


def _holder(path: Path, ready: Path) -> subprocess.Popen:
    """Another process that takes the run lock on ``path`` and keeps it."""
    code = ("import sys, time; from predrecon.train.rundir import RunLock; "
            f"l = RunLock({str(path)!r}).acquire(); open({str(ready)!r}, 'w').close(); time.sleep(120)")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, "-c", code], env=env)
    for _ in range(600):
        if ready.exists() or p.poll() is not None:
            break
        time.sleep(0.05)
    assert ready.exists(), "the holder process did not take the lock"
    return p


# ------------------------------------------------------------------ one writer per run directory
def test_second_writer_fails_fast_with_the_owner_named(data, tmp_path, capsys):
    out = tmp_path / "r"
    holder = _holder(out, tmp_path / "ready")
    try:
        t0 = time.perf_counter()
        rc = main(["train", "--preset", "debug", "--data", data, "--out", str(out), "--resume", "auto",
                   "train.progress=false"])
        took = time.perf_counter() - t0
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1
        assert f"in use by another writer, pid {holder.pid} on host {socket.gethostname()}" in err[0]
        assert took < 5.0  # refused before building anything
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written by the second writer
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_writer_is_taken_over(tmp_path):
    out = tmp_path / "r"
    holder = _holder(out, tmp_path / "ready")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid  # the dead writer's file is left
    with pytest.warns(UserWarning, match=f"taking over a stale lock of pid {holder.pid}"):
        with RunLock(out) as lock:
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()  # released


def test_stale_lock_file_naming_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with pytest.warns(UserWarning, match="stale lock"):
        RunLock(tmp_path).acquire().release()


def test_lock_naming_another_host_is_refused(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(RunLockedError, match="pid 1 on host elsewhere .* delete the lock file"):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "elsewhere"  # left as it was


def test_train_releases_the_lock_and_refuses_an_out_that_is_a_file(run, data, tmp_path, capsys):
    assert not (run / LOCK_NAME).exists()
    (tmp_path / "f").write_text("x")
    assert main(["train", "--preset", "debug", "--data", data, "--out", str(tmp_path / "f")]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "f").read_text() == "x"


# ------------------------------------------------------------------ finished runs and torn logs
def test_resume_auto_on_a_finished_run_changes_nothing(run, data, capsys):
    log, summary = (run / "log.jsonl").read_bytes(), (run / "summary.json").read_bytes()
    args = ["train", "--preset", "debug", "--data", data, "--out", str(run), "--resume", "auto", "train.progress=false",
            "train.diag_every=0", "optim.warmup_steps=1", "train.steps=6", "train.ckpt_every=3"]
    assert main(args) == 0
    assert "run already finished at step 6" in capsys.readouterr().out
    assert (run / "log.jsonl").read_bytes() == log and (run / "summary.json").read_bytes() == summary
    assert sum(r.get("event") == "end" for r in read_jsonl(run / "log.jsonl")) == 1


def test_finished_run_without_summary_gets_it_rebuilt_from_the_log(run, data, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    want = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").unlink()  # a crash between the last checkpoint and the summary
    got = train(cfg_for(data, "train.steps=6", "train.ckpt_every=3"), copy)
    assert got["already_finished"] and got["step"] == 6
    assert got["loss_mlm"] == want["loss_mlm"] and got["tokens_per_s"] > 0
    assert json.loads((copy / "summary.json").read_text())["loss_mlm"] == want["loss_mlm"]


def test_torn_last_log_line_is_dropped_with_a_warning_and_resume_works(data, tmp_path):
    out = tmp_path / "r"
    train(cfg_for(data, "train.steps=6", "train.ckpt_every=3", "train.log_every=1"), out, max_steps=3)
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 4, "loss_mlm": 5.1')  # killed mid-write
    with pytest.warns(UserWarning, match="ignoring a torn last line"):
        train(cfg_for(data, "train.steps=6", "train.ckpt_every=3", "train.log_every=1"), out, resume="auto")
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]  # every line parses
    assert [r["step"] for r in recs if "loss_mlm" in r and "event" not in r] == [1, 2, 3, 4, 5, 6]


def test_unreadable_line_inside_a_log_is_an_error_naming_it(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2: unreadable log record"):
        read_jsonl(p)


def test_nan_run_never_replaces_the_last_good_checkpoints(data, tmp_path):
    out = tmp_path / "r"
    train(cfg_for(data, "train.steps=10", "train.ckpt_every=5"), out)
    good = {p.name: (p / "MANIFEST.json").read_text() for p in list_checkpoints(out)}
    assert list(good) == ["step_00000005", "step_00000010"]
    try:  # lr 1e6 makes the weights non-finite within a few steps; the run may stop or skip steps
        train(cfg_for(data, "train.steps=40", "train.ckpt_every=5", "optim.lr=1e6", "train.log_every=40"), out)
    except Exception:  # noqa: BLE001 - how it stops is the training loop's business; what is on disk is ours
        pass
    ckpts = list_checkpoints(out)
    assert ckpts and load_checkpoint(ckpts[-1]).step >= 10
    for p in ckpts:  # no NaN/Inf state ever reached the disk, so the newest checkpoint is a usable one
        got = load_checkpoint(p)
        assert state_is_finite(got.model, got.target, got.optimizer), p
    if "step_00000010" in {p.name for p in ckpts}:  # if still there, the last good one is untouched
        assert (out / "checkpoints" / "step_00000010" / "MANIFEST.json").read_text() == good["step_00000010"]


# ------------------------------------------------------------------ export never deletes user data
def test_export_refuses_the_run_dir_its_parent_and_its_checkpoints(run, tmp_path):
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    for out in (run, run.parent, run / "checkpoints", run / "checkpoints" / "mine"):
        with pytest.raises(ExportError, match="--out"):
            export_encoder(run, out)
    ckpt = list_checkpoints(run)[-1]
    with pytest.raises(ExportError, match="--out"):
        export_encoder(ckpt, ckpt)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_export_refuses_a_non_empty_directory_or_a_file_and_touches_nothing(run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    (tmp_path / "afile").write_text("x")
    assert main(["export", str(run), "--out", str(mine)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty and not a previous export (holds notes.txt)" in err[0]
    assert main(["export", str(run), "--out", str(tmp_path / "afile")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (tmp_path / "afile").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "mine"]  # no temporary left


def test_re_export_replaces_only_the_exports_own_files(run, tmp_path):
    out = tmp_path / "enc"
    first, last = list_checkpoints(run)
    export_encoder(first, out)
    assert json.loads((out / "config.json").read_text())["source"]["step"] == 3
    export_encoder(run, out)  # a previous export holding only its own files: swapped whole
    assert json.loads((out / "config.json").read_text())["source"]["step"] == 6
    (out / "eval").mkdir()
    (out / "eval" / "summary.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    export_encoder(first, out)  # now it also holds the user's files: only ours are replaced
    assert json.loads((out / "config.json").read_text())["source"]["step"] == 3
    assert (out / "notes.txt").read_text() == "mine" and (out / "eval" / "summary.json").read_text() == "{}"
    load_encoder(out)  # the manifest matches the new files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]


def test_disk_full_during_export_leaves_the_previous_export(run, tmp_path, monkeypatch):
    import errno

    import predrecon.train.export as ex
    out = tmp_path / "enc"
    export_encoder(run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ex, "save_file", full)
    with pytest.raises(ExportError, match="enc: exporting failed: disk full .* nothing was replaced"):
        export_encoder(list_checkpoints(run)[0], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]


# ------------------------------------------------------------------ exports are verified on load
class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def _damaged(run, tmp_path, name, how):
    out = tmp_path / f"enc_{name}_{how}"
    export_encoder(run, out)
    f = out / name
    data = f.read_bytes()
    if how == "truncated":
        f.write_bytes(data[: len(data) // 2])
    elif how == "zeroed":
        f.write_bytes(bytes(len(data)))
    elif how == "region":
        mid = len(data) // 2
        f.write_bytes(data[:mid] + os.urandom(256) + data[mid + 256:])
    elif how == "pickle":
        f.write_bytes(pickle.dumps({"w": _Evil()}))
    elif how == "inconsistent":
        c = json.loads(data)
        c["model"]["dim"] *= 2
        f.write_text(json.dumps(c))
    return out


@pytest.mark.parametrize("name, how", [("model.safetensors", h) for h in ("truncated", "zeroed", "region", "pickle")]
                         + [("config.json", "truncated"), ("config.json", "inconsistent"),
                            ("tokenizer.json", "zeroed")])
def test_damaged_export_is_refused_with_one_line_naming_the_file(run, tmp_path, monkeypatch, capsys, name, how):
    monkeypatch.chdir(tmp_path)
    out = _damaged(run, tmp_path, name, how)
    with pytest.raises(ExportError, match=f"{name}: sha256 differs from MANIFEST.json"):
        load_encoder(out)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name, how, msg", [
    ("model.safetensors", "truncated", "model.safetensors: not a readable safetensors file"),
    ("model.safetensors", "zeroed", "model.safetensors: not a readable safetensors file"),
    ("model.safetensors", "pickle", "model.safetensors: not a readable safetensors file"),
    ("config.json", "truncated", "config.json: unreadable"),
    ("config.json", "inconsistent", "model.safetensors: weights do not match .*config.json"),
])
def test_unverified_version_1_export_still_fails_clearly(run, tmp_path, monkeypatch, name, how, msg):
    """Exports written before manifests existed: loaded with a warning; damage is still one clear line."""
    monkeypatch.chdir(tmp_path)
    out = _damaged(run, tmp_path, name, how)
    (out / "MANIFEST.json").unlink()
    if how != "truncated" or name != "config.json":
        c = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**c, "version": 1}))
    with pytest.raises(ExportError, match=msg), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_encoder(out)
    assert not (tmp_path / "PWNED").exists()


def test_version_1_export_loads_with_a_warning(run, tmp_path):
    out = tmp_path / "enc"
    export_encoder(run, out)
    (out / "MANIFEST.json").unlink()
    c = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**c, "version": 1}))
    with pytest.warns(UserWarning, match="not verified"):
        load_encoder(out)


def test_version_2_export_without_its_manifest_is_refused(run, tmp_path):
    out = tmp_path / "enc"
    export_encoder(run, out)
    (out / "MANIFEST.json").unlink()
    with pytest.raises(ExportError, match="MANIFEST.json: missing"):
        load_encoder(out)


def test_verified_export_loads_the_checkpoints_weights(run, tmp_path):
    out = export_encoder(run, tmp_path / "enc")
    enc, *_ = load_encoder(out)
    ck = load_checkpoint(list_checkpoints(run)[-1])
    for k, v in enc.state_dict().items():
        assert torch.equal(v, ck.model["encoder." + k]), k
