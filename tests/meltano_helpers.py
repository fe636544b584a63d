"""Fixtures of the tests that run the real `meltano run` in the repository's project.

A test module imports both (`from tests.meltano_helpers import meltano_sandbox,
project_meltano`) and takes them as `meltano` and `sandbox`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bootstrap_module


@pytest.fixture(scope="module", name="meltano")
def project_meltano() -> Path:
    """The `meltano` of `.venv`, with the project's plugins installed (once per module)."""
    boot = bootstrap_module()
    exe = boot.meltano_executable()
    if exe is None:
        pytest.skip("meltano is not installed next to this Python: run `python3 scripts/test.py`")
    boot.ensure_meltano_plugins(exe, quiet=True)
    return Path(exe)


@pytest.fixture(name="sandbox")
def meltano_sandbox() -> Iterator[Any]:
    """The sandbox with the demo org, listening on a loopback port the plugins can reach."""
    from salesforce_sandbox import DEMO_SEED, Sandbox

    sb = Sandbox(seed=str(DEMO_SEED)).start(host="127.0.0.1", port=0)
    try:
        yield sb
    finally:
        sb.stop()
