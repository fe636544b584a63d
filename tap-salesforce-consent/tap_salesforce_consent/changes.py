"""The ``consent_changes`` stream: field-history rows of the mapped fields, made by people.

The bookmark is the last change emitted, ``(changed_at, history_id)``: a run reads from that
second on (Salesforce keeps history to the second) and leaves out what sorts at or before the
bookmark, so ties are broken by the history Id and nothing is skipped or read twice. STATE is
written by the stream after the records it covers, never ahead of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk import Stream
from singer_sdk import typing as th

from target_salesforce_consent.salesforce.client import SalesforceClient
from target_salesforce_consent.salesforce.history import FieldChange, format_changed_at
from target_salesforce_consent.salesforce.soql import MatchQueryBuilder

if TYPE_CHECKING:
    from singer_sdk.helpers.types import Context, Record

    from tap_salesforce_consent.tap import TapSalesforceConsent

#: Changes looked up and emitted together: one query for their records' match field.
CHUNK = 500

_VALUE = th.CustomType({"type": ["boolean", "string", "number", "null"]})

SCHEMA = th.PropertiesList(
    th.Property("history_id", th.StringType, required=True),
    th.Property("salesforce_id", th.StringType, required=True),
    th.Property("object", th.StringType, required=True),
    th.Property("organization_user_id", th.StringType),
    th.Property("field", th.StringType, required=True),
    th.Property("old_value", _VALUE),
    th.Property("new_value", _VALUE),
    th.Property("changed_at", th.DateTimeType, required=True),
    th.Property("changed_by_id", th.StringType, required=True),
).to_dict()


def change_record(change: FieldChange, sobject: str, ouid: str | None) -> dict[str, Any]:
    """The ``consent_changes`` record of a change."""
    return {
        "history_id": change.history_id,
        "salesforce_id": change.record_id,
        "object": sobject,
        "organization_user_id": ouid,
        "field": change.field,
        "old_value": change.old_value,
        "new_value": change.new_value,
        "changed_at": format_changed_at(change.changed_at),
        "changed_by_id": change.changed_by_id,
    }


def sort_key(changed_at: datetime, history_id: str) -> tuple[str, str]:
    return format_changed_at(changed_at), history_id


def after_bookmark(
    changes: Iterable[FieldChange], bookmark: Mapping[str, Any] | None
) -> Iterator[FieldChange]:
    """The changes that sort after the bookmark ``{"changed_at", "history_id"}``."""
    last = (str(bookmark["changed_at"]), str(bookmark["history_id"])) if bookmark else None
    for change in changes:
        if last is None or sort_key(change.changed_at, change.history_id) > last:
            yield change


def chunks(changes: Iterable[FieldChange], size: int = CHUNK) -> Iterator[list[FieldChange]]:
    chunk: list[FieldChange] = []
    for change in changes:
        chunk.append(change)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def match_values(
    client: SalesforceClient, sobject: str, match_field: str, record_ids: Sequence[str]
) -> dict[str, str | None]:
    """Each record's match_field value, stripped (None when blank); deleted records are
    missing from the answer."""
    builder = MatchQueryBuilder(
        sobject, ["Id", match_field], "Id", url_prefix=client.data_path("query")
    )
    found: dict[str, str | None] = {}
    for soql in builder.queries(record_ids):
        for record in client.query_all(soql):
            value = record.get(match_field)
            text = str(value).strip() if value is not None else ""
            found[str(record.get("Id"))] = text or None
    return found


class ConsentChangesStream(Stream):
    """``consent_changes``: one record per change of a mapped field made by a person."""

    name = "consent_changes"
    primary_keys: ClassVar[list[str]] = ["history_id"]
    replication_key = "changed_at"

    def __init__(self, tap: TapSalesforceConsent) -> None:
        self._consent_tap = tap
        super().__init__(tap, schema=SCHEMA, name=self.name)

    def _increment_stream_state(
        self, latest_record: Record, *, context: Context | None = None
    ) -> None:
        # The bookmark is (changed_at, history_id), written in get_records once the records
        # it covers are out; the SDK's would keep only changed_at.
        return

    def _emit_state(self) -> None:
        self.state_manager.is_flushed = False
        self._write_state_message()

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        source = self._consent_tap.source
        state = self.stream_state
        bookmark = state.get("bookmark")
        since = source.start_date
        if isinstance(bookmark, dict) and bookmark.get("changed_at"):
            since = datetime.fromisoformat(str(bookmark["changed_at"]).replace("Z", "+00:00"))
        else:
            bookmark = None
        reader = source.reader()
        count = 0
        for chunk in chunks(after_bookmark(reader.changes_since(since), bookmark)):
            ids = list(dict.fromkeys(c.record_id for c in chunk))
            ouids = match_values(source.client, source.sobject, source.match_field, ids)
            for change in chunk:
                yield change_record(change, source.sobject, ouids.get(change.record_id))
            last = chunk[-1]
            state["bookmark"] = {
                "changed_at": format_changed_at(last.changed_at),
                "history_id": last.history_id,
            }
            count += len(chunk)
            self._emit_state()
        self.logger.info("%s: %d change(s) made by people", self.name, count)
