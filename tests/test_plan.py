"""Planning per organization_user_id, as pure functions (no Salesforce involved)."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest

from target_salesforce_consent.didomi import format_timestamp, parse_record
from target_salesforce_consent.extract import FieldChoice, choices_of
from target_salesforce_consent.mapping import FieldMapping, FieldType
from target_salesforce_consent.plan import (
    Row,
    _memos,
    csv_columns,
    current_stamp,
    format_micros,
    from_micros,
    parse_salesforce_datetime,
    plan_group,
    plan_in_full,
    shown_fields,
    to_micros,
)
from target_salesforce_consent.report import Outcome, ReportFields
from target_salesforce_consent.salesforce.bulk import build_csv
from target_salesforce_consent.salesforce.client import query_record_type
from target_salesforce_consent.settings import ResolvedSettings, Settings
from target_salesforce_consent.store import PersonState, RecordChoices, StoredChoice, WrittenRecord

TYPES = {
    "HasOptedOutOfEmail": FieldType("HasOptedOutOfEmail", "boolean"),
    "Topics__c": FieldType("Topics__c", "multipicklist", picklist_values=("A", "B")),
    "Consent_At__c": FieldType("Consent_At__c", "datetime"),
}


def resolved(**settings: Any) -> ResolvedSettings:
    mappings = (
        FieldMapping.from_config(
            {"id": "HasOptedOutOfEmail", "value": "purposes.news.enabled", "invert": True}, 0
        ),
        FieldMapping.from_config({"id": "Topics__c", "value": "purposes.news.values.t"}, 1),
    )
    base = Settings(
        instance_url="https://acme.my.salesforce.com",
        client_id="id",
        client_secret="secret",
        salesforce_object="Lead",
        mappings=mappings,
        **settings,
    )
    return ResolvedSettings(
        settings=base,
        mappings=mappings,
        field_types=TYPES,
        match_field="Email",
        consent_timestamp_field="Consent_At__c"
        if settings.get("consent_timestamp_field")
        else None,
        insert_defaults={"LastName": "Unknown", "Company": "Acme"},
        select_fields=("Id", "Email"),
    )


def consent(
    enabled: bool | None,
    topics: str | None = None,
    at: str = "2024-06-18T16:40:03.512Z",
    ouid: str = "a@b.c",
) -> PersonState:
    """The run's state of a person after one user-shaped record."""
    purpose: dict[str, Any] = {"id": "news", "enabled": enabled}
    if topics is not None:
        purpose["values"] = {"t": {"value": topics}}
    record = {"organization_user_id": ouid, "updated_at": at,
              "consents": {"purposes": [purpose]}}  # fmt: skip
    rec = parse_record(record)
    assert rec.timestamp is not None
    ts = to_micros(rec.timestamp)
    choices = choices_of(rec, resolved().mappings, TYPES)
    return PersonState(
        ouid, {f: StoredChoice(ts, c.cell, c.is_list) for f, c in choices.items()}, ts
    )


def lead(**fields: Any) -> dict[str, Any]:
    return {"Id": "00Q000000000001AAA", "Email": "a@b.c", "IsConverted": False, **fields}


def test_update_sends_only_changed_cells() -> None:
    rs = resolved()
    desired = consent(False, "A,B")
    plan = plan_group(desired, [lead(HasOptedOutOfEmail=True, Topics__c="B;A")], rs)
    assert plan.outcome is Outcome.SKIPPED_UNCHANGED
    plan = plan_group(desired, [lead(HasOptedOutOfEmail=False, Topics__c="B;A")], rs)
    assert plan.outcome is None
    assert plan.update_rows == [{"Id": "00Q000000000001AAA", "HasOptedOutOfEmail": "true"}]
    assert plan.fields == {"HasOptedOutOfEmail": True, "Topics__c": "A;B"}


def test_no_choice_writes_nothing_and_an_empty_selection_clears() -> None:
    rs = resolved()
    nothing = plan_group(consent(None), [lead(HasOptedOutOfEmail=True)], rs)
    assert (nothing.outcome, nothing.fields) == (Outcome.SKIPPED_UNCHANGED, {})
    plan = plan_group(consent(None, ""), [lead(Topics__c="A")], rs)
    assert plan.fields == {"Topics__c": None}
    assert plan.update_rows == [{"Id": "00Q000000000001AAA", "Topics__c": "#N/A"}]


