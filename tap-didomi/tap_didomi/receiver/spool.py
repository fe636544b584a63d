"""The spool: where the receiver stores webhooks durably and where tap-didomi reads them.

Two kinds, chosen by the spool's location:

* a local folder: one SQLite database (``webhooks.sqlite3``) in WAL mode with
  ``synchronous=FULL``, so a committed webhook survives a kill -9 or a power cut. Each webhook
  is a row; its ``dedupe_key`` is UNIQUE, so a retried webhook is stored once, whichever of the
  receivers sharing the folder took it. Rows get increasing ids in commit order (SQLite has one
  writer at a time), and the tap's bookmark is the last id it emitted.
* a bucket URL (``s3://``, ``gs://``, ... through fsspec): each receiver writes its own objects,
  one per group of webhooks received within a short window, named
  ``<date>/<time>-<receiver>-<sequence>.jsonl`` so that names sort by the time of writing.
  Receivers cannot see each other's objects cheaply, so duplicates across receivers are removed
  when the tap reads (``BucketSpoolReader``).

This module needs only the standard library and fsspec: the tap reads spools without the
receiver's web server installed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

SQLITE_FILE = "webhooks.sqlite3"
# Didomi retries for five minutes; a copy of a webhook arriving later than this after the first
# one is kept (the target's "newest consent wins" makes applying it again harmless).
DEDUPE_HORIZON = dt.timedelta(minutes=15)
# An object a receiver is writing appears in a listing at the latest this long after the time
# in its name (receiver clock skew plus the upload itself): the bucket reader re-lists that far.
BUCKET_GRACE = dt.timedelta(seconds=120)


class SpoolError(Exception):
    """The spool cannot be read or written; the message says what to check."""


class SpoolNotFoundError(SpoolError):
    """Nothing exists at the spool's location."""


