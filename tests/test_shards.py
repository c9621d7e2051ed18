"""Building and reading token shards: content, split, manifest, atomicity and corruption checks."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from predrecon.data.shards import DatasetError, TokenDataset, build_shards, sha256_file, split_of
from predrecon.data.sources import SourceError, open_source
from predrecon.data.tokenizer import encode_batch, load_tokenizer, special_ids

from fixtures_data import build_tiny, make_docs, tiny_tokenizer


def _by_split(docs, val_fraction=0.2, seed=0):
    out = {"train": [], "val": []}
    for d in docs:
        out[split_of(d, val_fraction, seed)[0]].append(d)
    return out


def test_docs_and_heads_match_tokenizer_in_order(tmp_path):
    docs = make_docs(50)
    tok = tiny_tokenizer()
    ds = build_tiny(tmp_path / "ds", docs, val_fraction=0.2, doc_chars=40)
    expect = _by_split(docs, 0.2)
    assert expect["val"], "the fixture should put some documents in val"
    for split, texts in expect.items():
        assert ds.num_docs(split) == len(texts)
        for i, text in enumerate(texts):
            assert ds.doc(split, i).tolist() == encode_batch(tok, [text])[0]
            assert ds.head(split, i).tolist() == encode_batch(tok, [text[:40]])[0]
    assert ds.dtype == np.uint16
    assert ds.num_tokens("train") == int(ds.doc_lengths("train").sum())
    assert ds.num_docs("validation") == ds.num_docs("val")  # alias
    with pytest.raises(IndexError, match="out of range"):
        ds.doc("val", ds.num_docs("val"))
    with pytest.raises(KeyError, match="no split 'test'"):
        ds.num_docs("test")


def test_manifest_records_everything(tmp_path):
    tok = tiny_tokenizer()
    m = build_shards(make_docs(30), tok, tmp_path / "ds", source_spec="files:x.txt", tokenizer_name="tiny",
                     val_fraction=0.1, doc_chars=64, progress=False)
    d = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert d["source"] == "files:x.txt" and d["doc_chars"] == 64 and d["dtype"] == "uint16"
    assert d["tokenizer"]["name"] == "tiny" and d["tokenizer"]["vocab_size"] == tok.get_vocab_size()
    assert d["tokenizer"]["special_ids"] == special_ids(tok).to_dict()
    assert d["splits"]["train"]["num_docs"] + d["splits"]["val"]["num_docs"] == 30 == d["stats"]["num_docs"]
    assert d["throughput"]["tokens_per_s"] > 0 and d["throughput"]["encoded_tokens"] > d["stats"]["num_tokens"]
    for name, digest in d["files"].items():
        assert sha256_file(tmp_path / "ds" / name) == digest
    assert {"tokenizer.json", "train.offsets.npy", "val.head_offsets.npy", "train.tokens.00000.bin"} <= set(d["files"])
    ds = TokenDataset(tmp_path / "ds", verify=True)
    assert ds.manifest == m and ds.special_ids == special_ids(tok) and ds.vocab_size == tok.get_vocab_size()
    assert ds.tokenizer.encode("river").ids == tok.encode("river").ids  # tokenizer.json copied


def test_source_spec_taken_from_source_object(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("\n\n".join(make_docs(10)))
    m = build_shards(open_source(f"files:{p}"), tiny_tokenizer(), tmp_path / "ds", progress=False)
    assert m.source == f"files:{p}"


def test_split_is_stable_under_order_and_subsets(tmp_path):
    docs = make_docs(120, seed=5)
    a = build_tiny(tmp_path / "a", docs, val_fraction=0.15)
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    b = build_tiny(tmp_path / "b", shuffled[:90], val_fraction=0.15)
    tok = a.tokenizer

    def val_texts(ds):
        return {tok.decode(ds.doc("val", i).tolist()) for i in range(ds.num_docs("val"))}

    assert val_texts(b) == {t for t in val_texts(a) if t in {tok.decode(encode_batch(tok, [d])[0])
                                                           for d in shuffled[:90]}}
    assert split_of(docs[0], 0.15, seed=0) == split_of(docs[0], 0.15, seed=0)
    fracs = [np.mean([split_of(d, 0.3, s)[0] == "val" for d in docs]) for s in range(3)]
    assert all(0.15 < f < 0.45 for f in fracs)  # roughly the requested fraction


def test_tiny_corpus_still_gets_a_val_document(tmp_path):
    docs = make_docs(5)
    ds = build_tiny(tmp_path / "ds", docs, val_fraction=0.01)
    assert ds.num_docs("val") == 1 and ds.num_docs("train") == 4
    tok = ds.tokenizer
    got = sorted(tok.decode(ds.doc(s, i).tolist()) for s in ("train", "val") for i in range(ds.num_docs(s)))
    assert got == sorted(tok.decode(encode_batch(tok, [d])[0]) for d in docs)  # moved, not lost
    assert TokenDataset(tmp_path / "ds", verify=True).num_docs("val") == 1
    none = build_tiny(tmp_path / "none", docs, val_fraction=0.0)
    assert none.num_docs("val") == 0 and none.num_docs("train") == 5


def test_many_small_shard_files_read_back(tmp_path):
    docs = make_docs(40)
    one = build_tiny(tmp_path / "one", docs)
    many = build_tiny(tmp_path / "many", docs, shard_tokens=50)
    files = many.manifest.splits["train"]["tokens"]
    firsts = [f["first_doc"] for f in files] + [many.num_docs("train")]
    assert len(files) > 5
    for f, n_docs in zip(files, np.diff(firsts)):  # a file exceeds the budget only for one long document
        assert f["num_tokens"] <= 50 or n_docs == 1
    for i in range(one.num_docs("train")):
        assert np.array_equal(one.doc("train", i), many.doc("train", i))
        assert np.array_equal(one.head("train", i), many.head("train", i))


def test_large_vocab_uses_uint32(tmp_path):
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    vocab.update({f"w{i}": 5 + i for i in range(70_000)})
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    ds = build_tiny(tmp_path / "ds", ["w69999 w1 w70000", "w65536 w2"], tokenizer=tok, val_fraction=0.0)
    assert ds.dtype == np.uint32
    assert [ds.doc("train", i).tolist() for i in range(2)] == [[70004, 6, 1], [65541, 7]]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()  # an existing empty directory is fine
    build_tiny(out, make_docs(10))
    with pytest.raises(DatasetError, match="already exists"):
        build_tiny(out, make_docs(10, seed=1))
    ds = build_tiny(out, make_docs(12, seed=1), overwrite=True)
    assert ds.num_docs("train") + ds.num_docs("val") == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp or old dirs left


def test_failure_midway_leaves_nothing(tmp_path):
    def docs():
        yield from make_docs(5)
        raise SourceError("corpus.txt: not valid UTF-8 at byte offset 7")

    with pytest.raises(SourceError, match="byte offset 7"):
        build_shards(docs(), tiny_tokenizer(), tmp_path / "ds", progress=False, batch_docs=2)
    assert list(tmp_path.iterdir()) == []


def test_empty_documents_skipped_and_all_empty_is_an_error(tmp_path):
    ds = build_tiny(tmp_path / "ds", ["river city", "   ", "king"], val_fraction=0.0)
    assert ds.num_docs("train") == 2 and ds.manifest.stats["skipped_empty_docs"] == 1
    with pytest.raises(DatasetError, match="no documents"):
        build_tiny(tmp_path / "none", [" ", ""])
    with pytest.raises(ValueError, match="val_fraction"):
        build_tiny(tmp_path / "bad", ["x"], val_fraction=1.0)


def test_tokenizer_given_by_name_or_path(tmp_path):
    p = tmp_path / "tok.json"
    tiny_tokenizer().save(str(p))
    m = build_shards(make_docs(5), p, tmp_path / "ds", progress=False)
    assert m.tokenizer["name"] == str(p)
    assert load_tokenizer(tmp_path / "ds").get_vocab() == tiny_tokenizer().get_vocab()


def test_open_errors_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset directory"):
        TokenDataset(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not a token dataset"):
        TokenDataset(tmp_path / "plain")
    (tmp_path / "plain" / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(DatasetError, match="not a predrecon-shards manifest"):
        TokenDataset(tmp_path / "plain")


def test_missing_truncated_or_corrupt_files_detected(tmp_path):
    build_tiny(tmp_path / "ds", make_docs(20))
    tokens = tmp_path / "ds" / "train.tokens.00000.bin"
    data = bytearray(tokens.read_bytes())
    data[10] ^= 0xFF
    tokens.write_bytes(bytes(data))
    TokenDataset(tmp_path / "ds", verify=False)  # size unchanged: only the content check notices
    with pytest.raises(DatasetError, match="train.tokens.00000.bin: sha256 mismatch"):
        TokenDataset(tmp_path / "ds")  # the default checks content (once per unchanged file)
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        TokenDataset(tmp_path / "ds", verify=True)
    tokens.write_bytes(bytes(data[:-2]))
    with pytest.raises(DatasetError, match="manifest says"):
        TokenDataset(tmp_path / "ds")
    tokens.unlink()
    with pytest.raises(DatasetError, match="missing files train.tokens.00000.bin"):
        TokenDataset(tmp_path / "ds")


def test_pickles_by_path(tmp_path):
    ds = build_tiny(tmp_path / "ds", make_docs(10))
    blob = pickle.dumps(ds)
    assert len(blob) < 1000  # the memory maps are not copied into the pickle
    again = pickle.loads(blob)
    assert np.array_equal(again.doc("train", 0), ds.doc("train", 0))


# ------------------------------------------------------------------ payload verification at open
def _resign(root, *names):
    """Rewrite the manifest's sha256 of ``names`` so that only the content checks stand in the way."""
    m = json.loads((root / "manifest.json").read_text())
    for n in names:
        m["files"][n] = sha256_file(root / n)
    (root / "manifest.json").write_text(json.dumps(m))


