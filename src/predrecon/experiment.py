"""The paper's experiment as one resumable command: arms x seeds -> train -> export -> evaluate
-> one comparison report.

    predrecon experiment --preset tiny --arms hybrid,mlm,mlm-matched --seeds 5 --out runs/exp

Arms: ``hybrid`` (default balancer; ``hybrid:sigmoid``, ``hybrid:fixed`` ... pick another), ``mlm``,
``jepa``, ``mlm-flops`` — MLM trained for as many FLOPs as the hybrid spends (a hybrid step
costs more: target pass, predictor, and in the ``separate`` path a second student pass) — and
``mlm-matched`` — MLM whose student input is corrupted exactly like the hybrid's: the same JEPA
sampler draws the same target blocks, which are ``[MASK]``ed (``mlm.jepa_blocks=mask``), and MLM
draws its positions from the rest; only the JEPA loss is missing. ``mlm-matched:predict`` also
makes the MLM head predict the block tokens. On the same rows, seed and step the student input of
``mlm-matched`` is identical to the shared-path hybrid's. It needs ``objective.student_path=shared``:
in the ``separate`` path (``--faithful``) the hybrid's MLM pass sees plain MLM corruption, so the
plain ``mlm`` arm is already the matched one.

Before training, each arm's corruption rate (fraction of real, non-special input tokens the
student sees altered, and the ``[MASK]`` fraction; measured on the arm's first training batches)
and its FLOPs per token (:func:`matmul_flops_per_token`) go to ``arms.json`` and head the
report's ``summary.md``.

Re-running the same command skips finished arms (a ``summary.json`` at the configured step count
and a finished evaluation) and resumes interrupted ones from their newest valid checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, apply_overrides
from .presets import apply_faithful, get_preset

ARM_KINDS = ("hybrid", "mlm", "jepa", "mlm-flops", "mlm-matched")
MATCHED_MODES = ("mask", "predict")  # mlm-matched:MODE -> mlm.jepa_blocks


@dataclass
class Arm:
    name: str  # as given, e.g. "hybrid:sigmoid"
    kind: str  # hybrid | mlm | jepa | mlm-flops | mlm-matched
    balancer: str | None = None
    blocks: str | None = None  # mlm-matched: mask | predict

    @property
    def dirname(self) -> str:
        return self.name.replace(":", "-")


def parse_arms(spec: str | list[str]) -> list[Arm]:
    """``"hybrid,mlm,hybrid:sigmoid"`` -> arms; raises on unknown kinds or duplicates."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    arms, seen = [], set()
    for raw in (n.strip() for n in names if n.strip()):
        kind, _, opt = raw.partition(":")
        if kind not in ARM_KINDS:
            raise ConfigError(f"--arms: unknown arm {raw!r} (known: {', '.join(ARM_KINDS)}; hybrid:BALANCER, "
                              f"mlm-matched:{'|'.join(MATCHED_MODES)})")
        if kind == "mlm-matched":
            if opt and opt not in MATCHED_MODES:
                raise ConfigError(f"--arms: {raw!r}: mlm-matched takes {'|'.join(MATCHED_MODES)}")
        elif opt and kind != "hybrid":
            raise ConfigError(f"--arms: {raw!r}: only hybrid takes a balancer")
        if raw in seen:
            raise ConfigError(f"--arms: {raw!r} given twice")
        seen.add(raw)
        if kind == "mlm-matched":
            arms.append(Arm(raw, kind, None, opt or "mask"))
        else:
            arms.append(Arm(raw, kind, opt or None))
    if not arms:
        raise ConfigError("--arms: no arm given")
    return arms


