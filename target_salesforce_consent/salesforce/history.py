"""Field history of Leads and Contacts (``LeadHistory`` / ``ContactHistory``): who changed which
field, when, from what to what.

Read by the loader, to leave alone a consent field a person changed after the Didomi choice,
and by ``tap-salesforce-consent``, to carry such changes back to Didomi. Queries are built
here (pure) and run by :class:`HistoryReader` (I/O).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .client import SalesforceClient
from .errors import ApiLimitExceededError, SalesforceError
from .soql import MatchQueryBuilder, check_name, quote

#: The history object of each object the pipelines serve, and its field naming the record.
HISTORY_OBJECTS: Mapping[str, tuple[str, str]] = {
    "Lead": ("LeadHistory", "LeadId"),
    "Contact": ("ContactHistory", "ContactId"),
}


def history_object(sobject: str) -> tuple[str, str]:
    """``("LeadHistory", "LeadId")`` for ``Lead``; ValueError for an object without one here."""
    try:
        return HISTORY_OBJECTS[sobject]
    except KeyError:
        raise ValueError(f"no field history object is known for {sobject!r}") from None


def history_columns(sobject: str) -> tuple[str, ...]:
    _, parent = history_object(sobject)
    return ("Id", parent, "Field", "OldValue", "NewValue", "CreatedDate", "CreatedById")


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One history row: ``changed_by_id`` set ``field`` of ``record_id`` to ``new_value``."""

    history_id: str
    record_id: str
    field: str  # as the caller names it (the canonical API name it asked for)
    old_value: Any
    new_value: Any
    changed_at: datetime  # UTC
    changed_by_id: str


def format_changed_at(value: datetime) -> str:
    """``2025-03-10T09:15:22.000Z``: UTC with milliseconds."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def soql_datetime(value: datetime) -> str:
    """A SOQL datetime literal (unquoted), UTC."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_created_date(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    elif len(value) > 5 and value[-5] in "+-" and value[-4:].isdigit():
        value = value[:-2] + ":" + value[-2:]  # +0000 -> +00:00
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_change(
    row: Mapping[str, Any], parent_field: str, fields: Mapping[str, str]
) -> FieldChange | None:
    """A history row as a FieldChange; None for a row of a field not in ``fields`` (lower-cased
    history name -> the caller's name) or a row without a date, user or record."""
    name = fields.get(str(row.get("Field") or "").lower())
    changed_at = _parse_created_date(row.get("CreatedDate"))
    history_id, record_id, user = row.get("Id"), row.get(parent_field), row.get("CreatedById")
    if name is None or changed_at is None or not (history_id and record_id and user):
        return None
    return FieldChange(
        history_id=str(history_id),
        record_id=str(record_id),
        field=name,
        old_value=row.get("OldValue"),
        new_value=row.get("NewValue"),
        changed_at=changed_at,
        changed_by_id=str(user),
    )


def _conditions(fields: Sequence[str], exclude_user_ids: Iterable[str]) -> list[str]:
    for name in fields:
        check_name(name, "field name")
    conditions = [f"Field IN ({', '.join(quote(f) for f in fields)})"]
    excluded = sorted({u for u in exclude_user_ids if u})
    if excluded:
        conditions.append(f"CreatedById NOT IN ({', '.join(quote(u) for u in excluded)})")
    return conditions


class HistoryQueryBuilder:
    """History of given records, by people other than ``exclude_user_ids``: queries chunked
    by record Id under the URI limit, as the match queries are."""

    def __init__(
        self,
        sobject: str,
        fields: Sequence[str],
        exclude_user_ids: Iterable[str],
        *,
        url_prefix: str = "",
    ) -> None:
        if not fields:
            raise ValueError("no field to read the history of")
        history, parent = history_object(sobject)
        self.builder = MatchQueryBuilder(
            history,
            history_columns(sobject),
            parent,
            extra_conditions=_conditions(fields, exclude_user_ids),
            url_prefix=url_prefix,
        )

    def queries(self, record_ids: Iterable[str]) -> list[str]:
        return self.builder.queries(record_ids)


def changes_since_query(
    sobject: str,
    fields: Sequence[str],
    exclude_user_ids: Iterable[str],
    since: datetime | None,
) -> str:
    """Every change of ``fields`` made at or after ``since`` by people other than
    ``exclude_user_ids``, oldest first (ties by Id): the tap's incremental read."""
    history, _ = history_object(sobject)
    where = _conditions(fields, exclude_user_ids)
    if since is not None:
        where.append(f"CreatedDate >= {soql_datetime(since)}")
    return (
        f"SELECT {', '.join(history_columns(sobject))} FROM {history} "
        f"WHERE {' AND '.join(where)} ORDER BY CreatedDate ASC, Id ASC"
    )


