"""Bulk API 2.0 ingest jobs: the state machine, CSV rules and row rules (reference 3).

States: Open -> (one PUT) -> UploadComplete -> InProgress -> JobComplete | Failed, and
Aborted from Open/UploadComplete/InProgress. Processing happens when the job completes
(immediately on close, or after ``polls_to_complete`` GETs of the job info, or, with
``rows_per_second``, once the org has had the time to process the job's rows).

With ``rows_per_second`` the org works like a distant one: closed jobs queue and are processed
one after another at that rate, so a job's rows take ``rows / rate`` seconds after the previous
job's. Until then its info says ``InProgress`` with ``numberRecordsProcessed`` growing at the
rate; the rows are applied (and the results served) when the time is up.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import ids, soql
from .errors import NOT_FOUND_MESSAGE, ApiError, RowError
from .org import Org
from .schema import NULL_MARKER, REQUIRED_ON_INSERT, FieldDef, csv_echo, now_datetime, parse_value

OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
DELIMITERS = {
    "COMMA": ",",
    "BACKQUOTE": "`",
    "CARET": "^",
    "PIPE": "|",
    "SEMICOLON": ";",
    "TAB": "\t",
}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
CHUNK_SIZE = 200
MAX_DUPLICATE_UPDATES = 12
INTERNAL_BATCH = 10000
UNESCAPED_QUOTE = "InvalidBatch : Failed to parse CSV. Found unescaped quote"
# Size limits of reference 3.3 / 3.11 (documented); how Salesforce reports a breach is [I].
MAX_HEADER_CHARS = 32_000
MAX_FIELD_CHARS = 131_072
MAX_MULTIPART_CSV_CHARS = 100_000


def bulk_error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, code, message, style="bulk")


def not_found() -> ApiError:
    return bulk_error(404, "NOT_FOUND", NOT_FOUND_MESSAGE)


@dataclass
class ResultRow:
    cells: list[str]
    record_id: str = ""
    created: bool = False
    error: str = ""


@dataclass
class IngestJob:
    id: str
    object: str
    operation: str
    api_version: str
    line_ending: str = "LF"
    column_delimiter: str = "COMMA"
    external_id_field: str | None = None
    assignment_rule_id: str | None = None
    created_date: str = field(default_factory=now_datetime)
    system_modstamp: str = ""
    state: str = "Open"
    data: bytes | None = None
    polls: int = 0
    processed: int = 0
    failed: int = 0
    retries: int = 0
    error_message: str | None = None
    header_line: str = ""
    successes: list[ResultRow] = field(default_factory=list)
    failures: list[ResultRow] = field(default_factory=list)
    unprocessed: list[ResultRow] = field(default_factory=list)
    forced_failure: str | None = None
    leave_unprocessed: int = 0
    processing_ms: int = 0
    # The state a create/PATCH response reports: the job was closed (UploadComplete) even when
    # the sandbox processed it at once.
    shown_state: str | None = None
    # With a processing rate: when the org starts and finishes this job's rows (clock seconds)
    # and how many rows it holds.
    starts_at: float | None = None
    ready_at: float | None = None
    rows: int = 0

    def __post_init__(self) -> None:
        self.system_modstamp = self.system_modstamp or self.created_date

    @property
    def content_url(self) -> str:
        return f"services/data/v{self.api_version}/jobs/ingest/{self.id}/batches"

    def _head(self, created_by: str, state: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": created_by,
            "createdDate": self.created_date,
            "systemModstamp": self.system_modstamp,
            "state": state or self.state,
        }
        if self.external_id_field is not None:
            body["externalIdFieldName"] = self.external_id_field
        if self.assignment_rule_id is not None:
            body["assignmentRuleId"] = self.assignment_rule_id
        body.update(
            {
                "concurrencyMode": "Parallel",
                "contentType": "CSV",
                "apiVersion": float(self.api_version),
            }
        )
        return body

    def create_json(self, created_by: str) -> dict[str, Any]:
        body = self._head(created_by, self.shown_state)
        if self.state == "Open":
            body["contentUrl"] = self.content_url
        body.update({"lineEnding": self.line_ending, "columnDelimiter": self.column_delimiter})
        return body

    def patch_json(self, created_by: str) -> dict[str, Any]:
        body = self._head(created_by, self.shown_state)
        body.pop("assignmentRuleId", None)
        return body

    def info_json(self, created_by: str) -> dict[str, Any]:
        body = self._head(created_by)
        body["jobType"] = "V2Ingest"
        if self.state == "Open":
            body["contentUrl"] = self.content_url
        body.update({"lineEnding": self.line_ending, "columnDelimiter": self.column_delimiter})
        if self.state != "Open":
            body.update(
                {"numberRecordsProcessed": self.processed, "numberRecordsFailed": self.failed}
            )
        done = self.state in {"JobComplete", "Failed"}
        ms = self.processing_ms if done else 0
        body.update(
            {
                "retries": self.retries,
                "totalProcessingTime": ms,
                "apiActiveProcessingTime": int(ms * 0.9),
                "apexProcessingTime": int(ms * 0.6),
            }
        )
        if self.error_message is not None:
            body["errorMessage"] = self.error_message
        return body

    def list_json(self, created_by: str) -> dict[str, Any]:
        body = self._head(created_by)
        body["jobType"] = "V2Ingest"
        if self.state == "Open":
            body["contentUrl"] = self.content_url
        body.update({"lineEnding": self.line_ending, "columnDelimiter": self.column_delimiter})
        return body

    # ----------------------------------------------------------------- result CSVs

    def _quote(self, value: str) -> str:
        return '"' + value.replace('"', '""') + '"'

    def _csv(self, prefix: list[str], rows: list[list[str]]) -> str:
        delim = DELIMITERS[self.column_delimiter]
        eol = LINE_ENDINGS[self.line_ending]
        head = delim.join(self._quote(p) for p in prefix)
        if self.header_line:
            head = head + delim + self.header_line if head else self.header_line
        lines = [head] + [delim.join(self._quote(c) for c in row) for row in rows]
        return eol.join(lines) + eol

    def successful_csv(self) -> str:
        return self._csv(
            ["sf__Id", "sf__Created"],
            [[r.record_id, "true" if r.created else "false", *r.cells] for r in self.successes],
        )

    def failed_csv(self) -> str:
        return self._csv(
            ["sf__Id", "sf__Error"], [[r.record_id, r.error, *r.cells] for r in self.failures]
        )

    def unprocessed_csv(self) -> str:
        return self._csv([], [r.cells for r in self.unprocessed])


JobT = TypeVar("JobT")


class JobStore(Generic[JobT]):
    """Jobs of one kind, kept by the org (so a reset clears them), found by 15- or 18-char id."""

    org_attribute: str  # the Org attribute holding the jobs

    def __init__(self, org: Org, polls_to_complete: int = 0) -> None:
        self.org = org
        self.polls_to_complete = polls_to_complete

    @property
    def jobs(self) -> dict[str, JobT]:
        jobs: dict[str, JobT] = getattr(self.org, self.org_attribute)
        return jobs

    def get(self, job_id: str) -> JobT:
        job = self.jobs.get(ids.normalize(job_id) or "")
        if job is None:
            raise not_found()
        return job


class IngestJobs(JobStore[IngestJob]):
    """The org's ingest jobs and the operations of the Bulk API 2.0 ingest resources."""

    org_attribute = "ingest_jobs"

    def __init__(self, org: Org, polls_to_complete: int = 0,
                 rows_per_second: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(org, polls_to_complete)
        if rows_per_second is not None and rows_per_second <= 0:
            raise ValueError("rows_per_second must be positive")
        self.rows_per_second = rows_per_second
        self.clock = clock
        self._busy_until = 0.0  # when the org finishes the last queued job's rows

    # ----------------------------------------------------------------- create

    def create(self, version: str, body: bytes, content_type: str) -> IngestJob:
        if content_type.lower().startswith("multipart/form-data"):
            spec, data = _parse_multipart(body, content_type)
            chars = len(data.decode("utf-8", "replace"))
            if chars > MAX_MULTIPART_CSV_CHARS:
                # [I] the limit is documented (reference 3.3); code and wording are not.
                raise bulk_error(
                    400,
                    "API_ERROR",
                    f"Multipart content exceeds the maximum of {MAX_MULTIPART_CSV_CHARS} "
                    f"characters ({chars} characters); upload larger data with a PUT to the "
                    "job's contentUrl",
                )
            job = self._create_from_spec(version, spec)
            job.data = data
            self._close(job)
            return job
        return self._create_from_spec(version, _parse_json(body))

    def _create_from_spec(self, version: str, spec: dict[str, Any]) -> IngestJob:
        for prop in (
            "operation",
            "object",
            "contentType",
            "columnDelimiter",
            "lineEnding",
            "externalIdFieldName",
            "assignmentRuleId",
        ):
            value = spec.get(prop)
            if value is not None and not isinstance(value, str):
                raise invalid_property(value, prop)
        operation = spec.get("operation")
        if operation not in OPERATIONS:
            raise invalid_property(operation, "operation")
        object_name = spec.get("object")
        schema = self.org.schema(str(object_name or ""))
        if schema is None:
            raise bulk_error(
                400, "INVALIDJOB", f"InvalidJob : Unable to find object: {object_name or ''}"
            )
        if "contentType" in spec and spec["contentType"] != "CSV":
            raise invalid_property(spec["contentType"], "contentType")
        delimiter = spec.get("columnDelimiter", "COMMA")
        if delimiter not in DELIMITERS:
            raise invalid_property(delimiter, "columnDelimiter")
        line_ending = spec.get("lineEnding", "LF")
        if line_ending not in LINE_ENDINGS:
            raise invalid_property(line_ending, "lineEnding")
        external_id = spec.get("externalIdFieldName")
        if operation == "upsert":
            fdef = schema.field(str(external_id or ""))
            if fdef is None or not (fdef.external_id or fdef.name == "Id"):
                raise bulk_error(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : Field name provided, {external_id or ''} does not match an "
                    f"External ID for {schema.name}",
                )
            external_id = fdef.name
        else:
            external_id = None
        job = IngestJob(
            id=self.org.new_id(ids.KEY_PREFIXES["Job"]),
            object=schema.name,
            operation=str(operation),
            api_version=version,
            line_ending=str(line_ending),
            column_delimiter=str(delimiter),
            external_id_field=external_id,
            assignment_rule_id=spec.get("assignmentRuleId"),
        )
        self.jobs[job.id] = job
        return job

    # ----------------------------------------------------------------- upload / state

    def upload(self, job_id: str, data: bytes, content_type: str | None = None) -> None:
        """Store the job's one CSV upload; ``content_type`` (when given) must be text/csv."""
        if content_type is not None:
            media = content_type.split(";", 1)[0].strip().lower()
            if media != "text/csv":
                # [I] Salesforce answers 400 for unsupported content; the wording is not
                # captured.
                raise bulk_error(
                    400, "API_ERROR", f"Unsupported content type: {content_type or '(none)'}"
                )
        job = self.get(job_id)
        if job.data is not None:
            raise bulk_error(
                400,
                "BULK_API_ERROR",
                f"Found multipe contents for job: <{job.id[:15]}>, please 'Close' / 'Abort' / "
                "'Delete' the current Job then create a new Job and make sure you only do "
                "'PUT' once on a given Job.",
            )
        if job.state != "Open":
            raise bulk_error(
                400, "INVALIDJOBSTATE", f"Unable to upload data for job in state {job.state}"
            )
        job.data = data
        job.system_modstamp = now_datetime()

    def set_state(self, job_id: str, body: bytes) -> IngestJob:
        job = self.get(job_id)
        spec = _parse_json(body)
        target = spec.get("state")
        if not isinstance(target, str) or target not in {"UploadComplete", "Aborted"}:
            raise invalid_property(target, "state")
        if target == "UploadComplete":
            if job.state != "Open":
                raise _bad_transition(job.state, str(target))
            self._close(job)
        else:
            if job.state not in {"Open", "UploadComplete", "InProgress"}:
                raise _bad_transition(job.state, str(target))
            job.state = "Aborted"
            job.shown_state = None
            job.system_modstamp = now_datetime()
        return job

    def _close(self, job: IngestJob) -> None:
        job.state = "UploadComplete"
        job.shown_state = "UploadComplete"
        job.system_modstamp = now_datetime()
        faults = self.org.faults
        if faults.job_failures:
            job.forced_failure = faults.job_failures.pop(0)
        if faults.unprocessed:
            job.leave_unprocessed = faults.unprocessed.pop(0)
        if self.rows_per_second is not None:
            self._queue(job, self.rows_per_second)
        elif self.polls_to_complete <= 0:
            self._process(job)

    def _queue(self, job: IngestJob, rate: float) -> None:
        """Schedule the job's rows after those of the jobs closed before it."""
        # Counting lines is close enough for timing (a quoted line break counts as a row).
        job.rows = max(0, (job.data or b"").count(b"\n") - 1)
        now = self.clock()
        job.starts_at = max(now, self._busy_until)
        job.ready_at = job.starts_at + job.rows / rate
        self._busy_until = job.ready_at

    def _advance_timed(self, job: IngestJob) -> None:
        """A job of a rated org: InProgress with rows counted at the rate, done when due."""
        assert job.starts_at is not None and job.ready_at is not None
        now = self.clock()
        if now >= job.ready_at:
            self._process(job)
            return
        if now >= job.starts_at:
            job.state = "InProgress"
            rate = self.rows_per_second or 1.0
            job.processed = min(job.rows, int((now - job.starts_at) * rate))

    def poll(self, job_id: str) -> IngestJob:
        """GET job info: advances an UploadComplete/InProgress job by one poll."""
        job = self.get(job_id)
        if job.state in {"UploadComplete", "InProgress"} and job.ready_at is not None:
            self._advance_timed(job)
        elif job.state in {"UploadComplete", "InProgress"}:
            if job.polls < self.polls_to_complete:
                job.polls += 1
                job.state = "InProgress"
            else:
                self._process(job)
        return job

    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        if job.state not in {"UploadComplete", "JobComplete", "Aborted", "Failed"}:
            raise bulk_error(400, "INVALIDJOBSTATE", f"Unable to delete job in state {job.state}")
        del self.jobs[job.id]

    def results(self, job_id: str, which: str) -> str:
        job = self.get(job_id)
        allowed = {"JobComplete", "Failed", "Aborted"}
        if job.state not in allowed:
            raise bulk_error(
                400, "INVALIDJOBSTATE", f"Unable to retrieve results for job in state {job.state}"
            )
        if job.state == "Aborted" and which != "unprocessedrecords":
            # Only the unprocessed records of an aborted job are served (reference 3.7).
            raise bulk_error(
                400, "INVALIDJOBSTATE", f"Unable to retrieve {which} for job in state Aborted"
            )
        if which == "successfulResults":
            return job.successful_csv()
        if which == "failedResults":
            return job.failed_csv()
        if job.state == "Aborted" and job.data is not None and not job.unprocessed:
            self._fill_all_unprocessed(job)
        return job.unprocessed_csv()

    def list_page(self, locator: str | None, page_size: int = 1000) -> tuple[list[IngestJob], int]:
        jobs = list(self.jobs.values())
        start = int(locator) if locator and locator.isdigit() else 0
        return jobs[start : start + page_size], len(jobs)

    # ----------------------------------------------------------------- processing

    def _fail(self, job: IngestJob, message: str) -> None:
        job.state = "Failed"
        job.error_message = message
        job.processed = 0
        job.failed = 0
        job.system_modstamp = now_datetime()

    def _fill_all_unprocessed(self, job: IngestJob) -> None:
        try:
            header, rows = self._read_csv(job)
        except _JobFailure:
            return
        job.header_line = header
        job.unprocessed = [ResultRow(cells=row.cells) for row in rows[1:]]

    def _read_csv(self, job: IngestJob) -> tuple[str, list[CsvRow]]:
        """The verbatim header line and the parsed rows (the header row first)."""
        raw = job.data or b""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _JobFailure("InvalidBatch : Failed to parse CSV. Invalid UTF-8 data") from None
        eol = LINE_ENDINGS[job.line_ending]
        header_end = _find_line_end(text)
        header = text[:header_end]
        parsed = parse_csv(text, DELIMITERS[job.column_delimiter])
        if header.startswith("\ufeff") and header[1:2] == '"':
            raise _JobFailure(UNESCAPED_QUOTE)
        if _has_foreign_line_ending(text, eol):
            raise _JobFailure(
                "ClientInputError : LineEnding is invalid on user data. "
                f"Current LineEnding setting is {job.line_ending}"
            )
        if len(header) > MAX_HEADER_CHARS:
            # [I] the 32,000-character limit is documented (reference 3.11), the message not.
            raise _JobFailure(
                f"InvalidBatch : The header row is longer than {MAX_HEADER_CHARS} characters"
            )
        if parsed and parsed[0].error is not None:
            raise _JobFailure(UNESCAPED_QUOTE)
        return header, parsed

    def _process(self, job: IngestJob) -> None:
        job.state = "InProgress"
        if job.forced_failure is not None:
            self._fill_all_unprocessed(job)
            self._fail(job, job.forced_failure)
            return
        if not job.data:
            self._fail(job, "InvalidBatch : No data was uploaded for this job")
            return
        try:
            header, rows = self._read_csv(job)
        except _JobFailure as exc:
            self._fail(job, exc.message)
            return
        job.header_line = header
        names = rows[0].cells if rows else []
        rows = rows[1:]
        schema = self.org.schemas[job.object]
        fdefs: list[FieldDef] = []
        for name in names:
            fdef = schema.field(name)
            problem = None
            if fdef is None:
                problem = f"InvalidBatch : Field name not found : {name}"
            elif any(f.name == fdef.name for f in fdefs):
                # [I] a column given twice (case-insensitively) fails the job; wording assumed.
                problem = f"InvalidBatch : Duplicate field name: {name}"
            if problem is not None:
                self._fail(job, problem)
                job.unprocessed = [ResultRow(cells=row.cells) for row in rows]
                return
            assert fdef is not None
            fdefs.append(fdef)
        keep = len(rows) - min(job.leave_unprocessed, len(rows))
        job.unprocessed = [ResultRow(cells=row.cells) for row in rows[keep:]]
        rows = rows[:keep]
        self.org.bulk_batches_used += max(1, -(-len(rows) // INTERNAL_BATCH))
        touched_locks: set[str] = set()
        for start in range(0, len(rows), CHUNK_SIZE):
            seen: dict[str, int] = {}
            for row in rows[start : start + CHUNK_SIZE]:
                cells = row.cells + [""] * (len(fdefs) - len(row.cells))
                echo = [csv_echo(f, c) for f, c in zip(fdefs, cells, strict=False)]
                try:
                    _check_row_shape(row, fdefs)
                    record_id, created = self._apply_row(job, fdefs, cells, seen, touched_locks)
                except RowError as err:
                    job.failures.append(ResultRow(cells=echo, error=err.sf_error()))
                else:
                    job.successes.append(
                        ResultRow(cells=echo, record_id=record_id, created=created)
                    )
        self.org.release_lock_attempts(touched_locks)
        # Salesforce retries a batch that hit lock contention before giving the rows up.
        job.retries += len(touched_locks)
        shuffler = random.Random(job.id)
        shuffler.shuffle(job.successes)
        shuffler.shuffle(job.failures)
        job.processed = len(job.successes) + len(job.failures)
        job.failed = len(job.failures)
        job.processing_ms = 40 + 3 * job.processed
        job.state = "JobComplete"
        job.system_modstamp = now_datetime()

    # ----------------------------------------------------------------- row rules

    def _apply_row(
        self,
        job: IngestJob,
        fdefs: list[FieldDef],
        cells: list[str],
        seen: dict[str, int],
        touched_locks: set[str],
    ) -> tuple[str, bool]:
        by_name = dict(zip((f.name for f in fdefs), cells, strict=False))
        op = job.operation
        if op == "insert":
            return self._insert(job, fdefs, cells), True
        if op == "upsert":
            ext = job.external_id_field or "Id"
            key = by_name.get(ext, "")
            if not key:
                raise RowError("MISSING_ARGUMENT", f"{ext} not specified", [])
            matches = self._find_by_external(job.object, ext, key)
            if len(matches) > 1:
                raise RowError(
                    "DUPLICATE_EXTERNAL_ID",
                    f"{ext}: more than one record found for external id field: "
                    f"[{', '.join(matches)}]",
                )
            if not matches:
                if ext == "Id":
                    raise RowError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                return self._insert(job, fdefs, cells, allow_id=False), True
            return self._update(job, fdefs, cells, matches[0], seen, touched_locks), False
        record_id = by_name.get("Id", "")
        if not record_id:
            verb = "update" if op == "update" else "delete"
            raise RowError("MISSING_ARGUMENT", f"Id not specified in an {verb} call")
        target = self._resolve_id(job.object, record_id)
        if op == "update":
            return self._update(job, fdefs, cells, target, seen, touched_locks), False
        # delete / hardDelete
        self._check_lock(target, touched_locks)
        if job.object == "Lead" and self.org.records["Lead"][target]["IsConverted"]:
            raise RowError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
        if op == "hardDelete":
            self.org.hard_delete(job.object, target)
        else:  # to the Recycle Bin: IsDeleted, still seen by queryAll (reference 4)
            self.org.soft_delete(job.object, target)
        return target, False

    def _resolve_id(self, object_name: str, raw: str) -> str:
        normalized = ids.normalize(raw)
        prefix = ids.KEY_PREFIXES[object_name]
        if normalized is None or not normalized.startswith(prefix):
            raise RowError(
                "MALFORMED_ID", f"{object_name} ID: id value of incorrect type: {raw}", ["Id"]
            )
        if normalized not in self.org.records[object_name]:
            if self.org.is_deleted(object_name, normalized):
                raise RowError("ENTITY_IS_DELETED", "entity is deleted")
            raise RowError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        return normalized

    def _find_by_external(self, object_name: str, ext: str, key: str) -> list[str]:
        if ext == "Id":
            try:
                return [self._resolve_id(object_name, key)]
            except RowError as err:
                if err.code == "INVALID_CROSS_REFERENCE_KEY":
                    return []
                raise
        folded = key.casefold()
        fdef = self.org.schemas[object_name].field(ext)
        if fdef is not None and fdef.name == ext and soql.indexable(fdef) and (
                fdef.type not in {"id", "reference"}):
            # The index compares these types by casefold too: one lookup, not a scan per row.
            candidates = self.org.records_with_keys(object_name, fdef, [folded],
                                                    include_deleted=False)
        else:
            candidates = self.org.all_records(object_name, include_deleted=False)
        return [
            str(rec["Id"])
            for rec in candidates
            if isinstance(rec.get(ext), str) and rec[ext].casefold() == folded
        ]

    def _check_lock(self, record_id: str, touched_locks: set[str]) -> None:
        if self.org.is_locked(record_id):
            touched_locks.add(record_id)
            raise RowError(
                "UNABLE_TO_LOCK_ROW",
                f"unable to obtain exclusive access to this record or 1 records: {record_id}",
            )

    def _values(
        self, job: IngestJob, fdefs: list[FieldDef], cells: list[str], *, creating: bool
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for fdef, raw in zip(fdefs, cells, strict=False):
            if fdef.name == "Id" or raw == "":
                continue
            if not (fdef.createable if creating else fdef.updateable):
                raise RowError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {fdef.name}. Please check the security "
                    "settings of this field and verify that it is read/write for your profile "
                    "or permission set.",
                    [fdef.name],
                )
            if raw == NULL_MARKER:
                if not fdef.nillable and not creating:
                    raise RowError(
                        "REQUIRED_FIELD_MISSING",
                        f"Required fields are missing: [{fdef.name}]",
                        [fdef.name],
                    )
                values[fdef.name] = None
                continue
            values[fdef.name] = parse_value(fdef, raw, job.object)
        return values

    def _insert(
        self, job: IngestJob, fdefs: list[FieldDef], cells: list[str], *, allow_id: bool = False
    ) -> str:
        id_cell = dict(zip((f.name for f in fdefs), cells, strict=False)).get("Id", "")
        if id_cell and not allow_id and job.operation == "insert":
            raise RowError(
                "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"]
            )
        values = self._values(job, fdefs, cells, creating=True)
        schema = self.org.schemas[job.object]
        missing = [name for name in REQUIRED_ON_INSERT[job.object] if values.get(name) is None]
        if missing:
            strict = [m for m in missing if not (f := schema.field(m)) or not f.nillable]
            raise RowError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                strict,
            )
        for fdef in schema.fields:
            if fdef.name in values and values[fdef.name] is None and fdef.type == "boolean":
                values[fdef.name] = fdef.default_value
        record = self.org.new_record(job.object, values, tracked=True)
        return str(record["Id"])

    def _update(
        self,
        job: IngestJob,
        fdefs: list[FieldDef],
        cells: list[str],
        record_id: str,
        seen: dict[str, int],
        touched_locks: set[str],
    ) -> str:
        seen[record_id] = seen.get(record_id, 0) + 1
        if seen[record_id] > MAX_DUPLICATE_UPDATES:
            raise RowError(
                "DUPLICATE_VALUE",
                f"Maximum number of duplicate updates in one batch ({MAX_DUPLICATE_UPDATES} "
                f"allowed). Attempt to update Id more than once in this Api call: {record_id}",
            )
        self._check_lock(record_id, touched_locks)
        record = self.org.records[job.object][record_id]
        if job.object == "Lead" and record.get("IsConverted"):
            raise RowError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
        values = self._values(job, fdefs, cells, creating=False)
        self.org.update_record(job.object, record, values)
        return record_id


class _JobFailure(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def invalid_property(value: Any, prop: str) -> ApiError:
    """``Invalid value: 'x' supplied for property: 'p'``; a non-string value shown as JSON."""
    if value is None:
        shown = ""
    elif isinstance(value, str):
        shown = value
    else:
        shown = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return bulk_error(400, "API_ERROR", f"Invalid value: '{shown}' supplied for property: '{prop}'")


_invalid_property = invalid_property  # the former private name


def _bad_transition(current: str, target: str) -> ApiError:
    return bulk_error(
        400, "INVALIDJOBSTATE", f"Invalid state transition from {current} to {target}"
    )


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        spec = json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", 1)
        col = getattr(exc, "colno", 1)
        raise bulk_error(
            400,
            "API_ERROR",
            f"Unexpected character: {exc.__class__.__name__} at [line:{line}, column:{col}]",
        ) from None
    if not isinstance(spec, dict):
        raise bulk_error(400, "API_ERROR", "Request body must be a JSON object")
    return spec


def _parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, Any], bytes]:
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    spec: dict[str, Any] | None = None
    data: bytes | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        if name == "job":
            spec = _parse_json(payload)
        elif name == "content":
            data = payload
    if spec is None or data is None:
        raise bulk_error(400, "API_ERROR", "Multipart request must contain 'job' and 'content'")
    return spec, data