def test_unmatched_converted_and_multiple_matches() -> None:
    rs = resolved()
    desired = consent(True)
    assert plan_group(desired, [], rs).outcome is Outcome.SKIPPED_UNMATCHED
    converted = plan_group(desired, [lead(IsConverted=True)], rs)
    assert converted.outcome is Outcome.SKIPPED_CONVERTED
    assert converted.salesforce_ids == ("00Q000000000001AAA",)
    twins = [lead(HasOptedOutOfEmail=True), {**lead(HasOptedOutOfEmail=True), "Id": "00Q2"}]
    skip = plan_group(desired, twins, resolved(on_multiple_matches="skip"))
    assert skip.outcome is Outcome.SKIPPED_MULTIPLE_MATCHES
    assert skip.salesforce_ids == ("00Q000000000001AAA", "00Q2")
    both = plan_group(desired, twins, rs)
    assert [row["Id"] for row in both.update_rows] == ["00Q000000000001AAA", "00Q2"]


def test_insert_uses_defaults_mapped_values_win_and_nothing_is_cleared() -> None:
    rs = resolved(upsert_mode=True)
    plan = plan_group(consent(True, "", ouid="New@B.c"), [], rs)
    assert plan.outcome is None
    assert plan.insert_row == {
        "LastName": "Unknown",
        "Company": "Acme",
        "HasOptedOutOfEmail": "false",
        "Topics__c": "",
        "Email": "New@B.c",
    }
    assert plan_group(consent(None), [], rs).outcome is Outcome.SKIPPED_UNCHANGED


@pytest.mark.parametrize(
    ("held", "outcome"),
    [
        ("2024-06-18T16:40:03.512+0000", Outcome.SKIPPED_STALE),  # at the consent: stale
        ("2024-06-19T00:00:00.000+0000", Outcome.SKIPPED_STALE),
        ("2024-06-18T16:40:03.511+0000", None),  # a millisecond older: written
        (None, None),
    ],
)
def test_newest_consent_wins(held: str | None, outcome: Outcome | None) -> None:
    rs = resolved(consent_timestamp_field="Consent_At__c")
    plan = plan_group(consent(False), [lead(HasOptedOutOfEmail=False, Consent_At__c=held)], rs)
    assert plan.outcome is outcome
    if outcome is None:
        assert plan.update_rows[0]["Consent_At__c"] == "2024-06-18T16:40:03.512Z"


def test_the_report_shows_the_consent_timestamp_the_row_writes_not_a_copy_of_it() -> None:
    rs = resolved(consent_timestamp_field="Consent_At__c")
    plan = plan_group(consent(False), [lead(HasOptedOutOfEmail=False, Consent_At__c=None)], rs)
    written = plan.update_rows[0]["Consent_At__c"]
    assert isinstance(plan.fields, ReportFields)
    assert plan.fields["Consent_At__c"] == written == "2024-06-18T16:40:03.512Z"
    assert plan.fields.json == msgspec.json.encode(dict(plan.fields))  # the same text
    assert plan.fields._tail is written  # held once for the row and the report


def test_datetime_helpers() -> None:
    moment = datetime(2024, 6, 18, 16, 40, 3, 512999, tzinfo=timezone.utc)
    assert format_timestamp(moment) == "2024-06-18T16:40:03.512Z"
    assert parse_salesforce_datetime("2024-06-18T18:40:03.512+0200") == moment.replace(
        microsecond=512000
    )
    assert parse_salesforce_datetime("not a date") is None
    assert parse_salesforce_datetime(None) is None


def test_csv_columns_follow_the_mapping_order() -> None:
    rows = [{"Id": "1", "Topics__c": "A"}, {"Id": "2", "HasOptedOutOfEmail": "true", "X": "y"}]
    assert csv_columns(["Id"], rows, ["HasOptedOutOfEmail", "Topics__c"]) == [
        "Id",
        "HasOptedOutOfEmail",
        "Topics__c",
        "X",
    ]


