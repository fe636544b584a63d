"""Pure parts of tap-salesforce-consent: the record, the bookmark, the settings it adds."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from tap_salesforce_consent.changes import SCHEMA, after_bookmark, change_record, chunks
from tap_salesforce_consent.tap import offline_problems, parse_start_date

from target_salesforce_consent.salesforce.history import FieldChange

AT = datetime(2025, 3, 10, 9, 15, 22, tzinfo=timezone.utc)


def change(history_id: str, at: datetime = AT) -> FieldChange:
    return FieldChange(history_id, "00Q000000000001AAA", "HasOptedOutOfEmail", False, True, at,
                       "005000000000002AAA")  # fmt: skip


def test_a_change_becomes_the_documented_record() -> None:
    record = change_record(change("017A"), "Lead", "jane@example.com")
    assert record == {
        "history_id": "017A",
        "salesforce_id": "00Q000000000001AAA",
        "object": "Lead",
        "organization_user_id": "jane@example.com",
        "field": "HasOptedOutOfEmail",
        "old_value": False,
        "new_value": True,
        "changed_at": "2025-03-10T09:15:22.000Z",
        "changed_by_id": "005000000000002AAA",
    }
    assert list(SCHEMA["properties"]) == list(record)
    assert set(SCHEMA["required"]) == {
        "history_id", "salesforce_id", "object", "field", "changed_at", "changed_by_id"
    }  # fmt: skip


def test_the_bookmark_breaks_ties_by_history_id() -> None:
    later = datetime(2025, 3, 10, 9, 15, 23, tzinfo=timezone.utc)
    changes = [change("017A"), change("017B"), change("017C"), change("0170", later)]
    bookmark = {"changed_at": "2025-03-10T09:15:22.000Z", "history_id": "017B"}
    assert [c.history_id for c in after_bookmark(changes, bookmark)] == ["017C", "0170"]
    assert len(list(after_bookmark(changes, None))) == 4


def test_chunks_keep_order() -> None:
    changes = [change(f"017{n:03d}") for n in range(7)]
    assert [len(c) for c in chunks(changes, 3)] == [3, 3, 1]
    assert [c.history_id for part in chunks(changes, 3) for c in part] == [
        c.history_id for c in changes
    ]


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"ignore_user_ids": "005A"}, "ignore_user_ids is '005A'"),
        ({"ignore_user_ids": ["005A", ""]}, "ignore_user_ids is"),
        ({"start_date": "yesterday"}, "start_date is 'yesterday'"),
        ({"ignore_user_ids": ["005A"], "start_date": "2025-01-01"}, None),
    ],
)
def test_the_tap_settings_are_checked(config: dict[str, Any], problem: str | None) -> None:
    problems = offline_problems(config)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(problem)


def test_start_date_is_utc() -> None:
    assert parse_start_date("2025-01-01")[0] == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert parse_start_date("2025-01-01T02:00:00+02:00")[0] == datetime(
        2025, 1, 1, tzinfo=timezone.utc
    )
    assert parse_start_date(None) == (None, None)
