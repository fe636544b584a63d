"""What one record says about each mapped field: the unit of whole-run merging.

Whole-run merging combines a person's records in timestamp order: a user-shaped record
replaces the consent state (what it lacks becomes "no choice"), an event-shaped one overlays
what it carries. Seen per mapped field, that is simply "the newest record that says something
about this field wins", where:

* a user-shaped record says something about every consent path (its value, or "no choice"
  when it lacks the purpose, preference, channel or vendor);
* an event-shaped record says something only about what it carries (a ``null`` never erases a
  known choice; a preference it carries replaces that preference's whole selection; a vendor it
  lists in ``enabled``/``disabled``);
* ``metadata.<key>``: the records whose metadata holds the key (metadata overlays, whatever the
  shape); ``updated_at`` / ``created_at``: the records that have them; ``organization_user_id``
  and ``regulation``: every record.

So a record can be reduced, on arrival, to one :class:`FieldChoice` per mapped field it speaks
to, already converted to the Bulk API CSV cell. The run keeps only the newest choice per person
and field (see ``store.py``); ``tests/test_extract.py`` checks that this gives what
:func:`didomi.merge` gives for the same records in one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from target_salesforce_consent.didomi import (
    ConsentRecord,
    Needs,
    PlainRecord,
    PlainShape,
    consents_as_read,
    format_timestamp,
    read_plain,
    read_shape,
)
from target_salesforce_consent.mapping import (
    FieldMapping,
    FieldType,
    SourcePath,
    cell_problem,
    metadata_value,
    to_csv_cell,
    to_report_value,
)

__all__ = [
    "NOT_CARRIED",
    "NO_CHOICE",
    "CellError",
    "ChoiceReader",
    "FieldChoice",
    "PlainChoiceReader",
    "choices_of",
    "is_valid_unicode",
    "needs_of",
    "path_value",
]


def is_valid_unicode(text: str) -> bool:
    """False for a lone surrogate ("\ud800"), which cannot be sent to Salesforce as UTF-8."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class CellError(Exception):
    """A record's value that cannot be sent as it is ("CODE: message"); the record fails.

    ``fields`` holds the record's mapped values as the report shows them, the bad one included.
    """

    def __init__(self, problem: str, fields: dict[str, Any]) -> None:
        super().__init__(problem)
        self.fields = fields


class _NotCarried:
    """The record says nothing about this path (older choices stand)."""

    def __repr__(self) -> str:
        return "NOT_CARRIED"


NOT_CARRIED: Any = _NotCarried()


@dataclass(frozen=True, slots=True)
class FieldChoice:
    """One record's choice for one mapped field, as the CSV cell to send.

    ``cell`` is ``""`` for "no choice": it still replaces an older choice (a user-shaped record
    that lacks the purpose), but writes nothing. ``is_list`` marks a Didomi selection, which
    compares as a set.
    """

    cell: str
    is_list: bool = False


#: "No choice": replaces older choices for the field, writes nothing.
NO_CHOICE = FieldChoice("")


def needs_of(mappings: tuple[FieldMapping, ...]) -> Needs:
    """The parts of ``consents`` the mappings read (the fast reader skips the rest)."""
    heads = [m.source.segments for m in mappings]
    return Needs(
        purposes=frozenset(s[1] for s in heads if s[0] == "purposes"),
        channels=any(s[0] == "channels" for s in heads),
        vendors=any(s[0] == "vendors" for s in heads),
    )


