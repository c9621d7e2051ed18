"""Command-line interface: thin subcommands (parse -> build -> run).

    predrecon data build --source wiki-leads --out runs/data/wiki
    predrecon train --preset tiny --objective hybrid --data runs/data/wiki --out runs/hybrid
    predrecon train ... --resume auto
    predrecon export runs/hybrid --out runs/hybrid/encoder
    predrecon export runs/bert --format hf --out runs/bert/hf          # transformers AutoModel (bert family)
    predrecon train --init hf:minilm --objective mlm --data runs/data/wiki --out runs/minilm-mlm
    predrecon train --config runs/hybrid/config.json --out runs/again   # a run's config, reproduced
    predrecon eval runs/hybrid --tasks sst2,mrpc --poolings mean,max --out runs/hybrid/eval
    predrecon compare runs/hybrid/eval runs/mlm/eval --out reports/hybrid-vs-mlm
    predrecon experiment --preset tiny --arms hybrid,mlm,mlm-matched --seeds 5 --out runs/exp
    predrecon demo --out runs/demo

Run ``predrecon <command> --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
from pathlib import Path

from .config import ConfigError, RunConfig, apply_overrides
from .train.checkpoint import CheckpointError


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="debug | tiny | paper | base | bert-tiny (default: the --config file's, else tiny)")
    p.add_argument("--config", metavar="FILE",
                   help="run.yaml | run.json | run.toml (e.g. a run's config.json): preset < file < flags, overrides")
    p.add_argument("--faithful", action="store_true",
                   help="reproduce the reference code's behaviour, quirks included (docs/faithful.md)")
    p.add_argument("--objective", choices=["hybrid", "mlm", "jepa"], help="objective (default: preset's, hybrid)")
    p.add_argument("--balancer", choices=["sigmoid", "fixed", "uncertainty", "gradnorm"],
                   help="how the two losses are weighed (hybrid only; default: gradnorm, faithful: sigmoid)")
    p.add_argument("--steps", type=int, help="optimizer steps (train.steps)")
    p.add_argument("--batch-size", type=int, help="sequences per step (train.batch_size)")
    p.add_argument("--seed", type=int, help="seed for init, data order and masks (train.seed)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (train.device)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. optim.lr=1e-3 jepa.num_targets=4 data.mode=document")


DEBUG_ENV = "PREDRECON_DEBUG"  # set to 1 to see the traceback of any error (like --debug)


def _out_dir(path: str | Path, flag: str = "--out") -> Path:
    """An output directory argument: refused (naming it) when it exists and is not a directory."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p}: exists and is not a directory")
    return p


# config keys that decide which tensors a checkpoint holds: resuming with another value cannot work
_STATE_KEYS = (("objective", "kind"), ("objective", "balancer"), ("objective", "student_path"),
               ("mlm", "tie_decoder"), ("jepa", "predictor_dim"), ("jepa", "predictor_depth"),
               ("jepa", "predictor_heads"), ("jepa", "target_layers"))


