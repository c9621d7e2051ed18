"""Evaluation suites: one entry point, :func:`evaluate`, with suites plugged in by name.

:data:`SUITES` maps a name to a :class:`Suite`. ``paper`` is the paper's evaluation
(:func:`predrecon.eval.suites.runner.evaluate`: GLUE tasks x poolings, floors, the headline family);
``fewshot``, ``robustness``, ``crosslingual`` and ``similarity`` are the evaluations beyond the
paper (:data:`predrecon.eval.suites.extras.EXTRAS`, run together by
:func:`predrecon.eval.suites.extras.run_extras` so each distinct text is encoded once). Every suite
writes metric entries of the one record contract (:func:`predrecon.eval.records.entry`), which
:func:`predrecon.eval.report.report.compare` reads with the same statistics (the seed test or the
paired tests of :mod:`predrecon.eval.records`); the paper suite's rows form the headline family,
the other suites' rows the exploratory tables.

A new suite registers ``Suite(name, family, run, records)``: ``run(encoder, out_dir, tasks,
poolings, kw) -> records`` with ``kw`` the keyword arguments it accepts, ``records`` the glob of
its record files under an eval directory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..encode.encoders import TextEncoder, load_text_encoder
from ..names import DEFAULT_POOLINGS

#: The GLUE tasks of the paper suite by default (as ``predrecon eval --tasks``).
DEFAULT_TASKS: tuple[str, ...] = ("sst2", "mrpc", "mnli", "cola", "stsb")
#: Keyword arguments every suite that accepts them receives.
SHARED_KW = ("seed", "n_boot", "glue_dir", "batch_size", "max_len", "progress")


@dataclass(frozen=True)
class Suite:
    """A pluggable evaluation: ``family`` is 'headline' (its rows may enter the pre-registered
    family) or 'exploratory'; ``accepts`` the keyword arguments ``run`` takes."""

    name: str
    family: str
    run: Callable[..., Any]
    records: str
    accepts: tuple[str, ...]


def _run_paper(encoder: TextEncoder, out_dir: Path, tasks, poolings, kw: dict) -> list[dict]:
    from .runner import evaluate as run_paper

    return run_paper(encoder, tasks, poolings, out_dir, **kw)


def _extra_runner(name: str) -> Callable[..., dict]:
    def run(encoder: TextEncoder, out_dir: Path, tasks, poolings, kw: dict) -> dict:
        from .extras import run_extras

        return run_extras(encoder, out_dir, extras=(name,), **kw)[name]
    run.__name__ = f"run_{name}"
    return run


def _params(fn_path: str) -> tuple[str, ...]:
    import importlib

    mod, _, attr = fn_path.rpartition(".")
    sig = inspect.signature(getattr(importlib.import_module(mod), attr))
    return tuple(p for p, v in sig.parameters.items() if v.kind == v.KEYWORD_ONLY or v.default is not v.empty)


def _registry() -> dict[str, Suite]:
    paper_kw = tuple(p for p in _params("predrecon.eval.suites.runner.evaluate")
                     if p not in ("tasks", "poolings", "out_dir"))
    extra_kw = tuple(p for p in _params("predrecon.eval.suites.extras.run_extras") if p not in ("extras", "out_dir"))
    out = {"paper": Suite("paper", "headline", _run_paper, "*/*.json", paper_kw)}
    for name in ("fewshot", "robustness", "crosslingual", "similarity"):
        out[name] = Suite(name, "exploratory", _extra_runner(name), f"extras/{name}.json", extra_kw)
    return out


#: name -> :class:`Suite` (``paper`` first; the others in report order).
SUITES: dict[str, Suite] = _registry()


def parse_suites(spec: str | Sequence[str]) -> list[str]:
    """``'paper,fewshot'`` or a sequence -> known suite names in order, duplicates dropped;
    ``KeyError`` naming the unknown ones."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        raise KeyError(f"unknown suite(s) {unknown} (known: {', '.join(SUITES)})")
    if not names:
        raise ValueError("evaluate: no suites given")
    return list(dict.fromkeys(names))


def evaluate(encoder: str | TextEncoder, suites: str | Sequence[str] = ("paper",),
             tasks: str | Sequence[str] = DEFAULT_TASKS, poolings: str | Sequence[str] = DEFAULT_POOLINGS,
             out_dir: str | Path = "eval", *, device: str | None = None, suite_kw: dict[str, dict] | None = None,
             **kw) -> dict[str, Any]:
    """Evaluate one frozen ``encoder`` with the named ``suites``; write every suite's records to
    ``out_dir`` and return ``{suite: records}`` (the paper suite: its list of result dicts; the
    others: their record).

    ``encoder``: a :class:`TextEncoder` or a spec for :func:`load_text_encoder`, loaded once for
    all suites (the paper suite records the spec). ``tasks`` / ``poolings`` are the paper
    suite's. ``kw`` goes to every suite that accepts it (``seed``, ``n_boot``, ``glue_dir``,
    ... to all; ``faithful``, ``max_examples``, ``random_floor`` to the paper suite; ``ks``,
    ``draws``, ``rates`` to the extras); a keyword no chosen suite accepts raises ``TypeError``
    naming it. ``suite_kw``: ``{suite: {kw: value}}`` for one suite only (e.g. a different
    ``max_train`` for ``fewshot``). Extras share one text cache when run in one call of
    :func:`predrecon.eval.suites.extras.run_extras` (unless ``suite_kw`` sets one of them apart).
    """
    names = parse_suites(suites)
    suite_kw = dict(suite_kw or {})
    bad = [s for s in suite_kw if s not in names]
    if bad:
        raise KeyError(f"suite_kw names suite(s) {bad} that are not run (running: {', '.join(names)})")
    unused = [k for k in kw if not any(k in SUITES[s].accepts for s in names)]
    if unused:
        raise TypeError(f"evaluate: keyword(s) {unused} accepted by none of the suites {names}")
    seed = kw.get("seed", 0)
    enc = encoder if isinstance(encoder, TextEncoder) else load_text_encoder(encoder, device=device, seed=seed)
    spec = encoder if isinstance(encoder, str) else enc.name
    out = Path(out_dir)
    results: dict[str, Any] = {}
    extras = [s for s in names if SUITES[s].family == "exploratory"]
    for name in names:
        suite = SUITES[name]
        args = {k: v for k, v in kw.items() if k in suite.accepts} | suite_kw.get(name, {})
        if name == "paper":
            args.setdefault("spec_name", spec)
            results[name] = suite.run(enc, out, tasks, poolings, args)
        elif name in results:
            continue
        elif not any(suite_kw.get(e) for e in extras):
            from .extras import run_extras  # the extras together: one text cache

            results.update(run_extras(enc, out, extras=tuple(extras), **args))
        else:
            results[name] = suite.run(enc, out, tasks, poolings, args)
    return {n: results[n] for n in names}
