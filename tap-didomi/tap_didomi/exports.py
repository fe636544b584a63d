"""Didomi batch exports on any fsspec filesystem: find them, list partitions, stream records.

Didomi writes Hive-style partitions, ``export-id={id}/date={YYYY-MM-DD}/users/*.json.gz``
(and, where the export holds them, ``events/``): newline-delimited JSON, gzip-compressed,
a partition possibly split over several files whose names change over time, so files are
selected by extension, never by name.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.core import url_to_fs

EXPORT_PREFIX = "export-id="
DATE_PREFIX = "date="
RECORD_SUFFIXES = (".json.gz", ".json")
KNOWN_FOLDERS = ("users", "events")
GZIP_MAGIC = b"\x1f\x8b"
# How many folder levels below export_path are searched for export-id=… folders
# (e.g. s3://bucket → data/ → export-id=…).
SEARCH_DEPTH = 3
EXTRA_BY_PROTOCOL = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure",
                     "abfs": "azure", "abfss": "azure"}

logger = logging.getLogger("tap-didomi")


class ExportError(Exception):
    """The export folder or one of its files cannot be read as a Didomi batch export."""


class ExportPathError(ExportError):
    """export_path names nothing that exists: a configuration problem, found before any read."""


class ExportDataError(ExportError):
    """A data file is malformed, truncated or corrupt: raised while records are being read."""


# Where the storage library looks for what a connection needs; said in every storage error.
STORAGE_HINT = (
    "check the credentials the storage library finds (environment variables, profile or "
    "instance role), the endpoint (e.g. AWS_ENDPOINT_URL, host and port in the URL) and the "
    "network"
)


def redact(url: str) -> str:
    """The URL without a password in it (ftp://user:secret@host → ftp://user:***@host)."""
    match = _USERINFO.match(url)
    if not match or ":" not in match.group(2):
        return url
    user = match.group(2).split(":", 1)[0]
    return f"{match.group(1)}{user}:***@{url[match.end():]}"


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@]*)@")


def _secret_free(text: str, url: str) -> str:
    """``text`` with the URL's password, if any, replaced (library messages may echo it)."""
    match = _USERINFO.match(url)
    if match and ":" in match.group(2):
        password = match.group(2).split(":", 1)[1]
        if password:
            text = text.replace(password, "***")
    return text


@dataclass(frozen=True)
class Export:
    """One ``export-id=…`` folder."""

    export_id: str
    path: str


@dataclass(frozen=True)
class Partition:
    """One ``date=YYYY-MM-DD`` folder of an export."""

    export: Export
    date: str
    path: str


@dataclass(frozen=True)
class ExportFile:
    """One data file of a partition's ``users/`` or ``events/`` folder."""

    path: str
    name: str  # the file name inside that folder: what the state remembers
    # When the storage last wrote it (seconds since the epoch, the storage's own clock); None
    # when the storage does not say.
    modified: float | None = None


@dataclass(frozen=True)
class DatedFile:
    """A data file found anywhere in an export, with the partition date and folder it is in."""

    date: str
    folder: str
    file: ExportFile


def modified_time(entry: dict[str, Any]) -> float | None:
    """The modification time in a listing entry (local ``mtime``, S3 ``LastModified``, GCS
    ``updated``, Azure ``last_modified``) as seconds since the epoch; None if it has none."""
    for key in ("mtime", "LastModified", "updated", "last_modified"):
        value = entry.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, dt.datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
            return aware.timestamp()
    return None


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


