"""--config FILE (json / toml / yaml): precedence preset < file < overrides, clear errors, and a
run's config.json reproducing the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from predrecon.cli import build_config, build_parser
from predrecon.cli import main as cli
from predrecon.config import ConfigError
from predrecon.configfile import apply_config_file, load_run_config, read_config_file
from predrecon.presets import get_preset

from fixtures_data import build_tiny, make_docs

TOML = """preset = "debug"
[optim]
lr = 0.002
betas = [0.9, 0.95]
[train]
steps = 12
"""
YAML = """preset: debug
optim:
  lr: 2e-3        # YAML 1.1 reads this as a string: converted to the field's type
  betas: [0.9, 0.95]
train:
  steps: 12
"""
JSON = json.dumps({"preset": "debug", "optim": {"lr": 0.002, "betas": [0.9, 0.95]}, "train": {"steps": 12}})


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def args_for(*argv: str):
    return build_parser().parse_args(["train", "--out", "unused", *argv])


@pytest.mark.parametrize("name,text", [("run.toml", TOML), ("run.yaml", YAML), ("run.json", JSON)])
def test_formats_agree_and_precedence_is_preset_file_overrides(tmp_path, name, text):
    path = write(tmp_path, name, text)
    cfg = build_config(args_for("--config", str(path), "train.steps=9"))
    assert cfg.preset == "debug" and cfg.model.dim == get_preset("debug").model.dim  # base: the file's preset
    assert cfg.optim.lr == 0.002 and cfg.optim.betas == (0.9, 0.95)  # file over preset
    assert cfg.train.steps == 9  # override over file
    assert cfg.optim.min_lr == get_preset("debug").optim.min_lr  # untouched keys keep the preset's
    tiny = build_config(args_for("--config", str(path), "--preset", "tiny", "optim.warmup_steps=2"))
    assert tiny.preset == "tiny" and tiny.model.dim == get_preset("tiny").model.dim and tiny.optim.lr == 0.002
    assert build_config(args_for("--config", str(path), "--steps", "7")).train.steps == 7


def test_faithful_in_a_file_applies_the_switches(tmp_path):
    path = write(tmp_path, "f.json", json.dumps({"preset": "debug", "faithful": True, "optim": {"lr": 1e-3}}))
    cfg = load_run_config(path)
    assert cfg.faithful and cfg.objective.balancer == "sigmoid" and cfg.optim.lr == 1e-3


@pytest.mark.parametrize("text,match", [
    ({"optim": {"lrr": 1}}, r"f.json: optim.lrr: unknown key"),
    ({"optimizer": {}}, r"f.json: unknown key\(s\) \['optimizer'\]"),
    ({"train": {"steps": "many"}}, r"f.json: train.steps: expected an integer"),
    ({"train": {"steps": 2.5}}, r"f.json: train.steps: expected an integer"),
    ({"train": {"compile": 1}}, r"f.json: train.compile: expected a bool"),
    ({"model": {"dim": 30, "heads": 4}}, r"f.json: model.heads: dim=30 is not divisible"),
    ({"train": 5}, r"f.json: train: expected a mapping"),
])
def test_bad_files_name_the_file_and_key(tmp_path, text, match):
    path = write(tmp_path, "f.json", json.dumps(text))
    with pytest.raises(ConfigError, match=match):
        load_run_config(path)


def test_unknown_suffix_missing_file_and_bad_syntax(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config format '.ini'"):
        read_config_file(write(tmp_path, "run.ini", "x"))
    with pytest.raises(FileNotFoundError, match="no such config file"):
        read_config_file(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML"):
        read_config_file(write(tmp_path, "bad.toml", "[optim\nlr = "))


def test_yaml_without_pyyaml_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigError, match=r"reading YAML needs PyYAML \(pip install pyyaml\)"):
        read_config_file(write(tmp_path, "run.yaml", YAML))


def test_a_complete_config_round_trips(tmp_path):
    cfg = get_preset("paper")
    cfg.train.steps, cfg.jepa.target_scale = 1234, (0.2, 0.3)
    path = write(tmp_path, "c.json", cfg.to_json())
    assert load_run_config(path).to_dict() == cfg.to_dict()  # base: the file's preset
    # on another base every value is the file's; `preset` names the base actually used
    assert apply_config_file(get_preset("debug"), read_config_file(path), path).to_dict() == \
        {**cfg.to_dict(), "preset": "debug"}


def test_run_config_json_reproduces_the_run(tmp_path, capsys):
    data = tmp_path / "ds"
    build_tiny(data, docs=make_docs(60, seed=2))
    path = write(tmp_path, "run.toml", '[train]\nsteps = 8\nlog_every = 2\ndiag_every = 0\nprogress = false\n'
                                       '[optim]\nwarmup_steps = 1\nlr = 0.002\n')
    assert cli(["train", "--preset", "debug", "--config", str(path), "--data", str(data), "--out", str(tmp_path / "a"),
                "--seed", "3"]) == 0
    saved = tmp_path / "a" / "config.json"
    assert cli(["train", "--config", str(saved), "--out", str(tmp_path / "b")]) == 0  # no --data: the file's
    a, b = (json.loads((tmp_path / r / "config.json").read_text()) for r in ("a", "b"))
    assert a == b and a["train"]["seed"] == 3 and a["optim"]["lr"] == 0.002 and a["preset"] == "debug"

    def curve(run: str) -> list[tuple[int, float]]:
        recs = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in recs if "event" not in r]

    assert len(curve("a")) == 4 and curve("a") == curve("b")
