"""The run's store: the newest choice per person and field across batches, and what was written."""

from __future__ import annotations

from target_salesforce_consent.store import (
    NO_TIMESTAMP,
    PersonBatch,
    RunStore,
    StoredChoice,
    WrittenRecord,
)


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
