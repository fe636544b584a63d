"""Bulk API 2.0 query jobs (reference 4) and REST query cursors (reference 5.1)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from . import ids, soql
from .errors import ApiError
from .ingest import (
    DELIMITERS,
    LINE_ENDINGS,
    JobStore,
    _parse_json,
    bulk_error,
    invalid_property,
)
from .org import Org
from .schema import TEXT_TYPES, FieldDef, csv_value, now_datetime

DEFAULT_MAX_RECORDS = 50000
REST_DEFAULT_BATCH = 2000


@dataclass
class QueryJob:
    id: str
    operation: str
    object: str
    query: str
    api_version: str
    line_ending: str = "LF"
    column_delimiter: str = "COMMA"
    created_date: str = field(default_factory=now_datetime)
    system_modstamp: str = ""
    state: str = "UploadComplete"
    polls: int = 0
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    processing_ms: int = 0

    def __post_init__(self) -> None:
        self.system_modstamp = self.system_modstamp or self.created_date

    def _head(self, created_by: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": created_by,
            "createdDate": self.created_date,
            "systemModstamp": self.system_modstamp,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version),
        }

    def create_json(self, created_by: str) -> dict[str, Any]:
        body = self._head(created_by)
        body.update({"lineEnding": self.line_ending, "columnDelimiter": self.column_delimiter})
        return body

    def info_json(self, created_by: str) -> dict[str, Any]:
        body = self.create_json(created_by)
        done = self.state == "JobComplete"
        body.update(
            {
                "jobType": "V2Query",
                "numberRecordsProcessed": len(self.rows) if done else 0,
                "retries": 0,
                "totalProcessingTime": self.processing_ms if done else 0,
                "isPkChunkingSupported": True,
            }
        )
        return body

    def page_csv(self, start: int, count: int) -> str:
        delim = DELIMITERS[self.column_delimiter]
        eol = LINE_ENDINGS[self.line_ending]

        def quote(value: str) -> str:
            return '"' + value.replace('"', '""') + '"'

        lines = [delim.join(quote(h) for h in self.header)]
        lines += [delim.join(quote(c) for c in row) for row in self.rows[start : start + count]]
        return eol.join(lines) + eol


def encode_locator(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def decode_locator(locator: str) -> int:
    try:
        padded = locator + "=" * (-len(locator) % 4)
        return int(base64.b64decode(padded.encode()).decode())
    except ValueError:
        raise bulk_error(400, "INVALIDLOCATOR", f"Invalid locator: {locator}") from None


class QueryJobs(JobStore[QueryJob]):
    """The org's Bulk API 2.0 query jobs and the operations of their resources."""

    org_attribute = "query_jobs"

    def create(self, version: str, body: bytes) -> QueryJob:
        spec = _parse_json(body)
        operation = spec.get("operation")
        if operation not in {"query", "queryAll"}:
            raise invalid_property(operation, "operation")
        text = spec.get("query")
        if not isinstance(text, str) or not text.strip():
            raise bulk_error(400, "API_ERROR", "Invalid value: '' supplied for property: 'query'")
        for prop, allowed in (("columnDelimiter", DELIMITERS), ("lineEnding", LINE_ENDINGS)):
            if prop in spec and (not isinstance(spec[prop], str) or spec[prop] not in allowed):
                raise invalid_property(spec[prop], prop)
        try:
            query = soql.parse(text, self.org.all_schemas)
        except ApiError as err:
            raise bulk_error(400, err.error_code, err.message) from None
        if query.offset_given:
            # OFFSET is not supported in Bulk API 2.0 queries (reference 4, [D]); the code and
            # wording of the refusal are [I].
            raise bulk_error(400, "INVALIDJOB",
                             "InvalidJob : The OFFSET clause is not supported in Bulk API 2.0 "
                             "queries; page through the results with the locator instead")
        job = QueryJob(
            id=self.org.new_id(ids.KEY_PREFIXES["Job"]),
            operation=str(operation),
            object=query.object_name,
            query=text,
            api_version=version,
            line_ending=str(spec.get("lineEnding", "LF")),
            column_delimiter=str(spec.get("columnDelimiter", "COMMA")),
        )
        self.org.query_jobs_used += 1
        self.jobs[job.id] = job
        if self.polls_to_complete <= 0:
            self._run(job)
            job.state = "UploadComplete"  # the create response shows it; the next GET completes
            job.polls = -1
        return job

    def _run(self, job: QueryJob) -> None:
        query = soql.parse(job.query, self.org.all_schemas)
        records = self.org.query_candidates(query, include_deleted=job.operation == "queryAll")
        matched = soql.execute(query, records)
        fdefs: list[FieldDef] = query.field_defs
        job.header = [f.name for f in fdefs]
        job.rows = [[csv_value(f, rec.get(f.name)) for f in fdefs] for rec in matched]
        job.processing_ms = 30 + len(job.rows)

    def poll(self, job_id: str) -> QueryJob:
        job = self.get(job_id)
        if job.state in {"UploadComplete", "InProgress"}:
            if job.polls == -1:
                job.state = "JobComplete"
            elif job.polls < self.polls_to_complete:
                job.polls += 1
                job.state = "InProgress"
            else:
                self._run(job)
                job.state = "JobComplete"
            job.system_modstamp = now_datetime()
        return job

    def results(
        self, job_id: str, locator: str | None, max_records: int | None,
        version: str | None = None,
    ) -> tuple[str, str, int]:
        job = self.get(job_id)
        if version is not None and float(version) != float(job.api_version):
            # Results must be read with the job's API version, else 409 (reference 4 and 8.2,
            # [D]); the error code and wording are [I].
            raise bulk_error(
                409, "API_VERSION_MISMATCH",
                f"The results of this job must be requested with API version "
                f"{job.api_version}, the version it was created with (this request used "
                f"{version})")
        if job.state == "UploadComplete" and job.polls == -1:
            job.state = "JobComplete"
        if job.state != "JobComplete":
            raise bulk_error(
                400, "INVALIDJOBSTATE", f"Unable to retrieve results for job in state {job.state}"
            )
        start = decode_locator(locator) if locator else 0
        count = max_records if max_records and max_records > 0 else DEFAULT_MAX_RECORDS
        end = min(start + count, len(job.rows))
        next_locator = encode_locator(end) if end < len(job.rows) else "null"
        return job.page_csv(start, count), next_locator, max(0, end - start)

    def abort(self, job_id: str, body: bytes) -> QueryJob:
        job = self.get(job_id)
        if _parse_json(body).get("state") != "Aborted":
            raise bulk_error(400, "API_ERROR", "Invalid value for property: 'state'")
        if job.state not in {"UploadComplete", "InProgress"}:
            raise bulk_error(
                400, "INVALIDJOBSTATE", f"Invalid state transition from {job.state} to Aborted"
            )
        job.state = "Aborted"
        return job

    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        if job.state == "InProgress":
            raise bulk_error(400, "INVALIDJOBSTATE", "Unable to delete job in state InProgress")
        del self.jobs[job.id]


