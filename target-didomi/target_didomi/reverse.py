"""The mappings read in reverse, and the rule that decides whether a change goes to Didomi.

Pure logic, no I/O. A mapping ``{"id": "HasOptedOutOfEmail", "value":
"purposes.newsletter.enabled", "invert": true}`` writes Didomi's choice into a Salesforce field;
read backwards it turns a new value of that field into a Didomi choice: the field's text is
looked up in the mapping's outputs (``value_map`` inverted, ``"true"``/``"false"`` where it has
no entry), then ``invert`` is undone. A value that no output matches, or that two outputs share,
cannot be carried back and is never guessed.

Only choices that one Salesforce value can state on its own are carried back: a purpose's
``enabled`` or ``enabled_li`` and a channel's ``enabled``. A preference's selection (a
multi-select picklist) is not: Salesforce field history records no values for multi-select
fields, and one value of a selection cannot be set without the others.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from target_salesforce_consent.didomi import (
    MergedConsent,
    RecordError,
    format_timestamp,
    merge,
    parse_record,
    parse_timestamp,
)
from target_salesforce_consent.mapping import FieldMapping, SourcePath

#: The namespace of event ids: the same history row always gives the same event id.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d3a52-2c1e-4d7b-9a0e-5b8f7c3d2e10")


class Outcome(str, enum.Enum):
    """What happened to one consent change."""

    SENT = "sent"
    WOULD_SEND = "would_send"
    SKIPPED_UNCHANGED = "skipped_unchanged"
    SKIPPED_STALE = "skipped_stale"
    SKIPPED_UNMAPPED = "skipped_unmapped"
    SKIPPED_NO_OUID = "skipped_no_ouid"
    FAILED = "failed"


def event_id(history_id: str) -> str:
    """The Didomi event id of a Salesforce field history row (a UUID, the same every time)."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"salesforce-field-history:{history_id}"))


def carried_back_problem(source: SourcePath) -> str | None:
    """Why a mapping's source cannot be written back to Didomi, or ``None`` when it can."""
    s = source.segments
    if s[0] == "purposes" and len(s) == 3 and s[2] in ("enabled", "enabled_li"):
        return None
    if s[0] == "channels" and len(s) == 3:
        return None
    if s[0] == "purposes" and s[2] == "values":
        return (
            "a preference selection (multi-select) is not carried back: Salesforce field "
            "history records no values for multi-select fields"
        )
    return f"{source} is not a choice one Salesforce value can state (purposes.<id>.enabled, " \
        "purposes.<id>.enabled_li and channels.<id>.enabled are carried back)"


def value_text(value: Any) -> str | None:
    """A field history value as text: checkboxes arrive as JSON booleans or as text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class ReverseMapping:
    """One mapping read backwards: Salesforce text of ``field`` -> Didomi choice at ``source``."""

    field: str
    source: SourcePath
    choices: Mapping[str, bool]  # Salesforce text -> Didomi value
    ambiguous: frozenset[str] = frozenset()

    @classmethod
    def of(cls, mapping: FieldMapping) -> ReverseMapping:
        outputs: dict[str, list[bool]] = {}
        for key in ("true", "false"):
            text = mapping.value_map.get(key, key)
            didomi_value = (key == "true") != mapping.invert
            outputs.setdefault(text, []).append(didomi_value)
        choices = {text: values[0] for text, values in outputs.items() if len(values) == 1}
        ambiguous = frozenset(text for text, values in outputs.items() if len(values) > 1)
        return cls(field=mapping.field, source=mapping.source, choices=choices,
                   ambiguous=ambiguous)

    def didomi_value(self, salesforce_value: Any) -> bool | str:
        """The Didomi choice that ``salesforce_value`` states, or why there is none (text)."""
        text = value_text(salesforce_value)
        if text is None:
            return f"{self.field} was cleared: no Didomi choice states an empty value"
        if text in self.ambiguous:
            return (f"{self.field} = {text!r} is what both true and false map to; which one "
                    "was meant cannot be told")
        if text in self.choices:
            return self.choices[text]
        folded = [v for t, v in self.choices.items() if t.casefold() == text.casefold()]
        if len(folded) == 1:
            return folded[0]
        known = ", ".join(repr(t) for t in self.choices)
        return f"{self.field} = {text!r} matches none of the mapped values ({known})"

    def consents(self, value: bool) -> dict[str, Any]:
        """The ``consents`` of an event that records ``value`` at this mapping's source."""
        s = self.source.segments
        if s[0] == "channels":
            return {"purposes": [], "channels": [{"id": s[1], "enabled": value}],
                    "vendors": {"enabled": [], "disabled": []}}
        return {"purposes": [{"id": s[1], s[2]: value}],
                "vendors": {"enabled": [], "disabled": []}}


@dataclass
class Choice:
    """Didomi's current choice at one source for one person, and when it was made.

    ``changed_at`` is the ``created_at`` of the newest event that carries the choice. When no
    event dates it (a state imported without events), only the user's ``created_at`` and
    ``updated_at`` bound it.
    """

    value: bool | None
    changed_at: datetime | None = None
    earliest: datetime | None = None
    latest: datetime | None = None


