import json
import pickle

import pytest
import torch

from predrecon.train.checkpoint import (CheckpointError, latest_valid_checkpoint, list_checkpoints,
                                        load_checkpoint, save_checkpoint, verify_checkpoint)


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
