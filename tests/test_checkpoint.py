import json
import pickle

import pytest
import torch

from predrecon.train.checkpoint import (
    CheckpointError,
    NonFiniteStateError,
    checkpoint_step,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    non_finite_tensors,
    save_checkpoint,
    state_is_finite,
    verify_checkpoint,
)


def _save(run, step, keep=3):
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(lin.parameters())
    lin(torch.ones(1, 3)).sum().backward()
    opt.step()
    return save_checkpoint(run, step, model=lin.state_dict(), target={"w": torch.zeros(2)},
                           optimizer=opt.state_dict(), state={"data": {"epoch": 0, "cursor": step}},
                           keep=keep), lin, opt


def test_round_trip(tmp_path):
    path, lin, opt = _save(tmp_path, 5)
    got = load_checkpoint(path)
    assert got.step == 5 and got.state["data"]["cursor"] == 5
    for k, v in lin.state_dict().items():
        assert torch.equal(got.model[k], v)
    assert got.optimizer["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert "torch_cpu" in got.rng


def test_prune_keeps_newest_and_no_tmp_left(tmp_path):
    for s in (1, 2, 3, 4):
        _save(tmp_path, s, keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_00000003", "step_00000004"]
    assert not list((tmp_path / "checkpoints").glob(".tmp_*"))


def test_corrupt_checkpoint_is_detected_and_skipped(tmp_path):
    _save(tmp_path, 1)
    p2, _, _ = _save(tmp_path, 2)
    with open(p2 / "model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(CheckpointError, match="checksum mismatch in model.safetensors"):
        verify_checkpoint(p2)
    with pytest.warns(UserWarning, match="skipping checkpoint"):
        assert latest_valid_checkpoint(tmp_path).name == "step_00000001"


def test_incomplete_checkpoint_without_manifest(tmp_path):
    p, _, _ = _save(tmp_path, 1)
    (p / "MANIFEST.json").unlink()
    with pytest.raises(CheckpointError, match="no MANIFEST.json"):
        load_checkpoint(p)


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_code_in_optimizer_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p, _, _ = _save(tmp_path / "run", 1)
    with open(p / "optimizer.pt", "wb") as f:
        pickle.dump({"state": _Evil()}, f)
    # re-sign the manifest so only the weights_only guard stands in the way
    import hashlib
    m = json.loads((p / "MANIFEST.json").read_text())
    m["files"]["optimizer.pt"] = hashlib.sha256((p / "optimizer.pt").read_bytes()).hexdigest()
    (p / "MANIFEST.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(p)
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------ pruning, finiteness, disk full
def _corrupt(ckpt):
    with open(ckpt / "model.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\xde\xad\xbe\xef" * 2)


def test_restart_with_all_old_checkpoints_corrupt_keeps_the_new_good_one(tmp_path):
    for s in (15, 20):
        _save(tmp_path, s, keep=2)
    for p in list_checkpoints(tmp_path):
        _corrupt(p)
    new, _, _ = _save(tmp_path, 5, keep=2)  # a fresh start after every checkpoint failed to verify
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000005"]  # corrupt ones pruned, new kept
    verify_checkpoint(new)
    assert latest_valid_checkpoint(tmp_path) == new


def test_prune_orders_by_stored_step_not_by_name(tmp_path):
    p3, _, _ = _save(tmp_path, 3, keep=5)
    p3.rename(p3.parent / "step_99999999")  # sorts newest by name, holds step 3
    for s in (4, 5, 6):
        _save(tmp_path, s, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000005", "step_00000006"]
    assert checkpoint_step(latest_valid_checkpoint(tmp_path)) == 6


def test_prune_skips_invalid_when_counting_and_keeps_later_stored_steps(tmp_path):
    for s in (1, 2, 3):
        _save(tmp_path, s, keep=5)
    _corrupt(tmp_path / "checkpoints" / "step_00000003")
    later, _, _ = _save(tmp_path, 9, keep=5)
    _save(tmp_path, 4, keep=2)  # resumed from step 3's past: step 9 is another trajectory, kept
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000004", "step_00000009"]


def test_state_is_finite_and_non_finite_names():
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(lin.parameters())
    lin(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert state_is_finite(lin.state_dict(), opt.state_dict(), None)
    sd = lin.state_dict()
    sd["bias"] = torch.tensor([0.0, float("inf")])
    assert not state_is_finite(sd)
    osd = opt.state_dict()
    osd["state"][0]["exp_avg_sq"][0, 1] = float("nan")
    assert non_finite_tensors(model=lin.state_dict(), optimizer=osd) == ["optimizer.state.0.exp_avg_sq"]
    assert state_is_finite({"ids": torch.tensor([1, 2])})  # integer tensors are not checked


def test_non_finite_state_is_never_saved_and_nothing_is_pruned(tmp_path):
    for s in (1, 2):
        _save(tmp_path, s, keep=2)
    before = {p.name: (p / "MANIFEST.json").read_text() for p in list_checkpoints(tmp_path)}
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    msg = r"refusing to save step 3: non-finite values \(NaN/Inf\) in model.weight"
    with pytest.raises(NonFiniteStateError, match=msg):
        save_checkpoint(tmp_path, 3, model=lin.state_dict(), target=None, optimizer=None, state={}, keep=2)
    assert {p.name: (p / "MANIFEST.json").read_text() for p in list_checkpoints(tmp_path)} == before
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(before)  # no temporary left


def test_disk_full_during_save_is_one_clear_error_and_keeps_previous(tmp_path, monkeypatch):
    import errno

    import predrecon.train.checkpoint as ck
    _save(tmp_path, 1)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", full)
    msg = "step_00000002: saving the checkpoint failed: disk full .* previous checkpoints are kept"
    with pytest.raises(CheckpointError, match=msg):
        _save(tmp_path, 2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000001"]
    verify_checkpoint(tmp_path / "checkpoints" / "step_00000001")


def test_temporaries_of_live_or_foreign_writers_are_never_removed(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    root = tmp_path / "checkpoints"
    root.mkdir()
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        keep = [root / f".tmp_{live.pid}@{host}~abc", root / f".tmp_{dead.pid}@other-host~abc",
                root / f".tmp_{os.getpid()}@{host}~abc", root / ".tmp_untagged_recent"]
        gone = root / f".tmp_{dead.pid}@{host}~abc"
        for d in keep + [gone]:
            d.mkdir()
            (d / "model.safetensors").write_bytes(b"partial")
        _save(tmp_path, 1)
        assert all(d.is_dir() for d in keep)
        assert not gone.exists()
    finally:
        live.kill()
        live.wait()


def test_atomic_dir_never_replaces_a_directory_it_did_not_write(tmp_path):
    from predrecon.train.checkpoint import atomic_dir

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="mine: not empty and not written by predrecon .holds notes.txt."):
        with atomic_dir(mine, prefix=".export_") as tmp:
            (tmp / "model.safetensors").write_bytes(b"new")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary left
    prev = tmp_path / "prev"  # a previous export (it has a manifest) is swapped whole
    prev.mkdir()
    (prev / "MANIFEST.json").write_text("{}")
    with atomic_dir(prev, prefix=".export_") as tmp:
        (tmp / "model.safetensors").write_bytes(b"new")
    assert [p.name for p in prev.iterdir()] == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "prev"]


def test_file_size_limit_during_save_is_one_clear_error(tmp_path):
    """A real short write (RLIMIT_FSIZE: safetensors and torch.save fail with their own error types)."""
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import resource, signal, torch
from predrecon.train.checkpoint import CheckpointError, list_checkpoints, save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
lin = torch.nn.Linear(8, 8)
save_checkpoint({str(tmp_path)!r}, 1, model=lin.state_dict(), target=None, optimizer=None, state={{}})
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
big = torch.nn.Linear(64, 64)
try:
    save_checkpoint({str(tmp_path)!r}, 2, model=big.state_dict(), target=None, optimizer=None, state={{}})
except CheckpointError as e:
    print("REFUSED", e)
print([p.name for p in list_checkpoints({str(tmp_path)!r})])
"""
    src = str(Path(__file__).resolve().parents[1] / "src")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": src})
    assert r.returncode == 0, r.stderr[-500:]
    assert "REFUSED" in r.stdout
    assert "saving the checkpoint failed: disk full or file-size limit (File too large)" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "['step_00000001']"


def test_write_failure_recognises_each_writers_error():
    import errno

    from predrecon.data.shards import write_failure

    assert "No space left" in write_failure(OSError(errno.ENOSPC, "No space left on device"))
    safetensors_efbig = RuntimeError("Error while serializing: I/O error: File too large (os error 27)")
    torch_short = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert "File too large" in write_failure(safetensors_efbig)
    assert "short write" in write_failure(torch_short)
    assert "short write" in write_failure(OSError("10000 requested and 109 written"))
    assert write_failure(ValueError("bad value")) is None
    assert write_failure(RuntimeError("size mismatch for weight")) is None


def test_cuda_rng_states_are_restored_in_device_order(monkeypatch):
    """With 11 or more GPUs the saved states go back to their own devices (sorted as strings,
    device 10's state went to device 2). The CUDA calls are stood in for on this machine."""
    from predrecon.train import checkpoint as ck
    got: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 12)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: got.extend(int(s[0]) for s in states))
    st = {"torch_cpu": torch.get_rng_state(), **{f"torch_cuda_{i}": torch.tensor([i], dtype=torch.uint8)
                                                 for i in (3, 11, 0, 10, 1, 2, 4, 5, 6, 7, 8, 9)}}
    ck.set_rng_state(st)
    assert got == list(range(12))
