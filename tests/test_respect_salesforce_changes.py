"""A consent a person changed in Salesforce after the Didomi choice is not overwritten.

Against the sandbox over HTTP: people write "as themselves" (``update_as``), which leaves
field history rows naming them; the target's own writes name the integration user.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.salesforce.client import SalesforceClient
from tests.conftest import SEED, base_config, run_target, singer_lines, user

JANE = "jane@example.com"
TRACKED = ["HasOptedOutOfEmail", "Didomi_Newsletter__c"]


def seed(**lead_options: Any) -> dict[str, Any]:
    data = copy.deepcopy(SEED)
    data["objects"]["Lead"].update({"history_tracked_fields": TRACKED, **lead_options})
    return data


@pytest.fixture
def org() -> Iterator[Sandbox]:
    with Sandbox(seed=seed()) as sb:
        yield sb


def lead_id(sb: Sandbox, email: str) -> str:
    return str(next(r["Id"] for r in sb.records("Lead") if r["Email"] == email))


def lead(sb: Sandbox, email: str) -> dict[str, Any]:
    return sb.record("Lead", lead_id(sb, email))


def rep(sb: Sandbox) -> str:
    return str(sb.people()[0]["Id"])


def opt_out(sb: Sandbox, *, at: str) -> None:
    """A rep ticks Email Opt Out on Jane's Lead at `at`."""
    sb.update_as(rep(sb), "Lead", lead_id(sb, JANE), {"HasOptedOutOfEmail": True}, at=at)


def opted_in(at: str, ouid: str = JANE) -> dict[str, Any]:
    """A Didomi record: newsletter on (HasOptedOutOfEmail false, Didomi_Newsletter__c true)."""
    return user(ouid, purposes=[{"id": "newsletter", "enabled": True}], updated_at=at)


def history_queries(sb: Sandbox) -> list[Any]:
    return [r for r in sb.requests if r.kind == "query" and "History" in r.path + r.query]


def test_a_reps_opt_out_after_an_older_didomi_record_is_kept(
    org: Sandbox, report_path: Path
) -> None:
    opt_out(org, at="2025-03-10T09:00:00Z")
    result = run_target(
        base_config(org, report_path), singer_lines([opted_in("2025-03-01T00:00:00Z")])
    )
    assert result.error is None, result.stderr
    line = result.line_for(JANE)
    jane = lead(org, JANE)
    # The opt-out stands; the newsletter field, which nobody changed, is written.
    assert jane["HasOptedOutOfEmail"] is True
    assert jane["Didomi_Newsletter__c"] is True
    assert line["outcome"] == "updated"
    assert line["salesforce_kept"] == {jane["Id"]: ["HasOptedOutOfEmail"]}
    assert line["fields"] == {"HasOptedOutOfEmail": True, "Didomi_Newsletter__c": True}
    assert "respect_salesforce_changes is on (the field history can be read)" in result.stderr


def test_a_newer_didomi_record_overwrites_the_reps_change(org: Sandbox, report_path: Path) -> None:
    opt_out(org, at="2025-03-10T09:00:00Z")
    result = run_target(
        base_config(org, report_path), singer_lines([opted_in("2025-03-10T09:00:01Z")])
    )
    assert result.error is None, result.stderr
    line = result.line_for(JANE)
    assert line["outcome"] == "updated" and line["salesforce_kept"] == {}
    assert lead(org, JANE)["HasOptedOutOfEmail"] is False


def test_nothing_left_to_write_is_skipped_salesforce_newer_and_nothing_is_written(
    org: Sandbox, report_path: Path
) -> None:
    jane_id = lead_id(org, JANE)
    # The newsletter box was ticked, then the rep unticked it and ticked Email Opt Out.
    org.update_as(
        rep(org), "Lead", jane_id, {"Didomi_Newsletter__c": True}, at="2025-03-10T08:00:00Z"
    )
    changed = {"HasOptedOutOfEmail": True, "Didomi_Newsletter__c": False}
    org.update_as(rep(org), "Lead", jane_id, changed, at="2025-03-10T09:00:00Z")
    config = base_config(org, report_path, consent_timestamp_field="Didomi_Consent_Updated__c")
    result = run_target(config, singer_lines([opted_in("2025-03-01T00:00:00Z")]))
    assert result.error is None, result.stderr
    line = result.line_for(JANE)
    assert line["outcome"] == "skipped_salesforce_newer"
    assert line["salesforce_kept"] == {jane_id: ["Didomi_Newsletter__c", "HasOptedOutOfEmail"]}
    assert line["fields"] == {
        "HasOptedOutOfEmail": True,
        "Didomi_Newsletter__c": False,
        "Didomi_Consent_Updated__c": None,
    }
    assert org.ingest_jobs() == []
    assert lead(org, JANE)["Didomi_Consent_Updated__c"] is None


