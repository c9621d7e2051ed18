"""Continued pre-training of a good encoder: the untouched reference arm and the MiniLM demo.

    predrecon demo --init minilm                    # all-MiniLM-L6-v2, hybrid vs MLM vs untouched
    predrecon experiment --init hf:DIR --out runs/x # any transformers BERT checkpoint

From-scratch encoders trained for minutes on a CPU stay near the random-init floor (``make
demo``); continuing a good encoder's pre-training is measurable in minutes. With ``init``,
:func:`~predrecon.experiment.run_experiment` takes every arm's shape from the checkpoint
(``train.init``, :func:`~predrecon.interop.hf.apply_init`), builds the dataset with the
checkpoint's own tokenizer (:func:`init_dataset`) and adds :data:`REFERENCE_ARM`, the untouched
checkpoint, first, so every difference reads "untouched - continued":

* it is exported through the same path as the trained arms (a step-0 checkpoint of the run
  config, then :func:`~predrecon.train.export.export_encoder`; :func:`reference_encoder`), so it
  is encoded, pooled, floored and tested exactly like them;
* it is not trained, so its "seeds" are one encoder: it is evaluated once (seed 0) and that
  evaluation stands for each seed. Its seed variance is zero, and the seed test compares each
  trained arm's seed mean with a constant (:data:`REFERENCE_NOTE`, written into the report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig

#: Name (and directory) of the untouched checkpoint's arm.
REFERENCE_ARM = "untouched"
REFERENCE_NOTE = ("Reference arm '{arm}': the {init} checkpoint itself, not trained (exported at step 0 through "
                  "the same path as the trained arms). Its 'seeds' are one encoder evaluated once, so its seed "
                  "variance is zero: each test compares a continued arm's seed mean with this constant, and "
                  "diff = untouched - continued.")


def init_dataset(init: str, source: str, out: Path, progress: bool = True) -> Path:
    """The dataset of ``source`` under ``out``, tokenised with the ``init`` checkpoint's own
    ``tokenizer.json`` (so its vocabulary is the checkpoint's); an existing valid one is kept."""
    from .data.shards import TokenDataset, build_shards
    from .data.sources import open_source
    from .data.tokenizer import load_tokenizer
    from .interop.hf import resolve_hf_dir

    if (out / "manifest.json").exists():
        TokenDataset(out)  # raises if broken
        return out
    tok_file = resolve_hf_dir(init) / "tokenizer.json"
    if not tok_file.is_file():
        raise FileNotFoundError(f"{init}: no tokenizer.json in {tok_file.parent} to build the dataset with; "
                                "build it with `predrecon data build --tokenizer ...` and pass --data")
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(f"[predrecon] building dataset from {source} with {init}'s tokenizer -> {out}")
    build_shards(open_source(source), load_tokenizer(tok_file), out, source_spec=source, tokenizer_name=init,
                 progress=progress)
    return out


def init_base(base: RunConfig, init: str, data_dir: str | Path) -> RunConfig:
    """``base`` with ``train.init`` and ``data.path`` set and ``model.*`` taken from the checkpoint
    (raises :class:`~predrecon.config.ConfigError` when the data's vocabulary is not the checkpoint's)."""
    from .config import apply_overrides
    from .interop.hf import apply_init

    if not init.startswith("hf:"):
        raise ConfigError(f"--init: expected hf:DIR or hf:minilm, got {init!r}")
    return apply_init(apply_overrides(base, [f"train.init={init}", f"data.path={data_dir}"]))


def reference_encoder(cfg: RunConfig, run_dir: Path) -> Path:
    """Export the untouched ``cfg.train.init`` checkpoint as ``run_dir/encoder``: the run's model
    built from ``cfg`` and loaded as a fresh ``--init`` run starts (student = checkpoint), saved as
    a step-0 checkpoint and exported like a trained arm. Idempotent."""
    import torch

    from .data.shards import TokenDataset
    from .interop.hf import load_init_weights
    from .train.checkpoint import latest_valid_checkpoint, save_checkpoint
    from .train.export import export_encoder
    from .train.meta import HybridModel

    enc_dir = run_dir / "encoder"
    if (enc_dir / "model.safetensors").exists():
        return enc_dir
    if latest_valid_checkpoint(run_dir) is None:
        ds = TokenDataset(cfg.data.path)
        torch.manual_seed(cfg.train.seed)
        model = HybridModel(cfg, ds.vocab_size, ds.special_ids)
        load_init_weights(model, cfg)
        save_checkpoint(run_dir, 0, model=model.state_dict(), target=None, optimizer=None,
                        state={"config": cfg.to_dict(), "reference": True}, keep=1)
        (run_dir / "config.json").write_text(cfg.to_json())
    return export_encoder(run_dir, enc_dir)


def evaluate_reference(cfg: RunConfig, out: Path, *, seeds: int, tasks: list[str], poolings: list[str],
                       extras: tuple[str, ...], eval_kw: dict[str, Any], progress: bool) -> list[str]:
    """Export and evaluate the untouched checkpoint once (seed 0, the floor cache shared with the
    trained arms); returns its eval directory repeated ``seeds`` times (the arm's group)."""
    from .eval.encode.encoders import load_text_encoder
    from .eval.suites.extras import run_extras
    from .eval.suites.runner import evaluate

    run_dir = out / "arms" / REFERENCE_ARM / "seed0"
    enc_dir = reference_encoder(cfg, run_dir)
    eval_dir = run_dir / "eval"
    if not (eval_dir / "summary.json").exists():
        evaluate(str(enc_dir), tasks, poolings, eval_dir, seed=0, progress=progress,
                 floor_cache=out / "random_init", **eval_kw)
    todo = [e for e in extras if not (eval_dir / "extras" / f"{e}.json").exists()]
    if todo:
        run_extras(load_text_encoder(str(enc_dir)), eval_dir, extras=todo, seed=0, n_boot=eval_kw["n_boot"],
                   glue_dir=eval_kw.get("glue_dir"), progress=progress)
    return [str(eval_dir)] * seeds


def reference_note(init: str, report_dir: Path) -> str:
    """:data:`REFERENCE_NOTE` for ``init``, also appended to ``report_dir/report.md`` (once)."""
    note = REFERENCE_NOTE.format(arm=REFERENCE_ARM, init=init)
    md = report_dir / "report.md"
    if md.exists() and note not in md.read_text():
        with md.open("a") as fh:
            fh.write("\n" + note + "\n")
    return note


# ----------------------------------------------------------------------------- the MiniLM demo

#: The MiniLM demo's recipe and budget: continued pre-training at a small learning rate with the
#: tiny preset's objective settings (model.* from the checkpoint) on 64-token windows of the
#: built-in leads, and a lighter evaluation (two tasks, 300 reported / 600 train examples, mean
#: and max pooling), aimed at about 15 minutes on two CPU cores. Measured on two cores shared with
#: other jobs: 2.4-5.5 s per hybrid step (16 x 64 tokens), 2-3 minutes per arm's evaluation, so
#: the whole demo took longer there.
MINILM_DEMO_OVERRIDES = ["train.steps=60", "train.batch_size=16", "data.seq_len=64", "optim.lr=5e-5",
                         "optim.min_lr=5e-6", "optim.warmup_steps=6", "train.ckpt_every=60", "train.diag_every=0",
                         "train.log_every=10"]
MINILM_DEMO_POOLINGS = ["mean", "max"]
MINILM_DEMO_EVAL = dict(max_examples=300, max_train=600, n_boot=200, n_boot_geometry=30, extras=())


def minilm_demo_tasks(glue_dir: str | None) -> list[str]:
    """SST-2 (a probe) and STS-B (zero-shot similarity and a probe) when GLUE is found, else the
    built-in labelled sets (:func:`~predrecon.experiment.default_tasks`)."""
    from .experiment import default_tasks

    tasks = default_tasks(glue_dir)
    return ["sst2", "stsb"] if "sst2" in tasks else tasks


def run_minilm_demo(out: str | Path = "runs/demo-minilm", seeds: int = 2, init: str = "hf:minilm",
                    overrides: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    """``predrecon demo --init minilm``: continue ``init`` (all-MiniLM-L6-v2) with the hybrid and
    MLM objectives on the built-in leads, and compare both with the untouched encoder
    (:data:`REFERENCE_ARM`, the reference) on the built-in evaluation data. ``overrides`` replace
    :data:`MINILM_DEMO_OVERRIDES` (tests); ``kw`` go to :func:`~predrecon.experiment.run_experiment`."""
    import time

    from .experiment import _fmt_s, run_experiment

    t0 = time.perf_counter()
    opts: dict[str, Any] = dict(preset="tiny", arms="hybrid,mlm", seeds=seeds, out=out,
                                source="wiki-leads?exclude=eval", poolings=MINILM_DEMO_POOLINGS, **MINILM_DEMO_EVAL)
    opts.update(kw)
    if not opts.get("tasks"):
        opts["tasks"] = minilm_demo_tasks(opts.get("glue_dir"))
    summary = run_experiment(init=init, overrides=MINILM_DEMO_OVERRIDES if overrides is None else overrides, **opts)
    report = Path(out) / "report"
    md = report / "summary.md"
    if md.exists() and opts.get("progress", True):
        print(md.read_text())
    wall = time.perf_counter() - t0
    (Path(out) / "demo.json").write_text(json.dumps({"init": init, "seeds": seeds, "wall_s": wall}, indent=2))
    if opts.get("progress", True):
        print(f"[predrecon] demo finished in {_fmt_s(wall)}")
        print(f"[predrecon] report: {report / 'report.html'} (and report.md)")
    return summary
