"""Report lines: the fields a plan keeps as JSON text are written as the dict they came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from target_salesforce_consent.plan import GroupPlan
from target_salesforce_consent.report import (
    Outcome,
    OutcomeLine,
    ReportFields,
    RunReport,
    encode_lines,
    plain_json_text,
)

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


def test_a_batch_of_lines_encodes_as_each_line_does() -> None:
    """The batch encoder writes exactly what each line's to_json writes, retry only when set,
    and falls back line by line when one line cannot be JSON as it is."""
    lines = [line(ReportFields.of(f)) for f in FIELDS] + [line(f, retry=3) for f in FIELDS]
    lines.append(OutcomeLine("events", None, None, None, Outcome.SKIPPED_NO_OUID))
    kept = {"00Q1": ["HasOptedOutOfEmail"]}
    lines.append(
        OutcomeLine("users", "a@x", "u", None, Outcome.UPDATED, ("00Q1", "00Q2"), {},
                    salesforce_kept=kept)
    )  # fmt: skip
    expected = "".join(one.to_json() + "\n" for one in lines)
    assert encode_lines(lines) == expected
    assert '"retry":3' in expected and expected.count('"retry"') == len(FIELDS)
    bad = OutcomeLine("users", "bad \ud800", None, None, Outcome.FAILED)
    with_bad = [*lines, bad]
    assert encode_lines(with_bad) == expected + bad.to_json() + "\n"
    assert encode_lines([]) == ""


def test_the_report_file_holds_each_line_as_to_json_writes_it(tmp_path: Path) -> None:
    lines = [line(ReportFields.of(f), retry=n % 3 or None) for n, f in enumerate(FIELDS * 300)]
    lines[400] = OutcomeLine("users", "bad \ud800", None, None, Outcome.FAILED)
    report = RunReport(str(tmp_path / "report.jsonl"))
    counts = report.write_batch(iter(lines))
    report.close()
    assert counts == {Outcome.UPDATED: len(lines) - 1, Outcome.FAILED: 1}
    text = (tmp_path / "report.jsonl").read_text(encoding="utf-8")
    expected = "".join(one.to_json() + "\n" for one in lines)
    assert text == expected.encode("utf-8", "backslashreplace").decode("utf-8")


def test_people_with_the_same_fields_but_the_last_share_the_text_before_it() -> None:
    """The members before the last (the consent timestamp, which differs per person) take few
    values in a run: that part of the text is held once for everyone who has it."""
    first = {"HasOptedOutOfEmail": False, "Topics__c": "News", "At__c": "2024-06-18T16:40:03.512Z"}
    second = {**first, "At__c": "2024-06-19T08:00:00.000Z"}
    kept = [ReportFields.of(first), ReportFields.of(second)]
    assert all(isinstance(k, ReportFields) for k in kept)
    a, b = kept
    assert isinstance(a, ReportFields) and isinstance(b, ReportFields)
    assert a._head is b._head
    assert a == first and b == second
    assert line(a).to_json() == line(first).to_json()
    assert line(b).to_json() == line(second).to_json()
    assert ReportFields.of({"Only__c": 'a,"b'}) == {"Only__c": 'a,"b'}  # a text with `,"`


def test_report_fields_ending_in_a_text_are_the_json_they_are_made_of() -> None:
    stamp = "2024-06-18T16:40:03.512Z"
    whole = ReportFields(b'{"A":true,"At":"2024-06-18T16:40:03.512Z"}')
    ending = ReportFields.ending_in_text(b'{"A":true,"At":"', stamp)
    assert ending.json == whole.json == b'{"A":true,"At":"2024-06-18T16:40:03.512Z"}'
    assert ending == whole == {"A": True, "At": stamp}
    assert plain_json_text(stamp, msgspec.json.encode(stamp))
    for escaped in ('a"b', "a\\b", "line\nbreak", "caf\u00e9"):  # not written as they are
        assert not plain_json_text(escaped, msgspec.json.encode(escaped)), escaped
