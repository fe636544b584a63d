"""Didomi consent records: recognise their shape, normalise them and merge them per user.

Pure logic, no I/O. The shapes are those Didomi's Consents API, batch exports and webhooks
produce:

* **user-shaped** (``/consents/users``, batch exports): top-level ``organization_user_id``;
  ``consents`` is the user's full current state.
* **event-shaped** (``/consents/events``): ``user`` is an object holding the
  ``organization_user_id``; ``consents`` is a partial update.
* **webhook envelope** ``{"type": "event.created" | "user.updated" | ..., "parameters": {...}}``:
  the record inside (``parameters.new_entity``, else ``parameters.entity``); ``*.deleted``
  envelopes become records of kind ``"deleted"``.

Choices this module makes where the data contract is silent (the docstrings below repeat them):

* ``null`` and a missing key are the same thing everywhere: "no choice expressed".
* Nested objects that arrive as JSON strings are parsed; keys flattened with ``__`` (Meltano's
  ``flattening_enabled``, Didomi's webhook flatten option) are unflattened.
* ``"true"``/``"false"`` strings are accepted for booleans; any other wrong type is a
  :class:`RecordError` (``INVALID_TYPE_ON_FIELD_IN_RECORD``) naming the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

import msgspec

__all__ = [
    "VENDOR_LISTS",
    "ConsentRecord",
    "ConsentState",
    "MergedConsent",
    "PreferenceState",
    "PurposeState",
    "RecordError",
    "UnreadableRecord",
    "format_timestamp",
    "merge",
    "parse_record",
    "parse_timestamp",
]

JSON_PARSER_ERROR = "JSON_PARSER_ERROR"
INVALID_TYPE = "INVALID_TYPE_ON_FIELD_IN_RECORD"
REQUIRED_FIELD_MISSING = "REQUIRED_FIELD_MISSING"

#: The four vendor lists of ``consents.vendors``; every ``ConsentState.vendors`` has all four keys.
VENDOR_LISTS: tuple[str, ...] = ("enabled", "disabled", "enabled_li", "disabled_li")
_VENDOR_OPPOSITE = {
    "enabled": "disabled",
    "disabled": "enabled",
    "enabled_li": "disabled_li",
    "disabled_li": "enabled_li",
}


class RecordError(Exception):
    """A record the target cannot read; it is reported with outcome ``failed``.

    ``code`` is the code Salesforce would use for the same kind of problem
    (``JSON_PARSER_ERROR``, ``INVALID_TYPE_ON_FIELD_IN_RECORD``, ``REQUIRED_FIELD_MISSING``);
    ``str(error) == f"{code}: {message}"``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class UnreadableRecord:
    """A Singer RECORD whose ``record`` the JSON reader could not decode (nested deeper than
    it can go): it reaches the target as this stand-in so that it fails alone, reported."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def __repr__(self) -> str:
        return f"UnreadableRecord({self.problem!r})"


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------

_TS_RE = re.compile(
    r"^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[Tt ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d+))?)?)?"
    r"\s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?$"
)


def parse_timestamp(value: str | datetime) -> datetime:
    """Parse an ISO 8601 timestamp into an aware UTC datetime.

    Accepts ``Z`` and numeric offsets (``+02:00``, ``+0200``, ``+02``), a ``T`` or a space
    between date and time, seconds with any number of fractional digits (truncated to
    microseconds), and a bare date (midnight UTC). A timestamp without an offset is taken as
    UTC. A ``datetime`` passes through (naive ones are taken as UTC). Raises ``ValueError``.
    """
    if isinstance(value, datetime):
        dt = value
    else:
        if not isinstance(value, str):
            raise ValueError(f"not a timestamp: {value!r}")
        match = _TS_RE.match(value.strip())
        if match is None:
            raise ValueError(f"not an ISO 8601 timestamp: {value!r}")
        parts = match.groupdict()
        fraction = (parts["f"] or "")[:6].ljust(6, "0")
        tzinfo = timezone.utc
        tz = parts["tz"]
        if tz and tz not in ("Z", "z"):
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            hours = int(digits[:2])
            minutes = int(digits[2:4] or 0)
            if hours > 23 or minutes > 59:
                raise ValueError(f"invalid UTC offset in {value!r}")
            tzinfo = timezone(sign * timedelta(hours=hours, minutes=minutes))
        dt = datetime(
            int(parts["y"]),
            int(parts["mo"]),
            int(parts["d"]),
            int(parts["h"] or 0),
            int(parts["mi"] or 0),
            int(parts["s"] or 0),
            int(fraction),
            tzinfo=tzinfo,
        )
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def format_timestamp(dt: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as Salesforce takes it: ``2024-06-18T16:40:03.512Z``."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    if dt.tzinfo is not timezone.utc:
        dt = dt.astimezone(timezone.utc)
    return dt.isoformat(timespec="milliseconds")[:-6] + "Z"


# --------------------------------------------------------------------------------------------
# Normalised state
# --------------------------------------------------------------------------------------------


@dataclass
class PreferenceState:
    """A v1 (deprecated, full-tree) preference: ``enabled`` plus per-channel choices."""

    enabled: bool | None = None
    channels: dict[str, bool | None] = field(default_factory=dict)


@dataclass
class PurposeState:
    """One purpose. ``None`` is "no choice"; an absent key in a dict is "no choice" as well.

    ``values`` holds the v2 preferences: preference id -> the ids of the selected values (an
    empty list means "everything deselected", which is a choice). ``preferences`` is the v1 tree.
    """

    enabled: bool | None = None
    enabled_li: bool | None = None
    values: dict[str, list[str]] = field(default_factory=dict)
    preferences: dict[str, PreferenceState] = field(default_factory=dict)


def _empty_vendors() -> dict[str, set[str]]:
    return {name: set() for name in VENDOR_LISTS}


@dataclass
class ConsentState:
    """The ``consents`` object: purposes by id, top-level (PMP) channels by id, vendor sets."""

    purposes: dict[str, PurposeState] = field(default_factory=dict)
    channels: dict[str, bool | None] = field(default_factory=dict)
    vendors: dict[str, set[str]] = field(default_factory=_empty_vendors)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a setattr call per field
class ConsentRecord:
    """One input record, normalised.

    ``kind`` is ``"deleted"`` for a ``*.deleted`` webhook envelope (the caller skips those).
    ``timestamp`` is ``updated_at``, else ``created_at``; ``created_at``/``updated_at`` keep the
    two separately for the mapping paths of the same name.
    """

    kind: Literal["user", "event", "deleted"]
    ouid: str | None
    didomi_id: str | None
    regulation: str
    status: str | None
    timestamp: datetime | None
    consents: ConsentState
    metadata: dict[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class MergedConsent:
    """The merged state of every record of one ``organization_user_id`` in a run."""

    ouid: str
    consents: ConsentState
    timestamp: datetime | None
    created_at: str | None
    updated_at: str | None
    regulation: str
    metadata: dict[str, Any]
    didomi_ids: list[str]


# --------------------------------------------------------------------------------------------
# Reading raw values
# --------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _loads(value: str, where: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise RecordError(
            JSON_PARSER_ERROR, f"{where}: a string that is not valid JSON ({exc})"
        ) from None


def _unflatten(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Rebuild nesting from ``a__b__c`` keys; other keys are copied as they are."""
    if not any(isinstance(k, str) and "__" in k.strip("_") for k in obj):
        return dict(obj)
    result: dict[str, Any] = {}
    flattened: list[tuple[list[str], Any]] = []
    for key, value in obj.items():
        parts = key.split("__") if isinstance(key, str) else [key]
        if len(parts) > 1 and all(parts):
            flattened.append((parts, value))
        else:
            result[key] = value
    for parts, value in flattened:
        node: dict[str, Any] = result
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and child.strip().startswith("{"):
                child = _loads(child, f"{where}{'.'.join(parts[: i + 1])}")
            if child is None:
                child = {}
            elif not isinstance(child, Mapping):
                raise RecordError(
                    INVALID_TYPE,
                    f"{where}{'__'.join(parts)}: flattened key conflicts with "
                    f"{'.'.join(parts[: i + 1])}, which is not an object",
                )
            child = dict(child)
            node[part] = child
            node = child
        node[parts[-1]] = value
    return result


