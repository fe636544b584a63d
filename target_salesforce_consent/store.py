"""What the run has merged and written, per person, kept on disk instead of the heap.

Whole-run merging needs, for every person seen so far, the newest choice for each
mapped field; newest-consent-wins across batches needs, for every Salesforce record
the run wrote, the consent timestamp it held before. Both grow with the stream, and memory
must stay flat, so they live in SQLite's private temporary database: an
on-disk file that SQLite deletes itself when the connection closes (or the process dies),
with a page cache of a few MiB. Each batch reads and updates it with a handful of set-based
statements.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

__all__ = ["NO_TIMESTAMP", "PersonState", "RunStore", "StoredChoice", "WrittenRecord"]

#: The sort key of a record without a timestamp: before every timestamped one.
NO_TIMESTAMP = -(2**62)

_SCHEMA = """
CREATE TABLE person (
    person TEXT PRIMARY KEY,   -- organization_user_id, lower-cased
    ouid TEXT NOT NULL,        -- as the newest record spells it
    ts INTEGER NOT NULL,       -- that record's sort key: timestamp in microseconds since the
    seq INTEGER NOT NULL,      --   epoch (NO_TIMESTAMP when none), then arrival order
    newest INTEGER,            -- newest record timestamp of the run (NULL: none had one)
    choices BLOB NOT NULL      -- per field, the newest choice: [[field, ts, seq, cell, is_list]]
) WITHOUT ROWID;
CREATE TABLE written (
    sf_id TEXT PRIMARY KEY,
    baseline INTEGER,          -- consent_timestamp_field before the run first wrote it
    stamp INTEGER NOT NULL     -- what the run wrote there last
) WITHOUT ROWID;
CREATE TABLE batch_key (key TEXT PRIMARY KEY) WITHOUT ROWID;  -- the keys of one lookup
"""

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[str, int, int, str, bool]]).decode


@dataclass(slots=True)
class StoredChoice:
    """The newest choice of the run for one person and field."""

    ts: int | None  # microseconds since the epoch; None for a record without a timestamp
    cell: str
    is_list: bool


@dataclass(slots=True)
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

    def offer_record(self, ouid: str, ts: int, seq: int, newest: int | None) -> None:
        """A record of this person: the newest one (timestamp, then arrival) spells the id."""
        if (ts, seq) > (self.ts, self.seq):
            self.ouid, self.ts, self.seq = ouid, ts, seq
        if newest is not None and (self.newest is None or newest > self.newest):
            self.newest = newest

    def offer_choice(self, field: str, choice: tuple[int, int, str, bool]) -> None:
        """A choice for `field`: kept unless a newer one (timestamp, then arrival) is held."""
        held = self.choices.get(field)
        if held is None or choice[:2] > held[:2]:
            self.choices[field] = choice


class RunStore:
    def __init__(self, cache_kib: int = 4096) -> None:
        # "" is SQLite's private temporary on-disk database, removed when closed.
        # Used by one thread at a time: the batch worker, then the thread that ends the run.
        self._db = sqlite3.connect("", check_same_thread=False)
        self._db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        self._db.execute("PRAGMA temp_store = FILE")
        self._db.execute("PRAGMA journal_mode = OFF")  # nothing to recover: the run owns it
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _keys(self, keys: Iterable[str]) -> None:
        """The keys of the next lookup (one transaction: autocommit per row is 10x slower)."""
        with self._db:
            self._db.execute("DELETE FROM batch_key")
            self._db.executemany("INSERT OR IGNORE INTO batch_key VALUES (?)", ((k,) for k in keys))

    def merge_batch(self, batch: Mapping[str, PersonBatch]) -> dict[str, PersonState]:
        """Fold one batch into the run; returns the merged state of the batch's people.

        The batch's PersonBatch objects take in what earlier batches held (updated in place).
        """
        db = self._db
        self._keys(batch)
        held = {
            key: (ouid, ts, seq, newest, choices)
            for key, ouid, ts, seq, newest, choices in db.execute(
                "SELECT p.person, p.ouid, p.ts, p.seq, p.newest, p.choices FROM person p "
                "JOIN batch_key k ON p.person = k.key"
            )
        }
        rows = []
        states = {}
        for key, person in batch.items():
            earlier = held.get(key)
            if earlier is not None:
                old_ouid, old_ts, old_seq, old_newest, old_choices = earlier
                person.offer_record(old_ouid, old_ts, old_seq, old_newest)
                for field, c_ts, c_seq, cell, is_list in _decode(old_choices):
                    person.offer_choice(field, (c_ts, c_seq, cell, is_list))
            merged = person.choices
            rows.append(
                (key, person.ouid, person.ts, person.seq, person.newest,
                 _encode([(f, *choice) for f, choice in merged.items()]))
            )  # fmt: skip
            states[key] = PersonState(
                person.ouid,
                {
                    field: StoredChoice(None if c_ts == NO_TIMESTAMP else c_ts, cell, is_list)
                    for field, (c_ts, _, cell, is_list) in merged.items()
                },
                person.newest,
            )
        with db:
            db.executemany("INSERT OR REPLACE INTO person VALUES (?, ?, ?, ?, ?, ?)", rows)
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
        with self._db:
            self._db.executemany(
                "INSERT INTO written VALUES (?, ?, ?) ON CONFLICT (sf_id) DO UPDATE "
                "SET stamp = excluded.stamp",
                rows,
            )
