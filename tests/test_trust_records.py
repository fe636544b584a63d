"""Records that must neither be misread nor stop the run: purposes keyed by position, webhook
envelopes without the stream's key property, records nested too deep; and settings the
target does not know."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.didomi import RecordError, parse_record, read_needed
from target_salesforce_consent.extract import needs_of
from target_salesforce_consent.mapping import FieldMapping
from tests.conftest import base_config, newsletter, run_target, singer_lines, user
from tests.test_cli import run_cli, write_config


def lead(sb: Sandbox, email: str) -> dict[str, Any]:
    found = [r for r in sb.records("Lead") if (r.get("Email") or "").lower() == email.lower()]
    assert len(found) == 1, found
    return found[0]


# -- purposes keyed by position -----------------------------------------------------------


def test_purposes_keyed_by_position_are_read_by_their_own_id(
    sandbox: Sandbox, report_path: Path
) -> None:
    older = user(
        "jane@example.com",
        purposes=[newsletter(True)],
        updated_at="2024-06-18T10:00:00.000Z",
    )
    # A relay re-encoded the array as an object keyed by position; the newer record withdraws.
    newer = user("jane@example.com", updated_at="2024-06-19T10:00:00.000Z", id="newer")
    newer["consents"]["purposes"] = {
        "0": {"id": "analytics", "enabled": True},
        "1": {"id": "newsletter", "enabled": False},
    }
    result = run_target(base_config(sandbox, report_path), singer_lines([older, newer]))
    assert result.error is None, result.stderr
    assert {line["outcome"] for line in result.report} == {"updated"}
    jane = lead(sandbox, "jane@example.com")
    assert jane["Didomi_Newsletter__c"] is False
    assert jane["HasOptedOutOfEmail"] is True


def test_flattened_purposes_with_index_segments_are_read_by_their_own_id(
    sandbox: Sandbox, report_path: Path
) -> None:
    flat = {
        "id": "flat-1",
        "organization_user_id": "jane@example.com",
        "updated_at": "2024-06-19T10:00:00.000Z",
        "consents__purposes__0__id": "analytics",
        "consents__purposes__0__enabled": True,
        "consents__purposes__1__id": "newsletter",
        "consents__purposes__1__enabled": False,
    }
    result = run_target(base_config(sandbox, report_path), singer_lines([flat]))
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "updated"
    assert lead(sandbox, "jane@example.com")["Didomi_Newsletter__c"] is False


def test_a_purpose_keyed_by_position_without_its_id_fails_the_record_alone(
    sandbox: Sandbox, report_path: Path
) -> None:
    broken = user("jane@example.com")
    broken["consents"]["purposes"] = {"0": {"enabled": False}}
    result = run_target(
        base_config(sandbox, report_path),
        singer_lines([broken, user("john@example.com", purposes=[newsletter(True)])]),
    )
    assert result.error is None, result.stderr
    line = result.line_for("jane@example.com")
    assert line["outcome"] == "failed"
    assert line["error"].startswith("REQUIRED_FIELD_MISSING: consents.purposes.0")
    assert "position" in line["error"]
    assert result.line_for("john@example.com")["outcome"] == "updated"
    assert lead(sandbox, "jane@example.com")["HasOptedOutOfEmail"] is False  # not written


def test_fast_and_full_readers_agree_on_purposes_keyed_by_position() -> None:
    mappings = (FieldMapping.from_config({"id": "X", "value": "purposes.newsletter.enabled"}, 0),)
    raw = {
        "organization_user_id": "a",
        "updated_at": "2024-06-19T10:00:00.000Z",
        "consents": {"purposes": {"0": {"id": "newsletter", "enabled": False}}},
    }
    fast = read_needed(raw, needs_of(mappings))
    full = parse_record(raw)
    assert set(full.consents.purposes) == {"newsletter"}
    assert fast is None or fast.consents.purposes == full.consents.purposes
    with pytest.raises(RecordError):
        parse_record({**raw, "consents": {"purposes": {"0": {"enabled": False}}}})
    assert read_needed({**raw, "consents": {"purposes": {"0": {"enabled": False}}}},
                       needs_of(mappings)) is None  # fmt: skip


# -- webhook envelopes on a stream keyed by id --------------------------------------------


def test_webhook_envelope_without_top_level_id_on_a_stream_keyed_by_id(
    sandbox: Sandbox, report_path: Path
) -> None:
    envelope = {
        "type": "event.created",
        "parameters": {
            "entity": {
                "id": "event-in-envelope",
                "created_at": "2024-06-19T08:00:00.000Z",
                "user": {"id": "u1", "organization_user_id": "jane@example.com"},
                "consents": {"purposes": [newsletter(False)]},
            }
        },
    }
    schema = {"type": "object", "properties": {"id": {"type": ["string", "null"]}}}
    messages = "\n".join(
        json.dumps(m)
        for m in [
            {"type": "SCHEMA", "stream": "webhooks", "schema": schema, "key_properties": ["id"]},
            {"type": "RECORD", "stream": "webhooks", "record": envelope},
            {"type": "RECORD", "stream": "webhooks", "record": {"id": "no-ouid"}},
            {"type": "STATE", "value": {"bookmarks": {"webhooks": "w-1"}}},
        ]
    )
    result = run_target(base_config(sandbox, report_path), messages + "\n")
    assert result.error is None, result.stderr
    line = result.line_for("jane@example.com")
    assert (line["outcome"], line["didomi_id"]) == ("updated", "event-in-envelope")
    assert [o["outcome"] for o in result.report if o["didomi_id"] == "no-ouid"] == [
        "skipped_no_ouid"
    ]
    assert result.states == [{"bookmarks": {"webhooks": "w-1"}}]
    assert lead(sandbox, "jane@example.com")["Didomi_Newsletter__c"] is False


# -- records nested too deep --------------------------------------------------------------


def test_a_record_nested_too_deep_fails_alone(sandbox: Sandbox, tmp_path: Path) -> None:
    report = tmp_path / "report.jsonl"
    config = write_config(tmp_path, base_config(sandbox, report))
    deep = '{"type": "RECORD", "stream": "users", "record": {"organization_user_id": ' + (
        "[" * 100_000 + "]" * 100_000 + "}}"
    )
    lines = singer_lines(
        [user("jane@example.com", purposes=[newsletter(False)])],
        state={"bookmarks": {"users": "2024-06-19"}},
    ).splitlines()
    messages = "\n".join([lines[0], deep, *lines[1:]]) + "\n"
    proc = run_cli(["--config", str(config)], messages)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    outcomes = [json.loads(line) for line in report.read_text().splitlines()]
    assert [o["outcome"] for o in outcomes] == ["failed", "updated"]
    assert outcomes[0]["stream"] == "users"
    assert outcomes[0]["error"].startswith("JSON_PARSER_ERROR: the record is nested deeper")
    assert json.loads(proc.stdout) == {"bookmarks": {"users": "2024-06-19"}}


# -- unknown settings ---------------------------------------------------------------------


def test_a_misspelt_setting_is_a_configuration_error_naming_the_nearest(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    report = tmp_path / "report.jsonl"
    config = base_config(sandbox, report, consent_timestamp_feild="Didomi_Consent_Updated__c")
    proc = run_cli(["--config", str(write_config(tmp_path, config))], "this is not singer\n")
    assert proc.returncode == 2, proc.stderr
    assert (
        "consent_timestamp_feild is not a setting of target-salesforce-consent: did you mean "
        "consent_timestamp_field?" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert not report.exists()
    assert sandbox.records("Lead") and not [r for r in sandbox.requests if r.kind == "query"]


def test_sdk_and_meltano_settings_stay_valid(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(
        sandbox,
        report_path,
        batch_size_rows=100,
        validate_records=False,
        add_record_metadata=False,
        stream_maps={},
        stream_map_config={},
        faker_config={},
        load_method="append-only",
        hard_delete=False,
        flattening_enabled=False,
        flattening_max_depth=1,
    )
    result = run_target(
        config, singer_lines([user("jane@example.com", purposes=[newsletter(False)])])
    )
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "updated"
    assert "load_method does not apply" in result.stderr


def test_an_unknown_setting_without_a_near_name_is_named(
    sandbox: Sandbox, report_path: Path
) -> None:
    result = run_target(base_config(sandbox, report_path, zzz_qqq=1), "")
    assert result.error is not None
    assert "zzz_qqq is not a setting of target-salesforce-consent: remove it" in str(result.error)
