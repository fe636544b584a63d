"""target-didomi's settings, checked before any record is read.

The ``mappings`` are the Salesforce target's, parsed by it
(:meth:`target_salesforce_consent.mapping.FieldMapping.from_config`), so one list serves both
directions. Every problem is collected, so one run names all there is to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from tap_didomi.tap import DEFAULT_API_URL, _is_loopback

from target_didomi.reverse import ReverseMapping, carried_back_problem
from target_salesforce_consent.mapping import FieldMapping, MappingError
from target_salesforce_consent.settings import ConfigurationError

__all__ = ["ConfigurationError", "Settings", "read_settings"]

TEXT_SETTINGS = ("api_key", "api_secret", "organization_id", "api_url", "report_path")
BOOLEAN_SETTINGS = ("dry_run",)


@dataclass(frozen=True)
class Settings:
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    organization_id: str
    api_url: str
    reverse: Mapping[str, ReverseMapping]  # Salesforce field (casefolded) -> mapping
    not_carried: Mapping[str, str]  # Salesforce field (casefolded) -> why not
    dry_run: bool = False
    report_path: str | None = None


def read_settings(config: Mapping[str, Any]) -> Settings:
    """The settings, or :class:`ConfigurationError` listing every problem and what to do."""
    problems: list[str] = []
    texts: dict[str, str] = {}
    for name in TEXT_SETTINGS:
        value = config.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            shown = "" if name == "api_secret" else f" {value!r}"  # never echo a secret
            problems.append(f"{name} must be text in quotes (it is{shown} "
                            f"{type(value).__name__})")
            continue
        texts[name] = value.strip()
    for name, what in (("api_key", "the key of a private API key from the Didomi Console"),
                       ("api_secret", "the secret of that API key"),
                       ("organization_id", "the Didomi organization to write events to")):
        if (name not in texts and config.get(name) is None) or texts.get(name) == "":
            problems.append(f"{name} is missing: set it to {what}")
    api_url = (texts.get("api_url") or DEFAULT_API_URL).rstrip("/")
    url = urlparse(api_url)
    if url.scheme not in ("https", "http") or not url.hostname:
        problems.append(f"api_url {api_url!r} is not an http(s) URL; Didomi's is "
                        f"{DEFAULT_API_URL}")
    elif url.scheme == "http" and not _is_loopback(url.hostname):
        problems.append(f"api_url {api_url!r} must use https (plain http only for loopback)")
    dry_run = config.get("dry_run")
    if dry_run is not None and not isinstance(dry_run, bool):
        problems.append(f"dry_run is {dry_run!r}: it must be true or false (a JSON boolean, "
                        "without quotes)")

    reverse: dict[str, ReverseMapping] = {}
    not_carried: dict[str, str] = {}
    raw_mappings = config.get("mappings")
    if not isinstance(raw_mappings, list) or not raw_mappings:
        problems.append(
            "mappings is missing or empty: use the same list as target-salesforce-consent, "
            'e.g. [{"id": "HasOptedOutOfEmail", "value": "purposes.newsletter.enabled", '
            '"invert": true}]'
        )
        raw_mappings = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw_mappings):
        try:
            mapping = FieldMapping.from_config(item, index)
        except MappingError as exc:
            problems.append(str(exc))
            continue
        key = mapping.field.casefold()
        if key in seen:
            problems.append(f"{mapping.label}: {mapping.field} is already mapped by "
                            f"mappings[{seen[key]}]; a field takes one mapping")
            continue
        seen[key] = index
        why_not = carried_back_problem(mapping.source)
        if why_not is not None:
            not_carried[key] = f"{mapping.label} ({mapping.field}): {why_not}"
        else:
            reverse[key] = ReverseMapping.of(mapping)
    if raw_mappings and not reverse and not problems:
        problems.append(
            "no mapping can be carried back to Didomi: map a Salesforce field to "
            "purposes.<id>.enabled, purposes.<id>.enabled_li or channels.<id>.enabled"
        )
    if problems:
        raise ConfigurationError(problems)
    return Settings(
        api_key=texts["api_key"],
        api_secret=texts["api_secret"],
        organization_id=texts["organization_id"],
        api_url=api_url,
        reverse=reverse,
        not_carried=not_carried,
        dry_run=bool(dry_run),
        report_path=texts.get("report_path") or None,
    )
