"""Typed settings and the configuration check that runs before any record is read.

Two passes, both collecting every problem rather than stopping at the first, so that one
run tells the user everything to fix:

1. :func:`read_settings` checks what can be checked offline (URL, mapping paths, options);
2. :func:`check_against_object` checks the mappings against the object's describe (field
   exists, is updateable / createable, can hold the value, required fields are covered).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from consent_pipelines_common.cli import nearest_name

from target_salesforce_consent.mapping import (
    CLEAR,
    FieldMapping,
    FieldType,
    MappingError,
    compatibility_problem,
)
from target_salesforce_consent.salesforce.auth import instance_url_problem
from target_salesforce_consent.salesforce.describe import FieldInfo, ObjectInfo

SALESFORCE_OBJECTS = ("Lead", "Contact")
MULTIPLE_MATCH_POLICIES = ("update_all", "skip")
TEXT_TYPES = {"string", "textarea", "email", "phone", "url", "picklist", "combobox", "id"}
BOOLEAN_SETTINGS = ("upsert_mode", "dry_run", "fail_on_record_errors", "validate_records")
TEXT_SETTINGS = (
    "instance_url",
    "salesforce_object",
    "match_field",
    "on_multiple_matches",
    "consent_timestamp_field",
    "report_path",
    "api_version",
    "failed_records_path",
)
#: Top-level settings whose type and value read_settings checks itself, naming what to write;
#: the schema check leaves them to it, so each wrong setting is named once.
CHECKED_SETTINGS = (
    *BOOLEAN_SETTINGS,
    *TEXT_SETTINGS,
    "mappings",
    "insert_defaults",
    "regulations",
    "max_record_retries",
    "respect_salesforce_changes",
    "max_latency_seconds",
)


#: Settings of singer-sdk targets that Meltano or a shared configuration may pass but that mean
#: nothing to this target (no SQL tables, no schema flattening, no BATCH files, no ACTIVATE_VERSION
#: messages; upsert_mode alone decides whether records are created): accepted, with a warning.
INAPPLICABLE_SDK_SETTINGS = (
    "load_method",
    "hard_delete",
    "default_target_schema",
    "flattening_enabled",
    "flattening_max_depth",
    "batch_config",
    "process_activate_version_messages",
)


def unknown_setting_problems(config: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """A problem per setting the target does not know, naming the nearest known one.

    An unknown setting is never ignored: a misspelt ``consent_timestamp_field`` would silently
    switch the newest-consent guard off.
    """
    names = sorted({*known, *INAPPLICABLE_SDK_SETTINGS})
    problems = []
    for name in config:
        if name in names:
            continue
        nearest = nearest_name(str(name), names)
        hint = (
            f"did you mean {nearest}?"
            if nearest
            else "remove it (the README's settings table lists every setting)"
        )
        problems.append(f"{name} is not a setting of target-salesforce-consent: {hint}")
    return problems


class ConfigurationError(Exception):
    """The configuration cannot work; the message lists every problem and what to do."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join("  - " + p.replace("\n", "\n      ") for p in problems)
        super().__init__(
            f"The configuration has {len(problems)} problem(s); no record was read:\n{listing}"
        )


@dataclass(frozen=True)
class Settings:
    """The loader's settings, parsed and checked offline."""

    instance_url: str
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    salesforce_object: str
    mappings: tuple[FieldMapping, ...]
    upsert_mode: bool = False
    match_field: str = "Email"
    insert_defaults: Mapping[str, Any] = field(default_factory=dict)
    on_multiple_matches: str = "update_all"
    regulations: frozenset[str] = frozenset({"gdpr"})
    consent_timestamp_field: str | None = None
    dry_run: bool = False
    report_path: str | None = None
    api_version: str = "62.0"
    fail_on_record_errors: bool = False
    failed_records_path: str | None = None  # None: the default folder (failed_records.py)
    max_record_retries: int = 5
    respect_salesforce_changes: bool | None = None  # None: when the field history can be read
    max_latency_seconds: float | None = None