def readable_query(sobject: str, fields: Sequence[str]) -> str:
    """A one-row query that fails when the integration user cannot read the history."""
    history, _ = history_object(sobject)
    return f"SELECT Id FROM {history} WHERE {_conditions(fields, ())[0]} LIMIT 1"


def pages_needed(total: int, first_page: int) -> int:
    """The pages (calls) a query of ``total`` rows takes, its first holding ``first_page``."""
    if total <= first_page or first_page <= 0:
        return 1
    return 1 + -(-(total - first_page) // first_page)


class HistoryReader:
    """Reads the field history of mapped fields of one object (``fields``: canonical API
    names; history rows name them case-insensitively)."""

    def __init__(
        self,
        client: SalesforceClient,
        sobject: str,
        fields: Sequence[str],
        exclude_user_ids: Iterable[str],
    ) -> None:
        self.client = client
        self.sobject = sobject
        self.history, self.parent = history_object(sobject)
        self.fields = tuple(fields)
        self.names = {f.lower(): f for f in self.fields}
        self.exclude_user_ids = frozenset(u for u in exclude_user_ids if u)
        self.queries = HistoryQueryBuilder(
            sobject, self.fields, self.exclude_user_ids, url_prefix=client.data_path("query")
        )

    def problem(self) -> str | None:
        """Why the history cannot be read (a sentence), or None when it can.

        An outage or an exhausted API limit is raised, not taken for an unreadable history.
        """
        try:
            for _ in self.client.query_all(readable_query(self.sobject, self.fields)):
                break
        except SalesforceError as exc:
            if exc.transient or isinstance(exc, ApiLimitExceededError):
                raise
            return (
                f"{self.history} cannot be read by the integration user ({exc.code}: "
                f"{exc.message}); turn on Field History Tracking for {self.sobject} and give the "
                f"Run As user read access to {self.sobject} history"
            )
        return None

    def changes_of(
        self,
        record_ids: Iterable[str],
        fetch_all: Callable[[Sequence[str]], Iterable[Iterable[Mapping[str, Any]]]] | None = None,
        since: datetime | None = None,
    ) -> Iterator[FieldChange]:
        """Changes of the records ``record_ids``, in no particular order; with ``since``, at
        least those made at or after it (the caller needs no older one). ``fetch_all`` runs
        the queries by record Id (the rows of each); by default one after another.

        With ``since``, when the records need more than one query by Id, one query of every
        change since then is tried first: it is kept when its pages are no more calls than
        the queries by Id (then one call was spent in vain)."""
        ids = list(dict.fromkeys(record_ids))
        queries = self.queries.queries(ids)
        answers: Iterable[Iterable[Mapping[str, Any]]] | None = None
        if since is not None and len(queries) > 1:
            since_rows = self._rows_since(since, calls_allowed=len(queries))
            if since_rows is not None:
                wanted = set(ids)
                answers = [[r for r in since_rows if r.get(self.parent) in wanted]]
        if answers is None:
            answers = (
                fetch_all(queries) if fetch_all is not None
                else (self.client.query_all(soql) for soql in queries)
            )
        for rows in answers:
            for row in rows:
                change = parse_change(row, self.parent, self.names)
                if change is not None and change.changed_by_id not in self.exclude_user_ids:
                    yield change

    def _rows_since(self, since: datetime, calls_allowed: int) -> list[dict[str, Any]] | None:
        """Every history row of the fields since ``since``, or None (after one call) when
        reading them all would take more than ``calls_allowed`` calls."""
        soql = changes_since_query(self.sobject, self.fields, self.exclude_user_ids, since)
        rows: list[dict[str, Any]] = []
        for number, (records, total) in enumerate(self.client.query_pages(soql), start=1):
            if number == 1 and pages_needed(total, len(records)) > calls_allowed:
                return None
            rows.extend(records)
        return rows

    def changes_since(self, since: datetime | None) -> Iterator[FieldChange]:
        """Changes made at or after ``since``, oldest first, ties by history Id."""
        soql = changes_since_query(self.sobject, self.fields, self.exclude_user_ids, since)
        for row in self.client.query_all(soql):
            change = parse_change(row, self.parent, self.names)
            if change is not None and change.changed_by_id not in self.exclude_user_ids:
                yield change
