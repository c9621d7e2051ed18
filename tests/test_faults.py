"""The fast cases of scripts/faults.py, in process: bad input ends in one line naming the file or
key (exit code 2), never a traceback; an unknown exception is reported as an internal error."""

import errno
import json
import os

import pytest

from predrecon.cli import error_line, main
from predrecon.data.tokenizer import TokenizerError, load_tokenizer
from predrecon.eval.tasks.glue import read_tsv

from fixtures_data import build_tiny, make_docs

BAD_VALUES = [
    ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("optim.balancer_lr=-1", "optim.balancer_lr"),
    ("optim.balancer_weight_decay=-1", "optim.balancer_weight_decay"),
    ("optim.grad_clip=inf", "optim.grad_clip"),
    ("train.collapse_std=nan", "train.collapse_std"),
    ("train.keep_ckpts=0", "train.keep_ckpts"),
    ("train.keep_ckpts=-1", "train.keep_ckpts"),
    ("optim.lr=inf", "optim.lr"),
    ("optim.lr=nan", "optim.lr"),
    ("optim.eps=nan", "optim.eps"),
    ("optim.eps=0", "optim.eps"),
    ("optim.betas=0.9,1.5", "optim.betas"),
    ("optim.start_lr=1", "optim.start_lr"),
    ("jepa.num_targets=1000", "jepa.num_targets"),
    ("jepa.num_targets=40", "jepa.num_targets"),  # > data.seq_len=32 of the debug preset
    ("jepa.target_scale=0.5", "jepa.target_scale"),
    ("jepa.context_scale=0.5,0.6,0.7", "jepa.context_scale"),
    ("jepa.ema_start=nan", "jepa.ema_start"),
    ("model.init_std=nan", "model.init_std"),
    ("model.mlp_ratio=inf", "model.mlp_ratio"),
    ("model.norm_eps=0", "model.norm_eps"),
    ("objective.gradnorm_alpha=nan", "objective.gradnorm_alpha"),
    ("mlm.mean_span=inf", "mlm.mean_span"),
    ("train.collapse_rank=-inf", "train.collapse_rank"),
    ("train.device=tpu", "train.device"),
]


def _one_error_line(err: str, *tokens: str) -> str:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("predrecon:")]
    assert len(lines) == 1, err
    for t in tokens:
        assert t in lines[0], (t, lines[0])
    return lines[0]


@pytest.mark.parametrize("override, key", BAD_VALUES)
def test_bad_value_refused_at_startup_naming_the_key(tmp_path, capsys, override, key):
    out = tmp_path / "run"
    rc = main(["train", "--preset", "debug", "--data", str(tmp_path / "data"), "--out", str(out), override])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, key)
    assert not out.exists()  # refused before anything was written


def test_device_flag_refused(tmp_path, capsys):
    assert main(["train", "--preset", "debug", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--device", "tpu"]) == 2
    _one_error_line(capsys.readouterr().err, "train.device", "tpu")


def test_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine\n")
    for cmd in (["train", "--preset", "debug", "--data", str(tmp_path)], ["eval", "minilm"],
                ["compare", str(tmp_path), str(tmp_path)], ["export", str(tmp_path)]):
        assert main(cmd + ["--out", str(f)]) == 2, cmd
        _one_error_line(capsys.readouterr().err, "notes.txt", "not a directory")
    assert f.read_text() == "mine\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-step hybrid run trained with a relative --data path."""
    root = tmp_path_factory.mktemp("faults")
    build_tiny(root / "data", docs=make_docs(40, seed=5))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", "--preset", "debug", "--data", "data", "--out", "run", "--steps", "2",
                     "train.progress=false", "train.diag_every=0", "train.ckpt_every=1"]) == 0
    finally:
        os.chdir(cwd)
    return root


def test_resume_with_another_objective_names_both(tiny_run, tmp_path, capsys):
    capsys.readouterr()
    rc = main(["train", "--preset", "debug", "--data", str(tiny_run / "data"), "--out", str(tiny_run / "run"),
               "--steps", "4", "--resume", "auto", "--objective", "mlm", "train.progress=false"])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err, "objective", "hybrid", "mlm")
    assert "was trained with" in line


def test_relative_data_path_is_stored_absolute(tiny_run, tmp_path, monkeypatch, capsys):
    saved = json.loads((tiny_run / "run" / "config.json").read_text())
    assert saved["data"]["path"] == str((tiny_run / "data").resolve())
    monkeypatch.chdir(tmp_path)  # another working directory
    assert main(["export", str(tiny_run / "run"), "--out", str(tmp_path / "enc")]) == 0
    assert (tmp_path / "enc" / "model.safetensors").is_file()


def test_junk_tokenizer_names_the_file(tmp_path, capsys):
    junk = tmp_path / "tokenizer.json"
    junk.write_bytes(b"\x00\xffnot json at all" * 10)
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(junk)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(make_docs(10)))
    assert main(["data", "build", "--files", str(corpus), "--tokenizer", str(junk), "--out", str(tmp_path / "d")]) == 2
    _one_error_line(capsys.readouterr().err, "tokenizer.json")


