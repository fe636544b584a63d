"""tap-didomi: Didomi consent from batch exports or the Consents API, as Singer messages."""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import logging
import numbers
import os
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, NoReturn
from urllib.parse import urlparse

from consent_pipelines_common.cli import (
    ProgressLog,
    TextAbout,
    config_file_problem,
    fail,
    nearest_name,
    progress_interval,
)
from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError
from singer_sdk.helpers.capabilities import CapabilitiesEnum, PluginCapabilities, TapCapabilities

from tap_didomi.client import DidomiAPIError
from tap_didomi.export_state import DEFAULT_LOOKBACK_DAYS, StateError, check_state
from tap_didomi.exports import ExportDataError, ExportError, ExportPathError, ExportStore
from tap_didomi.receiver.spool import SpoolError, open_reader
from tap_didomi.streams import (
    ApiUsersStream,
    ExportEventsStream,
    ExportUsersStream,
    WebhooksStream,
)

DEFAULT_API_URL = "https://api.didomi.io/v1"
API_SETTINGS = ("api_key", "api_secret", "organization_id")
# Settings that only the Consents API reads: set with export_path, they do nothing.
API_ONLY_SETTINGS = ("regulations", "include_full_tree", "api_url")
# And the one that only exports read.
EXPORT_ONLY_SETTINGS = ("export_lookback_days",)

logger = logging.getLogger("tap-didomi")


class ConfigError(Exception):
    """The configuration cannot work; the message says what to set."""


@dataclass(frozen=True)
class ExportSource:
    export_path: str


@dataclass(frozen=True)
class ApiSource:
    api_url: str


# What to write for each setting whose JSON type is wrong (the SDK's jsonschema message,
# "'yes' is not of type 'boolean', 'null'", names neither the fix nor the CLI's exit code 2).
SETTING_TYPES: dict[str, tuple[type, str]] = {
    "export_path": (str, 'a folder path or URL in quotes, e.g. "s3://bucket/prefix"'),
    "api_key": (str, "a string: the API key, in quotes"),
    "api_secret": (str, "a string: the API secret, in quotes"),
    "organization_id": (str, 'a string in quotes, e.g. "acme-corp"'),
    "api_url": (str, f'a URL in quotes, e.g. "{DEFAULT_API_URL}"'),
    "include_full_tree": (bool, "true or false, without quotes"),
    "regulations": (list, 'a list of regulation ids, e.g. ["gdpr"] or ["gdpr", "ccpa"]'),
    "start_date": (str, 'a date in quotes, "YYYY-MM-DD", e.g. "2025-03-19"'),
    "export_lookback_days": (int, f"a whole number of days, e.g. {DEFAULT_LOOKBACK_DAYS}"),
}
SECRET_SETTINGS = ("api_secret",)


def check_setting_types(config: dict[str, Any] | Any) -> None:
    """ConfigError naming the first setting whose value has the wrong JSON type."""
    for name, (kind, what) in SETTING_TYPES.items():
        value = config.get(name)
        if value is None:
            continue
        # bool is an int in Python, and JSON true is no string: check the exact kind.
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            continue
        # default=str: the SDK reads JSON numbers with a fraction as Decimal.
        shown = "" if name in SECRET_SETTINGS else " " + json.dumps(value, default=str)
        raise ConfigError(f"{name} must be {what} (it is {_json_type(value)}{shown})")