def matmul_flops_per_token(cfg: RunConfig, kind: str) -> float:
    """Analytic training FLOPs per input token of one step (2 FLOPs per multiply-add; a backward
    pass costs twice its forward, so a trained pass counts 3x, the no-grad target pass 1x).

    Counted: the dense matmuls of every encoder block (qkv, output projection, MLP) and the
    attention scores/values (``2 * 2 * T * d`` per token and layer, T = ``data.seq_len``); the MLM
    head (``Linear(d, d)`` + decoder ``d x V``) on the selected fraction of tokens (``mlm.prob``,
    plus the target fraction for ``mlm-matched`` with ``mlm.jepa_blocks=predict``); the predictor's
    in/out projections and blocks on its slots per input token — context fraction (once per
    target block with ``jepa.predictor_mode=per_block``) plus target fraction
    (``num_targets * mean(target_scale)``, at most 1), its last block's keys and values on every
    slot and the rest of that block on the target slots only (the outputs read); in the
    ``separate`` path a context pass of ``mean(context_scale)`` of the tokens. Ignored: embeddings,
    norms, softmax, the optimiser. ``kind``: hybrid | mlm | mlm-flops | mlm-matched | jepa."""
    m, t = cfg.model, cfg.data.seq_len
    d, hidden = m.dim, int(m.dim * m.mlp_ratio)
    block = 2 * (4 * d * d + 2 * d * hidden) + 2 * 2 * t * d  # per token, forward
    enc_fwd = m.depth * block
    j = cfg.jepa
    tgt_frac = min(1.0, j.num_targets * sum(j.target_scale) / 2)
    head_frac = cfg.mlm.prob
    if kind == "mlm-matched" and cfg.mlm.jepa_blocks == "predict":
        head_frac = min(1.0, head_frac + tgt_frac)
    mlm_head = head_frac * 2 * (d * d + d * max(m.vocab_size, 1))
    if kind in ("mlm", "mlm-flops", "mlm-matched"):
        return 3 * (enc_fwd + mlm_head)
    ctx_frac = sum(j.context_scale) / 2
    if j.context_excludes_targets:
        ctx_frac = max(0.0, ctx_frac - tgt_frac)
    slots = ctx_frac * (j.num_targets if j.predictor_mode == "per_block" else 1) + tgt_frac
    pd, ph = j.predictor_dim, int(j.predictor_dim * 4)
    p_block = 2 * (4 * pd * pd + 2 * pd * ph) + 2 * 2 * t * pd
    # the last block's outputs are read at the target slots only: keys and values for every slot,
    # the rest (query, attention, output projection, MLP) for the targets
    p_last = slots * 2 * 2 * pd * pd + tgt_frac * (p_block - 2 * 2 * pd * pd)
    pred = slots * (2 * (d * pd + pd * d) + (j.predictor_depth - 1) * p_block) + p_last
    target = enc_fwd  # forward only, no backward
    if kind == "jepa":
        return 3 * (ctx_frac * enc_fwd + pred) + target
    if cfg.objective.student_path == "shared":
        return 3 * (enc_fwd + mlm_head + pred) + target
    return 3 * (enc_fwd + mlm_head + ctx_frac * enc_fwd + pred) + target


def arm_config(base: RunConfig, arm: Arm, seed: int, data: str, vocab_size: int | None = None) -> RunConfig:
    """The run config of one (arm, seed): same data, steps and batch for every arm, except
    ``mlm-flops`` whose step count is scaled to the hybrid's FLOPs; ``mlm-matched`` is objective
    ``mlm`` with ``mlm.jepa_blocks`` = its mode (the base config's sampler and JEPA sizes).
    ``vocab_size`` (the dataset's) sizes the MLM head in the FLOP count when the base config
    leaves ``model.vocab_size`` at 0."""
    cfg = RunConfig.from_dict(base.to_dict())
    kind = "mlm" if arm.kind in ("mlm-flops", "mlm-matched") else arm.kind
    ov = [f"objective.kind={kind}", f"train.seed={seed}", f"data.path={data}",
          f"mlm.jepa_blocks={arm.blocks if arm.kind == 'mlm-matched' else 'off'}"]
    if arm.balancer:
        ov.append(f"objective.balancer={arm.balancer}")
    cfg = apply_overrides(cfg, ov)
    if arm.kind == "mlm-flops":
        sized = base
        if vocab_size and not base.model.vocab_size:
            sized = RunConfig.from_dict(base.to_dict())
            sized.model.vocab_size = int(vocab_size)
        ratio = matmul_flops_per_token(sized, "hybrid") / matmul_flops_per_token(sized, "mlm")
        steps = int(math.ceil(base.train.steps * ratio))
        cfg = apply_overrides(cfg, [f"train.steps={steps}"])
    return cfg


