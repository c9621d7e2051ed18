import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predrecon.config import ConfigError, RunConfig, apply_overrides
from predrecon.presets import PRESETS, apply_faithful, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate_and_round_trip(name):
    cfg = get_preset(name).validate()
    again = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert again.to_dict() == cfg.to_dict()


def test_overrides_parse_types():
    cfg = apply_overrides(get_preset("debug"), ["train.steps=7", "optim.lr=0.01", "mlm.span=true",
                                                 "jepa.target_scale=0.1,0.3", "objective.kind=mlm"])
    assert cfg.train.steps == 7 and cfg.optim.lr == 0.01 and cfg.mlm.span is True
    assert cfg.jepa.target_scale == (0.1, 0.3) and cfg.objective.kind == "mlm"


@pytest.mark.parametrize("ov, key", [
    (["optim.warmup_steps=100"], "optim.warmup_steps"),   # warm-up >= total steps (20)
    (["train.stepz=3"], "train.stepz"),
    (["nosection.x=1"], "nosection.x"),
    (["train.steps=abc"], "train.steps"),
    (["model.heads=3"], "model.heads"),                    # 32 not divisible by 3
    (["objective.balancer_x=1"], "objective.balancer_x"),
    (["jepa.target_scale=0.5,0.2"], "jepa.target_scale"),
    (["data.seq_len=1000"], "data.seq_len"),               # > model.max_len
    (["mlm.prob=1.5"], "mlm.prob"),
])
def test_bad_values_name_the_key(ov, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(get_preset("debug"), ov)


def test_faithful_switches_every_quirk():
    cfg = apply_faithful(get_preset("paper")).validate()
    assert cfg.faithful and cfg.data.mode == "document"
    assert cfg.jepa.size_reference == "max_tokens" and cfg.jepa.max_tokens == 512
    assert not cfg.jepa.context_excludes_targets and cfg.jepa.context_corrupted
    assert cfg.jepa.loss_over_padding and cfg.objective.student_path == "separate"
    assert cfg.objective.balancer == "sigmoid" and not cfg.objective.attention_mask
    default = get_preset("paper")
    assert default.objective.attention_mask and default.jepa.context_excludes_targets


def _keys():
    d = get_preset("debug").to_dict()
    return sorted(f"{s}.{k}" for s, sub in d.items() if isinstance(sub, dict) for k in sub)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(_keys()),
       raw=st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1", "1e309", "0.5", "1,2", "1,2,3", "", "x",
                                      "true", "cuda:0", "1e-9", "64", "65", "-0.0"]),
                     st.text(max_size=12)))
def test_any_override_is_applied_or_refused_naming_the_key(key, raw):
    """Every key, any value: a validated config with only finite floats, or ConfigError naming the key."""
    try:
        cfg = apply_overrides(get_preset("debug"), [f"{key}={raw}"])
    except ConfigError as e:  # names this key, or the key it conflicts with (e.g. warm-up vs steps)
        named = str(e).split(":", 1)[0]
        assert named in _keys() or named in get_preset("debug").to_dict(), str(e)
        return
    for sec in cfg.to_dict().values():
        if isinstance(sec, dict):
            for v in sec.values():
                for x in (v if isinstance(v, (list, tuple)) else [v]):
                    assert not isinstance(x, float) or math.isfinite(x)