def check_known_settings(config: dict[str, Any] | Any, known: set[str]) -> None:
    """ConfigError naming the first setting the tap does not know, and the nearest known name:
    a misspelt setting would otherwise be silently ignored."""
    for name in sorted(str(key) for key in config):
        if name in known:
            continue
        nearest = nearest_name(name, known)
        hint = (f"did you mean {nearest}?" if nearest
                else "tap-didomi --about lists the settings.")
        raise ConfigError(
            f"unknown setting {name}: {hint} A setting the tap does not know would be "
            "ignored; rename or remove it"
        )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Number):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def resolve_source(config: dict[str, Any] | Any) -> ExportSource | ApiSource:
    """The one source the configuration names, or ConfigError saying what to set."""
    check_setting_types(config)
    export_path = config.get("export_path")
    api_given = [name for name in API_SETTINGS if config.get(name)]
    if export_path and api_given:
        raise ConfigError(
            "both export_path and the Consents API settings (" + ", ".join(api_given) + ") are "
            "set: a configuration reads one source. Unset export_path to read the API, or "
            "unset " + ", ".join(api_given) + " to read the exports"
        )
    start_date = config.get("start_date")
    if start_date:
        try:
            dt.date.fromisoformat(str(start_date))
        except ValueError:
            raise ConfigError(
                f"start_date {start_date!r} is not a date: write it as YYYY-MM-DD"
            ) from None
    lookback_days = config.get("export_lookback_days")
    if lookback_days is not None and lookback_days < 1:
        raise ConfigError(
            f"export_lookback_days is {lookback_days}: write a number of days of 1 or more "
            f"(default {DEFAULT_LOOKBACK_DAYS})"
        )
    if export_path:
        if not isinstance(export_path, str) or not export_path.strip():
            raise ConfigError("export_path must be a folder path or a URL")
        return ExportSource(export_path.strip())
    if not api_given:
        raise ConfigError(
            "no source configured: set export_path (a folder or s3://, gs://, az:// URL holding "
            "Didomi batch exports), or api_key, api_secret and organization_id for the "
            "Consents API, or webhook_spool (the spool of didomi-webhook-receiver)"
        )
    missing = [name for name in API_SETTINGS if not config.get(name)]
    if missing:
        raise ConfigError(
            "the Consents API needs api_key, api_secret and organization_id: set "
            + ", ".join(missing)
        )
    api_url = str(config.get("api_url") or DEFAULT_API_URL).rstrip("/")
    url = urlparse(api_url)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ConfigError(f"api_url {api_url!r} is not an http(s) URL; Didomi's is "
                          f"{DEFAULT_API_URL}")
    if url.scheme == "http" and not _is_loopback(url.hostname):
        raise ConfigError(f"api_url {api_url!r} must use https (plain http only for loopback)")
    regulations = config.get("regulations")
    if regulations is not None and (
        not isinstance(regulations, list) or not regulations
        or not all(isinstance(r, str) and r.strip() for r in regulations)
    ):
        raise ConfigError('regulations must be a non-empty list of regulation ids, e.g. ["gdpr"]')
    return ApiSource(api_url)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TapDidomi(TextAbout, Tap):
    """Singer tap for Didomi consent: batch exports (local, S3, GCS, Azure) or the API."""

    name = "tap-didomi"
    package_name = "tap-didomi"
    about_shows_required = False  # every setting is optional, or one of a choice of sources
    # No BATCH: the streams emit STATE right after a partition's last RECORD, which a BATCH
    # manifest (written later) would overtake.
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
        th.Property(
            "export_path",
            th.StringType,
            title="Export path",
            description=(
                "Didomi batch exports: a local folder or a URL (s3://bucket/prefix, "
                "gs://bucket/prefix, az://container/prefix) at or above the export-id=… "
                "folders. Reads date=YYYY-MM-DD/users/*.json.gz (and .json), and events/ when "
                "present. Set this, or the API settings, not both."
            ),
        ),
        th.Property(
            "api_key",
            th.StringType,
            title="API key",
            description="Consents API: key of a private API key from the Didomi Console.",
        ),
        th.Property(
            "api_secret",
            th.StringType,
            secret=True,
            title="API secret",
            description="Consents API: secret of that API key.",
        ),
        th.Property(
            "organization_id",
            th.StringType,
            title="Organization ID",
            description="Consents API: the Didomi organization whose users are read.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default=DEFAULT_API_URL,
            title="API URL",
            description="Consents API base URL (https; http only for loopback).",
        ),
        th.Property(
            "include_full_tree",
            th.BooleanType,
            default=False,
            title="Include full tree",
            description=(
                "Consents API: ask for the v1 preference trees ($include_full_tree=true). "
                "Didomi rate-limits those calls to 100 per 15 s per organization; the tap "
                "waits as Retry-After says."
            ),
        ),
        th.Property(
            "regulations",
            th.ArrayType(th.StringType),
            default=["gdpr"],
            title="Regulations",
            description=(
                "Consents API: regulations to list users for, one listing each (passed as "
                "`regulation`). Each user record carries the regulation it was listed under."
            ),
        ),
        th.Property(
            "webhook_spool",
            th.StringType,
            title="Webhook spool",
            description=(
                "Didomi webhooks stored by didomi-webhook-receiver: the folder or bucket URL "
                "given to its --spool. Emits stream `webhooks`. Set this, or export_path, or "
                "the API settings."
            ),
        ),
        th.Property(
            "follow",
            th.BooleanType,
            default=False,
            title="Follow",
            description=(
                "webhook_spool: keep reading new webhooks every poll_interval_seconds, "
                "emitting STATE after each read, instead of ending when the spool is read."
            ),
        ),
        th.Property(
            "poll_interval_seconds",
            th.NumberType,
            default=1,
            title="Poll interval (seconds)",
            description="webhook_spool with follow: seconds between two reads of the spool.",
        ),
        th.Property(
            "start_date",
            th.DateType,
            title="Start date",
            description=(
                "Exports: read partitions from this date (YYYY-MM-DD) on. API: emit users "
                "updated on or after it, on the first run."
            ),
        ),
        th.Property(
            "export_lookback_days",
            th.IntegerType,
            default=DEFAULT_LOOKBACK_DAYS,
            title="Export look-back days",
            description=(
                "Exports: how many days of partitions, up to the newest one read, the state "
                "remembers file by file, so that a file landing late in one of them (or a "
                "back-filled day) is read once. Files landing in older partitions are named "
                "in a warning, not read."
            ),
        ),
    ).to_dict()

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        # Before the SDK's check: its own messages end in "Config validation failed" and exit 1,
        # where a wrong setting is a configuration error (exit 2) saying what to write.
        # The known settings are the tap's and the SDK's built-in ones (stream maps,
        # flattening): what --about lists.
        schema = self.config_jsonschema
        self.append_builtin_config(schema)
        check_known_settings(self._config, set(schema.get("properties", {})))
        check_setting_types(self._config)
        # Only the settings the user wrote: validation fills in the schema's defaults.
        self._settings_given = {k for k, v in self._config.items() if v is not None}
        try:
            return super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            raise ConfigError("; ".join(exc.errors) or str(exc)) from exc

    @functools.cached_property
    def source(self) -> ExportSource | ApiSource | WebhookSource:
        if self.config.get("webhook_spool") not in (None, ""):
            return resolve_webhook_source(self.config)
        source = resolve_source(self.config)
        given = getattr(self, "_settings_given", set(self.config))
        # A value equal to the default is no choice of the user's: Meltano passes a plugin
        # definition's defaults as if they had been set.
        defaults = {name: schema.get("default")
                    for name, schema in self.config_jsonschema["properties"].items()}
        ignored = [name for name in API_ONLY_SETTINGS
                   if name in given and self.config.get(name) != defaults.get(name)]
        if isinstance(source, ExportSource) and ignored:
            logger.warning("%s %s to the Consents API only: ignored when reading exports "
                           "(export_path)", " and ".join(ignored),
                           "applies" if len(ignored) == 1 else "apply")
        # Not a default a Meltano definition passes along: a value the user chose.
        ignored = [name for name in EXPORT_ONLY_SETTINGS if name in given
                   and self.config.get(name) != DEFAULT_LOOKBACK_DAYS]
        if isinstance(source, ApiSource) and ignored:
            logger.warning("%s applies to exports only: ignored when reading the Consents API",
                           " and ".join(ignored))
        return source

    @functools.cached_property
    def progress(self) -> ProgressLog:
        return ProgressLog(logger, progress_interval(os.environ, logger))

    def load_state(self, state: dict[str, Any]) -> None:
        # A hand-edited export bookmark stops the tap here, before any output, with the entry
        # named and what to write instead (not a traceback from the middle of a stream).
        check_state(state)
        super().load_state(state)

    def discover_streams(self) -> list[Stream]:
        source = self.source
        if isinstance(source, WebhookSource):
            try:
                return [WebhooksStream(self, open_reader(source.webhook_spool))]
            except SpoolError as exc:
                raise ConfigError(str(exc)) from None
        if isinstance(source, ApiSource):
            # The API has no organisation-wide event listing (GET /consents/events needs a
            # user), so events come only from exports.
            return [ApiUsersStream(self)]
        store = ExportStore(source.export_path)
        streams: list[Stream] = [ExportUsersStream(self, store)]
        if _has_events(store):
            streams.append(ExportEventsStream(self, store))
        return streams


