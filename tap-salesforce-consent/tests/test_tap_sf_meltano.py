"""End to end in the repository's Meltano project: `meltano invoke tap-salesforce-consent`
reads a rep's change, and after `meltano run tap-didomi target-salesforce-consent` wrote the
forward pipeline's choices, still reads only that change (no echo)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from salesforce_sandbox import DEMO_SEED, Sandbox

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.meltano


def _bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bootstrap", ROOT / "scripts" / "_bootstrap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def meltano() -> Path:
    boot = _bootstrap()
    exe = boot.meltano_executable()
    assert exe is not None, "meltano is not installed next to this Python: run scripts/test.py"
    boot.ensure_meltano_plugins(exe, quiet=True)
    return Path(exe)


@pytest.fixture()
def demo_org() -> Iterator[Sandbox]:
    with Sandbox(seed=str(DEMO_SEED)) as sb:
        yield sb


def _env(sb: Sandbox, tmp_path: Path) -> dict[str, str]:
    env: dict[str, str] = _bootstrap().meltano_env()
    for key in list(env):
        if key.startswith(("TAP_", "TARGET_", "SALESFORCE_")):
            del env[key]
    env.update(
        SALESFORCE_INSTANCE_URL=sb.url,
        SALESFORCE_CLIENT_ID=sb.client_id,
        SALESFORCE_CLIENT_SECRET=sb.client_secret,
        TARGET_SALESFORCE_CONSENT_REPORT_PATH=str(tmp_path / "report.jsonl"),
    )
    return env


def _meltano(meltano: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(meltano), "--log-level=warning", *args],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _records(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return [m["record"] for m in lines if m.get("type") == "RECORD"]


def test_meltano_invoke_reads_a_reps_change_and_never_the_pipelines_own(
    meltano: Path, demo_org: Sandbox, tmp_path: Path
) -> None:
    env = _env(demo_org, tmp_path)
    jane = next(r for r in demo_org.records("Lead") if r["Email"] == "jane.doe@example.com")
    rep = str(demo_org.people()[0]["Id"])
    demo_org.update_as(
        rep, "Lead", jane["Id"], {"HasOptedOutOfEmail": not jane["HasOptedOutOfEmail"]}
    )

    first = _records(_meltano(meltano, env, "invoke", "tap-salesforce-consent"))
    assert [(r["organization_user_id"], r["field"], r["changed_by_id"]) for r in first] == [
        ("jane.doe@example.com", "HasOptedOutOfEmail", rep)
    ]

    forward = _meltano(
        meltano, env, "run", "--full-refresh", "--no-state-update",
        "tap-didomi", "target-salesforce-consent",
    )  # fmt: skip
    assert forward.returncode == 0, forward.stderr[-4000:]
    own = [r for r in demo_org.history("Lead") if r["CreatedById"] == demo_org.integration_user_id]
    assert own, "the forward pipeline changed no tracked field"

    again = _records(_meltano(meltano, env, "invoke", "tap-salesforce-consent"))
    assert [r["history_id"] for r in again] == [r["history_id"] for r in first]