@dataclass
class PersonState:
    """What Didomi holds for one ``organization_user_id``: its users merged, and its events."""

    merged: MergedConsent | None
    events: list[tuple[datetime, MergedConsent]] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    sent: dict[tuple[str, ...], tuple[bool, datetime]] = field(default_factory=dict)

    @classmethod
    def read(cls, users: Sequence[Mapping[str, Any]],
             events: Iterable[Mapping[str, Any]]) -> PersonState:
        """From ``GET /consents/users`` and ``GET /consents/events`` answers for one person.

        Raises :class:`RecordError` when Didomi answers something that is not a user or event.
        """
        records = [parse_record(u) for u in users]
        records = [r for r in records if r.ouid is not None]
        merged = merge(records) if records else None
        created = [r.created_at for r in records if r.created_at is not None]
        updated = [r.updated_at or r.timestamp for r in records]
        dated: list[tuple[datetime, MergedConsent]] = []
        for raw in events:
            record = parse_record(raw)
            if record.ouid is None or record.created_at is None:
                continue
            dated.append((record.created_at, merge([record])))
        return cls(
            merged=merged,
            events=dated,
            created_at=min(created) if created else None,
            updated_at=max((u for u in updated if u is not None), default=None),
        )

    def choice(self, source: SourcePath) -> Choice:
        """Didomi's choice at ``source``: what the user holds, dated by the newest event."""
        if source.segments in self.sent:
            value, when = self.sent[source.segments]
            return Choice(value, changed_at=when)
        current = source.resolve(self.merged) if self.merged is not None else None
        times = [when for when, event in self.events if source.resolve(event) is not None]
        return Choice(
            current if isinstance(current, bool) else None,
            changed_at=max(times) if times else None,
            earliest=self.created_at,
            latest=self.updated_at,
        )

    def record_sent(self, source: SourcePath, value: bool, when: datetime) -> None:
        """A change decided in this run is what later changes of the run compare with."""
        self.sent[source.segments] = (value, when)


def _to_second(when: datetime) -> datetime:
    return when.replace(microsecond=0)


def decide(value: bool, changed_at: datetime, didomi: Choice) -> Outcome:
    """Whether a Salesforce change of a choice to ``value`` at ``changed_at`` goes to Didomi.

    * Didomi already holds ``value``: ``skipped_unchanged``.
    * Didomi's choice was made later: ``skipped_stale``. Salesforce field history is kept to the
      second, so times are compared to the second; on a tie the opt-out (``false``) wins.
    * When no event dates Didomi's choice, the user's ``created_at``/``updated_at`` bound it and
      the doubt goes to the opt-out: an opt-out from Salesforce is compared with the earliest
      time the choice can have been made, an opt-in with the latest.
    """
    if didomi.value is None:
        return Outcome.SENT
    if didomi.value == value:
        return Outcome.SKIPPED_UNCHANGED
    made = didomi.changed_at
    if made is None:
        made = didomi.earliest if value is False else didomi.latest
    if made is None:
        return Outcome.SENT
    theirs, ours = _to_second(made), _to_second(changed_at)
    if theirs > ours or (theirs == ours and value is True):
        return Outcome.SKIPPED_STALE
    return Outcome.SENT


def event_time(changed_at: datetime, didomi: Choice) -> datetime:
    """When the event of a change that :func:`decide` sends is dated: the change's time, except
    on a tie to the second with a choice Didomi dates later within that second. Salesforce
    recorded the change only to the second, so it may have come at any instant of it; it is
    dated at the second's last millisecond, for Didomi too to hold the opt-out that won."""
    made = didomi.changed_at
    if made is not None and made >= changed_at and _to_second(made) == _to_second(changed_at):
        return _to_second(changed_at).replace(microsecond=999000)
    return changed_at


@dataclass(frozen=True)
class Change:
    """One record of the ``consent_changes`` stream, read."""

    history_id: str
    salesforce_id: str | None
    salesforce_object: str | None
    organization_user_id: str | None
    field: str
    new_value: Any
    changed_at: datetime
    changed_by_id: str | None


REQUIRED = ("history_id", "field", "changed_at")


def read_change(record: Any) -> Change | str:
    """A ``consent_changes`` record read, or what is wrong with it (text)."""
    if not isinstance(record, Mapping):
        return f"a consent change must be an object, not {type(record).__name__}"
    missing = [k for k in REQUIRED if record.get(k) in (None, "")]
    if missing:
        return f"the record has no {', '.join(missing)}; is it a tap-salesforce-consent " \
            "consent_changes record?"
    try:
        changed_at = parse_timestamp(record["changed_at"])
    except ValueError:
        return f"changed_at {record['changed_at']!r} is not an ISO 8601 date-time"
    ouid = record.get("organization_user_id")
    ouid = ouid.strip() if isinstance(ouid, str) else None
    return Change(
        history_id=str(record["history_id"]),
        salesforce_id=_text(record.get("salesforce_id")),
        salesforce_object=_text(record.get("object")),
        organization_user_id=ouid or None,
        field=str(record["field"]),
        new_value=record.get("new_value"),
        changed_at=changed_at,
        changed_by_id=_text(record.get("changed_by_id")),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def build_event(change: Change, mapping: ReverseMapping, value: bool,
                organization_id: str, created_at: datetime | None = None) -> dict[str, Any]:
    """The Didomi consent event for a change: dated when the change was made in Salesforce,
    with the Salesforce user as the delegate who acted for the person."""
    who = change.changed_by_id or "unknown"
    origin = {"source": "salesforce", "object": change.salesforce_object,
              "record_id": change.salesforce_id, "field": change.field,
              "history_id": change.history_id}
    return {
        "id": event_id(change.history_id),
        "organization_id": organization_id,
        "created_at": format_timestamp(created_at or change.changed_at),
        "user": {"organization_user_id": change.organization_user_id},
        "consents": mapping.consents(value),
        "delegate": {"id": who, "name": f"Salesforce user {who}", "metadata": origin},
        "metadata": origin,
    }


__all__ = [
    "Change",
    "Choice",
    "Outcome",
    "PersonState",
    "RecordError",
    "ReverseMapping",
    "build_event",
    "carried_back_problem",
    "decide",
    "event_id",
    "event_time",
    "read_change",
]
