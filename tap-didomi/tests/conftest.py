"""Fixtures of tap-didomi's tests (helpers live in didomi_tap_helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from didomi_tap_helpers import TapRunner


@pytest.fixture()
def run_tap(tmp_path: Path) -> TapRunner:
    workdir = tmp_path / "runs"
    workdir.mkdir()
    return TapRunner(workdir)
