"""Pre-training recipes measured by representation quality per CPU-minute.

One run = one ``predrecon train`` subprocess (the CLI, so the installed or ``PYTHONPATH`` code is
what is measured) with checkpoints every ``--ckpt-every`` steps. A sampler thread reads the
child's CPU time (``/proc/PID/stat`` utime + stime) once a second; each checkpoint is dated by
that series, and the final total is checked against ``getrusage(RUSAGE_CHILDREN)``.

Quality is measured with a fixed, small protocol that uses only the encoder loader:

* **STS-B dev, zero-shot**: mean pooling over the non-padding tokens (``[CLS]`` and ``[SEP]``
  included), cosine of the two sentences, Spearman x 100 against the gold scores, all 1,500 pairs;
* **SST-2 probe**: a seeded 5,000-example subset of SST-2 train, standardised features,
  L2 logistic regression (scikit-learn) with C chosen on a held-out 20 % of that subset, refit
  on all 5,000 and scored (accuracy x 100) on the full SST-2 dev set (872);
* beside both, the **same-shape random-init encoder** (same config, fresh init, seed 0) and for
  SST-2 the dev **majority rate**.

Commands::

    python benchmarks/recipe_search.py run --name NAME --data DIR --steps N --ckpt-every K \
        [--eval-at 2,5,10] [--objective hybrid] [--resume] -- KEY=VALUE ...
    python benchmarks/recipe_search.py eval RUN_DIR [--eval-at 2,5,10 | --final]
    python benchmarks/recipe_search.py table RUN_DIR ... [--md OUT.md] [--png OUT.png]

``--eval-at`` takes CPU-minutes: for each, the first checkpoint at or after it is evaluated
(during training, so a long run can be polled). Results go to ``RUN_DIR/quality.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

GLUE = Path(os.environ.get("PREDRECON_GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
SST_SUBSET, SST_HELDOUT, SEED = 5000, 0.2, 0
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


# ------------------------------------------------------------------------------- data
def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a GLUE TSV (tab-separated, no quoting)."""
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    return lines[0].split("\t"), [ln.split("\t") for ln in lines[1:]]


def load_stsb_dev(glue: Path = GLUE) -> tuple[list[str], list[str], np.ndarray]:
    head, rows = read_tsv(glue / "STS-B" / "dev.tsv")
    i1, i2, isc = head.index("sentence1"), head.index("sentence2"), head.index("score")
    return [r[i1] for r in rows], [r[i2] for r in rows], np.array([float(r[isc]) for r in rows])


def load_sst2(glue: Path = GLUE) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """(train subset texts, labels, dev texts, labels); the subset is seeded and fixed."""
    _, tr = read_tsv(glue / "SST-2" / "train.tsv")
    _, dv = read_tsv(glue / "SST-2" / "dev.tsv")
    idx = np.random.default_rng(SEED).permutation(len(tr))[:SST_SUBSET]
    return ([tr[i][0] for i in idx], np.array([int(tr[i][1]) for i in idx]),
            [r[0] for r in dv], np.array([int(r[1]) for r in dv]))


# ------------------------------------------------------------------------------ metrics
def mean_pool(states: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean of ``states`` (B, T, D) over positions where ``valid`` (B, T) is true -> (B, D)."""
    w = valid.astype(states.dtype)[..., None]
    return (states * w).sum(1) / np.maximum(w.sum(1), 1.0)


def cosine_spearman(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> float:
    """Spearman x 100 between row-wise cosine(a, b) and ``gold``."""
    from scipy.stats import spearmanr

    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(100.0 * spearmanr((na * nb).sum(1), gold).statistic)


def probe_accuracy(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray,
                   seed: int = SEED) -> tuple[float, float]:
    """Standardised L2 logistic regression: C from ``C_GRID`` on a held-out 20 % of the training
    set, refit on all of it; returns (test accuracy x 100, chosen C)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(c: float, x: np.ndarray, y: np.ndarray):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, y)

    perm = np.random.default_rng(seed).permutation(len(y_tr))
    n_ho = int(round(SST_HELDOUT * len(y_tr)))
    ho, fi = perm[:n_ho], perm[n_ho:]
    scores = [fit(c, x_tr[fi], y_tr[fi]).score(x_tr[ho], y_tr[ho]) for c in C_GRID]
    best = C_GRID[int(np.argmax(scores))]
    return float(100.0 * fit(best, x_tr, y_tr).score(x_te, y_te)), best