def test_random_bytes_or_zeroed_shard_never_opens_by_default(tmp_path):
    build_tiny(tmp_path / "ds", make_docs(40))
    shard = tmp_path / "ds" / "train.tokens.00000.bin"
    good = shard.read_bytes()
    TokenDataset(tmp_path / "ds")  # verified once; the cache must not hide a later change
    rng = np.random.default_rng(0)
    for bad in (good[:100] + rng.bytes(64) + good[164:], bytes(len(good))):
        shard.write_bytes(bad)
        with pytest.raises(DatasetError, match=r"train.tokens.00000.bin: sha256 mismatch"):
            TokenDataset(tmp_path / "ds")
    shard.write_bytes(good)
    assert TokenDataset(tmp_path / "ds").num_docs("train") > 0


def test_ids_outside_the_vocabulary_are_refused(tmp_path):
    ds = build_tiny(tmp_path / "ds", make_docs(20))
    shard = tmp_path / "ds" / "train.heads.00000.bin"
    a = np.fromfile(shard, dtype=ds.dtype)
    a[3] = ds.vocab_size  # one past the last id
    a.tofile(shard)
    _resign(tmp_path / "ds", shard.name)
    msg = f"train.heads.00000.bin: token id {ds.vocab_size} is outside the vocabulary"
    with pytest.raises(DatasetError, match=msg):
        TokenDataset(tmp_path / "ds")


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "decreasing", "float"])
def test_bad_offsets_are_one_clear_error(tmp_path, damage):
    build_tiny(tmp_path / "ds", make_docs(20))
    off = tmp_path / "ds" / "train.offsets.npy"
    good = np.load(off)
    if damage == "zeroed":
        off.write_bytes(bytes(off.stat().st_size))
    elif damage == "truncated":
        off.write_bytes(off.read_bytes()[:100])
    elif damage == "decreasing":
        bad = good.copy()
        bad[1], bad[2] = bad[2], bad[1]
        np.save(off, bad)
    else:
        np.save(off, good.astype(np.float64))
    _resign(tmp_path / "ds", off.name)
    msg = r"train.offsets.npy: (unreadable offsets|offsets do not partition|expected a 1-D int64)"
    with pytest.raises(DatasetError, match=msg):
        TokenDataset(tmp_path / "ds", verify=False)  # structure alone catches it


def test_disk_full_while_building_is_one_clear_error(tmp_path, monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(DatasetError, match="ds: writing the dataset failed: disk full .* nothing was written"):
        build_tiny(tmp_path / "ds", make_docs(10))
    assert list(tmp_path.iterdir()) == []


def test_cli_data_verify(tmp_path, capsys):
    from predrecon.cli import main

    build_tiny(tmp_path / "ds", make_docs(10))
    assert main(["data", "verify", str(tmp_path / "ds")]) == 0
    assert "match their sha256" in capsys.readouterr().out
    shard = tmp_path / "ds" / "val.tokens.00000.bin"
    shard.write_bytes(bytes(shard.stat().st_size))
    assert main(["data", "verify", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "val.tokens.00000.bin: sha256 mismatch" in err[0]


def test_overwrite_replaces_only_a_previous_dataset(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(DatasetError, match="--overwrite replaces only a previous dataset.*holds notes.txt"):
        build_tiny(mine, make_docs(10), overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary left
