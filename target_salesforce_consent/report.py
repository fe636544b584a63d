"""Outcomes: one per input record, written to the JSON Lines report and counted in the log.

Every input record gets exactly one :class:`Outcome`; the
report line carries what a compliance reviewer needs to trace it (which Salesforce records,
which values, which Bulk job, which error).
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

import msgspec
from consent_pipelines_common import cli

_encode = msgspec.json.Encoder(decimal_format="number").encode


class Outcome(str, enum.Enum):
    """What happened to one input record."""

    UPDATED = "updated"
    INSERTED = "inserted"
    WOULD_UPDATE = "would_update"
    WOULD_INSERT = "would_insert"
    SKIPPED_UNCHANGED = "skipped_unchanged"
    SKIPPED_UNMATCHED = "skipped_unmatched"
    SKIPPED_CONVERTED = "skipped_converted"
    SKIPPED_MULTIPLE_MATCHES = "skipped_multiple_matches"
    SKIPPED_STALE = "skipped_stale"
    SKIPPED_SALESFORCE_NEWER = "skipped_salesforce_newer"
    SKIPPED_NO_OUID = "skipped_no_ouid"
    SKIPPED_FILTERED = "skipped_filtered"
    FAILED = "failed"


# The order outcomes are listed in the log: writes first, then skips, then failures.
OUTCOME_ORDER: tuple[Outcome, ...] = tuple(Outcome)


class ReportFields(Mapping[str, Any]):
    """A report line's ``fields``, kept as the JSON text they are written as: a batch's plans
    hold them until it is settled, and the text is a fraction of the dict's memory (and is
    encoded once per person, not once per line). Read and compared as the dict it was made
    of (JSON keeps every value the report holds as it was: text, booleans, numbers, null).

    The text is held in two parts, cut before its last member: the last member is the one
    that differs from person to person (the consent timestamp, when the report shows it),
    while the members before it take a few values across a run, so that part is shared by
    every person who has it (see :func:`_shared_head`)."""

    __slots__ = ("_head", "_tail")
    _head: bytes
    _tail: bytes | str  # str: see ending_in_text

    def __init__(self, json: bytes) -> None:
        # Inside a JSON string a quote is always escaped, so `,"` starts a member.
        cut = json.rfind(b',"')
        if cut > 0:
            self._head, self._tail = _shared_head(json[:cut]), json[cut:]
        else:
            self._head, self._tail = json, b""

    @classmethod
    def ending_in_text(cls, head: bytes, text: str) -> ReportFields:
        """The fields ``head + text + '"}'``: `head` up to the opening quote of the last
        member's value (included), a text that JSON writes as it is (:func:`plain_json_text`).

        The text is held as given: the consent timestamp a plan writes is the one its row
        holds, not another copy of it."""
        fields = cls.__new__(cls)
        fields._head = _shared_head(head)
        fields._tail = text
        return fields

    @property
    def json(self) -> bytes:
        """The fields as the JSON text written in the report."""
        tail = self._tail
        if isinstance(tail, str):
            return b'%s%s"}' % (self._head, tail.encode())
        return self._head + tail if tail else self._head

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> Mapping[str, Any]:
        """``fields`` as JSON text; as they are when empty, already text, or not encodable
        (a lone surrogate: the line is then written by the fallback encoder)."""
        if not fields or isinstance(fields, ReportFields):
            return fields
        try:
            return cls(_encode(fields))
        except (TypeError, UnicodeEncodeError):
            return fields

    def _decoded(self) -> dict[str, Any]:
        decoded: dict[str, Any] = msgspec.json.decode(self.json)
        return decoded

    def __getitem__(self, name: str) -> Any:
        return self._decoded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"ReportFields({self._decoded()!r})"


def plain_json_text(text: str, encoded: bytes) -> bool:
    """Whether JSON writes `text` (as `encoded`) as it is, between quotes: nothing escaped."""
    return len(encoded) == len(text) + 2 and text.isascii()


#: The distinct leading parts of ReportFields' texts, each held once (bounded: a run meets
#: a few hundred at most, and clearing only costs sharing).
_HEADS: dict[bytes, bytes] = {}
_MAX_HEADS = 8192


def _shared_head(head: bytes) -> bytes:
    shared = _HEADS.get(head)
    if shared is None:
        if len(_HEADS) >= _MAX_HEADS:
            _HEADS.clear()
        shared = _HEADS[head] = head
    return shared


@dataclass(slots=True)
class OutcomeLine:
    """One line of the run report."""

    stream: str
    organization_user_id: str | None
    didomi_id: str | None
    timestamp: str | None
    outcome: Outcome
    salesforce_ids: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)  # a dict, or ReportFields
    error: str | None = None
    job_id: str | None = None
    retry: int | None = None  # a record failed in earlier runs, sent again: the n-th retry
    #: Salesforce Id -> the mapped fields left as a person changed them in Salesforce
    salesforce_kept: dict[str, list[str]] = field(default_factory=dict)

    def _as_struct(self) -> _LineJSON:
        fields = self.fields
        return _LineJSON(
            self.stream,
            self.organization_user_id,
            self.didomi_id,
            self.timestamp,
            self.outcome,
            self.salesforce_ids,
            msgspec.Raw(fields.json) if isinstance(fields, ReportFields) else fields,
            self.error,
            self.job_id,
            self.salesforce_kept,
            self.retry,
        )

    def to_json(self) -> str:
        fields = self.fields
        line: dict[str, Any] = {
            "stream": self.stream,
            "organization_user_id": self.organization_user_id,
            "didomi_id": self.didomi_id,
            "timestamp": self.timestamp,
            "outcome": self.outcome.value,
            "salesforce_ids": list(self.salesforce_ids),
            "fields": msgspec.Raw(fields.json) if isinstance(fields, ReportFields) else fields,
            "error": self.error,
            "job_id": self.job_id,
            "salesforce_kept": self.salesforce_kept,
        }
        if self.retry is not None:
            line["retry"] = self.retry
        try:
            return _encode(line).decode()
        except (TypeError, UnicodeEncodeError):  # a lone surrogate, or a value msgspec lacks
            line["fields"] = dict(fields)
            return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


class _LineJSON(msgspec.Struct, omit_defaults=True, gc=False):
    """A report line as :meth:`OutcomeLine.to_json` writes it (the same keys, in the same
    order, ``retry`` only when set): a batch's lines are encoded in one call."""

    stream: str
    organization_user_id: str | None
    didomi_id: str | None
    timestamp: str | None
    outcome: Outcome
    salesforce_ids: tuple[str, ...]
    fields: Any
    error: str | None
    job_id: str | None
    salesforce_kept: Any
    retry: int | None = None


