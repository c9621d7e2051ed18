"""The machinery of the fault-injection suite (scripts/faults.py): the subprocess runner and
shared fixtures (:class:`Suite`), the classifier (:func:`judge_refusal`), file-mangling helpers,
the case registry (:func:`case`), SIGKILL trials and the result table. See faults.py for the cases
and what each verdict means."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

VERDICTS = ("ok", "unclear", "traceback", "loss", "code")
TRACEBACK = "Traceback (most recent call last)"
INTERNAL = "predrecon: internal error"
WORDS = ("the river city north ancient music church language history king war science water light energy "
         "theory island mountain painting novel century empire trade school village bridge garden").split()
DEBUG = ["train.progress=false", "train.diag_every=0"]


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    """``train`` arguments with the KEY=VALUE overrides last (argparse takes one positional run)."""
    ov = [str(a) for a in extra if "=" in str(a) and not str(a).startswith("-")]
    flags = [a for a in extra if str(a) not in ov]
    return ["train", "--preset", "debug", "--data", str(data), "--out", str(out), *map(str, flags), *DEBUG, *ov]


@dataclasses.dataclass
class Result:
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def message(self) -> str:
        """The last 'error' line on stderr (or its last line)."""
        lines = [ln.strip() for ln in self.err.replace("\r", "\n").splitlines() if ln.strip()]
        errs = [ln for ln in lines if "error" in ln.lower()]
        msg = (errs or lines or [""])[-1]
        return msg[msg.find("predrecon: error"):][:160] if "predrecon: error" in msg else msg[:160]


@dataclasses.dataclass
class Outcome:
    case: str
    group: str
    owner: str
    verdict: str
    detail: str
    seconds: float = 0.0


def _crashed(r: Result) -> bool:
    return TRACEBACK in r.err or INTERNAL in r.err


def judge_refusal(r: Result, *tokens: str) -> tuple[str, str]:
    """A refusal is due: ok iff rc != 0, no traceback and the message names one of ``tokens``."""
    if INTERNAL in r.err:  # an unhandled exception reported in one line is still a bug
        return "traceback", r.err[r.err.rfind(INTERNAL):].splitlines()[0][:160]
    if TRACEBACK in r.err:
        tb = r.err[r.err.rfind(TRACEBACK):].replace("\r", "\n").splitlines()
        exc = [ln for ln in tb if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit)\b", ln)]
        last = exc[-1:] or [ln for ln in tb if ln.strip() and not ln.startswith((" ", "\t"))][-1:] or [""]
        return "traceback", last[0][:160]
    if r.rc == 0:
        return "unclear", "accepted silently (rc 0)"
    if r.rc < 0:
        return "unclear", f"killed by signal {-r.rc}"
    low = r.err.lower()
    if tokens and not any(t.lower() in low for t in tokens):
        return "unclear", f"does not name {' / '.join(tokens)}: {r.message}"
    return "ok", r.message


def judge_success_or_refusal(r: Result, *tokens: str) -> tuple[str, str]:
    """Either working (rc 0) or a clear refusal is acceptable."""
    if r.rc == 0 and TRACEBACK not in r.err and INTERNAL not in r.err:
        return "ok", "worked"
    return judge_refusal(r, *tokens)


class Suite:
    """Shared fixtures (built once, copied per case) and the subprocess runner."""

    def __init__(self, work: Path, timeout: float = 300.0, src: Path | None = None):
        self.work = work
        self.timeout = timeout
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                    "TQDM_DISABLE": "1"}
        if src is not None:  # test another tree (e.g. `git archive` of a commit) with this environment
            self.env["PYTHONPATH"] = os.pathsep.join([str(src), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.env.pop("PREDRECON_GLUE_DIR", None)
        self._n = 0

    # --- running ---------------------------------------------------------------------------
    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "predrecon.cli", *map(str, args)]

    def cli(self, *args: str, cwd: Path | None = None, fsize: int | None = None, env: dict | None = None,
            timeout: float | None = None) -> Result:
        t0 = time.perf_counter()
        p = subprocess.run(self.cmd(*args), cwd=cwd or self.work, env={**self.env, **(env or {})},
                           capture_output=True, text=True, errors="replace", timeout=timeout or self.timeout,
                           preexec_fn=_limit_fsize(fsize) if fsize else None)
        return Result(p.returncode, p.stdout, p.stderr, time.perf_counter() - t0)

    def popen(self, *args: str, cwd: Path | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(*args), cwd=cwd or self.work, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace")

    def fresh(self, name: str) -> Path:
        self._n += 1
        d = self.work / "cases" / f"{self._n:03d}_{name}"
        d.mkdir(parents=True)
        return d

    # --- fixtures (built lazily, once) ------------------------------------------------------
    def _once(self, name: str, build: Callable[[Path], None]) -> Path:
        p = self.work / "base" / name
        if not p.exists():
            tmp = p.with_name(p.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            build(tmp)
            tmp.rename(p)
        return p

    def corpus(self) -> Path:
        def build(d: Path) -> None:
            d.mkdir()
            rng = random.Random(0)
            docs = [f"Doc {i}. " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80))) + "."
                    for i in range(80)]
            (d / "corpus.txt").write_text("\n\n".join(docs), encoding="utf-8")
        return self._once("corpus", build) / "corpus.txt"

    def data(self) -> Path:
        def build(d: Path) -> None:
            _expect_ok(self.cli("data", "build", "--files", self.corpus(), "--tokenizer", "train:200", "--out", d))
        return self._once("data", build)

    def run(self) -> Path:
        """A finished hybrid run: 6 steps, checkpoints at 3 and 6."""
        def build(d: Path) -> None:
            _expect_ok(self.train(self.data(), d, "--steps", "6", "train.ckpt_every=3"))
        return self._once("run", build)

    def export(self) -> Path:
        def build(d: Path) -> None:
            _expect_ok(self.cli("export", self.run(), "--out", d))
        return self._once("export", build)

    def glue(self) -> Path:
        def build(d: Path) -> None:
            (d / "SST-2").mkdir(parents=True)
            rng = random.Random(1)
            words = "good bad fine awful great terrible nice poor".split()
            for split, n in (("train", 40), ("dev", 30)):
                lines = ["sentence\tlabel"]
                for i in range(n):
                    w = rng.choice(words)
                    lines.append(f"a {w} film number {i}\t{int(words.index(w) % 2 == 0)}")
                (d / "SST-2" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
        return self._once("glue", build)

    def evaldir(self) -> Path:
        def build(d: Path) -> None:
            _expect_ok(self.eval(self.export(), d))
        return self._once("eval", build)

    def eval(self, enc: Path | str, out: Path, glue: Path | None = None, *extra: str, env_glue: bool = True,
             **kw) -> Result:
        """``eval`` on SST-2 from ``glue``, passed as --glue-dir (and, unless ``env_glue`` is False, also
        as $PREDRECON_GLUE_DIR, so that cases other than the --glue-dir one do not depend on it)."""
        glue = glue or self.glue()
        env = {"PREDRECON_GLUE_DIR": str(glue)} if env_glue else {}
        return self.cli("eval", enc, "--tasks", "sst2", "--poolings", "mean", "--out", out, "--glue-dir", glue,
                        "--max-examples", "1000", "--n-boot", "10", *extra, env=env, **kw)

    def copy(self, src: Path, name: str) -> Path:
        dst = self.fresh(name) / src.name
        shutil.copytree(src, dst)
        return dst

    def train(self, data: Path, out: Path, *extra: str, **kw) -> Result:
        return self.cli(*train_args(data, out, *extra), **kw)


def _expect_ok(r: Result) -> None:
    if r.rc != 0:
        raise RuntimeError(f"fixture command failed (rc {r.rc}):\n{r.err[-3000:]}")


def _finish(p: subprocess.Popen, timeout: float) -> Result:
    out, err = p.communicate(timeout=timeout)
    return Result(p.returncode, out, err, 0.0)


def _limit_fsize(limit: int) -> Callable[[], None]:
    def pre() -> None:  # EFBIG instead of SIGXFSZ, as a full disk would give ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


# --------------------------------------------------------------------------------- helpers
class _Payload:
    """Unpickling this creates ``marker`` (stands in for arbitrary code execution)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _rehash_dataset(d: Path, name: str) -> None:
    """Update the dataset manifest's sha256 for ``name`` (a consistent but hostile dataset)."""
    mf = d / "manifest.json"
    m = json.loads(mf.read_text())
    m["files"][name] = _sha256(d / name)
    mf.write_text(json.dumps(m, indent=2))


