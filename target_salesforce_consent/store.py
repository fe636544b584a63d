"""What the run has merged and written, per person, kept on disk instead of the heap.

Whole-run merging needs, for every person seen so far, the newest choice for each
mapped field; newest-consent-wins across batches needs, for every Salesforce record
the run wrote, the consent timestamp it held before. Both grow with the stream, and memory
must stay flat, so they live in SQLite's private temporary database: an
on-disk file that SQLite deletes itself when the connection closes (or the process dies),
with a page cache of 512 KiB (its pages are read back from the OS's file cache: a larger
cache measured no less CPU).

Most people have one record in a batch and were never seen before in the run, so a batch
folds in without work per field for them:

- a person with one record in the batch (:class:`PersonRecord`) is not merged field by
  field: its choices are that record's, all at the record's (timestamp, arrival); several
  records of one person come as a :class:`PersonBatch`, already reduced;
- a membership filter (:class:`KeyFilter`, a Bloom filter of 128 KiB growing with the
  people held to at most 1 MiB however long the run) says which people of the batch the
  table may already hold: only those are read back (a false positive costs one lookup that
  finds nothing);
- a person's row keeps the (timestamp, arrival) of the record that spelled its id (the id
  itself only when spelled otherwise than the lower-cased key); choices made by that record
  are stored without one, and those of a lone record as two small numbers (the fields it
  speaks to and each field's choice, see :class:`_CellCodes`);
- a batch's rows are written in key order, many to a statement.

The merged state handed back (:class:`PersonState`) shares one :class:`StoredChoice` among a
person's fields that hold the same choice (most hold true or false).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, Protocol

import msgspec

__all__ = [
    "FILTER_MAX_LOG2",
    "FILTER_START_LOG2",
    "NO_TIMESTAMP",
    "BulkInsert",
    "KeyFilter",
    "PersonBatch",
    "PersonRecord",
    "PersonState",
    "RunStore",
    "StoredChoice",
    "WrittenRecord",
]

#: The sort key of a record without a timestamp: before every timestamped one.
NO_TIMESTAMP = -(2**62)

_SCHEMA = """
CREATE TABLE person (
    person TEXT PRIMARY KEY,   -- organization_user_id, lower-cased
    ouid TEXT,                 -- as the newest record spells it (NULL: as `person`)
    ts INTEGER NOT NULL,       -- that record's sort key: timestamp in microseconds since the
    seq INTEGER NOT NULL,      --   epoch (NO_TIMESTAMP when none), then arrival order
    newest INTEGER,            -- newest record timestamp of the run (NULL: none had one)
    choices BLOB NOT NULL      -- per field, the newest choice (msgpack): [layout, [choice]]
                               --   (_CellCodes), chosen at the row's ts and seq; or a list of
                               --   [field, cell, is_list] (also at the row's ts and seq) or
                               --   [field, ts, seq, cell, is_list]; field: its number
) WITHOUT ROWID;
CREATE TABLE written (
    sf_id TEXT PRIMARY KEY,
    baseline INTEGER,          -- consent_timestamp_field before the run first wrote it
    stamp INTEGER NOT NULL     -- what the run wrote there last
) WITHOUT ROWID;
"""

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[Any]).decode

#: Keys per lookup statement: compiled, a statement of 500 held about 110 KiB of SQLite's
#: memory for as long as the run, one of 100 about 20 KiB, for the same CPU per key.
_LOOKUP_CHUNK = 100
#: The lookups, always with as many parameters (a shorter list is filled up with NULL, which
#: equals no key). A statement per list length would be compiled and kept in the
#: connection's statement cache once per batch (its last, shorter chunk), about 25 KiB
#: each: up to 128 of them, memory that grew over a long run.
_IN_KEYS = " IN (" + ",".join("?" * _LOOKUP_CHUNK) + ")"
_LOOKUP = "SELECT person, ouid, ts, seq, newest, choices FROM person WHERE person" + _IN_KEYS
_LOOKUP_WRITTEN = "SELECT sf_id, baseline, stamp FROM written WHERE sf_id" + _IN_KEYS
_NO_KEYS: list[str | None] = [None] * _LOOKUP_CHUNK


class BulkInsert:
    """An INSERT of rows many to a statement: fewer calls into SQLite than a statement a row
    (the caller makes it one transaction). ``head``: up to ``VALUES``; ``tail``: after."""

    ROWS = 64  # rows per statement

    def __init__(self, head: str, columns: int, tail: str = "") -> None:
        row = "(" + ", ".join("?" * columns) + ")"
        self._one = f"{head} VALUES {row}{tail}"
        self._many = f"{head} VALUES {', '.join([row] * self.ROWS)}{tail}"

    def run(self, db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        many = self.ROWS
        full = len(rows) - len(rows) % many
        db.executemany(  # each statement's values made as it runs: no list of them all
            self._many,
            (list(chain.from_iterable(rows[i : i + many])) for i in range(0, full, many)),
        )
        db.executemany(self._one, rows[full:])


_INSERT_PERSONS = BulkInsert("INSERT OR REPLACE INTO person", 6)
_INSERT_WRITTEN = BulkInsert(
    "INSERT INTO written", 3, " ON CONFLICT (sf_id) DO UPDATE SET stamp = excluded.stamp"
)


class Cell(Protocol):
    """A record's choice for one field (the reader's FieldChoice)."""

    @property
    def cell(self) -> str: ...

    @property
    def is_list(self) -> bool: ...


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


@dataclass(slots=True)
class PersonRecord:
    """A batch's only record of a person: every choice at the record's (ts, seq)."""

    ouid: str
    ts: int  # sort key: timestamp in microseconds (NO_TIMESTAMP when none)
    seq: int  # then arrival order
    newest: int | None  # the record's timestamp, None when it has none or failed
    cells: Mapping[str, Cell]

    def folded(self) -> PersonBatch:
        order = (self.ts, self.seq)
        return PersonBatch(
            self.ouid, self.ts, self.seq, self.newest,
            {f: (*order, c.cell, c.is_list) for f, c in self.cells.items()},
        )  # fmt: skip


@dataclass(slots=True)
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


class KeyFilter:
    """Which keys may have been added: a Bloom filter of two probes per key.

    Never says no for a key that was added; says yes for one that was not with a probability
    of about 0.013% after 100,000 keys and 1.3% after 1,000,000 (at the default 2**24 bits,
    2 MiB; 4.5% at 2**23 bits, 1 MiB). The probes come from Python's own (cached) hash of the
    string, so it only holds within one process, which is all the run needs.
    """

    __slots__ = ("_bits", "_mask", "_shift", "bits_log2")

    def __init__(self, bits_log2: int = 24) -> None:
        if not 3 <= bits_log2 <= 32:
            raise ValueError(f"bits_log2 must be between 3 and 32, not {bits_log2}")
        self.bits_log2 = bits_log2
        self._bits = bytearray(1 << (bits_log2 - 3))
        self._mask = (1 << bits_log2) - 1
        self._shift = 32  # the second probe reads the hash's upper half

    def add(self, keys: Iterable[str]) -> list[str]:
        """Adds `keys`; returns those among them that may have been added before."""
        bits, mask, shift = self._bits, self._mask, self._shift
        seen = []
        for key in keys:
            h = hash(key)
            a = h & mask
            b = (h >> shift) & mask
            byte_a, bit_a, byte_b, bit_b = a >> 3, 1 << (a & 7), b >> 3, 1 << (b & 7)
            if bits[byte_a] & bit_a and bits[byte_b] & bit_b:
                seen.append(key)
            else:
                bits[byte_a] |= bit_a
                bits[byte_b] |= bit_b
        return seen

    def maybe(self, keys: Iterable[str]) -> list[str]:
        """The keys among `keys` that may have been added."""
        bits, mask, shift = self._bits, self._mask, self._shift
        found = []
        for key in keys:
            h = hash(key)
            a = h & mask
            if bits[a >> 3] >> (a & 7) & 1:
                b = (h >> shift) & mask
                if bits[b >> 3] >> (b & 7) & 1:
                    found.append(key)
        return found


class RecordChoices(Mapping[str, StoredChoice]):
    """A lone record's cells as stored choices, all at the record's time, made when read.

    A batch's people are merged before any of them is planned, and planning reads each
    person's choices once: made then, they are freed person by person instead of being held
    for the whole batch (half a KiB a person). The cells are the reader's, shared by the
    records that gave the same choices (``cells``, one object for all of them, never changed
    in place: planning remembers its work by it); ``ts`` is every choice's time.
    """

    __slots__ = ("cells", "ts")

    def __init__(self, cells: Mapping[str, Cell], ts: int | None) -> None:
        self.cells = cells
        self.ts = ts

    def __getitem__(self, field: str) -> StoredChoice:
        cell = self.cells[field]
        return StoredChoice(self.ts, cell.cell, cell.is_list)

    def __contains__(self, field: object) -> bool:
        return field in self.cells

    def __iter__(self) -> Iterator[str]:
        return iter(self.cells)

    def __len__(self) -> int:
        return len(self.cells)

    def items(self) -> list[tuple[str, StoredChoice]]:  # type: ignore[override]
        """Fields holding the same choice share one."""
        ts = self.ts
        by_cell: dict[int, StoredChoice] = {}  # the reader hands out shared constants
        choices = []
        for field, cell in self.cells.items():
            stored = by_cell.get(id(cell))
            if stored is None:
                stored = by_cell[id(cell)] = StoredChoice(ts, cell.cell, cell.is_list)
            choices.append((field, stored))
        return choices


def _merged_choices(
    choices: Mapping[str, tuple[int, int, str, bool]],
) -> dict[str, StoredChoice]:
    """Merged choices as stored choices: fields holding the same choice share one."""
    stored: dict[str, StoredChoice] = {}
    by_choice: dict[tuple[int, int, str, bool], StoredChoice] = {}
    for field, choice in choices.items():
        shared = by_choice.get(choice)
        if shared is None:
            ts, _, cell, is_list = choice
            shared = by_choice[choice] = StoredChoice(
                None if ts == NO_TIMESTAMP else ts, cell, is_list
            )
        stored[field] = shared
    return stored


class _CellCodes:
    """A record's cells as two small numbers: the fields it speaks to (in its order) and,
    per field, the choice.

    The reader hands out a few shared FieldChoice objects (true, false, a selection) and
    records mostly speak to the same fields: both are numbered as they come, up to a bound
    (beyond it, or for a choice made for one record only, :meth:`encode` gives None). A
    choice object is known by its id, and kept so that the id stays its own.
    """

    MAX_LAYOUTS = 1024
    MAX_CHOICES = 4096
    #: The reader also shares one cells mapping among the records that give the same choices
    #: (a mapping nobody changes): the last ones encoded are kept with their encoding.
    MAX_ENCODED = 256

    def __init__(self) -> None:
        self._layouts: dict[tuple[str, ...], int] = {}
        self._layout_fields: list[tuple[str, ...]] = []
        self._by_id: dict[int, int] = {}  # id of a kept choice object -> its code
        self._kept: list[Cell] = []
        self._by_value: dict[tuple[str, bool], int] = {}
        self._values: list[tuple[str, bool]] = []  # code -> (cell, is_list)
        # id of a cells mapping -> (the mapping, kept so that the id stays its own; encoding)
        self._encoded: dict[int, tuple[Mapping[str, Cell], bytes]] = {}

    def encode(self, cells: Mapping[str, Cell]) -> bytes | None:
        held = self._encoded.get(id(cells))
        if held is not None and held[0] is cells:
            return held[1]
        layout = self._layouts.get(tuple(cells))
        codes = list(map(self._by_id.get, map(id, cells.values())))
        if layout is None or None in codes:
            if not self._learn(cells):
                return None
            return self.encode(cells)
        encoded = _encode((layout, codes))
        if len(self._encoded) >= self.MAX_ENCODED:
            self._encoded.clear()
        self._encoded[id(cells)] = (cells, encoded)
        return encoded

    def decode(self, layout: int, codes: list[int]) -> Iterable[tuple[str, tuple[str, bool]]]:
        return zip(self._layout_fields[layout], map(self._values.__getitem__, codes), strict=True)

    def _learn(self, cells: Mapping[str, Cell]) -> bool:
        """Numbers the layout and the choices of `cells`; False when the bounds are reached."""
        fields = tuple(cells)
        new_choices = [c for c in cells.values() if id(c) not in self._by_id]
        if (fields not in self._layouts and len(self._layouts) >= self.MAX_LAYOUTS) or (
            len(self._kept) + len(new_choices) > self.MAX_CHOICES
        ):
            return False
        if fields not in self._layouts:
            self._layouts[fields] = len(self._layout_fields)
            self._layout_fields.append(fields)
        for choice in new_choices:
            if id(choice) in self._by_id:  # the same object twice in one record
                continue
            value = (choice.cell, choice.is_list)
            code = self._by_value.get(value)
            if code is None:
                code = self._by_value[value] = len(self._values)
                self._values.append(value)
            self._by_id[id(choice)] = code
            self._kept.append(choice)
        return True


def _spelling(key: str, ouid: str) -> str | None:
    """The id as stored: None when spelled as the key (most are), which keeps rows short."""
    return None if ouid == key else ouid


#: The membership filter's first size (128 KiB), and the keys per bit it holds before it
#: grows: 2 probes at 32 bits a key give about 0.4% false positives at most.
FILTER_START_LOG2 = 20
_FILTER_BITS_PER_KEY = 32
#: Its largest size (1 MiB): past about 260,000 people, false positives grow to about 4.5% at
#: 1,000,000, each one a lookup that finds nothing (a few milliseconds a batch), where the
#: memory of a larger filter would be held to the end of the run.
FILTER_MAX_LOG2 = 23


class RunStore:
    def __init__(self, cache_kib: int = 512, filter_bits_log2: int = FILTER_MAX_LOG2) -> None:
        """`filter_bits_log2`: the membership filter's largest size (2**23 bits: 1 MiB)."""
        # "" is SQLite's private temporary on-disk database, removed when closed.
        # Used by one thread at a time: the batch worker, then the thread that ends the run.
        self._db = sqlite3.connect("", check_same_thread=False)
        self._db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        self._db.execute("PRAGMA temp_store = FILE")
        self._db.execute("PRAGMA journal_mode = OFF")  # nothing to recover: the run owns it
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.executescript(_SCHEMA)
        # The people the table may hold: small at first, grown as they come (most runs are
        # short; a long one reaches the largest size once it holds ~130,000 people).
        self._filter_max_log2 = filter_bits_log2
        self._stored = KeyFilter(min(FILTER_START_LOG2, filter_bits_log2))
        self._filtered = 0  # keys given to the filter: at least the people held
        self._codes = _CellCodes()
        self._field_numbers: dict[str, int] = {}
        self._field_names: list[str] = []

    def close(self) -> None:
        self._db.close()

    def _lookup(self, statement: str, keys: Iterable[str]) -> Iterator[Any]:
        """The rows `statement` (_LOOKUP or _LOOKUP_WRITTEN) finds for `keys`."""
        keys = iter(keys)
        while True:
            chunk: list[str | None] = list(islice(keys, _LOOKUP_CHUNK))
            if not chunk:
                return
            if len(chunk) < _LOOKUP_CHUNK:  # one statement for every lookup (see _LOOKUP)
                chunk += _NO_KEYS[len(chunk) :]
            yield from self._db.execute(statement, chunk)

    def _filter(self, keys: Mapping[str, Any]) -> list[str]:
        """Adds `keys` to the membership filter; returns those the table may hold.

        A filter about to hold more keys than its size suits is rebuilt larger from the
        table's keys first (a Bloom filter cannot be resized in place)."""
        self._filtered += len(keys)
        size = self._stored.bits_log2
        while self._filtered * _FILTER_BITS_PER_KEY > 1 << size and size < self._filter_max_log2:
            size = min(size + 2, self._filter_max_log2)
        if size != self._stored.bits_log2:
            grown = KeyFilter(size)
            grown.add(key for (key,) in self._db.execute("SELECT person FROM person"))
            self._stored = grown
        return self._stored.add(keys)

    def _number(self, field: str) -> int:
        number = self._field_numbers.get(field)
        if number is None:
            number = self._field_numbers[field] = len(self._field_names)
            self._field_names.append(field)
        return number

    def _encode_cells(self, cells: Mapping[str, Cell]) -> bytes:
        coded = self._codes.encode(cells)
        if coded is not None:
            return coded
        numbers = self._field_numbers
        try:
            return _encode([(numbers[f], c.cell, c.is_list) for f, c in cells.items()])
        except KeyError:  # a field not stored before
            for field in cells:
                self._number(field)
            return self._encode_cells(cells)

    def _encode_choices(self, choices: Mapping[str, tuple[int, int, str, bool]]) -> bytes:
        numbers = self._field_numbers
        try:
            return _encode([(numbers[f], *choice) for f, choice in choices.items()])
        except KeyError:  # a field not stored before
            for field in choices:
                self._number(field)
            return self._encode_choices(choices)

    def _held(self, keys: list[str]) -> dict[str, tuple[Any, ...]]:
        """The stored rows of `keys` (those the table holds)."""
        return {key: tuple(row) for key, *row in self._lookup(_LOOKUP, keys)}

    def _fold_held(self, key: str, person: PersonBatch, row: tuple[Any, ...]) -> None:
        """What an earlier batch left for this person, folded into `person`."""
        ouid, ts, seq, newest, blob = row
        person.offer_record(key if ouid is None else ouid, ts, seq, newest)
        names = self._field_names
        stored_choices = _decode(blob)
        if stored_choices and type(stored_choices[0]) is int:  # coded: see _CellCodes
            layout, codes = stored_choices
            for field, (cell, is_list) in self._codes.decode(layout, codes):
                person.offer_choice(field, (ts, seq, cell, is_list))
            return
        for stored in stored_choices:
            if len(stored) == 3:  # chosen by the record that gave the row's ouid
                number, cell, is_list = stored
                person.offer_choice(names[number], (ts, seq, cell, is_list))
            else:
                number, c_ts, c_seq, cell, is_list = stored
                person.offer_choice(names[number], (c_ts, c_seq, cell, is_list))

    def merge_batch(
        self, batch: Mapping[str, PersonRecord | PersonBatch]
    ) -> dict[str, PersonState]:
        """Fold one batch into the run; returns the merged state of the batch's people.

        A PersonBatch takes in what earlier batches held (updated in place).
        """
        # Every key is in the filter from now on (a failed insert only adds false positives).
        held = self._held(self._filter(batch))
        rows = []
        states = {}
        for key, person in batch.items():
            earlier = held.get(key) if held else None
            if earlier is None and type(person) is PersonRecord:
                # The common case: one record, never seen before: stored as it came.
                ts = person.ts
                rows.append(
                    (key, _spelling(key, person.ouid), ts, person.seq, person.newest,
                     self._encode_cells(person.cells))
                )  # fmt: skip
                states[key] = PersonState(
                    person.ouid,
                    RecordChoices(person.cells, None if ts == NO_TIMESTAMP else ts),
                    person.newest,
                )
                continue
            if type(person) is PersonRecord:
                person = person.folded()
            assert isinstance(person, PersonBatch)
            if earlier is not None:
                self._fold_held(key, person, earlier)
            merged = person.choices
            rows.append(
                (key, _spelling(key, person.ouid), person.ts, person.seq, person.newest,
                 self._encode_choices(merged))
            )  # fmt: skip
            states[key] = PersonState(person.ouid, _merged_choices(merged), person.newest)
        self._insert(rows)
        return states

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows of the person table, replacing those of the same people, in key order (pages
        filled one after the other) and many to a statement (fewer calls into SQLite)."""
        rows.sort()  # by key: a batch's keys are distinct
        with self._db:
            _INSERT_PERSONS.run(self._db, rows)

    def written(self, sf_ids: Iterable[str]) -> dict[str, WrittenRecord]:
        """The records among `sf_ids` that this run wrote a consent timestamp to."""
        return {
            sf_id: WrittenRecord(baseline, stamp)
            for sf_id, baseline, stamp in self._lookup(_LOOKUP_WRITTEN, sf_ids)
        }

    def record_written(self, rows: Iterable[tuple[str, int | None, int]]) -> None:
        """(sf_id, baseline, stamp) of rows written; the first baseline of a record stays."""
        with self._db:
            _INSERT_WRITTEN.run(self._db, rows if isinstance(rows, list) else list(rows))