def path_value(path: SourcePath, rec: ConsentRecord) -> Any:
    """The value ``rec`` gives for ``path`` (``None``: no choice), or :data:`NOT_CARRIED`."""
    s = path.segments
    head = s[0]
    full = rec.kind == "user"  # a user-shaped record is the whole state
    state = rec.consents
    if head == "purposes":
        purpose = state.purposes.get(s[1])
        if purpose is None:
            return None if full else NOT_CARRIED
        if s[2] in ("enabled", "enabled_li"):
            flag = purpose.enabled if s[2] == "enabled" else purpose.enabled_li
            return flag if (full or flag is not None) else NOT_CARRIED
        if s[2] == "values":
            selected = purpose.values.get(s[3])
            if selected is None:
                return None if full else NOT_CARRIED
            return list(selected) if len(s) == 4 else s[4] in selected
        preference = purpose.preferences.get(s[3])
        if preference is None:
            return None if full else NOT_CARRIED
        flag = preference.enabled if len(s) == 5 else preference.channels.get(s[5])
        return flag if (full or flag is not None) else NOT_CARRIED
    if head == "channels":
        flag = state.channels.get(s[1])
        return flag if (full or flag is not None) else NOT_CARRIED
    if head == "vendors":
        if full:
            if s[1] in state.vendors.get("enabled", ()):
                return True
            return False if s[1] in state.vendors.get("disabled", ()) else None
        # merge() applies an event's "enabled" list, then its "disabled" one
        if s[1] in state.vendors.get("disabled", ()):
            return False
        return True if s[1] in state.vendors.get("enabled", ()) else NOT_CARRIED
    if head == "organization_user_id":
        return rec.ouid
    if head == "regulation":
        return rec.regulation
    if head in ("updated_at", "created_at"):
        stamp = rec.updated_at if head == "updated_at" else rec.created_at
        return format_timestamp(stamp) if stamp is not None else NOT_CARRIED
    return _metadata_value(rec.metadata, s[1])


def _metadata_value(metadata: Mapping[str, Any], key: str) -> Any:
    # merge() overlays metadata key by key at the top level, so a record speaks to a path
    # when it holds the whole key, or the first part of a dotted one.
    if key not in metadata and key.split(".", 1)[0] not in metadata:
        return NOT_CARRIED
    return metadata_value(metadata, key)


def choices_of(
    rec: ConsentRecord,
    mappings: tuple[FieldMapping, ...],
    field_types: Mapping[str, FieldType],
) -> dict[str, FieldChoice]:
    """Every mapped field ``rec`` speaks to, as the cell it would write.

    Raises :class:`CellError` for a value Bulk API 2.0 would misread (a text ``#N/A``).
    """
    choices: dict[str, FieldChoice] = {}
    values: dict[str, Any] = {}
    problem: str | None = None
    for mapping in mappings:
        raw = path_value(mapping.source, rec)
        if raw is NOT_CARRIED:
            continue
        choices[mapping.field], value = _choice(mapping, raw, field_types)
        if value is not None:
            problem = problem or cell_problem(mapping.field, choices[mapping.field].cell, value)
            values[mapping.field] = value
    if problem is not None:
        raise CellError(
            problem, {f: to_report_value(v, field_types[f]) for f, v in values.items()}
        )
    return choices


def _choice(
    mapping: FieldMapping, raw: Any, field_types: Mapping[str, FieldType]
) -> tuple[FieldChoice, Any]:
    """The choice a raw path value gives, and the converted value (None: no choice)."""
    value = mapping.convert(raw)
    if value is None:
        return NO_CHOICE, None
    cell = to_csv_cell(value, field_types[mapping.field])
    return FieldChoice(cell, isinstance(value, list)), value


_CACHED = frozenset({bool, str, list, type(None)})


class ChoiceReader:
    """:func:`choices_of` with the conversion of each mapping's raw value memoised.

    Most mapped values are a handful of booleans or selections that recur on every record; the
    cell each gives depends on nothing else. A cache per mapping, bounded, keyed by the value and
    its type (``True`` and ``1`` give different cells).
    """

    MAX_CACHED = 4096  # per mapping

    def __init__(
        self, mappings: tuple[FieldMapping, ...], field_types: Mapping[str, FieldType]
    ) -> None:
        self.mappings = mappings
        self.field_types = field_types
        self._caches: list[dict[tuple[type, Any], FieldChoice]] = [{} for _ in mappings]

    def choices(self, rec: ConsentRecord) -> dict[str, FieldChoice]:
        """What :func:`choices_of` gives; raises :class:`CellError` the same way."""
        choices: dict[str, FieldChoice] = {}
        for mapping, cache in zip(self.mappings, self._caches, strict=True):
            raw = path_value(mapping.source, rec)
            if raw is NOT_CARRIED:
                continue
            # Only values equal exactly when they read the same: not Decimal("1.5") and "1.50"
            kind = raw.__class__
            key = (kind, tuple(raw) if kind is list else raw) if kind in _CACHED else None
            choice = cache.get(key) if key is not None else None
            if choice is None:
                choice, value = _choice(mapping, raw, self.field_types)
                if value is not None and cell_problem(mapping.field, choice.cell, value):
                    return choices_of(rec, self.mappings, self.field_types)  # raises
                if key is not None and len(cache) < self.MAX_CACHED:
                    cache[key] = choice
            choices[mapping.field] = choice
        return choices