def max_latency_of(config: Mapping[str, Any], problems: list[str]) -> float | None:
    """``max_latency_seconds``: None (off) or a number of seconds above 0."""
    value = config.get("max_latency_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or value <= 0:
        problems.append(_wrong_type("max_latency_seconds", value,
                                    "a number of seconds above 0, e.g. 2 (or unset: off)"))
        return None
    return float(value)


def _json_kind(value: Any) -> str:
    """What a JSON value is, in the words of a configuration file."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _wrong_type(name: str, value: Any, expected: str) -> str:
    return f"{name} is {value!r} ({_json_kind(value)}): it must be {expected}"


def _read_typed(
    config: Mapping[str, Any], problems: list[str]
) -> tuple[dict[str, bool], dict[str, str | None], set[str]]:
    """The boolean and text settings, and the names of those of the wrong type.

    A value of the wrong type is named as such and read as unset, so nothing else is derived
    from it (``"false"`` is not read as true). ``null`` counts as unset.
    """
    misread: set[str] = set()
    booleans: dict[str, bool] = {}
    for name in BOOLEAN_SETTINGS:
        value = config.get(name)
        if value is not None and not isinstance(value, bool):
            problems.append(
                _wrong_type(name, value, "true or false (a JSON boolean, without quotes)")
            )
            misread.add(name)
            value = None
        booleans[name] = bool(value)
    texts: dict[str, str | None] = {}
    for name in TEXT_SETTINGS:
        value = config.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(_wrong_type(name, value, "text (a JSON string, in quotes)"))
            misread.add(name)
            value = None
        texts[name] = value
    return booleans, texts, misread


def read_settings(config: Mapping[str, Any]) -> tuple[Settings | None, list[str]]:
    """Parse the config; returns the settings and every problem found.

    The settings are None when the org cannot even be reached (URL, credentials or object
    unusable); otherwise they hold what is usable, so the org check can run and add its own
    problems to the list. A setting of the wrong type is named as such and read as unset: no
    other problem is derived from a misread value.
    """
    problems: list[str] = []
    booleans, texts, misread = _read_typed(config, problems)

    instance_url = (texts["instance_url"] or "").strip().rstrip("/")
    url_unusable = True
    if "instance_url" in misread:
        pass  # named as a wrong type
    elif not instance_url:
        problems.append(
            "instance_url is missing: set it to your org's My Domain URL, "
            "e.g. https://acme.my.salesforce.com"
        )
    else:
        url_problem = instance_url_problem(instance_url)
        if url_problem:
            problems.append(url_problem)
        url_unusable = url_problem is not None

    secrets: dict[str, str] = {}
    for secret in ("client_id", "client_secret"):
        value = config.get(secret)
        if value is not None and not isinstance(value, str):
            problems.append(f"{secret} must be a non-empty string")  # never echo a secret
        elif not (value or "").strip():
            problems.append(
                f"{secret} is missing: copy the consumer "
                f"{'key' if secret == 'client_id' else 'secret'} of the connected app or "
                "external client app that has the client credentials flow enabled"
            )
        else:
            secrets[secret] = str(value).strip()

    sobject = texts["salesforce_object"]
    if sobject is None and "salesforce_object" not in misread:
        problems.append(
            "salesforce_object is missing: set 'Lead' or 'Contact' (use a second configuration "
            "to sync the other object)"
        )
    elif sobject not in SALESFORCE_OBJECTS and "salesforce_object" not in misread:
        problems.append(
            f"salesforce_object is {sobject!r}: it must be 'Lead' or 'Contact' "
            "(use a second configuration to sync the other object)"
        )

    mappings: list[FieldMapping] = []
    raw_mappings = config.get("mappings")
    if not isinstance(raw_mappings, list) or not raw_mappings:
        problems.append(
            "mappings is missing or empty: add at least one mapping such as "
            '{"id": "HasOptedOutOfEmail", "value": "purposes.newsletter.enabled", "invert": true}'
        )
    else:
        for index, item in enumerate(raw_mappings):
            try:
                mapping = FieldMapping.from_config(item, index)
            except MappingError as exc:
                problems.append(str(exc))
                continue
            if CLEAR in mapping.value_map.values():
                # Bulk API 2.0 reads "#N/A" as "clear this field" (see mapping.cell_problem).
                problems.append(
                    f'{mapping.label} ({mapping.field}): "value_map" writes "{CLEAR}", which '
                    'Bulk API 2.0 reads as "clear this field"; map to another text'
                )
                continue
            mappings.append(mapping)

    policy = texts["on_multiple_matches"] or "update_all"
    if policy not in MULTIPLE_MATCH_POLICIES:
        problems.append(f"on_multiple_matches is {policy!r}: it must be 'update_all' or 'skip'")
        policy = "update_all"

    regulations = config.get("regulations")
    if regulations is None:
        regulations = ["gdpr"]
    if (
        not isinstance(regulations, list)
        or not regulations
        or not all(isinstance(r, str) and r.strip() for r in regulations)
    ):
        problems.append(
            f"regulations is {regulations!r}: list the Didomi regulation ids to apply, "
            'e.g. ["gdpr"] or ["gdpr", "cpra"]'
        )
        regulations = ["gdpr"]

    insert_defaults = config.get("insert_defaults")
    if insert_defaults is None:
        insert_defaults = {}
    if not isinstance(insert_defaults, dict):
        problems.append(
            f"insert_defaults is {_json_kind(insert_defaults)}: it must be an object of field "
            'to value, e.g. {"Company": "Unknown"}'
        )
        insert_defaults = {}

    api_version = texts["api_version"] or "62.0"
    if not _is_api_version(api_version):
        problems.append(
            f"api_version is {api_version!r}: use a Salesforce API version such as '62.0' "
            "(47.0 or newer)"
        )

    max_record_retries = config.get("max_record_retries")
    if max_record_retries is None:
        max_record_retries = 5
    if (
        isinstance(max_record_retries, bool)
        or not isinstance(max_record_retries, int)
        or max_record_retries < 0
    ):
        problems.append(
            _wrong_type("max_record_retries", max_record_retries, "a whole number, 0 or more")
            + " (0: failed records are neither kept nor retried)"
        )
        max_record_retries = 5

    match_field = (texts["match_field"] or "").strip() or "Email"
    timestamp_field = (texts["consent_timestamp_field"] or "").strip() or None
    max_latency = max_latency_of(config, problems)
    report_path = texts["report_path"] or None
    respect = config.get("respect_salesforce_changes")
    if respect is not None and not isinstance(respect, bool):
        problems.append(
            _wrong_type(
                "respect_salesforce_changes",
                respect,
                "true, false (a JSON boolean, without quotes), or left out to apply it when "
                "the field history can be read",
            )
        )
        respect = None

    # Without a URL, credentials and object nothing can be checked against the org; otherwise
    # go on with the usable mappings so the org check can add its problems to these.
    if (
        url_unusable
        or sobject not in SALESFORCE_OBJECTS
        or len(secrets) < 2
        or not _is_api_version(api_version)
    ):
        return None, problems
    return (
        Settings(
            instance_url=instance_url,
            client_id=secrets["client_id"],
            client_secret=secrets["client_secret"],
            salesforce_object=str(sobject),
            mappings=tuple(mappings),
            upsert_mode=booleans["upsert_mode"],
            match_field=match_field,
            insert_defaults=dict(insert_defaults),
            on_multiple_matches=policy,
            regulations=frozenset(r.strip().lower() for r in regulations),
            consent_timestamp_field=timestamp_field,
            dry_run=booleans["dry_run"],
            report_path=report_path,
            api_version=api_version,
            fail_on_record_errors=booleans["fail_on_record_errors"],
            failed_records_path=(texts["failed_records_path"] or "").strip() or None,
            max_record_retries=max_record_retries,
            respect_salesforce_changes=respect,
            max_latency_seconds=max_latency,
        ),
        problems,
    )


def _is_api_version(text: str) -> bool:
    major, _, minor = text.partition(".")
    return major.isdigit() and minor.isdigit() and int(major) >= 47


def field_type(info: FieldInfo) -> FieldType:
    return FieldType(
        name=info.name,
        type=info.type,
        length=info.length,
        picklist_values=tuple(info.picklist_values),
        restricted_picklist=info.restricted_picklist,
    )


@dataclass(frozen=True)
class ResolvedSettings:
    """Settings whose field names are the object's canonical API names, with their types."""

    settings: Settings
    mappings: tuple[FieldMapping, ...]
    field_types: Mapping[str, FieldType]  # canonical field name -> type, every field we write
    match_field: str
    consent_timestamp_field: str | None
    insert_defaults: Mapping[str, str]  # canonical field name -> CSV cell
    select_fields: tuple[str, ...]  # what the matching query reads


def check_against_object(
    settings: Settings, obj: ObjectInfo
) -> tuple[ResolvedSettings | None, list[str]]:
    """Check the settings against the object's describe; returns every problem found."""
    problems: list[str] = []
    name = obj.name
    creating = settings.upsert_mode
    field_types: dict[str, FieldType] = {}

    def need(field_name: str, what: str, *, update: bool = True) -> FieldInfo | None:
        info = obj.field(field_name)
        if info is None:
            problems.append(
                f"{what}: {name} has no field {field_name!r} that the integration user can see. "
                "Check the API name (custom fields end in __c) and the field-level security of "
                "the connected app's Run As user"
            )
            return None
        if update and not info.updateable:
            problems.append(
                f"{what}: {name}.{info.name} is not updateable by the integration user; give "
                "the Run As user edit access to it (field-level security) or map another field"
            )
        if creating and not info.createable:
            problems.append(
                f"{what}: {name}.{info.name} cannot be set on create, which upsert_mode needs; "
                "give the Run As user create access to it or turn upsert_mode off"
            )
        return info

    match_info = need(settings.match_field, "match_field", update=False)
    match_name = match_info.name if match_info else settings.match_field
    if match_info is not None and match_info.type not in TEXT_TYPES:
        problems.append(
            f"match_field: {name}.{match_info.name} is a {match_info.type} field; "
            "organization_user_id is text, so match on a text, email or phone field"
        )

    resolved: list[FieldMapping] = []
    seen: dict[str, int] = {}
    for index, mapping in enumerate(settings.mappings):
        info = need(mapping.field, f"mappings[{index}] ({mapping.field})")
        if info is None:
            continue
        if info.name.casefold() == match_name.casefold():
            problems.append(
                f"mappings[{index}]: {info.name} is the match_field; the target never "
                "rewrites the field it matches on"
            )
            continue
        if info.name in seen:
            problems.append(
                f"mappings[{index}]: {info.name} is already mapped by mappings[{seen[info.name]}]; "
                "a field takes one mapping"
            )
            continue
        seen[info.name] = index
        ftype = field_type(info)
        problem = compatibility_problem(mapping, ftype, name)
        if problem:
            problems.append(problem)
            continue
        field_types[info.name] = ftype
        resolved.append(_with_field(mapping, info.name))

    timestamp_name: str | None = None
    if settings.consent_timestamp_field:
        info = need(settings.consent_timestamp_field, "consent_timestamp_field")
        if info is not None:
            if info.type != "datetime":
                problems.append(
                    f"consent_timestamp_field: {name}.{info.name} is a {info.type} field; it "
                    "must be a Date/Time field so the newest consent can win"
                )
            elif info.name in field_types:
                problems.append(
                    f"consent_timestamp_field: {info.name} is also the target of a mapping; "
                    "the target sets it itself"
                )
            else:
                timestamp_name = info.name
                field_types[info.name] = field_type(info)

    defaults: dict[str, str] = {}
    for key, value in settings.insert_defaults.items():
        info = obj.field(key)
        if info is None:
            problems.append(
                f"insert_defaults: {name} has no field {key!r} that the integration user can see"
            )
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            problems.append(f"insert_defaults: {info.name} is empty; give it a value, or remove it")
            continue
        if not info.createable:
            problems.append(
                f"insert_defaults: {name}.{info.name} cannot be set on create by the "
                "integration user"
            )
            continue
        defaults[info.name] = _default_cell(value)
        field_types.setdefault(info.name, field_type(info))

    if creating:
        covered = {f.casefold() for f in defaults} | {match_name.casefold()}
        missing = [f.name for f in obj.required_on_insert() if f.name.casefold() not in covered]
        if missing:
            problems.append(
                f"upsert_mode creates {name} records, which require {', '.join(missing)}: add "
                f"them to insert_defaults, e.g. "
                + "{"
                + ", ".join(f'"{m}": "..."' for m in missing)
                + "}"
            )

    if problems:
        return None, problems

    select = ["Id", match_name, *[m.field for m in resolved]]
    if timestamp_name:
        select.append(timestamp_name)
    if name == "Lead":
        select.append("IsConverted")
    return (
        ResolvedSettings(
            settings=settings,
            mappings=tuple(resolved),
            field_types=field_types,
            match_field=match_name,
            consent_timestamp_field=timestamp_name,
            insert_defaults=defaults,
            select_fields=tuple(dict.fromkeys(select)),
        ),
        [],
    )


def _with_field(mapping: FieldMapping, canonical: str) -> FieldMapping:
    from dataclasses import replace

    return replace(mapping, field=canonical)


def _default_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