def check_resume_compatible(cfg: RunConfig, out: str | Path, resume: str) -> None:
    """Refuse ``--resume`` into a checkpoint trained with another objective (or another predictor),
    naming the run and both values, instead of failing on the state dict's keys."""
    from .train.checkpoint import list_checkpoints

    if resume == "none":
        return
    ckpts = list_checkpoints(out) if resume == "auto" else [Path(resume)]
    if not ckpts:
        return
    try:
        saved = json.loads((ckpts[-1] / "state.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable: the loader reports it (or skips the checkpoint) with its own message
    now = cfg.to_dict()
    for sec, key in _STATE_KEYS:
        a, b = (saved.get(sec) or {}).get(key), now[sec].get(key)
        if a is None or a == b or (sec == "jepa" and "mlm" in (saved["objective"]["kind"], b)):
            continue
        what = "objective " if (sec, key) == ("objective", "kind") else f"{sec}.{key}="
        raise ConfigError(f"{sec}.{key}: run {out} was trained with {what}{a}, not {b} "
                          "(resume with the same setting, or train into another --out)")


def build_config(args: argparse.Namespace, data: str | None = None) -> RunConfig:
    """Preset -> faithful switches -> --config file -> flags -> KEY=VALUE overrides -> validation."""
    from .configfile import apply_config_file, read_config_file
    from .presets import apply_faithful, get_preset

    filed = read_config_file(args.config) if getattr(args, "config", None) else {}
    cfg = get_preset(args.preset or filed.get("preset") or "tiny")
    if args.faithful or filed.get("faithful"):
        apply_faithful(cfg)
    if filed:
        cfg = apply_config_file(cfg, filed, args.config)
    ov: list[str] = []
    if data:  # stored absolute, so that export/eval work from any working directory
        ov.append(f"data.path={Path(data).expanduser().resolve()}")
    for flag, key in (("objective", "objective.kind"), ("balancer", "objective.balancer"),
                      ("steps", "train.steps"), ("batch_size", "train.batch_size"),
                      ("seed", "train.seed"), ("device", "train.device"), ("init", "train.init")):
        v = getattr(args, flag, None)
        if v is not None:
            ov.append(f"{key}={v}")
    if args.steps is not None and cfg.optim.warmup_steps >= args.steps:
        ov.append(f"optim.warmup_steps={max(0, args.steps // 10)}")
    return apply_overrides(cfg, ov + list(args.overrides or []))


# ---------------------------------------------------------------------------------- commands
def cmd_data_build(args: argparse.Namespace) -> int:
    from .data.shards import build_shards
    from .data.sources import open_source
    from .data.tokenizer import load_tokenizer, train_wordpiece

    spec = args.source if args.files is None else "files:" + ",".join(args.files)
    docs = open_source(spec)
    out = Path(args.out)
    if args.tokenizer.startswith("train:"):
        vocab = int(args.tokenizer.split(":", 1)[1])
        tok_path = out.parent / f".{out.name}.tokenizer.json"
        tok = train_wordpiece(open_source(spec), vocab, tok_path)
    else:
        tok = load_tokenizer(args.tokenizer)
    manifest = build_shards(docs, tok, out, val_fraction=args.val_fraction, doc_chars=args.doc_chars,
                            overwrite=args.overwrite, source_spec=spec, tokenizer_name=args.tokenizer)
    tp = manifest.throughput
    for split, info in manifest.splits.items():
        print(f"[predrecon] {split}: {info['num_docs']:,} documents, {info['num_tokens']:,} tokens")
    print(f"[predrecon] tokenised at {tp.get('tokens_per_s', 0):,.0f} tokens/s; "
          f"vocab {manifest.vocab_size:,}; dataset in {out} (manifest.json)")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from .data.shards import TokenDataset

    ds = TokenDataset(args.dir, verify=True)
    n = len(ds.manifest.files)
    print(f"[predrecon] {args.dir}: {n} files match their sha256; token ids < vocab {ds.vocab_size:,}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train.loop import train

    cfg = build_config(args, data=args.data)
    _out_dir(args.out)
    check_resume_compatible(cfg, args.out, args.resume)
    if args.print_config:
        print(cfg.to_json())
    summary = train(cfg, args.out, resume=args.resume)
    if summary.pop("already_finished", False):
        print(f"[predrecon] run already finished at step {summary['step']} ({Path(args.out) / 'summary.json'}); "
              "nothing to do (raise --steps to continue)")
        return 0
    if os.environ.get("RANK", "0") in ("", "0"):  # under torchrun rank 0 speaks for the job
        print(json.dumps(summary, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .train.export import export_encoder

    if args.format != "safetensors":  # transformers / sentence-transformers (interop/hf.py)
        from .interop.hf import export

        kw = ({"pooling": args.pooling, "normalize": args.normalize, "max_seq_length": args.max_seq_length}
              if args.format == "sentence-transformers" else {})
        out = export(args.run, _out_dir(args.out or Path(args.run) / args.format), args.format, **kw)
        print(f"[predrecon] encoder exported to {out} ({args.format})")
        return 0
    out = export_encoder(args.run, _out_dir(args.out or Path(args.run) / "encoder"))
    print(f"[predrecon] encoder exported to {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.suites.registry import evaluate, parse_suites

    suites = parse_suites(args.suites)
    _out_dir(args.out)
    from .eval.tasks.registry import get_task

    for spec in _csv(args.tasks):  # a user file's errors before the encoder loads and --out is claimed
        if spec.startswith("file:"):
            get_task(spec)
    paper = {"faithful": args.faithful, "max_examples": args.max_examples, "random_floor": not args.no_random_floor,
             "floor_cache": args.floor_cache}
    evaluate(args.encoder, suites, _csv(args.tasks), _csv(args.poolings), args.out, glue_dir=args.glue_dir,
             seed=args.seed, n_boot=args.n_boot, suite_kw={"paper": paper} if "paper" in suites else None)
    print(f"[predrecon] results in {args.out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .eval.report.report import compare

    _out_dir(args.out)
    if args.arm:
        groups = {}
        for a in args.arm:
            name, _, dirs = a.partition("=")
            groups[name] = _csv(dirs)
        compare(groups, args.out)
    else:
        compare(args.evals, args.out, labels=_csv(args.labels) if args.labels else None)
    print(f"[predrecon] report: {Path(args.out) / 'report.html'}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from .experiment import run_experiment

    run_experiment(preset=args.preset, arms=args.arms, seeds=args.seeds, out=args.out, data=args.data,
                   source=args.source, tasks=_csv(args.tasks) if args.tasks else None,
                   poolings=_csv(args.poolings) if args.poolings else None, overrides=args.overrides,
                   faithful=args.faithful, glue_dir=args.glue_dir, max_examples=args.max_examples,
                   max_train=args.max_train, n_boot=args.n_boot, extras=tuple(_csv(args.extras)) if args.extras else (),
                   init=args.init)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.init:  # continue a good encoder: hybrid, MLM and the untouched reference
        from .continued import run_minilm_demo

        init = args.init if args.init.startswith("hf:") else f"hf:{args.init}"
        run_minilm_demo(args.out or "runs/demo-minilm", seeds=args.seeds, init=init)
        return 0
    from .experiment import run_demo

    run_demo(args.out or "runs/demo", seeds=args.seeds)
    return 0


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predrecon", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true",
                   help=f"show the Python traceback of an error (also: {DEBUG_ENV}=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("data", help="build token shards from a corpus")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    b = dsub.add_parser("build", help="tokenise a corpus into memory-mapped shards + manifest",
                        description="Tokenise a corpus into memory-mapped token shards with a manifest "
                                    "(counts, sha256, train/validation split by document).")
    b.add_argument("--source", default="wiki-leads",
                   help="wiki-leads (default, built-in English Wikipedia leads) | wiki-leads:en,es,fr | "
                        "gensim-wiki | wikiextractor:DIR | hf:NAME[:CONFIG] | files:A,B")
    b.add_argument("--files", nargs="+", help="local .txt/.jsonl files (overrides --source)")
    b.add_argument("--tokenizer", default="bert-base-uncased",
                   help="bert-base-uncased (default) | path/to/tokenizer.json | train:VOCAB_SIZE (train a WordPiece)")
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--val-fraction", type=float, default=0.01, help="documents held out for validation")
    b.add_argument("--doc-chars", type=int, default=512, help="characters kept per document in 'document' mode")
    b.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    b.set_defaults(func=cmd_data_build)
    vf = dsub.add_parser("verify", help="re-hash every file of a dataset against its manifest (sha256, id range)")
    vf.add_argument("dir", help="dataset directory")
    vf.set_defaults(func=cmd_data_verify)

    t = sub.add_parser("train", help="pre-train an encoder (hybrid, mlm or jepa)",
                       description="Pre-train an encoder. A run is a preset plus KEY=VALUE overrides; the "
                                   "resolved config is saved with the run and in every checkpoint. Several "
                                   "GPUs or nodes: launch the same command with `torchrun --nproc-per-node N "
                                   "-m predrecon train ...` (DDP; train.distributed=fsdp for FSDP2); "
                                   "train.batch_size is per micro-batch, the global batch is batch_size x "
                                   "optim.accum_steps x ranks (docs/distributed.md).")
    _add_run_args(t)
    t.add_argument("--data", help="dataset directory from `predrecon data build` (or data.path of --config)")
    t.add_argument("--init", metavar="hf:DIR",
                   help="continue pre-training a transformers BERT checkpoint (hf:DIR, or hf:minilm for the packaged "
                        "all-MiniLM-L6-v2); its shape sets model.*, the data must use its vocabulary")
    t.add_argument("--out", required=True, help="run directory (checkpoints, log.jsonl, config.json)")
    t.add_argument("--resume", default="none",
                   help="auto (continue from newest valid checkpoint) | none (default) | CHECKPOINT_DIR")
    t.add_argument("--print-config", action="store_true", help="print the resolved config")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="write the encoder alone: safetensors (ours), hf (transformers) or "
                                      "sentence-transformers, with its tokenizer")
    e.add_argument("run", help="run directory or checkpoint directory")
    e.add_argument("--out", help="output directory (default: RUN/encoder, RUN/hf, RUN/sentence-transformers)")
    e.add_argument("--format", default="safetensors", choices=["safetensors", "hf", "sentence-transformers"],
                   help="safetensors (ours, every family) | hf (transformers AutoModel; model.family=bert) | "
                        "sentence-transformers (Transformer -> Pooling -> optional Normalize)")
    e.add_argument("--pooling", default="mean", choices=["mean", "cls", "max"], help="sentence-transformers pooling")
    e.add_argument("--normalize", action="store_true", help="sentence-transformers: add a Normalize module")
    e.add_argument("--max-seq-length", type=int, help="sentence-transformers max_seq_length (default: model.max_len)")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("eval", help="evaluate an encoder's representations on labelled tasks",
                       description="Geometry, lexical/semantic probes and linear probes with bootstrap "
                                   "intervals, per task and pooling. ENCODER: a run dir, an exported encoder, "
                                   "'minilm' (reference all-MiniLM-L6-v2) or 'random:RUN' (same-shape floor).")
    v.add_argument("encoder")
    v.add_argument("--tasks", "--task", default="sst2,mrpc,mnli,cola,stsb",
                   help="comma-separated task names, or file:PATH[?text=COL&text_b=COL&label=COL&kind=classification|"
                        "regression|similarity&train=PATH2] for a labelled TSV/CSV/JSONL of your own")
    from .eval.names import DEFAULT_POOLINGS

    v.add_argument("--poolings", default=",".join(DEFAULT_POOLINGS), help="comma-separated poolings")
    v.add_argument("--out", required=True)
    v.add_argument("--glue-dir", help="GLUE directory (default: $PREDRECON_GLUE_DIR or ../shared/data/glue)")
    v.add_argument("--faithful", action="store_true", help="the paper's protocol (pair string, no mask, CV on dev)")
    v.add_argument("--max-examples", type=int, default=2000, help="examples per reported split (paper: 2000)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per interval")
    v.add_argument("--no-random-floor", action="store_true",
                   help="skip the same-shape random-init encoder floor (evaluated by default)")
    v.add_argument("--floor-cache", help="folder caching the random-init floor (default: OUT/random_init)")
    v.add_argument("--suites", default="paper",
                   help="comma-separated suites: paper (GLUE tasks x poolings, the default), fewshot, robustness, "
                        "crosslingual, similarity")
    v.set_defaults(func=cmd_eval)

    c = sub.add_parser("compare", help="side-by-side report of evaluated encoders (Markdown + HTML)")
    c.add_argument("evals", nargs="*", help="eval output directories (one per encoder)")
    c.add_argument("--arm", action="append", help="NAME=DIR1,DIR2,... (several seeds per arm)")
    c.add_argument("--labels", help="comma-separated names for the eval dirs")
    c.add_argument("--out", required=True)
    c.set_defaults(func=cmd_compare)

    x = sub.add_parser("experiment", help="the paper's experiment: arms x seeds -> train -> eval -> report",
                       description="Pre-train every arm with every seed on the same data and steps, evaluate "
                                   "each encoder, and write one comparison report (Markdown + HTML) with "
                                   "intervals and tests. Re-running the same command resumes.")
    x.add_argument("--preset", default="tiny", help="debug | tiny | paper | base")
    x.add_argument("--arms", default="hybrid,mlm",
                   help="comma-separated: hybrid[:BALANCER], mlm, jepa, mlm-flops (MLM with the hybrid's FLOPs), "
                        "mlm-matched[:predict] (MLM with the hybrid's corruption: its JEPA blocks [MASK]ed)")
    x.add_argument("--seeds", type=int, default=5, help="seeds per arm (docs/statistics.md: power)")
    x.add_argument("--out", required=True)
    x.add_argument("--data", help="existing dataset dir (default: build OUT/data from --source)")
    x.add_argument("--source", default="wiki-leads?exclude=eval",
                   help="corpus when --data is not given (default: the built-in leads minus the articles "
                        "held out by the wiki-topic evaluation)")
    x.add_argument("--tasks", help="evaluation tasks (default: GLUE five if found, else built-in sets)")
    x.add_argument("--poolings", help="default: mean,max,cls,weighted,attention")
    x.add_argument("--extras", default="fewshot,robustness,crosslingual,similarity",
                   help="evaluations beyond the paper ('' for none)")
    x.add_argument("--faithful", action="store_true", help="the reference code's behaviour and protocol")
    x.add_argument("--glue-dir")
    x.add_argument("--max-examples", type=int, default=2000, help="examples per reported split (paper: 2000)")
    x.add_argument("--max-train", type=int, default=4000, help="train examples for probes and poolers")
    x.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per interval")
    x.add_argument("--init", metavar="hf:DIR",
                   help="continue a transformers BERT checkpoint (hf:DIR, hf:minilm) in every arm, with the untouched "
                        "checkpoint as the reference arm; the dataset is built with its tokenizer")
    x.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every arm")
    x.set_defaults(func=cmd_experiment)

    bn = sub.add_parser("bench", help="training-step throughput vs Hugging Face BertForMaskedLM, side by side",
                        add_help=False)
    bn.add_argument("rest", nargs=argparse.REMAINDER)
    bn.set_defaults(func=lambda a: __import__("predrecon.bench", fromlist=["main"]).main(a.rest))

    m = sub.add_parser("demo", help="the main job on built-in data, sized for a laptop CPU (< 15 min)",
                       description="A short hybrid-vs-MLM experiment on the built-in Wikipedia leads, "
                                   "evaluated on GLUE when ../shared/data/glue is present, else on the "
                                   "built-in labelled sets; prints where the report is and a summary table.")
    m.add_argument("--out", help="default: runs/demo, or runs/demo-minilm with --init")
    m.add_argument("--seeds", type=int, default=2)
    m.add_argument("--init", metavar="minilm|hf:DIR",
                   help="instead: continue all-MiniLM-L6-v2 (minilm) or a transformers BERT checkpoint with hybrid and "
                        "MLM and compare with the untouched encoder (what each objective does to a good encoder)")
    m.set_defaults(func=cmd_demo)
    return p


def error_line(e: BaseException, where: str | Path | None = None) -> tuple[int, str]:
    """``(exit code, one line)`` for an error reaching the command line.

    Known kinds (bad input: config, files, datasets, checkpoints, I/O) give exit code 2 and their
    message, which names the key or file; an OS error names its file and says when the disk is full.
    A library's I/O error that carries only an OS error number (e.g. safetensors: "os error 28")
    is named by ``where``, the directory the command writes. Anything else is a bug: exit code 1,
    its type and message, and how to see the traceback.
    """
    known = (ValueError, KeyError, OSError, MemoryError, CheckpointError)  # and the project's own error types
    if isinstance(e, OSError) and e.filename is not None:
        names = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
        msg = f"{names}: {e.strerror or e}"
    elif isinstance(e, KeyError) and len(e.args) == 1:
        msg = str(e.args[0])
    else:
        msg = str(e) or type(e).__name__
    full = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    m = re.search(r"os error (\d+)", msg)
    lib_io = not isinstance(e, OSError) and m is not None and int(m.group(1)) in full
    if lib_io and where is not None:
        msg = f"{where}: {msg}"
    if lib_io or (isinstance(e, OSError) and e.errno in full):
        msg += " (disk full or file-size limit reached)"
    msg = " ".join(msg.split())
    if len(msg) > 600:
        msg = msg[:600] + " ..."
    if isinstance(e, known) or lib_io or type(e).__module__.startswith("predrecon."):  # the project's own
        return 2, f"predrecon: error: {msg}"
    return 1, (f"predrecon: internal error: {type(e).__name__}: {msg} "
               f"(rerun with --debug or {DEBUG_ENV}=1 for the traceback)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own parser (predrecon bench --help)
        from .bench import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    clean = False
    try:
        rc = int(args.func(args) or 0)
        clean = True
        return rc
    except KeyboardInterrupt:
        print("predrecon: interrupted (resume with --resume auto)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one boundary that turns errors into one line
        if debug:
            raise
        rc, line = error_line(e, where=getattr(args, "out", None))
        world = os.environ.get("WORLD_SIZE", "1")
        if world not in ("", "1"):  # under torchrun: say which rank failed
            line = line.replace("predrecon:", f"predrecon [rank {os.environ.get('RANK', '?')} of {world}]:", 1)
        print(line, file=sys.stderr)
        return rc
    finally:
        if "torch.distributed" in sys.modules:  # leave a process group train() joined
            from .train.distributed import shutdown

            shutdown(clean)


if __name__ == "__main__":
    sys.exit(main())
