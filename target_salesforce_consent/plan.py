"""Planning: from a person's merged choices and the matching Salesforce records to rows and
outcomes.

Pure functions, no I/O: given what the run's consent says (the newest choice per field, see
``extract.py`` and ``store.py``) and what Salesforce holds, decide per ``organization_user_id``
whether to update (which records, which cells), insert, or skip and why. Newest consent wins
per choice: a choice at or before a record's consent timestamp is never written to it. The
sink runs the resulting rows through Bulk API 2.0.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple, cast

import msgspec

from target_salesforce_consent.didomi import format_timestamp, parse_timestamp
from target_salesforce_consent.mapping import CLEAR, FieldType, FieldValues
from target_salesforce_consent.report import Outcome, ReportFields, plain_json_text
from target_salesforce_consent.settings import ResolvedSettings
from target_salesforce_consent.store import (
    Cell,
    PersonState,
    RecordChoices,
    StoredChoice,
    WrittenRecord,
)


def parse_salesforce_datetime(text: Any) -> datetime | None:
    """A datetime Salesforce returned (`2024-06-18T16:40:03.000+0000`); None if it is none."""
    if not isinstance(text, str):
        return None
    if len(text) == 28 and text.endswith("+0000") and text[10] == "T":
        try:  # the form Salesforce returns, without the general parser
            return datetime.fromisoformat(text[:23]).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError):
        return None


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch: records merge in this order, to the microsecond."""
    return (value - _EPOCH) // _MICROSECOND


def _millis(micros: int) -> int:
    """Truncated to the millisecond, as Salesforce keeps a datetime."""
    return micros // 1000 * 1000


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_MINUTE = 60_000_000  # in microseconds

#: The minutes each table below keeps (then it starts over): records mostly come in time
#: order, and a long run's 4,096 minutes took about half a MiB per table.
_MAX_MINUTES = 1024

#: Whole minute (micros // _MINUTE) -> its text up to the seconds, ``2024-06-18T16:40:``.
_MINUTE_TEXT: dict[int, str] = {}


def format_micros(value: int) -> str:
    """``format_timestamp(from_micros(value))``, the text of a consent timestamp.

    Planning formats each person's newest timestamp; people's timestamps share their minute
    far more often than not, so the date and time up to the minute are formatted once per
    minute and only the seconds and milliseconds per call."""
    minute, rest = divmod(value, _MINUTE)
    head = _MINUTE_TEXT.get(minute)
    if head is None:
        if len(_MINUTE_TEXT) >= _MAX_MINUTES:  # bounded: a run's timestamps cover few minutes
            _MINUTE_TEXT.clear()
        head = _MINUTE_TEXT[minute] = format_timestamp(from_micros(minute * _MINUTE))[:17]
    second, micros = divmod(rest, 1_000_000)
    return f"{head}{second:02d}.{micros // 1000:03d}Z"


def current_stamp(record: Mapping[str, Any], ts_field: str) -> int | None:
    """The consent timestamp a matched record holds now (microseconds, to the millisecond)."""
    text = record.get(ts_field)
    if text.__class__ is str and len(text) == 28:
        stamp = _salesforce_stamp(text)
        if stamp is not None:
            return stamp
    current = parse_salesforce_datetime(text)
    return _millis(to_micros(current)) if current is not None else None


#: A minute as Salesforce writes it (``2024-06-18T16:40``) -> its microseconds since the epoch.
_MINUTE_STAMP: dict[str, int] = {}


def _salesforce_stamp(text: str) -> int | None:
    """``2024-06-18T16:40:03.512+0000`` in microseconds, its minute read once per minute; None
    when the text is not exactly that form (the general parser then reads it)."""
    second, millis = text[17:19], text[20:23]
    if not (
        text.endswith("+0000") and text[10] == "T" and text[16] == ":" and text[19] == "."
        and second.isdigit() and second.isascii() and second < "60"
        and millis.isdigit() and millis.isascii()
    ):  # fmt: skip
        return None
    minute = text[:16]
    base = _MINUTE_STAMP.get(minute)
    if base is None:
        parsed = parse_salesforce_datetime(minute + ":00.000+0000")
        if parsed is None:
            return None
        if len(_MINUTE_STAMP) >= _MAX_MINUTES:
            _MINUTE_STAMP.clear()
        base = _MINUTE_STAMP[minute] = to_micros(parsed)
    return base + int(second) * 1_000_000 + int(millis) * 1000


