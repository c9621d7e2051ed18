"""Fault-injection suite: the real CLI, in subprocesses, against crashes and hostile input.

    .venv/bin/python scripts/faults.py                 # every case, table + totals
    .venv/bin/python scripts/faults.py --json out.json # also write the results
    .venv/bin/python scripts/faults.py --only cfg_ --kills 0

Each case builds what it needs from a tiny corpus (debug preset, a few steps), breaks one thing
(SIGKILL, a corrupt or hostile file, a bad value, a second writer, a file-size limit standing in
for a full disk) and runs ``python -m predrecon.cli`` on it. The outcome is classified:

* ``ok``         the command did the right thing: it worked, or it refused with a message that
                 names the file or key and no traceback;
* ``unclear``    refused without naming the file/key, died on a signal, or accepted a bad value
                 silently (rc 0 where a refusal is due);
* ``traceback``  a Python traceback reached the user, or an unhandled exception type was reported
                 as an internal error;
* ``loss``       data was lost or silently corrupted (deleted files, a corrupt input trained or
                 evaluated without complaint, a resumed run that differs from the uninterrupted one);
* ``code``       a crafted pickle executed code (it creates a marker file).

SIGKILL trials kill a training run at a random moment or while a checkpoint is being written
(a ``.tmp_*`` directory exists), resume it with ``--resume auto`` and compare the final state
dicts (model, EMA target, optimizer) with an uninterrupted run, tensor by tensor, bit for bit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from faultlib import (
    Result,
    Suite,
    _ckpts,
    _crashed,
    _expect_ok,
    _finish,
    _finite_ckpt,
    _log_records,
    _Payload,
    _random,
    _rehash_ckpt,
    _rehash_dataset,
    _scribble,
    _sha256,
    _truncate,
    _valid_ckpt,
    _zero,
    case,
    judge_refusal,
    judge_success_or_refusal,
    kill_trials,
    run_cases,
    table,
    totals,
    train_args,
)

# bad configuration values: refused at start-up, naming the key
BAD_VALUES = [
    ("cfg_weight_decay_negative", "optim.weight_decay=-0.1", "optim.weight_decay"),
    ("cfg_balancer_lr_negative", "optim.balancer_lr=-1", "optim.balancer_lr"),
    ("cfg_grad_clip_inf", "optim.grad_clip=inf", "optim.grad_clip"),
    ("cfg_collapse_std_nan", "train.collapse_std=nan", "train.collapse_std"),
    ("cfg_keep_ckpts_zero", "train.keep_ckpts=0", "train.keep_ckpts"),
    ("cfg_keep_ckpts_negative", "train.keep_ckpts=-1", "train.keep_ckpts"),
    ("cfg_lr_inf", "optim.lr=inf", "optim.lr"),
    ("cfg_lr_nan", "optim.lr=nan", "optim.lr"),
    ("cfg_num_targets_absurd", "jepa.num_targets=1000", "jepa.num_targets"),
    ("cfg_target_scale_scalar", "jepa.target_scale=0.5", "jepa.target_scale"),
    ("cfg_eps_nan", "optim.eps=nan", "optim.eps"),
    ("cfg_init_std_nan", "model.init_std=nan", "model.init_std"),
    ("cfg_mlp_ratio_inf", "model.mlp_ratio=inf", "model.mlp_ratio"),
    ("cfg_gradnorm_alpha_nan", "objective.gradnorm_alpha=nan", "objective.gradnorm_alpha"),
    ("cfg_unknown_key", "optim.lrr=1", "optim.lrr"),
    ("cfg_not_a_number", "optim.lr=fast", "optim.lr"),
]


def _bad_value(override: str, key: str):
    def fn(s: Suite) -> tuple[str, str]:
        out = s.fresh("cfg") / "run"
        return judge_refusal(s.train(s.data(), out, "--steps", "2", override), key)
    return fn


for _name, _ov, _key in BAD_VALUES:
    case(_name, "config", "config/cli")(_bad_value(_ov, _key))


@case("cfg_device_tpu", "config", "config/cli")
def _device_tpu(s: Suite):
    return judge_refusal(s.train(s.data(), s.fresh("tpu") / "run", "--steps", "2", "--device", "tpu"),
                         "train.device")


@case("cli_out_is_a_file", "cli", "config/cli")
def _out_file(s: Suite):
    f = s.fresh("outfile") / "not_a_dir"
    f.write_text("user data\n")
    r = s.train(s.data(), f, "--steps", "2")
    if f.read_text() != "user data\n":
        return "loss", "the file given as --out was changed"
    return judge_refusal(r, "not_a_dir")


@case("cli_resume_other_objective", "cli", "config/cli")
def _resume_other_objective(s: Suite):
    run = s.copy(s.run(), "otherobj")
    return judge_refusal(s.train(s.data(), run, "--steps", "8", "--resume", "auto", "--objective", "mlm"),
                         "objective")


@case("cli_export_from_other_cwd", "cli", "config/cli")
def _export_other_cwd(s: Suite):
    d = s.fresh("relcwd")
    shutil.copytree(s.data(), d / "data")
    _expect_ok(s.train(Path("data"), Path("run"), "--steps", "2", cwd=d))
    elsewhere = s.fresh("elsewhere")
    r = s.cli("export", d / "run", "--out", d / "enc", cwd=elsewhere)
    if r.rc == 0 and (d / "enc" / "model.safetensors").is_file():
        return "ok", "exported"
    return judge_refusal(r, "data.path")


# --- corpus and dataset files
@case("corpus_binary_junk", "data", "data sources")
def _corpus_junk(s: Suite):
    f = s.fresh("corpusjunk") / "junk.txt"
    f.write_bytes(random.Random(3).randbytes(4096))
    return judge_refusal(s.cli("data", "build", "--files", f, "--out", f.parent / "d"), "junk.txt")


@case("corpus_empty", "data", "data sources")
def _corpus_empty(s: Suite):
    f = s.fresh("corpusempty") / "empty.txt"
    f.write_text("")
    return judge_refusal(s.cli("data", "build", "--files", f, "--out", f.parent / "d"), "empty.txt")


@case("tokenizer_junk_build", "data", "tokenizer")
def _tok_junk_build(s: Suite):
    d = s.fresh("tokjunk")
    (d / "junk.json").write_bytes(random.Random(4).randbytes(2048))
    return judge_refusal(s.cli("data", "build", "--files", s.corpus(), "--tokenizer", d / "junk.json",
                               "--out", d / "d"), "junk.json")


@case("tokenizer_junk_dataset_eval", "data", "tokenizer")
def _tok_junk_dataset(s: Suite):
    d = s.fresh("tokjunkds")
    shutil.copytree(s.data(), d / "data")
    _expect_ok(s.train(d / "data", d / "run", "--steps", "2"))
    (d / "data" / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"')
    return judge_refusal(s.eval(d / "run", d / "ev"), "tokenizer.json")


@case("tokenizer_junk_dataset_rehashed_eval", "data", "tokenizer")
def _tok_junk_rehashed(s: Suite):
    """The same with the manifest's sha256 updated: the tokenizer parser itself must refuse it."""
    d = s.fresh("tokjunkre")
    shutil.copytree(s.data(), d / "data")
    _expect_ok(s.train(d / "data", d / "run", "--steps", "2"))
    (d / "data" / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"')
    _rehash_dataset(d / "data", "tokenizer.json")
    return judge_refusal(s.eval(d / "run", d / "ev"), "tokenizer.json")


def _dataset_case(name: str, mutate: Callable[[Path], None], tokens: tuple[str, ...], owner: str,
                  silent_is_loss: bool = True):
    @case(name, "data", owner)
    def fn(s: Suite):
        d = s.copy(s.data(), name)
        mutate(d)
        r = s.train(d, d.parent / "run", "--steps", "2")
        if r.rc == 0 and silent_is_loss:
            return "loss", "trained on the corrupt dataset (rc 0)"
        return judge_refusal(r, *tokens)
    return fn


SHARD = "train.tokens.00000.bin"
_dataset_case("shard_random_bytes", lambda d: _scribble(d / SHARD), (SHARD,), "data safety")
_dataset_case("shard_zeroed", lambda d: _zero(d / SHARD), (SHARD,), "data safety")
_dataset_case("shard_truncated", lambda d: _truncate(d / SHARD), (SHARD,), "data safety")
_dataset_case("offsets_zeroed", lambda d: _zero(d / "train.offsets.npy"), ("train.offsets.npy",), "data safety")
_dataset_case("offsets_truncated", lambda d: _truncate(d / "train.offsets.npy"), ("train.offsets.npy",),
              "data safety")
_dataset_case("manifest_truncated", lambda d: _truncate(d / "manifest.json"), ("manifest.json",), "data safety")
_dataset_case("manifest_random", lambda d: _random(d / "manifest.json"), ("manifest.json",), "data safety")


def _ids_over_vocab(d: Path) -> None:
    import numpy as np

    a = np.fromfile(d / SHARD, dtype=np.uint16)
    a[::7] = 60000
    a.tofile(d / SHARD)
    _rehash_dataset(d, SHARD)


_dataset_case("shard_ids_exceed_vocab", _ids_over_vocab, (SHARD, "vocab"), "data safety")


@case("offsets_pickle_payload", "data", "data safety")
def _offsets_pickle(s: Suite):
    import numpy as np

    d = s.copy(s.data(), "offpickle")
    marker = d.parent / "PWNED"
    np.save(d / "train.offsets.npy", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    _rehash_dataset(d, "train.offsets.npy")
    r = s.train(d, d.parent / "run", "--steps", "2")
    if marker.exists():
        return "code", "unpickling the offsets ran code"
    if r.rc == 0:
        return "loss", "trained on an object array"
    return judge_refusal(r, "train.offsets.npy")


# --- exports
def _rehash_export(e: Path) -> None:
    """Update an export's MANIFEST.json (if any) to the mangled files: only the loader's own
    checks stand between a hostile export and the model."""
    mf = e / "MANIFEST.json"
    if mf.is_file():
        m = json.loads(mf.read_text())
        m["files"] = {n: _sha256(e / n) for n in m.get("files", {}) if (e / n).is_file()}
        mf.write_text(json.dumps(m, indent=2))


def _export_case(name: str, mutate: Callable[[Path], None], tokens: tuple[str, ...], silent_is_loss: bool = True,
                 rehash: bool = False):
    @case(name, "export", "data safety")
    def fn(s: Suite):
        e = s.copy(s.export(), name)
        marker = e.parent / "PWNED"
        mutate(e) if mutate.__code__.co_argcount == 1 else mutate(e, marker)
        if rehash:
            _rehash_export(e)
        r = s.eval(e, e.parent / "ev")
        if marker.exists():
            return "code", "loading the export ran code"
        if r.rc == 0 and silent_is_loss:
            return "loss", "evaluated the corrupt export (rc 0)"
        return judge_refusal(r, *tokens)
    return fn


def _pickle_weights(e: Path, marker: Path) -> None:
    (e / "model.safetensors").write_bytes(pickle.dumps({"w": _Payload(marker)}))


def _inconsistent_config(e: Path) -> None:
    c = json.loads((e / "config.json").read_text())
    c["model"]["dim"] = 64
    c["model"]["heads"] = 4
    (e / "config.json").write_text(json.dumps(c))


def _payload_region(e: Path) -> None:
    """Plausible finite float32 values over 256 bytes in the middle of the tensor data (header
    intact): only a checksum can tell."""
    import numpy as np

    p = e / "model.safetensors"
    b = bytearray(p.read_bytes())
    header = 8 + int.from_bytes(b[:8], "little")
    i = header + ((len(b) - header) // 2) // 4 * 4
    b[i:i + 256] = np.random.default_rng(0).uniform(-0.05, 0.05, 64).astype(np.float32).tobytes()
    p.write_bytes(bytes(b))


_export_case("export_weights_truncated", lambda e: _truncate(e / "model.safetensors"), ("model.safetensors",))
_export_case("export_weights_zeroed", lambda e: _zero(e / "model.safetensors"), ("model.safetensors",))
_export_case("export_weights_random", lambda e: _random(e / "model.safetensors"), ("model.safetensors",))
_export_case("export_weights_pickle", _pickle_weights, ("model.safetensors",))
_export_case("export_weights_payload_scribbled", _payload_region, ("model.safetensors",))
_export_case("export_config_truncated", lambda e: _truncate(e / "config.json"), ("config.json",))
_export_case("export_config_inconsistent", _inconsistent_config, ("config.json", "model.safetensors"))
# the same with the export's manifest updated (a consistent but hostile export)
_export_case("export_weights_truncated_rehashed", lambda e: _truncate(e / "model.safetensors"),
             ("model.safetensors",), rehash=True)
_export_case("export_weights_pickle_rehashed", _pickle_weights, ("model.safetensors",), rehash=True)
_export_case("export_config_truncated_rehashed", lambda e: _truncate(e / "config.json"), ("config.json",),
             rehash=True)
_export_case("export_config_inconsistent_rehashed", _inconsistent_config, ("config.json", "model.safetensors"),
             rehash=True)


@case("export_into_run_dir", "export", "data safety")
def _export_into_run(s: Suite):
    run = s.copy(s.run(), "exportrun")
    before = {p.relative_to(run) for p in run.rglob("*")}
    r = s.cli("export", run, "--out", run)
    lost = sorted(str(p) for p in before - {p.relative_to(run) for p in run.rglob("*")})
    if lost:
        return "loss", f"deleted {len(lost)} files of the run, e.g. {lost[0]}"
    return judge_success_or_refusal(r, str(run.name))


@case("export_into_user_dir", "export", "data safety")
def _export_into_user(s: Suite):
    d = s.fresh("exportuser") / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("precious\n")
    r = s.cli("export", s.run(), "--out", d)
    if not (d / "notes.txt").exists():
        return "loss", "deleted the user's notes.txt"
    return judge_success_or_refusal(r, "mine")


# --- runs and checkpoints
@case("ckpt_newest_corrupt_resume", "run", "data safety")
def _ckpt_newest_corrupt(s: Suite):
    run = s.copy(s.run(), "ckcorrupt")
    _scribble(_ckpts(run)[-1] / "model.safetensors")
    r = s.train(s.data(), run, "--steps", "8", "--resume", "auto")
    if r.rc == 0 and any(_valid_ckpt(c) and c.name.endswith("08") for c in _ckpts(run)):
        return "ok", "resumed from the older valid checkpoint"
    return judge_refusal(r, "model.safetensors", "checkpoint")


@case("ckpt_optimizer_pickle_payload", "run", "data safety")
def _ckpt_opt_pickle(s: Suite):
    import torch

    run = s.copy(s.run(), "optpickle")
    ck = _ckpts(run)[-1]
    marker = run.parent / "PWNED"
    torch.save({"state": {0: {"step": _Payload(marker)}}, "param_groups": []}, ck / "optimizer.pt")
    _rehash_ckpt(ck, "optimizer.pt")
    r = s.train(s.data(), run, "--steps", "8", "--resume", "auto")
    if marker.exists():
        return "code", "torch.load ran the payload"
    return judge_refusal(r, "optimizer.pt")


@case("ckpt_prune_after_all_corrupt", "run", "data safety")
def _prune_corrupt(s: Suite):
    run = s.copy(s.run(), "prunecorrupt")  # checkpoints 3 and 6, both corrupted below
    for c in _ckpts(run):
        _scribble(c / "model.safetensors")
    # the restarted run's checkpoints (steps 1, 2) sort before the corrupt ones (3, 6)
    r = s.train(s.data(), run, "--steps", "2", "--resume", "auto", "train.ckpt_every=1")
    good = [c.name for c in _ckpts(run) if _valid_ckpt(c)]
    if r.rc == 0 and not good:
        return "loss", "the new good checkpoints were pruned; only corrupt ones remain"
    if r.rc == 0:
        return "ok", f"valid: {', '.join(good)}"
    return judge_refusal(r, "checkpoint")


@case("nan_run_checkpoints", "run", "train loop")
def _nan_run(s: Suite):
    run = s.fresh("nanrun") / "run"
    r = s.train(s.data(), run, "--steps", "15", "optim.lr=1e6", "train.ckpt_every=5", "optim.grad_clip=0")
    bad = [c.name for c in _ckpts(run) if not _finite_ckpt(c)]
    if bad:
        return "loss", f"non-finite weights checkpointed: {', '.join(bad)}"
    if r.rc == 0:
        return "ok", "finished with finite checkpoints"
    return judge_refusal(r, "non-finite", "nan", "diverg")


@case("log_torn_last_line", "run", "data safety")
def _log_torn(s: Suite):
    run = s.copy(s.run(), "logtorn")
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 1.')
    return judge_success_or_refusal(s.train(s.data(), run, "--steps", "8", "--resume", "auto"), "log.jsonl")


@case("run_config_json_truncated", "run", "data safety")
def _run_config_truncated(s: Suite):
    run = s.copy(s.run(), "cfgtrunc")
    _truncate(run / "config.json")
    return judge_success_or_refusal(s.train(s.data(), run, "--steps", "8", "--resume", "auto"), "config.json")


@case("resume_finished_run", "run", "data safety")
def _resume_finished(s: Suite):
    run = s.copy(s.run(), "finished")
    before = json.loads((run / "summary.json").read_text())
    r = s.train(s.data(), run, "--steps", "6", "--resume", "auto")
    after = json.loads((run / "summary.json").read_text())
    ends = [x for x in _log_records(run) if x.get("event") == "end"]
    if len(ends) > 1 or after.get("tokens_per_s") != before.get("tokens_per_s"):
        return "loss", f"summary rewritten (tokens_per_s {after.get('tokens_per_s')}), {len(ends)} end records"
    return judge_success_or_refusal(r, "finished")


@case("concurrent_train_same_out", "run", "data safety")
def _concurrent_train(s: Suite):
    out = s.fresh("twotrain") / "run"
    args = train_args(s.data(), out, "--steps", "30", "train.ckpt_every=2")
    a = s.popen(*args)
    time.sleep(0.5)
    b = s.popen(*args)
    ra, rb = (_finish(p, s.timeout) for p in (a, b))
    rcs = sorted((ra.rc, rb.rc))
    if any(_crashed(r) for r in (ra, rb)):
        return judge_refusal(next(r for r in (ra, rb) if _crashed(r)))
    if rcs == [0, 0]:
        return "loss", "both writers ran to the end on one directory"
    if rcs[0] != 0:
        return "loss", f"neither finished (rc {rcs})"
    loser = ra if ra.rc != 0 else rb
    if not _names_lock(loser):
        return "loss", f"the second writer was broken by the first, not refused: {loser.message}"
    return judge_refusal(loser, "lock", "another writer")


def _names_lock(r: Result) -> bool:
    low = r.err.lower()
    return "lock" in low or "another writer" in low or "in use" in low


@case("concurrent_resume_auto", "run", "data safety")
def _concurrent_resume(s: Suite):
    run = s.copy(s.run(), "tworesume")
    args = train_args(s.data(), run, "--steps", "30", "--resume", "auto")
    a = s.popen(*args)
    b = s.popen(*args)
    ra, rb = (_finish(p, s.timeout) for p in (a, b))
    steps = [x["step"] for x in _log_records(run) if "event" not in x]
    dup = len(steps) - len(set(steps))
    if any(_crashed(r) for r in (ra, rb)):
        return judge_refusal(next(r for r in (ra, rb) if _crashed(r)))
    if (ra.rc, rb.rc) == (0, 0) or dup:
        return "loss", f"both resumed (rc {ra.rc}, {rb.rc}); {dup} duplicate step records"
    loser = ra if ra.rc != 0 else rb
    if not _names_lock(loser):
        return "loss", f"the second writer was broken by the first, not refused: {loser.message}"
    return judge_refusal(loser, "lock", "another writer")


# --- disk full (RLIMIT_FSIZE: writes past the limit fail with EFBIG)
@case("disk_full_checkpoint", "disk", "data safety")
def _disk_ckpt(s: Suite):
    run = s.copy(s.run(), "fullckpt")
    r = s.train(s.data(), run, "--steps", "9", "--resume", "auto", "train.ckpt_every=3", fsize=120_000)
    if not any(_valid_ckpt(c) and c.name.endswith("06") for c in _ckpts(run)):
        return "loss", "the last good checkpoint is gone"
    if list((run / "checkpoints").glob(".tmp_*")):
        return "unclear", "left a partial checkpoint directory behind"
    return judge_refusal(r, "space", "too large", "checkpoint")


@case("disk_full_export", "disk", "data safety")
def _disk_export(s: Suite):
    d = s.fresh("fullexport")
    r = s.cli("export", s.run(), "--out", d / "enc", fsize=50_000)
    if (d / "enc").exists() and not (d / "enc" / "config.json").exists():
        return "loss", "left a partial export"
    return judge_refusal(r, "space", "too large", "enc")


@case("disk_full_data_build", "disk", "data safety")
def _disk_data(s: Suite):
    d = s.fresh("fulldata")
    r = s.cli("data", "build", "--files", s.corpus(), "--tokenizer", "train:200", "--out", d / "ds", fsize=4_000)
    if (d / "ds").exists():
        return "loss", "left a partial dataset"
    return judge_refusal(r, "space", "too large", "ds")


# --- evaluation inputs
def _glue_case(name: str, mutate: Callable[[Path], None]):
    @case(name, "eval", "eval glue")
    def fn(s: Suite):
        g = s.copy(s.glue(), name)
        mutate(g / "SST-2" / "dev.tsv")
        return judge_refusal(s.eval(s.export(), g.parent / "ev", g), "dev.tsv")
    return fn


_glue_case("glue_binary_junk", lambda p: _random(p, seed=5))


def _long_line(p: Path) -> None:
    with open(p, "a") as f:
        f.write("x" * (50 << 20) + "\t1\n")


_glue_case("glue_50mb_line", _long_line)


@case("compare_truncated_result_json", "eval", "eval report")
def _compare_truncated(s: Suite):
    a = s.copy(s.evaldir(), "cmptrunc")
    b = a.parent / "b"
    shutil.copytree(s.evaldir(), b)
    _truncate(a / "sst2" / "mean.json")
    return judge_refusal(s.cli("compare", a, b, "--labels", "x,y", "--out", a.parent / "rep"), "mean.json")


@case("eval_into_other_encoders_dir", "eval", "eval runner")
def _eval_mixing(s: Suite):
    ev = s.copy(s.evaldir(), "evalmix")
    r = s.cli("eval", f"random:{s.export()}", "--tasks", "sst2", "--poolings", "max", "--out", ev,
              "--glue-dir", s.glue(), "--n-boot", "10", env={"PREDRECON_GLUE_DIR": str(s.glue())})
    encs = {json.loads(f.read_text())["meta"]["encoder"] for f in ev.glob("*/*.json")}
    if r.rc == 0 and len(encs) > 1:
        return "loss", f"results of {len(encs)} encoders mixed in one directory"
    return judge_success_or_refusal(r, ev.name)


@case("eval_glue_dir_honoured", "eval", "eval runner")
def _glue_dir(s: Suite):
    d = s.fresh("gluedir")
    r = s.eval(s.export(), d / "ev", env_glue=False)
    if _crashed(r):
        return judge_refusal(r)
    if r.rc != 0:
        return "unclear", f"--glue-dir ignored: {r.message}"
    n = len(json.loads((d / "ev" / "sst2" / "mean.json").read_text())["per_example"]["labels"])
    return ("ok", "used --glue-dir") if n == 30 else ("loss", f"--glue-dir ignored: {n} dev examples, not 30")



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results (cases, totals, SIGKILL trials) to this file")
    ap.add_argument("--only", help="comma-separated substrings of case names to run")
    ap.add_argument("--kills", type=int, default=6, help="SIGKILL trials (half inside checkpoint writes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="working directory (default: a temporary one, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per command")
    ap.add_argument("--src", help="import predrecon from this source directory (e.g. an exported commit's src/)")
    args = ap.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="predrecon-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    src = Path(args.src).resolve() if args.src else None
    s = Suite(work.resolve(), timeout=args.timeout, src=src)
    t0 = time.perf_counter()
    try:
        print(f"[faults] working in {work}; predrecon from {src or 'the installed package'}")
        outcomes = run_cases(s, args.only)
        kills = kill_trials(s, 0 if args.only and "sigkill" not in args.only else args.kills, args.seed)
        for o in kills:
            print(f"  {o.case:<36} {o.verdict:<9} {o.detail[:110]}")
        allres = outcomes + kills
        print()
        print(table(allres))
        exact = sum(o.verdict == "ok" for o in kills)
        killed = sum("finished before the kill" not in o.detail for o in kills)
        print(f"SIGKILL trials: {len(kills)} ({killed} killed mid-run), bit-exact {exact}/{len(kills)}")
        print(f"[faults] {time.perf_counter() - t0:.0f}s")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({
                "totals": totals(allres), "sigkill": {"n": len(kills), "killed": killed, "bit_exact": exact},
                "seconds": time.perf_counter() - t0,
                "cases": [dataclasses.asdict(o) for o in allres]}, indent=1))
        return 0 if all(o.verdict == "ok" for o in allres) else 1
    finally:
        if not (args.keep or args.work):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
