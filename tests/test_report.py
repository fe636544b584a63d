"""Report lines: the fields a plan keeps as JSON text are written as the dict they came from."""

from __future__ import annotations

from typing import Any

import pytest

from target_salesforce_consent.plan import GroupPlan
from target_salesforce_consent.report import Outcome, OutcomeLine, ReportFields

FIELDS: list[dict[str, Any]] = [
    {"HasOptedOutOfEmail": True, "Topics__c": None, "Note__c": "Été \"quoted\"\nline"},
    {"Score__c": 0.1, "Count__c": 12345678901234567890, "At__c": "2024-06-18T16:40:03.512Z"},
    {"Nested__c": [1, "a", {"b": False}], "Empty__c": ""},
]


def line(fields: Any, **more: Any) -> OutcomeLine:
    return OutcomeLine("users", "Ada@x.com", "u-1", "2024-06-18T16:40:03.512Z",
                       Outcome.UPDATED, ("00Q1",), fields, job_id="750x", **more)  # fmt: skip


@pytest.mark.parametrize("fields", FIELDS)
def test_report_fields_read_and_write_as_their_dict(fields: dict[str, Any]) -> None:
    kept = ReportFields.of(fields)
    assert isinstance(kept, ReportFields)
    assert kept == fields and dict(kept) == fields and list(kept) == list(fields)
    assert len(kept) == len(fields) and all(kept[k] == v for k, v in fields.items())
    assert ReportFields.of(kept) is kept
    assert line(kept).to_json() == line(fields).to_json()
    assert line(kept, retry=2).to_json() == line(fields, retry=2).to_json()


def test_report_fields_left_as_a_dict_when_not_json() -> None:
    """A lone surrogate cannot be JSON text: the dict is kept and the fallback writes it."""
    fields = {"Note__c": "bad \ud800 text"}
    assert ReportFields.of(fields) is fields
    assert ReportFields.of({}) == {}
    # a line whose other values need the fallback still writes the fields kept as text
    kept = ReportFields.of({"HasOptedOutOfEmail": True})
    surrogate = OutcomeLine("users", "bad \ud800", None, None, Outcome.FAILED, (), kept)
    plain = OutcomeLine("users", "bad \ud800", None, None, Outcome.FAILED, (),
                        {"HasOptedOutOfEmail": True})  # fmt: skip
    assert surrogate.to_json() == plain.to_json()
    assert '"fields":{"HasOptedOutOfEmail":true}' in surrogate.to_json()


def test_a_plan_keeps_its_fields_as_json_text() -> None:
    plan = GroupPlan(Outcome.SKIPPED_UNCHANGED, ("00Q1",), dict(FIELDS[0]))
    assert isinstance(plan.fields, ReportFields) and plan.fields == FIELDS[0]
