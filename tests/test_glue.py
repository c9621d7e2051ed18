"""GLUE TSV loaders: fixtures written here (incl. malformed rows, BOM, missing files) and,
when ../shared/data/glue exists, the real row/label counts from its README."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from predrecon.eval.tasks import glue
from predrecon.eval.tasks.registry import available_tasks, get_task

SST2 = "sentence\tlabel\nit 's a charming journey . \t1\nbleak and desperate \t0\nhe said \"yes \t1\n"
COLA = "gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe rope stretched the weights.\nx\t1\t\tLast line"
MRPC = ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t1\t2\tHe said \"the pie\" is fine.\t\"The pie is fine.\n"
        "0\t3\t4\tA b c.\tD e f.\n")
STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
STSB = STSB_HEAD + ("0\tmain-captions\tMSRvid\t2012\t0001\tnone\tnone\tA plane \"is taking off.\tAn air plane.\t5.000\n"
                    "1\tmain-forums\tx\t2012\t0002\tnone\tnone\tA man.\tA flute.\t0.250\n")
MNLI_M = "entailment\tThe cat sat .\tA cat sat .\nneutral\tIt rains .\tIt pours .\ncontradiction\tYes .\tNo .\n"
MNLI_MM = "contradiction\tUp .\tDown .\nentailment\tA b .\tA .\n"


def write_glue(root: Path) -> Path:
    """Write a tiny GLUE folder (all five tasks) under root; returns it."""
    files = {
        "SST-2/train.tsv": SST2, "SST-2/dev.tsv": SST2,
        "CoLA/train.tsv": COLA, "CoLA/dev.tsv": COLA,
        "MRPC/train.tsv": MRPC, "MRPC/dev.tsv": MRPC,
        "STS-B/train.tsv": STSB, "STS-B/dev.tsv": STSB,
        "MNLI/textfooler_1k/mnli_matched.tsv": MNLI_M,
        "MNLI/textfooler_1k/mnli_mismatched.tsv": MNLI_MM,
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode("utf-8"))
    return root


@pytest.fixture
def gdir(tmp_path):
    return write_glue(tmp_path / "glue")


def test_registry_has_all_tasks():
    assert {"sst2", "cola", "mrpc", "stsb", "mnli", "mnli-mm"} <= set(available_tasks())
    with pytest.raises(KeyError, match="unknown task 'qqp'"):
        get_task("qqp")


def test_sst2_and_cola_fixture(gdir):
    d = get_task("sst2", glue_dir=gdir)
    assert d.kind == "classification" and d.num_classes == 2 and not d.dev.is_pair
    assert d.dev.text_a == ["it 's a charming journey .", "bleak and desperate", 'he said "yes']
    np.testing.assert_array_equal(d.dev.labels, [1, 0, 1])
    assert d.report_split is d.dev
    c = get_task("cola", glue_dir=gdir)  # no header, no trailing newline on the last row
    assert c.train.text_a == ["The sailors rode the breeze.", "The rope stretched the weights.", "Last line"]
    np.testing.assert_array_equal(c.train.labels, [1, 0, 1])
    assert c.train.labels.dtype == np.int64


def test_mrpc_bom_and_quotes(gdir):
    d = get_task("mrpc", glue_dir=gdir)
    assert d.dev.is_pair
    assert d.dev.text_a[0] == 'He said "the pie" is fine.'
    assert d.dev.text_b[0] == '"The pie is fine.'
    np.testing.assert_array_equal(d.dev.labels, [1, 0])


def test_stsb_scores_float(gdir):
    d = get_task("stsb", glue_dir=gdir)
    assert d.kind == "regression" and d.dev.labels.dtype == np.float32
    np.testing.assert_allclose(d.dev.labels, [5.0, 0.25])
    assert d.dev.text_a[0] == 'A plane "is taking off.'


def test_mnli_textfooler_fallback(gdir):
    d = get_task("mnli", glue_dir=gdir)
    assert len(d.dev) == 3 and len(d.train) == 2  # matched reported, mismatched trains
    np.testing.assert_array_equal(d.dev.labels, [0, 1, 2])
    assert d.label_names == ["entailment", "neutral", "contradiction"]
    assert any("TextFooler" in n for n in d.notes)
    mm = get_task("mnli-mm", glue_dir=gdir)
    assert len(mm.dev) == 2 and len(mm.train) == 3


def test_mnli_official_layout_preferred(gdir):
    head = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    (gdir / "MNLI/train.tsv").write_text(head + "0\t1\t1g\tfic\tA .\tB .\tneutral\tneutral\n")
    (gdir / "MNLI/dev_matched.tsv").write_text(head + "0\t1\t1g\tfic\tC .\tD .\tcontradiction\tcontradiction\n")
    d = get_task("mnli", glue_dir=gdir)
    assert d.dev.text_a == ["C ."] and d.dev.labels.tolist() == [2] and d.train.labels.tolist() == [1]
    assert not any("TextFooler" in n for n in d.notes)


def test_max_examples_and_max_train(gdir):
    d = get_task("sst2", glue_dir=gdir, max_examples=2, max_train=1)
    assert len(d.dev) == 2 and len(d.train) == 1
    full = get_task("sst2", glue_dir=gdir)
    assert set(d.dev.text_a) <= set(full.dev.text_a)
    assert set(d.dev.labels.tolist()) == set(full.dev.labels.tolist())  # stratified: both classes kept
    assert any("stratified subset of 2" in n for n in d.notes)


@pytest.mark.parametrize("task,rel,bad,match", [
    ("sst2", "SST-2/dev.tsv", SST2 + "only one column\n", r"dev\.tsv:5: expected 2 tab-separated columns, got 1"),
    ("sst2", "SST-2/dev.tsv", SST2 + "text\tpositive\n", r"dev\.tsv:5: unparsable label 'positive'"),
    ("sst2", "SST-2/dev.tsv", SST2 + "text\t3\n", r"dev\.tsv:5: label 3 outside 0\.\.1"),
    ("sst2", "SST-2/dev.tsv", "sentence\tlabel\na\t1\n\nb\t0\n", r"dev\.tsv:3: expected 2 .* got 0"),
    ("cola", "CoLA/train.tsv", COLA + "\nsrc\t1\tsentence only three\n", r"train\.tsv:4: expected 4"),
    ("stsb", "STS-B/dev.tsv", STSB + "2\tg\tf\ty\to\ts\ts\tA.\tB.\tfive\n", r"dev\.tsv:4: unparsable score 'five'"),
    ("stsb", "STS-B/dev.tsv", STSB + "2\tg\tf\ty\to\ts\ts\tA.\tB.\t7.5\n", r"dev\.tsv:4: score 7\.5 outside"),
    ("mrpc", "MRPC/train.tsv", MRPC.replace("#1 String", "First"), r"train\.tsv:1: header has no column '#1 String'"),
    ("mnli", "MNLI/textfooler_1k/mnli_matched.tsv", MNLI_M + "maybe\tA .\tB .\n",
     r"mnli_matched\.tsv:4: unparsable label 'maybe'"),
])
def test_malformed_rows_name_file_and_line(gdir, task, rel, bad, match):
    (gdir / rel).write_text(bad)
    with pytest.raises(ValueError, match=match):
        get_task(task, glue_dir=gdir)


def test_missing_file_and_dir_errors(gdir, tmp_path, monkeypatch):
    (gdir / "CoLA/dev.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"CoLA/dev\.tsv.*is missing.*PREDRECON_GLUE_DIR"):
        get_task("cola", glue_dir=gdir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_task("sst2", glue_dir=tmp_path / "nowhere")
    monkeypatch.setenv(glue.GLUE_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"from \$PREDRECON_GLUE_DIR"):
        glue.resolve_glue_dir()


def test_env_var_and_cwd_resolution(gdir, tmp_path, monkeypatch):
    monkeypatch.setenv(glue.GLUE_ENV, str(gdir))
    assert glue.resolve_glue_dir() == gdir
    assert len(get_task("sst2").dev) == 3
    monkeypatch.delenv(glue.GLUE_ENV)
    work = tmp_path / "proj" / "main"
    work.mkdir(parents=True)
    write_glue(tmp_path / "proj" / "shared" / "data" / "glue")
    monkeypatch.chdir(work)
    assert glue.resolve_glue_dir() == (tmp_path / "proj" / "shared" / "data" / "glue").resolve()


# --- the real files (counts from ../shared/data/README.md) -----------------------------------

REAL = {  # task: (train rows, dev rows, train label counts, dev label counts)
    "sst2": (67349, 872, {1: 37569, 0: 29780}, {1: 444, 0: 428}),
    "cola": (8551, 1043, {1: 6023, 0: 2528}, {1: 721, 0: 322}),
    "mrpc": (3668, 408, {1: 2474, 0: 1194}, {1: 279, 0: 129}),
    "stsb": (5749, 1500, None, None),
    "mnli": (1000, 1000, {0: 346, 1: 319, 2: 335}, {0: 373, 1: 311, 2: 316}),
}


@pytest.mark.shared_data
@pytest.mark.parametrize("task", sorted(REAL))
def test_real_glue_counts(task, shared_data):
    glue_dir = shared_data("glue")  # skips with a stated reason when ../shared/data is absent
    n_train, n_dev, c_train, c_dev = REAL[task]
    d = get_task(task, glue_dir=glue_dir)
    assert (len(d.train), len(d.dev)) == (n_train, n_dev)
    for split, counts in ((d.train, c_train), (d.dev, c_dev)):
        if counts is not None:
            vals, cnt = np.unique(split.labels, return_counts=True)
            assert dict(zip(vals.tolist(), cnt.tolist())) == counts
    if task == "stsb":
        assert d.dev.labels.min() == 0.0 and d.dev.labels.max() == 5.0
    assert len(get_task(task, glue_dir=glue_dir, max_examples=100).dev) == 100
