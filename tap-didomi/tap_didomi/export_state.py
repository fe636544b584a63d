"""The export bookmark: which files of which partitions were read (pure logic, no I/O).

Didomi may add a file to a partition days after the partition appeared (a retried upload), and
may back-fill a whole older partition. The bookmark therefore remembers, per export id, the
names of the files read in every partition of a look-back window, so that every file is read
exactly once whatever day folder it lands in::

    {"date": "2024-06-18",                        # newest partition read: the window ends here
     "files": {"2024-06-12": ["part-0.json.gz"],  # per partition of the window: files read
               "2024-06-18": ["part-0.json.gz", "part-1.json.gz"]},
     "closed": [["2024-01-01", "2024-06-11"]],    # partitions that left the window (day ranges)
     "seen_until": "2024-06-18T03:00:00.000001Z"} # newest modification time of a file seen

The window is ``lookback_days`` days ending at ``date`` (the newest partition, not today's
date, so that a pause in the exports does not close partitions unread). A partition leaves
``files`` for ``closed`` when the window moves past it. A file that lands in a closed partition
is found by its modification time (after ``seen_until``, the storage's own clock) and reported,
not read; so is a partition older than the window that was never seen.

A bookmark written before the window existed, ``{"date": D, "files": [names in D]}``, is
migrated: every partition before D is taken as read (that bookmark said so) and D's files as
listed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeGuard

# How many days of partitions, up to the newest one read, have their files remembered.
DEFAULT_LOOKBACK_DAYS = 7
# The earliest day: "every partition before D" in a migrated bookmark is the range from it.
EARLIEST = dt.date.min.isoformat()
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class StateError(Exception):
    """A bookmark in the state given with --state cannot be read; the message says what to
    write instead."""


class PartitionStatus(Enum):
    NEW = "new"  # inside the window (or newer) and never read: read every file
    IN_WINDOW = "in_window"  # read before: read only the files not read yet
    CLOSED = "closed"  # left the window: not listed again
    TOO_OLD = "too_old"  # older than the window and never seen: reported, not read


def _day(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


def _is_date(value: Any) -> TypeGuard[str]:
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        _day(value)
    except ValueError:
        return False
    return True


@dataclass
class ExportBookmark:
    """One export id's bookmark (see the module docstring)."""

    newest: str | None = None
    files: dict[str, set[str]] = field(default_factory=dict)
    closed: list[tuple[str, str]] = field(default_factory=list)
    seen_until: float | None = None

    # -- reading a state ---------------------------------------------------------------------

    @classmethod
    def from_state(cls, entry: Any, where: str) -> ExportBookmark:
        """The bookmark stored at ``where`` (e.g. ``bookmarks.users.exports["exp-1"]``), or
        StateError naming the entry and what to write instead."""
        if entry is None:
            return cls()
        if not isinstance(entry, dict):
            if _is_date(entry):
                fix = f"write {{\"date\": {json.dumps(entry)}}} (the newest partition read)"
            else:
                fix = 'write an object such as {"date": "YYYY-MM-DD"} (the newest partition read)'
            raise StateError(
                f"{where} is {_shown(entry)}, not an object: {fix}, or remove the entry to read "
                "the export again from start_date"
            )
        date = entry.get("date")
        if not _is_date(date):
            raise StateError(
                f"{where}.date is {_shown(date)}: write the newest partition read as a string "
                f'"YYYY-MM-DD", e.g. {json.dumps(_date_hint(date))}, or remove the entry to read '
                "the export again from start_date"
            )
        files = entry.get("files")
        closed = entry.get("closed")
        seen_until = entry.get("seen_until")
        seen = _epoch(seen_until) if seen_until is not None else None
        if seen_until is not None and seen is None:
            raise StateError(
                f"{where}.seen_until is {_shown(seen_until)}: write a UTC time as the tap "
                'writes it, e.g. "2024-06-18T03:00:00.000001Z", or remove "seen_until"'
            )
        if files is None or isinstance(files, list):
            # The bookmark before the look-back window: every partition before `date` was read.
            names = _names(files or [], f"{where}.files")
            return cls(newest=date, files={date: names},
                       closed=[(EARLIEST, (_day(date) - dt.timedelta(days=1)).isoformat())]
                       if date != EARLIEST else [])
        if not isinstance(files, dict):
            raise StateError(
                f"{where}.files is {_shown(files)}: write an object of partition dates to the "
                'file names read in them, e.g. {"2024-06-15": ["part-00000.json.gz"]}, or '
                "remove the entry to read the export again from start_date"
            )
        read: dict[str, set[str]] = {}
        for day, names in files.items():
            if not _is_date(day):
                raise StateError(
                    f"{where}.files has the key {json.dumps(day)}: write partition dates as "
                    '"YYYY-MM-DD", or remove the entry to read the export again from start_date'
                )
            read[day] = _names(names, f"{where}.files[{json.dumps(day)}]")
        ranges: list[tuple[str, str]] = []
        if closed is not None:
            if not isinstance(closed, list):
                raise StateError(_closed_error(where, closed))
            for pair in closed:
                if (not isinstance(pair, list) or len(pair) != 2
                        or not all(_is_date(d) for d in pair) or pair[0] > pair[1]):
                    raise StateError(_closed_error(where, pair))
                ranges.append((pair[0], pair[1]))
        return cls(newest=date, files=read, closed=_merged(ranges), seen_until=seen)

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "date": self.newest,
            "files": {day: sorted(names) for day, names in sorted(self.files.items())},
        }
        if self.closed:
            state["closed"] = [[first, last] for first, last in self.closed]
        if self.seen_until is not None:
            # A string: the SDK reads a JSON number with a fraction as a Decimal, which a
            # target built on it then cannot write back as STATE.
            state["seen_until"] = _timestamp(self.seen_until)
        return state

    # -- deciding what to read ---------------------------------------------------------------

    def window_start(self, lookback_days: int) -> str | None:
        """The oldest partition date inside the window; None before anything was read."""
        if self.newest is None:
            return None
        return (_day(self.newest) - dt.timedelta(days=lookback_days - 1)).isoformat()

    def is_closed(self, date: str) -> bool:
        return any(first <= date <= last for first, last in self.closed)

    def status(self, date: str, lookback_days: int) -> PartitionStatus:
        if date in self.files:
            return PartitionStatus.IN_WINDOW
        if self.is_closed(date):
            return PartitionStatus.CLOSED
        start = self.window_start(lookback_days)
        if start is None or date >= start:
            return PartitionStatus.NEW
        return PartitionStatus.TOO_OLD

    def unread(self, date: str, names: list[str]) -> list[str]:
        """The names of ``names`` not read yet in that partition."""
        read = self.files.get(date, set())
        return [name for name in names if name not in read]

    # -- recording what was read -------------------------------------------------------------

    def record(self, date: str, names: list[str], lookback_days: int) -> None:
        """Every file of ``names`` in partition ``date`` has been read; the window follows."""
        self.files.setdefault(date, set()).update(names)
        if self.newest is None or date > self.newest:
            self.newest = date
        self.close_old(lookback_days)

    def close_old(self, lookback_days: int) -> None:
        """Move the partitions that left the window from ``files`` to ``closed``."""
        start = self.window_start(lookback_days)
        if start is None:
            return
        old = [day for day in self.files if day < start]
        for day in old:
            del self.files[day]
        if old:
            self.closed = _merged(self.closed + [(day, day) for day in old])


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _timestamp(seconds: float) -> str:
    """Seconds since 1970 as a UTC time, rounded up to the next microsecond: a file whose
    modification time is the one seen is never taken as written after it."""
    when = _EPOCH + dt.timedelta(microseconds=math.floor(seconds * 1_000_000) + 1)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(value: Any) -> float | None:
    """A UTC time written by _timestamp, as seconds since 1970; None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    delta = when.replace(tzinfo=dt.timezone.utc) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) + delta.microseconds / 1_000_000


def _names(value: Any, where: str) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise StateError(
            f"{where} is {_shown(value)}: write a list of file names, e.g. "
            '["part-00000.json.gz"], or remove the entry to read the export again from '
            "start_date"
        )
    return set(value)


def _closed_error(where: str, value: Any) -> str:
    return (
        f"{where}.closed holds {_shown(value)}: write a list of [first, last] date pairs, e.g. "
        '[["2024-01-01", "2024-06-11"]], or remove "closed"'
    )


def _merged(ranges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Ranges sorted, with overlapping and consecutive-day ranges joined into one."""
    merged: list[tuple[str, str]] = []
    for first, last in sorted(ranges):
        if merged:
            prev_first, prev_last = merged[-1]
            if prev_last == dt.date.max.isoformat() or \
                    _day(first) <= _day(prev_last) + dt.timedelta(days=1):
                merged[-1] = (prev_first, max(prev_last, last))
                continue
        merged.append((first, last))
    return merged