def measure_arm(cfg: RunConfig, data: str | Path, batches: int = 8) -> dict[str, float]:
    """Corruption of the student's input and cost of one arm's run config, measured on its first
    ``batches`` training batches (the batcher and collator the trainer builds, steps 0..batches-1):
    ``altered`` / ``masked`` — fractions of the real, non-special input tokens changed / ``[MASK]``
    in the student's full-sequence input ``mlm_input_ids`` (the shared pass; in the ``separate``
    path the MLM pass, whose context pass sees the context block instead)
    (:func:`predrecon.data.masking.corruption_rates`, token-weighted over the batches);
    ``flops_per_token`` — :func:`matmul_flops_per_token` with the dataset's vocabulary;
    ``train_flops`` = that x tokens per step (batch x seq_len) x steps."""
    from .data.batching import make_batcher
    from .data.masking import Collator, corruption_rates
    from .data.shards import TokenDataset

    ds = TokenDataset(data)
    batcher = make_batcher(ds, cfg.data, "train", cfg.train.batch_size, cfg.train.seed)
    col = Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, cfg.train.seed)
    n = altered = masked = 0.0
    for step in range(batches):
        r = corruption_rates(col(next(batcher), step), ds.special_ids)
        n, altered, masked = n + r["tokens"], altered + r["altered"] * r["tokens"], masked + r["masked"] * r["tokens"]
    sized = RunConfig.from_dict(cfg.to_dict())
    if not sized.model.vocab_size:
        sized.model.vocab_size = ds.vocab_size
    kind = "mlm-matched" if cfg.objective.kind == "mlm" and cfg.mlm.jepa_blocks != "off" else cfg.objective.kind
    fpt = matmul_flops_per_token(sized, kind)
    return {"altered": altered / max(n, 1.0), "masked": masked / max(n, 1.0), "tokens_measured": n,
            "flops_per_token": fpt, "steps": cfg.train.steps,
            "train_flops": fpt * cfg.train.batch_size * cfg.data.seq_len * cfg.train.steps}