def _rehash_ckpt(ck: Path, name: str) -> None:
    mf = ck / "MANIFEST.json"
    m = json.loads(mf.read_text())
    m["files"][name] = _sha256(ck / name)
    mf.write_text(json.dumps(m, indent=2))


def _scribble(p: Path, n: int = 64, seed: int = 0, at: float = 0.5) -> None:
    b = bytearray(p.read_bytes())
    rng = random.Random(seed)
    i = min(max(0, int(len(b) * at)), max(0, len(b) - n))
    b[i:i + n] = bytes(rng.randrange(256) for _ in range(min(n, len(b) - i)))
    p.write_bytes(bytes(b))


def _truncate(p: Path, frac: float = 0.5) -> None:
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * frac)])


def _zero(p: Path) -> None:
    p.write_bytes(bytes(p.stat().st_size))


def _random(p: Path, seed: int = 0) -> None:
    p.write_bytes(random.Random(seed).randbytes(max(64, p.stat().st_size)))


def _ckpts(run: Path) -> list[Path]:
    root = run / "checkpoints"
    return sorted(p for p in root.iterdir() if p.name.startswith("step_")) if root.is_dir() else []


def _valid_ckpt(ck: Path) -> bool:
    mf = ck / "MANIFEST.json"
    try:
        files = json.loads(mf.read_text())["files"]
        return all((ck / n).is_file() and _sha256(ck / n) == h for n, h in files.items())
    except (OSError, ValueError, KeyError):
        return False