# ---------------------------------------------------------------------- REST SOQL


def _json_value(fdef: FieldDef, value: Any) -> Any:
    return value


def rest_query(org: Org, version: str, text: str, batch_size: int,
               include_deleted: bool = False) -> dict[str, Any]:
    """``/query`` (live records) or ``/queryAll`` (``include_deleted``: the Recycle Bin too)."""
    query = soql.parse(text, org.all_schemas)
    records = org.query_candidates(query, include_deleted=include_deleted)
    matched = soql.execute(query, records)
    rows = []
    for rec in matched:
        row: dict[str, Any] = {
            "attributes": {
                "type": query.object_name,
                "url": f"/services/data/v{version}/sobjects/{query.object_name}/{rec['Id']}",
            }
        }
        for fdef in query.field_defs:
            row[fdef.name] = _json_value(fdef, rec.get(fdef.name))
        rows.append(row)
    cursor = org.new_id(ids.KEY_PREFIXES["QueryLocator"])
    org.query_cursors[cursor] = (rows, batch_size)
    return _rest_page(org, version, cursor, 0)


# The Apex type of a field's column in ``/query?columns=true``.
_APEX_TYPES = {"id": "Id", "reference": "Id", "boolean": "Boolean", "int": "Integer",
               "long": "Long", "double": "Double", "currency": "Decimal", "percent": "Double",
               "date": "Date", "datetime": "Datetime", "anyType": "Object"}


def rest_query_columns(org: Org, text: str) -> dict[str, Any]:
    """``/query?q=...&columns=true``: the columns a query selects, without running it (what
    the Salesforce CLI reads to lay out ``sf data query``)."""
    query = soql.parse(text, org.all_schemas)
    assert query.schema is not None
    columns: list[dict[str, Any]] = [{
        "aggregate": False,
        "apexType": _APEX_TYPES.get(fdef.type, "String"),
        "booleanType": fdef.type == "boolean",
        "columnName": fdef.name,
        "custom": fdef.custom,
        "displayName": fdef.name,
        "foreignKeyName": None,
        "insertable": fdef.createable,
        "joinColumns": [],
        "numberType": fdef.type in {"int", "long", "double", "currency", "percent"},
        "textType": fdef.type in TEXT_TYPES,
        "updatable": fdef.updateable,
    } for fdef in query.field_defs]
    return {"columnMetadata": columns, "entityName": query.object_name, "groupBy": False,
            "idSelected": any(f.name == "Id" for f in query.field_defs),
            "keyPrefix": query.schema.key_prefix}


def tooling_query(org: Org, text: str) -> dict[str, Any]:
    """Tooling API ``/tooling/query``: the tooling objects the sandbox knows hold no rows."""
    query = soql.parse(text, org.tooling)
    return {"size": 0, "totalSize": 0, "done": True, "queryLocator": None,
            "entityTypeName": query.object_name, "records": []}


def rest_query_more(org: Org, version: str, locator: str) -> dict[str, Any]:
    cursor, _, offset = locator.rpartition("-")
    if cursor not in org.query_cursors or not offset.isdigit():
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    return _rest_page(org, version, cursor, int(offset))


def _rest_page(org: Org, version: str, cursor: str, offset: int) -> dict[str, Any]:
    rows, batch_size = org.query_cursors[cursor]
    page = rows[offset : offset + batch_size]
    end = offset + len(page)
    body: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows)}
    if end < len(rows):
        body["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor}-{end}"
    else:
        org.query_cursors.pop(cursor, None)
    body["records"] = page
    return body
