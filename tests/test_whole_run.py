"""Consent that stays right across a whole run through the sandbox.

The outcome of a run must not depend on where its batches are cut, on the streams the records
come by, or on their order of arrival: the newest choice of each field wins, and a record at or
before the consent timestamp Salesforce holds contributes nothing.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from tests.conftest import SEED, base_config, event, newsletter, run_target, singer_lines, user

TS_FIELD = "Didomi_Consent_Updated__c"
MAPPINGS = [
    {"id": "Didomi_Newsletter__c", "value": "purposes.newsletter.enabled"},
    {"id": "SMS_Opt_In__c", "value": "purposes.sms.enabled"},
    {"id": "Didomi_Topics__c", "value": "purposes.newsletter.values.topics"},
    {"id": "Consent_Note__c", "value": "metadata.note"},
]
MAPPED = [m["id"] for m in MAPPINGS]


def sms(enabled: bool | None) -> dict[str, Any]:
    return {"id": "sms", "enabled": enabled}


def topics(*chosen: str, enabled: bool | None = None) -> dict[str, Any]:
    return {"id": "newsletter", "enabled": enabled,
            "values": {"topics": {"value": ",".join(chosen)}}}  # fmt: skip


def lead_of(sb: Sandbox, email: str) -> dict[str, Any]:
    found = [r for r in sb.records("Lead") if (r.get("Email") or "").lower() == email.lower()]
    assert len(found) == 1, found
    return found[0]


def person_records(ouid: str) -> dict[str, dict[str, Any]]:
    """One person's history, named by age: every field's newest value comes from another record.

    Merged in one batch: newsletter false (E11), sms false and topics Events (E12), note "v10"
    (U10); U09 is a replay older than everything.
    """
    return {
        "U09": user(ouid, purposes=[newsletter(True), sms(True), topics("News", enabled=True)],
                    updated_at="2024-06-01T09:00:00.000Z", metadata={"note": "v09"}),
        "U10": user(ouid, purposes=[topics("News", "Offers", enabled=True), sms(True)],
                    updated_at="2024-06-01T10:00:00.000Z", metadata={"note": "v10"}),
        "E11": event(ouid, purposes=[newsletter(False)], created_at="2024-06-01T11:00:00.000Z"),
        "E12": event(ouid, purposes=[topics("Events"), sms(False)],
                     created_at="2024-06-01T12:00:00.000Z"),
    }  # fmt: skip


EXPECTED = {
    "Didomi_Newsletter__c": False,
    "SMS_Opt_In__c": False,
    "Didomi_Topics__c": "Events",
    "Consent_Note__c": "v10",
}
ORDERS = {
    "older first": ["U09", "U10", "E11", "E12"],
    "newer first": ["E12", "E11", "U10", "U09"],
    "interleaved": ["E11", "U09", "E12", "U10"],
    "users then events": ["U10", "U09", "E12", "E11"],
}


def _messages(records: dict[str, dict[str, Any]], order: list[str]) -> str:
    # users and events on two streams, as a tap reading both endpoints sends them
    return "".join(
        singer_lines([records[name]], stream="users" if name.startswith("U") else "events")
        for name in order
    )


@pytest.mark.parametrize("batch_size", [1, 2, 100])
@pytest.mark.parametrize("with_timestamp", [False, True])
@pytest.mark.parametrize("order", list(ORDERS))
def test_one_persons_records_end_the_same_whatever_the_batches_and_order(
    order: str, with_timestamp: bool, batch_size: int, tmp_path: Path
) -> None:
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        extra = {TS_FIELD: None} if with_timestamp else {}
        config = base_config(sb, tmp_path / "report.jsonl", mappings=MAPPINGS,
                             batch_size_rows=batch_size, fail_on_record_errors=True)  # fmt: skip
        if with_timestamp:
            config["consent_timestamp_field"] = TS_FIELD
        messages = _messages(person_records("jane@example.com"), ORDERS[order])
        result = run_target(config, messages)
        assert result.error is None, result.stderr
        jane = lead_of(sb, "jane@example.com")
        assert {f: jane.get(f) for f in MAPPED} == EXPECTED
        if with_timestamp:
            assert jane[TS_FIELD].startswith("2024-06-01T12:00:00.000")
        assert len(result.report) == 4
        assert all(line["error"] is None for line in result.report)
        assert extra or TS_FIELD not in result.report[0]["fields"]


@pytest.mark.parametrize("order", list(ORDERS))
def test_upsert_creates_the_person_once_with_the_merged_values(order: str, tmp_path: Path) -> None:
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        defaults = {"LastName": "Unknown", "Company": "Didomi"}
        config = base_config(sb, tmp_path / "report.jsonl", mappings=MAPPINGS, batch_size_rows=1,
                             upsert_mode=True, consent_timestamp_field=TS_FIELD,
                             insert_defaults=defaults)  # fmt: skip
        result = run_target(config, _messages(person_records("new@example.com"), ORDERS[order]))
        assert result.error is None, result.stderr
        created = lead_of(sb, "new@example.com")  # exactly one
        assert {f: created.get(f) for f in MAPPED} == EXPECTED
        assert created[TS_FIELD].startswith("2024-06-01T12:00:00.000")
        outcomes = [line["outcome"] for line in result.report]
        assert outcomes[0] == "inserted"
        assert "inserted" not in outcomes[1:]


@pytest.mark.parametrize("order", list(ORDERS))
def test_a_dry_run_plans_the_merged_values_and_writes_nothing(order: str, tmp_path: Path) -> None:
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        before = lead_of(sb, "jane@example.com")
        config = base_config(sb, tmp_path / "report.jsonl", mappings=MAPPINGS, batch_size_rows=1,
                             dry_run=True, consent_timestamp_field=TS_FIELD)  # fmt: skip
        result = run_target(config, _messages(person_records("jane@example.com"), ORDERS[order]))
        assert result.error is None, result.stderr
        assert lead_of(sb, "jane@example.com") == before
        assert sb.api_calls().get("ingest_create", 0) == 0
        assert result.states == []
        # the last record's plan carries the whole run's merged values
        last = result.report[-1]
        assert {f: last["fields"].get(f) for f in MAPPED} == EXPECTED
        # and every outcome is the real run's
        real = run_target({**config, "dry_run": False, "report_path": str(tmp_path / "real")},
                          _messages(person_records("jane@example.com"), ORDERS[order]))  # fmt: skip
        expected = [line["outcome"].replace("updated", "would_update") for line in real.report]
        assert [line["outcome"] for line in result.report] == expected


def test_an_older_choice_of_a_later_batch_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    """Issue 7, case 1 without consent_timestamp_field."""
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        config = base_config(sb, tmp_path / "report.jsonl", batch_size_rows=2)
        newer = user("jane@example.com", purposes=[newsletter(False)],
                     updated_at="2024-06-01T12:00:00.000Z")  # fmt: skip
        older = user("jane@example.com", purposes=[newsletter(True)],
                     updated_at="2024-06-01T10:00:00.000Z")  # fmt: skip
        others = [user("john@example.com", purposes=[newsletter(True)])]
        result = run_target(config, singer_lines([newer, *others, older]))
        assert result.error is None, result.stderr
        jane = lead_of(sb, "jane@example.com")
        assert jane["Didomi_Newsletter__c"] is False
        assert jane["HasOptedOutOfEmail"] is True
        outcomes = [
            line["outcome"]
            for line in result.report
            if line["organization_user_id"] == "jane@example.com"
        ]
        assert outcomes == ["updated", "skipped_unchanged"]


def test_an_unwritten_newer_choice_still_outranks_a_later_older_one(tmp_path: Path) -> None:
    """Issue 7, case 1 with consent_timestamp_field: batch 1 was unchanged (no stamp written)."""
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        sb.add_records("Lead", [{"LastName": "Held", "Company": "Acme", "Email": "held@example.com",
                                 "Didomi_Newsletter__c": False,
                                 TS_FIELD: "2024-06-01T09:00:00.000Z"}])  # fmt: skip
        config = base_config(sb, tmp_path / "report.jsonl", batch_size_rows=1,
                             consent_timestamp_field=TS_FIELD,
                             mappings=[MAPPINGS[0]])  # fmt: skip
        at_12 = user("held@example.com", purposes=[newsletter(False)],
                     updated_at="2024-06-01T12:00:00.000Z")  # fmt: skip
        at_10 = user("held@example.com", purposes=[newsletter(True)],
                     updated_at="2024-06-01T10:00:00.000Z")  # fmt: skip
        result = run_target(config, singer_lines([at_12, at_10]))
        assert result.error is None, result.stderr
        held = lead_of(sb, "held@example.com")
        assert held["Didomi_Newsletter__c"] is False
        assert held[TS_FIELD].startswith("2024-06-01T09:00:00.000")  # nothing was written
        assert [line["outcome"] for line in result.report] == [
            "skipped_unchanged",
            "skipped_unchanged",
        ]


@pytest.mark.parametrize("replay_shape", ["event", "user"])
def test_a_replayed_record_in_a_batch_is_stale_on_its_own(
    replay_shape: str, tmp_path: Path
) -> None:
    """Issue 7, case 2: the guard applies per record before merging."""
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        sb.add_records("Lead", [{"LastName": "Held", "Company": "Acme", "Email": "held@example.com",
                                 "Didomi_Newsletter__c": True, "SMS_Opt_In__c": False,
                                 TS_FIELD: "2024-06-01T11:00:00.000Z"}])  # fmt: skip
        config = base_config(sb, tmp_path / "report.jsonl", consent_timestamp_field=TS_FIELD,
                             mappings=MAPPINGS[:2])  # fmt: skip
        if replay_shape == "event":
            replay = event("held@example.com", purposes=[newsletter(False)],
                           created_at="2024-06-01T10:00:00.000Z")  # fmt: skip
        else:
            replay = user("held@example.com", purposes=[newsletter(False)],
                          updated_at="2024-06-01T10:00:00.000Z")  # fmt: skip
        new = event("held@example.com", purposes=[sms(True)], created_at="2024-06-01T12:00:00.000Z")
        result = run_target(config, singer_lines([replay, new]))
        assert result.error is None, result.stderr
        held = lead_of(sb, "held@example.com")
        assert held["Didomi_Newsletter__c"] is True  # the replay wrote nothing
        assert held["SMS_Opt_In__c"] is True
        assert held[TS_FIELD].startswith("2024-06-01T12:00:00.000")
        assert [line["outcome"] for line in result.report] == ["skipped_stale", "updated"]


def test_an_id_too_long_for_a_query_fails_alone(tmp_path: Path) -> None:
    """Issue 7, case 7: 2,000 CJK characters fit the literal limit but not the URI."""
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        config = base_config(sb, tmp_path / "report.jsonl")
        long_id = "顧" * 2000
        others = [user(f"person{i}@example.com", purposes=[newsletter(True)]) for i in range(9)]
        records = [user(long_id, purposes=[newsletter(True)]), *others,
                   user("jane@example.com", purposes=[newsletter(False)])]  # fmt: skip
        result = run_target(config, singer_lines(records, state={"bookmarks": {"users": 1}}))
        assert result.error is None, result.stderr
        line = result.line_for(long_id)
        assert line["outcome"] == "failed"
        assert line["error"].startswith("STRING_TOO_LONG: ")
        assert "URI" in line["error"]
        assert lead_of(sb, "jane@example.com")["Didomi_Newsletter__c"] is False
        assert sum(1 for line in result.report if line["outcome"] == "skipped_unmatched") == 9
        assert result.states == [{"bookmarks": {"users": 1}}]


def test_an_unreadable_envelope_is_reported_with_the_inner_records_identity(
    tmp_path: Path,
) -> None:
    """Issue 7, case 8."""
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        config = base_config(sb, tmp_path / "report.jsonl")
        inner = event("jane@example.com", purposes=[], created_at="2024-06-01T10:00:00.000Z")
        inner["id"] = "inner-event-id"
        inner["consents"] = "{not json"
        envelope = {"id": "envelope-id", "type": "event.created",
                    "parameters": {"new_entity": inner}}  # fmt: skip
        result = run_target(config, singer_lines([envelope]))
        assert result.error is None, result.stderr
        (line,) = result.report
        assert line["outcome"] == "failed"
        assert line["error"].startswith("JSON_PARSER_ERROR")
        assert line["didomi_id"] == "inner-event-id"
        assert line["organization_user_id"] == "jane@example.com"
        assert line["timestamp"] == "2024-06-01T10:00:00.000Z"


def test_many_people_over_many_batches_match_one_batch(tmp_path: Path) -> None:
    """Every permutation of three records for each of six people, cut into batches of 5."""
    base = {
        "a": user("{}", purposes=[newsletter(True), sms(True)], updated_at="2024-06-01T10:00:00Z"),
        "b": event("{}", purposes=[newsletter(False)], created_at="2024-06-01T11:00:00Z"),
        "c": user("{}", purposes=[newsletter(True), sms(False)], updated_at="2024-06-01T09:00:00Z"),
    }
    people = []
    records = []
    for n, perm in enumerate(itertools.permutations("abc")):
        ouid = f"p{n}@example.com"
        people.append(ouid)
        for name in perm:
            rec = copy.deepcopy(base[name])
            if "user" in rec:
                rec["user"]["organization_user_id"] = ouid
            else:
                rec["organization_user_id"] = ouid
            records.append(rec)
    results = []
    for batch_size in (5, 1000):
        with Sandbox(seed=copy.deepcopy(SEED)) as sb:
            sb.add_records("Lead", [{"LastName": p, "Company": "A", "Email": p} for p in people])
            config = base_config(sb, tmp_path / f"r{batch_size}.jsonl", mappings=MAPPINGS[:2],
                                 batch_size_rows=batch_size)  # fmt: skip
            result = run_target(config, singer_lines(records))
            assert result.error is None, result.stderr
            results.append({p: (lead_of(sb, p)["Didomi_Newsletter__c"],
                                lead_of(sb, p)["SMS_Opt_In__c"]) for p in people})  # fmt: skip
    assert results[0] == results[1] == {p: (False, True) for p in people}