def test_a_record_stamped_by_this_run_is_judged_by_its_earlier_timestamp() -> None:
    """Batches cut anywhere give one result: the run's own stamp does not make its records
    stale; a stamp someone else wrote since does."""
    rs = resolved(consent_timestamp_field="Consent_At__c")
    older = consent(False, at="2024-06-10T00:00:00.000Z")
    held = "2024-06-18T16:40:03.512+0000"  # what an earlier batch of this run wrote
    ours = {
        "00Q000000000001AAA": WrittenRecord(
            to_micros(parse_salesforce_datetime("2024-06-01T00:00:00.000+0000")),  # type: ignore[arg-type]
            to_micros(parse_salesforce_datetime(held)),  # type: ignore[arg-type]
        )
    }
    match = [lead(HasOptedOutOfEmail=False, Consent_At__c=held)]
    assert plan_group(older, match, rs).outcome is Outcome.SKIPPED_STALE
    rewritten = plan_group(older, match, rs, ours)
    assert rewritten.update_rows == [{"Id": "00Q000000000001AAA", "HasOptedOutOfEmail": "true"}]
    assert rewritten.stale_at == ours["00Q000000000001AAA"].baseline
    someone_else = [lead(HasOptedOutOfEmail=False, Consent_At__c="2024-06-19T00:00:00.000+0000")]
    assert plan_group(older, someone_else, rs, ours).outcome is Outcome.SKIPPED_STALE


def test_a_choice_older_than_the_record_is_not_written_but_a_newer_one_is() -> None:
    rs = resolved(consent_timestamp_field="Consent_At__c")
    early = to_micros(parse_salesforce_datetime("2024-06-01T00:00:00.000+0000"))  # type: ignore[arg-type]
    late = to_micros(parse_salesforce_datetime("2024-06-20T00:00:00.000+0000"))  # type: ignore[arg-type]
    person = PersonState(
        "a@b.c",
        {
            "HasOptedOutOfEmail": StoredChoice(early, "true", False),
            "Topics__c": StoredChoice(late, "A", True),
        },
        late,
    )
    match = [lead(HasOptedOutOfEmail=False, Consent_At__c="2024-06-10T00:00:00.000+0000")]
    plan = plan_group(person, match, rs)
    assert plan.update_rows == [
        {"Id": "00Q000000000001AAA", "Topics__c": "A", "Consent_At__c": "2024-06-20T00:00:00.000Z"}
    ]


def test_row_reads_and_compares_as_the_dict_of_its_cells() -> None:
    """A plan's row is a tuple of cells over shared columns: read, iterated, compared and
    copied as the dict it replaces (build_csv, the history check and the dry run use it so)."""
    cells = {"Id": "00Q1", "HasOptedOutOfEmail": "true", "Topics__c": "#N/A"}
    row = Row(list(cells), list(cells.values()))
    assert row == cells and cells == row and [row] == [cells]
    assert row != {**cells, "Topics__c": "A"} and row != {"Id": "00Q1"}
    assert dict(row) == cells and list(row) == list(cells) and len(row) == 3
    assert list(row.items()) == list(cells.items())
    assert row["Topics__c"] == "#N/A" and row.get("Topics__c") == "#N/A"
    assert row.get("Consent_At__c") is None and row.get("Consent_At__c", "") == ""
    assert "Id" in row and "Consent_At__c" not in row
    with pytest.raises(KeyError):
        row["Consent_At__c"]
    other = Row(["Id", "HasOptedOutOfEmail", "Topics__c"], ["00Q2", "false", "A"])
    assert other == {"Id": "00Q2", "HasOptedOutOfEmail": "false", "Topics__c": "A"}
    assert other._index is row._index  # the same columns: one shared index
    with pytest.raises(ValueError):
        Row(["Id", "Id"], ["a", "b"])
    with pytest.raises(ValueError):
        Row(["Id"], [])
    assert build_csv(["Id", "Topics__c", "Consent_At__c"], [row]) == build_csv(
        ["Id", "Topics__c", "Consent_At__c"], [cells]
    )


@pytest.mark.parametrize(
    "micros",
    [0, 1, 999, 1_000, 59_999_999, 60_000_000, 1718728803512345, 1718728859999999,
     -1, -1_000, -60_000_001, -62135596800000000 + 61_000_000, 253402300799999999],
)  # fmt: skip
def test_a_timestamp_formatted_from_its_minute_is_formatted_as_in_full(micros: int) -> None:
    assert format_micros(micros) == format_timestamp(from_micros(micros))
    assert format_micros(micros) == format_timestamp(from_micros(micros))  # from the memo


def test_many_minutes_format_as_in_full() -> None:
    pick = random.Random(3)
    for _ in range(10_000):  # more minutes than the memo keeps: it starts over
        micros = pick.randrange(-10**16, 4 * 10**15)
        assert format_micros(micros) == format_timestamp(from_micros(micros))


