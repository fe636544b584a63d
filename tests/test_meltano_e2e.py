"""End to end: the real `meltano run tap-didomi target-salesforce-consent` against the sandbox.

Runs in the repository's own Meltano project (meltano.yml): tap-didomi (tap-didomi/) reads the
bundled gzipped sample export (tap-didomi/tap_didomi/sample_export: the sample data of
target_salesforce_consent/sample_data/didomi_users.jsonl in daily partitions, users/ and
events/), the target writes to the sandbox seeded with the bundled seed, and the test checks
the Leads the sandbox holds afterwards and the report the target wrote.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bootstrap_module
from tests.meltano_helpers import meltano_sandbox, project_meltano  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "target_salesforce_consent" / "sample_data"
SAMPLE_EXPORT = ROOT / "tap-didomi" / "tap_didomi" / "sample_export"

pytestmark = pytest.mark.meltano


def _by_email(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        out.setdefault(str(rec.get("Email")).lower(), []).append(rec)
    return out


def _one(records: dict[str, list[dict[str, Any]]], email: str) -> dict[str, Any]:
    assert len(records[email]) == 1, records[email]
    return records[email][0]


def _ts(value: Any) -> str:
    """Normalise a datetime value to `YYYY-MM-DDTHH:MM:SS.mmmZ` for comparison."""
    from datetime import datetime, timezone

    assert value, value
    text = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", str(value).replace("Z", "+00:00"))
    dt = datetime.fromisoformat(text).astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _picklist(value: Any) -> set[str]:
    return {v for v in str(value or "").split(";") if v}


def _run_meltano(meltano: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(meltano),
            "--log-level=info",
            "run",
            "--full-refresh",
            "--no-state-update",
            "tap-didomi",
            "target-salesforce-consent",
            "tap-didomi",
            "target-salesforce-consent-contacts",
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_meltano_run_tap_didomi_into_leads_and_contacts(
    meltano: Path, sandbox: Any, tmp_path: Path
) -> None:
    report = tmp_path / "report.jsonl"
    contacts_report = tmp_path / "report-contacts.jsonl"
    env = bootstrap_module().meltano_env()
    for key in list(env):  # nothing from the caller's shell may redirect or reconfigure the run
        if key.startswith(("TAP_DIDOMI", "TAP_JSONL", "TARGET_SALESFORCE_CONSENT", "SALESFORCE_")):
            del env[key]
    env.update(
        {
            "SALESFORCE_INSTANCE_URL": sandbox.url,
            "SALESFORCE_CLIENT_ID": sandbox.client_id,
            "SALESFORCE_CLIENT_SECRET": sandbox.client_secret,
            "TARGET_SALESFORCE_CONSENT_REPORT_PATH": str(report),
            "TARGET_SALESFORCE_CONSENT_CONTACTS_REPORT_PATH": str(contacts_report),
        }
    )
    before = _by_email(sandbox.records("Lead"))

    with bootstrap_module().meltano_project_lock():
        proc = _run_meltano(meltano, env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    # Secrets never appear in any output.
    assert sandbox.client_secret not in output
    assert sandbox.client_id not in output

    after = _by_email(sandbox.records("Lead"))
    assert sum(map(len, after.values())) == sum(map(len, before.values())), "no Lead created"

    # Jane (v2 user): opts in to marketing, two topics, subscribes to the newsletter.
    jane = _one(after, "jane.doe@example.com")
    assert jane["HasOptedOutOfEmail"] is False
    assert jane["Didomi_Newsletter__c"] is True
    assert _picklist(jane["Didomi_Topics__c"]) == {"News", "Offers"}
    assert _ts(jane["Didomi_Consent_Updated__c"]) == "2025-03-10T09:15:22.120Z"

    # John (v2 user): refuses marketing and unselects every topic: the picklist is cleared;
    # he made no newsletter choice, so that field is left as it was.
    john = _one(after, "john.smith@example.com")
    assert john["HasOptedOutOfEmail"] is True
    assert _picklist(john["Didomi_Topics__c"]) == set()
    assert john["Didomi_Newsletter__c"] is True

    # Maria: an older user record and a newer event, merged into one write.
    maria = _one(after, "maria.garcia@example.com")
    assert maria["Didomi_Newsletter__c"] is False
    assert _picklist(maria["Didomi_Topics__c"]) == {"News", "Events"}
    assert maria["HasOptedOutOfEmail"] is False
    assert _ts(maria["Didomi_Consent_Updated__c"]) == "2025-03-12T16:40:03.512Z"

    # Li: event-shaped record whose OUID differs from the Email only by case.
    assert _one(after, "li.wei@example.com")["Didomi_Newsletter__c"] is True

    # Pierre: legacy v1 event (preferences[].channels[]).
    pierre = _one(after, "pierre.martin@example.com")
    assert pierre["Didomi_SMS_Optin__c"] is True
    assert pierre["Didomi_Newsletter__c"] is True

    # Alex: two duplicate Leads, both written (on_multiple_matches: update_all).
    assert len(after["alex.kim@example.com"]) == 2
    for alex in after["alex.kim@example.com"]:
        assert alex["HasOptedOutOfEmail"] is False
        assert _picklist(alex["Didomi_Topics__c"]) == {"Offers"}

    # Left alone: pending approval, another regulation, converted, unchanged, stale.
    unchanged_fields = [
        "HasOptedOutOfEmail",
        "Didomi_Newsletter__c",
        "Didomi_SMS_Optin__c",
        "Didomi_Topics__c",
        "Didomi_Consent_Updated__c",
        "LastModifiedDate",
    ]
    for email in (
        "anna.schmidt@example.com",
        "sam.taylor@example.com",
        "tom.baker@example.com",
        "emma.wilson@example.com",
        "olivia.brown@example.com",
    ):
        old, new = _one(before, email), _one(after, email)
        for field in unchanged_fields:
            assert new.get(field) == old.get(field), (email, field, old.get(field), new.get(field))

    # The report: one line per input record, with the outcome the sample data implies.
    exported = [
        json.loads(line)
        for part in sorted(SAMPLE_EXPORT.glob("export-id=*/date=*/*/*.json.gz"))
        for line in gzip.decompress(part.read_bytes()).decode().splitlines()
        if line.strip()
    ]
    n_input = len(exported)
    assert n_input == sum(1 for line in (SAMPLE_DIR / "didomi_users.jsonl").open() if line.strip())
    event_ids = {r["id"] for r in exported if isinstance(r.get("user"), dict)}
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    assert len(rows) == n_input
    outcomes: dict[str | None, list[str]] = {}
    for row in rows:
        assert set(row) >= {
            "stream",
            "organization_user_id",
            "didomi_id",
            "timestamp",
            "outcome",
            "salesforce_ids",
            "fields",
            "error",
            "job_id",
        }, row
        # tap-didomi's streams: user objects in `users`, consent events in `events`.
        assert row["stream"] == ("events" if row["didomi_id"] in event_ids else "users"), row
        ouid = row["organization_user_id"]
        outcomes.setdefault(ouid.strip().lower() if ouid else None, []).append(row["outcome"])

    assert outcomes["jane.doe@example.com"] == ["updated"]
    assert outcomes["john.smith@example.com"] == ["updated"]
    assert outcomes["maria.garcia@example.com"] == ["updated", "updated"]
    assert outcomes["li.wei@example.com"] == ["updated"]
    assert outcomes["pierre.martin@example.com"] == ["updated"]
    assert outcomes["alex.kim@example.com"] == ["updated"]
    assert outcomes["unknown.visitor@example.org"] == ["skipped_unmatched"]
    assert outcomes["anna.schmidt@example.com"] == ["skipped_filtered"]  # pending_approval
    assert outcomes["sam.taylor@example.com"] == ["skipped_filtered"]  # regulation cpra
    assert outcomes["tom.baker@example.com"] == ["skipped_converted"]
    assert outcomes["emma.wilson@example.com"] == ["skipped_unchanged"]
    assert outcomes["olivia.brown@example.com"] == ["skipped_stale"]
    assert outcomes[None] == ["skipped_no_ouid"]

    jane_row = next(r for r in rows if r["organization_user_id"] == "jane.doe@example.com")
    assert jane_row["salesforce_ids"] == [jane["Id"]]
    assert jane_row["didomi_id"] == "3f1c2d7e-8a4b-4c1e-9f6a-2b7d5e9c0a11"
    assert jane_row["fields"]["HasOptedOutOfEmail"] is False
    assert jane_row["fields"]["Didomi_Newsletter__c"] is True
    assert set(jane_row["fields"]["Didomi_Topics__c"].split(";")) == {"News", "Offers"}
    assert jane_row["error"] is None and jane_row["job_id"]
    alex_row = next(r for r in rows if r["organization_user_id"] == "alex.kim@example.com")
    alex_ids = sorted(a["Id"] for a in after["alex.kim@example.com"])
    assert sorted(alex_row["salesforce_ids"]) == alex_ids
    unmatched = next(r for r in rows if r["organization_user_id"] == "unknown.visitor@example.org")
    assert unmatched["salesforce_ids"] == []

    # The Contact loader (inherit_from the Lead loader): Tom, whose Lead was converted, is served
    # through his Contact; nobody else has one, and nothing is created (upsert_mode is off).
    contacts = _by_email(sandbox.records("Contact"))
    assert sorted(contacts) == ["claire.dubois@example.com", "tom.baker@example.com"]
    tom = _one(contacts, "tom.baker@example.com")
    assert tom["HasOptedOutOfEmail"] is True
    assert tom["Didomi_Newsletter__c"] is False
    assert _ts(tom["Didomi_Consent_Updated__c"]) == "2025-03-17T08:30:00.000Z"
    claire = _one(contacts, "claire.dubois@example.com")
    assert claire["HasOptedOutOfEmail"] is False and claire["Didomi_Newsletter__c"] is False
    contact_rows = [json.loads(line) for line in contacts_report.read_text().splitlines() if line]
    assert len(contact_rows) == n_input
    by_ouid = {r["organization_user_id"]: r["outcome"] for r in contact_rows}
    assert by_ouid["tom.baker@example.com"] == "updated"
    assert by_ouid["jane.doe@example.com"] == "skipped_unmatched"
    assert by_ouid["anna.schmidt@example.com"] == "skipped_filtered"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
