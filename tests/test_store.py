"""The run's store: the newest choice per person and field across batches, and what was written."""

from __future__ import annotations

import random
import sqlite3

import msgspec

from target_salesforce_consent.extract import NO_CHOICE, FieldChoice
from target_salesforce_consent.store import (
    FILTER_MAX_LOG2,
    FILTER_START_LOG2,
    NO_TIMESTAMP,
    BulkInsert,
    KeyFilter,
    PersonBatch,
    PersonRecord,
    PersonState,
    RunStore,
    StoredChoice,
    WrittenRecord,
    _CellCodes,
)

TRUE, FALSE, LIST = FieldChoice("true"), FieldChoice("false"), FieldChoice("N1;N2", True)


def test_batches_fold_into_the_newest_choice_per_field() -> None:
    store = RunStore()
    try:
        jane_first = {"A": (20, 0, "true", False), "B": (10, 1, "x", False)}
        first = store.merge_batch({"jane": PersonBatch("Jane", 20, 0, 20, jane_first)})
        assert first["jane"].choices == {
            "A": StoredChoice(20, "true", False),
            "B": StoredChoice(10, "x", False),
        }
        # an older record of a later batch loses field A, wins field C, and a record without
        # a timestamp loses to every timestamped one
        jane_later = {
            "A": (15, 5, "false", False),
            "C": (15, 5, "N1;N2", True),
            "B": (NO_TIMESTAMP, 6, "y", False),
        }
        john = {"A": (NO_TIMESTAMP, 7, "", False)}
        second = store.merge_batch(
            {
                "jane": PersonBatch("JANE", 15, 5, 15, jane_later),
                "john": PersonBatch("john", NO_TIMESTAMP, 7, None, john),
            }
        )
        jane = second["jane"]
        assert jane.ouid == "Jane"  # as the newest record spells it
        assert jane.newest == 20
        assert jane.choices == {
            "A": StoredChoice(20, "true", False),
            "B": StoredChoice(10, "x", False),
            "C": StoredChoice(15, "N1;N2", True),
        }
        assert second["john"].choices == {"A": StoredChoice(None, "", False)}
        assert second["john"].newest is None
    finally:
        store.close()


def test_written_records_keep_their_first_baseline() -> None:
    store = RunStore()
    try:
        store.record_written([("00Q1", None, 100), ("00Q2", 50, 100)])
        store.record_written([("00Q1", 100, 200)])
        assert store.written(["00Q1", "00Q2", "00Q3"]) == {
            "00Q1": WrittenRecord(None, 200),
            "00Q2": WrittenRecord(50, 100),
        }
    finally:
        store.close()


def test_a_lone_record_is_stored_as_it_came_and_folds_into_later_batches() -> None:
    store = RunStore()
    try:
        first = store.merge_batch(
            {"jane": PersonRecord("Jane", 20, 0, 20, {"A": TRUE, "B": FieldChoice("x")})}
        )
        assert first["jane"] == PersonState(
            "Jane", {"A": StoredChoice(20, "true", False), "B": StoredChoice(20, "x", False)}, 20
        )
        # the next batch's lone record is older for A, speaks to C; its spelling is older
        second = store.merge_batch(
            {"jane": PersonRecord("JANE", 15, 5, 15, {"A": FALSE, "C": LIST})}
        )
        assert second["jane"] == PersonState(
            "Jane",
            {
                "A": StoredChoice(20, "true", False),
                "B": StoredChoice(20, "x", False),
                "C": StoredChoice(15, "N1;N2", True),
            },
            20,
        )
        # a third batch folds what the second stored per field (a merged row)
        third = store.merge_batch(
            {"jane": PersonRecord("jAne", 17, 9, None, {"A": FALSE, "C": NO_CHOICE})}
        )
        assert third["jane"] == PersonState(
            "Jane",
            {
                "A": StoredChoice(20, "true", False),
                "B": StoredChoice(20, "x", False),
                "C": StoredChoice(17, "", False),
            },
            20,
        )
    finally:
        store.close()


