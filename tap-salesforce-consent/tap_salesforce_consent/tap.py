"""tap-salesforce-consent: the consent changes people made in Salesforce, as Singer messages.

Settings and SDK wiring. What a change is and how it is read lives in ``changes.py``; the
Salesforce client, the parsing of the settings it shares with the loader (instance_url,
credentials, object, match_field, mappings) and the field-history reader are the loader's.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, NoReturn

from consent_pipelines_common.cli import (
    TextAbout,
    config_file_problem,
    fail,
    unknown_setting_problems,
)
from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers.capabilities import CapabilitiesEnum, PluginCapabilities, TapCapabilities

from tap_salesforce_consent.changes import ConsentChangesStream
from target_salesforce_consent.salesforce.client import RetryPolicy, SalesforceClient
from target_salesforce_consent.salesforce.describe import describe_object
from target_salesforce_consent.salesforce.errors import AuthenticationError, SalesforceError
from target_salesforce_consent.salesforce.history import HistoryReader
from target_salesforce_consent.settings import read_settings
from target_salesforce_consent.target import CONNECTION_PROPERTIES, MAPPING_SCHEMA

logger = logging.getLogger("tap-salesforce-consent")

#: Settings of the loader's configuration that this tap reads too; read_settings checks them.
SHARED_SETTINGS = ("instance_url", "client_id", "client_secret", "salesforce_object",
                   "match_field", "mappings")  # fmt: skip


class ConfigError(Exception):
    """The configuration cannot work; the message lists what to fix."""


@dataclass(frozen=True)
class Source:
    """What the stream reads: the object, the watched fields and who is left out."""

    client: SalesforceClient
    sobject: str
    match_field: str
    fields: tuple[str, ...]  # canonical API names of the watched (mapped) fields
    excluded_user_ids: frozenset[str]  # the pipeline's own user and ignore_user_ids
    start_date: datetime | None

    def reader(self) -> HistoryReader:
        return HistoryReader(self.client, self.sobject, self.fields, self.excluded_user_ids)


def parse_start_date(value: Any) -> tuple[datetime | None, str | None]:
    """A start_date setting as UTC; the problem when it is not a date or date-time."""
    if value is None:
        return None, None
    text = value.strip() if isinstance(value, str) else ""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None, (
            f"start_date is {value!r}: give a date or a date-time in ISO 8601, e.g. "
            '"2025-01-01" or "2025-01-01T00:00:00Z"'
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc), None


def offline_problems(config: Mapping[str, Any]) -> list[str]:
    """The settings this tap adds to the shared ones: ignore_user_ids and start_date."""
    problems: list[str] = []
    ignored = config.get("ignore_user_ids")
    if ignored is not None and not (
        isinstance(ignored, list) and all(isinstance(u, str) and u.strip() for u in ignored)
    ):
        problems.append(
            f"ignore_user_ids is {ignored!r}: list the Salesforce user Ids whose changes are "
            'not read, e.g. ["0055g00000AbCdEAAV"]'
        )
    problems += [p for p in [parse_start_date(config.get("start_date"))[1]] if p]
    return problems


def open_source(config: Mapping[str, Any], retry: RetryPolicy | None = None) -> Source:
    """Everything that can fail before the first record: settings, credentials, describe,
    the mapped fields and whether the field history can be read. Raises ConfigError."""
    settings, problems = read_settings({k: config.get(k) for k in SHARED_SETTINGS})
    problems += offline_problems(config)
    if settings is None or problems:
        raise ConfigError("\n".join(f"  - {p}" for p in problems))
    client = SalesforceClient(
        settings.instance_url,
        settings.client_id,
        settings.client_secret,
        api_version=settings.api_version,
        retry=retry,
        client_name="tap-salesforce-consent",
    )
    try:
        client.authenticate()
        obj = describe_object(client, settings.salesforce_object)
    except AuthenticationError as exc:
        raise ConfigError(f"  - Salesforce refused the credentials: {exc}") from None
    except SalesforceError as exc:
        if exc.transient:
            raise
        raise ConfigError(f"  - Salesforce call failed during the check: {exc}") from None

    match = obj.field(settings.match_field)
    if match is None:
        problems.append(
            f"match_field: {obj.name} has no field {settings.match_field!r} that the "
            "integration user can see"
        )
    fields: list[str] = []
    multi_select: list[str] = []
    for index, mapping in enumerate(settings.mappings):
        info = obj.field(mapping.field)
        if info is None:
            problems.append(
                f"mappings[{index}] ({mapping.field}): {obj.name} has no field "
                f"{mapping.field!r} that the integration user can see; check the API name "
                "(custom fields end in __c) and field-level security"
            )
        elif info.type == "multipicklist":
            multi_select.append(info.name)
        elif info.name not in fields:
            fields.append(info.name)
    if multi_select:
        logger.warning(
            "%s %s multi-select: not carried back to Didomi, since Salesforce's field history "
            "records no values for multi-select fields",
            ", ".join(multi_select),
            "is" if len(multi_select) == 1 else "are",
        )
    if not fields and not problems:
        problems.append(
            "mappings: no mapped field can be read back (multi-select fields cannot); map at "
            "least one checkbox, picklist or text field"
        )
    own = client.user_id
    ignored = frozenset(u.strip() for u in config.get("ignore_user_ids") or [])
    if own is None and not ignored:
        problems.append(
            "the token response names no user (its 'id'), so the pipeline's own writes cannot "
            "be told apart from people's changes: list the loader's Salesforce user Id in "
            "ignore_user_ids"
        )
    if problems:
        raise ConfigError("\n".join(f"  - {p}" for p in problems))
    source = Source(
        client=client,
        sobject=obj.name,
        match_field=match.name if match else settings.match_field,
        fields=tuple(fields),
        excluded_user_ids=ignored | ({own} if own else set()),
        start_date=parse_start_date(config.get("start_date"))[0],
    )
    problem = source.reader().problem()
    if problem is not None:
        raise ConfigError(f"  - {problem}")
    logger.info(
        "Reading changes of %s on %s made by anyone but %d user(s) (the pipeline's own and "
        "ignore_user_ids)",
        ", ".join(fields),
        obj.name,
        len(source.excluded_user_ids),
    )
    return source


class TapSalesforceConsent(TextAbout, Tap):
    """Consent changes people made in Salesforce (Lead or Contact field history)."""

    name = "tap-salesforce-consent"
    package_name = "tap-salesforce-consent"
    retry_policy: ClassVar[RetryPolicy | None] = None  # tests shorten the backoff
    # No BATCH: the stream emits STATE right after the RECORDs it covers.
    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    config_jsonschema = th.PropertiesList(
        *CONNECTION_PROPERTIES,
        th.Property(
            "salesforce_object",
            th.StringType,
            required=True,
            title="Salesforce Object",
            description="`Lead` or `Contact`: the object whose changes are read.",
        ),
        th.Property(
            "match_field",
            th.StringType,
            default="Email",
            title="Match Field",
            description="API name of the field that holds the organization_user_id; each "
            "change carries the record's value of it.",
        ),
        th.Property(
            "mappings",
            th.ArrayType(MAPPING_SCHEMA),
            required=True,
            title="Mappings",
            description="The loader's mappings; the tap reads the changes of their `id`s "
            "(Salesforce field names). Multi-select fields are left out.",
        ),
        th.Property(
            "ignore_user_ids",
            th.ArrayType(th.StringType),
            title="Ignore User IDs",
            description="Salesforce user Ids whose changes are not read (other integrations, "
            "or the loader's user when it is not the one this tap authenticates as).",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start Date",
            description="Read changes made at or after this date on the first run (ISO 8601, "
            "e.g. `2025-01-01` or `2025-01-01T00:00:00Z`); later runs start at the bookmark.",
        ),
    ).to_dict()

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        # The shared and own checks name what to write and exit 2; the SDK's would exit 1.
        # The known settings are the tap's and the SDK's built-in ones: what --about lists.
        schema = self.config_jsonschema
        self.append_builtin_config(schema)
        unknown = unknown_setting_problems(self._config, schema.get("properties", {}), self.name)
        if unknown:  # in discovery too (no check of values there): a misspelling is never right
            raise ConfigError("\n".join(f"  - {p}" for p in unknown))
        problems = offline_problems(self._config)
        _, shared = read_settings({k: self._config.get(k) for k in SHARED_SETTINGS})
        problems += shared
        if problems and raise_errors:
            raise ConfigError("\n".join(f"  - {p}" for p in problems))
        return problems

    @functools.cached_property
    def source(self) -> Source:
        return open_source(self.config, self.retry_policy)

    def _set_compatible_replication_methods(self) -> None:
        # The first step of a sync: the check against the org comes before any message.
        _ = self.source
        super()._set_compatible_replication_methods()

    def discover_streams(self) -> list[Stream]:
        return [ConsentChangesStream(self)]


HELP = (
    "Read the consent changes people made in Salesforce (the field history of the mapped Lead "
    "or Contact fields, the pipeline's own writes left out) and write them as Singer messages "
    "on stdout, for target-didomi. `tap-salesforce-consent --about` lists every setting with "
    "its description; see tap-salesforce-consent's README.md."
)
CONFIG_EXAMPLE = '{"instance_url": "https://acme.my.salesforce.com"}'


def cli() -> None:
    """Console entry point: a clean message and a non-zero exit for what a user must fix.

    The message is logged at error level, so that Meltano shows it at `--log-level=warning`
    too.
    """
    command = TapSalesforceConsent.cli  # sets up logging (Meltano's structured format included)
    command.help = HELP
    problem = config_file_problem(sys.argv[1:], CONFIG_EXAMPLE)
    if problem is not None:
        _fail(f"configuration error: {problem}", 2)
    try:
        command()
    except (ConfigError, ConfigValidationError) as exc:
        _fail(f"configuration error:\n{exc}", 2)
    except SalesforceError as exc:
        _fail(f"error: {exc}\nNo STATE was emitted past the last change read: the next run "
              "starts from there.", 1)


def _fail(message: str, status: int) -> NoReturn:
    fail(TapSalesforceConsent.name, message, status, logger)


if __name__ == "__main__":
    cli()
