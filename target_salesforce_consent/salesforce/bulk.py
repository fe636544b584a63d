"""Bulk API 2.0 ingest: CSV building, job lifecycle, reconciliation by column (reference §3)."""

from __future__ import annotations

import csv
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from target_salesforce_consent.mapping import as_sent

from .client import SalesforceClient
from .errors import JobFailedError, SalesforceError
from .soql import check_name

logger = logging.getLogger("target_salesforce_consent.salesforce")

LineEnding = Literal["LF", "CRLF"]
Operation = Literal["update", "insert"]
RowStatus = Literal["succeeded", "failed", "unresolved"]

_TERMINATORS: dict[str, str] = {"LF": "\n", "CRLF": "\r\n"}
_FIELDS_SUFFIX = re.compile(r":[^:]*--\s*$")
TERMINAL_STATES = frozenset({"JobComplete", "Failed", "Aborted"})
#: Row error codes that are worth resubmitting in a new job.
TRANSIENT_ROW_CODES = frozenset({"UNABLE_TO_LOCK_ROW"})
#: Upload size kept under Salesforce's 150 MB (base64) per job.
MAX_UPLOAD_BYTES = 100_000_000
_TRANSIENT_JOB_ERROR = re.compile(
    r"timeout|timed out|unable_to_lock_row|toomanylockfailure|\block(s|ed|ing)?\b",
    re.IGNORECASE,
)
_CONFIG_JOB_ERROR = re.compile(r"^\s*(InvalidBatch|ClientInputError|InvalidJob)\b", re.IGNORECASE)


# -- CSV ----------------------------------------------------------------------------------------


def build_csv(
    columns: Sequence[str],
    rows: Iterable[Mapping[str, str]],
    *,
    line_ending: LineEnding = "LF",
) -> bytes:
    """CSV bytes for a Bulk API 2.0 upload.

    UTF-8 without BOM, every value quoted, rows terminated by the declared line ending, line
    breaks inside values normalised to it. A missing key or None is an empty cell (= leave the
    field unchanged on update).
    """
    if line_ending not in _TERMINATORS:
        raise ValueError(f"line_ending must be LF or CRLF, not {line_ending!r}")
    if not columns:
        raise ValueError("columns is empty")
    if len({c.lower() for c in columns}) != len(columns):
        raise ValueError(f"duplicate column in {list(columns)!r}")
    terminator = _TERMINATORS[line_ending]
    if terminator == "\n":
        if not isinstance(rows, Sequence):
            rows = list(rows)  # read twice when the fast path does not apply
        # The usual case: no cell holds a CR or a NUL, so as_sent changes none and the
        # cells are written as they are (the csv module writes None as "" and anything
        # else as str(), as cell() below does). Checked on the whole text.
        text = _csv_text(columns, _cells(columns, rows), terminator)
        if "\r" not in text and "\x00" not in text:
            return text.encode("utf-8")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator=terminator)
    writer.writerow(columns)

    def cell(value: Any) -> str:
        if value is None:
            return ""
        return as_sent(value if isinstance(value, str) else str(value), terminator)

    for row in rows:
        writer.writerow([cell(row.get(column)) for column in columns])
    return buffer.getvalue().encode("utf-8")


def _cells(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Iterator[Sequence[Any]]:
    """``[row.get(c) for c in columns]`` of each row; a row that can ``pick`` its cells (a
    plan's Row) gives them in one call."""
    names = tuple(columns)
    picks: dict[type, bool] = {}
    for row in rows:
        kind = row.__class__
        picks_cells = picks.get(kind)
        if picks_cells is None:
            picks_cells = picks[kind] = callable(getattr(kind, "pick", None))
        if picks_cells:
            yield row.pick(names)  # type: ignore[attr-defined]
        else:
            yield [row.get(c) for c in names]


def _csv_text(columns: Sequence[str], cells: Iterable[Sequence[Any]], terminator: str) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator=terminator)
    writer.writerow(columns)
    writer.writerows(cells)
    return buffer.getvalue()


