"""Side-by-side training-step throughput: our steps vs Hugging Face ``BertForMaskedLM``.

All contestants run in one process, on the same device, precision, batch shape and optimizer
(AdamW, fused on CUDA), interleaved round-robin so that drift in machine load hits them alike.
Reported: median tokens/s of each and its ratio to the HF MLM step — ratios, not lone times.

    predrecon bench --shape base --batch 256 --seq 128     # GPU (bf16, SDPA)
    predrecon bench --shape tiny --batch 32               # CPU smoke
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .config import ModelConfig, RunConfig, apply_overrides
from .data.tokenizer import SpecialIds
from .presets import get_preset

SHAPES = {  # dim, depth, heads
    "tiny": (128, 4, 4),
    "paper": (512, 6, 8),
    "base": (768, 12, 12),
}
VOCAB = 30522
SPECIAL = SpecialIds(pad_id=0, unk_id=100, cls_id=101, sep_id=102, mask_id=103)


@dataclass
class Contestant:
    name: str
    step: Callable[[], None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _our_cfg(shape: str, kind: str, path: str, seq: int, batch: int) -> RunConfig:
    d, depth, heads = SHAPES[shape]
    cfg = get_preset("base")
    cfg.model = ModelConfig(vocab_size=VOCAB, dim=d, depth=depth, heads=heads, max_len=512, positions="learned")
    return apply_overrides(cfg, [f"objective.kind={kind}", f"objective.student_path={path}",
                                 f"data.seq_len={seq}", f"train.batch_size={batch}", "train.steps=100",
                                 "optim.warmup_steps=0", f"jepa.predictor_dim={max(64, d // 2)}",
                                 f"jepa.predictor_heads={max(1, heads // 2)}", "jepa.predictor_depth=4"])


def _batches(cfg: RunConfig, n: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Full rows of random non-special tokens (no padding), masks from our collator."""
    from .data.masking import Collator

    g = torch.Generator().manual_seed(0)
    col = Collator(cfg.mlm, cfg.jepa, cfg.objective, SPECIAL, VOCAB, seed=0)
    out = []
    B, T = cfg.train.batch_size, cfg.data.seq_len
    for i in range(n):
        ids = torch.randint(1000, VOCAB, (B, T), generator=g)
        ids[:, 0], ids[:, -1] = SPECIAL.cls_id, SPECIAL.sep_id
        rows = {"input_ids": ids, "position_ids": torch.arange(T).expand(B, T).clone(),
                "segment_ids": torch.ones(B, T, dtype=torch.long)}
        out.append({k: v.to(device) for k, v in col(rows, i).items()})
    return out


def _ours(cfg: RunConfig, device: torch.device, amp: torch.dtype | None, n_batches: int) -> Callable[[], None]:
    from .train.loop import build_optimizer
    from .train.meta import HybridModel

    model = HybridModel(cfg, VOCAB, SPECIAL).to(device).train()
    opt = build_optimizer(model, cfg, fused=device.type == "cuda")
    return _stepper(lambda b: model(b)[0], _batches(cfg, n_batches, device), opt, device, amp,
                    after=lambda: model.update_target(0.996))


def _stepper(loss_of: Callable[[dict], torch.Tensor], batches: list[dict], opt: torch.optim.Optimizer,
             device: torch.device, amp: torch.dtype | None, after: Callable[[], None] | None = None
             ) -> Callable[[], None]:
    """One optimizer step per call over ``batches`` in turn: autocast forward, backward, step."""
    it = [0]

    def step() -> None:
        b = batches[it[0] % len(batches)]
        it[0] += 1
        ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
        with ctx:
            loss = loss_of(b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if after is not None:
            after()

    return step


def _hf(shape: str, seq: int, batch: int, device: torch.device, amp: torch.dtype | None,
        n_batches: int) -> Callable[[], None]:
    from transformers import BertConfig, BertForMaskedLM

    d, depth, heads = SHAPES[shape]
    conf = BertConfig(vocab_size=VOCAB, hidden_size=d, num_hidden_layers=depth, num_attention_heads=heads,
                      intermediate_size=4 * d, max_position_embeddings=512, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, attn_implementation="sdpa")
    model = BertForMaskedLM(conf).to(device).train()
    kw = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **kw)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n_batches):
        ids = torch.randint(1000, VOCAB, (batch, seq), generator=g)
        sel = torch.rand(batch, seq, generator=g) < 0.15
        labels = torch.where(sel, ids, torch.full_like(ids, -100))
        inp = torch.where(sel, torch.full_like(ids, SPECIAL.mask_id), ids)
        batches.append({"input_ids": inp.to(device), "attention_mask": torch.ones_like(ids).to(device),
                        "labels": labels.to(device)})
    return _stepper(lambda b: model(**b).loss, batches, opt, device, amp)


def run_bench(shape: str = "tiny", batch: int = 32, seq: int = 128, steps: int = 10, warmup: int = 3,
              rounds: int = 3, device: str = "auto", include_hf: bool = True) -> dict:
    """Measure every contestant; returns {'config':…, 'results': {name: {tokens_per_s, ratio_vs_hf_mlm}}}."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    amp = torch.bfloat16 if dev.type == "cuda" else None
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    contestants: list[Contestant] = []
    if include_hf:
        contestants.append(Contestant("hf_bert_mlm", _hf(shape, seq, batch, dev, amp, 4)))
    for name, kind, path in (("ours_mlm", "mlm", "shared"), ("ours_hybrid_shared", "hybrid", "shared"),
                             ("ours_hybrid_separate", "hybrid", "separate")):
        contestants.append(Contestant(name, _ours(_our_cfg(shape, kind, path, seq, batch), dev, amp, 4)))
    for c in contestants:  # warm-up (allocator, kernels, autotuning)
        for _ in range(warmup):
            c.step()
    _sync(dev)
    times: dict[str, list[float]] = {c.name: [] for c in contestants}
    for _ in range(rounds):
        for c in contestants:
            _sync(dev)
            t = time.perf_counter()
            for _ in range(steps):
                c.step()
            _sync(dev)
            times[c.name].append((time.perf_counter() - t) / steps)
    tokens = batch * seq
    res = {n: {"tokens_per_s": tokens / statistics.median(v), "step_s_median": statistics.median(v),
               "step_s_all": v} for n, v in times.items()}
    base = res.get("hf_bert_mlm", {}).get("tokens_per_s")
    for r in res.values():
        r["ratio_vs_hf_mlm"] = r["tokens_per_s"] / base if base else None
    out = {"config": {"shape": shape, "batch": batch, "seq": seq, "steps": steps, "rounds": rounds,
                      "device": str(dev), "precision": "bf16" if amp else "fp32",
                      "torch": torch.__version__, "threads": torch.get_num_threads()},
           "results": res}
    if dev.type == "cuda":
        out["config"]["gpu"] = torch.cuda.get_device_name(dev)
        out["config"]["max_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return out


def format_table(out: dict) -> str:
    lines = ["| step | tokens/s | × HF BertForMaskedLM |", "|---|---:|---:|"]
    for n, r in out["results"].items():
        ratio = f"{r['ratio_vs_hf_mlm']:.2f}" if r["ratio_vs_hf_mlm"] else "–"
        lines.append(f"| {n} | {r['tokens_per_s']:,.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="predrecon bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    out = run_bench(a.shape, a.batch, a.seq, a.steps, rounds=a.rounds, device=a.device)
    print(json.dumps(out["config"]))
    print(format_table(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0
