"""Shared fixtures. Tests that need ../shared/data skip with a stated reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PREDRECON_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_data_or_skip(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test saying what is missing."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (../shared/data is not present on this machine)")
    return p


@pytest.fixture
def shared_data():
    return shared_data_or_skip