def upload_bound(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """At least the bytes :func:`build_csv` makes of ``rows``, without building it: a character
    is at most four bytes of UTF-8, a doubled quote two; each cell adds its quotes and a
    separator."""
    total = 4 * sum(len(c) for c in columns) + 3 * len(columns) + 2
    per_row = 3 * len(columns) + 1
    for cells in _cells(columns, rows):
        total += per_row
        for value in cells:
            if value is not None:
                total += 4 * len(value if isinstance(value, str) else str(value))
    return total


def _as_uploaded(value: str | None) -> str:
    """A cell's text as build_csv uploads it (NUL removed, line breaks as LF)."""
    return as_sent(value or "")


def parse_result_csv(body: bytes) -> list[dict[str, str]]:
    """Rows of a Bulk API result CSV keyed by header name (empty or header-only body -> [])."""
    if not body:
        return []
    text = body.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for record in reader:
        if not record or record == [""]:
            continue
        if header is None:
            header = record
            continue
        values = record + [""] * (len(header) - len(record))
        rows.append(dict(zip(header, values[: len(header)], strict=True)))
    return rows


class ResultRow(NamedTuple):
    """What reconciling needs of one row of a result file (the rest of the row is not kept).
    A named tuple: made once per row of every result file, cheaper than a frozen class."""

    key: str | None  # the key column's cell; None when the file has no such column
    sf_id: str | None
    created: bool
    error: str


def read_result_rows(body: bytes, key_column: str) -> Iterator[ResultRow]:
    """The rows of a Bulk API result CSV, as :func:`parse_result_csv` reads them (by header
    name; the key column, else one named like it in another case), reduced to a ResultRow."""
    if not body:
        return
    # Decoded a chunk at a time: a StringIO of the whole text holds it four bytes a character
    # while it is read (5 MiB for the results of a 10,000-row job, the run's peak).
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    places: dict[str, int] | None = None
    key_place = id_place = created_place = error_place = None
    width = 0
    for record in reader:
        if not record or record == [""]:
            continue
        if places is None:
            places = {name: place for place, name in enumerate(record)}  # the last one wins
            width = len(record)
            key_place = places.get(key_column)
            if key_place is None:
                wanted = key_column.lower()
                key_place = next((i for n, i in places.items() if n.lower() == wanted), None)
            id_place = places.get("sf__Id")
            created_place = places.get("sf__Created")
            error_place = places.get("sf__Error")
            continue
        yield ResultRow(
            _cell(record, key_place) if key_place is not None and key_place < width else None,
            _cell(record, id_place) or None,
            _cell(record, created_place).strip().lower() == "true",
            _cell(record, error_place),
        )


def _cell(record: list[str], place: int | None) -> str:
    """A cell of a result row by its header's place; a short row's missing cells are empty."""
    return record[place] if place is not None and place < len(record) else ""


def parse_sf_error(text: str) -> tuple[str, str]:
    """``"CODE:message:fields --"`` -> ``("CODE", "message")``."""
    text = (text or "").strip()
    code, sep, rest = text.partition(":")
    if not sep:
        return (text or "UNKNOWN_ERROR", "")
    return code.strip(), _FIELDS_SUFFIX.sub("", rest).strip()


def format_sf_error(text: str) -> str:
    """``"CODE:message:fields --"`` -> ``"CODE: message"``."""
    code, message = parse_sf_error(text)
    return f"{code}: {message}" if message else code


RESULT_FILES = ("successfulResults", "failedResults", "unprocessedrecords")


def _result_files(info: Mapping[str, Any], uploaded: int, *, by_id: bool) -> tuple[str, ...]:
    """The result files worth reading (each GET is an API call, and the benchmark counts them).

    A completed job whose counters say every row was processed and none failed has empty
    failed and unprocessed files; anything else (a Failed job, missing or odd counters) reads
    all three. When such a job updated records by Id (``by_id``), its successful file says
    nothing the counters do not: every row succeeded, on the record its Id names, and none was
    created. So none is read (the file echoes every uploaded cell: most of a job's download).
    """
    processed, failed = info.get("numberRecordsProcessed"), info.get("numberRecordsFailed")
    if info.get("state") != "JobComplete" or not isinstance(processed, int):
        return RESULT_FILES
    if not isinstance(failed, int) or processed != uploaded:
        return RESULT_FILES
    if failed == 0:
        return () if by_id else ("successfulResults",)
    if failed == processed:
        return ("failedResults",)
    return ("successfulResults", "failedResults")


def job_error(error_message: str) -> str:
    """A whole-job errorMessage as a row error, "CODE: message" like row errors.

    `InvalidBatch : Field name not found : X` -> `InvalidBatch: Field name not found : X`;
    a message without Salesforce's `Code : ` prefix gets the code JOB_FAILED.
    """
    code, sep, message = error_message.partition(" : ")
    if sep and code and " " not in code:
        return f"{code}: {message}"
    return f"JOB_FAILED: {error_message}"


def is_transient_job_error(error_message: str) -> bool:
    """Whether a Failed job's errorMessage names a transient cause (timeout, lock contention)."""
    if _CONFIG_JOB_ERROR.match(error_message or ""):
        return False
    return bool(_TRANSIENT_JOB_ERROR.search(error_message or ""))


#: The longest sleep between two polls of a job whose progress is known: the rate it shows can
#: change (other jobs, automation), so it is measured again at least this often.
PROGRESS_POLL_CAP = 30.0


def progress_rate(processed: int, now: float, previous: tuple[float, int] | None) -> float | None:
    """Rows per second between the previous poll (`previous`: its time and count) and now.

    Only once both polls saw rows processed: before its first row a job may wait in the org's
    queue for any time, so a rate measured across that wait says nothing.
    """
    if processed <= 0 or previous is None or previous[1] <= 0:
        return None
    if processed <= previous[1] or now <= previous[0]:
        return None
    return (processed - previous[1]) / (now - previous[0])


#: How the rate a run has seen is lowered when a job's first poll, foreseen to find it done,
#: finds it running: without this a rate measured a few percent high would cost every later
#: job a second poll (the next measure comes only from two polls of one running job).
EARLY_POLL_RATE_FACTOR = 0.95


def poll_delay(due: float, floor: float) -> float:
    """The sleep before polling a job likely done in `due` seconds: a little after, so that
    one poll usually finds it complete, never past the cap."""
    return min(max(due * 1.05 + 0.05, floor), PROGRESS_POLL_CAP)


class IngestForecast:
    """When the jobs a run closed are likely done, from the org's processing rate as seen.

    The rate (rows per second) is measured between two polls of a running job and kept for
    the run's next jobs. A job is taken to start when it is closed or, when the run's own
    earlier jobs are still processing, when the last of them is likely done (an org that
    works through one object's jobs one after another); but never more than `queue_cap`
    seconds after it is closed, since an org may as well run them side by side. Pure
    bookkeeping, no I/O: times are given by the caller; safe to share between threads.
    """

    def __init__(self, queue_cap: float) -> None:
        self.queue_cap = queue_cap
        self.rate: float | None = None
        self._lock = threading.Lock()
        self._closed: dict[str, float] = {}  # job id -> when it was closed, in closing order
        self._ends: dict[str, float] = {}  # job id -> when it is likely done

    def closed(self, job_id: str, rows: int, at: float) -> float | None:
        """A job of `rows` rows was closed `at`: when it is likely done (None: no rate yet)."""
        with self._lock:
            self._closed[job_id] = at
            return self._expect(job_id, rows, at)

    def running(self, job_id: str, rows: int, processed: int, at: float,
                previous: tuple[float, int] | None) -> float | None:
        """A poll `at` found the job still running, `processed` rows done (`previous`: the
        time and count of the poll before): when it is likely done (None: no rate yet)."""
        with self._lock:
            if processed <= 0:
                return self._expect(job_id, rows, at)
            rate = progress_rate(processed, at, previous)
            if rate is not None:
                self.rate = rate
            elif self.rate is None:
                return None
            else:
                foreseen = self._ends.get(job_id)
                if previous is None and foreseen is not None and at >= foreseen:
                    # Still running when its first poll was foreseen to find it done: the
                    # rate seen (one measure, maybe a noisy one) is likely a little high.
                    self.rate *= EARLY_POLL_RATE_FACTOR
                # The job did `processed` rows since it was closed at the latest: at least
                # that fast, whatever the rate seen before.
                closed = self._closed.get(job_id, at)
                rate = self.rate if at <= closed else max(self.rate, processed / (at - closed))
            end = at + max(rows - processed, 0) / rate
            self._ends[job_id] = end
            return end

    def ended(self, job_id: str) -> None:
        """The job ended (or the run stopped waiting for it): later jobs no longer queue
        behind it."""
        with self._lock:
            self._closed.pop(job_id, None)
            self._ends.pop(job_id, None)

    def _expect(self, job_id: str, rows: int, at: float) -> float | None:
        """The end of a job that has not started by `at` (lock held)."""
        if self.rate is None:
            return None
        start = at
        for earlier in self._closed:
            if earlier == job_id:
                break
            start = max(start, self._ends.get(earlier, at))
        end = min(start, at + self.queue_cap) + max(rows, 0) / self.rate
        self._ends[job_id] = end
        return end


# -- results ------------------------------------------------------------------------------------


@dataclass(slots=True)
class RowResult:
    key: str
    status: RowStatus
    sf_id: str | None
    created: bool
    error: str | None
    job_id: str | None


@dataclass(frozen=True)
class IngestOutcome:
    results: dict[str, RowResult]
    job_ids: list[str] = field(default_factory=list)

    def count(self, status: RowStatus) -> int:
        return sum(1 for result in self.results.values() if result.status == status)


@dataclass
class _Row:
    key: str
    norm: str
    data: Mapping[str, str]


@dataclass
class _JobRun:
    job_id: str
    state: str
    error_message: str
    succeeded: dict[str, ResultRow] = field(default_factory=dict)
    failed: dict[str, ResultRow] = field(default_factory=dict)
    unprocessed: set[str] = field(default_factory=set)
    timed_out: bool = False
    #: The job's counters say every uploaded row succeeded: an update by Id, whose
    #: successful file was not read (see _result_files).
    all_succeeded: bool = False


def _norm(value: str | None) -> str:
    """The key a row is reconciled by: as uploaded and echoed back, compared loosely."""
    return _as_uploaded(value).strip().lower()


class BulkIngest:
    """Runs Bulk API 2.0 ingest jobs and reconciles their results by a key column."""

    def __init__(
        self,
        client: SalesforceClient,
        *,
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        poll_timeout: float = 3600.0,
        max_rounds: int = 4,
        max_rows_per_job: int = 10000,
        delete_jobs: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
    ) -> None:
        if max_rounds < 1 or max_rows_per_job < 1:
            raise ValueError("max_rounds and max_rows_per_job must be at least 1")
        self.client = client
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.poll_timeout = poll_timeout
        self.max_rounds = max_rounds
        self.max_rows_per_job = max_rows_per_job
        self.delete_jobs = delete_jobs
        self.max_upload_bytes = max_upload_bytes
        self._sleep = sleep
        # Lives as long as this object (a whole run): what one job showed of the org's pace
        # tells when the next ones are likely done.
        self.forecast = IngestForecast(queue_cap=max_poll_interval)

    # -- public -------------------------------------------------------------------------------

    def run(
        self,
        sobject: str,
        operation: Operation,
        columns: Sequence[str],
        rows: Sequence[Mapping[str, str]],
        key_column: str,
    ) -> IngestOutcome:
        """Write ``rows`` and return one RowResult per key.

        Raises JobFailedError when a job fails as a whole for a non-transient reason, or for a
        transient one on the last round; its ``outcome`` holds what is known so far.
        """
        if operation not in ("update", "insert"):
            raise ValueError(f"operation must be 'update' or 'insert', not {operation!r}")
        check_name(sobject, "object name")
        for column in columns:
            check_name(column, "column name")
        if key_column not in columns:
            raise ValueError(f"key_column {key_column!r} is not one of the columns")
        entries: list[_Row] = []
        seen: set[str] = set()
        for row in rows:
            key = row.get(key_column)
            norm = _norm(key)
            if not norm or key is None:
                raise ValueError(f"a row has an empty {key_column}")
            if norm in seen:
                raise ValueError(f"duplicate {key_column} {key!r}")
            seen.add(norm)
            entries.append(_Row(key, norm, row))
        del seen  # a large table, not held while the job runs

        outcome = IngestOutcome(results={}, job_ids=[])
        if not entries:
            return outcome
        try:
            for chunk in self._chunks(columns, entries):
                self._run_chunk(sobject, operation, columns, key_column, chunk, outcome)
        except SalesforceError as exc:  # a job failed as a whole, or a call kept failing
            exc.outcome = outcome
            raise
        logger.info(
            "Bulk %s of %s: %d succeeded, %d failed, %d unresolved in %d job(s)",
            operation,
            sobject,
            outcome.count("succeeded"),
            outcome.count("failed"),
            outcome.count("unresolved"),
            len(outcome.job_ids),
        )
        return outcome

    # -- chunking -----------------------------------------------------------------------------

    def _chunks(self, columns: Sequence[str], entries: list[_Row]) -> Iterator[list[_Row]]:
        for start in range(0, len(entries), self.max_rows_per_job):
            yield from self._split_by_size(columns, entries[start : start + self.max_rows_per_job])

    def _split_by_size(self, columns: Sequence[str], rows: list[_Row]) -> Iterator[list[_Row]]:
        # Built (to measure) only when it might be too big: the upload builds it anyway.
        if len(rows) > 1 and upload_bound(columns, (r.data for r in rows)) > self.max_upload_bytes:
            size = len(build_csv(columns, [r.data for r in rows]))
            if size > self.max_upload_bytes:
                middle = len(rows) // 2
                yield from self._split_by_size(columns, rows[:middle])
                yield from self._split_by_size(columns, rows[middle:])
                return
        yield rows

    # -- rounds -------------------------------------------------------------------------------

    def _run_chunk(
        self,
        sobject: str,
        operation: Operation,
        columns: Sequence[str],
        key_column: str,
        chunk: list[_Row],
        outcome: IngestOutcome,
    ) -> None:
        pending = chunk
        last_error: dict[str, tuple[str | None, str | None]] = {}
        results = outcome.results
        for round_no in range(1, self.max_rounds + 1):
            if round_no > 1:
                delay = self.client.retry.delay(round_no - 1)
                logger.info(
                    "Resubmitting %d %s row(s) in a new job (round %d/%d) after %.1fs",
                    len(pending),
                    sobject,
                    round_no,
                    self.max_rounds,
                    delay,
                )
                self._sleep(delay)
            job = self._run_job(sobject, operation, columns, key_column, pending, outcome)
            if job.state == "Failed" and not is_transient_job_error(job.error_message):
                self._settle(job, pending, results, retry_into=None)
                for row in pending:
                    if row.key not in results:
                        results[row.key] = RowResult(
                            row.key, "unresolved", None, False,
                            job_error(job.error_message), job.job_id,
                        )  # fmt: skip
                raise JobFailedError(job.job_id, job.error_message)
            if job.state == "Aborted":
                for row in pending:
                    if row.key not in results:
                        results[row.key] = RowResult(
                            row.key, "unresolved", None, False,
                            f"JOB_ABORTED: job {job.job_id} was aborted", job.job_id,
                        )  # fmt: skip
                raise JobFailedError(job.job_id, "the job was aborted outside this target")
            if job.timed_out:
                for row in pending:
                    results[row.key] = RowResult(
                        row.key, "unresolved", None, False,
                        f"POLL_TIMEOUT: job {job.job_id} was still {job.state} after "
                        f"{self.poll_timeout:.0f}s; its outcome is unknown",
                        job.job_id,
                    )  # fmt: skip
                return
            retry: list[_Row] = []
            self._settle(
                job, pending, results, retry_into=retry, last_error=last_error,
                resubmit_missing=operation == "update" or job.state == "Failed",
            )  # fmt: skip
            if job.state == "Failed":
                logger.warning(
                    "Bulk job %s failed with a transient cause (%s); %d row(s) left to resubmit",
                    job.job_id,
                    job.error_message,
                    len(retry),
                )
            pending = retry
            if not pending:
                return
            if round_no == self.max_rounds and job.state == "Failed":
                for row in pending:
                    error, job_id = last_error.get(row.norm, (None, job.job_id))
                    results[row.key] = RowResult(row.key, "unresolved", None, False, error, job_id)
                raise JobFailedError(job.job_id, job.error_message)
        logger.warning(
            "%d %s row(s) still unresolved after %d rounds", len(pending), sobject, self.max_rounds
        )
        for row in pending:
            error, job_id = last_error.get(row.norm, (None, None))
            results[row.key] = RowResult(row.key, "unresolved", None, False, error, job_id)

    def _settle(
        self,
        job: _JobRun,
        pending: list[_Row],
        results: dict[str, RowResult],
        *,
        retry_into: list[_Row] | None,
        last_error: dict[str, tuple[str | None, str | None]] | None = None,
        resubmit_missing: bool = True,
    ) -> None:
        """Record final results of ``job``; put resubmittable rows into ``retry_into``.

        A row missing from all three result files of a completed job has an unknown outcome:
        an update may be sent again (it is idempotent), an insert may not (it could create a
        duplicate), so it stays unresolved unless ``resubmit_missing``.
        """
        if job.all_succeeded:
            for row in pending:
                results[row.key] = RowResult(row.key, "succeeded", row.key, False, None, job.job_id)
            return
        for row in pending:
            success = job.succeeded.get(row.norm)
            if success is not None:
                results[row.key] = RowResult(
                    key=row.key,
                    status="succeeded",
                    sf_id=success.sf_id,
                    created=success.created,
                    error=None,
                    job_id=job.job_id,
                )
                continue
            failure = job.failed.get(row.norm)
            if failure is not None:
                raw_error = failure.error
                code, _ = parse_sf_error(raw_error)
                error = format_sf_error(raw_error)
                if code in TRANSIENT_ROW_CODES and retry_into is not None:
                    retry_into.append(row)
                    if last_error is not None:
                        last_error[row.norm] = (error, job.job_id)
                    continue
                results[row.key] = RowResult(
                    key=row.key,
                    status="failed",
                    sf_id=failure.sf_id,
                    created=False,
                    error=error,
                    job_id=job.job_id,
                )
                continue
            if row.norm not in job.unprocessed and not resubmit_missing:
                results[row.key] = RowResult(
                    row.key, "unresolved", None, False,
                    f"UNKNOWN_OUTCOME: the row is missing from job {job.job_id}'s results; "
                    "check the record in Salesforce before running again",
                    job.job_id,
                )  # fmt: skip
                continue
            if retry_into is not None:
                retry_into.append(row)
                if last_error is not None:
                    if row.norm in job.unprocessed:
                        message = f"UNPROCESSED: job {job.job_id} did not process the row"
                    else:
                        message = f"UNPROCESSED: the row is missing from job {job.job_id}'s results"
                    if job.state == "Failed":
                        message += f" (job failed: {job.error_message})"
                    last_error[row.norm] = (message, job.job_id)

    # -- one job ------------------------------------------------------------------------------

    def _run_job(
        self,
        sobject: str,
        operation: Operation,
        columns: Sequence[str],
        key_column: str,
        rows: list[_Row],
        outcome: IngestOutcome,
    ) -> _JobRun:
        body = build_csv(columns, [r.data for r in rows], line_ending="LF")
        job_id = self._create_and_upload(sobject, operation, body, len(rows), outcome)
        closing = time.monotonic()
        self._close(job_id)
        info, timed_out = self._wait(job_id, len(rows), (closing + time.monotonic()) / 2)
        state = str(info.get("state") or "")
        error_message = str(info.get("errorMessage") or "")
        logger.info(
            "Bulk job %s %s: %s processed, %s failed%s",
            job_id,
            state,
            info.get("numberRecordsProcessed", "?"),
            info.get("numberRecordsFailed", "?"),
            f" ({error_message})" if error_message else "",
        )
        job = _JobRun(job_id, state, error_message, timed_out=timed_out)
        if timed_out:
            return job
        if state in ("JobComplete", "Failed"):
            by_id = operation == "update" and key_column == "Id"
            files = _result_files(info, len(rows), by_id=by_id)
            job.all_succeeded = not files
            try:
                self._collect(job, key_column, files)
            except SalesforceError as exc:
                if state != "Failed" or is_transient_job_error(error_message):
                    raise
                logger.warning("Could not read the results of failed job %s: %s", job_id, exc)
        if self.delete_jobs:
            self._delete(job_id)
        return job

    def _create(self, sobject: str, operation: Operation) -> str:
        response = self.client.request(
            "POST",
            "jobs/ingest",
            json={
                "object": sobject,
                "operation": operation,
                "contentType": "CSV",
                "lineEnding": "LF",
                "columnDelimiter": "COMMA",
            },
            headers={"Content-Type": "application/json"},
            expected=(200, 201),
        )
        try:
            job_id = str(response.json()["id"])
        except (ValueError, KeyError, TypeError):
            raise SalesforceError(
                "INVALID_RESPONSE", "job creation returned no job id", status=response.status_code
            ) from None
        return job_id

    def _create_and_upload(
        self, sobject: str, operation: Operation, body: bytes, count: int, outcome: IngestOutcome
    ) -> str:
        attempts = max(self.client.retry.max_attempts, 1)
        for attempt in range(1, attempts + 1):
            job_id = self._create(sobject, operation)
            outcome.job_ids.append(job_id)
            logger.info(
                "Created Bulk job %s (%s %s, %d rows, %d bytes)",
                job_id,
                operation,
                sobject,
                count,
                len(body),
            )
            try:
                self.client.request(
                    "PUT",
                    f"jobs/ingest/{job_id}/batches",
                    data=body,
                    headers={"Content-Type": "text/csv; charset=UTF-8"},
                    expected=(201,),
                    retry_unsafe=False,
                )
                return job_id
            except SalesforceError as exc:
                if not exc.transient:
                    self._abort_quietly(job_id)
                    raise
                # The upload may or may not have reached Salesforce: never PUT twice on a job.
                state = str(self.client.get_json(f"jobs/ingest/{job_id}").get("state") or "")
                logger.warning(
                    "Upload to job %s had an unknown outcome (%s); job is %s", job_id, exc, state
                )
                if state != "Open":
                    raise
                self._abort_quietly(job_id)
                if attempt >= attempts:
                    raise
                self._sleep(self.client.retry.delay(attempt))
        raise AssertionError("unreachable")

    def _close(self, job_id: str) -> None:
        try:
            self.client.request(
                "PATCH",
                f"jobs/ingest/{job_id}",
                json={"state": "UploadComplete"},
                headers={"Content-Type": "application/json; charset=UTF-8"},
            )
        except SalesforceError as exc:
            # A retried PATCH may find the job already closed by the first attempt.
            if exc.status is None or not 400 <= exc.status < 500 or exc.status in (401, 403):
                raise
            state = self.client.get_json(f"jobs/ingest/{job_id}").get("state")
            if state not in ("UploadComplete", "InProgress", "JobComplete", "Failed"):
                raise

    def _wait(
        self, job_id: str, rows: int = 0, closed_at: float | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Poll the job until it ends, each time about when it is likely done.

        Once the run knows the org's rate, the first poll goes when the job is likely done
        (not right after closing, when it has hardly started); a poll that finds it still
        running says when the rest is due. Until a rate is known, and while a job waits in
        the org's queue longer than foreseen, polls back off from `poll_interval`.
        """
        interval = self.poll_interval
        waited = 0.0
        started = time.monotonic()
        previous: tuple[float, int] | None = None
        end = self.forecast.closed(job_id, rows, started if closed_at is None else closed_at)
        try:
            if end is not None:
                delay = min(poll_delay(end - time.monotonic(), 0.0), self.poll_timeout)
                self._sleep(delay)
                waited += delay
            while True:
                asked = time.monotonic()
                info = self.client.get_json(f"jobs/ingest/{job_id}")
                answered = (asked + time.monotonic()) / 2  # about when the org counted its rows
                if not isinstance(info, dict):
                    raise SalesforceError("INVALID_RESPONSE", f"job {job_id} info is not an object")
                if info.get("state") in TERMINAL_STATES:
                    return info, False
                processed = info.get("numberRecordsProcessed")
                if isinstance(processed, int) and not isinstance(processed, bool):
                    end = self.forecast.running(job_id, rows, processed, answered, previous)
                    previous = (answered, processed)
                    if end is None and processed > 0:
                        interval = self.poll_interval  # rows are moving: measure the rate soon
                else:
                    processed, end = 0, None
                if max(waited, time.monotonic() - started) >= self.poll_timeout:
                    logger.warning(
                        "Bulk job %s still %s after %.0fs; giving up waiting",
                        job_id,
                        info.get("state"),
                        self.poll_timeout,
                    )
                    return info, True
                if end is not None and processed > 0:
                    delay = poll_delay(end - time.monotonic(), self.poll_interval / 4)
                else:
                    delay = interval
                    interval = min(interval * 1.5, self.max_poll_interval)
                    if end is not None:  # not started yet: wait for the rows foreseen ahead
                        delay = max(delay, poll_delay(end - time.monotonic(), 0.0))
                # Never sleep past the timeout: one last poll then decides.
                spent = max(waited, time.monotonic() - started)
                delay = min(delay, max(self.poll_timeout - spent, 0.0))
                self._sleep(delay)
                waited += delay
        finally:
            self.forecast.ended(job_id)

    def _results(self, job_id: str, kind: str) -> bytes:
        response = self.client.request(
            "GET", f"jobs/ingest/{job_id}/{kind}", headers={"Accept": "text/csv"}
        )
        return response.content

    def _collect(self, job: _JobRun, key_column: str, kinds: Sequence[str]) -> None:
        for kind in kinds:
            for row in read_result_rows(self._results(job.job_id, kind), key_column):
                norm = _norm(row.key)
                if not norm:
                    logger.warning("A %s row of job %s has no %s", kind, job.job_id, key_column)
                    continue
                if kind == "successfulResults":
                    job.succeeded.setdefault(norm, row)
                elif kind == "failedResults":
                    job.failed.setdefault(norm, row)
                else:
                    job.unprocessed.add(norm)

    def _abort_quietly(self, job_id: str) -> None:
        try:
            self.client.request(
                "PATCH",
                f"jobs/ingest/{job_id}",
                json={"state": "Aborted"},
                headers={"Content-Type": "application/json; charset=UTF-8"},
            )
            logger.info("Aborted Bulk job %s", job_id)
        except SalesforceError as exc:
            logger.warning("Could not abort Bulk job %s: %s", job_id, exc)

    def _delete(self, job_id: str) -> None:
        try:
            self.client.request("DELETE", f"jobs/ingest/{job_id}", expected=(204, 200))
        except SalesforceError as exc:
            logger.warning("Could not delete Bulk job %s: %s", job_id, exc)
