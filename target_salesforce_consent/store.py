"""What the run has merged and written, per person, kept on disk instead of the heap.

Whole-run merging (SPEC 3) needs, for every person seen so far, the newest choice for each
mapped field; newest-consent-wins across batches (SPEC 6) needs, for every Salesforce record
the run wrote, the consent timestamp it held before. Both grow with the stream, and SPEC 9
forbids the heap from doing so, so they live in SQLite's private temporary database: an
on-disk file that SQLite deletes itself when the connection closes (or the process dies),
with a page cache of a few MiB. Each batch reads and updates it with a handful of set-based
statements.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["NO_TIMESTAMP", "PersonState", "RunStore", "StoredChoice", "WrittenRecord"]

#: The sort key of a record without a timestamp: before every timestamped one (SPEC 3).
NO_TIMESTAMP = -(2**62)

_SCHEMA = """
CREATE TABLE choice (
    person TEXT NOT NULL,      -- organization_user_id, lower-cased
    field TEXT NOT NULL,       -- Salesforce field
    ts INTEGER NOT NULL,       -- the choosing record's timestamp, microseconds since the epoch
    seq INTEGER NOT NULL,      -- its arrival order in the run (ties)
    cell TEXT NOT NULL,        -- the CSV cell; '' is "no choice"
    is_list INTEGER NOT NULL,
    PRIMARY KEY (person, field)
) WITHOUT ROWID;
CREATE TABLE person (
    person TEXT PRIMARY KEY,
    ouid TEXT NOT NULL,        -- as the newest record spells it
    ts INTEGER NOT NULL,       -- that record's sort key
    seq INTEGER NOT NULL,
    newest INTEGER             -- newest record timestamp of the run (NULL: none had one)
) WITHOUT ROWID;
CREATE TABLE written (
    sf_id TEXT PRIMARY KEY,
    baseline INTEGER,          -- consent_timestamp_field before the run first wrote it
    stamp INTEGER NOT NULL     -- what the run wrote there last
) WITHOUT ROWID;
CREATE TEMP TABLE batch_key (key TEXT PRIMARY KEY) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class StoredChoice:
    """The newest choice of the run for one person and field."""

    ts: int | None  # microseconds since the epoch; None for a record without a timestamp
    cell: str
    is_list: bool


@dataclass(frozen=True)
class PersonState:
    """Everything the run knows of one person so far."""

    ouid: str
    choices: Mapping[str, StoredChoice]
    newest: int | None


@dataclass(frozen=True, slots=True)
class WrittenRecord:
    baseline: int | None
    stamp: int


@dataclass
class PersonBatch:
    """One batch's records of one person, reduced: newest choice per field."""

    ouid: str
    ts: int  # sort key of the record that gave `ouid`
    seq: int
    newest: int | None
    choices: dict[str, tuple[int, int, str, bool]]  # field -> (ts, seq, cell, is_list)


class RunStore:
    def __init__(self, cache_kib: int = 4096) -> None:
        # "" is SQLite's private temporary on-disk database, removed when closed.
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        self._db.execute("PRAGMA temp_store = FILE")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _keys(self, keys: Iterable[str]) -> None:
        self._db.execute("DELETE FROM batch_key")
        self._db.executemany("INSERT OR IGNORE INTO batch_key VALUES (?)", ((k,) for k in keys))

    def merge_batch(self, batch: Mapping[str, PersonBatch]) -> dict[str, PersonState]:
        """Fold one batch into the run; returns the merged state of the batch's people."""
        db = self._db
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO choice VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (person, field) DO UPDATE "
            "SET ts = excluded.ts, seq = excluded.seq, cell = excluded.cell, "
            "is_list = excluded.is_list "
            "WHERE (excluded.ts, excluded.seq) > (choice.ts, choice.seq)",
            (
                (key, field, ts, seq, cell, is_list)
                for key, people in batch.items()
                for field, (ts, seq, cell, is_list) in people.choices.items()
            ),
        )
        db.executemany(
            "INSERT INTO person VALUES (?, ?, ?, ?, ?) ON CONFLICT (person) DO UPDATE SET "
            "ouid = CASE WHEN (excluded.ts, excluded.seq) > (person.ts, person.seq) "
            "THEN excluded.ouid ELSE person.ouid END, "
            "ts = max(excluded.ts, person.ts), "
            "seq = CASE WHEN (excluded.ts, excluded.seq) > (person.ts, person.seq) "
            "THEN excluded.seq ELSE person.seq END, "
            "newest = CASE WHEN person.newest IS NULL THEN excluded.newest "
            "WHEN excluded.newest IS NULL THEN person.newest "
            "ELSE max(excluded.newest, person.newest) END",
            (
                (key, p.ouid, p.ts, p.seq, p.newest)
                for key, p in batch.items()
            ),
        )
        self._keys(batch)
        choices: dict[str, dict[str, StoredChoice]] = {key: {} for key in batch}
        for key, field, ts, cell, is_list in db.execute(
            "SELECT c.person, c.field, c.ts, c.cell, c.is_list FROM choice c "
            "JOIN batch_key k ON c.person = k.key"
        ):
            choices[key][field] = StoredChoice(
                None if ts == NO_TIMESTAMP else ts, cell, bool(is_list)
            )
        states = {
            key: PersonState(ouid, choices[key], newest)
            for key, ouid, newest in db.execute(
                "SELECT p.person, p.ouid, p.newest FROM person p JOIN batch_key k "
                "ON p.person = k.key"
            )
        }
        db.execute("COMMIT")
        return states

    def written(self, sf_ids: Iterable[str]) -> dict[str, WrittenRecord]:
        """The records among `sf_ids` that this run wrote a consent timestamp to."""
        self._keys(sf_ids)
        return {
            sf_id: WrittenRecord(baseline, stamp)
            for sf_id, baseline, stamp in self._db.execute(
                "SELECT w.sf_id, w.baseline, w.stamp FROM written w JOIN batch_key k "
                "ON w.sf_id = k.key"
            )
        }

    def record_written(self, rows: Iterable[tuple[str, int | None, int]]) -> None:
        """(sf_id, baseline, stamp) of rows written; the first baseline of a record stays."""
        self._db.executemany(
            "INSERT INTO written VALUES (?, ?, ?) ON CONFLICT (sf_id) DO UPDATE "
            "SET stamp = excluded.stamp",
            rows,
        )