class ExportStore:
    """Read-only view of the folder or bucket prefix named by ``export_path``."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") or url
        self.shown_url = redact(self.url)
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        try:
            # A fresh instance per run: fsspec caches instances and their directory listings
            # per process, and a listing from an earlier run would hide files written since.
            fs, root = url_to_fs(url, skip_instance_cache=True)
        except ImportError as exc:
            extra = EXTRA_BY_PROTOCOL.get(protocol)
            hint = f"pip install 'tap-didomi[{extra}]'" if extra else "install its fsspec driver"
            raise ExportPathError(
                f"export_path {redact(url)!r} needs the storage driver for {protocol}:// ({exc}); "
                f"{hint}"
            ) from exc
        except ValueError as exc:
            raise ExportPathError(
                f"export_path {redact(url)!r}: unknown storage protocol {protocol!r} ({exc}); "
                "use a local folder, s3://bucket/prefix, gs://bucket/prefix or "
                "az://container/prefix"
            ) from exc
        except Exception as exc:
            # Some filesystems connect when created (ftp, sftp): a refused connection or bad
            # login surfaces here, as the library's own exception type.
            raise self._storage_error("connect to", url, exc) from exc
        self.fs: fsspec.AbstractFileSystem = fs
        self._reported: set[str] = set()
        self._all_files: dict[str, list[DatedFile]] = {}
        self.root: str = root.rstrip("/") or root

    # -- names -------------------------------------------------------------------------------

    def display(self, path: str) -> str:
        """The path as the user would write it (with its protocol for cloud storage)."""
        if "://" not in self.url:
            return path
        return redact(str(self.fs.unstrip_protocol(path)))

    def _storage_error(self, action: str, where: str, exc: BaseException) -> ExportError:
        """One clear message for whatever the storage library raised (botocore, aiohttp,
        google-auth, azure-core and socket errors share no base class)."""
        detail = _secret_free(f"{type(exc).__name__}: {exc}", self.url)
        return ExportError(f"cannot {action} {redact(where)} ({detail}); {STORAGE_HINT}")

    # -- listing -----------------------------------------------------------------------------

    def _ls(self, path: str) -> list[dict[str, Any]]:
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError as exc:
            if path == self.root:
                # Nothing was read yet and nothing is there: the setting is wrong.
                raise ExportPathError(
                    f"export_path {self.display(path)} does not exist: set it to the folder or "
                    f"bucket prefix Didomi exports into (at or above the {EXPORT_PREFIX}… "
                    "folders)"
                ) from exc
            raise ExportError(
                f"{self.display(path)} does not exist: check export_path (it names the folder "
                f"at or above the {EXPORT_PREFIX}… folders)"
            ) from exc
        except PermissionError as exc:
            raise ExportError(
                f"not allowed to list {self.display(path)} "
                f"({_secret_free(str(exc), self.url)}); check the credentials the storage "
                "library finds (environment, profile or instance role)"
            ) from exc
        except Exception as exc:
            raise self._storage_error("list", self.display(path), exc) from exc
        # Some stores list the folder itself among its children.
        own = path.rstrip("/")
        return [e for e in entries if str(e["name"]).rstrip("/") != own]

    def _dirs(self, path: str) -> list[str]:
        return sorted(str(e["name"]).rstrip("/") for e in self._ls(path)
                      if e.get("type") == "directory")

    def exports(self) -> list[Export]:
        """The ``export-id=…`` folders at or below export_path, sorted by path."""
        if _basename(self.root).startswith(EXPORT_PREFIX):
            self._ls(self.root)  # a clear message when it is missing or unreachable
            if not self.fs.isdir(self.root):
                raise ExportError(f"{self.display(self.root)} is not a folder: check export_path")
            return [Export(_basename(self.root)[len(EXPORT_PREFIX):], self.root)]
        if _basename(self.root).startswith(DATE_PREFIX):
            raise ExportError(
                f"export_path {self.shown_url!r} names a date partition: set it to the folder "
                f"at or above the {EXPORT_PREFIX}… folders; the tap picks the dates itself"
            )
        found: list[Export] = []
        level = [self.root]
        for _ in range(SEARCH_DEPTH):
            below: list[str] = []
            for folder in level:
                for child in self._dirs(folder):
                    name = _basename(child)
                    if name.startswith(EXPORT_PREFIX):
                        found.append(Export(name[len(EXPORT_PREFIX):], child))
                    else:
                        below.append(child)
            if found or not below:
                break
            level = below
        if not found:
            raise ExportError(
                f"no {EXPORT_PREFIX}… folder found in {self.display(self.root)} (searched "
                f"{SEARCH_DEPTH} levels down): set export_path to the folder Didomi exports "
                f"into, which holds {EXPORT_PREFIX}{{id}}/{DATE_PREFIX}YYYY-MM-DD/users/"
            )
        return sorted(found, key=lambda e: e.path)

    def partitions(self, export: Export) -> list[Partition]:
        """The export's ``date=…`` partitions, oldest first."""
        partitions = []
        for entry in self._ls(export.path):
            path = str(entry["name"]).rstrip("/")
            name = _basename(path)
            if entry.get("type") != "directory" or not name.startswith(DATE_PREFIX):
                logger.warning("Ignoring %s: not a %sYYYY-MM-DD folder",
                               self.display(path), DATE_PREFIX)
                continue
            date = name[len(DATE_PREFIX):]
            try:
                dt.date.fromisoformat(date)
            except ValueError as exc:
                raise ExportError(
                    f"{self.display(path)}: {date!r} is not a YYYY-MM-DD date; Didomi names "
                    f"partitions {DATE_PREFIX}YYYY-MM-DD, so this folder is not part of an "
                    "export: move it out of the export folder"
                ) from exc
            partitions.append(Partition(export, date, path))
        return sorted(partitions, key=lambda p: p.date)

    def has_folder(self, partition: Partition, folder: str) -> bool:
        return f"{partition.path}/{folder}" in self._dirs(partition.path)

    def files(self, partition: Partition, folder: str) -> list[ExportFile]:
        """The data files of ``{partition}/{folder}/`` (none when the folder is absent)."""
        folder_path = f"{partition.path}/{folder}"
        present = self._dirs(partition.path)
        for other in present:
            name = _basename(other)
            if name not in KNOWN_FOLDERS and name not in self._reported:
                self._reported.add(name)  # once per run: the same folders recur every day
                logger.info("Ignoring %s/ folders (e.g. %s): the tap reads %s", name,
                            self.display(other), " and ".join(f"{k}/" for k in KNOWN_FOLDERS))
        if folder_path not in present:
            return []
        files = []
        for entry in self._ls(folder_path):
            path = str(entry["name"]).rstrip("/")
            name = _basename(path)
            if entry.get("type") == "file" and name.endswith(RECORD_SUFFIXES):
                files.append(ExportFile(path, name, modified_time(entry)))
            elif entry.get("type") == "file" and int(entry.get("size") or 0) == 0:
                continue  # empty marker files (e.g. _SUCCESS) hold no records
            else:
                logger.warning("Ignoring %s: not a .json or .json.gz file", self.display(path))
        return sorted(files, key=lambda f: f.name)

    def all_files(self, export: Export) -> list[DatedFile]:
        """Every data file of every partition of the export, in one recursive listing (a few
        calls on object storage, however many partitions): kept for the run, as both streams
        ask."""
        cached = self._all_files.get(export.path)
        if cached is not None:
            return cached
        try:
            found = self.fs.find(export.path, detail=True)
        except FileNotFoundError:
            found = {}
        except Exception as exc:
            raise self._storage_error("list", self.display(export.path), exc) from exc
        files = []
        prefix = export.path.rstrip("/") + "/"
        for path, entry in found.items():
            parts = str(path)[len(prefix):].split("/") if str(path).startswith(prefix) else []
            if (len(parts) != 3 or not parts[0].startswith(DATE_PREFIX)
                    or not parts[2].endswith(RECORD_SUFFIXES)):
                continue
            files.append(DatedFile(parts[0][len(DATE_PREFIX):], parts[1],
                                   ExportFile(str(path), parts[2], modified_time(entry))))
        files.sort(key=lambda f: (f.date, f.folder, f.file.name))
        self._all_files[export.path] = files
        return files

    # -- reading -----------------------------------------------------------------------------

    def read(self, file: ExportFile) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(line number, record)`` for every line of the file, gunzipping as it goes.

        A line that is not a JSON object, or gzip data that cannot be decompressed, raises
        ExportError naming the file and the line: nothing is skipped.
        """
        where = self.display(file.path)
        gzipped = file.name.endswith(".gz")
        line_no = 0
        try:
            with self.fs.open(file.path, "rb") as raw:
                lines = gzip.GzipFile(fileobj=raw) if gzipped else raw
                try:
                    for line_no, line in enumerate(lines, start=1):
                        if not line.strip():
                            continue
                        yield line_no, _parse_line(line, where, line_no)
                except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                    read = (f"lines 1 to {line_no} were read" if line_no
                            else "no line of it could be read")
                    raise ExportDataError(
                        f"{where}: corrupt gzip data at line {line_no + 1} ({exc}); {read}. The "
                        "file is damaged or cut short: replace it with a good copy from Didomi "
                        "and run again"
                    ) from exc
                # GzipFile reads a 0-byte file as an empty stream, without an error: such a
                # file is one still being written or a failed upload, and bookmarking it as
                # read would hide the data that lands in it later.
                if line_no == 0 and (not gzipped or raw.tell() == 0):
                    raise ExportDataError(
                        f"{where}: the file is empty (0 bytes), so it is not a complete "
                        f"{'gzip' if gzipped else 'JSON'} file: Didomi may still have been "
                        "writing it, or its upload failed. Replace it with a good copy from "
                        "Didomi (or delete it if it has no data) and run again"
                    )
        except ExportError:
            raise
        except FileNotFoundError as exc:
            raise ExportDataError(
                f"{where} disappeared while the export was being read") from exc
        except PermissionError as exc:
            raise ExportError(
                f"not allowed to read {where} ({_secret_free(str(exc), self.url)}); "
                f"{STORAGE_HINT}") from exc
        except Exception as exc:
            raise self._storage_error("read", where, exc) from exc


def _parse_line(line: bytes, where: str, line_no: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        hint = (
            " (the file is gzip-compressed: name it .json.gz)"
            if line_no == 1 and line.startswith(GZIP_MAGIC)
            else ""
        )
        raise ExportDataError(
            f"{where}: line {line_no} is not valid JSON: {exc}{hint}. Didomi exports hold one "
            "JSON object per line; fix or replace the file and run again"
        ) from exc
    if not isinstance(record, dict):
        raise ExportDataError(
            f"{where}: line {line_no} is a JSON {type(record).__name__}, not an object; "
            "Didomi exports hold one JSON object per line"
        )
    return record
