"""The command line end to end on a tiny corpus: data build -> train -> resume -> export."""

import json

import pytest

from predrecon.cli import main

from fixtures_data import make_docs


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("data", "train", "export", "eval", "compare", "experiment", "demo", "bench"):
        assert cmd in out


def test_data_train_resume_export(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(make_docs(80, seed=3)), encoding="utf-8")
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "build", "--files", str(corpus), "--tokenizer", "train:200", "--out", str(data)]) == 0
    assert "tokens/s" in capsys.readouterr().out
    args = ["train", "--preset", "debug", "--data", str(data), "--out", str(run), "--steps", "6",
            "train.progress=false", "train.ckpt_every=3", "train.diag_every=0"]
    assert main(args) == 0
    assert json.loads((run / "summary.json").read_text())["step"] == 6
    log_lines = len((run / "log.jsonl").read_text().splitlines())
    assert main(args + ["--resume", "auto", "--steps", "8"]) == 0  # continue the same run to step 8
    assert json.loads((run / "summary.json").read_text())["step"] == 8
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert len(recs) > log_lines and [r["step"] for r in recs if r.get("event") == "start"] == [0, 6]
    assert main(["export", str(run), "--out", str(tmp_path / "enc")]) == 0
    assert (tmp_path / "enc" / "model.safetensors").exists()


def test_bad_inputs_exit_2_with_a_clear_message(tmp_path, capsys):
    assert main(["train", "--preset", "debug", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "no such dataset" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff\xfe world")
    assert main(["data", "build", "--files", str(bad), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt" in err and "UTF-8" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["data", "build", "--files", str(empty), "--out", str(tmp_path / "d2")]) == 2
    assert "empty.txt" in capsys.readouterr().err
    assert main(["train", "--preset", "debug", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                 "optim.warmup_steps=500"]) == 2
    assert "optim.warmup_steps" in capsys.readouterr().err
