"""Failed records are kept durably and retried at the start of the next runs.

A record that ends ``failed`` (a picklist value missing from ``value_map``, a record the target
cannot read, a row Salesforce refused) is written, as the tap sent it and with the reason, to a
folder: one file per batch as it ends (before the SDK emits the STATE that moves the tap on),
so nothing is lost when a run stops half-way. The next run reads the folder before any new
input and sends those records again, each report line marked ``"retry": n``. At the end of a
run that completes, the folder is rewritten as one ``pending.jsonl``: records that failed again
stay (until they have been retried ``max_record_retries`` times, then they move to
``exhausted.jsonl``, kept for replay by hand but no longer retried); records that succeeded,
or that a newer record of the same person superseded, are removed.

Only whole-file writes, reads, listing and deletes are used, so the folder may be a bucket
(``s3://``, ``gs://``, ``az://``, through fsspec) as well as a local path.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import msgspec

from target_salesforce_consent.didomi import UnreadableRecord, parse_timestamp
from target_salesforce_consent.plan import to_micros
from target_salesforce_consent.store import NO_TIMESTAMP, BulkInsert

__all__ = [
    "DEFAULT_MAX_RECORD_RETRIES",
    "FailedEntry",
    "FailedRecordStore",
    "default_failed_records_root",
    "open_folder",
]

DEFAULT_MAX_RECORD_RETRIES = 5
PENDING = "pending.jsonl"
EXHAUSTED = "exhausted.jsonl"
_BATCH_FILE = re.compile(r"^run-[0-9TZ]+-[0-9a-f]+-\d+\.jsonl$")

_encode = msgspec.json.Encoder(decimal_format="number").encode

#: The page cache of the table of people settled, in KiB. SQLite's default (2,000 KiB) is
#: reached at about 100,000 records and then held for the run; a batch's rows are written
#: in key order, so that a small cache costs no more CPU (measured: 0.22 s against 0.23 s for
#: ten batches of 7,700 people) and 1.75 MiB less memory.
SETTLED_CACHE_KIB = 256

#: Outcomes of a newer record that settle an older failed record of the same person: its values
#: reached Salesforce, or Salesforce holds a newer consent.
SETTLING_OUTCOMES = frozenset({"updated", "inserted", "skipped_unchanged", "skipped_stale"})


class FailedEntry(msgspec.Struct, kw_only=True):
    """One failed record, as kept in the folder (one JSON object per line)."""

    key: str  # sha256 of the stream and the record as sent: the same record is kept once
    stream: str
    record: Any  # as the tap sent it; null for a line the JSON reader could not decode
    organization_user_id: str | None
    timestamp: str | None
    error: str | None
    failures: int  # runs in which it failed: 1 on the first, then one more per failed retry
    first_failed_at: str
    last_failed_at: str

    @property
    def retries(self) -> int:
        return self.failures - 1


_decode_entry = msgspec.json.Decoder(FailedEntry).decode


def entry_key(stream: str, encoded_record: bytes) -> str:
    digest = hashlib.sha256(stream.encode("utf-8", "backslashreplace"))
    digest.update(b"\0")
    digest.update(encoded_record)
    return digest.hexdigest()


def encode_record(raw: Any) -> bytes:
    """The record as the tap sent it, as JSON bytes (kept with each buffered record)."""
    if isinstance(raw, UnreadableRecord):
        return b"null"
    try:
        return _encode(raw)
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError):  # a lone surrogate, ...
        return json.dumps(raw, default=str).encode("utf-8", "backslashreplace")


def _on_new_thread(function: Callable[[str], Any], argument: str) -> Any:
    """``function(argument)`` on a thread of its own (a fresh stack), its error raised here."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, function(argument)))
        except BaseException as exc:  # raised again on the calling thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="spool-decode")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


_LINE_MARK = "l"  # the first byte of an entry kept as its Singer line (see RecordSpool)


class _Segment:
    """One append-only temporary file of the spool: its records' arrival numbers and offsets."""

    __slots__ = ("file", "lines", "live", "offsets", "seqs", "size")

    def __init__(self) -> None:
        # Open as long as the segment lives; the file has no name, so it goes once closed.
        self.file = tempfile.TemporaryFile(buffering=1 << 15)  # noqa: SIM115
        self.seqs = array("q")  # increasing
        self.offsets = array("q")  # where each record starts; -1 - that once dropped
        self.size = 0  # with the lines not written yet
        self.live = 0
        # Lines put and not written yet: encoded and written together (see RecordSpool)
        self.lines: list[str] = []

    def add(self, seq: int, size: int) -> None:
        """Count in the entry of record ``seq``, ``size`` bytes from the end of the file."""
        self.seqs.append(seq)
        self.offsets.append(self.size)
        self.size += size
        self.live += 1

    def write_lines(self) -> None:
        """Write the lines put since the last write, each after its entry's first byte."""
        lines = self.lines
        if lines:
            self.lines = []
            text = _LINE_MARK + _LINE_MARK.join(lines)
            self.file.write(text.encode("utf-8", "surrogatepass"))