def test_a_record_without_timestamp_stored_alone_loses_to_a_later_timestamped_one() -> None:
    store = RunStore()
    try:
        first = store.merge_batch(
            {"john": PersonRecord("John", NO_TIMESTAMP, 3, None, {"A": TRUE})}
        )
        assert first["john"] == PersonState("John", {"A": StoredChoice(None, "true", False)}, None)
        later = store.merge_batch({"john": PersonBatch("JOHN", 5, 8, 5, {"B": (5, 8, "x", False)})})
        assert later["john"] == PersonState(
            "JOHN",
            {"A": StoredChoice(None, "true", False), "B": StoredChoice(5, "x", False)},
            5,
        )
    finally:
        store.close()


def test_a_false_positive_of_the_filter_only_costs_a_lookup() -> None:
    # A filter of 8 bits is full after a few hundred people: every key may have been seen.
    store = RunStore(filter_bits_log2=3)
    try:
        crowd = {f"p{i}": PersonRecord(f"P{i}", i, i, i, {"A": TRUE}) for i in range(300)}
        store.merge_batch(crowd)
        newcomers = {
            f"n{i}": PersonRecord(f"N{i}", 500 + i, 500 + i, None, {"A": FALSE}) for i in range(5)
        }
        assert KeyFilter(3).maybe(newcomers) == []
        assert store._stored.maybe(newcomers) == list(newcomers)  # all false positives
        repeat = {"p7": PersonRecord("p7", 400, 400, 400, {"B": LIST})}
        states = store.merge_batch({**newcomers, **repeat})
        for key, person in newcomers.items():
            assert states[key] == PersonState(
                person.ouid, {"A": StoredChoice(person.ts, "false", False)}, None
            )
        assert states["p7"] == PersonState(
            "p7", {"A": StoredChoice(7, "true", False), "B": StoredChoice(400, "N1;N2", True)}, 400
        )
    finally:
        store.close()


def test_the_filter_never_forgets_a_key_it_was_given() -> None:
    keys = [f"person-{i}@example.com" for i in range(20_000)]
    seen = KeyFilter(bits_log2=20)
    assert len(seen.add(keys[:10_000])) < 100  # false positives among themselves
    assert seen.add(keys[:10_000]) == keys[:10_000]  # each added before
    assert seen.maybe(keys[:10_000]) == keys[:10_000]
    # about 0.9% of the others are false positives at this size, never most of them
    assert len(seen.maybe(keys[10_000:])) < 1_000


def test_a_person_repeated_across_many_batches_keeps_the_newest_choice_per_field() -> None:
    store = RunStore()
    try:
        for batch in range(30):
            states = store.merge_batch(
                {
                    "jane": PersonRecord(
                        "Jane", batch, batch, batch, {f"F{batch % 3}": FieldChoice(str(batch))}
                    ),
                    **{
                        f"x{batch}-{i}": PersonRecord("X", batch, i, None, {"A": TRUE})
                        for i in range(100)
                    },
                }
            )
        assert states["jane"].choices == {
            "F0": StoredChoice(27, "27", False),
            "F1": StoredChoice(28, "28", False),
            "F2": StoredChoice(29, "29", False),
        }
    finally:
        store.close()


def test_choices_beyond_the_numbered_ones_are_stored_in_full() -> None:
    # Each person's own choice object: the first ones are numbered, the rest stored in full.
    store = RunStore()
    try:
        crowd = {
            f"p{i}": PersonRecord(f"P{i}", 100, i, 100, {"A": FieldChoice(f"v{i}"), "B": TRUE})
            for i in range(5_000)
        }
        store.merge_batch(crowd)
        later = {
            key: PersonRecord(key, 50, 10_000 + i, 50, {"A": FALSE, "C": LIST})
            for i, key in enumerate(["p0", "p4999"])
        }
        states = store.merge_batch(later)
        for key in later:
            assert states[key] == PersonState(
                key.upper(),
                {
                    "A": StoredChoice(100, f"v{key[1:]}", False),
                    "B": StoredChoice(100, "true", False),
                    "C": StoredChoice(50, "N1;N2", True),
                },
                100,
            )
    finally:
        store.close()


