"""Planning: from merged consent and the matching Salesforce records to rows and outcomes.

Pure functions, no I/O: given what the consent says and what Salesforce holds, decide per
``organization_user_id`` whether to update (which records, which cells), insert, or skip and
why (SPEC sections 5 and 6). The sink runs the resulting rows through Bulk API 2.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from target_salesforce_consent.didomi import MergedConsent, format_timestamp, parse_timestamp
from target_salesforce_consent.mapping import CLEAR, same_value, to_csv_cell, to_report_value
from target_salesforce_consent.report import Outcome
from target_salesforce_consent.settings import ResolvedSettings


def parse_salesforce_datetime(text: Any) -> datetime | None:
    """A datetime Salesforce returned (`2024-06-18T16:40:03.000+0000`); None if it is none."""
    if not isinstance(text, str):
        return None
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError):
        return None


def truncate_to_millis(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class DesiredValues:
    """What one organization_user_id's consent asks Salesforce to hold."""

    cells: dict[str, str]  # field -> CSV cell, only for fields with a choice
    report_fields: dict[str, Any]  # field -> JSON value for the report
    timestamp: datetime | None  # newest consent timestamp, to milliseconds
    list_fields: frozenset[str] = frozenset()  # fields given a selection (compared as sets)


def desired_values(consent: MergedConsent, rs: ResolvedSettings) -> DesiredValues:
    cells: dict[str, str] = {}
    report: dict[str, Any] = {}
    lists: set[str] = set()
    for mapping in rs.mappings:
        value = mapping.value_for(consent)
        if value is None:  # no choice: leave the field untouched
            continue
        ftype = rs.field_types[mapping.field]
        cells[mapping.field] = to_csv_cell(value, ftype)
        report[mapping.field] = to_report_value(value, ftype)
        if isinstance(value, list):
            lists.add(mapping.field)
    stamp = truncate_to_millis(consent.timestamp) if consent.timestamp else None
    return DesiredValues(cells, report, stamp, frozenset(lists))


@dataclass
class GroupPlan:
    """The decision for one organization_user_id (all its input records share it)."""

    outcome: Outcome | None  # None while a write is pending
    salesforce_ids: tuple[str, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)
    update_rows: list[dict[str, str]] = field(default_factory=list)
    insert_row: dict[str, str] | None = None


def plan_group(
    ouid: str,
    desired: DesiredValues,
    matches: Sequence[Mapping[str, Any]],
    rs: ResolvedSettings,
) -> GroupPlan:
    """Decide what to do for one organization_user_id given the records that match it."""
    settings = rs.settings
    ts_field = rs.consent_timestamp_field
    ts_cell = format_timestamp(desired.timestamp) if ts_field and desired.timestamp else None
    # The report lists every mapped value the consent holds, written or not, and the consent
    # timestamp beside them when consent_timestamp_field is set (SPEC 7).
    fields = dict(desired.report_fields)
    if ts_cell and ts_field and fields:
        fields[ts_field] = ts_cell

    live = [m for m in matches if not m.get("IsConverted")]
    converted = [m for m in matches if m.get("IsConverted")]

    if not live and converted:
        # A converted Lead is read-only; the person is a Contact now (SPEC 5).
        return GroupPlan(Outcome.SKIPPED_CONVERTED, _ids(converted), fields)

    if not live:
        if not settings.upsert_mode:
            return GroupPlan(Outcome.SKIPPED_UNMATCHED, (), fields)
        if not desired.cells:
            return GroupPlan(Outcome.SKIPPED_UNCHANGED, (), {})
        row = dict(rs.insert_defaults)
        # On insert an empty cell means "not set"; there is nothing to clear.
        row.update({f: ("" if c == CLEAR else c) for f, c in desired.cells.items()})
        row[rs.match_field] = ouid
        if ts_cell and ts_field:
            row[ts_field] = ts_cell
        return GroupPlan(None, (), fields, insert_row=row)

    ids = _ids(live)
    if len(live) > 1 and settings.on_multiple_matches == "skip":
        return GroupPlan(Outcome.SKIPPED_MULTIPLE_MATCHES, ids, fields)
    rows: list[dict[str, str]] = []
    stale = 0
    for record in live:
        if ts_field and desired.timestamp is not None:
            current = parse_salesforce_datetime(record.get(ts_field))
            if current is not None and current >= desired.timestamp:
                stale += 1  # newest consent wins: Salesforce already holds a newer one
                continue
        changed = {
            f: cell
            for f, cell in desired.cells.items()
            if not same_value(
                cell, record.get(f), rs.field_types[f], as_set=f in desired.list_fields
            )
        }
        if not changed:
            continue
        row = {"Id": str(record["Id"]), **changed}
        if ts_cell and ts_field:
            row[ts_field] = ts_cell
        rows.append(row)

    if rows:
        return GroupPlan(None, ids, fields, update_rows=rows)
    if stale:
        return GroupPlan(Outcome.SKIPPED_STALE, ids, fields)
    return GroupPlan(Outcome.SKIPPED_UNCHANGED, ids, fields)


def _ids(records: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    return tuple(str(r["Id"]) for r in records)


def csv_columns(
    first: Sequence[str], rows: Sequence[Mapping[str, str]], order: Sequence[str]
) -> list[str]:
    """The header of a job: `first` columns, then every field some row sets, in `order`."""
    used = {key for row in rows for key in row}
    rest = [f for f in order if f in used and f not in first]
    extra = sorted(used - set(first) - set(rest))
    return [*first, *rest, *extra]