class RecordSpool:
    """The records of the batches not settled yet, as sent, keyed by arrival order.

    On disk (temporary files, each appended to and then only read), not on each buffered
    record: only a record that fails is read back. A file holds ``SEGMENT`` records and is
    removed once all of them are dropped (their batches settled), so the disk holds the few
    batches in flight and the memory a few arrays. Records are put by the reading thread and
    read back where batches settle (the batch worker, then the thread that ends the run).

    A record is kept either as its JSON (:meth:`put`) or as the Singer line it came in
    (:meth:`put_line`, no encoding on the reading thread): that line is decoded again with
    ``record_of_line`` only when the record fails, and encoded as :meth:`put` would have
    kept it, so its key in the store is the same.
    """

    SEGMENT = 4096  # records per file
    #: Lines put that are encoded and written in one go: one call per line for a Singer
    #: line's JSON text was a tenth of the reading thread's time.
    LINES_PER_WRITE = 64
    _JSON = b"j"  # the first byte of an entry kept as JSON (a line's: _LINE_MARK)

    def __init__(self, record_of_line: Callable[[str], Any] | None = None) -> None:
        self.record_of_line = record_of_line
        self._segments: list[_Segment] = []
        self._lock = threading.Lock()

    def put(self, seq: int, encoded: bytes) -> None:
        with self._lock:
            segment = self._segment_for(seq)
            segment.write_lines()
            segment.add(seq, 1 + len(encoded))
            segment.file.write(self._JSON + encoded)

    def put_line(self, seq: int, line: str) -> None:
        """Keep the record of a Singer RECORD line that ``record_of_line`` decodes."""
        # The line's UTF-8 length is known without encoding it when it is ASCII (nearly all)
        size = 1 + (len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass")))
        with self._lock:
            segment = self._segment_for(seq)
            segment.add(seq, size)
            lines = segment.lines
            lines.append(line)
            if len(lines) >= self.LINES_PER_WRITE:
                segment.write_lines()

    def _encoded_record(self, line: str) -> bytes:
        """What :meth:`put` would have kept for the record of ``line``."""
        assert self.record_of_line is not None
        return encode_record(self.record_of_line(line))

    def _segment_for(self, seq: int) -> _Segment:  # with the lock held
        """The segment to append the record ``seq`` to."""
        segment = self._segments[-1] if self._segments else None
        if segment is None or len(segment.seqs) >= self.SEGMENT or segment.seqs[-1] >= seq:
            if segment is not None:
                segment.write_lines()
            segment = _Segment()  # arrival numbers grow within a segment
            self._segments.append(segment)
        return segment

    def _find(self, seq: int) -> tuple[_Segment, int] | None:  # with the lock held
        for segment in reversed(self._segments):  # a few: the batches in flight
            seqs = segment.seqs
            if seqs[0] <= seq <= seqs[-1]:
                index = bisect.bisect_left(seqs, seq)
                if seqs[index] == seq and segment.offsets[index] >= 0:
                    return segment, index
        return None

    def get(self, seq: int) -> bytes | None:
        with self._lock:
            found = self._find(seq)
            if found is None:
                return None
            segment, index = found
            start = segment.offsets[index]
            if index + 1 < len(segment.offsets):
                end = segment.offsets[index + 1]
                end = end if end >= 0 else -1 - end  # the next record was dropped
            else:
                end = segment.size
            segment.write_lines()
            segment.file.flush()
            data = os.pread(segment.file.fileno(), end - start, start)
        if data[:1] == self._JSON:
            return data[1:]
        line = data[1:].decode("utf-8", "surrogatepass")
        try:
            return self._encoded_record(line)
        except RecursionError:
            # The reading thread decoded it deeper in its stack than a new thread starts:
            # there it is decoded and encoded again, however deeply the line nests.
            encoded: bytes = _on_new_thread(self._encoded_record, line)
            return encoded

    def drop(self, seqs: list[int]) -> None:
        """Forget the records of a settled batch (a file goes once all its records have)."""
        if not seqs:
            return
        with self._lock:
            # Sorted, the records of each segment are looked for in one pass over it,
            # instead of each record in every segment until found (half the CPU).
            remaining = sorted(seqs)
            for segment in reversed(self._segments):  # newest first, as _find
                kept, offsets = segment.seqs, segment.offsets
                low = bisect.bisect_left(remaining, kept[0])
                high = bisect.bisect_right(remaining, kept[-1])
                not_here: list[int] = []  # looked for in the older segments
                start = 0
                for seq in remaining[low:high]:
                    index = bisect.bisect_left(kept, seq, start)
                    if index < len(kept) and kept[index] == seq and offsets[index] >= 0:
                        offsets[index] = -1 - offsets[index]
                        segment.live -= 1
                        start = index + 1  # arrival numbers grow within a segment
                    else:
                        not_here.append(seq)
                remaining[low:high] = not_here
            for at in range(len(self._segments) - 2, -1, -1):  # never the one being written
                if self._segments[at].live == 0:
                    self._segments[at].file.close()
                    del self._segments[at]

    def close(self) -> None:
        with self._lock:
            for segment in self._segments:
                segment.file.close()
            self._segments.clear()


# -- where the folder is ------------------------------------------------------------------


def default_failed_records_root(environ: Mapping[str, str]) -> str:
    """Where failed records are kept when ``failed_records_path`` is not set: beside Meltano's
    own run state under Meltano, else in the user's state folder (XDG)."""
    project = environ.get("MELTANO_PROJECT_ROOT")
    if project:
        run = Path(project) / ".meltano" / "run"
        return str(run / "target-salesforce-consent" / "failed-records")
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "target-salesforce-consent" / "failed-records")


