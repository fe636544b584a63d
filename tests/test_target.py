"""The target end to end against the sandbox: outcomes, settings, matching and writing.

Each test runs the real target (settings check, SOQL matching, Bulk API 2.0 jobs) against a
seeded sandbox over HTTP on loopback, then asserts on the sandbox's records, the request
log, the report file and the emitted STATE.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.settings import ConfigurationError
from target_salesforce_consent.sinks import RunError
from tests.conftest import (
    FastTarget,
    base_config,
    event,
    newsletter,
    run_target,
    singer_lines,
    user,
)


def lead(sb: Sandbox, email: str) -> dict[str, Any]:
    found = [r for r in sb.records("Lead") if (r.get("Email") or "").lower() == email.lower()]
    assert len(found) == 1, found
    return found[0]


def leads_by_email(sb: Sandbox) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in sb.records("Lead"):
        out.setdefault((record.get("Email") or "").lower(), []).append(record)
    return out


# -- outcomes ---------------------------------------------------------------------------------


def test_updated_writes_mapped_fields_and_emits_state(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path)
    messages = singer_lines(
        [user("jane@example.com", purposes=[newsletter(False)])], state={"bookmarks": {"users": 1}}
    )
    result = run_target(config, messages)

    assert result.error is None, result.stderr
    jane = lead(sandbox, "jane@example.com")
    assert jane["HasOptedOutOfEmail"] is True
    assert jane["Didomi_Newsletter__c"] is False
    line = result.line_for("jane@example.com")
    assert line["outcome"] == "updated"
    assert line["salesforce_ids"] == [jane["Id"]]
    assert line["fields"] == {"HasOptedOutOfEmail": True, "Didomi_Newsletter__c": False}
    assert line["job_id"] and line["job_id"].startswith("750")
    assert line["error"] is None
    assert line["didomi_id"] == "didomi-jane@example.com"
    assert line["timestamp"] == "2024-06-18T16:40:03.512Z"
    assert result.states == [{"bookmarks": {"users": 1}}]
    assert "updated=1" in result.stderr


def test_unchanged_record_is_not_written(sandbox: Sandbox, report_path: Path) -> None:
    # John already opted out of email; newsletter false asks for exactly what he holds.
    before = lead(sandbox, "john@example.com")
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("john@example.com", purposes=[newsletter(False)])]),
    )
    assert result.error is None, result.stderr
    assert result.line_for("john@example.com")["outcome"] == "skipped_unchanged"
    assert lead(sandbox, "john@example.com")["LastModifiedDate"] == before["LastModifiedDate"]
    assert sandbox.api_calls().get("ingest_create", 0) == 0


def test_no_choice_leaves_fields_untouched(sandbox: Sandbox, report_path: Path) -> None:
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("john@example.com", purposes=[newsletter(None)])]),
    )
    assert result.line_for("john@example.com")["outcome"] == "skipped_unchanged"
    assert result.line_for("john@example.com")["fields"] == {}
    assert lead(sandbox, "john@example.com")["HasOptedOutOfEmail"] is True


def test_unmatched_without_upsert_leaves_org_unchanged(sandbox: Sandbox, report_path: Path) -> None:
    before = sandbox.records("Lead")
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("nobody@example.com", purposes=[newsletter(True)])]),
    )
    assert result.error is None
    line = result.line_for("nobody@example.com")
    assert line["outcome"] == "skipped_unmatched"
    assert line["salesforce_ids"] == []
    assert sandbox.records("Lead") == before


def test_upsert_creates_once_across_two_runs(sandbox: Sandbox, tmp_path: Path) -> None:
    config = base_config(
        sandbox,
        tmp_path / "r1.jsonl",
        upsert_mode=True,
        insert_defaults={"LastName": "Unknown", "Company": "Didomi signup", "LeadSource": "Web"},
    )
    records = [
        user("New.Person@example.com", purposes=[newsletter(True)]),
        event("new.person@example.com", purposes=[newsletter(True)]),
    ]
    first = run_target(config, singer_lines(records))
    assert first.error is None, first.stderr
    created = leads_by_email(sandbox)["new.person@example.com"]
    assert len(created) == 1
    assert created[0]["LastName"] == "Unknown"
    assert created[0]["Company"] == "Didomi signup"
    assert created[0]["HasOptedOutOfEmail"] is False
    assert created[0]["Didomi_Newsletter__c"] is True
    assert [line["outcome"] for line in first.report] == ["inserted", "inserted"]
    assert first.report[0]["salesforce_ids"] == [created[0]["Id"]]

    config["report_path"] = str(tmp_path / "r2.jsonl")
    second = run_target(config, singer_lines(records))
    assert second.error is None, second.stderr
    assert len(leads_by_email(sandbox)["new.person@example.com"]) == 1
    assert {line["outcome"] for line in second.report} == {"skipped_unchanged"}


def test_upsert_mapped_value_wins_over_default(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(
        sandbox,
        report_path,
        upsert_mode=True,
        insert_defaults={"LastName": "Unknown", "Company": "X", "Didomi_Newsletter__c": True},
    )
    run_target(config, singer_lines([user("fresh@example.com", purposes=[newsletter(False)])]))
    assert lead(sandbox, "fresh@example.com")["Didomi_Newsletter__c"] is False


def test_upsert_without_any_choice_creates_nothing(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(
        sandbox, report_path, upsert_mode=True, insert_defaults={"LastName": "U", "Company": "X"}
    )
    result = run_target(config, singer_lines([user("empty@example.com", purposes=[])]))
    assert result.line_for("empty@example.com")["outcome"] == "skipped_unchanged"
    assert "empty@example.com" not in leads_by_email(sandbox)


def test_converted_lead_is_never_written_nor_recreated(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(
        sandbox, report_path, upsert_mode=True, insert_defaults={"LastName": "U", "Company": "X"}
    )
    result = run_target(
        config, singer_lines([user("converted@example.com", purposes=[newsletter(False)])])
    )
    line = result.line_for("converted@example.com")
    assert line["outcome"] == "skipped_converted"
    converted = leads_by_email(sandbox)["converted@example.com"]
    assert len(converted) == 1
    assert line["salesforce_ids"] == [converted[0]["Id"]]
    assert converted[0]["HasOptedOutOfEmail"] is False


def test_multiple_matches_update_all(sandbox: Sandbox, report_path: Path) -> None:
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("twin@example.com", purposes=[newsletter(False)])]),
    )
    twins = leads_by_email(sandbox)["twin@example.com"]
    assert len(twins) == 2
    assert all(t["HasOptedOutOfEmail"] is True for t in twins)
    line = result.line_for("twin@example.com")
    assert line["outcome"] == "updated"
    assert sorted(line["salesforce_ids"]) == sorted(t["Id"] for t in twins)


def test_multiple_matches_skip(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path, on_multiple_matches="skip")
    result = run_target(
        config, singer_lines([user("twin@example.com", purposes=[newsletter(False)])])
    )
    twins = leads_by_email(sandbox)["twin@example.com"]
    line = result.line_for("twin@example.com")
    assert line["outcome"] == "skipped_multiple_matches"
    assert sorted(line["salesforce_ids"]) == sorted(t["Id"] for t in twins)
    assert all(t["HasOptedOutOfEmail"] is False for t in twins)


def test_no_ouid_and_filtered_records(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path)
    records = [
        user(None, purposes=[newsletter(False)]),
        user("   ", purposes=[newsletter(False)], id="blank-ouid"),
        event("jane@example.com", purposes=[newsletter(False)], status="pending_approval"),
        event(
            "jane@example.com",
            purposes=[newsletter(False)],
            regulation="cpra",
            created_at="2024-06-20T00:00:00Z",
        ),
        {
            "type": "event.deleted",
            "parameters": {"entity": {"id": "gone", "created_at": "2019-08-07T10:45:11Z"}},
        },
    ]
    result = run_target(config, singer_lines(records))
    assert result.error is None, result.stderr
    assert [line["outcome"] for line in result.report] == [
        "skipped_no_ouid",
        "skipped_no_ouid",
        "skipped_filtered",
        "skipped_filtered",
        "skipped_filtered",
    ]
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is False


def test_regulations_setting_admits_other_regulations(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path, regulations=["gdpr", "cpra"])
    result = run_target(
        config,
        singer_lines([event("jane@example.com", purposes=[newsletter(False)], regulation="cpra")]),
    )
    assert result.line_for("jane@example.com")["outcome"] == "updated"


def test_unreadable_record_is_reported_failed_and_run_continues(
    sandbox: Sandbox, report_path: Path
) -> None:
    bad = user("jane@example.com")
    bad["consents"] = "{not json"
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([bad, user("john@example.com", purposes=[newsletter(True)])]),
    )
    assert result.error is None
    assert result.report[0]["outcome"] == "failed"
    assert result.report[0]["organization_user_id"] == "jane@example.com"
    assert result.report[0]["error"].startswith("JSON_PARSER_ERROR")
    assert result.report[1]["outcome"] == "updated"


def test_salesforce_row_error_is_failed_and_exit_zero(sandbox: Sandbox, report_path: Path) -> None:
    # "Zz9" is not a value of the restricted picklist: Salesforce rejects that row only.
    config = base_config(
        sandbox,
        report_path,
        mappings=[
            {
                "id": "Didomi_Topics__c",
                "value": "purposes.newsletter.values.topics",
                "value_map": {"a1": "News", "b2": "Offers"},
            },
        ],
    )
    good = user(
        "jane@example.com",
        purposes=[{"id": "newsletter", "values": {"topics": {"value": "a1,b2"}}}],
    )
    bad = user(
        "john@example.com",
        purposes=[{"id": "newsletter", "values": {"topics": {"value": "a1,Zz9"}}}],
    )
    result = run_target(config, singer_lines([good, bad], state={"s": 1}))
    assert result.error is None, result.stderr
    assert set(lead(sandbox, "jane@example.com")["Didomi_Topics__c"].split(";")) == {
        "News",
        "Offers",
    }
    line = result.line_for("john@example.com")
    assert line["outcome"] == "failed"
    assert line["error"].startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: ")
    assert line["job_id"]
    assert result.line_for("jane@example.com")["outcome"] == "updated"
    assert result.states == [{"s": 1}]


def test_fail_on_record_errors_makes_row_errors_fatal(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(
        sandbox,
        report_path,
        fail_on_record_errors=True,
        mappings=[{"id": "Didomi_Topics__c", "value": "purposes.newsletter.values.topics"}],
    )
    bad = user(
        "john@example.com", purposes=[{"id": "newsletter", "values": {"topics": {"value": "Zz9"}}}]
    )
    result = run_target(config, singer_lines([bad], state={"s": 1}))
    assert isinstance(result.error, RunError)
    assert "fail_on_record_errors" in str(result.error)
    assert result.states == []
    assert result.line_for("john@example.com")["outcome"] == "failed"


def test_stale_consent_is_not_written(sandbox: Sandbox, report_path: Path) -> None:
    jane = lead(sandbox, "jane@example.com")
    config = base_config(sandbox, report_path, consent_timestamp_field="Didomi_Consent_Updated__c")
    newer = user(
        "jane@example.com", purposes=[newsletter(True)], updated_at="2024-07-01T10:00:00.000Z"
    )
    first = run_target(config, singer_lines([newer]))
    assert first.line_for("jane@example.com")["outcome"] == "updated"
    assert first.line_for("jane@example.com")["fields"]["Didomi_Consent_Updated__c"] == (
        "2024-07-01T10:00:00.000Z"
    )
    written = lead(sandbox, "jane@example.com")
    assert written["Didomi_Newsletter__c"] is True
    assert written["Didomi_Consent_Updated__c"].startswith("2024-07-01T10:00:00")

    older = user(
        "jane@example.com", purposes=[newsletter(False)], updated_at="2024-06-01T10:00:00.000Z"
    )
    second = run_target(config, singer_lines([older]))
    assert second.line_for("jane@example.com")["outcome"] == "skipped_stale"
    after = lead(sandbox, "jane@example.com")
    assert after["Didomi_Newsletter__c"] is True
    assert after["LastModifiedDate"] == written["LastModifiedDate"]
    assert jane["Id"] == after["Id"]


def test_dry_run_writes_nothing_and_emits_no_state(sandbox: Sandbox, report_path: Path) -> None:
    before = sandbox.records("Lead")
    config = base_config(
        sandbox,
        report_path,
        dry_run=True,
        upsert_mode=True,
        insert_defaults={"LastName": "U", "Company": "X"},
    )
    result = run_target(
        config,
        singer_lines(
            [
                user("jane@example.com", purposes=[newsletter(False)]),
                user("new@example.com", purposes=[newsletter(True)]),
            ],
            state={"s": 1},
        ),
    )
    assert result.error is None, result.stderr
    assert result.outcomes == {
        "jane@example.com": "would_update",
        "new@example.com": "would_insert",
    }
    assert result.line_for("jane@example.com")["fields"] == {
        "HasOptedOutOfEmail": True,
        "Didomi_Newsletter__c": False,
    }
    assert sandbox.records("Lead") == before
    assert result.states == []
    assert not any(k.startswith("ingest") for k in sandbox.api_calls())


def test_report_exists_and_is_empty_without_records(sandbox: Sandbox, report_path: Path) -> None:
    result = run_target(base_config(sandbox, report_path), singer_lines([]))
    assert result.error is None
    assert report_path.exists()
    assert report_path.read_text() == ""


# -- matching ---------------------------------------------------------------------------------


def test_matching_is_case_insensitive_and_trims(sandbox: Sandbox, report_path: Path) -> None:
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("  JANE@Example.COM ", purposes=[newsletter(False)])]),
    )
    assert result.line_for("JANE@Example.COM")["outcome"] == "updated"
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is True


def test_quote_in_ouid_is_escaped(sandbox: Sandbox, report_path: Path) -> None:
    hostile = "x') OR Email != ('"
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines(
            [
                user("o'brien@example.com", purposes=[newsletter(False)]),
                user(hostile, purposes=[newsletter(False)]),
            ]
        ),
    )
    assert result.error is None, result.stderr
    assert result.line_for("o'brien@example.com")["outcome"] == "updated"
    assert result.line_for(hostile)["outcome"] == "skipped_unmatched"
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is False


def test_many_ids_are_queried_in_chunks_under_the_uri_limit(
    sandbox: Sandbox, report_path: Path
) -> None:
    ouids = [f"person-{i:05d}-{'x' * 60}@example.com" for i in range(600)]
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user(o, purposes=[newsletter(True)]) for o in ouids]),
    )
    assert result.error is None, result.stderr
    assert {line["outcome"] for line in result.report} == {"skipped_unmatched"}
    queries = [r for r in sandbox.requests if r.kind == "query"]
    assert len(queries) > 1
    assert all(r.status == 200 for r in queries)


def test_custom_match_field(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path, match_field="Didomi_User_Id__c")
    result = run_target(config, singer_lines([user("crm-000123", purposes=[newsletter(False)])]))
    assert result.line_for("crm-000123")["outcome"] == "updated"
    assert lead(sandbox, "keyed@example.com")["HasOptedOutOfEmail"] is True


def test_contact_configuration(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path, salesforce_object="Contact")
    result = run_target(
        config, singer_lines([user("carla@example.com", purposes=[newsletter(False)])])
    )
    assert result.line_for("carla@example.com")["outcome"] == "updated"
    carla = next(c for c in sandbox.records("Contact") if c["Email"] == "carla@example.com")
    assert carla["HasOptedOutOfEmail"] is True
    assert all(not r.path.endswith("Lead/describe") for r in sandbox.requests)


def test_api_version_is_used_in_every_data_url(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path, api_version="60.0")
    run_target(config, singer_lines([user("jane@example.com", purposes=[newsletter(False)])]))
    data = [r.path for r in sandbox.requests if r.path.startswith("/services/data/")]
    assert data
    assert all(p.startswith("/services/data/v60.0/") for p in data)


# -- merging ----------------------------------------------------------------------------------


def test_records_of_one_person_merge_across_streams_in_time_order(
    sandbox: Sandbox, report_path: Path
) -> None:
    config = base_config(
        sandbox,
        report_path,
        mappings=[
            {"id": "Didomi_Newsletter__c", "value": "purposes.newsletter.enabled"},
            {"id": "SMS_Opt_In__c", "value": "purposes.sms.enabled"},
        ],
    )
    # The event (newer) arrives first on another stream; the older full user state must not
    # undo it, and the purpose only the user state carries still applies.
    later_event = event(
        "jane@example.com", purposes=[newsletter(True)], created_at="2024-06-20T00:00:00Z"
    )
    older_user = user(
        "jane@example.com",
        purposes=[newsletter(False), {"id": "sms", "enabled": True}],
        updated_at="2024-06-01T00:00:00Z",
    )
    messages = singer_lines([later_event], stream="events") + singer_lines([older_user])
    result = run_target(config, messages)
    assert result.error is None, result.stderr
    jane = lead(sandbox, "jane@example.com")
    assert jane["Didomi_Newsletter__c"] is True
    assert jane["SMS_Opt_In__c"] is True
    assert [line["outcome"] for line in result.report] == ["updated", "updated"]
    assert [line["stream"] for line in result.report] == ["events", "users"]
    assert sandbox.api_calls()["ingest_create"] == 1


# -- configuration errors ---------------------------------------------------------------------


def test_every_mapping_problem_in_one_message(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(
        sandbox,
        report_path,
        upsert_mode=True,
        mappings=[
            {"id": "No_Such_Field__c", "value": "purposes.newsletter.enabled"},
            {"id": "Legacy_Flag__c", "value": "purposes.newsletter.enabled"},
            {"id": "Consent_Date__c", "value": "purposes.newsletter.enabled"},
            {"id": "HasOptedOutOfEmail", "value": "purposes..enabled"},
        ],
    )
    result = run_target(config, singer_lines([user("jane@example.com")]))
    assert isinstance(result.error, ConfigurationError)
    message = str(result.error)
    assert "No_Such_Field__c" in message
    assert "Legacy_Flag__c" in message and "not updateable" in message
    assert "Consent_Date__c" in message and "date" in message
    assert "mappings[3]" in message
    assert "LastName" in message and "Company" in message and "insert_defaults" in message
    assert not report_path.exists()
    assert sandbox.api_calls().get("query", 0) == 0


def test_wrong_secret_is_a_configuration_error_without_the_secret(
    sandbox: Sandbox, report_path: Path
) -> None:
    config = base_config(sandbox, report_path, client_secret="not-the-secret-xyz")
    result = run_target(config, singer_lines([user("jane@example.com")]))
    assert isinstance(result.error, ConfigurationError)
    assert "client_secret" in str(result.error)
    assert "not-the-secret-xyz" not in str(result.error) + result.stderr + result.stdout


def test_unknown_client_id_is_explained(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path, client_id="nope")
    result = run_target(config, singer_lines([]))
    assert isinstance(result.error, ConfigurationError)
    assert "client_id" in str(result.error)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"instance_url": "http://acme.my.salesforce.com"}, "https"),
        ({"salesforce_object": "Account"}, "salesforce_object"),
        ({"on_multiple_matches": "newest"}, "on_multiple_matches"),
        ({"regulations": []}, "regulations"),
        ({"mappings": []}, "mappings"),
        ({"api_version": "v62"}, "api_version"),
        ({"consent_timestamp_field": "Consent_Date__c"}, "Date/Time"),
        ({"match_field": "HasOptedOutOfFax"}, "match_field"),
        ({"insert_defaults": {"Nope__c": "x"}}, "insert_defaults"),
    ],
)
def test_configuration_errors(
    sandbox: Sandbox, report_path: Path, overrides: dict[str, Any], expected: str
) -> None:
    result = run_target(base_config(sandbox, report_path, **overrides), singer_lines([]))
    assert isinstance(result.error, ConfigurationError), result.error
    assert expected in str(result.error)


# -- transient failures and fatal ends --------------------------------------------------------


def test_transient_errors_are_retried(sandbox: Sandbox, report_path: Path) -> None:
    sandbox.fail_next(
        503,
        '[{"message":"Server unavailable","errorCode":"SERVER_UNAVAILABLE"}]',
        method="GET",
        path=r"/query",
    )
    sandbox.fail_next(
        502,
        "<html><body>Bad Gateway</body></html>",
        method="POST",
        path=r"/jobs/ingest",
        content_type="text/html",
    )
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("jane@example.com", purposes=[newsletter(False)])]),
    )
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "updated"


def test_expired_token_is_renewed(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path)
    messages = singer_lines([user("jane@example.com", purposes=[newsletter(False)])])
    target = FastTarget(config=config, validate_config=True)
    sandbox.expire_tokens()
    target.process_lines(io.StringIO(messages))
    target.process_endofpipe()
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is True
    assert sandbox.api_calls()["token"] == 2


def test_locked_rows_are_resubmitted(sandbox: Sandbox, report_path: Path) -> None:
    jane = lead(sandbox, "jane@example.com")
    sandbox.lock_records([jane["Id"]], attempts=1)
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("jane@example.com", purposes=[newsletter(False)])]),
    )
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "updated"
    assert sandbox.api_calls()["ingest_create"] == 2


def test_rows_locked_for_good_end_the_run_without_state(
    sandbox: Sandbox, report_path: Path
) -> None:
    jane = lead(sandbox, "jane@example.com")
    sandbox.lock_records([jane["Id"]])
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("jane@example.com", purposes=[newsletter(False)])], state={"s": 1}),
    )
    assert isinstance(result.error, RunError)
    assert result.states == []
    line = result.line_for("jane@example.com")
    assert line["outcome"] == "failed"
    assert line["error"].startswith("UNABLE_TO_LOCK_ROW")


def test_unprocessed_rows_are_resubmitted(sandbox: Sandbox, report_path: Path) -> None:
    sandbox.leave_unprocessed(1)
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines(
            [
                user("jane@example.com", purposes=[newsletter(False)]),
                user("o'brien@example.com", purposes=[newsletter(False)]),
            ]
        ),
    )
    assert result.error is None, result.stderr
    assert {line["outcome"] for line in result.report} == {"updated"}
    assert lead(sandbox, "o'brien@example.com")["HasOptedOutOfEmail"] is True
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is True


def test_job_failed_as_a_whole_ends_the_run(sandbox: Sandbox, report_path: Path) -> None:
    sandbox.fail_next_job("InvalidBatch : Field name not found : Didomi_Newsletter__c")
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("jane@example.com", purposes=[newsletter(False)])], state={"s": 1}),
    )
    assert isinstance(result.error, RunError)
    assert "Field name not found" in str(result.error)
    assert result.states == []
    assert result.line_for("jane@example.com")["outcome"] == "failed"


def test_exhausted_api_limit_ends_the_run(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path)
    target = FastTarget(config=config, validate_config=True)
    sandbox.set_api_limit(100, remaining=0)
    with pytest.raises(RunError, match="daily API request limit"):
        target.process_lines(
            io.StringIO(
                singer_lines(
                    [user("jane@example.com", purposes=[newsletter(False)])], state={"s": 1}
                )
            )
        )
        target.process_endofpipe()
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is False


def test_no_secret_or_token_in_any_output(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path)
    result = run_target(
        config, singer_lines([user("jane@example.com", purposes=[newsletter(False)])])
    )
    tokens = set(sandbox.org.tokens)  # every token the sandbox issued during the run
    assert tokens
    everything = result.stdout + result.stderr + report_path.read_text()
    for secret in [sandbox.client_secret, sandbox.client_id, *tokens]:
        assert secret not in everything


def test_a_failed_job_stops_the_batch_before_its_insert_job(
    sandbox: Sandbox, report_path: Path
) -> None:
    # The update job fails as a whole: the batch stops calling Salesforce, so the new person
    # is not created now but reported (and sent again next run, since no STATE follows).
    sandbox.fail_next_job("InvalidBatch : Field name not found : Didomi_Newsletter__c")
    config = base_config(
        sandbox, report_path, upsert_mode=True, insert_defaults={"LastName": "U", "Company": "X"}
    )
    result = run_target(
        config,
        singer_lines(
            [
                user("jane@example.com", purposes=[newsletter(False)]),
                user("brand.new@example.com", purposes=[newsletter(True)]),
            ],
            state={"s": 1},
        ),
    )
    assert isinstance(result.error, RunError)
    assert "update job" in str(result.error)
    assert result.states == []
    jane = result.line_for("jane@example.com")
    assert jane["outcome"] == "failed"
    assert jane["error"] == "InvalidBatch: Field name not found : Didomi_Newsletter__c"
    assert jane["job_id"]
    new = result.line_for("brand.new@example.com")
    assert new["outcome"] == "failed"
    assert new["error"].startswith("NOT_ATTEMPTED")
    assert "brand.new@example.com" not in leads_by_email(sandbox)
    assert sandbox.api_calls()["ingest_create"] == 1


def test_report_fields_of_an_unchanged_record_are_what_salesforce_holds(
    sandbox: Sandbox, report_path: Path
) -> None:
    config = base_config(sandbox, report_path, consent_timestamp_field="Didomi_Consent_Updated__c")
    result = run_target(
        config,
        singer_lines(
            [
                user("john@example.com", purposes=[newsletter(False)]),
                user("jane@example.com", purposes=[]),
            ]
        ),
    )
    john = result.line_for("john@example.com")
    # John already holds these values: nothing is written (not even the timestamp), so the
    # report shows what Salesforce holds: the values, and no consent timestamp (he has none).
    assert john["outcome"] == "skipped_unchanged"
    assert john["fields"] == {"HasOptedOutOfEmail": True, "Didomi_Newsletter__c": False}
    assert result.line_for("jane@example.com") | {"fields": {}} == result.line_for(
        "jane@example.com"
    )
    assert result.line_for("jane@example.com")["outcome"] == "skipped_unchanged"


# -- odd input never costs the batch ----------------------------------------------------------


def test_poison_records_fail_alone(sandbox: Sandbox, report_path: Path) -> None:
    huge = user("x" * 4001 + "@example.com", purposes=[newsletter(False)])
    quotes = user("'" * 2500 + "@example.com", purposes=[newsletter(False)])  # 5,000 escaped
    overflow = user("john@example.com", purposes=[newsletter(True)])
    overflow["updated_at"] = "9999-12-31T23:59:59-01:00"
    surrogate = user("sur\ud800@example.com", purposes=[newsletter(False)])
    control = user("line\nbreak@example.com", purposes=[newsletter(False)])
    messages = singer_lines(
        [
            huge,
            quotes,
            overflow,
            surrogate,
            control,
            user("jane@example.com", purposes=[newsletter(False)]),
        ]
    )
    messages += '{"type": "RECORD", "stream": "users", "record": ["not", "an", "object"]}\n'
    result = run_target(base_config(sandbox, report_path), messages)
    assert result.error is None, result.stderr
    outcomes = [(line["outcome"], (line["error"] or "").split(":")[0]) for line in result.report]
    assert outcomes == [
        ("failed", "STRING_TOO_LONG"),
        ("failed", "STRING_TOO_LONG"),
        ("failed", "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ("failed", "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ("failed", "INVALID_FIELD"),
        ("updated", ""),
        ("failed", "INVALID_TYPE_ON_FIELD_IN_RECORD"),
    ]
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is True


def test_singer_batch_messages_are_processed(
    sandbox: Sandbox, report_path: Path, tmp_path: Path
) -> None:
    batch_file = tmp_path / "batch-0001.jsonl"
    batch_file.write_text(json.dumps(user("jane@example.com", purposes=[newsletter(False)])) + "\n")
    messages = singer_lines([], state=None)
    messages += (
        json.dumps(
            {
                "type": "BATCH",
                "stream": "users",
                "encoding": {"format": "jsonl", "compression": "none"},
                "manifest": [batch_file.as_uri()],
            }
        )
        + "\n"
    )
    messages += json.dumps({"type": "STATE", "value": {"s": 1}}) + "\n"
    result = run_target(base_config(sandbox, report_path), messages)
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "updated"
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is True
    assert result.states == [{"s": 1}]


def test_a_later_failing_job_does_not_relabel_written_records(
    sandbox: Sandbox, report_path: Path
) -> None:
    config = base_config(
        sandbox, report_path, upsert_mode=True, insert_defaults={"LastName": "U", "Company": "X"}
    )
    target = FastTarget(config=config, validate_config=True)
    # Enough API calls for the query and the whole update job, none for the insert job.
    sandbox.set_api_limit(15000, remaining=8)
    with pytest.raises(RunError, match="daily API request limit"):
        target.process_lines(
            io.StringIO(
                singer_lines(
                    [
                        user("jane@example.com", purposes=[newsletter(False)]),
                        user("brand.new@example.com", purposes=[newsletter(True)]),
                    ]
                )
            )
        )
        target.process_endofpipe()
    report = [json.loads(line) for line in report_path.read_text().splitlines()]
    by_ouid = {line["organization_user_id"]: line for line in report}
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is True
    assert by_ouid["jane@example.com"]["outcome"] == "updated"
    assert by_ouid["brand.new@example.com"]["outcome"] == "failed"
    assert by_ouid["brand.new@example.com"]["error"].startswith("REQUEST_LIMIT_EXCEEDED")
    assert by_ouid["brand.new@example.com"]["fields"] == {
        "HasOptedOutOfEmail": False,
        "Didomi_Newsletter__c": True,
    }


def test_ids_differing_beyond_case_are_different_people(
    sandbox: Sandbox, report_path: Path
) -> None:
    sandbox.add_records(
        "Lead",
        [
            {"LastName": "A", "Company": "X", "Didomi_User_Id__c": "strasse"},
            {"LastName": "B", "Company": "X", "Didomi_User_Id__c": "straße"},
        ],
    )
    config = base_config(
        sandbox,
        report_path,
        match_field="Didomi_User_Id__c",
        mappings=[{"id": "Didomi_Newsletter__c", "value": "purposes.newsletter.enabled"}],
    )
    result = run_target(
        config,
        singer_lines(
            [
                user("strasse", purposes=[newsletter(True)]),
                user("straße", purposes=[newsletter(False)], updated_at="2024-07-01T00:00:00Z"),
            ]
        ),
    )
    assert result.error is None, result.stderr
    held = {
        r["Didomi_User_Id__c"]: r["Didomi_Newsletter__c"]
        for r in sandbox.records("Lead")
        if r.get("Didomi_User_Id__c") in ("strasse", "straße")
    }
    assert held == {"strasse": True, "straße": False}


def test_partial_failure_of_several_matches_is_reported(
    sandbox: Sandbox, report_path: Path
) -> None:
    twins = leads_by_email(sandbox)["twin@example.com"]
    sandbox.lock_records([twins[0]["Id"]])
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("twin@example.com", purposes=[newsletter(False)])]),
    )
    assert isinstance(result.error, RunError)  # the locked row stayed unresolved
    line = result.line_for("twin@example.com")
    assert line["outcome"] == "updated"
    assert line["error"].startswith("UNABLE_TO_LOCK_ROW")


def test_stale_is_decided_before_unchanged(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(sandbox, report_path, consent_timestamp_field="Didomi_Consent_Updated__c")
    run_target(
        config,
        singer_lines(
            [
                user(
                    "jane@example.com",
                    purposes=[newsletter(False)],
                    updated_at="2024-07-01T00:00:00Z",
                )
            ]
        ),
    )
    older_without_choice = user("jane@example.com", purposes=[], updated_at="2024-01-01T00:00:00Z")
    result = run_target(config, singer_lines([older_without_choice]))
    assert result.line_for("jane@example.com")["outcome"] == "skipped_stale"


def test_unwritable_report_path_is_a_configuration_error(sandbox: Sandbox, tmp_path: Path) -> None:
    result = run_target(base_config(sandbox, tmp_path), singer_lines([]))
    assert isinstance(result.error, ConfigurationError)
    assert "report_path" in str(result.error)


def test_empty_insert_default_is_a_configuration_error(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(
        sandbox, report_path, upsert_mode=True, insert_defaults={"LastName": None, "Company": "X"}
    )
    result = run_target(config, singer_lines([]))
    assert isinstance(result.error, ConfigurationError)
    assert "insert_defaults: LastName is empty" in str(result.error)


def test_invalid_unicode_in_a_mapped_value_fails_that_person_only(
    sandbox: Sandbox, report_path: Path
) -> None:
    config = base_config(
        sandbox, report_path, mappings=[{"id": "Consent_Note__c", "value": "metadata.note"}]
    )
    bad = user("jane@example.com", metadata={"note": "broken \ud800"})
    good = user("john@example.com", metadata={"note": "fine"})
    result = run_target(config, singer_lines([bad, good]))
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "failed"
    assert result.line_for("jane@example.com")["error"].startswith("INVALID_TYPE_ON_FIELD")
    assert lead(sandbox, "john@example.com")["Consent_Note__c"] == "fine"
    assert lead(sandbox, "jane@example.com").get("Consent_Note__c") in (None, "")


def test_shuffled_results_and_empty_failed_ids_are_reconciled_by_key(
    sandbox: Sandbox, report_path: Path
) -> None:
    # 40 people, each with a different selection; every 7th selection holds a value the
    # restricted picklist rejects. The sandbox returns result rows in random order and leaves
    # sf__Id empty on failed rows, as Salesforce does (its contract tests check both).
    values = ["News", "Offers", "Events"]
    emails = [f"p{i:02d}@example.com" for i in range(40)]
    sandbox.add_records(
        "Lead", [{"LastName": f"P{i}", "Company": "X", "Email": e} for i, e in enumerate(emails)]
    )
    config = base_config(
        sandbox,
        report_path,
        mappings=[{"id": "Didomi_Topics__c", "value": "purposes.m.values.t"}],
    )
    records = []
    for i, email in enumerate(emails):
        chosen = values[i % 3] if i % 7 else "Nope"
        records.append(user(email, purposes=[{"id": "m", "values": {"t": {"value": chosen}}}]))
    result = run_target(config, singer_lines(records))
    assert result.error is None, result.stderr
    for i, email in enumerate(emails):
        line = result.line_for(email)
        record = lead(sandbox, email)
        if i % 7:
            assert line["outcome"] == "updated", line
            assert record["Didomi_Topics__c"] == values[i % 3]
            assert line["salesforce_ids"] == [record["Id"]]
        else:
            assert line["outcome"] == "failed", line
            assert "Nope" in line["error"]
            assert record.get("Didomi_Topics__c") in (None, "")


def test_validate_records_reports_records_breaking_their_schema(
    sandbox: Sandbox, report_path: Path
) -> None:
    schema = {
        "type": "object",
        "properties": {"organization_user_id": {"type": "string"}, "version": {"type": "integer"}},
    }
    good = user("jane@example.com", purposes=[newsletter(False)])
    bad = user("john@example.com", purposes=[newsletter(True)])
    bad["version"] = "seven"
    lines = [
        {"type": "SCHEMA", "stream": "users", "schema": schema, "key_properties": []},
        {"type": "RECORD", "stream": "users", "record": good},
        {"type": "RECORD", "stream": "users", "record": bad},
    ]
    messages = "\n".join(json.dumps(line) for line in lines) + "\n"
    result = run_target(base_config(sandbox, report_path, validate_records=True), messages)
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "updated"
    john = result.line_for("john@example.com")
    assert john["outcome"] == "failed"
    assert "does not match the SCHEMA of stream users" in john["error"]
    assert lead(sandbox, "john@example.com")["HasOptedOutOfEmail"] is True  # untouched


def test_report_path_timestamp_keeps_one_report_per_run(sandbox: Sandbox, tmp_path: Path) -> None:
    config = base_config(sandbox, tmp_path / "report-{timestamp}.jsonl")
    result = run_target(config, singer_lines([user("nobody@example.com")]))
    assert result.error is None, result.stderr
    reports = list(tmp_path.glob("report-*.jsonl"))
    assert len(reports) == 1
    assert re.fullmatch(r"report-\d{8}T\d{6}Z\.jsonl", reports[0].name)
    assert json.loads(reports[0].read_text())["outcome"] == "skipped_unmatched"


def test_unreadable_record_keeps_its_timestamp_in_the_report(
    sandbox: Sandbox, report_path: Path
) -> None:
    bad = user("jane@example.com")
    bad["consents"] = "{not json"
    result = run_target(base_config(sandbox, report_path), singer_lines([bad]))
    assert result.line_for("jane@example.com")["timestamp"] == bad["updated_at"]


def test_an_error_in_a_retry_round_keeps_the_rows_already_written(
    sandbox: Sandbox, report_path: Path
) -> None:
    # Round 1 writes Jane while John's row is locked; before round 2 the job creation starts
    # failing for good. Jane was written and must be reported so.
    john = lead(sandbox, "john@example.com")
    sandbox.lock_records([john["Id"]], attempts=1)

    class BreaksBetweenRounds(FastTarget):
        def _start_run(self) -> Any:
            processor = super()._start_run()

            def fail_job_creation(_: float) -> None:
                sandbox.fail_next(503, "[]", count=20, method="POST", path=r"jobs/ingest/?$")

            processor.bulk._sleep = fail_job_creation
            return processor

    result = run_target(
        base_config(sandbox, report_path),
        singer_lines(
            [
                user("jane@example.com", purposes=[newsletter(False)]),
                user("john@example.com", purposes=[newsletter(True)]),
            ],
            state={"s": 1},
        ),
        target_class=BreaksBetweenRounds,
    )
    assert isinstance(result.error, RunError)
    assert result.states == []
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is True
    assert result.line_for("jane@example.com")["outcome"] == "updated"
    assert result.line_for("jane@example.com")["job_id"]
    assert result.line_for("john@example.com")["outcome"] == "failed"


def test_a_match_under_another_case_rule_is_not_inserted_again(
    sandbox: Sandbox, report_path: Path
) -> None:
    # The sandbox, like Salesforce, may equate what lower() does not ("ß" and "ss").
    sandbox.add_records(
        "Lead", [{"LastName": "S", "Company": "X", "Didomi_User_Id__c": "strasse-1"}]
    )
    config = base_config(
        sandbox,
        report_path,
        upsert_mode=True,
        match_field="Didomi_User_Id__c",
        insert_defaults={"LastName": "U", "Company": "X"},
        mappings=[{"id": "Didomi_Newsletter__c", "value": "purposes.newsletter.enabled"}],
    )
    result = run_target(config, singer_lines([user("straße-1", purposes=[newsletter(True)])]))
    assert result.error is None, result.stderr
    assert result.line_for("straße-1")["outcome"] == "updated"
    keyed = [r for r in sandbox.records("Lead") if r.get("Didomi_User_Id__c")]
    assert [r["Didomi_User_Id__c"] for r in keyed].count("strasse-1") == 1
    assert len([r for r in keyed if r["Didomi_User_Id__c"].startswith("stra")]) == 1


def test_a_record_returned_by_two_query_chunks_is_written_once(
    sandbox: Sandbox, report_path: Path
) -> None:
    # "strasse@" and "straße@" land in different query chunks; the sandbox returns the same
    # Lead for both. It must be planned once (a Bulk job takes one row per Id).
    sandbox.add_records("Lead", [{"LastName": "S", "Company": "X", "Email": "strasse@example.com"}])
    fillers = [f"filler-{i:04d}-{'y' * 40}@example.com" for i in range(400)]
    records = [user("strasse@example.com", purposes=[newsletter(False)])]
    records += [user(f, purposes=[newsletter(True)]) for f in fillers]
    records.append(user("straße@example.com", purposes=[newsletter(False)]))
    result = run_target(base_config(sandbox, report_path), singer_lines(records))
    assert result.error is None, result.stderr
    assert result.line_for("strasse@example.com")["outcome"] == "updated"
    assert len([r for r in sandbox.requests if r.kind == "query"]) > 1
