"""From a batch of Singer records to Bulk API 2.0 jobs and one outcome per record.

The sink only buffers. All streams share one buffer (held by the target) so that a user
record and an event for the same person merge even when a tap sends them on two streams;
when the buffer is full, or the input ends, :class:`BatchProcessor` turns it into
outcomes:

parse and filter -> group by organization_user_id -> merge -> match (REST SOQL) -> plan
-> Bulk API 2.0 update / insert jobs -> reconcile results by key -> report.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks import BatchSink

from target_salesforce_consent.didomi import (
    PlainRecord,
    PlainShape,
    RecordError,
    format_timestamp,
    parse_record,
    read_needed,
)
from target_salesforce_consent.dry_run import PlannedWrites
from target_salesforce_consent.extract import (
    NO_CHOICE,
    CellError,
    ChoiceReader,
    FieldChoice,
    PlainChoiceReader,
    is_valid_unicode,
    needs_of,
)
from target_salesforce_consent.pipeline import BatchWorker, InFlight, MatchPool, conflicting_keys
from target_salesforce_consent.plan import GroupPlan, csv_columns, is_stale, plan_group, to_micros
from target_salesforce_consent.report import (
    Outcome,
    OutcomeLine,
    ReportFields,
    RunReport,
    format_counts,
)
from target_salesforce_consent.salesforce.bulk import (
    BulkIngest,
    IngestOutcome,
    RowResult,
    job_error,
)
from target_salesforce_consent.salesforce.client import SalesforceClient, query_record_type
from target_salesforce_consent.salesforce.errors import (
    ApiLimitExceededError,
    JobFailedError,
    SalesforceError,
)
from target_salesforce_consent.salesforce.soql import MatchQueryBuilder
from target_salesforce_consent.settings import ResolvedSettings
from target_salesforce_consent.store import (
    NO_TIMESTAMP,
    PersonBatch,
    PersonRecord,
    PersonState,
    RunStore,
    StoredChoice,
)

if TYPE_CHECKING:
    from target_salesforce_consent.salesforce_changes import SalesforceChanges
    from target_salesforce_consent.target import TargetSalesforceConsent


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


INVALID_UNICODE = "INVALID_TYPE_ON_FIELD_IN_RECORD: the record holds text that is not valid Unicode"


def ouid_problem(ouid: str, queries: MatchQueryBuilder) -> str | None:
    """Why a readable record's organization_user_id cannot be matched or written."""
    if not (ouid.isascii() and ouid.isprintable()):  # nearly every id passes both at once
        if _CONTROL_CHARS.search(ouid):
            return (
                "INVALID_FIELD: organization_user_id contains control characters (line "
                "breaks, NUL, ...) that Salesforce cannot store or match exactly"
            )
        if not is_valid_unicode(ouid):
            return INVALID_UNICODE
    return queries.problem(ouid)


def choice_problem(choices: Mapping[str, FieldChoice]) -> str | None:
    """Why the cells a record would write cannot be sent."""
    # ASCII (nearly every cell: true, false, a picklist value) cannot hold a lone surrogate.
    if not all(is_valid_unicode(c.cell) for c in choices.values()):
        return INVALID_UNICODE
    return None


#: Batches left unsettled when a batch has started its jobs. One keeps the org fed (its rows
#: are queued while the next batch is read and matched); two measured no faster against a
#: distant org (52.6 s against 51.0 s at 100,000 records) and held a batch more (173 MiB
#: against 143 MiB).
UNSETTLED_BATCHES = 1


class RunError(Exception):
    """The run cannot finish cleanly: something is left unresolved. No STATE follows."""


_V = TypeVar("_V")


class _Rare(Generic[_V]):
    """An attribute of :class:`BufferedRecord` that few records set: held at ``index`` of the
    record's one ``_rare`` list, which stays None while none of them is set."""

    def __init__(self, index: int) -> None:
        self.index = index

    @overload
    def __get__(self, item: None, owner: type) -> _Rare[_V]: ...
    @overload
    def __get__(self, item: BufferedRecord, owner: type) -> _V | None: ...
    def __get__(self, item: BufferedRecord | None, owner: type) -> _Rare[_V] | _V | None:
        if item is None:
            return self
        rare = item._rare
        return None if rare is None else rare[self.index]

    def __set__(self, item: BufferedRecord, value: _V | None) -> None:
        item._set_rare(self.index, value)