def store_name(instance_url: str, salesforce_object: str) -> str:
    """The sub-folder of one org and object: two configurations never retry each other's."""
    parts = urlsplit(instance_url)
    host = (parts.hostname or "org") + (f"_{parts.port}" if parts.port else "")
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{host}-{salesforce_object}")


class Folder(Protocol):
    location: str

    def names(self) -> list[str]: ...
    def check(self) -> None: ...
    def read(self, name: str) -> bytes: ...
    def write(self, name: str, data: bytes) -> None: ...
    def delete(self, name: str) -> None: ...


class LocalFolder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        """The folder, or the nearest folder above it that exists, must be writable."""
        existing = self.path
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder", str(existing))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable", str(existing))

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_file())

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        """Whole file or nothing: written aside, flushed to disk, then renamed into place."""
        self.create()
        partial = self.path / f".{name}.partial"
        with partial.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path / name)

    def delete(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)


class BucketFolder:
    """A folder in object storage through fsspec (an object is written whole or not at all)."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError:
            raise ValueError(
                f"failed_records_path {url!r} is a URL, which needs fsspec and the store's own "
                "package: pip install 'target-salesforce-consent[s3]' (or fsspec with gcsfs, "
                "adlfs)"
            ) from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise ValueError(f"failed_records_path {url!r} cannot be opened: {exc}") from None
        self.root = root.rstrip("/")
        self.location = url.rstrip("/")

    def create(self) -> None:
        self.fs.makedirs(self.root, exist_ok=True)

    def check(self) -> None:
        """The bucket must exist and be readable (listing it raises otherwise)."""
        self.fs.ls(self.root.split("/", 1)[0], detail=False)

    def names(self) -> list[str]:
        self.fs.invalidate_cache(self.root)  # another run may have changed the folder
        try:
            listing = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        return sorted(
            str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
            for info in listing
            if info.get("type") == "file"
        )

    def read(self, name: str) -> bytes:
        data: bytes = self.fs.cat_file(f"{self.root}/{name}")
        return data

    def write(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.root}/{name}", data)

    def delete(self, name: str) -> None:
        if self.fs.exists(f"{self.root}/{name}"):
            self.fs.rm_file(f"{self.root}/{name}")


def open_folder(path: str, instance_url: str, salesforce_object: str) -> LocalFolder | BucketFolder:
    """The store's folder for one org and object, under ``path`` (a local path or a URL)."""
    name = store_name(instance_url, salesforce_object)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) and not path.startswith("file://"):
        return BucketFolder(f"{path.rstrip('/')}/{name}")
    local = path[len("file://") :] if path.startswith("file://") else path
    return LocalFolder(Path(local).expanduser() / name)


# -- the store ----------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


#: A person's newest settling timestamp: a row replaces an older one of the same person.
_SETTLE = BulkInsert(
    "INSERT INTO settled", 2, " ON CONFLICT (person) DO UPDATE SET ts = max(ts, excluded.ts)"
)