def arms_table(stats: dict[str, dict[str, float]]) -> str:
    """Markdown table of :func:`measure_arm` results, one row per arm."""
    lines = ["Arms: corruption = fraction of real (non-special) input tokens the student sees altered "
             "([MASK] or another token) / as [MASK], measured on each arm's first training batches; "
             "FLOPs per token are analytic (matmuls + attention, backward = 2x forward).", "",
             "| arm | corrupted | [MASK] | MFLOPs/token | steps | train TFLOPs |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in stats.items():
        lines.append(f"| {name} | {100 * r['altered']:.1f} % | {100 * r['masked']:.1f} % | "
                     f"{r['flops_per_token'] / 1e6:.2f} | {int(r['steps'])} | {r['train_flops'] / 1e12:.2f} |")
    return "\n".join(lines) + "\n\n"


def run_experiment(*, preset: str = "tiny", arms: str | list[str] = "hybrid,mlm", seeds: int = 5,
                   out: str | Path = "runs/exp", data: str | None = None, source: str = "wiki-leads?exclude=eval",
                   tasks: list[str] | None = None, poolings: list[str] | None = None,
                   overrides: list[str] | None = None, faithful: bool = False, glue_dir: str | None = None,
                   max_examples: int = 2000, max_train: int = 4000, n_boot: int = 1000, n_boot_geometry: int = 100,
                   extras: tuple[str, ...] = ("fewshot", "robustness", "crosslingual", "similarity"),
                   progress: bool = True, init: str | None = None) -> dict[str, Any]:
    """Run (or resume) the whole experiment; returns the comparison summary. ``init`` (``hf:DIR``,
    ``hf:minilm``): continue that checkpoint in every arm and add the untouched checkpoint as the
    reference arm (:mod:`predrecon.continued`)."""
    from .eval.encode.encoders import load_text_encoder
    from .eval.report.report import compare
    from .eval.suites.extras import run_extras
    from .eval.suites.runner import evaluate
    from .train import distributed
    from .train.export import export_encoder
    from .train.loop import train

    out = Path(out)
    base = get_preset(preset)
    if faithful:
        apply_faithful(base)
    base = apply_overrides(base, list(overrides or []))
    arm_list = parse_arms(arms)
    if seeds < 1:
        raise ConfigError("--seeds: must be >= 1")
    # under torchrun every arm is trained by all ranks in turn (docs/distributed.md); rank 0 alone
    # builds the data, measures the arms, then exports, evaluates and reports once training is done
    info, _ = distributed.setup(base.train.distributed, base.train.device, base.train.dist_timeout)
    if not info.is_main:
        import torch.distributed as tdist

        tdist.barrier()  # rank 0 builds the dataset and writes the plan
        data_dir = Path(data) if data else out / "data"
        if init:
            from .continued import init_base
            base = init_base(base, init, data_dir)
        from .data.shards import TokenDataset

        vocab = TokenDataset(data_dir).vocab_size
        for arm, s in [(a, s) for a in arm_list for s in range(seeds)]:
            cfg = arm_config(base, arm, s, str(data_dir), vocab_size=vocab)
            cfg.train.progress = False
            train(cfg, out / "arms" / arm.dirname / f"seed{s}", resume="auto")
        return {}
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data) if data else out / "data"
    if not data:
        if init:  # tokenised with the checkpoint's own tokenizer
            from .continued import init_dataset
            init_dataset(init, source, data_dir, progress=progress)
        else:
            ensure_dataset(source, data_dir, progress=progress)
    if init:  # every arm takes model.* from the checkpoint
        from .continued import init_base
        base = init_base(base, init, data_dir)
    tasks = tasks or default_tasks(glue_dir)
    from .eval.names import DEFAULT_POOLINGS

    poolings = poolings or list(DEFAULT_POOLINGS)

    plan = [(arm, s) for arm in arm_list for s in range(seeds)]
    from .data.shards import TokenDataset

    vocab = TokenDataset(data_dir).vocab_size
    cfgs = {(a.name, s): arm_config(base, a, s, str(data_dir), vocab_size=vocab) for a, s in plan}
    total_steps = sum(c.train.steps for c in cfgs.values())
    arm_stats = {a.name: measure_arm(cfgs[(a.name, 0)], data_dir) for a in arm_list}
    (out / "arms.json").write_text(json.dumps(arm_stats, indent=2))
    (out / "experiment.json").write_text(json.dumps({
        "preset": preset, "arms": [a.name for a in arm_list], "seeds": seeds, "data": str(data_dir),
        "tasks": tasks, "poolings": poolings, "overrides": overrides or [], "faithful": faithful, "init": init},
        indent=2))
    if info.enabled:  # the others may start: train every arm together, then evaluate on rank 0 alone
        import torch.distributed as tdist

        tdist.barrier()
        for arm, seed in plan:
            cfg = cfgs[(arm.name, seed)]
            _say(progress, f"arm {arm.name} seed {seed}: {cfg.train.steps} steps on {info.world} ranks")
            cfg.train.progress = progress
            train(cfg, out / "arms" / arm.dirname / f"seed{seed}", resume="auto")
    t0, done_steps = time.perf_counter(), 0
    groups: dict[str, list[str]] = {}
    for i, (arm, seed) in enumerate(plan, 1):
        cfg = cfgs[(arm.name, seed)]
        run_dir = out / "arms" / arm.dirname / f"seed{seed}"
        eta = ""
        if done_steps:
            rate = (time.perf_counter() - t0) / done_steps
            eta = f", ETA {_fmt_s(rate * (total_steps - done_steps))}"
        _say(progress, f"[{i}/{len(plan)}] arm {arm.name} seed {seed}: {cfg.train.steps} steps{eta}")
        if not _finished_training(run_dir, cfg.train.steps):
            cfg.train.progress = progress
            train(cfg, run_dir, resume="auto")
        if not (run_dir / "encoder" / "model.safetensors").exists():
            export_encoder(run_dir, run_dir / "encoder")
        eval_dir = run_dir / "eval"
        if not (eval_dir / "summary.json").exists():
            evaluate(str(run_dir / "encoder"), tasks, poolings, eval_dir, glue_dir=glue_dir, faithful=faithful,
                     max_examples=max_examples, max_train=max_train, seed=seed, n_boot=n_boot,
                     n_boot_geometry=n_boot_geometry, progress=progress,
                     floor_cache=out / "random_init")  # one random-init floor per arm shape, shared by seeds
        todo = [e for e in extras if not (eval_dir / "extras" / f"{e}.json").exists()]
        if todo:
            run_extras(load_text_encoder(str(run_dir / "encoder")), eval_dir, extras=todo, seed=seed,
                       n_boot=n_boot, glue_dir=glue_dir, progress=progress)
        groups.setdefault(arm.name, []).append(str(eval_dir))
        done_steps += cfg.train.steps
    note = ""
    if init:  # the untouched checkpoint, evaluated once, is the reference (first) arm
        from .continued import REFERENCE_ARM, evaluate_reference, reference_note
        ref = evaluate_reference(base, out, seeds=seeds, tasks=tasks, poolings=poolings, extras=tuple(extras),
                                 eval_kw=dict(glue_dir=glue_dir, faithful=faithful, max_examples=max_examples,
                                              max_train=max_train, n_boot=n_boot, n_boot_geometry=n_boot_geometry),
                                 progress=progress)
        groups = {REFERENCE_ARM: ref, **groups}
    report_dir = out / "report"
    comparison = compare(groups, report_dir, n_boot=n_boot, n_boot_geometry=n_boot_geometry)
    if init:
        note = reference_note(init, report_dir) + "\n\n"
    (report_dir / "summary.md").write_text(note + arms_table(arm_stats) + summary_table(comparison))
    _say(progress, f"[predrecon] experiment done in {_fmt_s(time.perf_counter() - t0)}; "
                   f"report: {report_dir / 'report.html'}")
    return comparison