def test_dry_run_reports_the_same_and_writes_nothing(org: Sandbox, report_path: Path) -> None:
    opt_out(org, at="2025-03-10T09:00:00Z")
    records = singer_lines(
        [opted_in("2025-03-01T00:00:00Z"), opted_in("2025-03-01T00:00:00Z", "john@example.com")]
    )
    result = run_target(base_config(org, report_path, dry_run=True), records)
    assert result.error is None, result.stderr
    assert result.line_for(JANE)["outcome"] == "would_update"
    assert result.line_for(JANE)["salesforce_kept"] == {lead_id(org, JANE): ["HasOptedOutOfEmail"]}
    assert org.ingest_jobs() == []
    # Once the rep has also set the newsletter box, nothing is left to write.
    org.update_as(rep(org), "Lead", lead_id(org, JANE), {"Didomi_Newsletter__c": True})
    again = run_target(base_config(org, report_path, dry_run=True), records)
    assert again.line_for(JANE)["outcome"] == "skipped_salesforce_newer"


def test_the_pipelines_own_writes_are_not_taken_for_a_persons_change(
    org: Sandbox, report_path: Path
) -> None:
    # The target writes the opt-out (a history row naming the integration user, stamped now)...
    first = run_target(
        base_config(org, report_path),
        singer_lines(
            [
                user(
                    JANE,
                    purposes=[{"id": "newsletter", "enabled": False}],
                    updated_at="2025-03-01T00:00:00Z",
                )
            ]
        ),
    )
    assert first.line_for(JANE)["outcome"] == "updated"
    rows = org.history("Lead", lead_id(org, JANE))
    assert rows and {r["CreatedById"] for r in rows} == {org.integration_user_id}
    # ...and a Didomi choice made after the first one but before that write is still written:
    # the history newer than it is the pipeline's own.
    second = run_target(
        base_config(org, report_path), singer_lines([opted_in("2025-03-02T00:00:00Z")])
    )
    assert second.error is None, second.stderr
    assert second.line_for(JANE)["outcome"] == "updated"
    assert second.line_for(JANE)["salesforce_kept"] == {}
    assert lead(org, JANE)["HasOptedOutOfEmail"] is False


def test_history_is_read_only_for_records_about_to_change(org: Sandbox, report_path: Path) -> None:
    # Jane already holds the choice (unchanged), nobody matches the other: no history query
    # beyond the one at start.
    jane_id = lead_id(org, JANE)
    org.update_as(
        rep(org), "Lead", jane_id, {"Didomi_Newsletter__c": True}, at="2025-03-10T09:00:00Z"
    )
    result = run_target(
        base_config(org, report_path),
        singer_lines(
            [
                opted_in("2025-03-01T00:00:00Z"),
                opted_in("2025-03-01T00:00:00Z", "nobody@example.com"),
            ]
        ),
    )
    assert result.outcomes == {JANE: "skipped_unchanged", "nobody@example.com": "skipped_unmatched"}
    assert len(history_queries(org)) == 1  # the check at start


def many_leads(sb: Sandbox, n: int) -> list[str]:
    return list(
        sb.add_records(
            "Lead",
            [
                {"LastName": f"P{i}", "Company": "Acme", "Email": f"p{i}@example.com"}
                for i in range(n)
            ],
        )
    )


def test_a_big_batch_reads_the_changes_since_its_oldest_choice_in_one_query(
    org: Sandbox, report_path: Path
) -> None:
    # 1,100 records to change would take two queries by Id; one query of the changes since
    # the oldest choice's second finds the same people's changes.
    ids = many_leads(org, 1100)
    person = rep(org)
    org.update_as(person, "Lead", ids[5], {"HasOptedOutOfEmail": True},
                  at="2025-03-01T00:00:00.400Z")  # within the choice's second: stands
    org.update_as(person, "Lead", ids[6], {"HasOptedOutOfEmail": True},
                  at="2025-02-28T23:59:59.900Z")  # before it: the choice is newer
    before = len(history_queries(org))
    result = run_target(
        base_config(org, report_path, batch_size_rows=2000),
        singer_lines([opted_in("2025-03-01T00:00:00Z", f"p{n}@example.com") for n in range(1100)]),
    )
    assert result.error is None, result.stderr
    queries = history_queries(org)[before:]
    assert len(queries) == 1 + 1  # the check at start, then one for the batch
    assert "CreatedDate+%3E%3D+2025-03-01T00:00:00Z" in queries[1].query
    assert org.record("Lead", ids[5])["HasOptedOutOfEmail"] is True
    assert result.line_for("p5@example.com")["salesforce_kept"] == {ids[5]: ["HasOptedOutOfEmail"]}
    assert org.record("Lead", ids[6])["HasOptedOutOfEmail"] is False
    assert set(result.outcomes.values()) == {"updated"}