def _decoded(value: Any, where: str) -> Any:
    """`value`, or what a JSON string holds (some taps stringify nested objects); "" is None."""
    if isinstance(value, str):
        return _loads(value, where) if value.strip() else None
    return value


def _object(value: Any, where: str, *, unflatten: bool = False) -> dict[str, Any] | None:
    """An object, a JSON string holding one, or null (None). Anything else is a RecordError.

    ``unflatten`` rebuilds ``a__b`` keys; only the record and a webhook entity can carry them
    (Meltano flattening, Didomi's webhook flatten option), so nested objects skip that cost.
    """
    value = _decoded(value, where)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise RecordError(INVALID_TYPE, f"{where}: expected an object, got {_type_name(value)}")
    if unflatten:
        return _unflatten(value, f"{where}.")
    return value if isinstance(value, dict) else dict(value)


def _array(value: Any, where: str) -> list[Any] | None:
    """An array, a JSON string holding one, or null (None)."""
    value = _decoded(value, where)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise RecordError(INVALID_TYPE, f"{where}: expected an array, got {_type_name(value)}")
    return list(value)


def _items(value: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """Items with an ``id`` from an array of objects (or an object of such objects).

    An item's identity is its own ``id``. In an array, null items and items whose ``id`` is
    null or blank are dropped (they carry nothing mappable). An object of items is what a relay
    that re-encodes arrays writes (``{"0": {...}, "1": {...}}``), and what Didomi's ``__``
    flatten option gives with index segments (``consents__purposes__0__id``): its keys are
    positions, never ids. An item there without its own ``id`` fails the record when its key
    is a position (all digits); a key that is not a position (``{"newsletter": {...}}``) is
    taken as the id.
    """
    if isinstance(value, str) and value.strip().startswith("{"):
        value = _object(value, where)
    if isinstance(value, Mapping):
        pairs: list[tuple[str, dict[str, Any]]] = []
        for key, item in value.items():
            obj = _object(item, f"{where}.{key}")
            if obj is None:
                continue
            ident = _text(obj.get("id"), f"{where}.{key}.id")
            if ident is None:
                if str(key).strip().isdigit():
                    raise RecordError(
                        REQUIRED_FIELD_MISSING,
                        f"{where}.{key}: an item keyed by its position {key} has no id; the "
                        "position is not an id, so the item cannot be read (the tap or relay "
                        "must keep each item's own id)",
                    )
                ident = str(key)
            pairs.append((ident, obj))
        return pairs
    array = _array(value, where)
    if array is None:
        return []
    pairs = []
    for index, item in enumerate(array):
        obj = _object(item, f"{where}[{index}]")
        if obj is None:
            continue
        ident = _text(obj.get("id"), f"{where}[{index}].id")
        if ident is None:
            continue
        pairs.append((ident, obj))
    return pairs


def _bool(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        if lowered in ("", "null"):
            return None
    raise RecordError(INVALID_TYPE, f"{where}: expected true, false or null, got {value!r}")


def _text(value: Any, where: str) -> str | None:
    """A string stripped of surrounding whitespace (None when null or blank); numbers -> str."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordError(INVALID_TYPE, f"{where}: expected a string, got {_type_name(value)}")
    text = str(value).strip()
    return text or None


def _timestamp(value: Any, where: str) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, (str, datetime)):
        raise RecordError(INVALID_TYPE, f"{where}: expected an ISO 8601 timestamp, got {value!r}")
    try:
        return parse_timestamp(value)
    except (ValueError, OverflowError):  # OverflowError: year 9999 with a negative offset
        raise RecordError(
            INVALID_TYPE, f"{where}: expected an ISO 8601 timestamp, got {value!r}"
        ) from None


def _id_list(value: Any, where: str) -> list[str]:
    """Value ids from a comma-separated string (or a JSON array): stripped, no empties, no dups."""
    if isinstance(value, str) and value.strip().startswith("["):
        value = _loads(value, where)
    if isinstance(value, str):
        raw: list[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        raw = list(value)
    else:
        raise RecordError(
            INVALID_TYPE,
            f"{where}: expected a comma-separated string of value ids, got {_type_name(value)}",
        )
    ids: list[str] = []
    for index, item in enumerate(raw):
        if item is None:
            continue
        ident = _text(item, f"{where}[{index}]")
        if ident is not None and ident not in ids:
            ids.append(ident)
    return ids


# --------------------------------------------------------------------------------------------
# consents
# --------------------------------------------------------------------------------------------


def _channels(value: Any, where: str) -> dict[str, bool | None]:
    return {
        ident: _bool(obj.get("enabled"), f"{where}.{ident}.enabled")
        for ident, obj in _items(value, where)
    }


def _values(value: Any, where: str) -> dict[str, list[str]]:
    """v2 ``values``: ``{prefId: {"value": "a,b"}}``. A null entry or null ``value`` is omitted
    (no choice); ``""`` is an empty selection. An entry given directly as a string (not a JSON
    object) is taken as the ``value`` itself."""
    obj = _object(value, where)
    if obj is None:
        return {}
    result: dict[str, list[str]] = {}
    for pref_id, entry in obj.items():
        at = f"{where}.{pref_id}"
        if isinstance(entry, str) and not entry.strip().startswith("{"):
            selected: Any = entry
        elif isinstance(entry, (list, tuple)):
            selected = entry
        else:
            entry_obj = _object(entry, at)
            if entry_obj is None:
                continue
            selected = entry_obj.get("value")
            at = f"{at}.value"
        if selected is None:
            continue
        result[str(pref_id)] = _id_list(selected, at)
    return result


def _preferences(value: Any, where: str) -> dict[str, PreferenceState]:
    return {
        ident: PreferenceState(
            enabled=_bool(obj.get("enabled"), f"{where}.{ident}.enabled"),
            channels=_channels(obj.get("channels"), f"{where}.{ident}.channels"),
        )
        for ident, obj in _items(value, where)
    }


def _vendors(value: Any, where: str) -> dict[str, set[str]]:
    vendors = _empty_vendors()
    obj = _object(value, where)
    if obj is None:
        return vendors
    for name in VENDOR_LISTS:
        array = _array(obj.get(name), f"{where}.{name}")
        for index, item in enumerate(array or []):
            ident = _text(item, f"{where}.{name}[{index}]")
            if ident is not None:
                vendors[name].add(ident)
    return vendors


def _consents(value: Any, where: str) -> ConsentState:
    obj = _object(value, where)
    if obj is None:
        return ConsentState()
    purposes: dict[str, PurposeState] = {}
    for ident, item in _items(obj.get("purposes"), f"{where}.purposes"):
        at = f"{where}.purposes.{ident}"
        purposes[ident] = PurposeState(
            enabled=_bool(item.get("enabled"), f"{at}.enabled"),
            enabled_li=_bool(item.get("enabled_li"), f"{at}.enabled_li"),
            values=_values(item.get("values"), f"{at}.values"),
            preferences=_preferences(item.get("preferences"), f"{at}.preferences"),
        )
    return ConsentState(
        purposes=purposes,
        channels=_channels(obj.get("channels"), f"{where}.channels"),
        vendors=_vendors(obj.get("vendors"), f"{where}.vendors"),
    )


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def _envelope_type(record: Mapping[str, Any]) -> str | None:
    kind = record.get("type")
    if (
        isinstance(kind, str)
        and kind.strip().lower().startswith(("event.", "user."))
        and record.get("parameters") is not None
    ):
        return kind.strip().lower()
    return None


def _regulation(value: Any, where: str) -> str | None:
    text = _text(value, where)
    return text.lower() if text is not None else None


def parse_record(raw: Mapping[str, Any]) -> ConsentRecord:
    """Recognise the shape of one input record and normalise it. Raises :class:`RecordError`.

    * Webhook envelope: ``type`` starts with ``event.`` or ``user.`` and ``parameters`` is
      present. The inner record is ``parameters.new_entity``, else ``parameters.entity``
      (for ``*.deleted``: ``entity``, else ``old_entity``). The envelope's ``type`` decides
      the kind (``event.*`` -> event, ``user.*`` -> user, ``*.deleted`` -> deleted) even when
      the inner record looks otherwise; the envelope's ``regulation`` applies when the inner
      record has none. When the inner record has neither ``updated_at`` nor ``created_at``, the
      envelope's, then ``parameters.source.created_at``, give the timestamp. A deleted
      envelope's ``consents`` are not read (the record is skipped anyway).
    * Event-shaped: ``user`` is an object; the OUID is ``user.organization_user_id`` (falling
      back to a top-level ``organization_user_id``); ``metadata`` is ``user.metadata``.
    * Otherwise user-shaped: top-level ``organization_user_id`` and ``metadata``.

    The OUID is stripped; blank counts as missing (None). ``regulation`` is lower-cased and
    defaults to ``"gdpr"``; ``status`` is stripped and lower-cased.
    """
    if isinstance(raw, UnreadableRecord):
        raise RecordError(JSON_PARSER_ERROR, raw.problem)
    if isinstance(raw, str):
        raw = _object(raw, "record", unflatten=True) or {}
    if not isinstance(raw, Mapping):
        raise RecordError(INVALID_TYPE, f"record: expected an object, got {_type_name(raw)}")
    record = _unflatten(raw, "")
    kind: Literal["user", "event", "deleted"]
    envelope_type = _envelope_type(record)
    envelope_regulation: str | None = None
    fallback_ts: datetime | None = None
    if envelope_type is not None:
        params = _object(record.get("parameters"), "parameters") or {}
        envelope_regulation = _regulation(record.get("regulation"), "regulation")
        if envelope_type.endswith(".deleted"):
            kind = "deleted"
            names: tuple[str, ...] = ("entity", "old_entity", "new_entity")
        else:
            kind = "event" if envelope_type.startswith("event.") else "user"
            names = ("new_entity", "entity")
        inner: dict[str, Any] | None = None
        prefix = "parameters"
        for name in names:
            inner = _object(params.get(name), f"parameters.{name}", unflatten=True)
            if inner is not None:
                prefix = f"parameters.{name}"
                break
        if inner is None:
            if kind != "deleted":
                raise RecordError(
                    REQUIRED_FIELD_MISSING,
                    f"{envelope_type} webhook envelope has no parameters.new_entity "
                    "or parameters.entity",
                )
            inner = {}
        source = _object(params.get("source"), "parameters.source") or {}
        fallback_ts = (
            _timestamp(record.get("updated_at"), "updated_at")
            or _timestamp(record.get("created_at"), "created_at")
            or _timestamp(source.get("created_at"), "parameters.source.created_at")
        )
        body = inner
        where = f"{prefix}."
    else:
        body = record
        where = ""
        kind = "user"

    user = _object(body.get("user"), f"{where}user")
    if envelope_type is None and user is not None:
        kind = "event"
    ouid = None
    if user is not None:
        ouid = _text(user.get("organization_user_id"), f"{where}user.organization_user_id")
    if ouid is None:
        ouid = _text(body.get("organization_user_id"), f"{where}organization_user_id")

    if user is not None:
        metadata = _object(user.get("metadata"), f"{where}user.metadata")
    else:
        metadata = _object(body.get("metadata"), f"{where}metadata")

    created_at = _timestamp(body.get("created_at"), f"{where}created_at")
    updated_at = _timestamp(body.get("updated_at"), f"{where}updated_at")
    regulation = (
        _regulation(body.get("regulation"), f"{where}regulation") or envelope_regulation or "gdpr"
    )
    status = _text(body.get("status"), f"{where}status")
    consents = (
        ConsentState() if kind == "deleted" else _consents(body.get("consents"), f"{where}consents")
    )
    return ConsentRecord(
        kind=kind,
        ouid=ouid,
        didomi_id=_text(body.get("id"), f"{where}id"),
        regulation=regulation,
        status=status.lower() if status is not None else None,
        timestamp=updated_at or created_at or fallback_ts,
        consents=consents,
        metadata=metadata or {},
        created_at=created_at,
        updated_at=updated_at,
    )


# --------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------


def _copy_state(state: ConsentState) -> ConsentState:
    return ConsentState(
        purposes={
            pid: PurposeState(
                enabled=p.enabled,
                enabled_li=p.enabled_li,
                values={k: list(v) for k, v in p.values.items()},
                preferences={
                    k: PreferenceState(enabled=v.enabled, channels=dict(v.channels))
                    for k, v in p.preferences.items()
                },
            )
            for pid, p in state.purposes.items()
        },
        channels=dict(state.channels),
        vendors={name: set(state.vendors.get(name, set())) for name in VENDOR_LISTS},
    )


def _overlay_flags(target: dict[str, bool | None], update: Mapping[str, bool | None]) -> None:
    for key, value in update.items():
        if value is not None or key not in target:
            target[key] = value


def _overlay(state: ConsentState, update: ConsentState) -> None:
    """Apply an event's partial state onto ``state`` in place (see :func:`merge`)."""
    for pid, new in update.purposes.items():
        old = state.purposes.setdefault(pid, PurposeState())
        if new.enabled is not None:
            old.enabled = new.enabled
        if new.enabled_li is not None:
            old.enabled_li = new.enabled_li
        for pref_id, selected in new.values.items():
            old.values[pref_id] = list(selected)
        for pref_id, pref in new.preferences.items():
            old_pref = old.preferences.setdefault(pref_id, PreferenceState())
            if pref.enabled is not None:
                old_pref.enabled = pref.enabled
            _overlay_flags(old_pref.channels, pref.channels)
    _overlay_flags(state.channels, update.channels)
    for name in VENDOR_LISTS:
        added = update.vendors.get(name, set())
        state.vendors[name] |= added
        state.vendors[_VENDOR_OPPOSITE[name]] -= added


def merge(records: Sequence[ConsentRecord]) -> MergedConsent:
    """Merge the records of one ``organization_user_id`` into its newest known state.

    The caller groups records by ``ouid.casefold()``; every record must have an OUID.

    * Order: by timestamp ascending; the sort is stable, and records without a timestamp keep
      their arrival order and come before every timestamped record.
    * A user-shaped record REPLACES the consent state: a purpose, preference, channel or vendor
      it lacks becomes "no choice".
    * An event-shaped record OVERLAYS what it carries:
      - ``enabled``/``enabled_li``: ``true``/``false`` replace; ``null`` (no choice expressed)
        never erases a known choice;
      - ``values``: each preference it carries replaces that preference's whole selection (a
        Didomi selection is complete per preference; ``""`` deselects everything); preferences
        it does not carry are untouched;
      - v1 ``preferences`` (``enabled`` and per-channel) and top-level ``channels``: same rule
        as ``enabled``, a null never erases a known value;
      - vendors: an id listed in ``enabled`` is added there and removed from ``disabled`` and
        vice versa (likewise ``enabled_li``/``disabled_li``); ids not listed are untouched.
    * ``metadata``: every record's keys overlay the earlier ones (user-shaped ones too).
    * ``ouid``, ``regulation``: those of the newest record. ``timestamp``: the newest one.
      ``created_at``/``updated_at``: from the newest record that has each, as
      ``2024-06-18T16:40:03.512Z`` strings. ``didomi_ids``: the records' ids in merge order,
      without duplicates.
    * Records of kind ``"deleted"`` carry no consent and are ignored.

    Raises ``ValueError`` when no record remains or a record has no OUID.
    """
    indexed = [(i, r) for i, r in enumerate(records) if r.kind != "deleted"]
    if not indexed:
        raise ValueError("merge() needs at least one user- or event-shaped record")
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    indexed.sort(key=lambda ir: (ir[1].timestamp is not None, ir[1].timestamp or epoch, ir[0]))
    ordered = [r for _, r in indexed]

    state = ConsentState()
    metadata: dict[str, Any] = {}
    didomi_ids: list[str] = []
    created_at: datetime | None = None
    updated_at: datetime | None = None
    ouid: str | None = None
    for record in ordered:
        if record.ouid is None:
            raise ValueError("merge() got a record without organization_user_id")
        if record.kind == "user":
            # Copied only when a later record may overlay it (a lone record is never changed).
            state = record.consents if len(ordered) == 1 else _copy_state(record.consents)
        else:
            _overlay(state, record.consents)
        metadata.update(record.metadata)
        if record.didomi_id is not None and record.didomi_id not in didomi_ids:
            didomi_ids.append(record.didomi_id)
        created_at = record.created_at or created_at
        updated_at = record.updated_at or updated_at
        ouid = record.ouid
    newest = ordered[-1]
    timestamps = [r.timestamp for r in ordered if r.timestamp is not None]
    assert ouid is not None
    return MergedConsent(
        ouid=ouid,
        consents=state,
        timestamp=max(timestamps) if timestamps else None,
        created_at=format_timestamp(created_at) if created_at else None,
        updated_at=format_timestamp(updated_at) if updated_at else None,
        regulation=newest.regulation,
        metadata=metadata,
        didomi_ids=didomi_ids,
    )


# --------------------------------------------------------------------------------------------
# The fast path: read only what the mappings need
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Needs:
    """The parts of ``consents`` that the mappings read (see :func:`read_needed`)."""

    purposes: frozenset[str] = frozenset()
    channels: bool = False
    vendors: bool = False


_PLAIN_TS = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3}|\.\d{6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)
_UTC = timezone.utc


class _Unusual(Exception):
    """The record is not in the plain shape the fast path reads; the full reader takes it."""


def _fast_timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if type(value) is str and _PLAIN_TS.fullmatch(value):
        text = value[:-1] + "+00:00" if value[-1] == "Z" else value
        try:
            return datetime.fromisoformat(text).astimezone(_UTC)
        except (ValueError, OverflowError):  # hour 25, year 9999 with a negative offset, ...
            raise _Unusual from None
    raise _Unusual


def _fast_text(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is str and value == value.strip():
        return value or None
    raise _Unusual


def _fast_flag(value: Any) -> bool | None:
    if value is None or type(value) is bool:
        return value
    raise _Unusual


def _fast_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if type(value) is list:
        return value
    raise _Unusual


def _fast_items(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in _fast_list(value):
        if item is None:
            continue
        if type(item) is not dict:
            raise _Unusual
        ident = _fast_text(item.get("id"))
        if ident is not None:
            yield ident, item


def _fast_channels(value: Any) -> dict[str, bool | None]:
    return {ident: _fast_flag(item.get("enabled")) for ident, item in _fast_items(value)}


def _fast_purpose(item: dict[str, Any]) -> PurposeState:
    values: dict[str, list[str]] = {}
    raw_values = item.get("values")
    if raw_values is not None:
        if type(raw_values) is not dict:
            raise _Unusual
        for pref_id, entry in raw_values.items():
            if entry is None:
                continue
            if type(entry) is not dict:
                raise _Unusual
            selected = entry.get("value")
            if selected is None:
                continue
            if type(selected) is not str or selected.strip().startswith("["):
                raise _Unusual
            ids = [part.strip() for part in selected.split(",")]
            values[pref_id] = list(dict.fromkeys(i for i in ids if i))
    return PurposeState(
        enabled=_fast_flag(item.get("enabled")),
        enabled_li=_fast_flag(item.get("enabled_li")),
        values=values,
        preferences={
            ident: PreferenceState(
                enabled=_fast_flag(pref.get("enabled")),
                channels=_fast_channels(pref.get("channels")),
            )
            for ident, pref in _fast_items(item.get("preferences"))
        },
    )


def _fast_vendors(raw: Any) -> dict[str, set[str]]:
    vendors = _empty_vendors()
    if raw is not None:
        if type(raw) is not dict:
            raise _Unusual
        for name in VENDOR_LISTS:
            vendors[name] = {
                ident for ident in map(_fast_text, _fast_list(raw.get(name))) if ident is not None
            }
    return vendors


def _fast_consents(value: Any, needs: Needs) -> ConsentState:
    if value is None:
        return ConsentState()
    if type(value) is not dict:
        raise _Unusual
    purposes = {
        ident: _fast_purpose(item)
        for ident, item in _fast_items(value.get("purposes"))
        if ident in needs.purposes
    }
    vendors = _fast_vendors(value.get("vendors")) if needs.vendors else _empty_vendors()
    channels = _fast_channels(value.get("channels")) if needs.channels else {}
    return ConsentState(purposes=purposes, channels=channels, vendors=vendors)


def read_needed(raw: Any, needs: Needs) -> ConsentRecord | None:
    """:func:`parse_record` for the common shapes, reading only what ``needs`` names.

    Returns None for anything out of the ordinary (webhook envelopes, stringified or flattened
    objects, arrays keyed by id, strings for booleans, unusual timestamps, ...): the caller
    then uses :func:`parse_record`, which reads and checks the whole record. For the records
    it reads, the result equals :func:`parse_record`'s restricted to ``needs``
    (``tests/test_didomi.py`` checks this); a wrong type in a part no mapping reads does not
    fail the record here.
    """
    if type(raw) is not dict or "type" in raw or "__" in "|".join(raw):
        return None
    try:
        user = raw.get("user")
        if user is not None and type(user) is not dict:
            raise _Unusual
        ouid = _fast_text(user.get("organization_user_id")) if user is not None else None
        if ouid is None:
            ouid = _fast_text(raw.get("organization_user_id"))
        metadata = (user if user is not None else raw).get("metadata")
        if metadata is not None and type(metadata) is not dict:
            raise _Unusual
        created_at = _fast_timestamp(raw.get("created_at"))
        updated_at = _fast_timestamp(raw.get("updated_at"))
        regulation = _fast_text(raw.get("regulation"))
        status = _fast_text(raw.get("status"))
        return ConsentRecord(
            kind="event" if user is not None else "user",
            ouid=ouid,
            didomi_id=_fast_text(raw.get("id")),
            regulation=regulation.lower() if regulation is not None else "gdpr",
            status=status.lower() if status is not None else None,
            timestamp=updated_at or created_at,
            consents=_fast_consents(raw.get("consents"), needs),
            metadata=metadata or {},
            created_at=created_at,
            updated_at=updated_at,
        )
    except _Unusual:
        return None


# --------------------------------------------------------------------------------------------
# The fastest path: the raw parts the mappings read, checked as read_needed checks them
# --------------------------------------------------------------------------------------------

#: The form Didomi writes its timestamps in; it is its own :func:`format_timestamp`.
_DIDOMI_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9]\.[0-9]{3}Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MICROSECOND = timedelta(microseconds=1)
_MINUTES: dict[str, int | None] = {}  # "2024-06-18T16:40" -> micros since the epoch (None: invalid)
#: Minutes kept (then the table starts over): records mostly come in time order, and a long
#: run's 4,096 minutes took about half a MiB.
_MAX_MINUTES = 1024
#: The rest of a Didomi timestamp after its minute (":SS" and ".mmmZ", as the pattern takes
#: them) -> microseconds.
_SECOND_MICROS = {f":{second:02d}": second * 1_000_000 for second in range(60)}
_MILLI_MICROS = {f".{milli:03d}Z": milli * 1000 for milli in range(1000)}


def _micros(dt: datetime) -> int:
    return (dt - _EPOCH) // _MICROSECOND


def _minute_micros(minute: str) -> int | None:
    micros = _MINUTES.get(minute, -1)
    if micros == -1:
        try:
            dt = datetime(int(minute[:4]), int(minute[5:7]), int(minute[8:10]),
                          int(minute[11:13]), int(minute[14:]), tzinfo=_UTC)  # fmt: skip
        except ValueError:  # month 13, hour 24, ...: as datetime.fromisoformat refuses them
            micros = None
        else:
            micros = _micros(dt)
        if len(_MINUTES) >= _MAX_MINUTES:
            _MINUTES.clear()
        _MINUTES[minute] = micros
    return micros


def fast_stamp(value: Any) -> tuple[str, int] | None:
    """A timestamp as the fast reader takes it: ``(format_timestamp(t), micros since the
    epoch)`` of what ``_fast_timestamp`` reads, None when absent; raises :class:`_Unusual`
    where that does.

    Didomi's own form (``2024-06-18T16:40:03.512Z``) is already what ``format_timestamp``
    writes: it is checked and counted without building a datetime.
    """
    if value is None:
        return None
    if value.__class__ is str and len(value) == 24:
        # A minute is kept once the pattern took its timestamp (most timestamps fall in one
        # read before); the tables hold each rest the pattern takes, and only those.
        minute = _MINUTES.get(value[:16])
        if minute is None and _DIDOMI_TS.fullmatch(value):
            minute = _minute_micros(value[:16])
            if minute is None:
                raise _Unusual
        if minute is not None:
            second = _SECOND_MICROS.get(value[16:19])
            milli = _MILLI_MICROS.get(value[19:])
            if second is not None and milli is not None:
                return value, minute + second + milli
    dt = _fast_timestamp(value)
    assert dt is not None
    return format_timestamp(dt), _micros(dt)


@dataclass(slots=True)
class PlainRecord:
    """The parts of a record in the common shape that the mappings read, as sent.

    What :func:`read_plain` gives: ``purposes`` holds the raw objects of the needed purposes
    by id (the last one of an id, as :func:`read_needed`), each checked as :func:`read_needed`
    checks it; ``channels`` and ``vendors`` are read only when needed. Timestamps are
    ``(text, micros)`` (see :func:`fast_stamp`).
    """

    kind: Literal["user", "event"]
    ouid: str | None
    didomi_id: str | None
    regulation: str
    status: str | None
    timestamp: tuple[str, int] | None
    created_at: tuple[str, int] | None
    updated_at: tuple[str, int] | None
    metadata: dict[str, Any]
    purposes: dict[str, dict[str, Any]]
    channels: dict[str, bool | None]
    vendors: Mapping[str, set[str]]


def _check_purpose(item: dict[str, Any]) -> None:
    """Raise :class:`_Unusual` where :func:`_fast_purpose` does, without building its state."""
    flag = item.get("enabled")
    if flag is not None and flag.__class__ is not bool:
        raise _Unusual
    flag = item.get("enabled_li")
    if flag is not None and flag.__class__ is not bool:
        raise _Unusual
    raw_values = item.get("values")
    if raw_values is not None:
        if raw_values.__class__ is not dict:
            raise _Unusual
        for entry in raw_values.values():
            if entry is None:
                continue
            if entry.__class__ is not dict:
                raise _Unusual
            selected = entry.get("value")
            if selected is not None and (
                selected.__class__ is not str or selected.strip().startswith("[")
            ):
                raise _Unusual
    preferences = item.get("preferences")
    if preferences is not None:
        for _, preference in _fast_items(preferences):
            _fast_flag(preference.get("enabled"))
            _fast_channels(preference.get("channels"))


_NO_VENDORS: Mapping[str, set[str]] = MappingProxyType(_empty_vendors())


def read_plain(raw: Any, needs: Needs) -> PlainRecord | None:
    """What :func:`read_needed` reads, without building its objects; None where it gives None.

    The purposes come as the raw objects (checked), so that a caller reads only the values it
    maps. ``tests/test_didomi.py`` checks it against :func:`read_needed`.
    """
    if raw.__class__ is not dict or "type" in raw or "__" in "|".join(raw):
        return None
    try:
        user = raw.get("user")
        if user is not None and user.__class__ is not dict:
            raise _Unusual
        ouid = _fast_text(user.get("organization_user_id")) if user is not None else None
        if ouid is None:
            ouid = _fast_text(raw.get("organization_user_id"))
        metadata = (user if user is not None else raw).get("metadata")
        if metadata is not None and metadata.__class__ is not dict:
            raise _Unusual
        created_at = fast_stamp(raw.get("created_at"))
        updated_at = fast_stamp(raw.get("updated_at"))
        regulation = _fast_text(raw.get("regulation"))
        status = _fast_text(raw.get("status"))
        didomi_id = _fast_text(raw.get("id"))
        purposes: dict[str, dict[str, Any]] = {}
        channels: dict[str, bool | None] = {}
        vendors: Mapping[str, set[str]] = _NO_VENDORS
        consents = raw.get("consents")
        if consents is not None:
            if consents.__class__ is not dict:
                raise _Unusual
            items = consents.get("purposes")
            if items is not None:
                if items.__class__ is not list:
                    raise _Unusual
                needed = needs.purposes
                for item in items:
                    if item is None:
                        continue
                    if item.__class__ is not dict:
                        raise _Unusual
                    ident = item.get("id")
                    if ident is None:
                        continue
                    if ident.__class__ is not str or ident != ident.strip():
                        raise _Unusual
                    if ident and ident in needed:
                        _check_purpose(item)
                        purposes[ident] = item
            if needs.vendors:
                vendors = _fast_vendors(consents.get("vendors"))
            if needs.channels:
                channels = _fast_channels(consents.get("channels"))
        return _plain_record(user is not None, ouid, didomi_id, regulation, status, created_at,
                             updated_at, metadata, purposes, channels, vendors)
    except _Unusual:
        return None


def _plain_record(
    event: bool,
    ouid: str | None,
    didomi_id: str | None,
    regulation: str | None,
    status: str | None,
    created_at: tuple[str, int] | None,
    updated_at: tuple[str, int] | None,
    metadata: dict[str, Any] | None,
    purposes: dict[str, dict[str, Any]],
    channels: dict[str, bool | None],
    vendors: Mapping[str, set[str]],
) -> PlainRecord:
    """A PlainRecord of the values read, with Didomi's defaults (regulation gdpr) and case."""
    return PlainRecord(
        "event" if event else "user",
        ouid,
        didomi_id,
        regulation.lower() if regulation is not None else "gdpr",
        status.lower() if status is not None else None,
        updated_at or created_at,
        created_at,
        updated_at,
        metadata or {},
        purposes,
        channels,
        vendors,
    )


# --------------------------------------------------------------------------------------------
# Decoding straight to what read_plain reads
# --------------------------------------------------------------------------------------------


class _ShapePurpose(msgspec.Struct):
    id: Any = None
    enabled: Any = None
    enabled_li: Any = None
    values: Any = None
    preferences: Any = None


class _ShapeConsents(msgspec.Struct):
    purposes: list[_ShapePurpose | None] | None = None
    channels: Any = None
    vendors: Any = None


class _ShapeUser(msgspec.Struct):
    organization_user_id: Any = None
    metadata: Any = None


_UNREAD = msgspec.Raw()


class PlainShape(msgspec.Struct, forbid_unknown_fields=True):
    """A Didomi user or event record decoded with only what :func:`read_plain` reads.

    Its top-level keys are those Didomi's records have (any other, a ``type`` or a flattened
    ``a__b`` among them, fails the decoding: such a record is decoded whole, as before); the
    keys no mapping reads are left undecoded. Nested objects keep only the keys read;
    ``consents`` is kept as its JSON text (empty when absent): most records repeat a handful
    of them, so a reader decodes and reads each text once (see ``PlainChoiceReader``).
    """

    id: Any = None
    organization_user_id: Any = None
    created_at: Any = None
    updated_at: Any = None
    status: Any = None
    regulation: Any = None
    metadata: Any = None
    user: _ShapeUser | None = None
    consents: msgspec.Raw = _UNREAD
    organization_id: msgspec.Raw = _UNREAD
    organization_user_id_type: msgspec.Raw = _UNREAD
    version: msgspec.Raw = _UNREAD
    country: msgspec.Raw = _UNREAD
    last_seen_country: msgspec.Raw = _UNREAD
    domain: msgspec.Raw = _UNREAD
    proofs_id: msgspec.Raw = _UNREAD
    delegate: msgspec.Raw = _UNREAD

    def as_read(self) -> dict[str, Any]:
        """The record as :func:`read_plain` reads it: the keys it reads, as decoded.

        Raises ``msgspec.DecodeError`` when ``consents`` is not in the shape read (the record
        is then decoded whole)."""
        user = self.user
        return {
            "id": self.id,
            "organization_user_id": self.organization_user_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": self.status,
            "regulation": self.regulation,
            "metadata": self.metadata,
            "user": None
            if user is None
            else {"organization_user_id": user.organization_user_id, "metadata": user.metadata},
            "consents": consents_as_read(self.consents),
        }


_consents_decoder = msgspec.json.Decoder(_ShapeConsents | None, float_hook=Decimal)


def consents_as_read(text: msgspec.Raw) -> dict[str, Any] | None:
    """A :class:`PlainShape`'s ``consents`` as :func:`read_plain` reads it (None when absent
    or null); raises ``msgspec.DecodeError`` when it is not in the shape read."""
    if not text:
        return None
    consents = _consents_decoder.decode(text)
    if consents is None:
        return None
    purposes = consents.purposes
    return {
        "purposes": None
        if purposes is None
        else [
            None
            if p is None
            else {
                "id": p.id,
                "enabled": p.enabled,
                "enabled_li": p.enabled_li,
                "values": p.values,
                "preferences": p.preferences,
            }
            for p in purposes
        ],
        "channels": consents.channels,
        "vendors": consents.vendors,
    }


def read_shape(shape: PlainShape) -> PlainRecord | None:
    """What :func:`read_plain` reads of ``shape.as_read()`` outside ``consents`` (its
    ``purposes``, ``channels`` and ``vendors`` left empty), read from the struct; None where
    read_plain gives None for a reason outside ``consents``."""
    try:
        user = shape.user
        ouid = _fast_text(user.organization_user_id) if user is not None else None
        if ouid is None:
            ouid = _fast_text(shape.organization_user_id)
        metadata = shape.metadata if user is None else user.metadata
        if metadata is not None and metadata.__class__ is not dict:
            raise _Unusual
        created, updated = shape.created_at, shape.updated_at
        created_at = fast_stamp(created)
        # An event's two timestamps are one (fast_stamp gives equal texts the same reading)
        updated_at = created_at if updated == created else fast_stamp(updated)
        regulation = _fast_text(shape.regulation)
        status = _fast_text(shape.status)
        return _plain_record(user is not None, ouid, _fast_text(shape.id), regulation, status,
                             created_at, updated_at, metadata, {}, {}, _NO_VENDORS)
    except _Unusual:
        return None