def dedupe_key(webhook: dict[str, Any]) -> str:
    """The hash of the webhook's canonical JSON: key order and spacing do not change it."""
    canonical = json.dumps(webhook, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def utc_now_iso() -> str:
    """Now, as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_bucket_url(location: str) -> bool:
    """Whether a spool location is a bucket URL (anything with a scheme but ``file://``)."""
    return "://" in location and not location.startswith("file://")


@dataclass(frozen=True)
class Incoming:
    """A webhook the receiver accepted, about to be stored."""

    key: str
    received_at: str
    body: str  # the JSON text as received


@dataclass(frozen=True)
class Stored:
    """What storing one webhook did: its spool id, or that it was a duplicate."""

    spool_id: str | None
    duplicate: bool


@dataclass(frozen=True)
class SpooledWebhook:
    """A webhook read back from the spool."""

    spool_id: str
    received_at: str
    body: dict[str, Any]


# ----------------------------------------------------------------------------- SQLite folder


def _sqlite_path(folder: str) -> str:
    return os.path.join(folder.removeprefix("file://"), SQLITE_FILE)


def _connect(path: str, *, create: bool) -> sqlite3.Connection:
    mode = "rwc" if create else "rw"
    conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=30.0,
                           isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


class SqliteSpool:
    """The receiver's side of a folder spool: stores groups of webhooks in one transaction."""

    kind = "sqlite"

    def __init__(self, folder: str) -> None:
        self.location = folder
        os.makedirs(folder.removeprefix("file://"), exist_ok=True)
        self._conn = _connect(_sqlite_path(folder), create=True)
        # WAL: readers (the tap) never block the receiver. FULL: a commit is on disk (the WAL
        # fsync'd) before it returns, which is when the receiver answers 2xx.
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError(f"the spool {folder} cannot use SQLite's WAL mode (got {mode}); "
                             "put it on a local file system")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS webhooks ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " dedupe_key TEXT NOT NULL UNIQUE,"
            " received_at TEXT NOT NULL,"
            " body TEXT NOT NULL)"
        )
        self._lock = threading.Lock()

    def store(self, group: Sequence[Incoming]) -> list[Stored]:
        """Store a group in one transaction (one fsync); a duplicate key is not stored again."""
        results: list[Stored] = []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for item in group:
                    cursor = self._conn.execute(
                        "INSERT OR IGNORE INTO webhooks (dedupe_key, received_at, body) "
                        "VALUES (?, ?, ?)", (item.key, item.received_at, item.body))
                    if cursor.rowcount == 1:
                        results.append(Stored(str(cursor.lastrowid), duplicate=False))
                    else:
                        results.append(Stored(None, duplicate=True))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return results

    def healthy(self) -> bool:
        with self._lock:
            try:
                self._conn.execute("SELECT 1 FROM webhooks LIMIT 1").fetchall()
            except sqlite3.Error:
                return False
        return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SqliteSpoolReader:
    """The tap's side of a folder spool: rows after a bookmarked id, in id order."""

    def __init__(self, folder: str) -> None:
        self.location = folder
        path = _sqlite_path(folder)
        if not os.path.exists(path):
            raise SpoolNotFoundError(
                f"webhook_spool {folder} holds no spool ({SQLITE_FILE} is missing): give the "
                "folder that didomi-webhook-receiver --spool writes to"
            )
        try:
            self._conn = _connect(path, create=False)
            self._conn.execute("SELECT id FROM webhooks LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the spool {path}: {exc}") from None

    def read(self, position: dict[str, Any], limit: int = 10_000
             ) -> tuple[list[SpooledWebhook], dict[str, Any]]:
        """Webhooks after ``position`` (a bookmark of this reader), and the new position."""
        after = int(position.get("last_id") or 0)
        try:
            rows = self._conn.execute(
                "SELECT id, received_at, body FROM webhooks WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit)).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the spool {self.location}: {exc}") from None
        webhooks = [SpooledWebhook(str(row_id), received_at, json.loads(body))
                    for row_id, received_at, body in rows]
        if rows:
            return webhooks, {"last_id": rows[-1][0]}
        return webhooks, {"last_id": after}

    def close(self) -> None:
        self._conn.close()


# ----------------------------------------------------------------------------- bucket


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise SpoolError(f"cannot open {url}: {exc} (s3:// needs tap-didomi[s3], gs:// "
                         "tap-didomi[gcs])") from None
    return fs, str(root).rstrip("/")


def _object_name(when: dt.datetime, receiver: str, sequence: int) -> str:
    return (f"{when:%Y-%m-%d}/{when:%Y%m%dT%H%M%S.%fZ}-{receiver}-{sequence:09d}.jsonl")


class BucketSpool:
    """The receiver's side of a bucket spool: one object per group, never overwritten."""

    kind = "bucket"

    def __init__(self, url: str, receiver_id: str | None = None) -> None:
        self.location = url
        self._fs, self._root = _filesystem(url)
        self.receiver_id = receiver_id or uuid.uuid4().hex[:12]
        self._sequence = 0
        # Keys this receiver stored lately: a retry that comes back to the same receiver is
        # answered without writing it again.
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def store(self, group: Sequence[Incoming]) -> list[Stored]:
        with self._lock:
            results: list[Stored] = []
            lines: list[str] = []
            seen: set[str] = set()
            for item in group:
                if item.key in self._recent or item.key in seen:
                    results.append(Stored(None, duplicate=True))
                    continue
                seen.add(item.key)
                lines.append(json.dumps({"key": item.key, "received_at": item.received_at,
                                         "body": item.body}, ensure_ascii=False))
                results.append(Stored("", duplicate=False))
            if not lines:
                return results
            self._sequence += 1
            name = _object_name(dt.datetime.now(dt.timezone.utc), self.receiver_id,
                                self._sequence)
            data = ("\n".join(lines) + "\n").encode("utf-8")
            # One PUT: the object exists whole or not at all.
            self._fs.pipe_file(f"{self._root}/{name}", data)
            for key in seen:
                self._recent[key] = None
            while len(self._recent) > 200_000:
                self._recent.popitem(last=False)
            index = 0
            final: list[Stored] = []
            for result in results:
                if result.duplicate:
                    final.append(result)
                else:
                    final.append(Stored(f"{name}#{index}", duplicate=False))
                    index += 1
            return final

    def healthy(self) -> bool:
        try:
            self._fs.ls(self._root, detail=False)
        except FileNotFoundError:
            return True  # an empty prefix: the first write creates it
        except Exception:
            return False
        return True

    def close(self) -> None:
        return


class BucketSpoolReader:
    """The tap's side of a bucket spool.

    The position is a watermark (every object named before it has been read) plus the names
    read after it. Objects appear in a listing somewhat after the time in their name, so the
    watermark trails the newest name read by ``BUCKET_GRACE``. Duplicates (the same webhook
    stored by two receivers) are removed by key: the keys of webhooks received within
    ``DEDUPE_HORIZON`` before the watermark are kept in memory, and rebuilt on a fresh start by
    reading those objects again without emitting them.
    """

    def __init__(self, url: str) -> None:
        self.location = url
        self._fs, self._root = _filesystem(url)
        try:
            if not self._fs.exists(self._root):
                raise SpoolNotFoundError(
                    f"webhook_spool {url} does not exist: give the URL that "
                    "didomi-webhook-receiver --spool writes to (it appears with the first "
                    "webhook stored)")
        except SpoolError:
            raise
        except Exception as exc:
            raise SpoolError(f"cannot list {url} ({type(exc).__name__}: {exc}); check the "
                             "URL and the storage credentials") from None
        self._seen: dict[str, str] = {}  # dedupe key -> object name holding it
        self._primed = False

    def _list(self, since: str) -> list[str]:
        """Object names (relative to the root) at or after ``since``, sorted."""
        day = since[:10] if since else ""
        try:
            days = sorted(p.rsplit("/", 1)[-1]
                          for p in self._fs.ls(self._root, detail=False, refresh=True))
            names: list[str] = []
            for folder in days:
                if folder < day:
                    continue
                for path in self._fs.ls(f"{self._root}/{folder}", detail=False, refresh=True):
                    name = f"{folder}/{path.rsplit('/', 1)[-1]}"
                    if name.endswith(".jsonl") and name >= since:
                        names.append(name)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise SpoolError(f"cannot list {self.location} ({type(exc).__name__}: {exc})"
                             ) from None
        return sorted(names)

    def _read_object(self, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            text = self._fs.cat_file(f"{self._root}/{name}").decode("utf-8")
        except Exception as exc:
            raise SpoolError(f"cannot read {self.location}/{name} ({type(exc).__name__}: "
                             f"{exc})") from None
        for index, line in enumerate(text.splitlines()):
            if line.strip():
                yield index, json.loads(line)

    def _prime(self, watermark: str, already: set[str]) -> None:
        """Rebuild the keys of recent webhooks from the objects read in earlier runs."""
        self._primed = True
        if not watermark and not already:
            return
        start = _name_time(watermark or min(already)) - DEDUPE_HORIZON
        for name in self._list(_name_prefix(start)):
            if name < watermark or name in already:
                for _, entry in self._read_object(name):
                    self._seen[entry["key"]] = name

    def read(self, position: dict[str, Any], limit: int = 10_000
             ) -> tuple[list[SpooledWebhook], dict[str, Any]]:
        del limit  # objects are read whole; a group is small
        watermark = str(position.get("watermark") or "")
        already = set(position.get("read") or [])
        if not self._primed:
            self._prime(watermark, already)
        webhooks: list[SpooledWebhook] = []
        names = [n for n in self._list(watermark) if n not in already]
        for name in names:
            for index, entry in self._read_object(name):
                key = entry["key"]
                if key in self._seen and self._seen[key] != name:
                    continue
                self._seen[key] = name
                webhooks.append(SpooledWebhook(f"{name}#{index}", entry["received_at"],
                                               json.loads(entry["body"])))
        read = already | set(names)
        newest = max(read) if read else watermark
        if newest:
            moved = _name_prefix(_name_time(newest) - BUCKET_GRACE)
            watermark = max(watermark, moved)
        horizon = _name_prefix(_name_time(watermark) - DEDUPE_HORIZON) if watermark else ""
        self._seen = {k: n for k, n in self._seen.items() if n >= horizon}
        return webhooks, {"watermark": watermark, "read": sorted(n for n in read
                                                                 if n >= watermark)}

    def close(self) -> None:
        return


def _name_prefix(when: dt.datetime) -> str:
    return f"{when:%Y-%m-%d}/{when:%Y%m%dT%H%M%S.%fZ}"


def _name_time(name: str) -> dt.datetime:
    stamp = name.split("/", 1)[1][:23] if "/" in name else name[:23]
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.timezone.utc)


def open_spool(location: str, receiver_id: str | None = None) -> SqliteSpool | BucketSpool:
    """The receiver's spool at ``location`` (a folder, or a bucket URL)."""
    if is_bucket_url(location):
        return BucketSpool(location, receiver_id)
    return SqliteSpool(location)


def open_reader(location: str) -> SqliteSpoolReader | BucketSpoolReader:
    """The tap's reader of the spool at ``location``."""
    if is_bucket_url(location):
        return BucketSpoolReader(location)
    return SqliteSpoolReader(location)


SpoolReader = SqliteSpoolReader | BucketSpoolReader