def baseline_of(
    record_id: str, current: int | None, written: Mapping[str, WrittenRecord]
) -> int | None:
    """The consent timestamp a matched record held before this run wrote it.

    A record the run itself stamped earlier is judged by the timestamp it had before, so that
    the run's outcome does not depend on where the batches were cut; if someone else
    changed the field since, theirs is the newer consent and stands.
    """
    earlier = written.get(record_id)
    if earlier is not None and current == earlier.stamp:
        return earlier.baseline
    return current


def _is_newer(ts: int | None, baseline: int | None) -> bool:
    """Whether a consent at `ts` is newer than a record stamped `baseline`, to the millisecond
    Salesforce keeps. Anything is newer than no stamp; a consent without a timestamp cannot be
    shown newer than a stamp, so it never overwrites one."""
    if baseline is None:
        return True
    return ts is not None and _millis(ts) > baseline


def is_stale(ts: int | None, stale_at: int | None) -> bool:
    """Whether an input record at `ts` contributed to no match of a plan (see GroupPlan)."""
    return stale_at is not None and not _is_newer(ts, stale_at)


class Row(Mapping[str, str]):
    """One row of a job (column -> cell), read like a dict and equal to the dict of the same
    cells: its cells in a tuple, the column names (and their places) shared by every row of
    the same columns. A plan holds its rows until the batch is settled, so a dict per row
    (a hash table with its own keys) costs more than twice as much."""

    __slots__ = ("_index", "_values")

    def __init__(self, columns: Sequence[str], cells: Sequence[str]) -> None:
        if len(columns) != len(cells):
            raise ValueError("a row needs one cell per column")
        self._index = _columns_index(tuple(columns))
        if len(self._index) != len(columns):
            raise ValueError(f"duplicate column in {list(columns)!r}")
        self._values = tuple(cells)

    @classmethod
    def _of(cls, index: dict[str, int], cells: tuple[str, ...]) -> Row:
        """A row of ``cells`` under an index from :func:`_columns_index` (checked there)."""
        row = cls.__new__(cls)
        row._index = index
        row._values = cells
        return row

    def __getitem__(self, name: str) -> str:
        return self._values[self._index[name]]

    def pick(self, columns: tuple[str, ...]) -> tuple[str | None, ...]:
        """``tuple(self.get(c) for c in columns)`` in one call: a job's CSV reads every row
        this way (the getter made once per set of columns)."""
        key = (id(self._index), columns)
        found = _PICKERS.get(key)
        if found is None or found[0] is not self._index:
            missing = len(self._index)  # a column the row lacks reads the None put last
            places = [self._index.get(name, missing) for name in columns]
            getter: Callable[[Any], Any] = (
                itemgetter(*places) if len(places) > 1 else _one_cell(places)
            )
            if len(_PICKERS) >= 1024:
                _PICKERS.clear()
            found = _PICKERS[key] = (self._index, getter)
        cells: tuple[str | None, ...] = found[1]((*self._values, None))
        return cells

    def get(self, name: str, default: Any = None) -> Any:
        place = self._index.get(name)
        return default if place is None else self._values[place]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(self.items())!r})"


def _one_cell(places: list[int]) -> Callable[[Any], Any]:
    """An itemgetter's answer as a tuple, for no place or one place as well."""
    return lambda values: tuple(values[place] for place in places)


_COLUMNS_INDEX: dict[tuple[str, ...], dict[str, int]] = {}
#: (id of a row's index, columns) -> that index (so its id stays its own), its cells' getter
_PICKERS: dict[tuple[int, tuple[str, ...]], tuple[dict[str, int], Callable[[Any], Any]]] = {}


def _columns_index(columns: tuple[str, ...]) -> dict[str, int]:
    index = _COLUMNS_INDEX.get(columns)
    if index is None:
        if len(_COLUMNS_INDEX) >= 4096:  # the column sets a run meets are few; bounded anyway
            _COLUMNS_INDEX.clear()
        index = _COLUMNS_INDEX[columns] = {name: place for place, name in enumerate(columns)}
    return index