#: The paper's questions, answered by one metric each (pooling, metric, reading).
QUESTIONS = [
    ("more uniform?", "mean", "geometry.uniformity", "lower = more uniform"),
    ("more uniform (max pooling)?", "max", "geometry.uniformity", "lower = more uniform"),
    ("richer spectrum (max pooling)?", "max", "geometry.effective_rank", "higher = richer"),
    ("less lexical?", "mean", "lexical.content_auc", "lower = less lexical"),
    ("better semantic-lexical balance?", "mean", "balance.normalised", "higher = better"),
    ("same probe score?", "mean", "probe.glue", "equal = same"),
]


def summary_table(comparison: dict) -> str:
    """A short Markdown table: per task, the paper's questions with both arms' values, the
    difference's interval and the Holm-adjusted verdict."""
    rows = comparison.get("rows", [])
    idx = {(r["task"], r["pooling"], r["metric"], r["b"]): r for r in rows}
    ref = comparison.get("reference", "a")
    others = sorted({r["b"] for r in rows})
    n_head = comparison.get("n_headline_tests", comparison.get("n_tests"))
    lines = [f"Reference arm: {ref}; mode: {comparison.get('mode')}; p (Holm) over the {n_head} headline tests "
             "(rows without one are exploratory; see report.md).", "",
             "| task | question | metric (pooling) | " + " | ".join([ref] + others)
             + " | diff (95% CI) | p (Holm) | verdict |",
             "|---|---|---|" + "---:|" * (len(others) + 1) + "---|---|---|"]
    for task in comparison.get("tasks", []):
        for q, pooling, metric, _ in QUESTIONS:
            for other in others:
                r = idx.get((task, pooling, metric, other))
                if r is None:
                    continue
                va, vb = _pick(r, "a"), _pick(r, "b")
                cells = " | ".join([va] + [vb if o == other else "" for o in others])  # other's column only
                diff = f"{_num(r.get('diff'))} [{_num(r.get('diff_low'))}, {_num(r.get('diff_high'))}]"
                verdict = "significant" if r.get("significant") else "n.s."
                lines.append(f"| {task} | {q} | {metric.split('.')[-1]} ({pooling}) | {cells} | {diff} | "
                             f"{_num(r.get('p_holm'))} | {verdict} |")
    return "\n".join(lines) + "\n"


def _pick(row: dict, side: str) -> str:
    for k in (f"value_{side}", f"mean_{side}", side + "_value"):
        if k in row:
            return _num(row[k])
    return "–"