class BufferedRecord:
    """A record as the batch keeps it: reduced on arrival to what the report and the merge need.

    ``outcome`` is set for a record decided on arrival: filtered, no organization_user_id, or
    failed with ``error`` ("CODE: message"). Such a record has no ``choices``, except one whose
    values cannot be written: it keeps "no choice" for the fields it speaks to, so that it
    still outranks older records there. ``seq`` is the record's arrival order in the run; ``ts``
    its timestamp in microseconds since the epoch (not changed once made).

    Two batches of these are alive at once, so a record is kept lean: its ``timestamp``
    text is not kept when it is the canonical form of ``ts`` (made again when read), and the
    fields few records use (``outcome``, ``error``, ``fields``, ``retry``, ``failed_key``)
    share one slot that is empty for most.
    """

    __slots__ = ("_rare", "_stamp", "choices", "didomi_id", "ouid", "seq", "spooled", "stream",
                 "ts")  # fmt: skip

    def __init__(
        self,
        stream: str,
        seq: int,
        ouid: str | None,
        didomi_id: str | None,
        timestamp: str | None,  # as reported
        ts: int | None = None,
        choices: dict[str, FieldChoice] | None = None,
        outcome: Outcome | None = None,
        error: str | None = None,
        fields: dict[str, Any] | None = None,  # of a record failed on arrival, for the report
        spooled: bool = False,  # the record as sent is kept on disk should it fail
        retry: int | None = None,  # a record failed in earlier runs: the how-many-th retry
        failed_key: str | None = None,  # and its key in the failed-records store
    ) -> None:
        self.stream = stream
        self.seq = seq
        self.ouid = ouid
        self.didomi_id = didomi_id
        self.ts = ts
        self._stamp = (
            _CANONICAL
            if ts is not None and timestamp is not None and len(timestamp) == 24
            and timestamp == canonical_stamp(ts)
            else timestamp
        )  # fmt: skip
        self.choices = choices
        self.spooled = spooled
        self._rare: list[Any] | None = (
            None
            if outcome is None and error is None and fields is None and retry is None
            and failed_key is None
            else [outcome, error, fields, retry, failed_key]
        )  # fmt: skip

    @classmethod
    def read(
        cls, stream: str, seq: int, ouid: str, didomi_id: str | None, ts: int | None,
        choices: dict[str, FieldChoice],
    ) -> BufferedRecord:
        """A record read with choices and no outcome, whose timestamp text (when it has one) is
        known to be the canonical form of ``ts``: the plain reader's (see ``fast_stamp``).
        The same as ``BufferedRecord(stream, seq, ouid, didomi_id, canonical_stamp(ts), ts,
        choices)``, without making the text to compare it."""
        item = cls.__new__(cls)
        item.stream = stream
        item.seq = seq
        item.ouid = ouid
        item.didomi_id = didomi_id
        item.ts = ts
        item._stamp = None if ts is None else _CANONICAL
        item.choices = choices
        item.spooled = False
        item._rare = None
        return item

    @property
    def timestamp(self) -> str | None:
        stamp = self._stamp
        if stamp is _CANONICAL:
            assert self.ts is not None
            return canonical_stamp(self.ts)
        return stamp

    @timestamp.setter
    def timestamp(self, value: str | None) -> None:
        self._stamp = value

    def _set_rare(self, index: int, value: Any) -> None:
        if self._rare is None:
            if value is None:
                return
            self._rare = [None] * 5
        self._rare[index] = value

    outcome: _Rare[Outcome] = _Rare(0)
    error: _Rare[str] = _Rare(1)
    fields: _Rare[dict[str, Any]] = _Rare(2)
    retry: _Rare[int] = _Rare(3)
    failed_key: _Rare[str] = _Rare(4)

    def _values(self) -> tuple[Any, ...]:
        return (
            self.stream, self.seq, self.ouid, self.didomi_id, self.timestamp, self.ts,
            self.choices, self.outcome, self.error, self.fields, self.spooled, self.retry,
            self.failed_key,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, BufferedRecord)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        names = ("stream", "seq", "ouid", "didomi_id", "timestamp", "ts", "choices", "outcome",
                 "error", "fields", "spooled", "retry", "failed_key")  # fmt: skip
        shown = ", ".join(f"{n}={v!r}" for n, v in zip(names, self._values(), strict=True))
        return f"BufferedRecord({shown})"


#: BufferedRecord's timestamp text when it is the canonical form of its ``ts``.
_CANONICAL: Any = object()

_EPOCH_DATE = date(1970, 1, 1)
_HOURS: dict[int, str] = {}  # hours since the epoch -> "YYYY-MM-DDTHH:" (a run spans a few)


