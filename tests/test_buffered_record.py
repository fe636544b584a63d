"""A buffered record keeps every attribute as it was given, however it stores it: the
timestamp text when it is the canonical form of ``ts`` is made again when read, and the
fields few records use share one slot."""

from __future__ import annotations

import random

import pytest

from target_salesforce_consent.didomi import fast_stamp, format_timestamp
from target_salesforce_consent.extract import FieldChoice
from target_salesforce_consent.plan import from_micros, to_micros
from target_salesforce_consent.report import Outcome
from target_salesforce_consent.sinks import BufferedRecord, _Group, canonical_stamp
from target_salesforce_consent.store import PersonState

TRUE = FieldChoice("true")
MAX_TS = to_micros(from_micros(0).replace(year=9999, month=12, day=31, hour=23, minute=59))


def test_the_canonical_text_of_an_instant_is_what_format_timestamp_writes() -> None:
    picks = random.Random(16)
    instants = [picks.randint(-62_135_596_800_000_000, MAX_TS) for _ in range(20_000)]
    # around the epoch, day and hour boundaries, sub-millisecond parts (truncated)
    instants += [0, -1, 999, 1_000, 86_399_999_999, 86_400_000_000, -86_400_000_001]
    instants += [1_735_689_599_999_999 + step for step in range(-2_500, 2_500, 7)]
    for ts in instants:
        assert canonical_stamp(ts) == format_timestamp(from_micros(ts)), ts
    assert canonical_stamp(MAX_TS + 10**12) is None  # year 10000: no text to make


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        ("2024-06-18T16:40:03.512Z", 1_718_728_803_512_000),  # canonical: made again
        ("2024-06-18T16:40:03.512Z", 1_718_728_803_512_999),  # truncated: still canonical
        ("2024-06-18T16:40:03.512Z", 1_718_728_803_513_000),  # another instant: kept
        ("2024-06-18T18:40:03.512+02:00", 1_718_728_803_512_000),  # as sent: kept
        ("2024-06-18T16:40:03Z", 1_718_728_803_000_000),  # another form: kept
        ("1969-12-31T23:59:59.999Z", -1),
        (None, 1_718_728_803_512_000),
        ("2024-06-18T16:40:03.512Z", None),
        (None, None),
    ],
)
def test_a_record_gives_back_the_timestamp_text_it_was_given(
    text: str | None, ts: int | None
) -> None:
    item = BufferedRecord("users", 7, "Jane", "u-1", text, ts, {"A": TRUE})
    assert item.timestamp == text
    assert item.ts == ts
    assert (item.stream, item.seq, item.ouid, item.didomi_id) == ("users", 7, "Jane", "u-1")
    assert item.choices == {"A": TRUE}


def test_a_canonical_timestamp_is_not_kept_as_text() -> None:
    text = "2024-06-18T16:40:03.512Z"
    item = BufferedRecord("users", 7, "Jane", "u-1", text, 1_718_728_803_512_000)
    assert item.timestamp == text
    assert item._stamp is not text  # made again when read (the memory it saves)
    item.timestamp = "as sent"
    assert item.timestamp == "as sent"


def test_the_rarely_used_fields_read_back_as_given_and_default_to_none() -> None:
    plain = BufferedRecord("users", 1, "Jane", None, None, 5, {"A": TRUE})
    assert (plain.outcome, plain.error, plain.fields, plain.retry, plain.failed_key) == (
        None, None, None, None, None,
    )  # fmt: skip
    assert plain.spooled is False
    assert plain._rare is None  # nothing unusual: nothing held for them
    failed = BufferedRecord(
        "events", 2, None, "e-1", "x", outcome=Outcome.FAILED, error="CODE: why",
        fields={"F": 1}, spooled=True, retry=3, failed_key="k",
    )  # fmt: skip
    assert (failed.outcome, failed.error, failed.fields, failed.retry, failed.failed_key) == (
        Outcome.FAILED, "CODE: why", {"F": 1}, 3, "k",
    )  # fmt: skip
    assert failed.spooled is True
    plain.retry, plain.failed_key = 2, "key"
    plain.outcome = Outcome.SKIPPED_FILTERED
    plain.spooled = True
    assert (plain.outcome, plain.error, plain.retry, plain.failed_key, plain.spooled) == (
        Outcome.SKIPPED_FILTERED, None, 2, "key", True,
    )  # fmt: skip
    plain.error = None  # setting a default on a record without them keeps nothing
    fresh = BufferedRecord("users", 1, "Jane", None, None)
    fresh.error = None
    assert fresh._rare is None


def test_records_compare_by_value() -> None:
    text, ts = "2024-06-18T16:40:03.512Z", 1_718_728_803_512_000
    one = BufferedRecord("users", 1, "Jane", None, text, ts)
    same = BufferedRecord("users", 1, "Jane", None, text, ts)
    assert one == same
    same.retry = 1
    assert one != same
    assert "timestamp='2024-06-18T16:40:03.512Z'" in repr(one)


def test_a_group_gives_back_its_members_in_arrival_order() -> None:
    state = PersonState("Jane", {}, None)
    first = BufferedRecord("users", 1, "Jane", None, None, 5, {"A": TRUE})
    second = BufferedRecord("events", 2, "JANE", None, None, 6, {"A": TRUE})
    alone = _Group(state, [(3, first)])
    assert alone.members == ((3, first),)
    assert alone._members is None  # one record: no tuples kept
    both = _Group(state, [(3, first), (8, second)])
    assert both.members == ((3, first), (8, second))
    assert [seq for seq, _ in both.members] == [3, 8]
    assert alone.state is both.state is state and alone.plan is None


@pytest.mark.parametrize("ts", [1_718_728_803_512_000, 1_718_728_803_512_999, -1, 0, None])
def test_a_record_read_with_a_canonical_timestamp_is_the_record_given_its_text(
    ts: int | None,
) -> None:
    choices = {"A": TRUE}
    read = BufferedRecord.read("users", 7, "Jane", "u-1", ts, choices)
    text = None if ts is None else canonical_stamp(ts)
    assert read == BufferedRecord("users", 7, "Jane", "u-1", text, ts, choices)
    assert read.timestamp == text
    assert read.choices is choices
    assert (read.outcome, read.error, read.fields, read.spooled) == (None, None, None, False)


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-06-18T16:40:03.512Z",  # Didomi's form
        "2024-06-18T18:40:03.512+02:00",
        "2024-06-18T16:40:03.512999Z",  # finer than milliseconds: truncated
        "2024-06-18T16:40:03Z",
        "0001-01-01T00:00:00.000Z",
        "1969-12-31T23:59:59.999999Z",
    ],
)
def test_the_plain_readers_timestamp_text_is_the_canonical_one_of_its_instant(stamp: str) -> None:
    # BufferedRecord.read relies on it: the text is made again from the instant when read.
    read = fast_stamp(stamp)
    assert read is not None
    text, ts = read
    assert text == canonical_stamp(ts)
