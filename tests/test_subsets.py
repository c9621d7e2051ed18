"""Reported / train subsets are seeded stratified samples, never the first rows."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from predrecon.eval.tasks.registry import Split, get_task, stratified_indices, stratified_subset


@settings(max_examples=80, deadline=None)
@given(hst.lists(hst.integers(0, 6), min_size=1, max_size=200), hst.integers(1, 220), hst.integers(0, 3))
def test_stratified_indices_keep_every_stratum_and_shares(keys, n, seed):
    keys = np.array(keys)
    idx = stratified_indices(keys, n, seed)
    m = min(n, len(keys))
    assert len(idx) == m and np.all(np.diff(idx) > 0)  # sorted, without replacement
    got, full = Counter(keys[idx].tolist()), Counter(keys.tolist())
    if m >= len(full):
        assert set(got) == set(full)  # no stratum disappears
    for k, c in full.items():  # proportional allocation up to rounding and the keep-one rule
        assert abs(got.get(k, 0) - m * c / len(keys)) <= len(full) + 1
    np.testing.assert_array_equal(idx, stratified_indices(keys, n, seed))  # seeded


def test_stratified_subset_is_not_the_first_rows_and_keeps_genres():
    # a genre-sorted split (as STS-B dev): the first 100 rows hold one genre only
    genres = ["captions"] * 100 + ["forums"] * 60 + ["news"] * 40
    sp = Split([f"s{i}" for i in range(200)], np.linspace(0, 5, 200).astype(np.float32),
               [f"t{i}" for i in range(200)], genres)
    sub = stratified_subset(sp, 100)
    assert Counter(sub.groups) == {"captions": 50, "forums": 30, "news": 20}
    assert sub.text_a != sp.text_a[:100]
    # without a genre column: score bins; classes for integer labels
    no_genre = Split(sp.text_a, sp.labels, sp.text_b)
    assert len(set(np.floor(stratified_subset(no_genre, 10).labels))) >= 5
    cls = Split([str(i) for i in range(90)], np.array([0] * 80 + [1] * 5 + [2] * 5))
    assert set(stratified_subset(cls, 12).labels.tolist()) == {0, 1, 2}
    assert stratified_subset(cls, None) is cls and stratified_subset(cls, 500) is cls
    with pytest.raises(ValueError, match=">= 1"):
        stratified_subset(cls, 0)


def test_stsb_loader_subset_keeps_every_genre(tmp_path):
    d = tmp_path / "STS-B"
    d.mkdir()
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    rows = [f"{i}\t{g}\tf\t2012\t{i}\tnone\tnone\ta {i}\tb {i}\t{(i % 6) * 0.8:.1f}\n"
            for i, g in enumerate(["main-captions"] * 60 + ["main-forums"] * 30 + ["main-news"] * 10)]
    for split in ("train", "dev"):
        (d / f"{split}.tsv").write_text(head + "".join(rows))
    task = get_task("stsb", glue_dir=tmp_path, max_examples=20)
    assert Counter(task.dev.groups) == {"main-captions": 12, "main-forums": 6, "main-news": 2}
    assert "stratified" in task.notes[0]
