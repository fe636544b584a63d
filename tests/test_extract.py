"""Per-field choices: reducing records to the newest choice per field equals merging them.

Whole-run merging keeps only the newest choice per person and mapped field (extract.py,
store.py). These tests check, on many generated sequences of user- and event-shaped records,
that this gives exactly what merging all the records in one batch (didomi.merge) and
then mapping the merged state gives.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from target_salesforce_consent.didomi import ConsentRecord, merge, parse_record, read_needed
from target_salesforce_consent.extract import (
    NOT_CARRIED,
    CellError,
    ChoiceReader,
    FieldChoice,
    PlainChoiceReader,
    choices_of,
    needs_of,
    path_value,
)
from target_salesforce_consent.mapping import (
    FieldMapping,
    FieldType,
    parse_source_path,
    to_csv_cell,
)
from target_salesforce_consent.plan import to_micros
from target_salesforce_consent.sinks import choice_problem

PATHS = {
    "News__c": ("purposes.news.enabled", "boolean"),
    "NewsLi__c": ("purposes.news.enabled_li", "boolean"),
    "OptOut__c": ("purposes.news.enabled", "boolean"),
    "Topics__c": ("purposes.news.values.topics", "multipicklist"),
    "TopicA__c": ("purposes.news.values.topics.A", "boolean"),
    "Digest__c": ("purposes.news.preferences.digest.enabled", "boolean"),
    "DigestSms__c": ("purposes.news.preferences.digest.channels.sms.enabled", "boolean"),
    "Sms__c": ("purposes.sms.enabled", "boolean"),
    "Email__c": ("channels.email.enabled", "boolean"),
    "Vendor__c": ("vendors.v1", "boolean"),
    "Plan__c": ("metadata.plan", "string"),
    "Nested__c": ("metadata.profile.tier", "string"),
    "Updated__c": ("updated_at", "datetime"),
    "Created__c": ("created_at", "datetime"),
    "Regulation__c": ("regulation", "string"),
    "Ouid__c": ("organization_user_id", "string"),
}
MAPPINGS = tuple(
    FieldMapping.from_config(
        {"id": field, "value": path, **({"invert": True} if field == "OptOut__c" else {})}, i
    )
    for i, (field, (path, _)) in enumerate(PATHS.items())
)
TYPES = {field: FieldType(field, ftype) for field, (_, ftype) in PATHS.items()}
TIMES = [None, "2024-06-01T10:00:00.000Z", "2024-06-01T10:00:00.000Z", "2024-06-02T08:30:00.250Z",
         "2024-06-03T00:00:00.000Z", "2024-06-04T12:00:00.001Z"]  # fmt: skip


def _maybe(rng: random.Random, value: Any) -> Any:
    return rng.choice([value, None, "absent"])


def _purpose(rng: random.Random, pid: str) -> dict[str, Any]:
    purpose: dict[str, Any] = {"id": pid}
    for key in ("enabled", "enabled_li"):
        value = _maybe(rng, rng.random() < 0.5)
        if value != "absent":
            purpose[key] = value
    if rng.random() < 0.6:
        selected = rng.sample(["A", "B", "C"], rng.randint(0, 2))
        purpose["values"] = {"topics": {"value": ",".join(selected)}}
    if rng.random() < 0.5:
        channel = _maybe(rng, rng.random() < 0.5)
        preference: dict[str, Any] = {"id": "digest", "enabled": _maybe(rng, rng.random() < 0.5)}
        if preference["enabled"] == "absent":
            del preference["enabled"]
        if channel != "absent":
            preference["channels"] = [{"id": "sms", "enabled": channel}]
        purpose["preferences"] = [preference]
    return purpose


def _record(rng: random.Random, index: int) -> dict[str, Any]:
    consents: dict[str, Any] = {
        "purposes": [_purpose(rng, pid) for pid in ("news", "sms") if rng.random() < 0.7]
    }
    if rng.random() < 0.5:
        consents["channels"] = [{"id": "email", "enabled": rng.choice([True, False, None])}]
    if rng.random() < 0.5:
        lists: dict[str, list[str]] = {"enabled": [], "disabled": []}
        for name in lists:
            if rng.random() < 0.4:
                lists[name].append("v1")
        consents["vendors"] = lists
    metadata: dict[str, Any] = {}
    if rng.random() < 0.5:
        metadata["plan"] = rng.choice(["gold", "silver", None])
    if rng.random() < 0.3:
        metadata["profile"] = rng.choice([{"tier": "t1"}, {"other": 1}, None])
    ouid = rng.choice(["jane@example.com", "Jane@Example.com"])
    stamp = rng.choice(TIMES)
    if rng.random() < 0.5:  # user-shaped
        record: dict[str, Any] = {
            "id": f"u{index}",
            "organization_user_id": ouid,
            "consents": consents,
            "metadata": metadata,
            "regulation": rng.choice(["gdpr", "cpra"]),
        }
        if stamp is not None:
            record["updated_at"] = stamp
        if rng.random() < 0.5:
            record["created_at"] = "2024-05-01T00:00:00.000Z"
        return record
    event: dict[str, Any] = {
        "id": f"e{index}",
        "user": {"organization_user_id": ouid, "metadata": metadata},
        "consents": consents,
    }
    if stamp is not None:
        event["created_at"] = stamp
    return event


def _merged_cells(records: list[ConsentRecord]) -> dict[str, str]:
    merged = merge(records)
    cells = {}
    for mapping in MAPPINGS:
        value = mapping.value_for(merged)
        if value is not None:
            cells[mapping.field] = to_csv_cell(value, TYPES[mapping.field])
    return cells


def _newest_choices(records: list[ConsentRecord]) -> dict[str, str]:
    held: dict[str, tuple[tuple[int, int], FieldChoice]] = {}
    for seq, rec in enumerate(records):
        order = (to_micros(rec.timestamp) if rec.timestamp else -(2**62), seq)
        for field, choice in choices_of(rec, MAPPINGS, TYPES).items():
            if field not in held or order > held[field][0]:
                held[field] = (order, choice)
    return {field: choice.cell for field, (_, choice) in held.items() if choice.cell}


@pytest.mark.parametrize("seed", range(400))
def test_newest_choice_per_field_equals_merging_in_one_batch(seed: int) -> None:
    rng = random.Random(seed)
    records = [parse_record(_record(rng, i)) for i in range(rng.randint(1, 6))]
    assert _newest_choices(records) == _merged_cells(records)


def test_a_user_record_speaks_to_every_consent_path_and_an_event_only_to_what_it_carries() -> None:
    user = parse_record(
        {"organization_user_id": "a", "consents": {"purposes": [{"id": "news", "enabled": True}]}}
    )
    event = parse_record(
        {"user": {"organization_user_id": "a"}, "consents": {"purposes": [{"id": "news"}]}}
    )
    enabled = parse_source_path("purposes.news.enabled")
    other = parse_source_path("purposes.sms.enabled")
    assert path_value(enabled, user) is True
    assert path_value(other, user) is None  # "no choice", replacing older choices
    assert path_value(enabled, event) is NOT_CARRIED  # a null never erases a known choice
    assert path_value(other, event) is NOT_CARRIED
    assert path_value(parse_source_path("metadata.plan"), user) is NOT_CARRIED
    assert path_value(parse_source_path("updated_at"), user) is NOT_CARRIED


# -- the plain reader: from the record as sent straight to the choices -----------------------

#: Mappings whose conversion can fail or give a cell that cannot be sent (the full path decides).
ODD_PATHS = {
    "Mapped__c": ("purposes.news.values.topics", "multipicklist", {"A": "Alpha", "B": "#N/A"}),
    "Flag__c": ("purposes.sms.enabled", "string", {"true": "#N/A"}),
    "Member__c": ("purposes.news.values.topics.B", "string", {"false": "no"}),
    "Number__c": ("metadata.plan", "double", {}),
}
ODD_MAPPINGS = tuple(
    FieldMapping.from_config({"id": f, "value": path, "value_map": vmap}, i)
    for i, (f, (path, _, vmap)) in enumerate(ODD_PATHS.items())
)
ODD_TYPES = {f: FieldType(f, ftype) for f, (_, ftype, _) in ODD_PATHS.items()}


def _full_read(raw: Any, reader: ChoiceReader) -> Any:
    """What the full path gives: the record and its choices (or the error they raise)."""
    rec = read_needed(raw, needs_of(reader.mappings))
    if rec is None:
        return None
    try:
        return rec, reader.choices(rec)
    except CellError as exc:
        return rec, str(exc)


def assert_plain_choices_equal_full_ones(
    raw: Any, mappings: tuple[FieldMapping, ...], types: dict[str, FieldType]
) -> bool:
    """The plain reader gives the full path's choices, or leaves the record to it; True when
    it read the record."""
    full = _full_read(raw, ChoiceReader(mappings, types))
    plain = PlainChoiceReader(mappings, types).read(raw)
    if plain is None:
        return False
    assert full is not None, raw  # read_plain reads only what read_needed reads
    rec, choices = full
    assert choices == plain[1], raw
    assert list(choices) == list(plain[1])  # in the order of the mappings
    assert choice_problem(plain[1]) is None  # what the plain path of BatchProcessor.read skips
    assert plain[0].ouid == rec.ouid and plain[0].kind == rec.kind
    return True


@pytest.mark.parametrize("seed", range(300))
def test_the_plain_reader_gives_the_choices_of_the_full_path(seed: int) -> None:
    from tests.test_didomi import mutate

    rng = random.Random(seed)
    raw = _record(rng, seed)
    assert assert_plain_choices_equal_full_ones(raw, MAPPINGS, TYPES)  # the common shapes
    assert_plain_choices_equal_full_ones(raw, ODD_MAPPINGS, ODD_TYPES)
    for _ in range(20):
        odd = mutate(raw, rng)
        assert_plain_choices_equal_full_ones(odd, MAPPINGS, TYPES)
        assert_plain_choices_equal_full_ones(odd, ODD_MAPPINGS, ODD_TYPES)


def test_a_cell_that_cannot_be_sent_is_left_to_the_full_path() -> None:
    purposes: list[dict[str, Any]] = [
        {"id": "news", "values": {"topics": {"value": "A"}}},
        {"id": "sms", "enabled": True},  # "#N/A" in a text field
    ]
    raw = {"organization_user_id": "a", "consents": {"purposes": purposes}}
    assert isinstance(_full_read(raw, ChoiceReader(ODD_MAPPINGS, ODD_TYPES))[1], str)
    assert PlainChoiceReader(ODD_MAPPINGS, ODD_TYPES).read(raw) is None
    purposes[1]["enabled"] = False
    plain = PlainChoiceReader(ODD_MAPPINGS, ODD_TYPES).read(raw)
    assert plain is not None
    assert plain[1] == {
        "Mapped__c": FieldChoice("Alpha", True),
        "Flag__c": FieldChoice("false"),
        "Member__c": FieldChoice("no"),
    }