def test_a_matched_persons_report_is_what_the_first_written_record_receives() -> None:
    """Planning reuses its comparisons for the report: the report equals the one made from
    the first written record (or the first match) alone, whatever the stamps and values."""
    pick = random.Random(11)
    rs = resolved(consent_timestamp_field=True)
    stamps = [None, "2024-06-18T16:40:03.000+0000", "2024-06-18T16:40:03.512+0000",
              "2024-06-18T16:40:04.000+0000", "2023-01-01T00:00:00.000+0000"]  # fmt: skip
    seen: set[Outcome | None] = set()
    for n in range(600):
        person = consent(
            pick.choice([True, False, None]),
            pick.choice([None, "dK7", "", "A", "B"]),
            at=pick.choice(["2024-06-18T16:40:03.512Z", "2024-06-18T16:40:03.999Z"]),
        )
        if pick.random() < 0.5:  # a choice older than the person's newest
            name = pick.choice(list(person.choices))
            old = person.choices[name]
            older = StoredChoice((old.ts or 0) - pick.choice([1, 600_000, 10**9]), old.cell,
                                 old.is_list)  # fmt: skip
            person.choices = {**person.choices, name: older}
        records = [
            {"Id": f"00Q{n}{k}", "HasOptedOutOfEmail": pick.choice([True, False, None]),
             "Topics__c": pick.choice([None, "A", "A;B", ""]),
             "Consent_At__c": pick.choice(stamps)}
            for k in range(pick.choice([1, 1, 2, 3]))
        ]  # fmt: skip
        plan = plan_group(person, records, rs)
        seen.add(plan.outcome)
        if plan.update_rows:
            first = next(r for r in records if r["Id"] == plan.update_rows[0]["Id"])
            expected = shown_fields(person, first, rs, plan.update_rows[0])
        else:
            expected = shown_fields(person, records[0], rs, None)
        assert plan.fields == expected
    assert {None, Outcome.SKIPPED_UNCHANGED, Outcome.SKIPPED_STALE} <= seen


@pytest.mark.parametrize(
    "held",
    ["2024-06-18T16:40:03.512+0000", "2024-06-18T16:40:59.999+0000", "1969-12-31T23:59:59.999+0000",
     "0001-01-01T00:00:00.000+0000", "2024-06-18T16:40:60.000+0000", "2024-06-18T16:40:0a.000+0000",
     "2024-06-18T16:40:03.5x2+0000", "2024-06-18 16:40:03.512+0000", "2024-13-18T16:40:03.512+0000",
     "2024-06-18T16:40:03.512+0100", "2024-06-18T16:40:03.512Z", "2024-06-18T16:40:03.512+00:00",
     "2024-06-18T16:40:03.512345+0000", "2024-06-18T16:40:٣3.512+0000", "not a time", "", None, 5],
)  # fmt: skip
def test_a_records_stamp_read_from_its_minute_is_the_stamp_read_in_full(held: Any) -> None:
    parsed = parse_salesforce_datetime(held)
    expected = to_micros(parsed) // 1000 * 1000 if parsed is not None else None
    assert current_stamp({"At__c": held}, "At__c") == expected
    assert current_stamp({"At__c": held}, "At__c") == expected  # from the memo


def _plan_parts(plan: Any) -> tuple[Any, ...]:
    """A plan as comparable values: rows and fields with their order, fields' JSON as is."""
    fields = plan.fields
    shown = (type(fields), fields.json if isinstance(fields, ReportFields) else fields)
    rows = [list(row.items()) for row in plan.update_rows]
    insert = list(plan.insert_row.items()) if plan.insert_row is not None else None
    return (plan.outcome, plan.salesforce_ids, shown, rows, insert, plan.stale_at,
            plan.baselines, plan.stamp, plan.kept)  # fmt: skip


