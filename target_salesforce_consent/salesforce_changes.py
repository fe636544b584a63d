"""Respecting newer Salesforce changes: a consent field a person changed in Salesforce after the
Didomi choice is left as they set it.

A rep ticks "Email Opt Out" after a phone call; an older Didomi record must not tick it off
again. The field history (``LeadHistory`` / ``ContactHistory``) says who changed which field
when; changes by the user this target authenticates as are its own writes, not a person's.
:func:`respect_changes` is the decision (pure); :class:`SalesforceChanges` reads the history of
the records a batch is about to change and applies it to their plans.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Protocol

from target_salesforce_consent.plan import GroupPlan, Row, to_micros
from target_salesforce_consent.report import Outcome
from target_salesforce_consent.salesforce.client import SalesforceClient
from target_salesforce_consent.salesforce.history import FieldChange, HistoryReader
from target_salesforce_consent.settings import ResolvedSettings
from target_salesforce_consent.store import PersonState, RecordChoices, StoredChoice

#: Salesforce Id -> field -> time of the newest change a person made (micros, to the ms)
NewestChanges = Mapping[str, Mapping[str, int]]


def newest_changes(changes: Iterable[FieldChange]) -> dict[str, dict[str, int]]:
    """The newest change of each field of each record."""
    newest: dict[str, dict[str, int]] = {}
    for change in changes:
        at = to_micros(change.changed_at) // 1000 * 1000
        per_record = newest.setdefault(change.record_id, {})
        if at > per_record.get(change.field, -1):
            per_record[change.field] = at
    return newest


def choice_is_newer(choice_ts: int | None, changed_at: int) -> bool:
    """Whether a Didomi choice at ``choice_ts`` is newer than a person's change in Salesforce.

    Salesforce keeps history to the second: a change recorded on a whole second may have been
    made at any time in it, so a choice within that second is not shown newer (the person's
    change stands). Otherwise to the millisecond. A choice without a timestamp is never newer.
    """
    if choice_ts is None:
        return False
    if changed_at % _SECOND == 0:
        return choice_ts // _SECOND * _SECOND > changed_at
    return choice_ts // 1000 * 1000 > changed_at


_SECOND = 1_000_000  # in microseconds


def respect_changes(
    plan: GroupPlan,
    person: PersonState,
    records: Sequence[Mapping[str, Any]],
    newest: NewestChanges,
    timestamp_field: str | None,
) -> GroupPlan:
    """``plan`` without the cells of fields a person changed in Salesforce after the choice.

    A row left with no mapped field is not written (nor its consent timestamp); a plan left
    with no row is ``skipped_salesforce_newer``. ``kept`` lists, per record, the fields left as
    the person set them; the report shows what Salesforce holds for a field written nowhere.
    """
    if not plan.update_rows or not newest:
        return plan
    rows: list[Mapping[str, str]] = []
    kept: dict[str, list[str]] = {}
    for row in plan.update_rows:
        changed = newest.get(row["Id"])
        if not changed:  # the common case: no person changed this record since
            rows.append(row)
            continue
        keep = sorted(
            name
            for name in row
            if name in changed
            and name in person.choices
            and not choice_is_newer(person.choices[name].ts, changed[name])
        )
        if not keep:
            rows.append(row)
            continue
        kept[row["Id"]] = keep
        rest = {k: v for k, v in row.items() if k not in keep}
        if any(k in person.choices for k in rest):
            rows.append(Row(list(rest), list(rest.values())))
    if not kept:
        return plan
    written = {name for row in rows for name in row}
    by_id = {str(r.get("Id")): r for r in records}
    fields = dict(plan.fields)
    for record_id, names in kept.items():
        for name in names:
            if name not in written and name in fields:
                fields[name] = by_id.get(record_id, {}).get(name)  # what Salesforce holds
    if rows:
        return replace(plan, update_rows=rows, kept=kept, fields=fields)
    if timestamp_field and timestamp_field in fields:
        first = by_id.get(next(iter(kept)), {})
        fields[timestamp_field] = first.get(timestamp_field)
    return replace(
        plan,
        outcome=Outcome.SKIPPED_SALESFORCE_NEWER,
        update_rows=[],
        kept=kept,
        fields=fields,
        stamp=None,
    )


class PlannedGroup(Protocol):
    """A person's merged state and plan, as the batch holds them."""

    state: PersonState
    plan: GroupPlan | None


