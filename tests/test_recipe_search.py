"""benchmarks/recipe_search.py: its quality measures against closed-form cases, and its clocks."""

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "recipe_search", Path(__file__).resolve().parents[1] / "benchmarks" / "recipe_search.py")
rs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rs)


def test_mean_pool_ignores_padding():
    states = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                       [[5.0, 0.0], [-1.0, -1.0], [-1.0, -1.0]]], dtype=np.float32)
    valid = np.array([[True, True, False], [True, False, False]])
    np.testing.assert_allclose(rs.mean_pool(states, valid), [[2.0, 3.0], [5.0, 0.0]])


def test_cosine_spearman_closed_form():
    angles = np.linspace(0.0, np.pi, 7)
    a = np.tile([1.0, 0.0], (7, 1))
    b = np.stack([np.cos(angles), np.sin(angles)], 1) * np.arange(1, 8)[:, None]  # norm must not matter
    gold = -angles  # cosine falls with the angle
    assert rs.cosine_spearman(a, b, gold) == pytest.approx(100.0)
    assert rs.cosine_spearman(a, b, angles) == pytest.approx(-100.0)
    swapped = gold.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # one adjacent swap of 7 ranks: rho = 1 - 6*2/(7*48)
    assert rs.cosine_spearman(a, b, swapped) == pytest.approx(100.0 * (1 - 12 / 336))


def test_probe_accuracy_separable_and_chance():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 5))
    x[:, 0] += 6.0 * (2 * y - 1)  # separable along feature 0
    acc, c = rs.probe_accuracy(x[:300], y[:300], x[300:], y[300:])
    assert acc == pytest.approx(100.0) and c in rs.C_GRID
    noise = rng.normal(size=(400, 5))  # labels independent of the features: near 50 %
    acc0, _ = rs.probe_accuracy(noise[:300], y[:300], noise[300:], y[300:])
    assert 30.0 < acc0 < 70.0


def test_pick_first_checkpoint_at_or_after_each_target():
    times = {s: {"cpu_min": m} for s, m in [(50, 0.9), (100, 1.9), (150, 2.05), (200, 4.8), (250, 5.3)]}
    assert rs.pick(times, [2.0, 5.0]) == [150, 250]
    assert rs.pick(times, [1.95, 2.0, 9.0]) == [150]  # no duplicates; nothing past the end


def test_proc_cpu_s_counts_own_cpu_time():
    import os

    c0, p0 = rs.proc_cpu_s(os.getpid()), time.process_time()
    x = 0
    while time.process_time() - p0 < 0.5:
        x += 1
    c1, p1 = rs.proc_cpu_s(os.getpid()), time.process_time()
    assert (c1 - c0) == pytest.approx(p1 - p0, abs=0.05)
    assert rs.proc_cpu_s(2**22 + 12345) is None  # no such process
