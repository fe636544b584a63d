"""The tap's streams: ``users`` and ``events`` from batch exports, ``users`` from the API.

Records are Didomi's own objects, passed through unchanged (nested ``consents`` stay objects;
the SDK's type conformance is off so that nothing is dropped or rewritten).

Bookmarks are written by the streams themselves, never from a record's position in the
output, so that a STATE message never covers data that was not completely read:

* exports: per ``export-id``, the newest ``date=`` partition read to its end and the files
  read in it. A run reads the files of the bookmarked partition that were not read yet (the
  partition may still have been written to), then every newer partition.
* API: per regulation, the newest ``updated_at`` emitted, stored only once the whole listing
  has been read (users come in no particular order).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import backoff
import requests
from singer_sdk import Stream
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.pagination import BaseAPIPaginator, JSONPathPaginator
from singer_sdk.streams import RESTStream

try:  # the public home of TypeConformanceLevel in recent singer-sdk releases
    from singer_sdk.helpers.conform import TypeConformanceLevel
except ImportError:  # pragma: no cover
    from singer_sdk.helpers._typing import TypeConformanceLevel

from tap_didomi.client import (
    DidomiAPIError,
    DidomiSession,
    describe_error,
    http_date,
    retry_after_seconds,
)
from tap_didomi.exports import ExportDataError, ExportError, ExportStore
from tap_didomi.receiver.spool import SpoolError, SpoolReader
from tap_didomi.schemas import EVENT_SCHEMA, USER_SCHEMA

if TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context, Record

# Webhooks read from the spool at once; a STATE follows each read.
READ_LIMIT = 5000

_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_timestamp(value: Any) -> dt.datetime | None:
    """An ISO-8601 timestamp as an aware datetime (UTC when no offset); None if not one."""
    if not isinstance(value, str):
        return None
    match = _ISO.match(value.strip())
    if not match:
        return None
    day, clock, fraction, offset = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if offset in (None, "Z") else offset
    if len(zone) == 5:  # +0100
        zone = zone[:3] + ":" + zone[3:]
    clock = clock if clock.count(":") == 2 else clock + ":00"
    try:
        return dt.datetime.fromisoformat(f"{day}T{clock}.{micro}{zone}")
    except ValueError:
        return None


def format_timestamp(value: dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ``, the form Didomi uses."""
    utc = value.astimezone(dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class _SelfBookmarkedStream(Stream):
    """A stream that writes its bookmarks itself (see the module docstring)."""

    # Didomi's objects go out as they came in: no key dropped, no value rewritten.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def _increment_stream_state(self, latest_record: Record, *,
                                context: Context | None = None) -> None:
        # The SDK would bookmark from each record as it goes out; these streams bookmark only
        # complete partitions or complete listings, in get_records.
        return

    def _emit_state(self) -> None:
        self.state_manager.is_flushed = False
        self._write_state_message()


# --------------------------------------------------------------------------- batch exports


class ExportStream(_SelfBookmarkedStream):
    """Records of one folder (``users`` or ``events``) of every partition of every export."""

    folder: ClassVar[str]
    primary_keys: ClassVar[list[str]] = ["id"]

    def __init__(self, tap: Tap, store: ExportStore, schema: dict[str, Any]) -> None:
        self._store = store
        super().__init__(tap, schema=schema, name=self.folder)
        # Incremental by partition date; there is no replication key inside the records.
        self.forced_replication_method = "INCREMENTAL"

    @property
    def partitions(self) -> list[dict[str, Any]] | None:
        # One pass over all exports; never the SDK's partitions found in a state (an API
        # run's per-regulation ones would add `regulation` to every exported record).
        return None

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        start_date: str | None = self.config.get("start_date")
        bookmarks: dict[str, Any] = self.stream_state.setdefault("exports", {})
        for export in self._store.exports():
            saved = bookmarks.get(export.export_id) or {}
            saved_date: str | None = saved.get("date")
            for partition in self._store.partitions(export):
                if start_date and partition.date < start_date:
                    continue
                if saved_date and partition.date < saved_date:
                    continue
                already_read: set[str] = set()
                if partition.date == saved_date:
                    already_read = set(saved.get("files") or [])
                files = self._store.files(partition, self.folder)
                to_read = [f for f in files if f.name not in already_read]
                count = 0
                for file in to_read:
                    for line_no, record in self._store.read(file):
                        if not isinstance(record.get("id"), str) or not record["id"]:
                            raise ExportDataError(
                                f"{self._store.display(file.path)}: line {line_no} has no "
                                f"string `id`; every Didomi {self.folder[:-1]} record has one"
                            )
                        count += 1
                        yield record
                if partition.date == saved_date and not to_read:
                    continue  # nothing new in the bookmarked partition: state unchanged
                self.logger.info(
                    "%s: %s%s/date=%s: %d file(s), %d record(s)%s", self.name,
                    "export-id=", export.export_id, partition.date, len(to_read), count,
                    " (new files of the bookmarked partition)" if already_read else "",
                )
                saved = {"date": partition.date,
                         "files": sorted(already_read | {f.name for f in files})}
                saved_date = partition.date
                bookmarks[export.export_id] = saved
                # Every record of this partition has been written: say so before going on.
                self._emit_state()


