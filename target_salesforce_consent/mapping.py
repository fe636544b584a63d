"""Mappings: source paths into merged Didomi consent, options, and Salesforce value conversions.

Pure logic, no I/O. A mapping is ``{"id": "<Salesforce field>", "value":
"<source path>"}`` with optional ``invert`` and ``value_map``. ``None`` means "no choice" all the
way through: the field is left untouched.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from target_salesforce_consent.didomi import MergedConsent, format_timestamp, parse_timestamp

__all__ = [
    "CLEAR",
    "FieldMapping",
    "FieldType",
    "MappingError",
    "SourceKind",
    "SourcePath",
    "as_sent",
    "cell_problem",
    "cells_problem",
    "compatibility_problem",
    "number_text",
    "parse_source_path",
    "report_value",
    "same_value",
    "to_csv_cell",
    "to_report_value",
]

SourceKind = Literal["boolean", "list", "text", "datetime"]

#: The Bulk API 2.0 CSV cell that sets a field to null.
CLEAR = "#N/A"

ACCEPTED_FORMS = (
    "purposes.<purposeId>.enabled",
    "purposes.<purposeId>.enabled_li",
    "purposes.<purposeId>.values.<preferenceId>",
    "purposes.<purposeId>.values.<preferenceId>.<valueId>",
    "purposes.<purposeId>.preferences.<preferenceId>.enabled",
    "purposes.<purposeId>.preferences.<preferenceId>.channels.<channelId>.enabled",
    "channels.<channelId>.enabled",
    "vendors.<vendorId>",
    "organization_user_id",
    "updated_at",
    "created_at",
    "regulation",
    "metadata.<key>",
    "consents_purposes_<purposeId>_enabled",
    "consents_purposes_<purposeId>_enabled_li",
    "consents_purposes_<purposeId>_preferences_<preferenceId>_enabled",
    "consents_purposes_<purposeId>_preferences_<preferenceId>_channel_<channelId>_enabled",
    "consents_channels_<channelId>_enabled",
)


class MappingError(Exception):
    """A configuration problem in ``mappings``; the message names the mapping and what to do."""


# --------------------------------------------------------------------------------------------
# Source paths
# --------------------------------------------------------------------------------------------

_ID = r"[^.\s]+"
_ID_RE = re.compile(rf"^{_ID}$")
_RECORD_FIELDS = ("organization_user_id", "updated_at", "created_at", "regulation")

# Flattened aliases, most specific first. Ids may contain "_" and "-"; the fixed words are
# anchored, so ``consents_purposes_select_basic_ads_enabled_li`` is purpose ``select_basic_ads``.
_FLAT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"^consents_purposes_(?P<pid>\S+?)_preferences_(?P<pref>\S+?)"
            r"_channel_(?P<ch>\S+)_enabled$"
        ),
        "purposes.{pid}.preferences.{pref}.channels.{ch}.enabled",
    ),
    (
        re.compile(r"^consents_purposes_(?P<pid>\S+?)_preferences_(?P<pref>\S+)_enabled$"),
        "purposes.{pid}.preferences.{pref}.enabled",
    ),
    (re.compile(r"^consents_purposes_(?P<pid>\S+)_enabled_li$"), "purposes.{pid}.enabled_li"),
    (re.compile(r"^consents_purposes_(?P<pid>\S+)_enabled$"), "purposes.{pid}.enabled"),
    (re.compile(r"^consents_channels_(?P<ch>\S+)_enabled$"), "channels.{ch}.enabled"),
)


def _accepted_forms_message(text: str, reason: str) -> str:
    forms = "\n  ".join(ACCEPTED_FORMS)
    return (
        f"source path {text!r} is not valid ({reason}); "
        f"accepted forms (ids contain no dots):\n  {forms}"
    )


@dataclass(frozen=True)
class SourcePath:
    """A parsed source path. ``segments`` is the canonical dotted form split on dots (the key of
    a ``metadata.<key>`` path is kept whole, dots included); ``str()`` gives it back joined."""

    segments: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.segments)

    @property
    def kind(self) -> SourceKind:
        """What the path yields: boolean, list (of value ids), text or datetime (ISO string)."""
        s = self.segments
        if s[0] == "purposes" and len(s) == 4 and s[2] == "values":
            return "list"
        if s[0] in ("purposes", "channels", "vendors"):
            return "boolean"
        if s[0] in ("updated_at", "created_at"):
            return "datetime"
        return "text"

    def resolve(
        self, consent: MergedConsent
    ) -> bool | list[str] | str | int | float | Decimal | None:
        """The value in ``consent``; ``None`` means no choice.

        ``metadata.<key>``: strings, numbers and booleans are returned as they are, objects
        and arrays as JSON text; a key with dots is looked up whole first, then as a nested path.
        """
        s = self.segments
        state = consent.consents
        head = s[0]
        if head == "purposes":
            purpose = state.purposes.get(s[1])
            if purpose is None:
                return None
            if s[2] == "enabled":
                return purpose.enabled
            if s[2] == "enabled_li":
                return purpose.enabled_li
            if s[2] == "values":
                selected = purpose.values.get(s[3])
                if selected is None:
                    return None
                if len(s) == 4:
                    return list(selected)
                return s[4] in selected
            preference = purpose.preferences.get(s[3])
            if preference is None:
                return None
            if len(s) == 5:
                return preference.enabled
            return preference.channels.get(s[5])
        if head == "channels":
            return state.channels.get(s[1])
        if head == "vendors":
            if s[1] in state.vendors.get("enabled", ()):
                return True
            if s[1] in state.vendors.get("disabled", ()):
                return False
            return None
        if head == "organization_user_id":
            return consent.ouid
        if head == "regulation":
            return consent.regulation
        if head == "updated_at":
            return consent.updated_at
        if head == "created_at":
            return consent.created_at
        return metadata_value(consent.metadata, s[1])


def metadata_value(
    metadata: Mapping[str, Any], key: str
) -> str | int | float | Decimal | bool | None:
    if key in metadata:
        value: Any = metadata[key]
    else:
        value = metadata
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return None
            value = value[part]
    if value is None or isinstance(value, (str, bool, int, float, Decimal)):
        return value
    return json_text(value)


def _dotted(text: str, original: str) -> SourcePath:
    parts = text.split(".")
    if parts[0] == "consents" and parts[1:2] in (["purposes"], ["channels"], ["vendors"]):
        parts = parts[1:]
    head = parts[0]
    if head == "metadata":
        key = text.split(".", 1)[1] if len(parts) > 1 else ""
        if not key.strip() or key != key.strip():
            raise MappingError(_accepted_forms_message(original, "metadata needs a key"))
        return SourcePath(("metadata", key))
    if any(not _ID_RE.match(part) for part in parts):
        raise MappingError(_accepted_forms_message(original, "empty segment or whitespace"))
    n = len(parts)
    ok = False
    if head == "purposes" and n >= 3:
        tail = parts[2:]
        ok = (
            tail in (["enabled"], ["enabled_li"])
            or (tail[0] == "values" and n in (4, 5))
            or (tail[0] == "preferences" and n == 5 and tail[2] == "enabled")
            or (
                tail[0] == "preferences"
                and n == 7
                and tail[2] == "channels"
                and tail[4] == "enabled"
            )
        )
    elif head == "channels":
        ok = n == 3 and parts[2] == "enabled"
    elif head == "vendors":
        ok = n == 2
    elif head in _RECORD_FIELDS:
        ok = n == 1
    if not ok:
        raise MappingError(_accepted_forms_message(original, "unknown path"))
    return SourcePath(tuple(parts))


def parse_source_path(text: str) -> SourcePath:
    """Parse a source path in dotted form or Didomi's flattened form.

    Flattened aliases are matched with anchored regexes, most specific first; a purpose id
    that itself contains ``_preferences_`` (or a preference id containing ``_channel_``) cannot
    be written in flattened form, use the dotted form. A leading ``consents.`` is accepted in
    dotted paths (``consents.purposes.x.enabled``). Raises :class:`MappingError` listing the
    accepted forms.
    """
    if not isinstance(text, str) or not text.strip():
        raise MappingError(_accepted_forms_message(str(text), "empty"))
    stripped = text.strip()
    if stripped.startswith("metadata.") or "." in stripped:
        return _dotted(stripped, text)
    if stripped in _RECORD_FIELDS:
        return SourcePath((stripped,))
    for pattern, template in _FLAT_PATTERNS:
        match = pattern.match(stripped)
        if match is not None:
            dotted = template.format(**match.groupdict())
            return _dotted(dotted, text)
    raise MappingError(_accepted_forms_message(text, "unknown path"))


# --------------------------------------------------------------------------------------------
# Mappings
# --------------------------------------------------------------------------------------------

_MAPPING_KEYS = ("id", "value", "invert", "value_map")
_KIND_YIELDS: dict[str, str] = {
    "boolean": "true/false",
    "list": "a list of preference value ids",
    "text": "text",
    "datetime": "a date-time",
}


@dataclass(frozen=True)
class FieldMapping:
    """One entry of ``mappings``. ``index`` is its position in the configuration (for messages)."""

    field: str
    source: SourcePath
    invert: bool = False
    value_map: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    index: int | None = dataclasses.field(default=None, compare=False)

    @property
    def label(self) -> str:
        """``mappings[2]`` (or ``mapping <Field>`` when built without an index)."""
        return f"mappings[{self.index}]" if self.index is not None else f"mapping {self.field}"

    @classmethod
    def from_config(cls, item: Any, index: int) -> FieldMapping:
        """Build from ``{"id": field, "value": path, "invert"?: bool, "value_map"?: {str: str}}``.

        Unknown keys are rejected (a misspelt ``"invert"`` must not be ignored). ``invert`` is
        allowed on boolean sources only; ``value_map`` is not allowed on datetime sources, and on
        boolean sources its keys must be ``"true"``/``"false"``.
        """
        where = f"mappings[{index}]"
        example = '{"id": "<Salesforce field API name>", "value": "<source path>"}'
        if not isinstance(item, Mapping):
            raise MappingError(f"{where} must be an object like {example}")
        unknown = sorted(str(k) for k in item if k not in _MAPPING_KEYS)
        if unknown:
            raise MappingError(
                f"{where} has unknown key(s) {', '.join(unknown)}; "
                f"allowed keys are {', '.join(_MAPPING_KEYS)}"
            )
        field_name = item.get("id")
        if not isinstance(field_name, str) or not field_name.strip():
            raise MappingError(
                f'{where} needs "id": the API name of the Salesforce field, like {example}'
            )
        field_name = field_name.strip()
        where = f"{where} ({field_name})"
        path = item.get("value")
        if not isinstance(path, str) or not path.strip():
            raise MappingError(f'{where} needs "value": a source path, like {example}')
        try:
            source = parse_source_path(path)
        except MappingError as exc:
            raise MappingError(f"{where}: {exc}") from None

        invert = item.get("invert", False)
        if invert is None:
            invert = False
        if not isinstance(invert, bool):
            raise MappingError(f'{where}: "invert" must be true or false, got {invert!r}')
        if invert and source.kind != "boolean":
            raise MappingError(
                f'{where}: "invert" applies only to true/false sources, but {source} yields '
                f'{_KIND_YIELDS[source.kind]}; remove "invert"'
            )

        raw_map = item.get("value_map")
        if raw_map is None:
            raw_map = {}
        if not isinstance(raw_map, Mapping):
            raise MappingError(
                f'{where}: "value_map" must be an object of source value to Salesforce value'
            )
        value_map: dict[str, str] = {}
        for key, target in raw_map.items():
            if not isinstance(key, str) or not isinstance(target, str):
                raise MappingError(
                    f'{where}: "value_map" entries must map a string to a string; '
                    f"got {key!r}: {target!r}"
                )
            value_map[key] = target
        if value_map and source.kind == "datetime":
            raise MappingError(
                f'{where}: "value_map" does not apply to {source}, which yields a date-time; '
                'remove "value_map"'
            )
        if source.kind == "boolean":
            bad = sorted(k for k in value_map if k not in ("true", "false"))
            if bad:
                raise MappingError(
                    f'{where}: {source} yields true/false, so "value_map" keys must be "true" '
                    f'and/or "false"; got {", ".join(repr(k) for k in bad)}'
                )
        return cls(field=field_name, source=source, invert=invert, value_map=value_map, index=index)

    def value_for(self, consent: MergedConsent) -> Any | None:
        """The value to write for ``consent``; ``None`` means no choice (leave the field alone).

        Resolve, then invert (null stays null), then ``value_map``: a list maps each id (ids
        without an entry pass through); a boolean becomes the mapped string when ``"true"`` /
        ``"false"`` has an entry (else stays a boolean); a text value is mapped by its text
        (``str()`` of numbers, ``"true"``/``"false"`` of booleans). An empty string result is
        ``None`` (Bulk API treats an empty cell as "unchanged" anyway).
        """
        return self.convert(self.source.resolve(consent))

    def convert(self, value: Any) -> Any | None:
        """Invert and ``value_map`` a resolved value (see :meth:`value_for`)."""
        if value is None:
            return None
        if isinstance(value, bool):
            if self.invert:
                value = not value
            key = "true" if value else "false"
            result: Any = self.value_map.get(key, value)
        elif isinstance(value, list):
            result = [self.value_map.get(item, item) for item in value]
        else:
            key = value if isinstance(value, str) else str(value)
            result = self.value_map.get(key, value)
        if isinstance(result, str) and result == "":
            return None
        return result


# --------------------------------------------------------------------------------------------
# Salesforce field types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldType:
    """The part of a Salesforce describe field that the conversions need."""

    name: str
    type: str
    length: int = 0
    picklist_values: tuple[str, ...] = ()
    restricted_picklist: bool = False


_TEXT = frozenset({"string", "textarea", "picklist", "combobox"})
_PLAIN_TEXT = frozenset({"string", "textarea", "combobox"})
_NUMBER = frozenset({"int", "double", "currency", "percent", "long"})
_SUGGEST: dict[str, str] = {
    "boolean": "map it to a checkbox or text field, or add a value_map",
    "list": "map it to a multi-select picklist or text field",
    "text": "map it to a text, email, phone, url or picklist field",
    "datetime": "map it to a date/time, date or text field",
}


def _allowed_types(mapping: FieldMapping) -> frozenset[str]:
    kind = mapping.source.kind
    if kind == "boolean":
        allowed = {"boolean", *_TEXT}
        if mapping.value_map:
            allowed.add("multipicklist")
        if mapping.value_map:
            allowed.discard("boolean")  # a mapped value is text, which a checkbox cannot hold
        return frozenset(allowed)
    if kind == "list":
        return frozenset({"multipicklist", *_TEXT})
    if kind == "datetime":
        return frozenset({"datetime", "date", *_PLAIN_TEXT})
    return frozenset({*_TEXT, "email", "phone", "url"})


def _known_outputs(mapping: FieldMapping) -> list[str] | None:
    """Every text the mapping can produce, when that set is known in advance."""
    kind = mapping.source.kind
    if kind == "boolean":
        return [mapping.value_map.get(k, k) for k in ("true", "false")]
    if kind in ("list", "text") and mapping.value_map:
        return list(dict.fromkeys(mapping.value_map.values()))
    return None


def compatibility_problem(mapping: FieldMapping, field: FieldType, sobject: str = "") -> str | None:
    """``None`` when ``field`` can hold what ``mapping`` yields, else a message saying what to do.

    Boolean sources go to checkboxes or text-like fields (string, textarea, picklist, combobox;
    ``"true"``/``"false"`` as text), to a multi-select picklist only through a ``value_map``,
    and not to a checkbox once a ``value_map`` turns a value into text. Lists go to
    multi-select picklists or text-like fields; date-times to datetime, date, string, textarea or
    combobox fields; text to text-like, email, phone or url fields. For a restricted picklist
    every value the mapping is known to produce (true/false or their ``value_map`` targets,
    or the ``value_map`` targets of a list/text source) must be an allowed value; a list or text
    without ``value_map`` is checked at write time. For text fields with a length, known values
    must fit. ``sobject`` (``"Lead"``) qualifies the field name in messages.
    """
    kind = mapping.source.kind
    target = f"{sobject}.{field.name}" if sobject else field.name
    head = f"{mapping.label}: {mapping.source} yields {_KIND_YIELDS[kind]}"
    ftype = field.type.lower()
    if ftype not in _allowed_types(mapping):
        article = "an" if ftype[:1] in "aeiou" else "a"
        return f"{head}, but {target} is {article} {ftype} field; {_SUGGEST[kind]}"
    if ftype == "boolean":
        return None
    outputs = _known_outputs(mapping)
    if outputs is None:
        return None
    if field.restricted_picklist and ftype in ("picklist", "multipicklist"):
        allowed = set(field.picklist_values)
        missing = [v for v in outputs if v not in allowed]
        if missing:
            listed = ", ".join(field.picklist_values) or "none"
            return (
                f"{head}, which can write {', '.join(repr(v) for v in missing)}, but {target} is a "
                f"restricted picklist that allows only: {listed}; add a value_map to allowed "
                "values (or add the values to the picklist)"
            )
    if field.length and ftype in _PLAIN_TEXT:
        too_long = [v for v in outputs if len(v) > field.length]
        if too_long:
            return (
                f"{head}, which can write {too_long[0]!r}, longer than the {field.length} "
                f"characters {target} holds; map shorter values with value_map"
            )
    return None


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
#: Numbers with more digits than this before or after the point are written with an exponent.
_PLAIN_DIGITS = 30


def as_sent(text: str, line_break: str = "\n") -> str:
    """``text`` as a Bulk API 2.0 upload carries it: no NUL, every line break as ``line_break``.

    Salesforce cannot store NUL, and an embedded line break that differs from the job's declared
    line ending fails the whole job (reference 3.11), so CRLF, CR and LF all become the job's
    ending. The CSV writer and the "unchanged" comparison both use this one function.
    """
    if "\r" not in text and "\x00" not in text and (line_break == "\n" or "\n" not in text):
        return text  # the usual case, without a regex pass
    return _LINE_BREAKS.sub(line_break, text.replace("\x00", ""))


def number_text(value: int | float | Decimal) -> str:
    """A number as plain text, as a person would type it: ``0.75``, ``7``, ``-0.000125``.

    singer-sdk hands JSON fractions over as ``Decimal``. No quotes, no trailing zeros
    (``1.50`` -> ``1.5``), no exponent (``1e21`` -> ``1000000000000000000000``) unless the
    number has more than 30 digits before or after the point (``1E+300``). Non-finite values
    are written as JSON spells them (``NaN``, ``Infinity``, ``-Infinity``).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    number = Decimal(repr(value)) if isinstance(value, float) else value
    if number.is_nan():
        return "NaN"
    if number.is_infinite():
        return "-Infinity" if number < 0 else "Infinity"
    if number.is_zero():
        return "0"
    if not -_PLAIN_DIGITS <= number.adjusted() < _PLAIN_DIGITS:
        return str(number)
    text = format(number, "f")  # exact: no context rounding, unlike normalize()
    return text.rstrip("0").rstrip(".") if "." in text else text