def test_an_id_spelled_as_its_key_is_read_back_as_spelled() -> None:
    store = RunStore()
    try:
        store.merge_batch({"john": PersonRecord("john", 100, 1, 100, {"A": TRUE})})
        older = store.merge_batch({"john": PersonRecord("JOHN", 50, 2, 50, {"B": FALSE})})
        assert older["john"].ouid == "john"
        newer = store.merge_batch({"john": PersonRecord("John", 200, 3, 200, {"B": TRUE})})
        assert newer["john"].ouid == "John"
        again = store.merge_batch({"john": PersonRecord("JOHN", 150, 4, 150, {"C": TRUE})})
        assert again["john"].ouid == "John"
    finally:
        store.close()


def test_the_filter_starts_small_and_grows_without_losing_a_held_person() -> None:
    store = RunStore(filter_bits_log2=16)  # grows from 2**FILTER_START_LOG2, capped at 2**16
    start = min(FILTER_START_LOG2, 16)
    try:
        assert store._stored.bits_log2 == start == 16  # capped: never larger than asked
    finally:
        store.close()
    store = RunStore()
    try:
        assert store._stored.bits_log2 == FILTER_START_LOG2 < 24
        people = 0
        for batch in range(12):  # 12 x 4,000 people: past what the first size suits
            store.merge_batch(
                {
                    f"p{batch}-{i}": PersonRecord(f"P{batch}-{i}", batch, i, batch, {"A": TRUE})
                    for i in range(4_000)
                }
            )
            people += 4_000
        grown = store._stored.bits_log2
        assert FILTER_START_LOG2 < grown <= 24
        assert people * 32 <= 1 << grown
        # every person held is still found after the rebuild: a later record folds in
        keys = [f"p{batch}-{i}" for batch in range(12) for i in range(0, 4_000, 97)]
        assert store._stored.maybe(keys) == keys
        states = store.merge_batch({"p0-5": PersonRecord("p0-5", 100, 100, 100, {"B": FALSE})})
        assert states["p0-5"] == PersonState(
            "p0-5", {"A": StoredChoice(0, "true", False), "B": StoredChoice(100, "false", False)},
            100,
        )
    finally:
        store.close()


def test_lookups_of_any_number_of_people_share_one_statement() -> None:
    # SQLite keeps each distinct statement compiled in the connection's cache: one per
    # number of people looked up made that cache grow batch after batch.
    store = RunStore()
    statements: set[str] = set()
    try:
        first = {f"p{i}": PersonRecord(f"P{i}", i, i, i, {"A": TRUE}) for i in range(700)}
        store.merge_batch(first)
        store._db.set_trace_callback(statements.add)
        for count in (1, 3, 99, 100, 101, 499, 500, 501, 650):  # people seen before, again
            later = {f"p{i}": PersonRecord(f"P{i}", 1000 + i, 1000 + i, 1000 + i, {"B": FALSE})
                     for i in range(count)}  # fmt: skip
            states = store.merge_batch(later)
            assert len(states) == count
            for i in range(count):  # each found with what the first batch held, and no other
                assert states[f"p{i}"].choices == {
                    "A": StoredChoice(i, "true", False),
                    "B": StoredChoice(1000 + i, "false", False),
                }
        # (the trace shows each statement with its values: the same text means as many)
        sizes = {s.split(" IN (")[1].count(",") + 1 for s in statements if s.startswith("SELECT")}
        assert len(sizes) == 1, f"lookups of {sorted(sizes)} values"
    finally:
        store.close()