def test_too_many_changes_since_the_oldest_choice_are_read_by_id(
    org: Sandbox, report_path: Path
) -> None:
    # 5,500 people's changes since the choice take three pages of 2,000 rows: more calls than
    # the two queries by Id, so the first page is dropped and the history is read by Id.
    ids = many_leads(org, 1100)
    person = rep(org)
    for day in range(2, 7):  # ticked, unticked, ... ticked: the last change stands
        for record_id in ids:
            org.update_as(person, "Lead", record_id, {"HasOptedOutOfEmail": day % 2 == 0},
                          at=f"2025-03-0{day}T00:00:00Z")
    before = len(history_queries(org))
    result = run_target(
        base_config(org, report_path, batch_size_rows=2000),
        singer_lines([opted_in("2025-03-01T00:00:00Z", f"p{n}@example.com") for n in range(1100)]),
    )
    assert result.error is None, result.stderr
    queries = history_queries(org)[before:]
    assert "CreatedDate" in queries[1].query and "LeadId+IN" not in queries[1].query
    assert len(queries) >= 1 + 1 + 2
    assert all("LeadId+IN" in q.query for q in queries[2:])
    for n in (1, 2, 449):
        assert org.record("Lead", ids[n])["HasOptedOutOfEmail"] is True
        assert result.line_for(f"p{n}@example.com")["salesforce_kept"] == {
            ids[n]: ["HasOptedOutOfEmail"]
        }


@pytest.mark.parametrize("setting", [True, None])
def test_unreadable_history_falls_back_and_says_so(
    setting: bool | None, report_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Sandbox(seed=seed(field_history=False)) as sb:
        config = base_config(sb, report_path)
        if setting is not None:
            config["respect_salesforce_changes"] = setting
        opt_out(sb, at="2025-03-10T09:00:00Z")
        result = run_target(config, singer_lines([opted_in("2025-03-01T00:00:00Z")]))
        assert result.error is None, result.stderr
        # Today's behaviour: the Didomi choice is written.
        assert result.line_for(JANE)["outcome"] == "updated"
        assert lead(sb, JANE)["HasOptedOutOfEmail"] is False
    said = "is true but cannot apply" if setting else "is off"
    assert f"respect_salesforce_changes {said}: LeadHistory cannot be read" in result.stderr
    assert "INVALID_TYPE" in result.stderr and "Falling back" in result.stderr
    levels = {r.levelno for r in caplog.records if "respect_salesforce_changes" in r.getMessage()}
    assert levels == {logging.WARNING if setting else logging.INFO}


def test_off_overwrites_and_reads_no_history(org: Sandbox, report_path: Path) -> None:
    opt_out(org, at="2025-03-10T09:00:00Z")
    config = base_config(org, report_path, respect_salesforce_changes=False)
    result = run_target(config, singer_lines([opted_in("2025-03-01T00:00:00Z")]))
    assert result.line_for(JANE)["outcome"] == "updated"
    assert lead(org, JANE)["HasOptedOutOfEmail"] is False
    assert history_queries(org) == []
    assert "respect_salesforce_changes is off" in result.stderr


def test_a_wrong_type_is_a_configuration_error(org: Sandbox, report_path: Path) -> None:
    config = base_config(org, report_path, respect_salesforce_changes="yes")
    result = run_target(config, singer_lines([]))
    assert result.error is not None
    assert "respect_salesforce_changes is 'yes' (text): it must be true, false" in str(result.error)


def test_the_client_knows_the_user_it_acts_as(org: Sandbox) -> None:
    with SalesforceClient(org.url, org.client_id, org.client_secret) as client:
        assert client.user_id == org.integration_user_id


def test_an_outage_while_checking_the_history_stops_the_run(
    org: Sandbox, report_path: Path
) -> None:
    """Salesforce being down is not an unreadable history: nothing is written without it."""
    org.fail_next(503, count=20, path="/services/data/v62.0/query")
    result = run_target(
        base_config(org, report_path), singer_lines([opted_in("2025-03-01T00:00:00Z")])
    )
    assert result.error is not None
    assert "Salesforce is unavailable" in str(result.error)
    assert "Falling back" not in result.stderr
    assert org.ingest_jobs() == []