# ------------------------------------------------------------------------------ encoding
def embed(enc, tok, special, texts: list[str], max_len: int, batch: int = 128) -> np.ndarray:
    """Mean-pooled final states of ``[CLS] text [SEP]`` (truncated to ``max_len``)."""
    import torch

    ids = [e.ids[: max_len - 2] for e in tok.encode_batch(list(texts), add_special_tokens=False)]
    ids = [[special.cls_id, *x, special.sep_id] for x in ids]
    order = np.argsort([len(x) for x in ids])
    out = np.zeros((len(ids), enc.dim), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(ids), batch):
            sel = order[s:s + batch]
            T = max(len(ids[i]) for i in sel)
            x = torch.full((len(sel), T), special.pad_id, dtype=torch.long)
            seg = torch.zeros((len(sel), T), dtype=torch.long)
            for r, i in enumerate(sel):
                x[r, :len(ids[i])] = torch.tensor(ids[i])
                seg[r, :len(ids[i])] = 1
            h = enc(x, segment_ids=seg).last_hidden_state.float().numpy()  # (B, T, D)
            out[sel] = mean_pool(h, seg.numpy() > 0)
    return out


def score_encoder(enc, tok, special, max_len: int) -> dict[str, float]:
    s1, s2, gold = load_stsb_dev()
    xtr, ytr, xdv, ydv = load_sst2()
    sts = cosine_spearman(embed(enc, tok, special, s1, max_len), embed(enc, tok, special, s2, max_len), gold)
    acc, c = probe_accuracy(embed(enc, tok, special, xtr, max_len), ytr, embed(enc, tok, special, xdv, max_len), ydv)
    return {"stsb": sts, "sst2": acc, "sst2_C": c, "sst2_majority": float(100.0 * max(ydv.mean(), 1 - ydv.mean()))}


def random_floor(run: Path, mcfg, vocab: int, tok, special, max_len: int) -> dict[str, float]:
    """Scores of the same-shape random-init encoder (seed 0), cached in ``run/floor.json``."""
    import torch

    from predrecon.model.encoder import Encoder

    f = run / "floor.json"
    if f.exists():
        return json.loads(f.read_text())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        enc = Encoder(mcfg, vocab).eval()
    res = score_encoder(enc, tok, special, max_len)
    f.write_text(json.dumps(res, indent=2))
    return res