def canonical_stamp(ts: int) -> str | None:
    """``format_timestamp`` of the instant `ts` microseconds after the epoch (milliseconds,
    truncated, ``Z``), without a datetime; None outside years 1-9999."""
    hour, millis = divmod(ts // 1000, 3_600_000)
    prefix = _HOURS.get(hour)
    if prefix is None:
        day, hour_of_day = divmod(hour, 24)
        try:
            prefix = f"{(_EPOCH_DATE + timedelta(days=day)).isoformat()}T{hour_of_day:02d}:"
        except OverflowError:
            return None
        if len(_HOURS) >= 1024:  # bounded: records mostly come in time order
            _HOURS.clear()
        _HOURS[hour] = prefix
    minute, millis = divmod(millis, 60_000)
    second, millis = divmod(millis, 1000)
    return f"{prefix}{_MINUTE_TEXTS[minute]}{_SECOND_TEXTS[second]}{_MILLI_TEXTS[millis]}"


# The texts of the stamp's parts, made once: formatting numbers per stamp took twice as long.
_MINUTE_TEXTS = [f"{n:02d}:" for n in range(60)]
_SECOND_TEXTS = [f"{n:02d}." for n in range(60)]
_MILLI_TEXTS = [f"{n:03d}Z" for n in range(1000)]


def _raw_identity(raw: Any) -> tuple[str | None, str | None, str | None]:
    """organization_user_id, id and timestamp of a record that could not be read, as sent.

    For a webhook envelope, those of the record inside it, when they can be read.
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None, None, None
    if not isinstance(raw, dict):
        return None, None, None
    params = _as_dict(raw.get("parameters"))
    if params is not None and isinstance(raw.get("type"), str):
        for name in ("new_entity", "entity", "old_entity"):
            inner = _as_dict(params.get(name))
            if inner is not None:
                ouid, didomi_id, timestamp = _raw_identity(inner)
                envelope_ts = _raw_identity({k: raw.get(k) for k in ("updated_at", "created_at")})
                return ouid, didomi_id, timestamp or envelope_ts[2]
    user = _as_dict(raw.get("user"))
    ouid = (user or {}).get("organization_user_id") or raw.get("organization_user_id")
    didomi_id = raw.get("id")
    timestamp = raw.get("updated_at") or raw.get("created_at")
    return (
        ouid.strip() or None if isinstance(ouid, str) else None,
        didomi_id if isinstance(didomi_id, str) else None,
        timestamp if isinstance(timestamp, str) else None,
    )


def _as_dict(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


_PLANNED: Mapping[str, StoredChoice] = MappingProxyType({})
#: A planned group's empty ``kept`` and ``baselines`` (never changed: only read once planned).
_NO_KEPT: dict[str, list[str]] = {}
_NO_BASELINES: dict[str, int | None] = {}
#: The state of every planned group (the plan holds what settling reads): one for all.
_PLANNED_STATE = PersonState("", _PLANNED, None)


class _OneBaseline(Mapping[str, "int | None"]):
    """A planned group's ``baselines`` of one record, in a fifth of a dict's memory (most
    plans update one record, and a batch's plans are held until it is settled)."""

    __slots__ = ("_baseline", "_record_id")

    def __init__(self, record_id: str, baseline: int) -> None:
        self._record_id = record_id
        self._baseline = baseline

    def get(self, record_id: str, default: Any = None) -> Any:
        return self._baseline if record_id == self._record_id else default

    def __getitem__(self, record_id: str) -> int | None:
        if record_id != self._record_id:
            raise KeyError(record_id)
        return self._baseline

    def __iter__(self) -> Iterator[str]:
        return iter((self._record_id,))

    def __len__(self) -> int:
        return 1


def _lean(plan: GroupPlan) -> GroupPlan:
    """``plan`` held in less memory (a batch's plans are held until it is settled): its empty
    containers shared, its rows a tuple, one record's baseline without a dict. Whatever reads
    the plan later (the Salesforce changes, a dry run, the jobs, settling) only reads them."""
    if not plan.kept:
        plan.kept = _NO_KEPT
    rows = plan.update_rows
    if rows.__class__ is list:  # a tuple is smaller, and () is one for all
        plan.update_rows = tuple(rows)
    baselines = plan.baselines
    if len(baselines) == 1 and baselines.__class__ is dict:  # most: one record
        ((record_id, baseline),) = baselines.items()
        plan.baselines = _NO_BASELINES if baseline is None else _OneBaseline(record_id, baseline)
    elif not baselines:
        plan.baselines = _NO_BASELINES
    return plan


def _person(records: BufferedRecord | list[BufferedRecord]) -> PersonRecord | PersonBatch:
    """A batch's records of one person (each with an ouid and choices), as the store folds
    them in: most people have one record, whose choices are the person's as they are."""
    if isinstance(records, list):
        return _fold(records)
    assert records.ouid is not None and records.choices is not None
    ts = records.ts
    return PersonRecord(
        records.ouid,
        NO_TIMESTAMP if ts is None else ts,
        records.seq,
        ts if records.outcome is None else None,  # a failed record's time is not the person's
        records.choices,
    )


def _fold(records: list[BufferedRecord]) -> PersonBatch:
    """Several records of one person in a batch: the newest choice per field (timestamp,
    then arrival); the first record's id spelling unless a newer record that was not failed
    has another."""
    first = records[0]
    assert first.ouid is not None and first.choices is not None
    # The fields in the order they came (the report lists them so), then each one's choice.
    choices: dict[str, Any] = dict.fromkeys(first.choices)
    fields = choices.keys()
    for item in records:
        if not fields >= (item.choices or {}).keys():
            choices.update(dict.fromkeys(item.choices or ()))
    person = PersonBatch(first.ouid, *_sort_key(first), None, choices)
    undecided = len(choices)
    spelled = False
    # Newest first: a field takes the first choice met; once every field has one, the older
    # records have no say (a person may have hundreds of records in a batch).
    for item in sorted(records, key=_sort_key, reverse=True):
        assert item.ouid is not None and item.choices is not None
        ts, seq = _sort_key(item)
        # The newest record that was not failed spells the id (if newer than the first) and
        # dates the person; a failed record only blocks older choices (see read).
        if not spelled and item.outcome is None:
            spelled = True
            person.offer_record(item.ouid, ts, seq, item.ts)
        if undecided:
            for field_name, choice in item.choices.items():
                if choices[field_name] is None:
                    choices[field_name] = (ts, seq, choice.cell, choice.is_list)
                    undecided -= 1
        elif spelled:
            break  # the older records neither choose, spell the id nor date the person
    return person


def _sort_key(item: BufferedRecord) -> tuple[int, int]:
    """Newest wins by timestamp, then arrival; a record without a timestamp is the oldest."""
    return (NO_TIMESTAMP if item.ts is None else item.ts, item.seq)


class _Group:
    """One person's records in a batch, merged state and plan.

    ``members``: (position in the batch, record) of each record, in arrival order. Most
    people have one record: it is kept without the tuples (made when read, once or twice).
    """

    __slots__ = ("_item", "_members", "_seq", "plan", "state")

    def __init__(
        self,
        state: PersonState,
        members: Sequence[tuple[int, BufferedRecord]],
        plan: GroupPlan | None = None,
    ) -> None:
        self.state = state
        self.plan = plan
        self._members: tuple[tuple[int, BufferedRecord], ...] | None = None
        self._item: BufferedRecord | None = None
        if len(members) == 1:
            self._seq, self._item = members[0]
        else:
            self._seq, self._members = -1, tuple(members)

    @property
    def members(self) -> tuple[tuple[int, BufferedRecord], ...]:
        if self._members is None:
            assert self._item is not None
            return ((self._seq, self._item),)
        return self._members


@dataclass
class _Batch:
    """One buffer on its way through the stages: its lines, groups and fatal errors so far."""

    number: int
    buffer: list[BufferedRecord]
    lines: dict[int, OutcomeLine] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    fatal: list[str] = field(default_factory=list)
    # Groups written together and their jobs, running (each part's records are disjoint).
    parts: list[tuple[dict[str, _Group], InFlight[tuple[_JobResults, _JobResults]]]] = field(
        default_factory=list
    )

    # People that an earlier batch was writing when this one was matched: planned and written
    # once that batch is confirmed (with the Ids they matched then).
    late: set[str] = field(default_factory=set)
    late_ids: set[str] = field(default_factory=set)

    def writing(self) -> tuple[set[str], set[str]]:
        """Case-folded keys and Salesforce Ids this batch's jobs write or may write."""
        keys: set[str] = {_casefold(key) for key in self.late}
        ids: set[str] = set(self.late_ids)
        for key, group in self.groups.items():
            plan = group.plan
            if plan is None or plan.outcome is not None:
                continue
            if plan.update_rows or plan.insert_row is not None:
                keys.add(_casefold(key))
            ids.update(row["Id"] for row in plan.update_rows)
        return keys, ids


def _casefold(key: str) -> str:
    """``key.casefold()``, the key itself when that is the same text (most keys, lower-cased
    already): not another copy of every key of the batch."""
    folded = key.casefold()
    return key if folded == key else folded


class BatchProcessor:
    """Turns one buffer of records into Salesforce writes and report lines.

    Keeps what the whole run has merged and written (``RunStore``), so that the outcome of a
    run does not depend on where its batches were cut.
    """

    def __init__(
        self,
        rs: ResolvedSettings,
        client: SalesforceClient,
        bulk: BulkIngest,
        report: RunReport,
        logger: logging.Logger,
        salesforce_changes: SalesforceChanges | None = None,
    ) -> None:
        self.rs = rs
        self.salesforce_changes = salesforce_changes
        self.client = client
        self.bulk = bulk
        self.report = report
        self.logger = logger
        self.batches = 0
        self.store = RunStore()
        self.planned = (
            PlannedWrites(rs.field_types, rs.match_field) if rs.settings.dry_run else None
        )
        self.queries = MatchQueryBuilder(
            rs.settings.salesforce_object,
            rs.select_fields,
            rs.match_field,
            url_prefix=client.data_path("query"),
        )
        self._arrivals = 0
        self._position_ints: list[int] = []
        # A matched record as a struct of the selected fields: a fraction of a dict's memory.
        self.record_type = query_record_type(rs.settings.salesforce_object, rs.select_fields)
        # Match queries a few at a time; the previous batch's jobs run meanwhile (pipeline.py).
        self.match_pool = MatchPool(self._fetch)
        # Batches whose outcome is not settled yet, in input order (at most two).
        self._unsettled: deque[_Batch] = deque()
        # Batches are processed on a thread of their own; the next one is read once this one
        # is processed, while its jobs run (read ahead, it measured no faster and held one
        # more batch: see pipeline.py).
        self.worker: BatchWorker[list[BufferedRecord]] = BatchWorker(
            self.process, self._skip_batch
        )
        # Called with each batch's records and lines once settled (failed_records.py).
        self.on_batch: Callable[[list[BufferedRecord], dict[int, OutcomeLine], bool], None] | None
        self.on_batch = None
        self.needs = needs_of(rs.mappings)
        self.choice_reader = ChoiceReader(rs.mappings, rs.field_types)
        self.plain_reader = PlainChoiceReader(rs.mappings, rs.field_types)
        self.regulations = rs.settings.regulations
        if not rs.consent_timestamp_field:
            logger.warning(
                "consent_timestamp_field is not set: within this run the newest consent wins, "
                "but a replay of older Didomi data in a later run can overwrite a newer choice "
                "made in Salesforce or by an earlier run. Set it to a datetime field of %s to "
                "make the newest consent win across runs.",
                rs.settings.salesforce_object,
            )

    def close(self) -> None:
        self.match_pool.close()
        self.store.close()
        if self.planned is not None:
            self.planned.close()

    @property
    def in_flight(self) -> bool:
        """Whether a batch is being processed or its jobs are running in Salesforce (their
        outcome is not known yet)."""
        return self.worker.busy or bool(self._unsettled)

    def submit(self, buffer: list[BufferedRecord]) -> None:
        """Hand a buffer to the batch worker; raises the RunError that stopped the run."""
        self.worker.submit(buffer)

    # -- reading, on arrival --------------------------------------------------------------

    def read(self, stream: str, raw: Any) -> BufferedRecord:
        """Reduce one input record to what its batch needs; never raises."""
        item = self.read_plain(stream, raw)
        if item is not None:
            return item
        seq = self._arrivals
        self._arrivals += 1
        try:
            rec = read_needed(raw, self.needs) or parse_record(raw)
        except RecordError as exc:
            return self._unreadable(stream, seq, raw, str(exc))
        except Exception as exc:  # a defect in the reader: report the record, never drop it
            self.logger.exception("Could not read a record of %s", stream)
            return self._unreadable(stream, seq, raw, f"UNKNOWN_EXCEPTION: {type(exc).__name__}")
        stamp = format_timestamp(rec.timestamp) if rec.timestamp else None
        ouid = rec.ouid
        outcome: Outcome | None = None
        problem: str | None = None
        if (
            rec.kind == "deleted"
            or rec.status not in (None, "confirmed")
            or rec.regulation not in self.rs.settings.regulations
        ):
            outcome = Outcome.SKIPPED_FILTERED
        elif ouid is None:
            outcome = Outcome.SKIPPED_NO_OUID
        else:
            problem = ouid_problem(ouid, self.queries)
        if outcome is not None or problem is not None:
            return BufferedRecord(
                stream, seq, ouid, rec.didomi_id, stamp,
                outcome=outcome or Outcome.FAILED, error=problem,
            )  # fmt: skip
        ts = to_micros(rec.timestamp) if rec.timestamp else None
        fields: dict[str, Any] | None = None
        try:
            choices = self.choice_reader.choices(rec)
            problem = choice_problem(choices)
        except CellError as exc:
            choices, problem, fields = dict.fromkeys(exc.fields, NO_CHOICE), str(exc), exc.fields
        except Exception as exc:  # a defect in the mapping: report the record, never drop it
            self.logger.exception("Could not map a record of %s", stream)
            return BufferedRecord(
                stream, seq, ouid, rec.didomi_id, stamp,
                outcome=Outcome.FAILED, error=f"UNKNOWN_EXCEPTION: {type(exc).__name__}",
            )  # fmt: skip
        if problem is None:
            return BufferedRecord(stream, seq, ouid, rec.didomi_id, stamp, ts, choices)
        # A record that cannot be written still outranks older records for the fields it
        # speaks to: it takes part in the merge with "no choice" for each of them, so an older
        # choice it overrides is not written in its place (its own values are not written).
        return BufferedRecord(
            stream, seq, ouid, rec.didomi_id, stamp, ts, dict.fromkeys(choices, NO_CHOICE),
            outcome=Outcome.FAILED, error=problem, fields=fields,
        )  # fmt: skip

    def read_plain(self, stream: str, raw: Any) -> BufferedRecord | None:
        """:meth:`read` for a record the plain reader reads (None for any other: no arrival
        is counted then)."""
        plain = self.plain_reader.read(raw)
        if plain is None:
            return None
        seq = self._arrivals
        self._arrivals += 1
        return self._read_plain(stream, seq, *plain)

    def read_shape(self, stream: str, shape: PlainShape) -> BufferedRecord | None:
        """:meth:`read_plain` of ``shape.as_read()``, read from the struct (None: no arrival
        is counted; the caller decodes the record whole)."""
        plain = self.plain_reader.read_shape(shape)
        if plain is None:
            return None
        seq = self._arrivals
        self._arrivals = seq + 1
        rec, choices = plain
        ouid = rec.ouid
        if (
            ouid is None
            or rec.status not in (None, "confirmed")
            or rec.regulation not in self.regulations
            or ouid_problem(ouid, self.queries) is not None
        ):
            return self._read_plain(stream, seq, rec, choices)
        # Most records: to be merged, with the plain reader's timestamp (canonical).
        timestamp = rec.timestamp
        return BufferedRecord.read(
            stream, seq, ouid, rec.didomi_id, None if timestamp is None else timestamp[1],
            choices,
        )  # fmt: skip

    def _read_plain(
        self, stream: str, seq: int, rec: PlainRecord, choices: dict[str, FieldChoice]
    ) -> BufferedRecord:
        """The rest of :meth:`read`, for a record the plain reader has read."""
        stamp, ts = rec.timestamp if rec.timestamp is not None else (None, None)
        ouid = rec.ouid
        if rec.status not in (None, "confirmed") or rec.regulation not in self.regulations:
            return BufferedRecord(
                stream, seq, ouid, rec.didomi_id, stamp, outcome=Outcome.SKIPPED_FILTERED
            )
        if ouid is None:
            return BufferedRecord(
                stream, seq, ouid, rec.didomi_id, stamp, outcome=Outcome.SKIPPED_NO_OUID
            )
        problem = ouid_problem(ouid, self.queries)
        if problem is not None:
            return BufferedRecord(
                stream, seq, ouid, rec.didomi_id, stamp, outcome=Outcome.FAILED, error=problem
            )
        # The plain reader's cells are valid Unicode (choice_problem holds for them)
        return BufferedRecord(stream, seq, ouid, rec.didomi_id, stamp, ts, choices)

    @staticmethod
    def _unreadable(stream: str, seq: int, raw: Any, error: str) -> BufferedRecord:
        ouid, didomi_id, timestamp = _raw_identity(raw)
        return BufferedRecord(
            stream, seq, ouid, didomi_id, timestamp, outcome=Outcome.FAILED, error=error
        )

    # -- the batch ------------------------------------------------------------------------

    def process(self, buffer: list[BufferedRecord]) -> None:
        """Read, merge, match and plan one buffer, then start its writes.

        The writes run while the next buffer is read and matched; this batch's report lines
        are written, and its errors raised, once it is settled: when the next batch has started
        its jobs, or at ``drain``.

        People that no unsettled batch is writing are planned and written at once: their job
        may run beside the earlier ones (no record is in both). The others are matched again
        once the earlier batches are confirmed, then planned and written in a job of their
        own, so that a person's writes land in input order. A failure stops the run: the
        earlier batches are settled and reported, and the people not written yet fail.
        """
        self.batches += 1
        batch = _Batch(self.batches, buffer)
        try:
            batch.groups = self._group(buffer, batch.lines)
            for item in buffer:  # merged into the groups: only the report needs the records now
                item.choices = None
            matches = self._match(batch.groups)
            keys: set[str] = set()
            ids: set[str] = set()
            for earlier in self._unsettled:
                more_keys, more_ids = earlier.writing()
                keys |= more_keys
                ids |= more_ids
            batch.late = conflicting_keys(batch.groups, matches, keys, ids)
            del keys, ids  # not held while this batch is planned and the earlier one settled
            batch.late_ids = {
                str(r.get("Id")) for key in batch.late for r in matches.get(key, ())
            }
            now = {k: g for k, g in batch.groups.items() if k not in batch.late}
            self._plan(now, matches)
            del matches  # planned: not held while the earlier batch is awaited
            self._start_part(batch, now)
        except Exception as exc:
            self._stage_failed(batch, exc)
        self._unsettled.append(batch)
        # This batch stays unsettled: its rows are queued in the org while the next batch is
        # read and matched. A failed batch settles everything now (and raises).
        self._advance(0 if batch.fatal else UNSETTLED_BATCHES)

    def drain(self) -> None:
        """Wait for every batch handed over and settle it; RunError when one left something
        open."""
        self.worker.wait()
        self._advance(0)

    def _advance(self, keep: int) -> None:
        """Settle the oldest batches until `keep` are left; start the next one's late part."""
        while len(self._unsettled) > keep:
            oldest = self._unsettled.popleft()
            try:
                self._finish(oldest)
            except RunError as exc:
                for later in self._unsettled:
                    self._finish(later, stopped_by=str(exc))
                self._unsettled.clear()
                raise
            del oldest  # settled: freed before the next batch's late part is matched
            if self._unsettled:
                self._start_late(self._unsettled[0])
                if self._unsettled[0].fatal:
                    keep = 0

    def _start_late(self, batch: _Batch) -> None:
        """Match, plan and write the people an earlier batch was writing, now confirmed."""
        late, batch.late, batch.late_ids = batch.late, set(), set()
        if not late or batch.fatal:
            return
        try:
            groups = {k: batch.groups[k] for k in late}
            self._plan(groups, self._match(groups))
            self._start_part(batch, groups)
        except Exception as exc:
            self._stage_failed(batch, exc)

    def _match(self, groups: dict[str, _Group]) -> dict[str, list[dict[str, Any]]]:
        """The Salesforce records of each group; in a dry run, as the earlier plans (the
        batch still unsettled included) would have left them."""
        matches = self._find_matches(groups)
        if self.planned is not None:
            matches = self.planned.overlay(matches, groups)
        return matches

    def _plan(self, groups: dict[str, _Group], matches: dict[str, list[dict[str, Any]]]) -> None:
        written = self._written(matches)
        for key, group in groups.items():
            group.plan = _lean(plan_group(group.state, matches.get(key, []), self.rs, written))
        if self.salesforce_changes is not None:  # a field a person changed since is kept
            self.salesforce_changes.apply(groups, matches, self.match_pool.fetch_all)
            for group in groups.values():  # the plans it replaced, held lean as well
                if group.plan is not None:
                    _lean(group.plan)
        if self.planned is not None:  # a dry run's later batches plan on top of this plan
            self.planned.remember(groups, self.store, bool(self.rs.consent_timestamp_field))
        for group in groups.values():
            group.state.choices = _PLANNED  # the plan holds what is written: free the choices

    def _start_part(self, batch: _Batch, groups: dict[str, _Group]) -> None:
        """Jobs for the planned writes of `groups`, on a background thread."""
        for group in groups.values():  # planned: the plan holds what the rest reads
            group.state = _PLANNED_STATE
        if self.rs.settings.dry_run:
            return
        writes = {
            k: g for k, g in groups.items() if g.plan is not None and g.plan.outcome is None
        }
        if writes:
            # InFlight forgets this closure once the jobs are done, so the batch does not stay
            # in a reference cycle through its own writes.
            batch.parts.append((writes, InFlight(lambda: self._run_jobs(writes, batch.fatal))))

    def _skip_batch(self, buffer: list[BufferedRecord], error: BaseException) -> None:
        """A batch read after the run stopped: reported, nothing sent to Salesforce."""
        self.batches += 1
        batch = _Batch(self.batches, buffer)
        not_attempted = (
            "NOT_ATTEMPTED: the run stopped at an earlier batch before writing this record "
            "(see the log); the tap sends it again on the next run"
        )
        for seq, item in enumerate(buffer):
            if item.outcome is not None:  # decided on arrival
                batch.lines[seq] = self._line(
                    item, item.outcome, fields=item.fields, error=item.error
                )
            else:
                batch.lines[seq] = self._line(item, Outcome.FAILED, error=not_attempted)
        self._report_batch(batch, completed=False)

    def _stage_failed(self, batch: _Batch, exc: Exception) -> None:
        """Every record of the batch without an outcome yet fails; the run will stop."""
        if isinstance(exc, SalesforceError):
            batch.fatal.append(self._fatal_message(exc))
            self._fail_remaining(batch.groups, batch.lines, str(exc))
            return
        # A defect: still give every record its outcome, then stop.
        self.logger.error(
            "Unexpected error while processing batch %d", batch.number, exc_info=exc
        )
        batch.fatal.append(
            f"Unexpected error ({type(exc).__name__}: {exc}); the batch's records without "
            "an outcome are reported as failed and no STATE was emitted. Please report this."
        )
        error = f"UNKNOWN_EXCEPTION: {type(exc).__name__}"
        self._fail_remaining(batch.groups, batch.lines, error)
        self._fail_unreached(batch, error)

    def _fail_unreached(self, batch: _Batch, error: str) -> None:
        for seq, item in enumerate(batch.buffer):  # records the grouping had not reached
            if seq not in batch.lines:
                batch.lines[seq] = self._line(item, Outcome.FAILED, error=error)

    def _finish(self, batch: _Batch, stopped_by: str | None = None) -> None:
        """Settle the batch's jobs, write its report lines; RunError if it left work open.

        With `stopped_by` (the run stops at an earlier batch), the jobs already started are
        settled and reported, the records not planned yet fail NOT_ATTEMPTED, and nothing is
        raised (the caller raises the earlier batch's error).
        """
        unresolved: list[str] = []
        done: set[str] = set()
        parts, batch.parts = batch.parts, []
        while parts:
            # Its results are freed once its lines are made: not held while the batch's
            # report is written and its failed records kept.
            groups, jobs = parts.pop(0)
            done.update(groups)
            try:
                unresolved += self._write(groups, batch.lines, *jobs.result())
            except Exception as exc:
                self._stage_failed(batch, exc)
            del jobs
        # Planned with nothing to write (skipped, or a dry run): their plan decides.
        rest = {
            k: g for k, g in batch.groups.items() if k not in done and g.plan is not None
        }
        try:
            unresolved += self._write(
                rest, batch.lines, _JobResults(None, None), _JobResults(None, None)
            )
        except Exception as exc:
            self._stage_failed(batch, exc)
        if stopped_by is not None:
            not_attempted = (
                "NOT_ATTEMPTED: the run stopped at an earlier batch before writing this "
                "record (see the log); the tap sends it again on the next run"
            )
            self._fail_remaining(batch.groups, batch.lines, not_attempted)
            self._fail_unreached(batch, not_attempted)
            self._report_batch(batch, completed=False)
            return
        lines = self._report_batch(batch, completed=not (batch.fatal or unresolved))
        if batch.fatal:
            raise RunError(" ".join(batch.fatal))
        if unresolved:
            shown = ", ".join(unresolved[:5]) + (", ..." if len(unresolved) > 5 else "")
            raise RunError(
                f"{len(unresolved)} Salesforce row(s) were still unprocessed or locked after "
                f"the retries ({shown}). "
                "They are reported as failed and no STATE was emitted, so the tap sends them "
                "again on the next run; if this repeats, look for long-running automation or "
                "data skew on these records in Salesforce."
            )
        record_errors = sum(1 for line in lines if line.error)
        if self.rs.settings.fail_on_record_errors and record_errors:
            raise RunError(
                f"{record_errors} record(s) met an error (see the report and the log above) "
                "and fail_on_record_errors is true; no STATE was emitted."
            )

    def _report_batch(self, batch: _Batch, *, completed: bool) -> list[OutcomeLine]:
        """Write the settled batch's report lines; `completed`: its STATE may follow."""
        lines = [batch.lines[seq] for seq in sorted(batch.lines)]
        counts = self.report.write_batch(lines)
        if self.on_batch is not None:  # keeps the failed records (failed_records.py)
            self.on_batch(batch.buffer, batch.lines, completed)
        self.logger.info(
            "Batch %d: %d record(s): %s", batch.number, sum(counts.values()),
            format_counts(counts),
        )
        self._log_errors(lines)
        return lines

    def _fail_remaining(
        self, groups: dict[str, _Group], lines: dict[int, OutcomeLine], error: str
    ) -> None:
        """Every record of the batch without an outcome yet fails with `error`."""
        for group in groups.values():
            ids = group.plan.salesforce_ids if group.plan else ()
            fields = group.plan.fields if group.plan else {}
            for seq, item in group.members:
                lines.setdefault(
                    seq, self._line(item, Outcome.FAILED, ids=ids, fields=fields, error=error)
                )

    def _group(
        self, buffer: list[BufferedRecord], lines: dict[int, OutcomeLine]
    ) -> dict[str, _Group]:
        """Decided records get their line; the others fold into the run's merged state."""
        # key -> (position, record) of its records in arrival order
        members: dict[str, list[tuple[int, BufferedRecord]]] = {}
        # key -> its record, or its records in arrival order when it has several
        records: dict[str, BufferedRecord | list[BufferedRecord]] = {}
        for seq, item in zip(self._positions(len(buffer)), buffer, strict=False):
            outcome = item.outcome
            if outcome is not None:
                lines[seq] = self._line(item, outcome, fields=item.fields, error=item.error)
            ouid = item.ouid
            if item.choices is None or ouid is None:
                continue
            # Salesforce compares text case-insensitively; lower() is its notion of case,
            # casefold() would also merge "strasse" with "straße".
            key = ouid.lower()
            if key == ouid:  # most ids: one string for the record, its group and its state
                key = ouid
            held = records.get(key)
            if held is None:
                records[key] = item
            elif isinstance(held, list):
                held.append(item)
            else:
                records[key] = [held, item]
            if outcome is None:  # a failed record only blocks older choices (see read)
                group = members.get(key)
                if group is None:
                    members[key] = [(seq, item)]
                else:
                    group.append((seq, item))
        batch = {key: _person(held) for key, held in records.items()}
        del records
        states = self.store.merge_batch(batch)
        return {key: _Group(states[key], group) for key, group in members.items()}

    def _positions(self, count: int) -> list[int]:
        """0 .. count-1, the same int objects for every batch: the batches in flight key
        their members and lines by them."""
        if len(self._position_ints) < count:
            self._position_ints = list(range(count))
        return self._position_ints

    def _fetch(self, soql: str) -> list[Any]:
        """One query's records: a match query's as ``record_type``, any other (the field
        history's, run by the same pool) as dicts."""
        if soql.startswith(self.queries.head):
            return self.client.query_records(soql, self.record_type)
        return list(self.client.query_all(soql))

    def _find_matches(self, groups: dict[str, _Group]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        if not groups:
            return found
        rs = self.rs
        queries = list(self.queries.queries(group.state.ouid for group in groups.values()))
        # Salesforce's case-insensitive match may differ from lower() (e.g. "ß"): a record
        # whose key is no group's falls back to casefold(), so a matched person is never
        # treated as unmatched (and inserted again).
        by_casefold = {key.casefold(): key for key in groups}
        seen: set[str] = set()
        for answer in self.match_pool.fetch_all(queries):
            for record in answer:
                record_id = str(record.get("Id"))
                if record_id in seen:  # the same record returned by two chunks
                    continue
                seen.add(record_id)
                key = str(record.get(rs.match_field) or "").strip().lower()
                if key not in groups:
                    key = by_casefold.get(key.casefold(), key)
                found.setdefault(key, []).append(record)
        return found

    def _written(self, matches: dict[str, list[dict[str, Any]]]) -> Any:
        """What this run wrote earlier to the matched records' consent timestamp."""
        if not self.rs.consent_timestamp_field:
            return {}
        return self.store.written(str(r["Id"]) for rs in matches.values() for r in rs)

    # -- writing --------------------------------------------------------------------------

    def _run_jobs(
        self, groups: dict[str, _Group], fatal: list[str]
    ) -> tuple[_JobResults, _JobResults]:
        """Run the planned update and insert jobs (on the writer thread: no store, no report).

        Appends to `fatal` the message of each job that failed as a whole. Rows such a job
        settled before failing keep their real outcome.
        """
        plans = [g.plan for g in groups.values() if g.plan is not None]
        update_rows = [row for plan in plans for row in plan.update_rows]
        insert_rows = [plan.insert_row for plan in plans if plan.insert_row is not None]
        updates = self._run_job("update", update_rows, "Id", fatal)
        if fatal:
            # Stop calling Salesforce once the batch has failed (an exhausted limit, a job that
            # failed as a whole): the new records are left for the next run.
            inserts = _JobResults(
                None, "NOT_ATTEMPTED: the batch stopped before its insert job (see the log)"
            )
        else:
            inserts = self._run_job("insert", insert_rows, self.rs.match_field, fatal)
        return updates, inserts

    def _write(
        self,
        groups: dict[str, _Group],
        lines: dict[int, OutcomeLine],
        updates: _JobResults,
        inserts: _JobResults,
    ) -> list[str]:
        """Decide every group's outcome from its jobs' results.

        Returns the keys of rows left unresolved.
        """
        rs = self.rs
        dry_run = rs.settings.dry_run
        stamping = bool(rs.consent_timestamp_field)
        unresolved: list[str] = []
        stamped: list[tuple[str, int | None, int]] = []  # (Id, baseline, stamp) written
        update_result, insert_result = updates.result, inserts.result
        for group in groups.values():
            plan = group.plan
            assert plan is not None
            outcome = plan.outcome
            error: str | None = None
            job_id: str | None = None
            ids = plan.salesforce_ids
            if outcome is None:
                results: list[RowResult] = []
                if dry_run:
                    outcome = Outcome.WOULD_UPDATE if plan.update_rows else Outcome.WOULD_INSERT
                elif plan.update_rows:
                    results = [update_result(row["Id"]) for row in plan.update_rows]
                    outcome, error, job_id = _combine(results, Outcome.UPDATED)
                elif plan.insert_row is not None:
                    results = [insert_result(plan.insert_row[rs.match_field])]
                    outcome, error, job_id = _combine(results, Outcome.INSERTED)
                    if outcome is Outcome.INSERTED and results[0].sf_id:
                        ids = (results[0].sf_id,)
                stamp = plan.stamp if stamping else None
                for r in results:
                    if r.status == "unresolved":
                        unresolved.append(r.key)
                    elif stamp is not None and r.status == "succeeded" and (r.sf_id or r.key):
                        stamped.append((r.sf_id or r.key, plan.baselines.get(r.key), stamp))
            assert outcome is not None
            # What every line of the person shares, once (see _line): only a stale record's
            # line differs.
            fields = plan.fields
            if not isinstance(fields, (dict, ReportFields)):
                fields = dict(fields)
            kept = plan.kept  # shared, as fields: nothing changes a line's
            stale_at = plan.stale_at
            for seq, item in group.members:
                if stale_at is not None and is_stale(item.ts, stale_at):
                    lines[seq] = OutcomeLine(
                        item.stream, item.ouid, item.didomi_id, item.timestamp,
                        Outcome.SKIPPED_STALE, ids, fields, None, None, item.retry, _NO_KEPT,
                    )  # fmt: skip
                else:
                    lines[seq] = OutcomeLine(
                        item.stream, item.ouid, item.didomi_id, item.timestamp,
                        outcome, ids, fields, error, job_id, item.retry, kept,
                    )  # fmt: skip
        if stamped:
            self.store.record_written(stamped)
        return unresolved

    def _run_job(
        self,
        operation: Literal["update", "insert"],
        rows: Sequence[Mapping[str, str]],
        key_column: str,
        fatal: list[str],
    ) -> _JobResults:
        if self.rs.settings.dry_run or not rows:
            return _JobResults(None, None)
        columns = csv_columns([key_column], rows, list(self.rs.field_types))
        sobject = self.rs.settings.salesforce_object
        try:
            return _JobResults(self.bulk.run(sobject, operation, columns, rows, key_column), None)
        except JobFailedError as exc:
            fatal.append(
                f"Bulk API {operation} job {exc.job_id} failed as a whole: {exc.error_message}. "
                "The records it did not write are reported as failed and no STATE was "
                "emitted, so the tap sends them again on the next run. 'Field name not found' "
                "means the Run As user cannot see a mapped field (field-level security)."
            )
            return _JobResults(exc.outcome, job_error(exc.error_message), exc.job_id)
        except SalesforceError as exc:
            # Rows the job settled before the error keep their outcome; the others are
            # failed and unresolved, since whether they were written is unknown.
            fatal.append(self._fatal_message(exc))
            return _JobResults(exc.outcome, str(exc))

    # -- report lines ---------------------------------------------------------------------

    @staticmethod
    def _line(
        item: BufferedRecord,
        outcome: Outcome,
        *,
        ids: tuple[str, ...] = (),
        fields: Mapping[str, Any] | None = None,
        error: str | None = None,
        job_id: str | None = None,
        kept: dict[str, list[str]] | None = None,
    ) -> OutcomeLine:
        return OutcomeLine(
            stream=item.stream,
            organization_user_id=item.ouid,
            didomi_id=item.didomi_id,
            timestamp=item.timestamp,
            outcome=outcome,
            salesforce_ids=ids,
            # shared with the plan and the person's other lines: nothing changes it
            fields=fields if isinstance(fields, (dict, ReportFields)) else dict(fields or {}),
            error=error,
            job_id=job_id,
            retry=item.retry,
            salesforce_kept=kept or {},
        )

    def _log_errors(self, lines: Any) -> None:
        errors: Counter[str] = Counter(
            line.error for line in lines if line.outcome is Outcome.FAILED and line.error
        )
        for error, count in errors.most_common(10):
            self.logger.warning("%d record(s) failed: %s", count, error)

    @staticmethod
    def _fatal_message(exc: SalesforceError) -> str:
        if isinstance(exc, ApiLimitExceededError):
            return (
                f"Salesforce refused the run: {exc}. The org's daily API request limit is used "
                "up; the batch's records are reported as failed and no STATE was emitted. Run "
                "again when the rolling 24-hour usage has dropped (Setup > Company Information "
                "shows it), or ask Salesforce for a higher limit."
            )
        return (
            f"Salesforce call failed: {exc}. The batch's records are reported as failed and "
            "no STATE was emitted, so the tap sends them again on the next run."
        )


@dataclass(frozen=True)
class _JobResults:
    """A job's per-row results; rows it never settled fail with the job's error."""

    outcome: IngestOutcome | None
    error: str | None  # why rows without a result failed
    job_id: str | None = None

    def result(self, key: str) -> RowResult:
        if self.outcome is not None and key in self.outcome.results:
            return self.outcome.results[key]
        assert self.error is not None, f"no result for {key!r}"
        return RowResult(key, "unresolved", None, False, self.error, self.job_id)


def _combine(results: list[RowResult], success: Outcome) -> tuple[Outcome, str | None, str | None]:
    """One outcome for an organization_user_id whose rows went to Salesforce.

    `success` when any row was written (several matches); the first row error is kept in the
    report either way, so a partial failure is never hidden.
    """
    written: RowResult | None = None
    failed: RowResult | None = None
    for result in results:  # most: one row, written
        if result.status == "succeeded":
            written = written or result
        elif failed is None:
            failed = result
    first_error = (failed.error or "UNKNOWN_EXCEPTION: no result row") if failed else None
    if written is not None:
        return success, first_error, written.job_id
    assert failed is not None, "no result rows"
    return Outcome.FAILED, first_error, failed.job_id


_SCHEMA_ERROR = "__target_salesforce_consent_schema_error__"


class ConsentSink(BatchSink):
    """Buffers records into the target's shared buffer; the target's processor drains it."""

    @property
    def consent_target(self) -> TargetSalesforceConsent:
        return self._consent_target

    def __init__(self, target: TargetSalesforceConsent, *args: Any, **kwargs: Any) -> None:
        self._consent_target = target
        super().__init__(target, *args, **kwargs)

    @property
    def is_full(self) -> bool:
        return self.consent_target.buffered >= self.max_size

    def _singer_validate_message(self, record: dict) -> None:
        """No key-property check: the target identifies a record by its own reading of it
        (organization_user_id, and the id of the record inside a webhook envelope), never by
        the stream's key_properties, so a record without them (a webhook envelope on a stream
        keyed by ``id``) is read like any other."""

    def _parse_timestamps_in_record(self, record: dict, schema: dict, treatment: Any) -> None:
        """Keep records as the tap sent them: the target reads Didomi timestamps itself."""

    def _validate_and_parse(self, record: dict) -> dict:
        """With validate_records, a record that breaks its SCHEMA is reported, not fatal."""
        if self._validator is not None:
            try:
                self._validator.validate(record)
            except InvalidRecord as exc:
                record[_SCHEMA_ERROR] = str(exc.error_message)
        return record

    def process_record(self, record: dict, context: dict) -> None:
        target = self.consent_target
        schema_error = record.pop(_SCHEMA_ERROR, None)
        if schema_error is not None:
            ouid, didomi_id, timestamp = _raw_identity(record)
            target.buffer(
                BufferedRecord(
                    self.stream_name, -1, ouid, didomi_id, timestamp, outcome=Outcome.FAILED,
                    error="INVALID_TYPE_ON_FIELD_IN_RECORD: the record does not match the "
                    f"SCHEMA of stream {self.stream_name} (validate_records is on): "
                    f"{schema_error}",
                )
            )  # fmt: skip
            return
        target.buffer(target.read_record(self.stream_name, record))

    def process_batch(self, context: dict) -> None:
        # Records of Singer BATCH messages arrive here, not through process_record.
        target = self.consent_target
        for record in context.get("records", ()):
            target.buffer(target.read_record(self.stream_name, record))
        target.flush()