def _state(ck: Path) -> dict:
    """Every tensor of a checkpoint (model, target, optimizer) as a flat dict."""
    import torch
    from safetensors.torch import load_file

    out = {}
    for name in ("model", "target"):
        f = ck / f"{name}.safetensors"
        if f.exists():
            out.update({f"{name}.{k}": v for k, v in load_file(str(f)).items()})
    opt = torch.load(ck / "optimizer.pt", weights_only=True)
    for pid, st in opt["state"].items():
        for k, v in st.items():
            out[f"opt.{pid}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return out


def _same_state(a: Path, b: Path) -> tuple[bool, str]:
    import torch

    sa, sb = _state(a), _state(b)
    if set(sa) != set(sb):
        return False, f"keys differ: {sorted(set(sa) ^ set(sb))[:3]}"
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    return (not diff), (f"{len(diff)} of {len(sa)} tensors differ, e.g. {diff[0]}" if diff else
                        f"{len(sa)} tensors equal")


def _finite_ckpt(ck: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    return all(bool(torch.isfinite(v).all()) for v in load_file(str(ck / "model.safetensors")).values()
               if v.is_floating_point())


def _log_records(run: Path) -> list[dict]:
    recs = []
    for ln in (run / "log.jsonl").read_text().splitlines():
        try:
            recs.append(json.loads(ln))
        except ValueError:
            pass
    return recs


# ----------------------------------------------------------------------------------- cases
CASES: list[tuple[str, str, str, Callable[[Suite], tuple[str, str]]]] = []


def case(name: str, group: str, owner: str):
    def deco(fn):
        CASES.append((name, group, owner, fn))
        return fn
    return deco


# ------------------------------------------------------------------------------- SIGKILL
def kill_trials(s: Suite, n: int, seed: int = 0) -> list[Outcome]:
    """Half the trials kill at a random moment, half while a checkpoint is being written."""
    if n <= 0:
        return []
    steps = ["--steps", "12", "train.ckpt_every=2"]
    ref = s.fresh("killref") / "run"
    t0 = time.perf_counter()
    _expect_ok(s.train(s.data(), ref, *steps))
    span = time.perf_counter() - t0
    ref_ck = _ckpts(ref)[-1]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        in_save = i % 2 == 1
        run = s.fresh(f"kill{i}") / "run"
        t1 = time.perf_counter()
        p = s.popen(*train_args(s.data(), run, *steps))
        when = "?"
        if in_save:
            target = rng.randint(1, 5)  # the k-th checkpoint write
            seen: set[str] = set()
            while p.poll() is None:
                tmp = list((run / "checkpoints").glob(".tmp_*")) if (run / "checkpoints").is_dir() else []
                for t in tmp:
                    seen.add(t.name)
                if len(seen) >= target:
                    p.send_signal(signal.SIGKILL)
                    when = f"inside checkpoint write #{len(seen)}"
                    break
                time.sleep(0.002)
        else:
            delay = rng.uniform(0.2, 0.8 * span)  # span includes start-up: most draws land mid-training
            try:
                p.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
            when = f"at {delay:.2f}s"
        p.communicate()
        if p.returncode == 0:
            when += " (finished before the kill)"
        r = s.train(s.data(), run, *steps, "--resume", "auto")
        name = f"sigkill_{'save' if in_save else 'random'}_{i}"
        if _crashed(r):
            out.append(Outcome(name, "sigkill", "data safety", "traceback", f"{when}: {judge_refusal(r)[1]}"))
        elif r.rc != 0:
            out.append(Outcome(name, "sigkill", "data safety", "unclear", f"{when}: resume rc {r.rc}: {r.message}"))
        else:
            same, why = _same_state(ref_ck, _ckpts(run)[-1])
            out.append(Outcome(name, "sigkill", "data safety", "ok" if same else "loss",
                               f"{when}: {'bit-exact' if same else 'DIFFERS'} ({why})",
                               time.perf_counter() - t1))
    return out


# ---------------------------------------------------------------------------------- main
def run_cases(s: Suite, only: str | None = None, log: Callable[[str], None] = print) -> list[Outcome]:
    res = []
    for name, group, owner, fn in CASES:
        if only and not any(o in name for o in only.split(",")):
            continue
        t0 = time.perf_counter()
        try:
            verdict, detail = fn(s)
        except subprocess.TimeoutExpired:
            verdict, detail = "unclear", f"timed out after {s.timeout:.0f}s"
        o = Outcome(name, group, owner, verdict, detail, time.perf_counter() - t0)
        log(f"  {o.case:<36} {o.verdict:<9} {o.detail[:110]}")
        res.append(o)
    return res


def table(outcomes: list[Outcome]) -> str:
    lines = [f"{'case':<36} {'group':<8} {'owner':<13} {'verdict':<9} detail", "-" * 118]
    for o in outcomes:
        lines.append(f"{o.case:<36} {o.group:<8} {o.owner:<13} {o.verdict:<9} {o.detail[:80]}")
    lines.append("-" * 118)
    lines.append(totals_line(outcomes))
    return "\n".join(lines)


def totals(outcomes: list[Outcome]) -> dict[str, int]:
    t = {v: sum(o.verdict == v for o in outcomes) for v in VERDICTS}
    return {"cases": len(outcomes), **t}


def totals_line(outcomes: list[Outcome]) -> str:
    t = totals(outcomes)
    return (f"{t['cases']} cases: {t['ok']} ok / {t['unclear']} unclear / {t['traceback']} traceback / "
            f"{t['loss']} loss / {t['code']} code executed")