# -- the fastest path: from the record as sent straight to the choices ----------------------

#: A choice the plain reader leaves to the full path (a cell that cannot be sent, ...).
_FULL_PATH: Any = object()

_ChoiceOf = Callable[[PlainRecord], Any]  # a FieldChoice, NOT_CARRIED or _FULL_PATH


class _Converter:
    """A mapping's raw value -> its :class:`FieldChoice`, memoised as :class:`ChoiceReader`
    does; :data:`_FULL_PATH` for a value whose cell cannot be sent (the full path raises)."""

    def __init__(self, mapping: FieldMapping, field_types: Mapping[str, FieldType]) -> None:
        self.mapping = mapping
        self.field_types = field_types
        self.cache: dict[Any, Any] = {}

    def convert(self, raw: Any) -> Any:
        try:
            choice, value = _choice(self.mapping, raw, self.field_types)
        except Exception:  # the full path raises it again, and reports the record
            return _FULL_PATH
        if value is not None and cell_problem(self.mapping.field, choice.cell, value):
            return _FULL_PATH
        if not is_valid_unicode(choice.cell):  # the full path fails the record
            return _FULL_PATH
        return choice

    def __call__(self, raw: Any) -> Any:
        kind = raw.__class__
        if kind not in _CACHED:
            return self.convert(raw)
        # Only values equal exactly when they read the same (True and 1 give different cells)
        key = (kind, tuple(raw) if kind is list else raw)
        choice = self.cache.get(key)
        if choice is None:
            choice = self.convert(raw)
            if len(self.cache) < ChoiceReader.MAX_CACHED:
                self.cache[key] = choice
        return choice


_SELECTIONS: dict[str, tuple[str, ...]] = {}


def _selection(text: str) -> tuple[str, ...]:
    """The value ids a v2 selection holds ("a, b,,a" -> ("a", "b")), as read_needed reads it."""
    ids = _SELECTIONS.get(text)
    if ids is None:
        ids = tuple(dict.fromkeys(i for i in (part.strip() for part in text.split(",")) if i))
        if len(_SELECTIONS) >= ChoiceReader.MAX_CACHED:
            _SELECTIONS.clear()
        _SELECTIONS[text] = ids
    return ids


def _flag_reader(pid: str, part: str, convert: _Converter) -> _ChoiceOf:
    """``purposes.<id>.enabled`` / ``enabled_li``: a flag, read_plain has checked its type."""
    on, off, none = convert(True), convert(False), convert(None)

    def flag(rec: PlainRecord) -> Any:
        item = rec.purposes.get(pid)
        value = item.get(part) if item is not None else None
        if value is None:
            return none if rec.kind == "user" else NOT_CARRIED
        return on if value else off

    return flag


def _selection_reader(pid: str, pref_id: str, member: str | None, convert: _Converter) -> _ChoiceOf:
    """``purposes.<id>.values.<pref>[.<value>]``: memoised on the selection's text."""
    none = convert(None)
    by_text: dict[str, Any] = {}

    def selection(rec: PlainRecord) -> Any:
        item = rec.purposes.get(pid)
        if item is not None:
            values = item.get("values")
            entry = values.get(pref_id) if values is not None else None
            text = entry.get("value") if entry is not None else None
            if text is not None:
                choice = by_text.get(text)
                if choice is None:
                    ids = _selection(text)
                    choice = convert(list(ids) if member is None else member in ids)
                    if len(by_text) < ChoiceReader.MAX_CACHED:
                        by_text[text] = choice
                return choice
        return none if rec.kind == "user" else NOT_CARRIED

    return selection


