"""The side-by-side benchmark: ratios follow from the measured step times, every contestant is
reported, and the arithmetic is checked exactly on a fake clock."""

import math
import statistics

import pytest

from predrecon import bench
from predrecon.bench import format_table, run_bench

CONTESTANTS = {"hf_bert_mlm", "hf_bert_mlm_eager", "ours_mlm", "ours_hybrid_shared", "ours_hybrid_separate"}
HF = {"hf_bert_mlm", "hf_bert_mlm_eager"}


def test_ratios_follow_from_step_times_on_a_fake_clock(monkeypatch):
    """Each contestant advances a fake clock by a known step time: the reported tokens/s and
    ratios must be exactly batch*seq/time and t_hf/t_ours."""
    clock = [0.0]
    step_s = {"hf_bert_mlm": 0.004, "hf_bert_mlm_eager": 0.0032, "ours_mlm": 0.002, "ours_hybrid_shared": 0.0025,
              "ours_hybrid_separate": 0.005}
    kinds = {("mlm", "shared"): "ours_mlm", ("hybrid", "shared"): "ours_hybrid_shared",
             ("hybrid", "separate"): "ours_hybrid_separate"}

    def ticker(name):
        def step():
            clock[0] += step_s[name]
        return step

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(bench, "_hf", lambda *a: ticker("hf_bert_mlm" if a[-1] == "sdpa" else "hf_bert_mlm_eager"))
    monkeypatch.setattr(bench, "_ours",
                        lambda cfg, *a, **k: ticker(kinds[cfg.objective.kind, cfg.objective.student_path]))
    out = run_bench("tiny", batch=4, seq=16, steps=3, warmup=1, rounds=2, device="cpu")
    res = out["results"]
    assert set(res) == CONTESTANTS
    for name, r in res.items():
        assert r["step_s_median"] == pytest.approx(step_s[name], rel=1e-9)
        assert r["tokens_per_s"] == pytest.approx(64 / step_s[name], rel=1e-9)
        assert r["ratio_vs_hf_mlm"] == pytest.approx(step_s["hf_bert_mlm"] / step_s[name], rel=1e-9)
        # against the faster of HF's two attention implementations (here the eager one)
        assert r["ratio_vs_best_hf"] == pytest.approx(step_s["hf_bert_mlm_eager"] / step_s[name], rel=1e-9)
    assert res["ours_mlm"]["ratio_vs_hf_mlm"] == pytest.approx(2.0)
    table = format_table(out)
    assert "| ours_mlm | 32,000 | 2.00 | 1.60 |" in table and "| ours_hybrid_separate | 12,800 | 0.80 | 0.64 |" in table


def test_without_hf_there_is_no_ratio(monkeypatch):
    monkeypatch.setattr(bench, "_ours", lambda *a, **k: (lambda: None))
    out = run_bench("tiny", batch=2, seq=8, steps=1, warmup=0, rounds=1, device="cpu", include_hf=False)
    assert set(out["results"]) == CONTESTANTS - HF
    assert all(r["ratio_vs_hf_mlm"] is None and r["ratio_vs_best_hf"] is None for r in out["results"].values())
    assert format_table(out).count("| – | – |") == 3