def oldest_choice_second(groups: Mapping[str, PlannedGroup]) -> datetime | None:
    """The whole second of the oldest choice the batch is about to write, or None when a
    choice to write has no timestamp (a person's change of any age then stands).

    A person's change made before that second is older than every choice to write, so it
    never keeps a field (:func:`choice_is_newer`): the history before it is not needed."""
    oldest: int | None = None
    for group in groups.values():
        if group.plan is None or not group.plan.update_rows:
            continue
        for ts in _stamps_written(group.state.choices, group.plan.update_rows):
            if ts is None:
                return None
            oldest = ts if oldest is None else min(oldest, ts)
    if oldest is None:
        return None
    return datetime.fromtimestamp(oldest // _SECOND, tz=timezone.utc)


def _stamps_written(
    choices: Mapping[str, StoredChoice], rows: Iterable[Mapping[str, str]]
) -> Iterator[int | None]:
    """The time of each choice that ``rows`` write (once for a lone record's choices, which
    share their record's time)."""
    if choices.__class__ is RecordChoices:
        assert isinstance(choices, RecordChoices)
        cells = choices.cells
        if any(name in cells for row in rows for name in row):
            yield choices.ts
        return
    for row in rows:
        for name in row:
            if name in choices:
                yield choices[name].ts


class SalesforceChanges:
    """Reads the history of the records a batch is about to change and applies it."""

    def __init__(self, reader: HistoryReader, rs: ResolvedSettings) -> None:
        self.reader = reader
        self.rs = rs

    def apply(
        self,
        groups: Mapping[str, PlannedGroup],
        matches: Mapping[str, Sequence[Mapping[str, Any]]],
        fetch_all: Callable[[Sequence[str]], Iterable[Iterable[Mapping[str, Any]]]] | None = None,
    ) -> None:
        """Replace each group's plan by one that leaves alone what a person changed since.
        Reads the history only of records about to change, in queries chunked like the match
        queries (run by ``fetch_all``, a few at a time, when given)."""
        ids = [row["Id"] for g in groups.values() if g.plan for row in g.plan.update_rows]
        if not ids:
            return
        since = oldest_choice_second(groups)
        newest = newest_changes(self.reader.changes_of(ids, fetch_all, since))
        ts_field = self.rs.consent_timestamp_field
        if not newest:
            return
        for key, group in groups.items():
            if group.plan is not None:
                group.plan = respect_changes(
                    group.plan, group.state, matches.get(key, ()), newest, ts_field
                )


def start_salesforce_changes(
    setting: bool | None,
    client: SalesforceClient,
    rs: ResolvedSettings,
    logger: logging.Logger,
) -> SalesforceChanges | None:
    """Whether this run respects newer Salesforce changes, said in one log line.

    ``setting`` None (the default) means: when the history can be read. Set to true with a
    history that cannot be read, the run goes on without it and says why, loudly.
    """
    sobject = rs.settings.salesforce_object
    if setting is False:
        logger.info(
            "respect_salesforce_changes is off: Didomi choices overwrite consent fields people "
            "changed in Salesforce"
        )
        return None
    fields = [m.field for m in rs.mappings]
    user_id = client.user_id
    problem: str | None
    if user_id is None:
        problem = (
            "the token response names no user (its 'id'), so the target's own writes cannot be "
            "told apart from people's changes"
        )
        reader = None
    else:
        reader = HistoryReader(client, sobject, fields, [user_id])
        problem = reader.problem()
    if reader is None or problem is not None:
        log = logger.warning if setting else logger.info
        log(
            "respect_salesforce_changes is %s: %s. Falling back: Didomi choices overwrite "
            "consent fields people changed in Salesforce (as without this setting).",
            "true but cannot apply" if setting else "off",
            problem,
        )
        return None
    logger.info(
        "respect_salesforce_changes is on%s: a field a person changed in %s after the Didomi "
        "choice is kept (read from %s)",
        "" if setting else " (the field history can be read)",
        sobject,
        reader.history,
    )
    return SalesforceChanges(reader, rs)
