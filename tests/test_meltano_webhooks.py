"""End to end, near real time: the documented receiver takes a webhook, then the real
`meltano run tap-didomi-webhooks target-salesforce-consent` of the repository's meltano.yml
writes it to the sandbox's Lead.

The receiver is started by the docs' own `receiver` block (see tests/test_docs_commands.py);
`follow` is turned off through the environment so that the run reads the spool once and ends.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import bootstrap_module
from tests.meltano_helpers import meltano_sandbox, project_meltano  # noqa: F401 (fixtures)
from tests.test_docs_commands import start_documented_receiver

ROOT = Path(__file__).resolve().parent.parent
NEWSLETTER = "newsletter-Lq3Vx8Rw"

pytestmark = pytest.mark.meltano


def user_updated(email: str, newsletter: bool, updated_at: str) -> dict[str, Any]:
    """A `user.updated` webhook as Didomi sends it: the user before and after the change."""
    user = {"id": "didomi-user-webhook-1", "organization_id": "acme-corp",
            "organization_user_id": email, "created_at": "2024-01-01T00:00:00.000Z",
            "updated_at": updated_at,
            "consents": {"purposes": [{"id": NEWSLETTER, "enabled": newsletter}],
                         "channels": [], "vendors": {"enabled": [], "disabled": []}}}
    return {"type": "user.updated",
            "parameters": {"source": {"id": "event-webhook-1", "created_at": updated_at},
                           "old_entity": {**user, "consents": {"purposes": []}},
                           "new_entity": user}}


def test_meltano_run_tap_didomi_webhooks_into_leads(
    meltano: Path, sandbox: Any, tmp_path: Path
) -> None:
    lead = next(r for r in sandbox.records("Lead")
                if r.get("Email") and not r["IsConverted"] and not r.get("Didomi_Newsletter__c"))
    now = datetime.now(timezone.utc)
    updated_at = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    spool = tmp_path / "didomi-webhooks"
    receiver = start_documented_receiver(spool)
    try:
        answer = requests.post(receiver.url + "/webhooks/didomi", timeout=30,
                               json=user_updated(lead["Email"], True, updated_at),
                               headers={"Authorization": f"Bearer {receiver.token()}"})
        assert answer.status_code == 200 and answer.json()["status"] == "stored", answer.text
    finally:
        assert receiver.stop() == 0, receiver.output[-3000:]

    report = tmp_path / "report.jsonl"
    env = bootstrap_module().meltano_env()
    for key in list(env):  # nothing from the caller's shell may redirect or reconfigure the run
        if key.startswith(("TAP_DIDOMI", "TARGET_SALESFORCE_CONSENT", "SALESFORCE_")):
            del env[key]
    env.update({
        "SALESFORCE_INSTANCE_URL": sandbox.url,
        "SALESFORCE_CLIENT_ID": sandbox.client_id,
        "SALESFORCE_CLIENT_SECRET": sandbox.client_secret,
        "TAP_DIDOMI_WEBHOOKS_WEBHOOK_SPOOL": str(spool),
        "TAP_DIDOMI_WEBHOOKS_FOLLOW": "false",  # read the spool once and end
        "TARGET_SALESFORCE_CONSENT_REPORT_PATH": str(report),
    })
    with bootstrap_module().meltano_project_lock():
        proc = subprocess.run(
            [str(meltano), "--log-level=info", "run", "--full-refresh", "--no-state-update",
             "tap-didomi-webhooks", "target-salesforce-consent"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=600,
        )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert sandbox.client_secret not in output and receiver.client_secret not in output

    after = next(r for r in sandbox.records("Lead") if r["Id"] == lead["Id"])
    assert after["Didomi_Newsletter__c"] is True
    assert str(after["Didomi_Consent_Updated__c"]).startswith(updated_at[:19])
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    assert [(row["organization_user_id"], row["outcome"]) for row in rows] == [
        (lead["Email"], "updated")]