def _person(ouid: str) -> bytes:
    """The store's key of a person: any text, a lone surrogate included, as bytes."""
    return ouid.lower().encode("utf-8", "surrogatepass")


def _lines(entries: Iterable[FailedEntry]) -> bytes:
    return b"".join(_line(e) + b"\n" for e in entries)


def _line(entry: FailedEntry) -> bytes:
    try:
        return _encode(entry)
    except UnicodeEncodeError:  # a lone surrogate: written as a JSON escape, as json does
        record = entry.record
        body = bytes(record) if isinstance(record, msgspec.Raw) else json.dumps(record).encode()
        head = {f: getattr(entry, f) for f in entry.__struct_fields__ if f != "record"}
        return json.dumps(head).encode()[:-1] + b', "record": ' + body + b"}"


def _read_line(line: bytes) -> FailedEntry:
    try:
        return _decode_entry(line)
    except msgspec.DecodeError:  # msgspec refuses a lone surrogate escape; json reads it
        try:
            return msgspec.convert(json.loads(line), FailedEntry)
        except (ValueError, msgspec.ValidationError):
            raise msgspec.DecodeError("not a failed record") from None


@dataclass
class _Retry:
    entry: FailedEntry
    failed_again: bool | None = None  # None: not settled in this run
    error: str | None = None