@dataclass(frozen=True)
class WebhookSource:
    webhook_spool: str


def resolve_webhook_source(config: dict[str, Any] | Any) -> WebhookSource:
    """The webhook spool source, or ConfigError: it excludes the other sources."""
    spool = config.get("webhook_spool")
    if not isinstance(spool, str) or not spool.strip():
        raise ConfigError('webhook_spool must be a folder path or a bucket URL in quotes, e.g. '
                          '"./didomi-webhooks" or "s3://bucket/didomi-webhooks"')
    others = [name for name in ("export_path", *API_SETTINGS) if config.get(name)]
    if others:
        raise ConfigError(
            "webhook_spool and " + ", ".join(others) + " are both set: a configuration reads "
            "one source. Unset " + ", ".join(others) + " to read the webhook spool (a Meltano "
            "plugin inheriting from tap-didomi sets them to an empty string)")
    follow = config.get("follow")
    if follow is not None and not isinstance(follow, bool):
        raise ConfigError("follow must be true or false, without quotes")
    interval = config.get("poll_interval_seconds")
    if interval is not None and (isinstance(interval, bool)
                                 or not isinstance(interval, (int, float, Decimal))
                                 or interval <= 0):
        raise ConfigError("poll_interval_seconds must be a number of seconds above 0, e.g. 1")
    return WebhookSource(spool.strip())