class ExportUsersStream(ExportStream):
    folder = "users"

    def __init__(self, tap: Tap, store: ExportStore) -> None:
        super().__init__(tap, store, USER_SCHEMA)


class ExportEventsStream(ExportStream):
    folder = "events"

    def __init__(self, tap: Tap, store: ExportStore) -> None:
        super().__init__(tap, store, EVENT_SCHEMA)


# --------------------------------------------------------------------------- Consents API


class ApiUsersStream(_SelfBookmarkedStream, RESTStream[Any]):
    """``GET /consents/users``: every user, page by page; emits those updated after the
    bookmark (the API has no "updated since" filter)."""

    name = "users"
    path = "/consents/users"
    # One listing per regulation, and the same user id appears under each.
    primary_keys: ClassVar[list[str]] = ["id", "regulation"]
    replication_key = "updated_at"
    is_sorted = False
    # Retriable failures (429, 5xx, network, one 401) are tried this many times per page.
    MAX_TRIES = 6

    def __init__(self, tap: Tap) -> None:
        super().__init__(tap, schema=USER_SCHEMA)
        self._fresh_token_tried = False
        self._listing_began: dt.datetime | None = None

    @property
    def url_base(self) -> str:
        return str(self.config["api_url"]).rstrip("/")

    @property
    def partitions(self) -> list[dict[str, Any]]:
        return [{"regulation": r} for r in self.config.get("regulations") or ["gdpr"]]

    @property
    def authenticator(self) -> DidomiSession:
        if not hasattr(self, "_session"):
            self._session = DidomiSession(
                api_url=self.url_base,
                api_key=self.config["api_key"],
                api_secret=self.config["api_secret"],
                # Its own session: the stream's session sends every request through this
                # authenticator, the token request included.
                http=requests.Session(),
                timeout=self.timeout,
            )
        return self._session

    @property
    def timeout(self) -> int:
        return 120

    def get_new_paginator(self) -> BaseAPIPaginator[Any]:
        return JSONPathPaginator("$.cursor")

    def get_url_params(self, context: Context | None, next_page_token: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "organization_id": self.config["organization_id"],
            "regulation": (context or {}).get("regulation", "gdpr"),
        }
        if self.config.get("include_full_tree"):
            params["$include_full_tree"] = "true"
        if next_page_token:
            params["$cursor"] = next_page_token
        return params

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, Any]]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise DidomiAPIError(
                f"GET {self.path} answered {response.status_code} without a "
                '{"data": [...], "cursor": ...} page; check that api_url is Didomi\'s API base '
                "URL (https://api.didomi.io/v1)"
            )
        for user in body["data"]:
            if not isinstance(user, dict) or not isinstance(user.get("id"), str):
                raise DidomiAPIError(f"GET {self.path} returned a user without a string id")
            yield user

    # -- errors and retries ------------------------------------------------------------------

    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        if status < 400:
            self._fresh_token_tried = False
            if self._listing_began is None:
                self._listing_began = _server_time(response)
            return
        problem = f"GET {self.path} answered {describe_error(response)}"
        if status == 401:
            if not self._fresh_token_tried:
                # The token expired (one hour) or was revoked: mint a new one, once.
                self._fresh_token_tried = True
                self.authenticator.invalidate()
                raise RetriableAPIError(problem, response)
            raise FatalAPIError(
                f"{problem}, even with a freshly minted access token; check that the API key "
                "may read consents of this organization_id"
            )
        if status == 429 or status >= 500:
            raise RetriableAPIError(problem, response)
        hint = ""
        if status in (403, 404):
            hint = "; check organization_id and that the API key belongs to that organization"
        elif status == 400:
            hint = "; check organization_id and regulations"
        raise FatalAPIError(problem + hint)

    def response_error_message(self, response: requests.Response) -> str:
        return f"GET {self.path} answered {describe_error(response)}"

    def backoff_wait_generator(self) -> Iterator[float]:  # type: ignore[override]
        def waits() -> Iterator[float]:
            attempt = 0
            exc = yield 0.0  # primed by backoff before the first failure
            while True:
                attempt += 1
                response = getattr(exc, "response", None)
                if response is not None and response.status_code == 401:
                    wait = 0.0
                elif response is not None and response.status_code == 429:
                    wait = retry_after_seconds(response, default=15.0)
                else:
                    wait = min(2.0**attempt, 60.0)
                exc = yield wait

        return waits()

    def backoff_max_tries(self) -> int:
        return self.MAX_TRIES

    def backoff_jitter(self, value: float) -> float:
        return value  # Retry-After is exact; one reader needs no jitter

    def backoff_handler(self, details: backoff.types.Details) -> None:
        exc = details.get("exception")
        response = getattr(exc, "response", None)
        what = (f"answered {response.status_code}" if response is not None
                else f"failed ({type(exc).__name__})")
        self.logger.warning("GET %s %s; retrying in %.1f s (try %d of %d)", self.path, what,
                            details.get("wait") or 0.0, details.get("tries", 0), self.MAX_TRIES)

    # -- records and bookmark ----------------------------------------------------------------

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        regulation = (context or {}).get("regulation", "gdpr")
        bookmark, inclusive = self._lower_bound(context)
        self._listing_began = None
        newest: tuple[dt.datetime, str] | None = None
        listed = emitted = 0
        for user in self.request_records(context):
            listed += 1
            updated = parse_timestamp(user.get("updated_at"))
            if updated is None:
                raise DidomiAPIError(
                    f"user {user['id']} ({regulation}) has no valid updated_at "
                    f"({user.get('updated_at')!r}): the tap cannot tell whether it changed"
                )
            if bookmark is not None and (updated < bookmark if inclusive else updated <= bookmark):
                continue
            if newest is None or updated > newest[0]:
                newest = (updated, str(user["updated_at"]))
            emitted += 1
            yield user
        self.logger.info("users (%s): listed %d, emitted %d updated %s %s", regulation,
                         listed, emitted, "on or after" if inclusive else "after",
                         format_timestamp(bookmark) if bookmark else "the start")
        if newest is None:
            return
        value = newest[1]
        # A user updated while the listing ran may sit on a page already read, with an
        # updated_at below the newest one seen: never bookmark past the listing's start
        # (the server's clock), so that such a user is read again next run.
        if self._listing_began is not None and newest[0] > self._listing_began:
            value = format_timestamp(self._listing_began)
        state = self.get_context_state(context)
        state["replication_key"] = self.replication_key
        state["replication_key_value"] = value
        self._emit_state()

    def _lower_bound(self, context: Context | None) -> tuple[dt.datetime | None, bool]:
        """Where the listing starts, and whether a user updated exactly then is emitted.

        start_date is a day to start *on* (users updated at its midnight included); a
        bookmark is the newest ``updated_at`` already emitted, so only later ones are new.
        """
        bookmark = self.get_starting_timestamp(context)
        start_date = self.config.get("start_date")
        if bookmark is None or not start_date:
            return bookmark, False
        start = dt.datetime.combine(dt.date.fromisoformat(str(start_date)), dt.time(),
                                    dt.timezone.utc)
        saved = parse_timestamp(self.get_context_state(context).get("replication_key_value"))
        # The SDK starts from the later of the two; start_date wins when no bookmark is newer.
        if saved is None or saved < start:
            return start, True
        return bookmark, False