_encode_lines = msgspec.json.Encoder(decimal_format="number").encode_lines


_LINES_PER_WRITE = 256
_OUTCOME_OF = attrgetter("outcome")


def encode_lines(lines: Sequence[OutcomeLine]) -> str:
    """The report text of ``lines``, one :meth:`OutcomeLine.to_json` each with its newline:
    encoded in one pass, or line by line when one of them needs the fallback encoder."""
    try:
        return _encode_lines([line._as_struct() for line in lines]).decode()
    except (TypeError, UnicodeEncodeError):
        return "".join(line.to_json() + "\n" for line in lines)


def format_counts(counts: Counter[Outcome]) -> str:
    """`updated=3 skipped_unmatched=1 ...`, in a stable order, outcomes with zero left out."""
    parts = [f"{o.value}={counts[o]}" for o in OUTCOME_ORDER if counts[o]]
    return " ".join(parts) if parts else "no records"


class ProgressLog(cli.ProgressLog):
    """The shared progress line, with the outcomes so far: records read, outcomes, the rate."""

    def __init__(self, logger: logging.Logger, outcomes: Callable[[], Counter[Outcome]],
                 interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logger, interval, clock)
        self.outcomes = outcomes

    def details(self) -> str:
        outcomes = self.outcomes()
        done = sum(outcomes.values())
        counts = f" ({format_counts(outcomes)})" if done else ""
        return f", {done} with an outcome{counts}"


class RunReport:
    """Collects outcomes for the run and appends them to the report file as they are decided.

    The file is created (truncated) when the report is opened, so it exists, empty, after a
    run without records; each batch's lines are flushed before the next batch starts, so a
    run that stops half-way leaves a report of everything decided until then.
    """

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._file: IO[str] | None = None
        self.run_counts: Counter[Outcome] = Counter()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # backslashreplace: an unpaired surrogate in a bad record must not stop the report
            self._file = self.path.open("w", encoding="utf-8", errors="backslashreplace")

    def write_batch(self, lines: Iterable[OutcomeLine]) -> Counter[Outcome]:
        """Record a batch's outcomes; returns that batch's counts."""
        lines = lines if isinstance(lines, list) else list(lines)
        batch_counts: Counter[Outcome] = Counter(map(_OUTCOME_OF, lines))
        if self._file is not None:
            # In slices: the text of a whole batch at once would add to the peak memory.
            for start in range(0, len(lines), _LINES_PER_WRITE):
                self._file.write(encode_lines(lines[start : start + _LINES_PER_WRITE]))
            self._file.flush()
        self.run_counts.update(batch_counts)
        return batch_counts

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