class FailedRecordStore:
    """The failed records of one org and object, and what this run does with them."""

    def __init__(
        self,
        folder: LocalFolder | BucketFolder,
        max_retries: int,
        *,
        dry_run: bool,
        logger: logging.Logger,
    ) -> None:
        self.folder = folder
        self.max_retries = max_retries
        self.dry_run = dry_run
        self.logger = logger
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(
            4
        ).hex()
        self._read_files: list[str] = []
        self._written_files: list[str] = []
        self._retries: dict[str, _Retry] = {}
        self._exhausted: dict[str, FailedEntry] = {}
        self._new: dict[str, FailedEntry] = {}
        # Per person (lower-cased organization_user_id), the newest timestamp of a record of
        # this run that settled it: on disk, since it grows with the stream (as store.py).
        # Batches settle on the batch worker, the last ones on the thread that ends the run.
        self._settled = sqlite3.connect("", check_same_thread=False)
        self._settled.execute(f"PRAGMA cache_size = -{SETTLED_CACHE_KIB}")
        self._settled.execute(
            "CREATE TABLE settled (person BLOB PRIMARY KEY, ts INTEGER NOT NULL) WITHOUT ROWID"
        )
        self._batches = 0
        self.spool = RecordSpool()

    def close(self) -> None:
        self._settled.close()
        self.spool.close()

    def keep_record(self, seq: int, raw: Any, line: str | None = None) -> None:
        """Keep the record that arrived `seq`-th, as sent, until its batch settles (should it
        fail). ``line``: the Singer line it came in, which the spool decodes again (with its
        ``record_of_line``) only should the record fail."""
        if line is not None and self.spool.record_of_line is not None:
            self.spool.put_line(seq, line)
        else:
            self.spool.put(seq, encode_record(raw))

    def check(self) -> None:
        """Fail now (a configuration error) if the folder cannot be used. Nothing is created:
        a run with no failed records leaves no trace."""
        self.folder.check()
        self.folder.names()

    # -- start of the run ------------------------------------------------------------------

    def load(self) -> list[FailedEntry]:
        """The records to send again, oldest failure first (read before any new input)."""
        kept: dict[str, FailedEntry] = {}
        for name in self.folder.names():
            if name == EXHAUSTED:
                for entry in self._entries(name):
                    self._exhausted[entry.key] = entry
                continue
            if name != PENDING and not _BATCH_FILE.match(name):
                continue
            self._read_files.append(name)
            for entry in self._entries(name):
                held = kept.get(entry.key)
                if held is None or entry.failures > held.failures:
                    kept[entry.key] = entry
        for entry in kept.values():
            self._retries[entry.key] = _Retry(entry)
        if kept:
            self.logger.info(
                "Sending again %d record(s) that failed in earlier runs (kept in %s)",
                len(kept),
                self.folder.location,
            )
        return sorted(kept.values(), key=lambda e: (e.first_failed_at, e.key))

    def _entries(self, name: str) -> Iterator[FailedEntry]:
        for number, line in enumerate(self.folder.read(name).splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield _read_line(line)
            except msgspec.DecodeError as exc:
                self.logger.warning(
                    "Skipped line %d of %s/%s, which is not a failed record (%s)",
                    number, self.folder.location, name, exc,
                )  # fmt: skip

    # -- each batch ------------------------------------------------------------------------

    def batch_done(self, outcomes: Iterable[tuple[Any, str, bool, str | None]], kept: bool) -> None:
        """One batch's records, settled: (item, outcome, failed, error) each.

        ``kept``: the batch completed (its STATE may follow). A batch that stops the run keeps
        nothing new: no STATE covers it, so the tap sends its records again.
        """
        new: list[FailedEntry] = []
        settled: list[tuple[bytes, int]] = []
        spooled: list[int] = []
        now = _now()
        retries = self._retries
        for item, outcome, failed, error in outcomes:
            if item.spooled:
                spooled.append(item.seq)
            if item.ouid and outcome in SETTLING_OUTCOMES:
                ts = item.ts
                settled.append((_person(item.ouid), NO_TIMESTAMP if ts is None else ts))
            if not (failed or retries):  # most records: nothing to keep, nothing sent again
                continue
            retry = retries.get(item.failed_key) if item.failed_key else None
            if retry is not None:
                if kept:
                    retry.failed_again, retry.error = failed, error
                continue
            if not failed:
                continue
            if not kept or not item.spooled:
                continue
            raw = self.spool.get(item.seq)
            if raw is None:  # cannot happen: kept on arrival, dropped once settled
                raw = b"null"
            key = entry_key(item.stream, raw)
            if key in self._new or key in self._retries:
                continue
            entry = FailedEntry(
                key=key,
                stream=item.stream,
                record=msgspec.Raw(raw),
                organization_user_id=item.ouid,
                timestamp=item.timestamp,
                error=error,
                failures=1,
                first_failed_at=now,
                last_failed_at=now,
            )
            self._new[key] = entry
            new.append(entry)
        settled.sort()  # in key order: each page of the table is visited once (small cache)
        with self._settled:
            _SETTLE.run(self._settled, settled)
        self.spool.drop(spooled)
        if new and not self.dry_run:
            self._batches += 1
            name = f"run-{self.run_id}-{self._batches}.jsonl"
            self.folder.write(name, _lines(new))
            self._written_files.append(name)

    # -- end of a completed run ------------------------------------------------------------

    def _superseded(self, entry: FailedEntry) -> bool:
        """Whether a newer record of the same person settled in this run."""
        row = self._settled.execute(
            "SELECT ts FROM settled WHERE person = ?", (_person(entry.organization_user_id or ""),)
        ).fetchone()
        if row is None:
            return False
        newer: int = row[0]
        try:
            failed_at = parse_timestamp(entry.timestamp) if entry.timestamp else None
        except (ValueError, OverflowError):
            failed_at = None
        return failed_at is None or newer > to_micros(failed_at)

    def finish(self) -> None:
        """Rewrite the folder: what is still to retry in ``pending.jsonl``, what no longer
        will be in ``exhausted.jsonl``; the batch files it folds in are removed."""
        if self.dry_run or not (self._read_files or self._new or self._retries):
            return
        now = _now()
        pending: list[FailedEntry] = []
        exhausted: dict[str, FailedEntry] = dict(self._exhausted)
        written, dropped, superseded = 0, 0, 0
        for retry in self._retries.values():
            entry = retry.entry
            if retry.failed_again is None:
                pending.append(entry)  # not settled in this run (a batch that stopped it)
            elif not retry.failed_again:
                written += 1
            elif self._superseded(entry):
                superseded += 1
            else:
                entry.failures += 1
                entry.last_failed_at = now
                entry.error = retry.error or entry.error
                if entry.retries >= self.max_retries:
                    exhausted[entry.key] = entry
                    dropped += 1
                else:
                    pending.append(entry)
        for entry in self._new.values():
            if self._superseded(entry):
                superseded += 1
            else:
                pending.append(entry)
        self.folder.write(PENDING, _lines(pending))
        if dropped or (exhausted and len(exhausted) != len(self._exhausted)):
            self.folder.write(EXHAUSTED, _lines(exhausted.values()))
        for name in {*self._read_files, *self._written_files} - {PENDING}:
            self.folder.delete(name)
        if written or superseded or dropped or pending:
            self.logger.info(
                "Failed records: %d from earlier runs now settled, %d superseded by a newer "
                "record of the same person, %d given up after %d retries (kept in %s), %d kept "
                "to retry next run in %s",
                written, superseded, dropped, self.max_retries, EXHAUSTED, len(pending),
                f"{self.folder.location}/{PENDING}",
            )  # fmt: skip