@dataclass(slots=True)
class GroupPlan:
    """The decision for one organization_user_id (all its input records share it).

    ``stale_at``: a record of the batch timestamped at or before it (or without a timestamp)
    contributed to no match and is ``skipped_stale``, whatever the others' outcome.
    """

    outcome: Outcome | None  # None while a write is pending
    salesforce_ids: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)  # kept as ReportFields
    update_rows: Sequence[Mapping[str, str]] = field(default_factory=list)
    insert_row: dict[str, str] | None = None
    stale_at: int | None = None
    baselines: Mapping[str, int | None] = field(default_factory=dict)  # Id -> before this run
    stamp: int | None = None  # the consent timestamp written with the rows
    kept: dict[str, list[str]] = field(default_factory=dict)  # Id -> fields a person changed

    def __post_init__(self) -> None:
        if self.fields.__class__ is not ReportFields:  # (its truth would decode it)
            self.fields = ReportFields.of(self.fields)  # held until settled: as JSON written


# Per ResolvedSettings (by identity, held so the id is not reused): its fields' memos.
_FIELD_VALUES: dict[int, tuple[ResolvedSettings, dict[str, FieldValues], _PlanMemo]] = {}


def _memos(rs: ResolvedSettings) -> tuple[ResolvedSettings, dict[str, FieldValues], _PlanMemo]:
    entry = _FIELD_VALUES.get(id(rs))
    if entry is not None and entry[0] is rs:
        return entry
    if len(_FIELD_VALUES) >= 8:
        _FIELD_VALUES.clear()
    values = {name: FieldValues(ftype) for name, ftype in rs.field_types.items()}
    entry = _FIELD_VALUES[id(rs)] = (rs, values, _PlanMemo(rs, values))
    return entry


def field_values(rs: ResolvedSettings) -> dict[str, FieldValues]:
    """The memoized report and comparison of each field ``rs`` writes (see FieldValues)."""
    return _memos(rs)[1]


#: A person's choices with a cell, each with its field's memo.
_Chosen = list[tuple[str, StoredChoice, FieldValues]]


def plan_group(
    person: PersonState,
    matches: Sequence[Mapping[str, Any]],
    rs: ResolvedSettings,
    written: Mapping[str, WrittenRecord] | None = None,
) -> GroupPlan:
    """Decide what to do for one person, given what the run merged and what matches it."""
    memo = _memos(rs)[2]
    if not matches:
        plan = memo.unmatched(person)
        if plan is not None:
            return plan
    elif len(matches) == 1 and not matches[0].get("IsConverted"):
        plan = memo.matched(person, matches[0], written or {})
        if plan is not None:
            return plan
    return plan_in_full(person, matches, rs, written)