def evaluate_checkpoint(run: Path, ckpt: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Score ``ckpt`` and the floor; append the record to ``run/quality.jsonl``."""
    import torch

    from predrecon.train.export import load_encoder

    torch.set_num_threads(1)
    enc, tok, special, mcfg = load_encoder(ckpt)
    cfg = json.loads((run / "config.json").read_text())
    max_len = int(cfg["data"]["seq_len"])
    t0 = time.process_time()
    rec = {**info, **score_encoder(enc, tok, special, max_len)}
    floor = random_floor(run, mcfg, enc.vocab_size, tok, special, max_len)
    rec.update(floor_stsb=floor["stsb"], floor_sst2=floor["sst2"], eval_cpu_s=time.process_time() - t0)
    with open(run / "quality.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(f"[recipe] {run.name} step {rec['step']} cpu {rec['cpu_min']:.2f} min: STS-B {rec['stsb']:.1f} "
          f"(floor {rec['floor_stsb']:.1f}) SST-2 {rec['sst2']:.1f} (floor {rec['floor_sst2']:.1f}, "
          f"majority {rec['sst2_majority']:.1f})", flush=True)
    return rec


# ------------------------------------------------------------------------------ training
def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a live process in seconds, from /proc (None once it is gone)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


class CpuSampler(threading.Thread):
    """Samples (wall time, child CPU seconds) once per ``every`` seconds until the child exits."""

    def __init__(self, proc: subprocess.Popen, every: float = 1.0):
        super().__init__(daemon=True)
        self.proc, self.every, self.samples = proc, every, [(time.time(), 0.0)]
        self.lock = threading.Lock()

    def run(self) -> None:
        while self.proc.poll() is None:
            c = proc_cpu_s(self.proc.pid)
            if c is not None:
                with self.lock:
                    self.samples.append((time.time(), c))
            time.sleep(self.every)

    def cpu_at(self, wall: float) -> float:
        """Child CPU seconds at wall time ``wall`` (linear interpolation of the samples)."""
        with self.lock:
            t, c = map(np.array, zip(*self.samples))
        return float(np.interp(wall, t, c))


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    root = run / "checkpoints"
    out = [(int(p.name.split("_")[1]), p) for p in root.glob("step_*") if (p / "state.json").exists()] \
        if root.exists() else []
    return sorted(out)


def load_times(run: Path) -> dict[int, dict[str, Any]]:
    f = run / "ckpt_times.jsonl"
    if not f.exists():
        return {}
    return {r["step"]: r for r in map(json.loads, f.read_text().splitlines())}


def done_steps(run: Path) -> set[int]:
    f = run / "quality.jsonl"
    return {json.loads(x)["step"] for x in f.read_text().splitlines()} if f.exists() else set()


def pick(times: dict[int, dict[str, Any]], targets: list[float]) -> list[int]:
    """For each target CPU-minute, the first dated checkpoint at or after it."""
    steps = sorted(times)
    out = []
    for t in targets:
        hit = [s for s in steps if times[s]["cpu_min"] >= t - 1e-9]
        if hit and hit[0] not in out:
            out.append(hit[0])
    return out


def cmd_run(a: argparse.Namespace) -> int:
    run = Path(a.out_root) / a.name
    run.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "predrecon.cli", "train", "--data", a.data, "--out", str(run), "--preset", a.preset,
           "--objective", a.objective, "--steps", str(a.steps), f"train.ckpt_every={a.ckpt_every}",
           "train.keep_ckpts=100000", "train.diag_every=0", "train.progress=false", "train.device=cpu", *a.overrides]
    # --resume continues from the newest checkpoint; CPU and wall clocks go on from its dating
    prior = load_times(run)
    last = max((s for s, _ in checkpoints(run) if s in prior), default=None) if a.resume else None
    if a.resume:
        newest = checkpoints(run)[-1][0] if checkpoints(run) else None
        if newest is not None and newest != last:
            raise SystemExit(f"{run}: checkpoint step {newest} has no CPU dating; remove it to resume from {last}")
        cmd += ["--resume", "auto"]
    cpu0 = prior[last]["cpu_min"] * 60 if last is not None else 0.0
    wall0 = prior[last]["wall_min"] * 60 if last is not None else 0.0
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    (run / "recipe.json").write_text(json.dumps({"name": a.name, "data": a.data, "preset": a.preset,
                                                 "objective": a.objective, "steps": a.steps,
                                                 "overrides": a.overrides, "command": cmd}, indent=2))
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # inherited across exec: subtract it
    t0 = time.time() - wall0
    with open(run / "train.out", "a" if a.resume else "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    sampler = CpuSampler(proc)
    sampler.start()
    targets = [float(x) for x in a.eval_at.split(",")] if a.eval_at else []
    cfg_batch = None

    def date_new() -> dict[int, dict[str, Any]]:
        nonlocal cfg_batch
        times = load_times(run)
        if cfg_batch is None and (run / "config.json").exists():
            c = json.loads((run / "config.json").read_text())
            cfg_batch = (c["train"]["batch_size"] * c["optim"]["accum_steps"], c["data"]["seq_len"])
        for step, p in checkpoints(run):
            if step in times or cfg_batch is None:
                continue
            wall = (p / "state.json").stat().st_mtime
            rec = {"step": step, "cpu_min": (cpu0 + sampler.cpu_at(wall)) / 60, "wall_min": (wall - t0) / 60,
                   "token_slots": step * cfg_batch[0] * cfg_batch[1]}
            with open(run / "ckpt_times.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            times[step] = rec
        return times

    while proc.poll() is None:
        time.sleep(2)
        times = date_new()
        for step in pick(times, targets):
            if step not in done_steps(run):
                evaluate_checkpoint(run, dict(checkpoints(run))[step], times[step])
    sampler.join()
    times = date_new()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru.ru_utime + ru.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    total = {"rc": proc.returncode, "cpu_min_rusage": (cpu0 + cpu) / 60,
             "cpu_min_sampled": (cpu0 + sampler.samples[-1][1]) / 60, "wall_min": (time.time() - t0) / 60}
    (run / "recipe_train.json").write_text(json.dumps(total, indent=2))
    print(f"[recipe] {a.name}: trained, rc {proc.returncode}, {total['cpu_min_rusage']:.2f} CPU-min "
          f"(sampled {total['cpu_min_sampled']:.2f}), {total['wall_min']:.1f} wall-min", flush=True)
    if proc.returncode != 0 or a.no_eval:
        return proc.returncode
    final = max(times) if times else None
    # the last checkpoint is dated by rusage (the sampler may stop just before it)
    if final is not None:
        times[final]["cpu_min"] = max(times[final]["cpu_min"], total["cpu_min_rusage"])
    todo = pick(times, targets) + ([final] if final is not None else [])
    for step in dict.fromkeys(todo):
        if step not in done_steps(run):
            evaluate_checkpoint(run, dict(checkpoints(run))[step], times[step])
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    run = Path(a.run)
    times = load_times(run)
    steps = [max(times)] if a.final else pick(times, [float(x) for x in a.eval_at.split(",")])
    for step in steps:
        if step not in done_steps(run):
            evaluate_checkpoint(run, dict(checkpoints(run))[step], times[step])
    return 0


# ------------------------------------------------------------------------------ tables
def records(run: Path) -> list[dict[str, Any]]:
    f = run / "quality.jsonl"
    rows = sorted((json.loads(x) for x in f.read_text().splitlines()), key=lambda r: r["step"]) if f.exists() else []
    return list({r["step"]: r for r in rows}.values())


def cmd_table(a: argparse.Namespace) -> int:
    lines = ["| run | step | CPU-min | wall-min | token slots (M) | STS-B ρ×100 | floor "
             "| SST-2 acc | floor | majority |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    runs = [Path(r) for r in a.runs]
    for run in runs:
        for r in records(run):
            lines.append(f"| {run.name} | {r['step']} | {r['cpu_min']:.1f} | {r['wall_min']:.1f} | "
                         f"{r['token_slots'] / 1e6:.2f} | {r['stsb']:.1f} | {r['floor_stsb']:.1f} | {r['sst2']:.1f} | "
                         f"{r['floor_sst2']:.1f} | {r['sst2_majority']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.md:
        Path(a.md).write_text(text)
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90)
        for ax, key, title in zip(axes, ("stsb", "sst2"), ("STS-B dev zero-shot (Spearman ×100)",
                                                          "SST-2 dev probe accuracy (%)")):
            for i, run in enumerate(runs):
                rs = records(run)
                if not rs:
                    continue
                col = f"C{i}"
                ax.plot([r["cpu_min"] for r in rs], [r[key] for r in rs], "o-", color=col, label=run.name)
                ax.axhline(rs[0][f"floor_{key}"], color=col, ls="--", lw=1, label=f"{run.name} random init")
            if key == "sst2":
                ax.axhline(rs[0]["sst2_majority"], color="grey", ls=":", lw=1, label="majority")
            ax.set_xlabel("training CPU-minutes (1 thread)")
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(a.png)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train one recipe (CLI subprocess) and evaluate its checkpoints")
    r.add_argument("--name", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--out-root", default="runs/recipe")
    r.add_argument("--preset", default="tiny")
    r.add_argument("--objective", default="hybrid")
    r.add_argument("--steps", type=int, required=True)
    r.add_argument("--ckpt-every", type=int, required=True)
    r.add_argument("--eval-at", default="", help="CPU-minutes at which to evaluate (comma-separated)")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--no-eval", action="store_true", help="only train and date the checkpoints")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run from its newest checkpoint")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    e = sub.add_parser("eval", help="evaluate dated checkpoints of a finished run")
    e.add_argument("run")
    e.add_argument("--eval-at", default="")
    e.add_argument("--final", action="store_true")
    t = sub.add_parser("table", help="Markdown table (and PNG) of evaluated runs")
    t.add_argument("runs", nargs="+")
    t.add_argument("--md")
    t.add_argument("--png")
    a = p.parse_args(argv)
    return {"run": cmd_run, "eval": cmd_eval, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
