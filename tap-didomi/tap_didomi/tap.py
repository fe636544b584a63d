"""tap-didomi: Didomi consent from batch exports or the Consents API, as Singer messages."""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import sys
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlparse

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError
from singer_sdk.helpers.capabilities import CapabilitiesEnum, PluginCapabilities, TapCapabilities

from tap_didomi.client import DidomiAPIError
from tap_didomi.exports import ExportError, ExportStore
from tap_didomi.streams import ApiUsersStream, ExportEventsStream, ExportUsersStream

DEFAULT_API_URL = "https://api.didomi.io/v1"
API_SETTINGS = ("api_key", "api_secret", "organization_id")


class ConfigError(Exception):
    """The configuration cannot work; the message says what to set."""


@dataclass(frozen=True)
class ExportSource:
    export_path: str


@dataclass(frozen=True)
class ApiSource:
    api_url: str


def resolve_source(config: dict[str, Any] | Any) -> ExportSource | ApiSource:
    """The one source the configuration names, or ConfigError saying what to set."""
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
    if export_path:
        if not isinstance(export_path, str) or not export_path.strip():
            raise ConfigError("export_path must be a folder path or a URL")
        return ExportSource(export_path.strip())
    if not api_given:
        raise ConfigError(
            "no source configured: set export_path (a folder or s3://, gs://, az:// URL holding "
            "Didomi batch exports), or api_key, api_secret and organization_id for the "
            "Consents API"
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


class TapDidomi(Tap):
    """Singer tap for Didomi consent: batch exports (local, S3, GCS, Azure) or the API."""

    name = "tap-didomi"
    package_name = "tap-didomi"
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
            "start_date",
            th.DateType,
            title="Start date",
            description=(
                "Exports: read partitions from this date (YYYY-MM-DD) on. API: emit users "
                "updated on or after it, on the first run."
            ),
        ),
    ).to_dict()

    @functools.cached_property
    def source(self) -> ExportSource | ApiSource:
        return resolve_source(self.config)

    def discover_streams(self) -> list[Stream]:
        source = self.source
        if isinstance(source, ApiSource):
            # The API has no organisation-wide event listing (GET /consents/events needs a
            # user), so events come only from exports.
            return [ApiUsersStream(self)]
        store = ExportStore(source.export_path)
        streams: list[Stream] = [ExportUsersStream(self, store)]
        if _has_events(store):
            streams.append(ExportEventsStream(self, store))
        return streams


def _has_events(store: ExportStore) -> bool:
    """Whether any partition of any export holds an ``events/`` folder (newest first)."""
    for export in store.exports():
        for partition in reversed(store.partitions(export)):
            if store.has_folder(partition, "events"):
                return True
    return False


def cli() -> None:
    """Console entry point: a clean message and a non-zero exit for what a user must fix."""
    try:
        TapDidomi.cli()
    except ConfigError as exc:
        sys.stderr.write(f"tap-didomi: configuration error: {exc}\n")
        sys.exit(2)
    except ConfigValidationError as exc:
        details = "; ".join(str(e) for e in exc.errors) or str(exc)
        sys.stderr.write(f"tap-didomi: configuration error: {details}\n")
        sys.exit(2)
    except (ExportError, DidomiAPIError, FatalAPIError, RetriableAPIError) as exc:
        sys.stderr.write(
            f"tap-didomi: error: {exc}\nNo STATE was emitted past the last partition (exports) "
            "or listing (API) read completely: the next run starts from there.\n"
        )
        sys.exit(1)


if __name__ == "__main__":
    cli()
