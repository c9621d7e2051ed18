"""Property tests on arbitrary bytes: the corpus readers, the shard writer/reader and the GLUE
readers either parse or raise the project's error type naming the file — never another exception."""

import bz2
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from predrecon.data import sources
from predrecon.data.shards import DatasetError, TokenDataset, build_shards
from predrecon.data.sources import SourceError
from predrecon.data.tokenizer import TokenizerError, encode_batch
from predrecon.eval.tasks import glue

from fixtures_data import make_docs, tiny_tokenizer

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# arbitrary bytes, biased towards the structure each reader looks for
_FRAGMENTS = [b"\n", b"\n\n", b"\t", b"\r\n", b"\xef\xbb\xbf", b"\x00", b"\xff\xfe", b"\xc3", b"{", b"}",
              b'"text"', b":", b'{"text": "a b"}\n', b"<doc id=\"1\" url=\"u\" title=\"t\">", b"</doc>",
              b"<page><ns>0</ns><revision><text>", b"</text></revision></page>", b"<mediawiki>",
              b"</mediawiki>", b"sentence\tlabel\n", b"0", b"1", b"2.5", b"entailment", b"word ", b"\xe2\x80\x94"]
junk = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(_FRAGMENTS)), max_size=30).map(b"".join)


def _write(data: bytes, name: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix="prop-"))
    p = d / name
    p.write_bytes(data)
    return p


def _drain(fn, path: Path, errors: tuple[type[BaseException], ...]) -> None:
    """Run a reader to the end: every item a str, or one of ``errors`` that names the file."""
    try:
        items = list(fn(path))
    except errors as e:
        assert path.name in str(e), f"error does not name the file: {e}"
    else:
        assert all(isinstance(x, str) for x in items)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


# ----------------------------------------------------------------------------------- corpora
@SETTINGS
@given(data=junk, unit=st.sampled_from(["block", "line"]))
def test_text_reader_on_arbitrary_bytes(data, unit):
    _drain(lambda p: sources.read_text_file(p, unit=unit), _write(data, "c.txt"), (SourceError,))


@SETTINGS
@given(data=junk)
def test_jsonl_reader_on_arbitrary_bytes(data):
    _drain(sources.read_jsonl_file, _write(data, "c.jsonl"), (SourceError,))


@SETTINGS
@given(data=junk)
def test_wikiextractor_reader_on_arbitrary_bytes(data):
    _drain(sources.read_wikiextractor_file, _write(data, "wiki_00"), (SourceError,))


@SETTINGS
@given(data=junk, compress=st.booleans())
def test_mediawiki_reader_on_arbitrary_bytes(data, compress):
    if compress:
        path = _write(bz2.compress(data), "dump.xml.bz2")
    else:
        path = _write(data, "dump.xml")
    _drain(sources.read_mediawiki_dump, path, (SourceError,))


@SETTINGS
@given(data=junk)
def test_files_source_on_arbitrary_bytes(data):
    path = _write(data, "c.txt")
    _drain(lambda p: sources.iter_documents(f"files:{p}"), path, (SourceError,))


# ------------------------------------------------------------------------------------ shards
texts = st.lists(st.text(max_size=60), min_size=1, max_size=12)


@SETTINGS
@given(docs=texts, doc_chars=st.integers(1, 40))
def test_shards_round_trip_arbitrary_text(docs, doc_chars):
    """What is written is read back: every non-empty document's ids, in order, heads included."""
    tok = tiny_tokenizer()
    out = Path(tempfile.mkdtemp(prefix="prop-")) / "ds"
    try:
        want = [ids for ids in encode_batch(tok, docs) if ids]
        heads = [h for ids, h in zip(encode_batch(tok, docs), encode_batch(tok, [d[:doc_chars] for d in docs])) if ids]
        try:
            build_shards(docs, tok, out, val_fraction=0.0, doc_chars=doc_chars, progress=False, shard_tokens=7)
        except DatasetError as e:
            assert not want and "no documents" in str(e)
            return
        ds = TokenDataset(out)
        n = ds.num_docs("train")
        assert [ds.doc("train", i).tolist() for i in range(n)] == want
        assert [ds.head("train", i).tolist() for i in range(n)] == heads
        assert ds.num_tokens("train") == sum(map(len, want))
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("propds") / "ds"
    build_shards(make_docs(30, seed=2), tiny_tokenizer(), out, val_fraction=0.2, progress=False, shard_tokens=300)
    return out


