"""Text perturbations (property tests) and the robustness evaluation on a synthetic task."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predrecon.eval.suites.robustness import KEYBOARD_NEIGHBOURS, PERTURBATIONS, perturb_split, robustness_eval
from predrecon.eval.tasks.registry import Split, TaskData

KINDS = sorted(PERTURBATIONS)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
wordy = st.lists(st.from_regex(r"[A-Za-zé,.'0-9]{1,8}", fullmatch=True), min_size=1, max_size=30)
rates = st.floats(0.0, 1.0)


def _apply(kind, text, rate, seed=0):
    return PERTURBATIONS[kind](text, rate, np.random.default_rng(seed))


def _seps(text):
    return re.split(r"\S+", text)


@settings(max_examples=60, deadline=None)
@given(text=texts, seed=st.integers(0, 2**32 - 1))
def test_rate_zero_is_identity(text, seed):
    for kind in KINDS:
        assert _apply(kind, text, 0.0, seed) == text


@settings(max_examples=60, deadline=None)
@given(text=texts, rate=rates, seed=st.integers(0, 2**32 - 1))
def test_deterministic_and_whitespace_kept(text, rate, seed):
    for kind in KINDS:
        out = _apply(kind, text, rate, seed)
        assert out == _apply(kind, text, rate, seed)
        if kind != "word_dropout":  # word count is unchanged: so is every gap between words
            assert _seps(out) == _seps(text)


@settings(max_examples=80, deadline=None)
@given(words=wordy, rate=rates, seed=st.integers(0, 2**32 - 1))
def test_word_dropout_never_empties_and_keeps_order(words, rate, seed):
    out = _apply("word_dropout", " ".join(words), rate, seed).split()
    assert 1 <= len(out) <= len(words)
    it = iter(words)
    assert all(w in it for w in out)  # a subsequence of the input words


def test_word_dropout_rate_one_keeps_exactly_one_word():
    assert len(_apply("word_dropout", "a b c d e", 1.0).split()) == 1
    assert _apply("word_dropout", "   ", 1.0) == "   "


@settings(max_examples=80, deadline=None)
@given(text=texts, rate=rates, seed=st.integers(0, 2**32 - 1))
def test_case_flip_preserves_casefolded_text(text, rate, seed):
    assert _apply("case", text, rate, seed).casefold() == text.casefold()


def test_case_flip_closed_form():
    assert _apply("case", "Hello wORLD 42", 1.0) == "hELLO World 42"
    assert _apply("case", "Straße", 1.0) == "sTRAßE"  # 'ß' has no single-character flip


@settings(max_examples=80, deadline=None)
@given(words=wordy, rate=rates, seed=st.integers(0, 2**32 - 1))
def test_swap_preserves_word_multiset(words, rate, seed):
    out = _apply("word_swap", " ".join(words), rate, seed).split()
    assert sorted(out) == sorted(words)


def test_swap_closed_form():
    assert _apply("word_swap", "a b c d e", 1.0) == "b a d c e"


@settings(max_examples=80, deadline=None)
@given(words=wordy, seed=st.integers(0, 2**32 - 1))
def test_typo_edits_every_selected_word_once(words, seed):
    out = _apply("typo", " ".join(words), 1.0, seed).split()
    assert len(out) == len(words)
    for w, o in zip(words, out):
        if any(c.isalpha() for c in w):
            assert o != w and o and abs(len(o) - len(w)) <= 1
        else:
            assert o == w  # digits/punctuation only: untouched


def test_typo_changes_about_rate_fraction_of_words():
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghij"), size=rng.integers(2, 9))) for _ in range(4000)]
    for rate in (0.05, 0.2, 0.5):
        out = _apply("typo", " ".join(words), rate, seed=1).split()
        changed = sum(a != b for a, b in zip(words, out))
        sd = np.sqrt(len(words) * rate * (1 - rate))
        assert abs(changed - rate * len(words)) < 4 * sd, (rate, changed)


def test_keyboard_neighbours():
    assert set(KEYBOARD_NEIGHBOURS["s"]) == set("qweadzxc")
    assert all(c not in nb for c, nb in KEYBOARD_NEIGHBOURS.items())


def test_bad_inputs():
    with pytest.raises(ValueError, match="rate"):
        _apply("typo", "a b", 1.5)
    with pytest.raises(KeyError, match="unknown perturbation 'shout'"):
        perturb_split(Split(["a"], [0]), "shout", 0.1, seed=0)


def test_perturb_split_pairs_labels_and_determinism():
    s = Split(["the cat sat on the mat"] * 3, np.array([0, 1, 0]), ["a dog ran in the park"] * 3)
    p1, p2 = perturb_split(s, "typo", 0.5, seed=3), perturb_split(s, "typo", 0.5, seed=3)
    assert p1.text_a == p2.text_a and p1.text_b == p2.text_b
    assert np.array_equal(p1.labels, s.labels) and p1.labels is not s.labels
    assert p1.text_a != s.text_a and p1.text_b != s.text_b
    assert perturb_split(s, "typo", 0.5, seed=4).text_a != p1.text_a
    assert perturb_split(s, "case", 0.0, seed=3).text_a == s.text_a


# ------------------------------------------------------------------ robustness_eval

TOPICS = {0: "goal match team score league coach player season",
          1: "market shares profit bank economy trade price growth",
          2: "film music actor award album director stage song"}
FILLER = "the a of and to in it was on for with as by at".split()


def _synthetic_task(n_train=150, n_test=90, seed=0) -> TaskData:
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 3, size=n)
        out = []
        for c in y:
            w = list(rng.choice(TOPICS[c].split(), 4)) + list(rng.choice(FILLER, 8))
            rng.shuffle(w)
            out.append(" ".join(w))
        return Split(out, y)

    return TaskData("synthetic-topics", "classification", make(n_train), make(n_test // 2),
                    make(n_test), num_classes=3)


def bow(texts, dim=256, lower=False):
    x = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in re.findall(r"\w+", t.lower() if lower else t):
            x[i, zlib.crc32(w.encode()) % dim] += 1.0
    return x


def test_robustness_eval_closed_form_cases():
    task = _synthetic_task()
    r = robustness_eval(bow, task, kinds=("case", "word_dropout", "word_swap"),
                        rates=(0.0, 0.5), seed=0, n_boot=200)
    assert r["n_train"] == 150 and r["n_test"] == 90
    assert r["clean_accuracy"]["value"] > 0.95
    res = {(x["kind"], x["rate"]): x for x in r["results"]}
    for kind in ("case", "word_dropout", "word_swap"):  # rate 0: nothing changes
        z = res[(kind, 0.0)]
        assert z["changed"] == 0.0 and z["drop"]["value"] == 0.0
        assert z["cosine"]["value"] == pytest.approx(1.0)
        assert z["accuracy"]["value"] == r["clean_accuracy"]["value"]
    # a bag of words ignores order: swapping words leaves every embedding unchanged
    assert res[("word_swap", 0.5)]["cosine"]["value"] == pytest.approx(1.0)
    assert res[("word_swap", 0.5)]["drop"]["value"] == 0.0
    # a case-sensitive bag of words moves under case flips; dropping words hurts it too
    assert res[("case", 0.5)]["cosine"]["value"] < 0.8
    assert res[("case", 0.5)]["drop"]["value"] > 0.05
    assert res[("word_dropout", 0.5)]["cosine"]["value"] < 0.9
    for x in r["results"]:
        assert x["drop"]["value"] == pytest.approx(r["clean_accuracy"]["value"] - x["accuracy"]["value"])
        assert -1.0 <= x["cosine"]["low"] and x["cosine"]["high"] <= 1.0
        for key in ("accuracy", "drop", "cosine"):
            assert x[key]["low"] <= x[key]["value"] + 1e-12 <= x[key]["high"] + 2e-12


def test_robustness_eval_lowercasing_encoder_is_case_invariant():
    task = _synthetic_task()
    r = robustness_eval(lambda t: bow(t, lower=True), task, kinds=("case",), rates=(1.0,),
                        n_boot=100, max_test=40)
    (x,) = r["results"]
    assert r["n_test"] == 40 and x["changed"] > 0.9
    assert x["cosine"]["value"] == pytest.approx(1.0) and x["drop"]["value"] == 0.0


def test_robustness_eval_rejects_bad_tasks():
    task = _synthetic_task(30, 10)
    with pytest.raises(KeyError, match="unknown perturbation"):
        robustness_eval(bow, task, kinds=("nope",))
    reg = TaskData("sts", "regression", None, Split(["a"], np.array([0.5], dtype=np.float32)))
    with pytest.raises(ValueError, match="need 'classification'"):
        robustness_eval(bow, reg)
    with pytest.raises(ValueError, match=r"expected shape \(30, d\)"):
        robustness_eval(lambda t: np.zeros((3, 4)), task)