def _num(v: Any) -> str:
    from .eval.metrics.stats import fmt_number

    try:
        return fmt_number(float(v))
    except (TypeError, ValueError):
        return "–"


def ensure_dataset(source: str, out: Path, progress: bool = True) -> Path:
    """Build the dataset for ``source`` under ``out`` unless a valid one is already there."""
    from .data.shards import TokenDataset, build_shards
    from .data.sources import open_source
    from .data.tokenizer import load_tokenizer

    if (out / "manifest.json").exists():
        TokenDataset(out)  # raises if broken
        return out
    _say(progress, f"[predrecon] building dataset from {source} -> {out}")
    build_shards(open_source(source), load_tokenizer("bert-base-uncased"), out, source_spec=source,
                 tokenizer_name="bert-base-uncased", progress=progress)
    return out


def default_tasks(glue_dir: str | None) -> list[str]:
    """GLUE's five tasks when a GLUE directory is found, else the built-in labelled sets."""
    from .eval.tasks.glue import resolve_glue_dir

    try:
        resolve_glue_dir(glue_dir)
        return ["sst2", "mrpc", "mnli", "cola", "stsb"]
    except FileNotFoundError:
        return ["wiki-topic", "bbc-news"]  # word/document similarity runs as the 'similarity' extra


def _finished_training(run_dir: Path, steps: int) -> bool:
    f = run_dir / "summary.json"
    if not f.exists():
        return False
    try:
        return int(json.loads(f.read_text()).get("step", -1)) >= steps
    except (json.JSONDecodeError, ValueError):
        return False


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _say(progress: bool, msg: str) -> None:
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(msg)


#: The demo's recipe and budget (docs/results.md, "Recipe search and scaling curve"): the tiny
#: preset with learned positions and a WordPiece of DEMO_VOCAB words trained on the demo corpus
#: (a step costs 0.63x a bert-base-uncased step on a CPU, and scores higher at equal CPU time),
#: shortened so that two arms x two seeds, their evaluation and the report finish in under
#: 15 minutes on a 2-core CPU.
DEMO_VOCAB = 8000
DEMO_OVERRIDES = ["model.positions=learned", "train.steps=240", "train.batch_size=32", "optim.warmup_steps=24",
                  "train.ckpt_every=120", "train.diag_every=120", "train.log_every=10"]
DEMO_POOLINGS = ["mean", "max", "attention"]


def _demo_dataset(source: str, out: Path, progress: bool) -> Path:
    """The demo's dataset under ``out``: a DEMO_VOCAB WordPiece trained on ``source``, then shards."""
    from .data.shards import TokenDataset, build_shards
    from .data.sources import open_source
    from .data.tokenizer import train_wordpiece

    if (out / "manifest.json").exists():
        TokenDataset(out)  # raises if broken
        return out
    _say(progress, f"[predrecon] training a {DEMO_VOCAB}-word WordPiece on {source}; building {out}")
    tok = train_wordpiece(open_source(source), DEMO_VOCAB, out.parent / f".{out.name}.tokenizer.json")
    build_shards(open_source(source), tok, out, source_spec=source, tokenizer_name=f"train:{DEMO_VOCAB}",
                 progress=progress)
    return out


def run_demo(out: str | Path = "runs/demo", seeds: int = 2) -> dict[str, Any]:
    """``make demo``: hybrid vs MLM on the built-in Wikipedia leads, evaluated and compared."""
    t0 = time.perf_counter()
    source = "wiki-leads?exclude=eval"
    data = _demo_dataset(source, Path(out) / "data", progress=True)
    summary = run_experiment(preset="tiny", arms="hybrid,mlm", seeds=seeds, out=out, data=str(data), source=source,
                             overrides=DEMO_OVERRIDES, poolings=DEMO_POOLINGS, max_examples=500, max_train=1000,
                             n_boot=200, n_boot_geometry=50,
                             extras=("fewshot", "robustness", "crosslingual", "similarity"))
    report = Path(out) / "report"
    md = report / "summary.md"
    if md.exists():
        print(md.read_text())
    print(f"[predrecon] demo finished in {_fmt_s(time.perf_counter() - t0)}")
    print(f"[predrecon] report: {report / 'report.html'} (and report.md)")
    return summary
