"""End to end: the real `meltano run tap-salesforce-consent target-didomi` from the repository's
meltano.yml, against the sandbox (a rep's change) and the Didomi emulator (the event it gets)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tap_didomi.emulator import DidomiEmulator

from tests.conftest import bootstrap_module
from tests.meltano_helpers import meltano_sandbox, project_meltano  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.meltano


def test_meltano_run_tap_salesforce_consent_into_didomi(
    meltano: Path, sandbox: Any, tmp_path: Path
) -> None:
    lead = next(r for r in sandbox.records("Lead")
                if r.get("Email") and not r.get("HasOptedOutOfEmail") and not r["IsConverted"])
    rep = sandbox.people()[0]["Id"]
    sandbox.update_as(rep, "Lead", lead["Id"], {"HasOptedOutOfEmail": True})
    report = tmp_path / "didomi-report.jsonl"
    env = bootstrap_module().meltano_env()
    for key in list(env):  # nothing from the caller's shell may redirect or reconfigure the run
        if key.startswith(("TAP_SALESFORCE_CONSENT", "TARGET_DIDOMI", "SALESFORCE_")):
            del env[key]
    with DidomiEmulator() as emu:
        env.update({
            "SALESFORCE_INSTANCE_URL": sandbox.url,
            "SALESFORCE_CLIENT_ID": sandbox.client_id,
            "SALESFORCE_CLIENT_SECRET": sandbox.client_secret,
            "TARGET_DIDOMI_API_URL": emu.url,
            "TARGET_DIDOMI_API_KEY": emu.api_key,
            "TARGET_DIDOMI_API_SECRET": emu.api_secret,
            "TARGET_DIDOMI_ORGANIZATION_ID": emu.organization_id,
            "TARGET_DIDOMI_REPORT_PATH": str(report),
        })
        proc = subprocess.run(
            [str(meltano), "--log-level=info", "run", "--full-refresh", "--no-state-update",
             "tap-salesforce-consent", "target-didomi"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        lines = [json.loads(line) for line in report.read_text().splitlines()]
        assert [(r["organization_user_id"], r["field"], r["outcome"]) for r in lines] == [
            (lead["Email"], "HasOptedOutOfEmail", "sent")]
        (event,) = emu.events
        assert event["user"]["organization_user_id"] == lead["Email"]
        assert event["consents"]["purposes"] == [{"id": "marketing-9HmMn6Vt", "enabled": False}]
        assert event["delegate"]["id"] == rep
    assert emu.api_secret not in proc.stdout + proc.stderr
