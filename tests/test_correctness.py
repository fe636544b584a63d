"""Consent correctness through the sandbox (and a startup outage).

Every test runs the real target against a seeded sandbox over HTTP on loopback and asserts on
what Salesforce holds afterwards, the report and the run's end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.salesforce.errors import AuthenticationError, SalesforceError
from target_salesforce_consent.settings import ConfigurationError, read_settings
from target_salesforce_consent.sinks import RunError
from target_salesforce_consent.target import cli, is_outage
from tests.conftest import (
    FastTarget,
    base_config,
    newsletter,
    run_target,
    singer_lines,
    user,
)

NOTE_MAPPING = {"id": "Consent_Note__c", "value": "metadata.note"}
TOKEN_PATH = r"/services/oauth2/token"
MAINTENANCE_PAGE = (
    "<html><head><title>Salesforce is down for maintenance</title></head>"
    "<body>We are performing scheduled maintenance. Please check back soon.</body></html>"
)


def lead(sb: Sandbox, email: str) -> dict[str, Any]:
    found = [r for r in sb.records("Lead") if (r.get("Email") or "").lower() == email.lower()]
    assert len(found) == 1, found
    return found[0]


def note_config(sb: Sandbox, report_path: Path, **overrides: Any) -> dict[str, Any]:
    """Newsletter mappings plus metadata.note into the text field Consent_Note__c."""
    config = base_config(sb, report_path, **overrides)
    config["mappings"] = [*config["mappings"], NOTE_MAPPING]
    return config


def with_note(ouid: str, note: Any, **extra: Any) -> dict[str, Any]:
    return user(ouid, purposes=[newsletter(True)], metadata={"note": note}, **extra)


def messages_with_schema(schema: dict[str, Any], records: list[dict[str, Any]]) -> str:
    lines: list[dict[str, Any]] = [
        {"type": "SCHEMA", "stream": "users", "schema": schema, "key_properties": []},
        *({"type": "RECORD", "stream": "users", "record": r} for r in records),
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


# -- 3. validate_records is off unless set ------------------------------------------------------

STRICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "organization_user_id": {"type": "string"},
        "consents": {"type": "object"},
    },
}


def test_records_are_not_validated_against_the_schema_by_default(
    sandbox: Sandbox, report_path: Path
) -> None:
    stringified = user("jane@example.com", purposes=[newsletter(False)])
    stringified["consents"] = json.dumps(stringified["consents"])
    guest = user(None, purposes=[newsletter(True)])
    result = run_target(
        base_config(sandbox, report_path), messages_with_schema(STRICT_SCHEMA, [stringified, guest])
    )
    assert result.error is None, result.stderr
    assert [line["outcome"] for line in result.report] == ["updated", "skipped_no_ouid"]
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is True


def test_validate_records_true_still_reports_schema_breaks(
    sandbox: Sandbox, report_path: Path
) -> None:
    stringified = user("jane@example.com", purposes=[newsletter(False)])
    stringified["consents"] = json.dumps(stringified["consents"])
    result = run_target(
        base_config(sandbox, report_path, validate_records=True),
        messages_with_schema(STRICT_SCHEMA, [stringified]),
    )
    assert result.error is None, result.stderr
    line = result.line_for("jane@example.com")
    assert line["outcome"] == "failed"
    assert "validate_records is on" in line["error"]
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is False


# -- 4. a text "#N/A" never clears a field ------------------------------------------------------


def test_text_na_marker_fails_the_record_and_leaves_the_field(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = note_config(sandbox, tmp_path / "first.jsonl")
    first = run_target(config, singer_lines([with_note("jane@example.com", "kept")]))
    assert first.error is None, first.stderr
    assert lead(sandbox, "jane@example.com")["Consent_Note__c"] == "kept"

    config["report_path"] = str(tmp_path / "second.jsonl")
    second = run_target(
        config,
        singer_lines(
            [
                user(
                    "jane@example.com",
                    purposes=[newsletter(False)],
                    metadata={"note": "#N/A"},
                    updated_at="2024-06-19T08:00:00.000Z",
                ),
                with_note("john@example.com", "#N/A\x00"),  # NUL is dropped when sent
                with_note("o'brien@example.com", " #N/A"),  # not the marker: written as is
            ]
        ),
    )
    assert second.error is None, second.stderr
    jane = second.line_for("jane@example.com")
    assert jane["outcome"] == "failed"
    assert jane["error"].startswith("INVALID_FIELD: Consent_Note__c: ")
    assert '"#N/A"' in jane["error"] and "clear" in jane["error"]
    assert jane["fields"]["Consent_Note__c"] == "#N/A"
    assert lead(sandbox, "jane@example.com")["Consent_Note__c"] == "kept"
    # Nothing of the record is written: no half-applied consent.
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is False
    assert second.line_for("john@example.com")["outcome"] == "failed"
    assert lead(sandbox, "john@example.com")["Consent_Note__c"] is None
    assert second.line_for("o'brien@example.com")["outcome"] == "updated"
    assert lead(sandbox, "o'brien@example.com")["Consent_Note__c"] == " #N/A"


def test_text_na_marker_is_refused_on_insert_and_in_dry_run(
    sandbox: Sandbox, report_path: Path
) -> None:
    config = note_config(
        sandbox,
        report_path,
        upsert_mode=True,
        dry_run=True,
        insert_defaults={"LastName": "Unknown", "Company": "Didomi"},
    )
    result = run_target(config, singer_lines([with_note("new@example.com", "#N/A")]))
    assert result.error is None, result.stderr
    assert result.line_for("new@example.com")["outcome"] == "failed"


def test_empty_selection_still_clears_a_multipicklist(sandbox: Sandbox, report_path: Path) -> None:
    sandbox.add_records(
        "Lead",
        [{"LastName": "Picky", "Company": "Acme", "Email": "picky@example.com",
          "Didomi_Topics__c": "News;Offers"}],
    )  # fmt: skip
    config = base_config(sandbox, report_path)
    config["mappings"] = [{"id": "Didomi_Topics__c", "value": "purposes.marketing.values.topics"}]
    record = user(
        "picky@example.com",
        purposes=[{"id": "marketing", "values": {"topics": {"value": ""}}}],
    )
    result = run_target(config, singer_lines([record]))
    assert result.error is None, result.stderr
    line = result.line_for("picky@example.com")
    assert line["outcome"] == "updated", line
    assert line["fields"] == {"Didomi_Topics__c": None}
    assert lead(sandbox, "picky@example.com")["Didomi_Topics__c"] is None


def test_value_map_to_na_marker_is_a_configuration_problem(
    sandbox: Sandbox, report_path: Path
) -> None:
    config = base_config(sandbox, report_path)
    config["mappings"] = [
        {"id": "Consent_Note__c", "value": "purposes.newsletter.enabled",
         "value_map": {"true": "In", "false": "#N/A"}},
    ]  # fmt: skip
    result = run_target(config, singer_lines([]))
    assert isinstance(result.error, ConfigurationError), result.error
    assert "mappings[0]" in str(result.error) and "#N/A" in str(result.error)


# -- 5. numbers into text fields are plain text ---------------------------------------------------


@pytest.mark.parametrize(
    ("note", "written"),
    [
        (0.75, "0.75"),
        (7, "7"),
        (1.5e21, "1500000000000000000000"),
        (-0.000125, "-0.000125"),
        ({"score": 0.75, "n": 2}, '{"n": 2, "score": 0.75}'),
    ],
)
def test_numbers_are_written_as_plain_text(
    sandbox: Sandbox, tmp_path: Path, note: Any, written: str
) -> None:
    config = note_config(sandbox, tmp_path / "first.jsonl")
    records = singer_lines([with_note("jane@example.com", note)])
    first = run_target(config, records)
    assert first.error is None, first.stderr
    assert lead(sandbox, "jane@example.com")["Consent_Note__c"] == written
    assert first.line_for("jane@example.com")["fields"]["Consent_Note__c"] == written

    config["report_path"] = str(tmp_path / "second.jsonl")
    second = run_target(config, records)
    assert second.line_for("jane@example.com")["outcome"] == "skipped_unchanged"


# -- 6. "unchanged" compares what would be sent ------------------------------------------------


@pytest.mark.parametrize(
    ("note", "stored"),
    [
        ("line one\r\nline two", "line one\nline two"),
        ("line one\rline two", "line one\nline two"),
        ("nul\x00here", "nulhere"),
    ],
)
def test_normalised_text_is_unchanged_on_the_next_run(
    sandbox: Sandbox, tmp_path: Path, note: str, stored: str
) -> None:
    config = note_config(sandbox, tmp_path / "first.jsonl")
    records = singer_lines([with_note("jane@example.com", note)])
    first = run_target(config, records)
    assert first.error is None, first.stderr
    assert first.line_for("jane@example.com")["outcome"] == "updated"
    assert lead(sandbox, "jane@example.com")["Consent_Note__c"] == stored
    assert first.line_for("jane@example.com")["fields"]["Consent_Note__c"] == stored
    jobs_before = len(sandbox.ingest_jobs())

    config["report_path"] = str(tmp_path / "second.jsonl")
    second = run_target(config, records)
    assert second.error is None, second.stderr
    assert second.line_for("jane@example.com")["outcome"] == "skipped_unchanged"
    assert len(sandbox.ingest_jobs()) == jobs_before


# -- 9. a setting of the wrong type is reported as such, and nothing is derived from it ---------


def test_string_upsert_mode_is_reported_alone(sandbox: Sandbox, report_path: Path) -> None:
    result = run_target(base_config(sandbox, report_path, upsert_mode="false"), singer_lines([]))
    assert isinstance(result.error, ConfigurationError), result.error
    assert len(result.error.problems) == 1, result.error.problems
    [problem] = result.error.problems
    assert problem.startswith("upsert_mode")
    assert "true or false" in problem
    assert "insert_defaults" not in str(result.error)
    assert "create" not in str(result.error)


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"dry_run": "true"}, "dry_run"),
        ({"fail_on_record_errors": 1}, "fail_on_record_errors"),
        ({"validate_records": "no"}, "validate_records"),
        ({"match_field": 42}, "match_field"),
        ({"consent_timestamp_field": True}, "consent_timestamp_field"),
        ({"api_version": 62.0}, "api_version"),
        ({"on_multiple_matches": ["skip"]}, "on_multiple_matches"),
        ({"batch_size_rows": "100"}, "batch_size_rows"),
    ],
)
def test_settings_of_the_wrong_type_are_reported_alone(
    sandbox: Sandbox, report_path: Path, overrides: dict[str, Any], setting: str
) -> None:
    result = run_target(base_config(sandbox, report_path, **overrides), singer_lines([]))
    assert isinstance(result.error, ConfigurationError), result.error
    assert len(result.error.problems) == 1, result.error.problems
    assert result.error.problems[0].startswith(setting), result.error.problems


def test_report_path_of_the_wrong_type_is_reported_alone(sandbox: Sandbox) -> None:
    config = base_config(sandbox)
    config["report_path"] = ["a.jsonl"]
    with pytest.raises(ConfigurationError) as refused:
        FastTarget(config=config, validate_config=True)
    assert refused.value.problems == [
        "report_path is ['a.jsonl'] (a list): it must be text (a JSON string, in quotes)"
    ]


def test_wrongly_typed_secret_is_not_sent_to_salesforce(
    sandbox: Sandbox, report_path: Path
) -> None:
    result = run_target(base_config(sandbox, report_path, client_secret=12345), singer_lines([]))
    assert isinstance(result.error, ConfigurationError), result.error
    assert result.error.problems == ["client_secret must be a non-empty string"]
    assert sandbox.api_calls().get("token", 0) == 0


# -- startup outage: Salesforce unavailable is not a configuration problem ---------------------


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (503, MAINTENANCE_PAGE, "text/html;charset=UTF-8"),
        (200, MAINTENANCE_PAGE, "text/html;charset=UTF-8"),
        (500, '[{"message":"Server unavailable","errorCode":"SERVER_UNAVAILABLE"}]',
         "application/json;charset=UTF-8"),
    ],
)  # fmt: skip
def test_token_endpoint_outage_is_a_retryable_run_error(
    sandbox: Sandbox, report_path: Path, status: int, body: str, content_type: str
) -> None:
    attempts = FastTarget.retry_policy.max_attempts
    sandbox.fail_next(status, body, count=attempts, path=TOKEN_PATH, content_type=content_type)
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("jane@example.com", purposes=[newsletter(False)])], state={"s": 1}),
    )
    assert isinstance(result.error, RunError), result.error
    message = str(result.error)
    assert "Salesforce is unavailable" in message
    assert "run again" in message.lower()
    assert f"{attempts} attempts" in message
    assert result.states == []
    token_requests = [r for r in sandbox.requests if r.path.rstrip("/").endswith("oauth2/token")]
    assert len(token_requests) == attempts
    assert sandbox.client_secret not in message


def test_outage_that_ends_before_the_last_retry_is_no_error(
    sandbox: Sandbox, report_path: Path
) -> None:
    attempts = FastTarget.retry_policy.max_attempts
    sandbox.fail_next(
        503, MAINTENANCE_PAGE, count=attempts - 1, path=TOKEN_PATH, content_type="text/html"
    )
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("jane@example.com", purposes=[newsletter(False)])]),
    )
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "updated"


def test_exhausted_api_limit_at_start_up_is_a_run_error(
    sandbox: Sandbox, report_path: Path
) -> None:
    sandbox.set_api_limit(15000, remaining=0)
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([user("jane@example.com", purposes=[newsletter(False)])], state={"s": 1}),
    )
    assert isinstance(result.error, RunError), result.error
    assert "REQUEST_LIMIT_EXCEEDED" in str(result.error)
    assert result.states == []


def test_wrong_credentials_stay_a_configuration_error(sandbox: Sandbox, report_path: Path) -> None:
    result = run_target(
        base_config(sandbox, report_path, client_secret="wrong-secret-value"), singer_lines([])
    )
    assert isinstance(result.error, ConfigurationError), result.error


def run_cli_in_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config: dict[str, Any], stdin: str
) -> int:
    """The console entry point with FastTarget (no backoff waits): its exit status."""
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    input_path = tmp_path / "input.jsonl"
    input_path.write_text(stdin)
    monkeypatch.setattr(
        sys, "argv", ["target-salesforce-consent", "--config", str(config_path),
                      "--input", str(input_path)],
    )  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        cli(FastTarget)
    code = exited.value.code
    assert isinstance(code, int), code
    return code


def test_cli_exit_status_one_when_salesforce_is_unavailable(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    sandbox.fail_next(
        503, MAINTENANCE_PAGE, count=FastTarget.retry_policy.max_attempts, path=TOKEN_PATH,
        content_type="text/html",
    )  # fmt: skip
    config = base_config(sandbox, tmp_path / "report.jsonl")
    code = run_cli_in_process(
        monkeypatch, tmp_path, config,
        singer_lines([user("jane@example.com", purposes=[newsletter(False)])], state={"s": 1}),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "target-salesforce-consent: error: Salesforce is unavailable" in captured.err
    assert captured.out == ""
    assert sandbox.client_secret not in captured.err + captured.out


def test_cli_exit_status_two_for_refused_credentials(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    config = base_config(sandbox, tmp_path / "report.jsonl", client_secret="wrong-secret-value")
    code = run_cli_in_process(monkeypatch, tmp_path, config, singer_lines([]))
    assert code == 2
    assert "refused the credentials" in capsys.readouterr().err


# -- pure: the settings check and the outage rule ----------------------------------------------

OFFLINE_CONFIG: dict[str, Any] = {
    "instance_url": "https://acme.my.salesforce.com",
    "client_id": "id",
    "client_secret": "secret",
    "salesforce_object": "Lead",
    "mappings": [{"id": "HasOptedOutOfEmail", "value": "purposes.newsletter.enabled"}],
}


@pytest.mark.parametrize(
    ("setting", "value", "problem"),
    [
        ("upsert_mode", "false", "upsert_mode is 'false' (text): it must be true or false"),
        ("dry_run", 0, "dry_run is 0 (a number): it must be true or false"),
        ("fail_on_record_errors", "yes", "fail_on_record_errors is 'yes' (text)"),
        ("validate_records", [True], "validate_records is [True] (a list)"),
        ("match_field", 7, "match_field is 7 (a number): it must be text"),
        ("consent_timestamp_field", {}, "consent_timestamp_field is {} (an object)"),
        ("on_multiple_matches", True, "on_multiple_matches is True (a boolean)"),
        ("api_version", 62.0, "api_version is 62.0 (a number): it must be text"),
        ("insert_defaults", ["LastName"], "insert_defaults is a list: it must be an object"),
    ],
)
def test_read_settings_names_a_wrong_type_and_reads_it_as_unset(
    setting: str, value: Any, problem: str
) -> None:
    settings, problems = read_settings({**OFFLINE_CONFIG, setting: value})
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem), problems
    assert settings is not None
    assert settings.upsert_mode is False and settings.dry_run is False
    assert settings.match_field == "Email" and settings.consent_timestamp_field is None
    assert settings.on_multiple_matches == "update_all" and settings.api_version == "62.0"


def test_read_settings_null_is_unset() -> None:
    nulls = {
        name: None
        for name in (
            "upsert_mode",
            "dry_run",
            "match_field",
            "regulations",
            "insert_defaults",
            "api_version",
            "on_multiple_matches",
        )
    }
    settings, problems = read_settings({**OFFLINE_CONFIG, **nulls})
    assert problems == []
    assert settings is not None and settings.upsert_mode is False
    assert settings.regulations == frozenset({"gdpr"})


def test_read_settings_wrongly_typed_secret_is_never_echoed_nor_used() -> None:
    settings, problems = read_settings({**OFFLINE_CONFIG, "client_secret": 987654})
    assert settings is None
    assert problems == ["client_secret must be a non-empty string"]


def test_read_settings_refuses_a_value_map_to_the_null_marker() -> None:
    mapping = {"id": "Note__c", "value": "purposes.newsletter.enabled",
               "value_map": {"true": "yes", "false": "#N/A"}}  # fmt: skip
    settings, problems = read_settings({**OFFLINE_CONFIG, "mappings": [mapping]})
    assert len(problems) == 1 and problems[0].startswith("mappings[0] (Note__c): ")
    assert "clear this field" in problems[0]
    assert settings is not None and settings.mappings == ()


@pytest.mark.parametrize(
    ("error", "authenticated", "outage"),
    [
        (SalesforceError("HTTP_503", "down", status=503, transient=True), False, True),
        (SalesforceError("SERVER_UNAVAILABLE", "down", status=503, transient=True), True, True),
        (SalesforceError("CONNECTION_ERROR", "no route", transient=True), False, False),
        (SalesforceError("CONNECTION_ERROR", "reset", transient=True), True, True),
        (SalesforceError("NOT_FOUND", "no such object", status=404), True, False),
        (AuthenticationError("invalid_client", "bad", "check client_secret"), False, False),
    ],
)
def test_is_outage(error: SalesforceError, authenticated: bool, outage: bool) -> None:
    assert is_outage(error, authenticated=authenticated) is outage


def test_a_missing_salesforce_object_is_named_as_missing() -> None:
    config = {k: v for k, v in OFFLINE_CONFIG.items() if k != "salesforce_object"}
    _, problems = read_settings(config)
    assert problems == [
        "salesforce_object is missing: set 'Lead' or 'Contact' (use a second configuration to "
        "sync the other object)"
    ]