@pytest.mark.parametrize("upsert", [False, True])
@pytest.mark.parametrize("stamped", [False, True])
@pytest.mark.parametrize("as_struct", [False, True])
def test_plans_shared_by_people_of_the_same_choices_are_the_plans_made_in_full(
    upsert: bool, stamped: bool, as_struct: bool
) -> None:
    """People with the same choices and record values share one plan's fields, cells and
    report JSON: every plan, line for line and byte for byte, is the one made field by field
    for that person, whatever the values held (1, 1.0 and True included) and the stamps."""
    pick = random.Random(f"{upsert}{stamped}{as_struct}")
    rs = resolved(consent_timestamp_field=stamped, upsert_mode=upsert)
    record_type = query_record_type(
        "Lead", ["Id", "Email", "IsConverted", "HasOptedOutOfEmail", "Topics__c", "Consent_At__c"]
    )
    stamps = [None, "", "2024-06-18T16:40:03.000+0000", "2024-06-18T16:40:03.512+0000",
              "2024-06-18T16:40:04.000+0000", "2023-01-01T00:00:00.000+0000", "not a time"]
    held_flags = [True, False, None, 1, 1.0, 0, "true", "", "x"]
    seen: set[Outcome | None] = set()
    for n in range(1500):
        person = consent(
            pick.choice([True, False, None]),
            pick.choice([None, "dK7", "", "A", "B", "A,B"]),
            at=pick.choice(["2024-06-18T16:40:03.512Z", "2024-06-18T16:40:03.999Z",
                            "2024-06-18T16:40:04.000Z"]),
            ouid=f"p{n}@b.c",
        )  # fmt: skip
        if person.choices and pick.random() < 0.4:  # a choice older than the person's newest
            name = pick.choice(list(person.choices))
            old = person.choices[name]
            older = StoredChoice((old.ts or 0) - pick.choice([1, 600_000, 10**9]), old.cell,
                                 old.is_list)  # fmt: skip
            person.choices = {**person.choices, name: older}
        elif pick.random() < 0.5:  # a lone record's choices, as the run store hands them out
            person.choices = RecordChoices(
                {f: FieldChoice(c.cell, c.is_list) for f, c in person.choices.items()},
                person.newest,
            )
        record = {"Id": f"00Q{n:015d}", "Email": person.ouid, "IsConverted": False,
                  "HasOptedOutOfEmail": pick.choice(held_flags),
                  "Topics__c": pick.choice([None, "A", "B;A", "", "A;B", "A;" * 40 + "B"]),
                  "Consent_At__c": pick.choice(stamps)}  # fmt: skip
        matches: list[Any] = []
        if pick.random() < 0.8:
            matches = [msgspec.convert(record, record_type) if as_struct else record]
        written: dict[str, WrittenRecord] = {}
        if pick.random() < 0.3:
            written[f"00Q{n:015d}"] = WrittenRecord(
                pick.choice([None, 1718728803000000]), pick.choice([1718728803512000, 5])
            )
        plan = plan_group(person, matches, rs, written)
        seen.add(plan.outcome)
        as_dict = PersonState(person.ouid, dict(person.choices.items()), person.newest)
        assert _plan_parts(plan) == _plan_parts(plan_in_full(as_dict, matches, rs, written))
    assert {None, Outcome.SKIPPED_UNCHANGED} <= seen
    memo = _memos(rs)[2]
    held_texts = [key[4] for key in memo._cells if isinstance(key[4], str)]
    assert held_texts and max(map(len, held_texts)) <= 64  # long texts are not kept
    # Two people of the same choices, matched by records of the same values: one entry each.
    memo._cells.clear()
    sizes = []
    for n in range(2):
        person = consent(True, "A", ouid=f"same{n}@b.c")
        record = lead(Id=f"00Q{n}", HasOptedOutOfEmail=True, Topics__c="B")
        plan_group(person, [msgspec.convert(record, record_type) if as_struct else record], rs)
        sizes.append(len(memo._cells))
    assert sizes == [2, 2]  # one entry per field, made for the first person only


def test_a_row_picks_its_cells_as_get_reads_them() -> None:
    """A job's CSV reads each row's cells in one call: the same cells as ``get`` per column,
    None for a column the row lacks, whatever the columns asked (one, none, in any order)."""
    row = Row(["Id", "HasOptedOutOfEmail", "Consent_At__c"], ["00Q1", "true", "2024"])
    other = Row(["Id", "Topics__c"], ["00Q2", "A;B"])
    asked = [("Id", "HasOptedOutOfEmail", "Topics__c", "Consent_At__c"),
             ("Consent_At__c", "Id"), ("Topics__c",), ("Id",), (), ("Nope", "Id")]  # fmt: skip
    for columns in asked:
        for each in (row, other, row):  # the second time from the memo
            assert each.pick(columns) == tuple(each.get(c) for c in columns)
    header = ["Id", "HasOptedOutOfEmail", "Topics__c", "Consent_At__c"]
    assert build_csv(header, [row, other]) == build_csv(header, [dict(row), dict(other)])