def _items(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """The (id, item) pairs of an array that read_plain has checked."""
    if value is None:
        return []
    return [(item["id"], item) for item in value if item is not None and item.get("id")]


def _raw_reader(path: SourcePath) -> Callable[[PlainRecord], Any]:
    """What :func:`path_value` gives for ``path`` (other than flags, selections and
    metadata)."""
    s = path.segments
    head = s[0]
    if head == "purposes":  # a v1 preference
        pid, pref_id, channel = s[1], s[3], (s[5] if len(s) > 5 else None)

        def preference(rec: PlainRecord) -> Any:
            full = rec.kind == "user"
            item = rec.purposes.get(pid)
            preferences = item.get("preferences") if item is not None else None
            found = dict(_items(preferences)).get(pref_id) if preferences else None
            if found is None:
                return None if full else NOT_CARRIED
            if channel is None:
                value = found.get("enabled")
            else:
                value = {i: c.get("enabled") for i, c in _items(found.get("channels"))}.get(channel)
            return value if (full or value is not None) else NOT_CARRIED

        return preference
    if head == "channels":
        channel = s[1]

        def top_channel(rec: PlainRecord) -> Any:
            value = rec.channels.get(channel)
            return value if (rec.kind == "user" or value is not None) else NOT_CARRIED

        return top_channel
    if head == "vendors":
        vendor = s[1]

        def vendor_choice(rec: PlainRecord) -> Any:
            enabled, disabled = rec.vendors["enabled"], rec.vendors["disabled"]
            if rec.kind == "user":
                if vendor in enabled:
                    return True
                return False if vendor in disabled else None
            # merge() applies an event's "enabled" list, then its "disabled" one
            if vendor in disabled:
                return False
            return True if vendor in enabled else NOT_CARRIED

        return vendor_choice
    if head == "organization_user_id":
        return lambda rec: rec.ouid
    if head == "regulation":
        return lambda rec: rec.regulation
    if head == "updated_at":
        return lambda rec: rec.updated_at[0] if rec.updated_at is not None else NOT_CARRIED
    if head == "created_at":
        return lambda rec: rec.created_at[0] if rec.created_at is not None else NOT_CARRIED
    raise ValueError(f"{path} is read by _metadata_reader")  # metadata, the only path left


def _metadata_reader(key: str, convert: _Converter) -> _ChoiceOf:
    """``metadata.<key>``: :func:`_metadata_value` converted, in one call per record."""
    head = key.split(".", 1)[0]

    def metadata_choice(rec: PlainRecord) -> Any:
        metadata = rec.metadata
        if key not in metadata and head not in metadata:
            return NOT_CARRIED
        return convert(metadata_value(metadata, key))

    return metadata_choice


def _choice_reader(mapping: FieldMapping, field_types: Mapping[str, FieldType]) -> _ChoiceOf:
    """A mapping's reader from a :class:`PlainRecord` to its choice, built once."""
    convert = _Converter(mapping, field_types)
    s = mapping.source.segments
    if s[0] == "purposes" and s[2] in ("enabled", "enabled_li"):
        return _flag_reader(s[1], s[2], convert)
    if s[0] == "purposes" and s[2] == "values":
        return _selection_reader(s[1], s[3], s[4] if len(s) == 5 else None, convert)
    if s[0] == "metadata":
        return _metadata_reader(s[1], convert)
    read_raw = _raw_reader(mapping.source)

    def choice_of(rec: PlainRecord) -> Any:
        raw = read_raw(rec)
        return raw if raw is NOT_CARRIED else convert(raw)

    return choice_of


class PlainChoiceReader:
    """:func:`read_plain` then :meth:`ChoiceReader.choices`, without the objects between.

    Each mapping's choice is read from the record as sent by a reader built once from its
    source path, through a cache of the cells as :class:`ChoiceReader` keeps. ``read`` gives
    None for whatever it does not read exactly as the full path does (an unusual shape, a
    cell that cannot be sent, a value that fails to convert): the caller then takes the full
    path, which decides and reports. ``tests/test_extract.py`` checks the equivalence. Its
    cells are valid Unicode (the full path fails a record with a cell that is not).
    """

    #: Distinct ``consents`` texts (and record kinds) remembered; then whole choices dicts.
    MAX_CONSENTS = 4096
    MAX_DICTS = 4096

    def __init__(
        self, mappings: tuple[FieldMapping, ...], field_types: Mapping[str, FieldType]
    ) -> None:
        self.needs = needs_of(mappings)
        self._readers = [(m.field, _choice_reader(m, field_types)) for m in mappings]
        # For read_shape: the mappings that read ``consents``, and the others (by position).
        self._from_consents = [
            i for i, m in enumerate(mappings)
            if m.source.segments[0] in ("purposes", "channels", "vendors")
        ]  # fmt: skip
        self._others = [i for i in range(len(mappings)) if i not in self._from_consents]
        self._other_readers = [self._readers[i][1] for i in self._others]
        # (is an event, consents text) -> (serial, consent mappings' choices) or _FULL_PATH
        self._consents: dict[tuple[bool, bytes], Any] = {}
        # (serial, ids of the other mappings' choices) -> the record's choices, shared
        self._dicts: dict[tuple[int, ...], dict[str, FieldChoice]] = {}

    def read(self, raw: Any) -> tuple[PlainRecord, dict[str, FieldChoice]] | None:
        choices: dict[str, FieldChoice] = {}
        try:
            rec = read_plain(raw, self.needs)
            if rec is None:
                return None
            for field_name, choice_of in self._readers:
                choice = choice_of(rec)
                if choice is NOT_CARRIED:
                    continue
                if choice is _FULL_PATH:
                    return None
                choices[field_name] = choice
        except Exception:  # the full path reads it again, and reports
            return None
        return rec, choices

    def read_shape(self, shape: PlainShape) -> tuple[PlainRecord, dict[str, FieldChoice]] | None:
        """:meth:`read` of ``shape.as_read()`` (None where it gives None), with the record's
        ``purposes``, ``channels`` and ``vendors`` left empty.

        What the mappings of ``consents`` give is read once per distinct ``consents`` text and
        record kind (most records repeat a handful); a record's whole choices dict is shared
        with the records that give the same choices (a dict the batch only reads: it must
        never be changed in place).
        """
        try:
            rec = read_shape(shape)
            if rec is None:
                return None
            key = (shape.user is not None, bytes(shape.consents))  # (is an event, text)
            read = self._consents.get(key)
            if read is None:
                read = self._read_consents(rec.kind, shape.consents)
                if len(self._consents) < self.MAX_CONSENTS:
                    self._consents[key] = read
            if read is _FULL_PATH:
                return None
            serial, from_consents = read
            # Each id is of a live object: a constant, or a choice the cached dict holds.
            ids = [serial]
            others: list[Any] = []
            for choice_of in self._other_readers:  # a loop: a comprehension costs a closure
                choice = choice_of(rec)
                if choice is _FULL_PATH:
                    return None
                others.append(choice)
                ids.append(id(choice))
            dict_key = tuple(ids)
            choices = self._dicts.get(dict_key) if serial >= 0 else None
            if choices is None:
                choices = self._choices(from_consents, others)
                if serial >= 0 and len(self._dicts) < self.MAX_DICTS:
                    self._dicts[dict_key] = choices
        except Exception:  # the full path reads it again, and reports
            return None
        return rec, choices

    def _read_consents(self, kind: str, text: Any) -> Any:
        """The choices of the mappings of ``consents``, with a serial for the dict cache (-1:
        not remembered); :data:`_FULL_PATH` when :meth:`read` would give None."""
        try:
            consents = consents_as_read(text)
        except Exception:  # msgspec.DecodeError: not in the shape read
            return _FULL_PATH
        raw = {"user": {} if kind == "event" else None, "consents": consents}
        rec = read_plain(raw, self.needs)
        if rec is None:
            return _FULL_PATH
        choices = tuple(self._readers[i][1](rec) for i in self._from_consents)
        if any(choice is _FULL_PATH for choice in choices):
            return _FULL_PATH
        serial = len(self._consents) if len(self._consents) < self.MAX_CONSENTS else -1
        return serial, choices

    def _choices(self, from_consents: tuple[Any, ...], others: list[Any]) -> dict[str, Any]:
        """The choices dict, in the order of the mappings."""
        by_position = dict(zip(self._from_consents, from_consents, strict=True))
        by_position.update(zip(self._others, others, strict=True))
        choices: dict[str, Any] = {}
        for i, (field_name, _) in enumerate(self._readers):
            choice = by_position[i]
            if choice is not NOT_CARRIED:
                choices[field_name] = choice
        return choices