def test_the_filter_of_a_long_run_stops_growing_at_one_mib() -> None:
    store = RunStore()
    try:
        store._filtered = 5_000_000  # as if that many people had come in earlier batches
        states = store.merge_batch({"p1": PersonRecord("p1", 1, 1, 1, {"A": TRUE})})
        assert states["p1"].choices == {"A": StoredChoice(1, "true", False)}
        assert store._stored.bits_log2 == FILTER_MAX_LOG2 == 23
        assert len(store._stored._bits) == 1 << 20  # bytes
        assert store._stored.maybe(["p1"]) == ["p1"]
    finally:
        store.close()


def test_rows_inserted_many_to_a_statement_are_what_inserting_each_gives() -> None:
    """An upsert that keeps the larger value, its rows in statements of many, gives what one
    statement a row gives: also when a key repeats within a statement and across them."""
    upsert = " ON CONFLICT (k) DO UPDATE SET v = max(v, excluded.v)"
    picks = random.Random(3)
    for count in (0, 1, BulkInsert.ROWS - 1, BulkInsert.ROWS, 3 * BulkInsert.ROWS + 5):
        rows = [(f"k{picks.randrange(40)}", picks.randrange(1_000)) for _ in range(count)]
        tables = []
        for bulk in (False, True):
            db = sqlite3.connect(":memory:")
            db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID")
            db.execute("INSERT INTO t VALUES ('k1', 500)")  # held before
            with db:
                if bulk:
                    BulkInsert("INSERT INTO t", 2, upsert).run(db, rows)
                else:
                    db.executemany("INSERT INTO t VALUES (?, ?)" + upsert, rows)
            tables.append(db.execute("SELECT k, v FROM t ORDER BY k").fetchall())
            db.close()
        assert tables[0] == tables[1], count
        assert len(tables[0]) == len({"k1", *(k for k, _ in rows)})


def test_a_cells_mapping_met_again_is_encoded_as_it_was_the_first_time() -> None:
    shared = {"A": TRUE, "B": LIST}
    sequence = [shared, {"A": TRUE, "B": LIST}, shared, {"A": FALSE}, {"B": TRUE, "A": TRUE}]
    sequence += [{"A": FieldChoice(f"v{n}")} for n in range(2 * _CellCodes.MAX_ENCODED)]
    cached, plain = _CellCodes(), _CellCodes()
    for cells in sequence * 2:
        plain._encoded.clear()  # each one encoded from its cells
        encoded = cached.encode(cells)
        assert encoded is not None and encoded == plain.encode(cells)
        layout, codes = msgspec.msgpack.decode(encoded)
        assert dict(cached.decode(layout, codes)) == {
            field: (cell.cell, cell.is_list) for field, cell in cells.items()
        }
    assert len(cached._encoded) <= _CellCodes.MAX_ENCODED  # bounded


def test_written_records_are_looked_up_in_any_number_by_one_statement() -> None:
    store = RunStore()
    statements: set[str] = set()
    try:
        store.record_written([(f"00Q{i}", i, 1) for i in range(1_200)])
        # written again (twice in one call): the first baseline stays, the last stamp is kept
        store.record_written([(f"00Q{i}", -1, 2) for i in range(1_200)] * 2 + [
            (f"00Q{i}", -2, 10 * i) for i in range(1_200)
        ])
        store._db.set_trace_callback(statements.add)
        for count in (1, 99, 100, 101, 500, 1_300):  # beyond 1,200: never written
            ids = [f"00Q{i}" for i in range(count)]
            found = store.written(iter(ids + ids[:3]))  # once per id, however often given
            assert found == {
                f"00Q{i}": WrittenRecord(i, 10 * i) for i in range(min(count, 1_200))
            }
        sizes = {s.split(" IN (")[1].count(",") + 1 for s in statements if " IN (" in s}
        assert len(sizes) == 1, f"lookups of {sorted(sizes)} values"
    finally:
        store.close()