def _has_events(store: ExportStore) -> bool:
    """Whether any partition of any export holds an ``events/`` folder (newest first)."""
    for export in store.exports():
        for partition in reversed(store.partitions(export)):
            if store.has_folder(partition, "events"):
                return True
    return False


HELP = (
    "Read Didomi consent (users and events) from batch exports in a folder, S3, GCS or Azure, or "
    "from the Consents API, and write it as Singer messages on stdout. `tap-didomi --about` "
    "lists every setting with its description; see tap-didomi's README.md."
)
CONFIG_EXAMPLE = '{"export_path": "s3://bucket/prefix"}'
RESUME_NOTE = ("No STATE was emitted past the last partition (exports) or listing (API) read "
               "completely: the next run starts from there.")


def cli() -> None:
    """Console entry point: a clean message and a non-zero exit for what a user must fix.

    The message is one line logged at error level, so that Meltano shows it at
    `--log-level=warning` too.
    """
    command = TapDidomi.cli  # sets up logging (Meltano's structured format included)
    command.help = HELP
    problem = config_file_problem(sys.argv[1:], CONFIG_EXAMPLE)
    if problem is not None:
        _fail(f"configuration error: {problem}", 2)
    try:
        command()
    except (ConfigError, ExportPathError) as exc:
        # ExportPathError: nothing exists at export_path, so nothing was read or is to resume.
        _fail(f"configuration error: {exc}", 2)
    except StateError as exc:
        _fail(f"state error: {exc}", 2)
    except ConfigValidationError as exc:
        details = "; ".join(str(e) for e in exc.errors) or str(exc)
        _fail(f"configuration error: {details}", 2)
    except (ExportDataError, DidomiAPIError, FatalAPIError, RetriableAPIError) as exc:
        _fail(f"error: {exc}. {RESUME_NOTE}", 1)
    except ExportError as exc:
        # Listing and storage problems: the note about resuming would only mislead when the
        # tap could not even list the export.
        _fail(f"error: {exc}", 1)


def _fail(message: str, status: int) -> NoReturn:
    fail("tap-didomi", message, status, logger)


if __name__ == "__main__":
    cli()