def _server_time(response: requests.Response) -> dt.datetime | None:
    """The server's clock from the Date header, one second early (its resolution)."""
    header = response.headers.get("Date")
    when = http_date(header) if header else None
    return when - dt.timedelta(seconds=1) if when is not None else None


# --------------------------------------------------------------------------- webhook spool

WEBHOOK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "id": {"type": "string", "description": "The webhook's id in the spool."},
        "received_at": {"type": "string", "format": "date-time",
                        "description": "When the receiver took the webhook (UTC)."},
        "type": {"type": "string", "description": "event.created, user.updated, ..."},
        "regulation": {"type": ["string", "null"]},
        "parameters": {"type": ["object", "null"], "additionalProperties": True},
    },
    "required": ["id", "received_at", "type"],
}


class WebhooksStream(_SelfBookmarkedStream):
    """Webhooks the receiver stored in the spool, in spool order, each one once.

    The bookmark is the position in the spool (``spool_position``), written after each read,
    so a re-run emits nothing twice. With ``follow`` the stream keeps reading every
    ``poll_interval_seconds`` and never ends on its own.
    """

    name = "webhooks"
    primary_keys: ClassVar[list[str]] = ["id"]

    def __init__(self, tap: Tap, reader: SpoolReader) -> None:
        self._reader = reader
        super().__init__(tap, schema=WEBHOOK_SCHEMA, name=self.name)
        self.forced_replication_method = "INCREMENTAL"

    @property
    def partitions(self) -> list[dict[str, Any]] | None:
        return None

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        follow = bool(self.config.get("follow"))
        interval = float(self.config.get("poll_interval_seconds") or 1.0)
        state = self.stream_state
        position: dict[str, Any] = dict(state.get("spool_position") or {})
        if position and state.get("spool") not in (None, self._reader.location):
            self.logger.warning(
                "webhooks: the bookmark belongs to the spool %s, not %s: reading this spool "
                "from its start", state.get("spool"), self._reader.location)
            position = {}
        emitted = 0
        while True:
            try:
                batch, new_position = self._reader.read(position, READ_LIMIT)
            except SpoolError as exc:
                raise ExportError(f"{exc}. No STATE was emitted past the webhooks read "
                                  "before this error: the next run starts from there.") from exc
            for webhook in batch:
                emitted += 1
                yield {**webhook.body, "id": webhook.spool_id,
                       "received_at": webhook.received_at}
            if new_position != position:
                position = new_position
                state["spool"] = self._reader.location
                state["spool_position"] = position
                # Every webhook read so far has been written out: say so before reading more.
                self._emit_state()
            if len(batch) >= READ_LIMIT:
                continue  # more is waiting
            if not follow:
                break
            time.sleep(interval)
        self.logger.info("webhooks: %d webhook(s) read from %s", emitted, self._reader.location)
