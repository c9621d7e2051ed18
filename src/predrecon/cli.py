"""Command-line interface: thin subcommands (parse -> build -> run).

    predrecon data build --source wiki-leads --out runs/data/wiki
    predrecon train --preset tiny --objective hybrid --data runs/data/wiki --out runs/hybrid
    predrecon train ... --resume auto
    predrecon export runs/hybrid --out runs/hybrid/encoder
    predrecon eval runs/hybrid --tasks sst2,mrpc --poolings mean,max --out runs/hybrid/eval
    predrecon compare runs/hybrid/eval runs/mlm/eval --out reports/hybrid-vs-mlm
    predrecon experiment --preset tiny --arms hybrid,mlm --seeds 3 --out runs/exp
    predrecon demo --out runs/demo

Run ``predrecon <command> --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, RunConfig, apply_overrides
from .train.checkpoint import CheckpointError


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="debug | tiny | paper | base (default: tiny)")
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


def build_config(args: argparse.Namespace, data: str | None = None) -> RunConfig:
    """Preset -> faithful switches -> flags -> KEY=VALUE overrides -> validation."""
    from .presets import apply_faithful, get_preset

    cfg = get_preset(args.preset)
    if args.faithful:
        apply_faithful(cfg)
    ov: list[str] = []
    if data:
        ov.append(f"data.path={data}")
    for flag, key in (("objective", "objective.kind"), ("balancer", "objective.balancer"),
                      ("steps", "train.steps"), ("batch_size", "train.batch_size"),
                      ("seed", "train.seed"), ("device", "train.device")):
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


def cmd_train(args: argparse.Namespace) -> int:
    from .train.loop import train

    cfg = build_config(args, data=args.data)
    if args.print_config:
        print(cfg.to_json())
    summary = train(cfg, args.out, resume=args.resume)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .train.export import export_encoder

    out = export_encoder(args.run, args.out or Path(args.run) / "encoder")
    print(f"[predrecon] encoder exported to {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.runner import evaluate

    evaluate(args.encoder, _csv(args.tasks), _csv(args.poolings), args.out, glue_dir=args.glue_dir,
             faithful=args.faithful, max_examples=args.max_examples, seed=args.seed, n_boot=args.n_boot)
    print(f"[predrecon] results in {args.out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .eval.report import compare

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
                   max_train=args.max_train, n_boot=args.n_boot, extras=tuple(_csv(args.extras)) if args.extras else ())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .experiment import run_demo

    run_demo(args.out, seeds=args.seeds)
    return 0


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predrecon", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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

    t = sub.add_parser("train", help="pre-train an encoder (hybrid, mlm or jepa)",
                       description="Pre-train an encoder. A run is a preset plus KEY=VALUE overrides; the "
                                   "resolved config is saved with the run and in every checkpoint.")
    _add_run_args(t)
    t.add_argument("--data", required=True, help="dataset directory from `predrecon data build`")
    t.add_argument("--out", required=True, help="run directory (checkpoints, log.jsonl, config.json)")
    t.add_argument("--resume", default="none",
                   help="auto (continue from newest valid checkpoint) | none (default) | CHECKPOINT_DIR")
    t.add_argument("--print-config", action="store_true", help="print the resolved config")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="write the encoder alone (safetensors + config + tokenizer)")
    e.add_argument("run", help="run directory or checkpoint directory")
    e.add_argument("--out", help="output directory (default: RUN/encoder)")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("eval", help="evaluate an encoder's representations on labelled tasks",
                       description="Geometry, lexical/semantic probes and linear probes with bootstrap "
                                   "intervals, per task and pooling. ENCODER: a run dir, an exported encoder, "
                                   "'minilm' (reference all-MiniLM-L6-v2) or 'random:RUN' (same-shape floor).")
    v.add_argument("encoder")
    v.add_argument("--tasks", default="sst2,mrpc,mnli,cola,stsb", help="comma-separated task names")
    v.add_argument("--poolings", default="mean,max,cls,weighted,attention", help="comma-separated poolings")
    v.add_argument("--out", required=True)
    v.add_argument("--glue-dir", help="GLUE directory (default: $PREDRECON_GLUE_DIR or ../shared/data/glue)")
    v.add_argument("--faithful", action="store_true", help="the paper's protocol (pair string, no mask, CV on dev)")
    v.add_argument("--max-examples", type=int, default=2000, help="examples per reported split (paper: 2000)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per interval")
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
                   help="comma-separated: hybrid[:BALANCER], mlm, jepa, mlm-flops (MLM with the hybrid's FLOPs)")
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
    m.add_argument("--out", default="runs/demo")
    m.add_argument("--seeds", type=int, default=2)
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own parser (predrecon bench --help)
        from .bench import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError, CheckpointError) as e:
        print(f"predrecon: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("predrecon: interrupted (resume with --resume auto)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
