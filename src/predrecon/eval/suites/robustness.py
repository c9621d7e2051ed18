"""Robustness of frozen embeddings to seeded text perturbations.

Perturbations (registry :data:`PERTURBATIONS`) are pure functions ``fn(text, rate, rng) -> str``
of a ``numpy.random.Generator``: the same text, rate and generator state give the same output.
Words are maximal runs of non-whitespace; the whitespace between words is kept as it was, so
``rate == 0`` returns the text unchanged. Each word is selected independently with
probability ``rate``.

* ``typo``: one character edit per selected word (that contains a letter): transpose two
  neighbouring characters, insert or substitute a QWERTY-neighbour of a letter, or delete a
  character; the edit always changes the word and never empties it.
* ``word_dropout``: drop selected words; at least one word is always kept.
* ``word_swap``: scanning left to right, swap word i with word i+1 with probability ``rate``
  (non-overlapping swaps); the multiset of words is preserved.
* ``case``: flip the case of every letter of selected words (letters whose case flip does not
  round-trip to a single character, e.g. 'ß', are left alone).

:func:`robustness_eval` trains a probe on clean training embeddings and reports clean and
perturbed test accuracy, the accuracy drop (paired bootstrap) and the cosine stability of the
embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from predrecon.eval.metrics.fewshot import EmbedFn, embed_texts, fit_probe, mean_ci, pair_features
from predrecon.eval.tasks.registry import Split, TaskData

PerturbFn = Callable[[str, float, np.random.Generator], str]

_WORD = re.compile(r"\S+")

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    pos = {c: (r, i) for r, row in enumerate(_KEYBOARD_ROWS) for i, c in enumerate(row)}
    out = {}
    for c, (r, i) in pos.items():
        out[c] = "".join(d for d, (r2, i2) in pos.items()
                         if d != c and abs(r2 - r) <= 1 and abs(i2 - i) <= 1)
    return out


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()  # letter -> QWERTY-adjacent letters


def _split_words(text: str) -> tuple[list[str], list[str]]:
    """text == seps[0] + words[0] + seps[1] + ... + words[-1] + seps[-1]."""
    words, seps, last = [], [], 0
    for m in _WORD.finditer(text):
        seps.append(text[last:m.start()])
        words.append(m.group())
        last = m.end()
    seps.append(text[last:])
    return words, seps


def _join(words: list[str], seps: list[str]) -> str:
    return seps[0] + "".join(w + s for w, s in zip(words, seps[1:]))


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"perturbation rate must be in [0, 1], got {rate}")


def _neighbour(c: str, rng: np.random.Generator) -> str:
    nb = KEYBOARD_NEIGHBOURS.get(c.lower())
    if not nb:  # a letter outside a-z: any other a-z letter
        nb = "abcdefghijklmnopqrstuvwxyz".replace(c.lower(), "")
    d = nb[rng.integers(len(nb))]
    return d.upper() if c.isupper() else d


def _typo_word(w: str, rng: np.random.Generator) -> str:
    letters = [i for i, c in enumerate(w) if c.isalpha()]
    swaps = [i for i in range(len(w) - 1) if w[i] != w[i + 1]]
    ops = ["insert", "substitute"] + (["swap"] if swaps else []) + (["delete"] if len(w) > 1 else [])
    op = ops[rng.integers(len(ops))]
    if op == "swap":
        i = swaps[rng.integers(len(swaps))]
        return w[:i] + w[i + 1] + w[i] + w[i + 2:]
    if op == "delete":
        i = int(rng.integers(len(w)))
        return w[:i] + w[i + 1:]
    i = letters[rng.integers(len(letters))]
    if op == "insert":
        j = i + int(rng.integers(2))  # before or after the letter it neighbours
        return w[:j] + _neighbour(w[i], rng) + w[j:]
    return w[:i] + _neighbour(w[i], rng) + w[i + 1:]  # substitute: neighbour != w[i]


def typo(text: str, rate: float, rng: np.random.Generator) -> str:
    """One keyboard-typo edit in each selected word that contains a letter."""
    _check_rate(rate)
    words, seps = _split_words(text)
    sel = rng.random(len(words)) < rate
    words = [_typo_word(w, rng) if s and any(c.isalpha() for c in w) else w
             for w, s in zip(words, sel)]
    return _join(words, seps)


def word_dropout(text: str, rate: float, rng: np.random.Generator) -> str:
    """Drop each word with probability ``rate``; one random word survives if all were drawn."""
    _check_rate(rate)
    words, seps = _split_words(text)
    if not words:
        return text
    keep = rng.random(len(words)) >= rate
    if not keep.any():
        keep[rng.integers(len(words))] = True
    if keep.all():
        return text
    kept = np.flatnonzero(keep)
    # each kept word keeps the whitespace before it (the first keeps the leading whitespace)
    new_seps = [seps[0]] + [seps[i] for i in kept[1:]] + [seps[-1]]
    return _join([words[i] for i in kept], new_seps)


def word_swap(text: str, rate: float, rng: np.random.Generator) -> str:
    """Swap adjacent words (non-overlapping pairs), each position with probability ``rate``."""
    _check_rate(rate)
    words, seps = _split_words(text)
    draws = rng.random(max(len(words) - 1, 0))
    i = 0
    while i < len(words) - 1:
        if draws[i] < rate:
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 2
        else:
            i += 1
    return _join(words, seps)


def _flip(c: str) -> str:
    s = c.swapcase()
    return s if len(s) == 1 and s.swapcase() == c else c


def case(text: str, rate: float, rng: np.random.Generator) -> str:
    """Flip the case of the letters of each selected word."""
    _check_rate(rate)
    words, seps = _split_words(text)
    sel = rng.random(len(words)) < rate
    words = ["".join(_flip(c) for c in w) if s else w for w, s in zip(words, sel)]
    return _join(words, seps)


PERTURBATIONS: dict[str, PerturbFn] = {
    "typo": typo,
    "word_dropout": word_dropout,
    "word_swap": word_swap,
    "case": case,
}


def get_perturbation(kind: str) -> PerturbFn:
    """The perturbation registered as ``kind``; ``KeyError`` listing the known names."""
    try:
        return PERTURBATIONS[kind]
    except KeyError:
        raise KeyError(f"unknown perturbation {kind!r} (known: {', '.join(PERTURBATIONS)})") from None


def perturb_split(split: Split, kind: str, rate: float, seed: int) -> Split:
    """A copy of ``split`` with ``kind`` applied at ``rate`` to every text (labels unchanged).

    One generator seeded by ``(seed, kind, rate)`` walks the rows in order (text_a then text_b
    of each row), so the result is deterministic in its arguments.
    """
    fn = get_perturbation(kind)
    _check_rate(rate)
    kind_id = list(PERTURBATIONS).index(kind)
    rng = np.random.default_rng([seed, kind_id, int(round(rate * 1_000_000))])
    a, b = [], [] if split.text_b is not None else None
    for i, t in enumerate(split.text_a):
        a.append(fn(t, rate, rng))
        if b is not None:
            b.append(fn(split.text_b[i], rate, rng))
    return Split(a, split.labels.copy(), b)


def _features(embed: EmbedFn, split: Split, what: str) -> tuple[np.ndarray, list[np.ndarray]]:
    ea = embed_texts(embed, split.text_a, f"{what} text_a")
    if split.text_b is None:
        return ea, [ea]
    eb = embed_texts(embed, split.text_b, f"{what} text_b")
    return pair_features(ea, eb), [ea, eb]


def _row_cosine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    nu = np.linalg.norm(u, axis=1)
    nv = np.linalg.norm(v, axis=1)
    cos = (u * v).sum(axis=1) / np.maximum(nu * nv, 1e-12)
    return np.clip(cos, -1.0, 1.0)  # float32 rounding can exceed 1 for identical rows


def robustness_eval(embed: EmbedFn, task: TaskData,
                    kinds: Sequence[str] = tuple(PERTURBATIONS),
                    rates: Sequence[float] = (0.05, 0.1, 0.2), seed: int = 0,
                    n_boot: int = 1000, ci: float = 0.95, C: float = 1.0,
                    max_train: int | None = None, max_test: int | None = None) -> dict:
    """Probe accuracy under perturbation of the test texts, and embedding stability.

    A standardised logistic-regression probe is fit on clean ``task.train`` embeddings (pair
    tasks use [u, v, |u-v|, u*v]) and evaluated on ``task.report_split``, clean and perturbed
    by every (kind, rate). ``max_train`` / ``max_test`` take a seeded random subset.
    Returns ``{"task", "n_train", "n_test", "clean_accuracy", "results": [...]}``; each result
    holds ``kind, rate, accuracy, drop`` (clean minus perturbed, paired bootstrap),
    ``cosine`` (mean cosine between the clean and perturbed embedding of the same text) and
    ``changed`` (fraction of texts the perturbation altered). Intervals are dicts
    ``{"value", "low", "high", "n"}``.
    """
    if task.kind != "classification":
        raise ValueError(f"robustness_eval: task {task.name!r} is {task.kind!r}, "
                         "need 'classification'")
    if task.train is None:
        raise ValueError(f"robustness_eval: task {task.name!r} has no train split")
    for kind in kinds:
        get_perturbation(kind)
    rng = np.random.default_rng(seed)
    train, test = task.train, task.report_split
    if max_train is not None and len(train) > max_train:
        train = train.subset(np.sort(rng.choice(len(train), max_train, replace=False)))
    if max_test is not None and len(test) > max_test:
        test = test.subset(np.sort(rng.choice(len(test), max_test, replace=False)))

    x_train, _ = _features(embed, train, "train")
    clf = fit_probe(x_train, train.labels, C=C, seed=seed)
    x_clean, clean_parts = _features(embed, test, "clean test")
    correct_clean = (clf.predict(x_clean) == test.labels).astype(np.float64)
    out = {"task": task.name, "n_train": len(train), "n_test": len(test),
           "clean_accuracy": mean_ci(correct_clean, n_boot, ci, seed), "results": []}
    for kind in kinds:
        for rate in rates:
            pert = perturb_split(test, kind, rate, seed)
            x_pert, pert_parts = _features(embed, pert, f"{kind}@{rate} test")
            correct = (clf.predict(x_pert) == test.labels).astype(np.float64)
            cos = np.concatenate([_row_cosine(c, p) for c, p in zip(clean_parts, pert_parts)])
            changed = np.mean([p != t for p, t in zip(pert.text_a, test.text_a)])
            out["results"].append({
                "kind": kind, "rate": float(rate),
                "accuracy": mean_ci(correct, n_boot, ci, seed),
                "drop": mean_ci(correct_clean - correct, n_boot, ci, seed),
                "cosine": mean_ci(cos, n_boot, ci, seed),
                "changed": float(changed),
            })
    return out