def _shown(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}
    kind = kinds.get(type(value), type(value).__name__)
    if value is None:
        return "null"
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        kind = "a number"  # the SDK reads JSON numbers with a fraction as Decimal
    text = json.dumps(value, default=str)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


def _date_hint(value: Any) -> str:
    """The date a mistyped value most likely means (20240615 → "2024-06-15")."""
    digits = re.sub(r"\D", "", str(value)) if isinstance(value, (int, str)) else ""
    if len(digits) == 8:
        candidate = f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
        if _is_date(candidate):
            return candidate
    return "2024-06-15"


def check_state(state: Any) -> None:
    """StateError naming the first export bookmark of a ``--state`` that cannot be read."""
    bookmarks = state.get("bookmarks") if isinstance(state, dict) else None
    if not isinstance(bookmarks, dict):
        return
    for stream, stream_state in bookmarks.items():
        if not isinstance(stream_state, dict) or "exports" not in stream_state:
            continue
        exports = stream_state["exports"]
        where = f"bookmarks.{stream}.exports"
        if exports is None:
            continue
        if not isinstance(exports, dict):
            raise StateError(
                f"{where} is {_shown(exports)}: write an object of export ids to their "
                'bookmarks, e.g. {"<export-id>": {"date": "2024-06-15"}}, or remove it to read '
                "the exports again from start_date"
            )
        for export_id, entry in exports.items():
            ExportBookmark.from_state(entry, f"{where}[{json.dumps(export_id)}]")
