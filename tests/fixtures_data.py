"""Small corpora, tokenizers and datasets that the data-pipeline tests write themselves."""

from __future__ import annotations

import functools
import importlib.util
import random
from pathlib import Path

from tokenizers import Tokenizer

from predrecon.data.shards import TokenDataset, build_shards
from predrecon.data.tokenizer import SpecialIds, load_tokenizer, train_wordpiece

WORDS = ("the river city north ancient music church language history king war science water light "
         "energy theory island mountain painting novel century empire trade school village bridge "
         "garden animal forest planet engine market council temple poet law harbour festival").split()


def make_docs(n: int, seed: int = 0, min_words: int = 3, max_words: int = 120) -> list[str]:
    """``n`` distinct pseudo-English documents of varied length (deterministic in ``seed``)."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        k = rng.randint(min_words, max_words)
        words = [rng.choice(WORDS) for _ in range(k)]
        sents, j = [], 0
        while j < k:
            m = rng.randint(4, 12)
            chunk = words[j:j + m]
            sents.append(" ".join(chunk).capitalize() + ".")
            j += m
        docs.append(f"Doc {i}. " + " ".join(sents))
    return docs


@functools.cache
def tiny_tokenizer_json(vocab_size: int = 160) -> str:
    """A WordPiece trained on :func:`make_docs` (cached per process, serialised)."""
    return train_wordpiece(make_docs(200, seed=123), vocab_size, min_frequency=1).to_str()


def tiny_tokenizer(vocab_size: int = 160) -> Tokenizer:
    return Tokenizer.from_str(tiny_tokenizer_json(vocab_size))


def build_tiny(out: Path, docs: list[str] | None = None, tokenizer: Tokenizer | None = None,
               **kw) -> TokenDataset:
    """Build a dataset from ``docs`` (default 60 documents) with the tiny tokenizer."""
    docs = make_docs(60) if docs is None else docs
    kw.setdefault("progress", False)
    build_shards(docs, tokenizer or tiny_tokenizer(), out, **kw)
    return TokenDataset(out)


def has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def bert_tokenizer() -> Tokenizer:
    return load_tokenizer("bert-base-uncased")


# ---- tensors without a tokenizer (masking and sampler tests) ----
SMALL_SPECIAL = SpecialIds(pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)
SMALL_VOCAB = 50


def gen(seed: int = 0):
    """A seeded CPU ``torch.Generator``."""
    import torch
    return torch.Generator().manual_seed(seed)


def packed_rows(docs_per_row, T: int, seed: int = 0):
    """Packed-style rows: each row a list of document lengths; tokens drawn from non-special ids
    below :data:`SMALL_VOCAB`, laid out by ``assemble_rows`` with :data:`SMALL_SPECIAL`."""
    import torch

    from predrecon.data.batching import assemble_rows
    g = torch.Generator().manual_seed(seed)
    rows = [[torch.randint(5, SMALL_VOCAB, (n,), generator=g).numpy() for n in lens] for lens in docs_per_row]
    return assemble_rows(rows, T, SMALL_SPECIAL.cls_id, SMALL_SPECIAL.sep_id, SMALL_SPECIAL.pad_id)


def tiny_dataset(factory, name: str, n_docs: int, seed: int) -> str:
    """``make_docs(n_docs, seed)`` built as a dataset in a fresh folder of pytest's
    ``tmp_path_factory`` (for module- or session-scoped fixtures); returns its path."""
    out = factory.mktemp(name) / "ds"
    build_tiny(out, docs=make_docs(n_docs, seed=seed))
    return str(out)


def debug_cfg(data: str, *ov: str):
    """The ``debug`` preset on ``data``, no progress bar, then ``ov`` (KEY=VALUE overrides)."""
    from predrecon.config import apply_overrides
    from predrecon.presets import get_preset
    return apply_overrides(get_preset("debug"), [f"data.path={data}", "train.progress=false", *ov])