def _find_line_end(text: str) -> int:
    in_quotes = False
    for i, ch in enumerate(text):
        if ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes and ch in "\r\n":
            return i
    return len(text)


def _has_foreign_line_ending(text: str, eol: str) -> bool:
    """True when any line break differs from the declared ending.

    Record separators and line breaks embedded in quoted values alike: users report the
    LineEnding failure for embedded breaks that differ from ``lineEnding`` (reference 3.11
    [O]), e.g. an embedded CRLF in an LF job or a lone LF inside a quoted value of a CRLF job.
    """
    if eol == "\n":
        return "\r" in text
    return text.count("\n") != text.count("\r\n") or text.count("\r") != text.count("\r\n")


@dataclass
class CsvRow:
    """One parsed CSV record; ``error`` is set when the row itself is malformed."""

    cells: list[str]
    error: RowError | None = None


def parse_csv(text: str, delim: str) -> list[CsvRow]:
    """Split ``text`` into records as Salesforce reads a CSV upload (reference 3.11).

    A quoted value ends at a quote not doubled and must be followed by the delimiter, a line
    break or the end (else the job fails ``Found unescaped quote``, as does an unterminated
    quote). A quote inside an unquoted value is kept as data. Whitespace between a delimiter
    and an opening quote fails that row (the value is still read as quoted, so the rest of the
    row lines up). Blank lines are skipped.
    """
    rows: list[CsvRow] = []
    blanks = " " if delim == "\t" else " \t"
    unquoted = re.compile(f"[^{re.escape(delim)}\r\n]*")
    n = len(text)
    i = 0
    while i < n:
        cells: list[str] = []
        error: RowError | None = None
        quoted_any = False
        while True:
            k = i
            while k < n and text[k] in blanks:
                k += 1
            if k < n and text[k] == '"':
                if k > i and error is None:
                    # [I] the row fails (reference 3.11); the sf__Error wording is assumed.
                    error = RowError(
                        "INVALID_FIELD",
                        f"Failed to parse CSV: whitespace between the delimiter and the "
                        f"opening quote of value {len(cells) + 1}",
                    )
                quoted_any = True
                j = k + 1
                parts: list[str] = []
                while True:
                    q = text.find('"', j)
                    if q < 0:
                        raise _JobFailure(UNESCAPED_QUOTE)
                    parts.append(text[j:q])
                    if q + 1 < n and text[q + 1] == '"':
                        parts.append('"')
                        j = q + 2
                        continue
                    j = q + 1
                    break
                if j < n and text[j] not in (delim, "\r", "\n"):
                    raise _JobFailure(UNESCAPED_QUOTE)
                cells.append("".join(parts))
            else:
                m = unquoted.match(text, i)
                j = m.end() if m else i
                cells.append(text[i:j])
            if j < n and text[j] == delim:
                i = j + 1
                continue
            if j < n and text[j] == "\r":
                j += 2 if j + 1 < n and text[j + 1] == "\n" else 1
            elif j < n:
                j += 1
            i = j
            break
        if cells == [""] and not quoted_any:
            continue
        rows.append(CsvRow(cells, error))
    return rows


def _check_row_shape(row: CsvRow, fdefs: list[FieldDef]) -> None:
    """Row-level CSV errors: malformed quoting, too many values, an over-long value."""
    if row.error is not None:
        raise row.error
    if len(row.cells) > len(fdefs):
        # [I] the row fails; the sf__Error wording is assumed.
        raise RowError(
            "INVALID_FIELD",
            f"Row has {len(row.cells)} values but the header has {len(fdefs)} columns",
        )
    for fdef, cell in zip(fdefs, row.cells, strict=False):
        if len(cell) > MAX_FIELD_CHARS:
            # [I] documented limit (reference 3.11); reported like a field's own max length.
            raise RowError(
                "STRING_TOO_LONG",
                f"{fdef.label}: data value too large: {cell[:40]}... "
                f"(max length={MAX_FIELD_CHARS})",
                [fdef.name],
            )