def plan_in_full(
    person: PersonState,
    matches: Sequence[Mapping[str, Any]],
    rs: ResolvedSettings,
    written: Mapping[str, WrittenRecord] | None = None,
) -> GroupPlan:
    """:func:`plan_group`, field by field for the person (without the memo of
    :class:`_PlanMemo`): what the memo's plans are checked against."""
    settings = rs.settings
    ts_field = rs.consent_timestamp_field
    values = field_values(rs)
    newest = person.newest if ts_field else None
    ts_cell = format_micros(newest) if newest is not None else None
    chosen: _Chosen = [(f, c, values[f]) for f, c in person.choices.items() if c.cell]
    live = [m for m in matches if not m.get("IsConverted")]
    if not live:
        # The report lists every mapped value the consent holds, written or not, and the
        # consent timestamp beside them when consent_timestamp_field is set. (A matched
        # person's report is what the records receive or hold instead: see below.)
        fields = {f: v.report(c.cell) for f, c, v in chosen}
        if ts_cell and ts_field and fields:
            fields[ts_field] = ts_cell
        if matches:  # a converted Lead is read-only; the person is a Contact now.
            return GroupPlan(Outcome.SKIPPED_CONVERTED, _ids(matches), fields)
        if not settings.upsert_mode:
            return GroupPlan(Outcome.SKIPPED_UNMATCHED, (), fields)
        if not chosen:
            return GroupPlan(Outcome.SKIPPED_UNCHANGED, (), {})
        row = dict(rs.insert_defaults)
        # On insert an empty cell means "not set"; there is nothing to clear.
        row.update({f: ("" if c.cell == CLEAR else v.cell(c.cell)) for f, c, v in chosen})
        row[rs.match_field] = person.ouid
        if ts_cell and ts_field:
            row[ts_field] = ts_cell
        return GroupPlan(None, (), fields, insert_row=row, stamp=_stamp(newest))

    ids = _ids(live)
    if len(live) > 1 and settings.on_multiple_matches == "skip":
        fields = {f: v.report(c.cell) for f, c, v in chosen}
        if ts_cell and ts_field and fields:
            fields[ts_field] = ts_cell
        return GroupPlan(Outcome.SKIPPED_MULTIPLE_MATCHES, ids, fields)
    rows: list[Mapping[str, str]] = []
    shown: dict[str, Any] | None = None
    baselines: dict[str, int | None] = {}
    stale = 0
    earlier = written or {}
    for record in live:
        record_id = str(record["Id"])
        current = current_stamp(record, ts_field) if ts_field else None
        baseline = baseline_of(record_id, current, earlier) if ts_field else None
        baselines[record_id] = baseline
        if not _is_newer(newest, baseline):
            stale += 1  # newest consent wins: Salesforce already holds a newer one
        columns = ["Id"]
        cells = [record_id]
        # Per chosen field not written to this record: whether it holds the value already
        # (None: not asked, the choice is older), for the report's _shown.
        held_same: list[bool | None] = []
        for name, choice, value in chosen:
            if _is_newer(choice.ts, baseline):
                if value.same(choice.cell, record.get(name), choice.is_list):
                    held_same.append(True)
                else:
                    columns.append(name)
                    cells.append(value.cell(choice.cell))
                    held_same.append(False)  # written: not read
            else:
                held_same.append(None)
        if len(columns) == 1:
            continue
        if ts_cell and ts_field and _is_newer(newest, current):
            # never moves the record's consent timestamp back
            if ts_field in columns:
                cells[columns.index(ts_field)] = ts_cell
            else:
                columns.append(ts_field)
                cells.append(ts_cell)
        written_row = Row(columns, cells)
        if shown is None:
            shown = _shown(chosen, record, rs, values, written_row, held_same)
        rows.append(written_row)
    known = [b for b in baselines.values() if b is not None]
    stale_at = min(known) if ts_field and len(known) == len(baselines) else None

    # The report shows what the first written record receives, or, when nothing is written,
    # what the first match holds: never a value (or a consent timestamp) that was not written.
    if shown is not None:
        return GroupPlan(None, ids, shown, update_rows=rows, stale_at=stale_at,
                         baselines=baselines, stamp=_stamp(newest))  # fmt: skip
    shown = _shown(chosen, live[0], rs, values, None)
    if stale:
        return GroupPlan(Outcome.SKIPPED_STALE, ids, shown, stale_at=stale_at)
    return GroupPlan(Outcome.SKIPPED_UNCHANGED, ids, shown, stale_at=stale_at)


def shown_fields(
    person: PersonState,
    record: Mapping[str, Any],
    rs: ResolvedSettings,
    row: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The report's ``fields`` for a matched record: every mapped field the consent has a
    value for (and the consent timestamp field), as ``row`` writes it, else as ``record``
    holds it in Salesforce."""
    values = field_values(rs)
    chosen = [(f, c, values[f]) for f, c in person.choices.items() if c.cell]
    return _shown(chosen, record, rs, values, row)


def _shown(
    chosen: _Chosen,
    record: Mapping[str, Any],
    rs: ResolvedSettings,
    values: Mapping[str, FieldValues],
    row: Mapping[str, str] | None,
    held_same: Sequence[bool | None] = (),
) -> dict[str, Any]:
    """``held_same``: per chosen field, whether ``record`` holds its value already, when
    planning asked (True/False), else None; all None when not given."""
    shown: dict[str, Any] = {}
    for place, (name, choice, value) in enumerate(chosen):
        if row is not None and name in row:
            shown[name] = value.report(row[name])
            continue
        held = record.get(name)
        same = held_same[place] if place < len(held_same) else None
        if same is None:
            same = value.same(choice.cell, held, choice.is_list)
        if same:
            shown[name] = value.report(choice.cell)  # held already, same value
        else:
            shown[name] = held_value(held, value.ftype)  # not written (older)
    ts_field = rs.consent_timestamp_field
    if ts_field and shown:
        if row is not None and ts_field in row:
            shown[ts_field] = values[ts_field].report(row[ts_field])
        elif record.get(ts_field) is not None:
            shown[ts_field] = held_value(record.get(ts_field), values[ts_field].ftype)
    return shown


def held_value(current: Any, ftype: FieldType) -> Any:
    """A value Salesforce returned, in the report's JSON form (datetimes as the target writes
    them, ``2024-06-18T16:40:03.512Z``; an empty text as null)."""
    if current is None or current == "":
        return None
    if ftype.type.lower() == "datetime":
        parsed = parse_salesforce_datetime(current)
        return format_timestamp(parsed) if parsed is not None else current
    return current


def _stamp(newest: int | None) -> int | None:
    return _millis(newest) if newest is not None else None


def _ids(records: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    return tuple(str(r["Id"]) for r in records)


_CELL_OF = attrgetter("cell")
_IS_LIST_OF = attrgetter("is_list")
_TS_OF = attrgetter("ts")
_encode_value = msgspec.json.encode


class _UnmatchedPlan(NamedTuple):
    """What planning decides for one combination of choices of an unmatched person."""

    shown: bytes | None  # the report's fields as JSON, without its closing brace; None: none
    insert: dict[str, str] | None  # the insert row before its match field and timestamp


def _cells_of(choices: Mapping[str, StoredChoice]) -> Iterable[Cell]:
    """The cell of each choice, in order: a lone record's as the reader gave them."""
    if choices.__class__ is RecordChoices:
        assert isinstance(choices, RecordChoices)
        return choices.cells.values()
    return choices.values()


