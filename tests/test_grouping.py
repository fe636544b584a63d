"""A batch's records of one person, reduced before they fold into the run's store: the fast
path of a person with one record gives what folding that record field by field gives."""

from __future__ import annotations

import random

import pytest

from target_salesforce_consent.extract import NO_CHOICE, FieldChoice
from target_salesforce_consent.report import Outcome
from target_salesforce_consent.sinks import BufferedRecord, _fold, _person
from target_salesforce_consent.store import NO_TIMESTAMP, PersonBatch, PersonRecord, RunStore

TRUE, LIST = FieldChoice("true"), FieldChoice("N1;N2", True)


def _record(ouid: str, seq: int, ts: int | None, failed: bool = False) -> BufferedRecord:
    if failed:  # a record whose cells cannot be written: "no choice" for its fields
        return BufferedRecord(
            "users", seq, ouid, None, None, ts, {"A": NO_CHOICE, "B": NO_CHOICE},
            outcome=Outcome.FAILED, error="INVALID_UNICODE: ...",
        )  # fmt: skip
    return BufferedRecord("users", seq, ouid, None, None, ts, {"A": TRUE, "B": LIST})


@pytest.mark.parametrize(
    "record",
    [_record("Jane", 4, 1_000), _record("Jane", 4, None), _record("Jane", 4, 1_000, failed=True)],
    ids=["timestamped", "without timestamp", "failed"],
)
def test_a_lone_record_is_what_folding_it_gives(record: BufferedRecord) -> None:
    lone = _person(record)
    assert isinstance(lone, PersonRecord)
    assert lone.folded() == _fold([record])


def test_several_records_fold_into_the_newest_choice_per_field() -> None:
    older = _record("jane", 1, 1_000)
    newer_failed = _record("JANE", 2, 2_000, failed=True)
    person = _person([older, newer_failed])
    # the failed record blocks the older choices, but neither spells the id nor dates it
    assert person == PersonBatch(
        "jane", 1_000, 1, 1_000, {"A": (2_000, 2, "", False), "B": (2_000, 2, "", False)}
    )


def test_a_lone_failed_record_does_not_date_the_person_in_later_batches() -> None:
    store = RunStore()
    try:
        store.merge_batch({"jane": _person(_record("Jane", 1, 5_000, failed=True))})
        later = store.merge_batch({"jane": _person(_record("Jane", 2, 3_000))})
        assert later["jane"].newest == 3_000
        assert later["jane"].choices["A"].ts == 5_000  # the failed record's "no choice" holds
        assert later["jane"].choices["A"].cell == ""
    finally:
        store.close()


def test_a_newer_record_that_came_first_keeps_its_choices() -> None:
    newer = BufferedRecord("users", 1, "Jane", None, None, 2_000, {"A": TRUE, "B": LIST})
    older = BufferedRecord("users", 2, "JANE", None, None, 1_000, {"A": NO_CHOICE, "C": TRUE})
    undated = BufferedRecord("users", 3, "jane", None, None, None, {"C": LIST})
    person = _person([newer, older, undated])
    assert isinstance(person, PersonBatch)
    assert list(person.choices) == ["A", "B", "C"]  # as the fields came: the report's order
    assert person == PersonBatch(
        "Jane",
        2_000,
        1,
        2_000,
        {"A": (2_000, 1, "true", False), "B": (2_000, 1, "N1;N2", True),
         "C": (1_000, 2, "true", False)},
    )  # fmt: skip


def _fold_field_by_field(records: list[BufferedRecord]) -> PersonBatch:
    """The plain fold: every record offered, oldest first, every choice of each."""
    first = records[0]
    fields: dict[str, None] = {}
    for item in records:
        fields.update(dict.fromkeys(item.choices or ()))
    order = (NO_TIMESTAMP if first.ts is None else first.ts, first.seq)
    person = PersonBatch(str(first.ouid), *order, None, {})
    for item in sorted(records, key=lambda r: (NO_TIMESTAMP if r.ts is None else r.ts, r.seq)):
        ts = NO_TIMESTAMP if item.ts is None else item.ts
        if item.outcome is None:
            person.offer_record(str(item.ouid), ts, item.seq, item.ts)
        for field_name, choice in (item.choices or {}).items():
            person.offer_choice(field_name, (ts, item.seq, choice.cell, choice.is_list))
    person.choices = {f: person.choices[f] for f in fields}  # the order the fields came
    return person


def test_folding_newest_first_gives_what_folding_every_record_gives() -> None:
    rng = random.Random(7)
    spellings, cells = ["jane", "Jane", "JANE"], [TRUE, LIST, NO_CHOICE, FieldChoice("false")]
    for _ in range(3_000):
        records = []
        for seq in rng.sample(range(50), rng.randint(2, 8)):
            fields = rng.sample(["A", "B", "C", "D"], rng.randint(0, 4))
            records.append(BufferedRecord(
                "users", seq, rng.choice(spellings), None, None,
                rng.choice([None, 1_000, 2_000, 3_000, rng.randrange(10_000)]),
                {f: rng.choice(cells) for f in fields},
                outcome=Outcome.FAILED if rng.random() < 0.3 else None,
            ))  # fmt: skip
        folded = _fold(records)
        assert folded == _fold_field_by_field(records)
        assert list(folded.choices) == list(_fold_field_by_field(records).choices)