def _json_ready(value: Any) -> Any:
    """``value`` with every ``Decimal`` as an int or float, so JSON writes it as a number."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, Decimal) and value.is_finite():
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def json_text(value: Any) -> str:
    """An object or array as JSON text: keys sorted, numbers as JSON numbers (never quoted)."""
    try:
        return json.dumps(_json_ready(value), sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


def _unique(items: list[Any]) -> list[str]:
    return list(dict.fromkeys(_scalar_text(item) for item in items))


def _scalar_text(value: Any) -> str:
    if isinstance(value, (bool, int, float, Decimal)):
        return number_text(value)
    if isinstance(value, (dict, list, tuple)):
        return json_text(value)
    return str(value)


def _is_empty_selection(value: Any) -> bool:
    return isinstance(value, (list, tuple, set, frozenset)) and not value


def _datetime_cell(value: datetime | str, ftype: str) -> str | None:
    try:
        dt = parse_timestamp(value)
    except ValueError:
        return None
    return dt.date().isoformat() if ftype == "date" else format_timestamp(dt)


def to_csv_cell(value: Any, field: FieldType) -> str:
    """The Bulk API 2.0 CSV cell for ``value`` (never ``None``: no choice is an empty cell).

    Booleans are ``true``/``false`` (as text in text fields too). A list is joined with ``;``,
    order kept and duplicates dropped; an empty list clears the field (``#N/A``). Into a datetime
    field a timestamp becomes ``2024-06-18T16:40:03.512Z``; into a date field its UTC date
    ``2024-06-18``; a ``datetime`` into a text field is written like a datetime. Strings pass
    through (a string that is not a timestamp passes through into date/datetime fields too, for
    Salesforce to judge); numbers are plain text (:func:`number_text`). The cell is the text as
    sent (:func:`as_sent`: no NUL, line breaks as LF). A cell that is ``#N/A`` but not an empty
    list's clear must not be sent: :func:`cell_problem` says so.
    """
    return as_sent(_cell_text(value, field.type.lower()))


def _cell_text(value: Any, ftype: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = _unique(sorted(value) if isinstance(value, (set, frozenset)) else list(value))
        return ";".join(items) if items else CLEAR
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (datetime, str)) and ftype in ("datetime", "date"):
        cell = _datetime_cell(value, ftype)
        if cell is not None:
            return cell
    if isinstance(value, datetime):
        return format_timestamp(value)
    return _scalar_text(value)


def to_report_value(value: Any, field: FieldType) -> Any:
    """The JSON form of a written value for the run report: ``True``/``False`` for checkbox
    fields, ``None`` for a cleared field (empty list), otherwise the text written (``"A;B"``,
    ``"2024-06-18T16:40:03.512Z"``, ``"true"`` into a text field, ``"#N/A"`` for a text that
    :func:`cell_problem` refuses)."""
    if value is None:
        return None
    cell = to_csv_cell(value, field)
    if cell == CLEAR and not _is_empty_selection(value):
        return cell  # a text "#N/A", which cell_problem refuses: shown as it is
    return report_value(cell, field)


def report_value(cell: str, field: FieldType) -> Any:
    """The report's JSON form of a cell the target sends: ``None`` for its clear (an empty
    selection), booleans for checkboxes, otherwise the text written."""
    if cell == CLEAR:
        return None
    if field.type.lower() == "boolean" and cell in ("true", "false"):
        return cell == "true"
    return cell


def cell_problem(field_name: str, cell: str, value: Any) -> str | None:
    """Why ``cell`` must not be sent to ``field_name`` ("CODE: message"), or ``None``.

    Bulk API 2.0 reads a cell of exactly ``#N/A`` as "set this field to null" and has no escape
    for it (reference 3.11). Values are not trimmed there, so `` #N/A`` or ``#n/a`` are plain
    text; only the exact marker, after :func:`as_sent`, is refused. The target sends it only as
    its own clear for an empty selection: ``value`` is what the cell was built from, or its
    report form (``None`` for that clear); for anything else (a text, a number, a selection
    whose ids are ``#N/A``) the cell would clear the field instead of writing it.
    """
    if as_sent(cell) != CLEAR or value is None or _is_empty_selection(value):
        return None
    return (
        f'INVALID_FIELD: {field_name}: the value "{CLEAR}" cannot be written through Bulk API '
        '2.0, which reads it as "clear this field"; the record is not written'
    )


def cells_problem(cells: Mapping[str, str], values: Mapping[str, Any]) -> str | None:
    """The first :func:`cell_problem` among ``cells`` (field -> cell); ``values`` holds, per
    field, the value each cell was built from or its report form."""
    for field_name, cell in cells.items():
        problem = cell_problem(field_name, cell, values.get(field_name))
        if problem is not None:
            return problem
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    return None


def _split_multi(value: str) -> set[str]:
    return {part.strip() for part in value.split(";") if part.strip()}


def same_value(cell: str, current: Any, field: FieldType, *, as_set: bool = False) -> bool:
    """Whether Salesforce's ``current`` value (REST SOQL JSON) already equals ``cell``.

    Compares what would be sent: both sides as :func:`as_sent` makes them (no NUL, line breaks
    as LF), so a text holding CRLF or NUL is not rewritten on every run.

    * ``""`` (no choice, nothing written) is always "the same".
    * ``#N/A`` equals ``None`` and ``""``.
    * checkbox: compared as booleans (``None`` is never equal: Salesforce returns true/false).
    * multipicklist, or any field given a list (``as_set``): compared as sets of
      ``;``-separated values, since a Didomi selection has no order.
    * datetime: compared as instants at millisecond precision (Salesforce returns
      ``2024-06-18T16:40:03.512+0000``); date: as dates; number fields: as numbers.
    * email: case-insensitively; every other type: exact text (``True`` reads as ``"true"``,
      numbers as :func:`number_text` writes them).
    """
    if cell == "":
        return True
    cell = as_sent(cell)
    if cell == CLEAR:
        return current is None or current == "" or current == []
    if current is None:
        return False
    ftype = field.type.lower()
    if ftype == "boolean":
        ours, theirs = _as_bool(cell), _as_bool(current)
        return ours is not None and ours == theirs
    if ftype == "multipicklist" or as_set:
        if not isinstance(current, str):
            return False
        return _split_multi(cell) == _split_multi(as_sent(current))
    if ftype in ("datetime", "date"):
        if not isinstance(current, (str, datetime, date)):
            return False
        if isinstance(current, date) and not isinstance(current, datetime):
            current = current.isoformat()
        try:
            ours_dt, theirs_dt = parse_timestamp(cell), parse_timestamp(current)
        except ValueError:
            return cell == current
        if ftype == "date":
            return ours_dt.date() == theirs_dt.date()
        return ours_dt.replace(microsecond=ours_dt.microsecond // 1000 * 1000) == (
            theirs_dt.replace(microsecond=theirs_dt.microsecond // 1000 * 1000)
        )
    if ftype in _NUMBER:
        try:
            return Decimal(cell) == Decimal(_scalar_text(current))
        except (ArithmeticError, TypeError, ValueError):
            return False
    theirs_text = as_sent(_scalar_text(current))
    if ftype == "email":
        return cell.casefold() == theirs_text.casefold()
    return cell == theirs_text


class FieldValues:
    """:func:`report_value` and :func:`same_value` of one field, remembered for the values
    that repeat across people (``true``/``false``, a picklist value, a short selection).

    Both are pure, and planning asks them once or twice per person and mapped field: the
    answer for a short cell against a text, boolean or null held in Salesforce is kept (a few
    hundred per field at most); anything else is computed each time.
    """

    __slots__ = ("_cells", "_report", "_same", "ftype")

    #: Entries kept per field; the memo starts over when full (values that do not repeat).
    LIMIT = 512
    #: Longer texts are rarely shared: not remembered.
    SHORT = 64

    def __init__(self, ftype: FieldType) -> None:
        self.ftype = ftype
        self._report: dict[str, Any] = {}
        self._same: dict[tuple[str, Any, bool], bool] = {}
        self._cells: dict[str, str] = {}

    def cell(self, cell: str) -> str:
        """``cell``, as one shared string per short value: a plan's rows then hold no copy of
        the store's strings once its choices are freed."""
        if len(cell) > self.SHORT:
            return cell
        found = self._cells.get(cell)
        if found is None:
            if len(self._cells) >= self.LIMIT:
                return cell
            found = self._cells[cell] = cell
        return found

    def report(self, cell: str) -> Any:
        """``report_value(cell, ftype)``."""
        try:
            return self._report[cell]
        except KeyError:
            pass
        value = report_value(cell, self.ftype)
        if len(cell) <= self.SHORT:
            if len(self._report) >= self.LIMIT:
                self._report.clear()
            self._report[cell] = value
        return value

    def same(self, cell: str, current: Any, as_set: bool) -> bool:
        """``same_value(cell, current, ftype, as_set=as_set)``."""
        kind = type(current)
        # Only str, bool and None as keys: 1 == True would share an entry with a different
        # answer for a text field ("1" against "true").
        if len(cell) > self.SHORT or not (
            current is None or kind is bool or (kind is str and len(current) <= self.SHORT)
        ):
            return same_value(cell, current, self.ftype, as_set=as_set)
        key = (cell, current, as_set)
        found = self._same.get(key)
        if found is None:
            found = same_value(cell, current, self.ftype, as_set=as_set)
            if len(self._same) >= self.LIMIT:
                self._same.clear()
            self._same[key] = found
        return found