def _newer(choices: Mapping[str, StoredChoice], baseline: int | None) -> Iterator[bool]:
    """Whether each choice is newer than a record's consent stamped ``baseline``
    (:func:`_is_newer`), in order: one answer for all when the choices share their timestamp,
    as a lone record's do (it then repeats without end)."""
    if baseline is None:  # anything is newer than no stamp
        return _ALWAYS
    if choices.__class__ is RecordChoices:
        assert isinstance(choices, RecordChoices)
        stamps = {choices.ts}
    else:
        stamps = set(map(_TS_OF, choices.values()))
    if len(stamps) == 1:
        (ts,) = stamps
        return _ALWAYS if _is_newer(ts, baseline) else _NEVER
    answers = {ts: _is_newer(ts, baseline) for ts in stamps}
    return map(answers.__getitem__, map(_TS_OF, choices.values()))


class _PlanMemo:
    """The part of a plan shared by every person with the same choices (and, matched, whose
    record holds the same values): people share a handful of combinations, so the work per
    mapped field (comparing, the cells, the report's values and their JSON) is done once per
    combination instead of once per person. Only the person's Id, consent timestamp and
    record's timestamp are handled per person.

    :meth:`matched` and :meth:`unmatched` give None where :func:`plan_in_full` decides (a
    value that is not a plain JSON scalar, a mapped consent timestamp field, a report value
    the JSON encoder refuses); both keep at most ``LIMIT`` combinations, then start over.
    """

    LIMIT = 4096

    def __init__(self, rs: ResolvedSettings, values: Mapping[str, FieldValues]) -> None:
        self.rs = rs
        self.values = values
        self.ts_field = rs.consent_timestamp_field
        self._ts_key = (
            b"," + _encode_value(self.ts_field) + b":" if self.ts_field else b""
        )
        self._cells: dict[_CellKey, _CellEntry] = {}
        self._unmatched: dict[Any, _UnmatchedPlan | None] = {}
        self._getters: dict[tuple[type, tuple[str, ...]], Callable[[Any], tuple[Any, ...]]] = {}

    def _fields(self, shown: bytes | None, stamp: str | None) -> Mapping[str, Any]:
        """The report's fields from a memo's JSON and, when not None, the consent timestamp."""
        if shown is None:
            return {}
        if stamp is None:
            return ReportFields(shown + b"}")
        return self._stamped(shown, stamp)

    @staticmethod
    def _prefix(shown: dict[str, Any]) -> bytes | None:
        encoded = ReportFields.of(shown)
        if not isinstance(encoded, ReportFields):
            raise TypeError("not encodable")
        return encoded.json[:-1]

    # -- unmatched ------------------------------------------------------------------------

    def unmatched(self, person: PersonState) -> GroupPlan | None:
        choices = person.choices
        ts_field = self.ts_field
        if ts_field and ts_field in choices:
            return None
        names = tuple(choices)
        key = (names, tuple(map(_CELL_OF, _cells_of(choices))))
        memo = self._unmatched
        if key in memo:
            entry = memo[key]
        else:
            entry = self._unmatched_entry(names, key[1])
            if len(memo) >= self.LIMIT:
                memo.clear()
            memo[key] = entry
        if entry is None:
            return None
        newest = person.newest if ts_field else None
        ts_cell = format_micros(newest) if newest is not None else None
        fields = self._fields(entry.shown, ts_cell)
        if not self.rs.settings.upsert_mode:
            return GroupPlan(Outcome.SKIPPED_UNMATCHED, (), fields)
        if entry.insert is None:
            return GroupPlan(Outcome.SKIPPED_UNCHANGED, (), {})
        row = dict(entry.insert)
        row[self.rs.match_field] = person.ouid
        if ts_cell and ts_field:
            row[ts_field] = ts_cell
        return GroupPlan(None, (), fields, insert_row=row, stamp=_stamp(newest))

    def _unmatched_entry(
        self, names: tuple[str, ...], cells: tuple[str, ...]
    ) -> _UnmatchedPlan | None:
        values = self.values
        chosen = [
            (name, cell, values[name]) for name, cell in zip(names, cells, strict=True) if cell
        ]
        shown = {name: value.report(cell) for name, cell, value in chosen}
        try:
            prefix = self._prefix(shown) if shown else None
        except TypeError:
            return None
        if not chosen:
            return _UnmatchedPlan(prefix, None)
        row = dict(self.rs.insert_defaults)
        # On insert an empty cell means "not set"; there is nothing to clear.
        row.update({name: ("" if cell == CLEAR else value.cell(cell))
                    for name, cell, value in chosen})  # fmt: skip
        return _UnmatchedPlan(prefix, row)

    # -- matched by one record ------------------------------------------------------------

    def matched(
        self, person: PersonState, record: Mapping[str, Any], written: Mapping[str, WrittenRecord]
    ) -> GroupPlan | None:
        choices = person.choices
        ts_field = self.ts_field
        if "Id" in choices or (ts_field and ts_field in choices):
            return None
        names = tuple(choices)
        record_id = str(record["Id"])
        current = current_stamp(record, ts_field) if ts_field else None
        baseline = baseline_of(record_id, current, written) if ts_field else None
        newest = person.newest if ts_field else None
        stored = _cells_of(choices)
        newer = _newer(choices, baseline)
        held_values = self._held(record, names)
        # One key per field, made and looked up in C: the type as well, for 1, 1.0 and True
        # are equal keys but are not reported alike (newer may repeat one answer without end).
        keys = list(zip(names, map(_CELL_OF, stored), map(_IS_LIST_OF, stored), newer,
                        held_values, map(type, held_values), strict=False))  # fmt: skip
        try:
            entries = list(map(self._cells.get, keys))
        except TypeError:  # a value that is not a plain scalar
            return None
        if None in entries:
            self._learn(keys, entries)
        if _REFUSED in entries:
            return None
        known = cast("list[_CellEntry]", entries)
        writes = [entry for entry in known if entry[0] is not None]
        shown = [json for _, json, _ in known if json is not None]
        fields: Mapping[str, Any] = {}
        ids = (record_id,)
        stale_at = baseline if ts_field and baseline is not None else None
        if not writes:  # nothing to write
            if shown:
                stamp = self._held_stamp(record)
                if stamp is _UNREPORTABLE:
                    return None
                fields = self._fields(b"{" + b",".join(shown), stamp)
            outcome = (
                Outcome.SKIPPED_UNCHANGED if _is_newer(newest, baseline)
                else Outcome.SKIPPED_STALE
            )  # fmt: skip
            return GroupPlan(outcome, ids, fields, stale_at=stale_at)
        columns = ("Id", *map(_NAME_OF, writes))
        cells = (record_id, *map(_WRITTEN_OF, writes))
        ts_cell = format_micros(newest) if newest is not None else None
        if ts_cell and ts_field and _is_newer(newest, current):
            # never moves the record's consent timestamp back
            columns, cells = (*columns, ts_field), (*cells, ts_cell)
            stamp = ts_cell
        else:
            stamp = self._held_stamp(record)
            if stamp is _UNREPORTABLE:
                return None
        row = Row._of(_columns_index(columns), cells)
        fields = self._fields(b"{" + b",".join(shown), stamp)
        return GroupPlan(None, ids, fields, update_rows=[row], stale_at=stale_at,
                         baselines={record_id: baseline}, stamp=_stamp(newest))  # fmt: skip

    def _stamped(self, shown: bytes, stamp: str) -> ReportFields:
        """The report's fields from the JSON of the fields before the consent timestamp
        (without the closing brace) and the timestamp's text, held as given when JSON
        writes it as it is (the text the row writes, not a copy of it)."""
        encoded = _encode_value(stamp)
        if plain_json_text(stamp, encoded):
            return ReportFields.ending_in_text(shown + self._ts_key + b'"', stamp)
        return ReportFields(shown + self._ts_key + encoded + b"}")

    def _held_stamp(self, record: Mapping[str, Any]) -> Any:
        """The record's consent timestamp as the report shows it (None: not shown);
        _UNREPORTABLE for a value only :func:`plan_in_full` reports."""
        if not self.ts_field:
            return None
        held = record.get(self.ts_field)
        if held is None:
            return None
        stamp = held_value(held, self.values[self.ts_field].ftype)
        return stamp if stamp.__class__ is str else _UNREPORTABLE

    def _held(self, record: Mapping[str, Any], names: tuple[str, ...]) -> Iterable[Any]:
        """``record.get(name)`` of each name (the struct's attributes read in one call)."""
        kind = type(record)
        getter = self._getters.get((kind, names))
        if getter is None:
            selected = getattr(kind, "_names", None)
            if len(names) > 1 and isinstance(selected, frozenset) and selected.issuperset(names):
                getter = attrgetter(*names)
            else:
                getter = _gets(names)
            if len(self._getters) >= 256:
                self._getters.clear()
            self._getters[(kind, names)] = getter
        held: Iterable[Any] = getter(record)
        return held

    def _learn(self, keys: list[_CellKey], entries: list[_CellEntry | None]) -> None:
        """Fills in the entries not yet known (None) of ``keys``, and keeps them."""
        memo = self._cells
        for place, entry in enumerate(entries):
            if entry is not None:
                continue
            name, cell, is_list, is_newer, held, _ = key = keys[place]
            entries[place] = entry = self._cell_entry(name, cell, is_list, is_newer, held)
            # Long texts are rarely shared: not kept.
            if len(cell) <= _SHORT and (held.__class__ is not str or len(held) <= _SHORT):
                if len(memo) >= self.LIMIT:
                    memo.clear()
                memo[key] = entry

    def _cell_entry(
        self, name: str, cell: str, is_list: bool, is_newer: bool, held: Any
    ) -> _CellEntry:
        """For one field: the cell written (None: not written), the report's JSON of the
        field (``"name":value``; None: not shown, for a field without a cell) and the name
        when written; _REFUSED when the JSON encoder refuses the value."""
        if not cell:
            return _NO_CELL
        value = self.values[name]
        written: str | None = None
        if value.same(cell, held, is_list):
            shown = value.report(cell)  # held already, same value
        elif is_newer:
            written = value.cell(cell)
            shown = value.report(written)
        else:
            shown = held_value(held, value.ftype)  # not written (older)
        encoded = ReportFields.of({name: shown})
        if not isinstance(encoded, ReportFields):
            return _REFUSED
        return written, encoded.json[1:-1], None if written is None else name


_SHORT = FieldValues.SHORT
#: A field of a matched person: (name, cell, is_list, newer, held value, its type)
_CellKey = tuple[str, str, bool, bool, Any, type]
#: What a field writes: (the cell written or None, the report's JSON of the field or None,
#: the field's name when written)
_CellEntry = tuple[str | None, bytes | None, str | None]
_NO_CELL: _CellEntry = (None, None, None)  # a field without a cell: nothing written or shown
_REFUSED: Any = object()  # an entry where plan_in_full decides
_WRITTEN_OF = itemgetter(0)
_NAME_OF = itemgetter(2)
_ALWAYS = itertools.repeat(True)
_NEVER = itertools.repeat(False)
_UNREPORTABLE = object()


def _gets(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    def held(record: Any) -> tuple[Any, ...]:
        return tuple(map(record.get, names))

    return held


def csv_columns(
    first: Sequence[str], rows: Sequence[Mapping[str, str]], order: Sequence[str]
) -> list[str]:
    """The header of a job: `first` columns, then every field some row sets, in `order`."""
    used = {key for row in rows for key in row}
    rest = [f for f in order if f in used and f not in first]
    extra = sorted(used - set(first) - set(rest))
    return [*first, *rest, *extra]
