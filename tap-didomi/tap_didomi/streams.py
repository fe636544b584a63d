"""The tap's streams: ``users`` and ``events`` from batch exports, ``users`` from the API.

Records are Didomi's own objects, passed through unchanged (nested ``consents`` stay objects;
the SDK's type conformance is off so that nothing is dropped or rewritten).

Bookmarks are written by the streams themselves, never from a record's position in the
output, so that a STATE message never covers data that was not completely read:

* exports: per ``export-id``, the files read in each partition of a look-back window ending
  at the newest partition read (see ``export_state``). A run reads, in date order, the files
  of the window's partitions not read yet (a late upload, a back-filled day), then every newer
  partition; a partition is bookmarked once read to its end.
* API: per regulation, the newest ``updated_at`` emitted, stored only once the whole listing
  has been read (users come in no particular order).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import backoff
import requests
from consent_pipelines_common.cli import ProgressLog
from singer_sdk import Stream
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.pagination import BaseAPIPaginator
from singer_sdk.streams import RESTStream

try:  # the public home of TypeConformanceLevel in recent singer-sdk releases
    from singer_sdk.helpers.conform import TypeConformanceLevel
except ImportError:  # pragma: no cover
    from singer_sdk.helpers._typing import TypeConformanceLevel

from tap_didomi.client import (
    CursorPaginator,
    DidomiAPIError,
    DidomiSession,
    describe_error,
    http_date,
    retry_after_seconds,
)
from tap_didomi.export_state import DEFAULT_LOOKBACK_DAYS, ExportBookmark, PartitionStatus
from tap_didomi.exports import (
    DatedFile,
    ExportDataError,
    ExportError,
    ExportFile,
    ExportStore,
    redact,
)
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


# Errors the console entry point reports in one line of its own.
HANDLED_ERRORS = (ExportError, DidomiAPIError, FatalAPIError, RetriableAPIError)


class _SelfBookmarkedStream(Stream):
    """A stream that writes its bookmarks itself (see the module docstring)."""

    def _write_record_message(self, record: Record) -> None:
        super()._write_record_message(record)
        progress = getattr(self._tap, "progress", None)
        if isinstance(progress, ProgressLog):
            progress.record_read(self.name)

    def log(self, message: str, *args: Any, level: int = logging.INFO, **kwargs: Any) -> None:
        # The SDK logs "An unhandled error occurred" for any error of a sync; the errors the
        # console entry point reports itself, in one line, need no such line before theirs.
        if message.startswith("An unhandled error") and isinstance(sys.exc_info()[1],
                                                                    HANDLED_ERRORS):
            return
        super().log(message, *args, level=level, **kwargs)

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
        lookback_days = int(self.config.get("export_lookback_days") or DEFAULT_LOOKBACK_DAYS)
        bookmarks: dict[str, Any] = self.stream_state.setdefault("exports", {})
        for export in self._store.exports():
            bookmark = ExportBookmark.from_state(
                bookmarks.get(export.export_id),
                f"bookmarks.{self.name}.exports[{json.dumps(export.export_id)}]",
            )
            bookmark.close_old(lookback_days)
            mine = [f for f in self._store.all_files(export) if f.folder == self.folder]
            self._report_landed_late(export.export_id, mine, bookmark, start_date)
            seen_before = bookmark.seen_until
            bookmark.seen_until = _newest(seen_before, (f.file for f in mine))
            for partition in self._store.partitions(export):
                if start_date and partition.date < start_date:
                    continue
                status = bookmark.status(partition.date, lookback_days)
                if status is PartitionStatus.CLOSED:
                    continue
                files = self._store.files(partition, self.folder)
                if status is PartitionStatus.TOO_OLD:
                    self._report_too_old(export.export_id, partition.date, files, bookmark,
                                         lookback_days)
                    continue
                names = [f.name for f in files]
                bookmark.seen_until = _newest(bookmark.seen_until, files)
                unread = set(bookmark.unread(partition.date, names))
                to_read = [f for f in files if f.name in unread]
                if status is PartitionStatus.IN_WINDOW and not to_read:
                    continue  # nothing new in this partition: state unchanged
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
                self.logger.info(
                    "%s: export-id=%s/date=%s: %d file(s), %d record(s)%s", self.name,
                    export.export_id, partition.date, len(to_read), count,
                    " (files that arrived since the last run)"
                    if status is PartitionStatus.IN_WINDOW else "",
                )
                bookmark.record(partition.date, names, lookback_days)
                bookmarks[export.export_id] = bookmark.to_state()
                # Every record of this partition has been written: say so before going on.
                self._emit_state()
            if bookmark.seen_until != seen_before and bookmark.newest is not None:
                bookmarks[export.export_id] = bookmark.to_state()
                self._emit_state()  # only the files seen moved on: late files warned once

    def _report_landed_late(self, export_id: str, files: list[DatedFile],
                            bookmark: ExportBookmark, start_date: str | None) -> None:
        """Files written after the last run into partitions that had left the window: their
        partition is not listed file by file any more, so they are named, not read."""
        if bookmark.seen_until is None:
            return
        late = [f for f in files if bookmark.is_closed(f.date)
                and not (start_date and f.date < start_date)
                and f.file.modified is not None and f.file.modified > bookmark.seen_until]
        if not late:
            return
        shown = ", ".join(self._store.display(f.file.path) for f in late[:20])
        more = f" and {len(late) - 20} more" if len(late) > 20 else ""
        self.logger.warning(
            "%s: export-id=%s: NOT reading %s%s: written after the last run into days older "
            "than the look-back window, which are not read again. Raise export_lookback_days "
            "if files land this late; to read these once, run with a fresh state and "
            "start_date=%s (the target skips what it already holds)", self.name, export_id,
            shown, more, late[0].date,
        )

    def _report_too_old(self, export_id: str, date: str, files: list[ExportFile],
                        bookmark: ExportBookmark, lookback_days: int) -> None:
        """A partition older than the look-back window that was never read: named, not read
        (its files may duplicate data read long ago, or be a late back-fill)."""
        if not files:
            return
        newest = bookmark.newest or date
        needed = (dt.date.fromisoformat(newest) - dt.date.fromisoformat(date)).days + 1
        shown = ", ".join(self._store.display(f.path) for f in files[:20])
        more = f" and {len(files) - 20} more" if len(files) > 20 else ""
        self.logger.warning(
            "%s: export-id=%s/date=%s is older than the look-back window (%d days up to %s) "
            "and was not read before: NOT reading %s%s. To read them, run with "
            "export_lookback_days of at least %d", self.name, export_id, date, lookback_days,
            newest, shown, more, needed,
        )


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
        return CursorPaginator()

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
                elif response is not None and response.status_code in (429, 503):
                    # Both say when to come back (throttled, or briefly unavailable).
                    default = 15.0 if response.status_code == 429 else min(2.0**attempt, 60.0)
                    wait = retry_after_seconds(response, default=default)
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

    def request_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        try:
            yield from super().request_records(context)
        except requests.RequestException as exc:
            # The retries are spent (a cut or refused connection, a timeout): one line naming
            # the URL. The request's headers hold the token, so the exception is not chained.
            request = getattr(exc, "request", None)
            url = getattr(request, "url", None) or f"{self.url_base}{self.path}"
            raise DidomiAPIError(
                f"GET {redact(str(url))} failed {self.MAX_TRIES} times "
                f"({type(exc).__name__}: the connection was cut, refused or timed out); check "
                "api_url and the network, then run again"
            ) from None

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


def _newest(mark: float | None, files: Iterable[ExportFile]) -> float | None:
    """The later of ``mark`` and the files' modification times."""
    times = [f.modified for f in files if f.modified is not None]
    if mark is not None:
        times.append(mark)
    return max(times) if times else None


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