def test_glue_binary_junk_and_huge_line_name_the_file(tmp_path):
    junk = tmp_path / "dev.tsv"
    junk.write_bytes(b"sentence\tlabel\n" + bytes(range(128, 256)) * 8)
    with pytest.raises(ValueError, match=r"dev\.tsv: not UTF-8 text"):
        read_tsv(junk, 2, header=True)
    nul = tmp_path / "nul.tsv"
    nul.write_bytes(b"sentence\tlabel\nab\x00c\t1\n")
    assert read_tsv(nul, 2, header=True)[1] == [(2, ["ab\x00c", "1"])]  # a NUL byte is text to csv
    big = tmp_path / "big.tsv"
    with open(big, "w") as f:
        f.write("sentence\tlabel\nfine\t1\n" + "x" * (50 << 20) + "\t1\n")
    with pytest.raises(ValueError, match=r"big\.tsv:3: unreadable TSV row .*field larger"):
        read_tsv(big, 2, header=True)


def test_truncated_result_json_given_to_compare(tmp_path, capsys):
    for arm in ("a", "b"):
        (tmp_path / arm / "sst2").mkdir(parents=True)
        (tmp_path / arm / "sst2" / "mean.json").write_text('{"version": 2, "task": "sst2", "pooling": "me')
    rc = main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep")])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, "mean.json")


def test_error_line_kinds():
    rc, line = error_line(OSError(errno.ENOSPC, "No space left on device", "/runs/x/model.safetensors"))
    assert rc == 2 and "/runs/x/model.safetensors: No space left on device" in line and "disk full" in line
    rc, line = error_line(OSError(errno.EFBIG, "File too large", "/d/a.bin"))
    assert rc == 2 and "/d/a.bin" in line and "file-size limit" in line
    rc, line = error_line(KeyError("sst3: unknown task"))
    assert (rc, line) == (2, "predrecon: error: sst3: unknown task")
    rc, line = error_line(TypeError("bad\noperand"))
    assert rc == 1 and "internal error: TypeError: bad operand" in line and "--debug" in line
    assert "\n" not in line


def test_debug_flag_and_env_show_the_traceback(tmp_path, monkeypatch):
    args = ["train", "--preset", "debug", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "optim.lr=inf"]
    with pytest.raises(ValueError, match="optim.lr"):
        main(["--debug", *args])
    monkeypatch.setenv("PREDRECON_DEBUG", "1")
    with pytest.raises(ValueError, match="optim.lr"):
        main(args)
    monkeypatch.setenv("PREDRECON_DEBUG", "0")
    assert main(args) == 2


def test_library_io_error_named_by_the_output_dir():
    """safetensors reports a full disk as 'os error 28' without a path: the line names --out."""
    e = type("SafetensorError", (Exception,), {})("Error while serializing: I/O error: No space left (os error 28)")
    rc, line = error_line(e, where="runs/x")
    assert rc == 2 and line.startswith("predrecon: error: runs/x: Error while serializing") and "disk full" in line
    rc, line = error_line(type("SafetensorError", (Exception,), {})("header too large"), where="runs/x")
    assert rc == 1 and "internal error" in line


def _faults_module():
    import importlib.util
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    if str(scripts) not in sys.path:
        sys.path.insert(0, str(scripts))  # faults.py imports its machinery from faultlib.py
    spec = importlib.util.spec_from_file_location("faults_script", scripts / "faults.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_fault_suite_classifier():
    f = _faults_module()
    R = f.Result
    tb = "Traceback (most recent call last):\n  File x\n_csv.Error: field larger than field limit\nbar 0%|\n"
    assert f.judge_refusal(R(1, "", tb, 0), "dev.tsv") == ("traceback", "_csv.Error: field larger than field limit")
    assert f.judge_refusal(R(0, "", "", 0), "optim.lr")[0] == "unclear"  # accepted silently
    assert f.judge_refusal(R(-9, "", "", 0), "x")[0] == "unclear"  # died on a signal
    assert f.judge_refusal(R(2, "", "predrecon: error: bad value\n", 0), "optim.lr")[0] == "unclear"
    assert f.judge_refusal(R(2, "", "predrecon: error: optim.lr: must be finite\n", 0), "optim.lr") == (
        "ok", "predrecon: error: optim.lr: must be finite")
    internal = "predrecon: internal error: TypeError: x (rerun with --debug)\n"
    assert f.judge_refusal(R(1, "", internal, 0), "x")[0] == "traceback"
    assert f.judge_success_or_refusal(R(0, "", "", 0)) == ("ok", "worked")
    import sys

    names = [c[0] for c in sys.modules["faultlib"].CASES]
    assert len(names) == len(set(names)) >= 50


@pytest.mark.slow
def test_fault_suite_runs_end_to_end(tmp_path):
    """The script itself: two fast cases and one SIGKILL trial through the real CLI, JSON written."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "faults.py"
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, str(script), "--only", "cfg_lr_inf,cli_out_is_a_file,sigkill", "--kills", "1",
                        "--work", str(tmp_path / "w"), "--json", str(out)], capture_output=True, text=True, timeout=600)
    res = json.loads(out.read_text())
    assert res["totals"]["cases"] == 3 and res["sigkill"]["n"] == 1, p.stdout[-2000:]
    assert {c["case"]: c["verdict"] for c in res["cases"]}["cfg_lr_inf"] == "ok"
    assert res["totals"]["ok"] == 3, p.stdout[-3000:]
