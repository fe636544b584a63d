"""One batch of consent changes: read them, compare with Didomi's state, send the rest.

I/O goes through :class:`~target_didomi.consents.ConsentsAPI`; the rules are in
:mod:`target_didomi.reverse`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from target_didomi.consents import (
    MAX_EVENTS_PER_REQUEST,
    ConsentsAPI,
    RefusedError,
    UnavailableError,
)
from target_didomi.report import ChangeLine, ChangeReport
from target_didomi.reverse import (
    Change,
    Outcome,
    PersonState,
    ReverseMapping,
    build_event,
    decide,
    event_id,
    event_time,
    read_change,
)
from target_didomi.settings import Settings
from target_salesforce_consent.didomi import RecordError, format_timestamp


class RunError(Exception):
    """The run cannot go on; nothing past the last STATE is confirmed, so run again."""


def _stamp(when: datetime | None) -> str | None:
    return format_timestamp(when) if when is not None else None


class ChangeWriter:
    """Decides each change of a batch and sends the events, up to 100 per request."""

    def __init__(self, settings: Settings, api: ConsentsAPI, report: ChangeReport,
                 logger: logging.Logger) -> None:
        self.settings = settings
        self.api = api
        self.report = report
        self.logger = logger

    def process(self, batch: Sequence[tuple[str, Any]]) -> None:
        lines: list[ChangeLine | None] = [None] * len(batch)
        pending: dict[str, list[tuple[int, Change, ReverseMapping, bool]]] = {}
        for index, (stream, raw) in enumerate(batch):
            change = read_change(raw)
            if isinstance(change, str):
                lines[index] = ChangeLine(stream, _get(raw, "history_id"),
                                          _get(raw, "organization_user_id"), _get(raw, "field"),
                                          Outcome.FAILED, error=change)
                continue
            line = ChangeLine(stream, change.history_id, change.organization_user_id,
                              change.field, Outcome.FAILED, salesforce_id=change.salesforce_id,
                              changed_at=_stamp(change.changed_at))
            lines[index] = line
            if change.organization_user_id is None:
                line.outcome = Outcome.SKIPPED_NO_OUID
                line.error = "the Salesforce record has no value in its match field"
                continue
            key = change.field.casefold()
            mapping = self.settings.reverse.get(key)
            if mapping is None:
                line.outcome = Outcome.SKIPPED_UNMAPPED
                line.error = self.settings.not_carried.get(
                    key, f"{change.field} is not the id of any mapping")
                continue
            value = mapping.didomi_value(change.new_value)
            if isinstance(value, str):
                line.outcome, line.error = Outcome.SKIPPED_UNMAPPED, value
                continue
            line.value = value
            pending.setdefault(change.organization_user_id, []).append(
                (index, change, mapping, value))

        to_send: list[tuple[int, dict[str, Any]]] = []
        try:
            for ouid, items in pending.items():
                self._decide_person(ouid, items, lines, to_send)
            self._send(to_send, lines)
        finally:
            self.report.write(line for line in lines if line is not None)

    def _decide_person(self, ouid: str, items: list[tuple[int, Change, ReverseMapping, bool]],
                       lines: list[ChangeLine | None],
                       to_send: list[tuple[int, dict[str, Any]]]) -> None:
        try:
            person = PersonState.read(self.api.users(ouid), self.api.events(ouid))
        except (RefusedError, RecordError) as exc:
            if isinstance(exc, RefusedError) and exc.status in (401, 403):
                raise RunError(f"Didomi refused to read {ouid!r}'s consent: {exc}. Check "
                               "organization_id and the API key's access") from None
            for index, *_ in items:
                line = lines[index]
                assert line is not None
                line.error = f"Didomi's state of this person cannot be read: {exc}"
            return
        except UnavailableError as exc:
            for index, *_ in items:
                line = lines[index]
                assert line is not None
                line.error = str(exc)
            raise RunError(str(exc)) from None
        # In the order the changes were made, each compared with what the earlier ones left.
        for index, change, mapping, value in sorted(
            items, key=lambda item: (item[1].changed_at, item[1].history_id)
        ):
            line = lines[index]
            assert line is not None
            choice = person.choice(mapping.source)
            line.didomi_value = choice.value
            line.didomi_changed_at = _stamp(choice.changed_at)
            outcome = decide(value, change.changed_at, choice)
            if outcome is not Outcome.SENT:
                line.outcome = outcome
                continue
            dated = event_time(change.changed_at, choice)
            person.record_sent(mapping.source, value, dated)
            line.event_id = event_id(change.history_id)
            if self.settings.dry_run:
                line.outcome = Outcome.WOULD_SEND
                continue
            to_send.append((index, build_event(change, mapping, value,
                                               self.settings.organization_id, dated)))

    def _send(self, to_send: list[tuple[int, dict[str, Any]]],
              lines: list[ChangeLine | None]) -> None:
        for start in range(0, len(to_send), MAX_EVENTS_PER_REQUEST):
            chunk = to_send[start:start + MAX_EVENTS_PER_REQUEST]
            try:
                self.api.post_events([event for _, event in chunk])
            except RefusedError as exc:
                if exc.status in (401, 403):
                    raise RunError(f"Didomi refused the events: {exc}. Check organization_id "
                                   "and the API key's access") from None
                # One bad event refuses the whole request: send them one by one to tell which.
                self._send_one_by_one(chunk, lines)
                continue
            except UnavailableError as exc:
                for index, _ in to_send[start:]:
                    line = lines[index]
                    assert line is not None
                    line.error = f"not confirmed: {exc}"
                raise RunError(str(exc)) from None
            for index, _ in chunk:
                line = lines[index]
                assert line is not None
                line.outcome = Outcome.SENT

    def _send_one_by_one(self, chunk: list[tuple[int, dict[str, Any]]],
                         lines: list[ChangeLine | None]) -> None:
        for index, event in chunk:
            line = lines[index]
            assert line is not None
            try:
                self.api.post_events([event])
            except RefusedError as exc:
                line.outcome, line.error = Outcome.FAILED, f"Didomi refused the event: {exc}"
                continue
            except UnavailableError as exc:
                line.error = f"not confirmed: {exc}"
                raise RunError(str(exc)) from None
            line.outcome = Outcome.SENT


def _get(raw: Any, key: str) -> str | None:
    value = raw.get(key) if isinstance(raw, dict) else None
    return None if value is None else str(value)