def _read_everything(ds: TokenDataset) -> None:
    for split in ds.splits:
        for i in range(ds.num_docs(split)):
            assert ds.doc(split, i).ndim == 1 and ds.head(split, i).ndim == 1
    _ = ds.tokenizer


@SETTINGS
@given(data=st.data(), payload=junk, rehash=st.booleans())
def test_shard_reader_on_arbitrary_bytes(base_dataset, data, payload, rehash):
    """Any one file of a dataset replaced by arbitrary bytes (and, for a consistent but hostile
    dataset, the manifest's sha256 updated to match): opening and reading every document either
    works or raises DatasetError/TokenizerError naming the dataset."""
    names = sorted(p.name for p in base_dataset.iterdir())
    name = data.draw(st.sampled_from(names), label="file")
    assume(not (rehash and name == "manifest.json"))
    d = Path(tempfile.mkdtemp(prefix="prop-")) / "ds"
    shutil.copytree(base_dataset, d)
    try:
        (d / name).write_bytes(payload)
        if rehash:
            m = json.loads((d / "manifest.json").read_text())
            if name in m["files"]:
                m["files"][name] = hashlib.sha256(payload).hexdigest()
            (d / "manifest.json").write_text(json.dumps(m))
        try:
            _read_everything(TokenDataset(d))
        except (DatasetError, TokenizerError) as e:
            assert str(d) in str(e) or name in str(e), f"error does not name the dataset: {e}"
    finally:
        shutil.rmtree(d.parent, ignore_errors=True)


@SETTINGS
@given(ids=st.lists(st.integers(0, 65535), min_size=1, max_size=50))
def test_shard_reader_rejects_ids_outside_the_vocabulary(base_dataset, ids):
    """A shard whose ids exceed the vocabulary, with a matching sha256, is refused or reads back ids
    below the vocabulary size — never ids that would index past the embedding."""
    d = Path(tempfile.mkdtemp(prefix="prop-")) / "ds"
    shutil.copytree(base_dataset, d)
    try:
        m = json.loads((d / "manifest.json").read_text())
        shard = d / "train.tokens.00000.bin"
        a = np.fromfile(shard, dtype=np.uint16)
        a[: len(ids)] = np.asarray(ids[: len(a)], dtype=np.uint16)
        a.tofile(shard)
        m["files"][shard.name] = hashlib.sha256(shard.read_bytes()).hexdigest()
        (d / "manifest.json").write_text(json.dumps(m))
        try:
            ds = TokenDataset(d)
        except DatasetError as e:
            assert max(ids) >= m["tokenizer"]["vocab_size"] and shard.name in str(e)
            return
        top = max(int(ds.doc("train", i).max(initial=0)) for i in range(ds.num_docs("train")))
        assert top < ds.vocab_size
    finally:
        shutil.rmtree(d.parent, ignore_errors=True)


# -------------------------------------------------------------------------------------- GLUE
GLUE_READERS = {"SST-2/dev.tsv": glue._read_sst2, "CoLA/dev.tsv": glue._read_cola, "MRPC/dev.tsv": glue._read_mrpc,
                "STS-B/dev.tsv": glue._read_stsb, "MNLI/dev_matched.tsv": glue._read_mnli_official,
                "MNLI/textfooler.tsv": glue._read_mnli_textfooler}


@SETTINGS
@given(data=junk, which=st.sampled_from(sorted(GLUE_READERS)))
def test_glue_readers_on_arbitrary_bytes(data, which):
    path = _write(data, which.replace("/", "_"))
    try:
        split = GLUE_READERS[which](path)
    except ValueError as e:
        assert path.name in str(e), f"error does not name the file: {e}"
    else:
        assert len(split) >= 1
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


@SETTINGS
@given(data=junk, ncols=st.sampled_from([None, 1, 2, 4]), header=st.booleans())
def test_read_tsv_on_arbitrary_bytes(data, ncols, header):
    path = _write(data, "x.tsv")
    try:
        head, rows = glue.read_tsv(path, ncols, header=header)
    except ValueError as e:
        assert "x.tsv" in str(e)
    else:
        assert rows and all(len(r) == (ncols or len(head)) for _, r in rows)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
