"""The side-by-side benchmark runs every contestant and reports ratios to the HF baseline."""

import pytest

from predrecon.bench import format_table, run_bench


def test_bench_reports_ratios_against_hf():
    pytest.importorskip("transformers")
    out = run_bench("tiny", batch=2, seq=32, steps=1, warmup=1, rounds=1, device="cpu")
    res = out["results"]
    assert set(res) == {"hf_bert_mlm", "ours_mlm", "ours_hybrid_shared", "ours_hybrid_separate"}
    assert res["hf_bert_mlm"]["ratio_vs_hf_mlm"] == pytest.approx(1.0)
    for r in res.values():
        assert r["tokens_per_s"] > 0 and r["ratio_vs_hf_mlm"] > 0
    assert "× HF BertForMaskedLM" in format_table(out)
