"""The dry run says what the run will do, and the report says what Salesforce holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from salesforce_sandbox import Sandbox

from tests.conftest import base_config, event, newsletter, run_target, singer_lines, user

REAL = {"would_update": "updated", "would_insert": "inserted"}


def u(ouid: str, enabled: bool, at: str) -> dict[str, Any]:
    return user(ouid, purposes=[newsletter(enabled)], updated_at=at)


def e(ouid: str, enabled: bool, at: str) -> dict[str, Any]:
    return event(ouid, purposes=[newsletter(enabled)], created_at=at)


def multi_batch_input() -> str:
    return singer_lines(
        [
            # batch 1
            u("jane@example.com", False, "2024-06-18T10:00:00Z"),
            u("new1@example.com", True, "2024-06-18T10:00:00Z"),
            # batch 2: the values batch 1 wrote, newer
            u("jane@example.com", False, "2024-06-19T10:00:00Z"),
            e("new1@example.com", True, "2024-06-19T10:00:00Z"),
            # batch 3
            u("john@example.com", True, "2024-06-18T10:00:00Z"),
            u("jane@example.com", True, "2024-06-17T10:00:00Z"),
            # batch 4
            e("new1@example.com", False, "2024-06-20T10:00:00Z"),
            user("twin@example.com", purposes=[newsletter(False)]),
            # batch 5: what batch 4 wrote, again
            e("new1@example.com", False, "2024-06-21T10:00:00Z"),
            u("twin@example.com", False, "2024-06-19T00:00:00Z"),
        ]
    )  # fmt: skip


def config(sandbox: Sandbox, report: Path, **extra: Any) -> dict[str, Any]:
    return base_config(
        sandbox,
        report,
        batch_size_rows=2,
        upsert_mode=True,
        insert_defaults={"LastName": "Unknown", "Company": "Unknown"},
        consent_timestamp_field="Didomi_Consent_Updated__c",
        **extra,
    )


def test_dry_run_and_real_run_give_the_same_outcomes_over_several_batches(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    dry = run_target(config(sandbox, tmp_path / "dry.jsonl", dry_run=True), multi_batch_input())
    assert dry.error is None, dry.stderr
    assert "Batch 5:" in dry.stderr
    assert not [r for r in sandbox.records("Lead") if r.get("Email") == "new1@example.com"]
    real = run_target(config(sandbox, tmp_path / "real.jsonl"), multi_batch_input())
    assert real.error is None, real.stderr
    predicted = [REAL.get(line["outcome"], line["outcome"]) for line in dry.report]
    happened = [line["outcome"] for line in real.report]
    assert Counter(predicted) == Counter(happened)
    assert predicted == happened
    assert Counter(happened)["skipped_unchanged"] >= 3  # later batches find earlier writes
    assert [line["fields"] for line in dry.report] == [line["fields"] for line in real.report]


def test_unchanged_record_reports_the_timestamp_salesforce_holds(
    sandbox: Sandbox, report_path: Path, tmp_path: Path
) -> None:
    first = run_target(
        config(sandbox, tmp_path / "first.jsonl"),
        singer_lines([u("jane@example.com", False, "2024-06-18T10:00:00Z")]),
    )
    assert first.line_for("jane@example.com")["outcome"] == "updated"
    # A newer record with the same values: nothing is written, the older stamp stays.
    result = run_target(
        config(sandbox, report_path),
        singer_lines([u("jane@example.com", False, "2024-06-19T10:00:00Z")]),
    )
    line = result.line_for("jane@example.com")
    assert line["outcome"] == "skipped_unchanged"
    assert line["fields"] == {
        "HasOptedOutOfEmail": True,
        "Didomi_Newsletter__c": False,
        "Didomi_Consent_Updated__c": "2024-06-18T10:00:00.000Z",
    }
    jane = next(r for r in sandbox.records("Lead") if r.get("Email") == "jane@example.com")
    assert jane["Didomi_Consent_Updated__c"].startswith("2024-06-18T10:00:00")


def test_updated_record_reports_exactly_what_was_written(
    sandbox: Sandbox, report_path: Path, tmp_path: Path
) -> None:
    run_target(
        config(sandbox, tmp_path / "first.jsonl"),
        singer_lines([u("jane@example.com", False, "2024-06-18T10:00:00Z")]),
    )
    # An event older than what Salesforce holds for the newsletter, but carrying a newer
    # stamp for nothing else: the consent's older choice is not written, nor reported.
    result = run_target(
        config(sandbox, report_path),
        singer_lines([e("jane@example.com", True, "2024-06-17T10:00:00Z")]),
    )
    line = result.line_for("jane@example.com")
    assert line["outcome"] == "skipped_stale"
    assert line["fields"]["Didomi_Newsletter__c"] is False
    assert line["fields"]["Didomi_Consent_Updated__c"] == "2024-06-18T10:00:00.000Z"