def test_real_run_is_consistent_and_reports_every_contestant(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setitem(bench.SHAPES, "debug", (32, 2, 2))  # a debug shape and vocabulary: seconds, not minutes
    monkeypatch.setattr(bench, "VOCAB", 2048)
    out = run_bench("debug", batch=2, seq=32, steps=1, warmup=1, rounds=2, device="cpu")
    res = out["results"]
    assert set(res) == CONTESTANTS
    assert out["config"]["batch"] == 2 and out["config"]["seq"] == 32 and out["config"]["rounds"] == 2
    hf = res["hf_bert_mlm"]
    for name, r in res.items():
        assert len(r["step_s_all"]) == 2 and all(t > 0 and math.isfinite(t) for t in r["step_s_all"])
        assert r["step_s_median"] == statistics.median(r["step_s_all"])
        assert r["tokens_per_s"] == pytest.approx(64 / r["step_s_median"], rel=1e-12)
        # the ratio is computed from the two measured medians, not set to a constant
        assert r["ratio_vs_hf_mlm"] == pytest.approx(hf["step_s_median"] / r["step_s_median"], rel=1e-12)
        fast = min(res[n]["step_s_median"] for n in HF)
        assert r["ratio_vs_best_hf"] == pytest.approx(fast / r["step_s_median"], rel=1e-12)
        assert f"| {name} | {r['tokens_per_s']:,.0f} | {r['ratio_vs_hf_mlm']:.2f} |" in format_table(out)
        peak = out["config"]["peak_flops"]["fp32"]["tflops"] * 1e12
        assert r["hfu"] == pytest.approx(r["tokens_per_s"] * r["flops_per_token_counted"] / peak, rel=1e-12)
    # HF scores every position (dense logits), our MLM head only the masked ones; the hybrid adds
    # the target pass and the predictor to our MLM step
    counted = {n: r["flops_per_token_counted"] for n, r in res.items()}
    assert counted["hf_bert_mlm"] > counted["ours_mlm"] > 0
    # torch's fused CPU kernel (SDPA) recomputes the scores in its backward: one (T x d) product
    # per token and layer more than the eager attention, 2 layers of width 32 over 32 tokens
    assert counted["hf_bert_mlm"] - counted["hf_bert_mlm_eager"] == 2 * (2 * 32 * 32)
    assert counted["ours_hybrid_separate"] > counted["ours_hybrid_shared"] > counted["ours_mlm"]


def test_loop_contestants_count_real_tokens_on_a_fake_clock(monkeypatch, tmp_path):
    """A loop contestant reports the real tokens its steps returned: tokens/s = mean tokens per
    step / median step time, and the ratio uses that figure."""
    clock = [0.0]
    loop_tokens = iter([30, 50] * 100)  # varying real tokens per step (padding in the rows)

    def ticker(dt, toks=None):
        def step():
            clock[0] += dt
            return next(toks) if toks is not None else None
        return step

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(bench, "_hf", lambda *a, **k: ticker(0.004))
    monkeypatch.setattr(bench, "_ours", lambda *a, **k: ticker(0.002))
    monkeypatch.setattr(bench, "_loop", lambda cfg, *a, **k: ticker(0.001 if cfg.objective.kind == "mlm" else 0.002,
                                                                      loop_tokens))
    out = run_bench("tiny", batch=4, seq=16, steps=2, warmup=0, rounds=3, device="cpu", loop=True,
                    data=str(tmp_path), precisions=("fp32",))
    res = out["results"]
    assert set(res) == CONTESTANTS | {"loop_mlm", "loop_hybrid_shared"}
    assert res["loop_mlm"]["tokens_per_step"] == pytest.approx(40.0) == res["loop_hybrid_shared"]["tokens_per_step"]
    assert res["loop_mlm"]["tokens_per_s"] == pytest.approx(40 / 0.001)
    assert res["loop_hybrid_shared"]["ratio_vs_hf_mlm"] == pytest.approx((40 / 0.002) / (64 / 0.004))
    assert res["ours_mlm"]["tokens_per_step"] == 64


def test_two_precisions_are_interleaved_and_compared_within_a_precision(monkeypatch):
    clock = [0.0]
    order = []

    def fake(name_of):
        def make(*a, **k):
            amp = a[3] if len(a) > 3 else None  # (cfg, device, amp, n) for _ours; (.., device, amp, n) for _hf
            name = name_of(a) + ("@bf16" if amp is not None else "@fp32")
            dt = {"hf@fp32": 0.004, "hf@bf16": 0.002, "ours@fp32": 0.002, "ours@bf16": 0.0005}[name]

            def step():
                order.append(name)
                clock[0] += dt
            return step
        return make

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(bench, "_hf", lambda shape, seq, batch, dev, amp, n, attn: fake(lambda a: "hf")(0, 0, 0, amp))
    monkeypatch.setattr(bench, "_ours", lambda cfg, dev, amp, n: fake(lambda a: "ours")(0, 0, 0, amp))
    out = run_bench("tiny", batch=4, seq=16, steps=1, warmup=0, rounds=2, device="cpu", precisions=("fp32", "bf16"))
    res = out["results"]
    assert res["ours_mlm@fp32"]["ratio_vs_hf_mlm"] == pytest.approx(2.0)
    assert res["ours_mlm@bf16"]["ratio_vs_hf_mlm"] == pytest.approx(4.0)
    assert res["hf_bert_mlm@bf16"]["precision"] == "bf16"
    # one counted step each, then every round visits every contestant once: rounds are
    # interleaved, not one contestant after another
    rounds = order[10:]
    assert order[:10] == rounds[:10] == rounds[10:] and len(set(order[:10])) == 2 * 2


def test_real_loop_contestant_runs_train_step_and_counts_real_tokens(monkeypatch, tmp_path):
    """The loop contestant calls the training loop's step function once per step, over the
    dataset's rows; its real tokens per step are the non-padding tokens of those rows."""
    pytest.importorskip("transformers")
    import torch

    from predrecon.config import DataConfig
    from predrecon.data.batching import make_batcher
    from predrecon.data.shards import TokenDataset
    from predrecon.train import step as step_mod

    from fixtures_data import build_tiny, make_docs

    build_tiny(tmp_path / "ds", docs=make_docs(40, seed=3))
    calls = []
    real = step_mod.train_step

    def counting(ctx, s):
        calls.append(s)
        return real(ctx, s)

    monkeypatch.setattr(step_mod, "train_step", counting)
    monkeypatch.setitem(bench.SHAPES, "debug", (32, 2, 2))
    monkeypatch.setattr(bench, "VOCAB", 2048)
    monkeypatch.setattr(bench, "LOOP_KINDS", (("loop_hybrid_shared", "hybrid", "shared"),))
    monkeypatch.setattr(bench, "STEP_KINDS", ())
    out = run_bench("debug", batch=2, seq=32, steps=2, warmup=1, rounds=2, device="cpu", include_hf=False,
                    loop=True, data=str(tmp_path / "ds"), precisions=("fp32",))
    r = out["results"]["loop_hybrid_shared"]
    assert calls == list(range(6))  # counted step + warm-up + 2 rounds x 2 steps, steps 0..5 in order
    ds = TokenDataset(tmp_path / "ds")
    b = make_batcher(ds, DataConfig(path=str(tmp_path / "ds"), seq_len=32), "train", 2, 0)
    per_step = [int(next(b)["segment_ids"].ne(0).sum()) for _ in range(6)]
    assert r["tokens_per_step"] == pytest.approx(sum(per_step[2:]) / 4)
    assert r["tokens_per_step"] < 64 or all(n == 64 for n in per_step)
    assert r["tokens_per_s"] == pytest.approx(r["tokens_per_step"] / r["step_s_median"], rel=1e-12)
    assert r["mfu"] is not None and 0 < r["mfu"] < 1
    assert torch.isfinite(torch.tensor(r["tokens_per_s"]))


def test_compiled_contestants_are_built_compiled(monkeypatch):
    seen = []

    def fake_ours(cfg, dev, amp, n, compiled=False):
        seen.append((cfg.objective.kind, cfg.objective.student_path, compiled))
        return lambda: None

    monkeypatch.setattr(bench, "_ours", fake_ours)
    out = run_bench("tiny", batch=2, seq=8, steps=1, warmup=0, rounds=1, device="cpu", include_hf=False,
                    compiled=True, precisions=("fp32",))
    assert set(out["results"]) == CONTESTANTS - HF | {"ours_mlm+compile", "ours_hybrid_shared+compile"}
    assert sorted(seen) == sorted([("mlm", "shared", False), ("hybrid", "shared", False), ("hybrid", "separate", False),
                                   ("mlm", "shared", True), ("hybrid", "shared", True)])


def test_counted_flops_match_the_closed_form_of_a_linear_step():
    """One step of ``y = x @ w`` (x 4 x 8 without gradient, w 8 x 16 trained): forward 2*4*8*16
    FLOPs, backward the same again for w's gradient (none for x); 4 tokens."""
    import torch

    w = torch.randn(8, 16, requires_grad=True)
    x = torch.randn(4, 8)

    def step():
        (x @ w).sum().backward()
        return 4

    assert bench.counted_flops_per_token(step, 99) == 2 * (2 * 4 * 8 * 16) / 4
    x.requires_grad_(True)  # now x's gradient too: a third product of the same size
    assert bench.counted_flops_per_token(step, 99) == 3 * (2 * 4 * 8 * 16) / 4

    def forward_only():
        with torch.no_grad():
            x @ w

    assert bench.counted_flops_per_token(forward_only, 2) == 2 * 4 * 8 * 16 / 2  # None returned: 2 tokens


def test_the_mfu_formula_matches_the_flops_our_mlm_step_executes(monkeypatch):
    """``matmul_flops_per_token`` (MFU's numerator) against torch's FLOP counter over one real
    MLM step: within 2 % (it leaves out nothing that a matmul does; a formula without the
    backward would be 3x off, one without the decoder 14 %)."""
    from predrecon.experiment import matmul_flops_per_token

    monkeypatch.setitem(bench.SHAPES, "debug", (64, 2, 2))
    monkeypatch.setattr(bench, "VOCAB", 2048)
    cfg = bench._our_cfg("debug", "mlm", "shared", 64, 4)
    import torch

    counted = bench.counted_flops_per_token(bench._ours(cfg, torch.device("cpu"), None, 2), 4 * 64)
    assert counted == pytest.approx(matmul_flops_per_token(cfg, "mlm"), rel=0.02)


class FakeMemory:
    """A CUDA memory meter over a counter that the fake contestants move."""

    def __init__(self):
        self.now = self.high = 0

    def alloc(self, n):
        self.now += n
        self.high = max(self.high, self.now)

    def allocated(self):
        return self.now

    def reset_peak(self):
        self.high = self.now

    def peak(self):
        return self.high


def test_peak_memory_is_each_contestants_own(monkeypatch):
    """Every contestant's model stays allocated while the others run: its peak must be its own
    resident memory (built + left by the first step) plus its own steps' transient high-water
    mark, not the sum of every model on the device."""
    mem = FakeMemory()
    GiB = 2**30
    # name -> (allocated when built, left allocated by its first step, transient per step)
    plan = {"hf_bert_mlm": (3, 2, 10), "hf_bert_mlm_eager": (3, 2, 9), "ours_mlm": (4, 1, 5),
            "ours_hybrid_shared": (6, 2, 7), "ours_hybrid_separate": (6, 2, 8)}
    kinds = {("mlm", "shared"): "ours_mlm", ("hybrid", "shared"): "ours_hybrid_shared",
             ("hybrid", "separate"): "ours_hybrid_separate"}

    def contestant(name):
        built, first, transient = plan[name]
        mem.alloc(built * GiB)
        state = {"first": True}

        def step():
            if state["first"]:  # optimizer state appears at the first step and stays
                mem.alloc(first * GiB)
                state["first"] = False
            mem.alloc(transient * GiB)  # activations, gradients: freed by the end of the step
            mem.alloc(-transient * GiB)
        return step

    monkeypatch.setattr(bench, "_memory_meter", lambda dev: mem)
    monkeypatch.setattr(bench, "_hf", lambda *a: contestant("hf_bert_mlm" if a[-1] == "sdpa" else "hf_bert_mlm_eager"))
    monkeypatch.setattr(bench, "_ours", lambda cfg, *a, **k: contestant(kinds[cfg.objective.kind,
                                                                                 cfg.objective.student_path]))
    out = run_bench("tiny", batch=2, seq=8, steps=2, warmup=1, rounds=2, device="cpu")
    for name, (built, first, transient) in plan.items():
        assert out["results"][name]["peak_mem_gib"] == pytest.approx(built + first + transient), name
    assert "| ours_mlm |" in format_table(out) and " 10.00 |" in format_table(out)
    # the run's own high-water mark: every model resident (31 GiB) plus the largest step (HF's 10);
    # read after the per-contestant resets it was only the last contestant's round (31 + 8)
    assert out["config"]["max_mem_gib"] == pytest.approx(sum(b + f for b, f, _ in plan.values()) + 10)


@pytest.mark.parametrize("clip,expected", [(1.0, 9.0), (0.0, -10.0)])
def test_hf_step_clips_gradients_as_the_hf_trainer_does(clip, expected):
    """HF's contestant clips to norm 1 like ``Trainer`` (and like our step): on loss p**2 from
    p = 10 the gradient 20 becomes 1, so one SGD step of lr 1 lands at 9 (unclipped: -10)."""
    import torch

    p = torch.nn.Parameter(torch.tensor([10.0]))
    opt = torch.optim.SGD([p], lr=1.0)
    step = bench._stepper(lambda b: (p ** 2).sum(), [{}], opt, torch.device("cpu"), None, clip=clip)
    step()
    assert p.item() == pytest.approx(expected)
    assert bench.HF_MAX_GRAD_NORM == 1.0 and bench._stepper.__defaults__[-1] == bench.HF_MAX_GRAD_NORM


@pytest.mark.parametrize("name,tflops", [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
                                         ("NVIDIA H100 NVL", 835.0), ("NVIDIA H200", 989.4),
                                         ("NVIDIA A100-SXM4-80GB", 312.0)])
def test_gpu_peak_follows_the_board(monkeypatch, name, tflops):
    """A PCIe H100 has 756 dense bf16 TFLOP/s, not the SXM board's 989: MFU must not be 24 % low."""
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    peak, source = bench.peak_flops(torch.device("cuda", 0), torch.bfloat16)
    assert peak == pytest.approx(tflops * 1e12) and "spec" in source
