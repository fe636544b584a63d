"""The Singer target: settings, the check before the first record, and SDK wiring."""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import platform
import queue
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from types import FrameType
from typing import IO, Any, ClassVar, Literal, NoReturn, cast

import msgspec
from consent_pipelines_common.cli import (
    TextAbout,
    config_file_problem,
    fail,
    progress_interval,
)
from jsonschema import Draft7Validator
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.contrib.msgspec import decoder as msgspec_decoder
from singer_sdk.exceptions import (
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.helpers.capabilities import PluginCapabilities, TargetCapabilities
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.target_base import Target

from target_salesforce_consent.didomi import PlainShape, UnreadableRecord
from target_salesforce_consent.failed_records import (
    FailedRecordStore,
    default_failed_records_root,
    open_folder,
)
from target_salesforce_consent.report import (
    Outcome,
    OutcomeLine,
    ProgressLog,
    RunReport,
    format_counts,
)
from target_salesforce_consent.salesforce.bulk import BulkIngest
from target_salesforce_consent.salesforce.client import RetryPolicy, SalesforceClient
from target_salesforce_consent.salesforce.describe import describe_object
from target_salesforce_consent.salesforce.errors import (
    ApiLimitExceededError,
    AuthenticationError,
    SalesforceError,
)
from target_salesforce_consent.salesforce_changes import start_salesforce_changes
from target_salesforce_consent.settings import (
    CHECKED_SETTINGS,
    INAPPLICABLE_SDK_SETTINGS,
    ConfigurationError,
    Settings,
    check_against_object,
    read_settings,
    unknown_setting_problems,
)
from target_salesforce_consent.sinks import BatchProcessor, BufferedRecord, ConsentSink, RunError

SECRET_SETTINGS = ("client_id", "client_secret")
#: From this batch_size_rows on, the first two batches are smaller (see _batch_limit).
RAMP_MIN_BATCH = 4000

# The connection to the org: the same settings in every plugin that talks to Salesforce.
CONNECTION_PROPERTIES = (
    th.Property(
        "instance_url",
        th.StringType,
        required=True,
        title="Instance URL",
        description=(
            "The org's My Domain URL, e.g. `https://acme.my.salesforce.com`. Must be https, "
            "except for loopback hosts (the sandbox)."
        ),
    ),
    th.Property(
        "client_id",
        th.StringType,
        required=True,
        secret=True,
        title="Client ID",
        description="Consumer key of the connected app / external client app "
        "(OAuth 2.0 client credentials flow).",
    ),
    th.Property(
        "client_secret",
        th.StringType,
        required=True,
        secret=True,
        title="Client Secret",
        description="Consumer secret of the connected app / external client app.",
    ),
)

MAPPING_SCHEMA = th.ObjectType(
    th.Property("id", th.StringType, required=True, description="Salesforce field API name."),
    th.Property(
        "value",
        th.StringType,
        required=True,
        description="Source path, e.g. `purposes.newsletter.enabled`.",
    ),
    th.Property("invert", th.BooleanType, description="Negate a boolean (null stays null)."),
    th.Property(
        "value_map",
        th.ObjectType(additional_properties=th.StringType),
        description="Translate values (value ids to picklist values, true/false to text).",
    ),
    additional_properties=False,
)


class _PlainMessage(msgspec.Struct):
    type: Literal["RECORD"]
    stream: str
    record: PlainShape


_plain_message = msgspec.json.Decoder(_PlainMessage, float_hook=Decimal).decode


class PlainLine:
    """A RECORD of Didomi's own shape, as the reader decodes it first: only what the plain
    reader reads (``PlainShape``), and the line, decoded whole should anything need more."""

    __slots__ = ("line", "shape")

    def __init__(self, shape: PlainShape, line: str) -> None:
        self.shape = shape
        self.line = line


class SingerLineReader(MsgSpecReader):
    """msgspec's fast reader; a line it refuses is read again by the standard library.

    A RECORD in Didomi's own shape is decoded first into only what the plain reader reads
    (its record a :class:`PlainLine`); the target decodes its line whole when it needs more.

    msgspec refuses a lone surrogate escape (``"\\ud800"``) that json accepts; such a record
    must reach the target, which reports it as failed, instead of stopping the run.
    """

    #: Set with max_latency_seconds: called after each line and whenever the input has been
    #: quiet for the seconds it returned last (None: wait for the next line however long).
    idle_check: Callable[[], float | None] | None = None

    #: Set by the target: reads a RECORD line in Didomi's own shape (its stream, the record
    #: decoded as ``PlainShape``, the line) straight into its batch, and says whether it did.
    #: The SDK's loop (messages as dicts, a callback per type) then sees only the other lines,
    #: and counts the records read this way with its own.
    read_plain_record: Callable[[str, PlainShape, str], bool] | None = None

    #: The line last read and the message decoded from it: the failed-records spool keeps a
    #: RECORD's line as sent (decoded again only should the record fail), not its JSON.
    line: str = ""
    message: dict | None = None
    #: A line that ``read_plain_record`` did not read (refused, or not in the plain shape):
    #: decoded whole next.
    _refused: str | None = None

    def deserialize_json(self, line: str) -> dict:
        if line is self._refused:
            self._refused = None
            return self.decode_whole(line)
        try:
            plain = _plain_message(line)
        except (msgspec.DecodeError, RecursionError):  # not in the plain shape: decoded whole
            return self.decode_whole(line)
        return {"type": "RECORD", "stream": plain.stream, "record": PlainLine(plain.record, line)}

    def _unread_lines(self, lines: Iterable[str], read: list[int]) -> Iterator[str]:
        """The lines of ``lines`` that ``read_plain_record`` does not read (it reads the others
        as they come, in order), counting in ``read[0]`` those it read."""
        read_plain = self.read_plain_record
        assert read_plain is not None
        decode = _plain_message
        for line in lines:
            try:
                plain = decode(line)
            except (msgspec.DecodeError, RecursionError):
                plain = None
            if plain is not None and read_plain(plain.stream, plain.record, line):
                read[0] += 1
            else:
                self._refused = line  # decoded whole next, not tried in the plain shape again
                yield line

    def decode_whole(self, line: str) -> dict:
        """The message of ``line`` as a dict (the record as sent)."""
        self.line, self.message = line, None
        try:
            self.message = msgspec_decoder.decode(line)
            return self.message
        except msgspec.DecodeError:
            try:
                return json.loads(line, parse_float=Decimal)
            except ValueError:
                return super().deserialize_json(line)  # raises the SDK's own error
            except RecursionError:
                return too_deep_message(line)
        except RecursionError:
            return too_deep_message(line)

    def line_of(self, message: dict) -> str | None:
        """The line ``message`` was decoded from by msgspec, when it is the last one read."""
        return self.line if message is self.message else None

    @staticmethod
    def record_of_line(line: str) -> Any:
        """The record of a RECORD line that :meth:`line_of` gave, decoded as it was then."""
        return msgspec_decoder.decode(line)["record"]

    def process_lines(self, file_input: IO[str] | None,
                      callbacks: dict[str, Callable[[dict], None]]) -> Any:
        lines: Iterable[str] = file_input or self.default_input
        if self.idle_check is not None:
            lines = lines_with_idle_checks(lines, self.idle_check)
        if self.read_plain_record is None:
            return super().process_lines(cast("IO[str]", lines), callbacks)
        read = [0]
        counts = super().process_lines(cast("IO[str]", self._unread_lines(lines, read)),
                                       callbacks)
        if read[0]:
            counts["RECORD"] += read[0]
        return counts


def too_deep_message(line: str) -> dict:
    """A line nested deeper than the JSON readers go: a RECORD fails alone (its stream and
    type are read from the top level of the line); any other message stops the run."""
    top = top_level_strings(line, {"type", "stream"})
    if top.get("type") == "RECORD" and "stream" in top:
        problem = (
            "the record is nested deeper than the JSON reader can follow "
            f"({len(line)} characters); no Didomi record nests this deep, so the tap or a "
            "relay produced it: fix the source of this record"
        )
        return {"type": "RECORD", "stream": top["stream"], "record": UnreadableRecord(problem)}
    raise InvalidInputLine(
        "a Singer message is nested deeper than the JSON reader can follow "
        f"({len(line)} characters, type {top.get('type')!r})"
    )


_COLON = re.compile(r"\s*:")


def top_level_strings(line: str, names: set[str]) -> dict[str, str]:
    """The string values of the top-level keys `names` of a JSON object line, found without
    decoding the whole line (a scan that keeps count of the nesting, never recursing)."""
    found: dict[str, str] = {}
    depth = 0
    key: str | None = None  # a top-level key whose value comes next
    i, end = 0, len(line)
    while i < end:
        char = line[i]
        if char == '"':
            j = i + 1
            while j < end and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            if depth == 1:
                try:
                    text = json.loads(line[i : j + 1])
                except ValueError:
                    return found
                if key is not None:
                    if key in names:
                        found[key] = text
                    key = None
                elif _COLON.match(line, j + 1):
                    key = text
            i = j + 1
            continue
        if char in "{[":
            depth += 1
            if depth == 2:
                key = None  # the value is an object or array
        elif char in "}]":
            depth -= 1
        elif char == "," and depth == 1:
            key = None
        i += 1
    return found


class _InputEnded:
    """The reader thread's last item: the input ended, or failed with ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def lines_with_idle_checks(source: Iterable[str], idle_check: Callable[[], float | None]
                           ) -> Iterator[str]:
    """The lines of ``source``, calling ``idle_check`` after each one and while none comes.

    Reading stdin blocks until a line arrives; a thread reads it instead, so that a batch can
    be written on time while a tap (one that follows a webhook spool) is quiet.
    """
    lines: queue.Queue[str | _InputEnded] = queue.Queue(maxsize=10_000)

    def pump() -> None:
        try:
            for line in source:
                lines.put(line)
        except BaseException as exc:
            lines.put(_InputEnded(exc))
            return
        lines.put(_InputEnded())

    threading.Thread(target=pump, name="singer-input", daemon=True).start()
    wait = idle_check()
    while True:
        try:
            item = lines.get() if wait is None else lines.get(timeout=max(wait, 0.0))
        except queue.Empty:
            wait = idle_check()
            continue
        if isinstance(item, _InputEnded):
            if item.error is not None:
                raise item.error
            return
        yield item
        wait = idle_check()


class TargetSalesforceConsent(TextAbout, Target):
    """Writes Didomi consent into Salesforce Leads or Contacts through Bulk API 2.0."""

    name = "target-salesforce-consent"
    default_sink_class = ConsentSink
    # msgspec parses a Singer line several times faster than the standard library's json.
    message_reader_class = SingerLineReader
    # Timings of the Salesforce conversation; tests use a subclass without waits.
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    poll_interval: ClassVar[float] = 1.0
    # No schema flattening: the target reads Didomi's nested consent objects itself.
    capabilities = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.STRUCTURED_LOGGING,
        TargetCapabilities.VALIDATE_RECORDS,
    ]

    config_jsonschema = th.PropertiesList(
        *CONNECTION_PROPERTIES,
        th.Property(
            "salesforce_object",
            th.StringType,
            required=True,
            allowed_values=["Lead", "Contact"],
            title="Salesforce Object",
            description="`Lead` or `Contact`: the object this configuration keeps in step.",
        ),
        th.Property(
            "upsert_mode",
            th.BooleanType,
            default=False,
            title="Upsert Mode",
            description="`true`: create a Lead/Contact for an organization_user_id that matches "
            "none. `false`: report it as `skipped_unmatched`.",
        ),
        th.Property(
            "mappings",
            th.ArrayType(MAPPING_SCHEMA),
            required=True,
            title="Mappings",
            description='Field mappings in Didomi\'s format: `[{"id": "HasOptedOutOfEmail", '
            '"value": "purposes.newsletter.enabled", "invert": true}]`.',
        ),
        th.Property(
            "match_field",
            th.StringType,
            default="Email",
            title="Match Field",
            description="API name of the Salesforce field that holds the organization_user_id.",
        ),
        th.Property(
            "insert_defaults",
            th.ObjectType(
                additional_properties=th.CustomType(
                    {"type": ["string", "boolean", "number", "null"]}
                )
            ),
            default={},
            title="Insert Defaults",
            description="Constant field values used only on records the target creates "
            "(e.g. `LastName`, `Company`, `LeadSource`).",
        ),
        th.Property(
            "on_multiple_matches",
            th.StringType,
            default="update_all",
            allowed_values=["update_all", "skip"],
            title="On Multiple Matches",
            description="`update_all`: write every matching record; `skip`: write none and "
            "report `skipped_multiple_matches`.",
        ),
        th.Property(
            "regulations",
            th.ArrayType(th.StringType),
            default=["gdpr"],
            title="Regulations",
            description="Didomi regulations to apply; other records are `skipped_filtered`. "
            "A record without `regulation` counts as `gdpr`.",
        ),
        th.Property(
            "consent_timestamp_field",
            th.StringType,
            title="Consent Timestamp Field",
            description="API name of a Salesforce Date/Time field. When set, the newest consent "
            "wins: records holding a newer timestamp are `skipped_stale`, and every write sets it.",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            title="Dry Run",
            description="Read-only: match and plan, write nothing, emit no STATE.",
        ),
        th.Property(
            "report_path",
            th.StringType,
            title="Report Path",
            description="Path of a JSON Lines file with one outcome line per input record; "
            "`{timestamp}` in it becomes the run's start in UTC (one report per run).",
        ),
        th.Property(
            "api_version",
            th.StringType,
            default="62.0",
            title="API Version",
            description="Salesforce API version used in every data URL.",
        ),
        th.Property(
            "fail_on_record_errors",
            th.BooleanType,
            default=False,
            title="Fail On Record Errors",
            description="`true`: a permanent per-record error also makes the run fail "
            "(non-zero exit, no STATE).",
        ),
        th.Property(
            "failed_records_path",
            th.StringType,
            title="Failed Records Path",
            description="Folder (or s3://, gs://, az:// URL: the `s3` extra, or fsspec with "
            "gcsfs or adlfs) where "
            "failed records are kept and retried from on the next runs. Default: "
            "`.meltano/run/target-salesforce-consent/failed-records` in a Meltano project, "
            "else `$XDG_STATE_HOME/target-salesforce-consent/failed-records` "
            "(`~/.local/state/...`); one sub-folder per org and object.",
        ),
        th.Property(
            "max_record_retries",
            th.IntegerType,
            default=5,
            title="Max Record Retries",
            description="How many later runs send a failed record again before it is given up "
            "(moved to exhausted.jsonl). 0: failed records are neither kept nor retried.",
        ),
        th.Property(
            "respect_salesforce_changes",
            th.BooleanType,
            title="Respect Salesforce Changes",
            description="Leave a mapped field alone when a person (anyone but the target's own "
            "user) changed it in Salesforce after the Didomi choice, read from the field history "
            "(`LeadHistory`/`ContactHistory`); a record left with nothing to write is "
            "`skipped_salesforce_newer`. Unset: on when the field history can be read.",
        ),
        th.Property(
            "max_latency_seconds",
            th.NumberType,
            title="Max Latency Seconds",
            description="Write a batch once its oldest record has waited this many seconds, "
            "even when no further record arrives (a tap that follows a webhook spool). "
            "Unset: batches are written when full or at the end of the input.",
        ),
        th.Property(
            "validate_records",
            th.BooleanType,
            default=False,
            title="Validate Records",
            description="Validate records against the tap's SCHEMA. Off by default: the target "
            "recognises Didomi record shapes itself, and reports a record it cannot read.",
        ),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._schema_problems: list[str] = []
        super().__init__(*args, **kwargs)
        # singer-sdk reads config.get("validate_records", True), and a schema default never
        # reaches the config: make "off unless set" explicit in the effective config.
        if self._config.get("validate_records") is None:
            self._config = {**self._config, "validate_records": False}
        # One Salesforce writer at a time: jobs of two sinks must never race on a record.
        self.max_parallelism = 1
        self._buffer: list[BufferedRecord] = []
        self._plain_sinks: dict[Any, ConsentSink | None] = {}
        # Records of the batch being read before it is handed over, by sink (_batch_limit).
        self._read_limits: dict[ConsentSink, int] = {}
        self._processor: BatchProcessor | None = None
        self._report: RunReport | None = None
        self._summary_logged = False
        self._progress = ProgressLog(
            self.logger, self._outcome_counts, progress_interval(os.environ, self.logger)
        )
        self._writing = False  # a batch is being written to Salesforce
        self._handed_over = 0  # batches handed to the processor
        self._failed: FailedRecordStore | None = None
        self._oldest_buffered_at: float | None = None  # time.monotonic() of the oldest record
        self._max_latency: float | None = None
        if kwargs.get("validate_config", True):
            processor = self._start_run()
            self._max_latency = processor.rs.settings.max_latency_seconds
            if self._max_latency is not None and isinstance(self.message_reader,
                                                            SingerLineReader):
                self.message_reader.idle_check = self._drain_if_late
        if isinstance(self.message_reader, SingerLineReader):
            self.message_reader.read_plain_record = self._read_plain_record

    # -- configuration ---------------------------------------------------------------------

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        super().append_builtin_config(config_jsonschema)
        # upsert_mode alone decides whether records are created.
        config_jsonschema["properties"].pop("load_method", None)

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Collect schema problems; they are reported with the others in one message."""
        schema = self.config_jsonschema
        self.append_builtin_config(schema)
        problems = []
        for error in Draft7Validator(schema).iter_errors(dict(self._config)):
            if error.validator == "required" and not error.absolute_path:
                continue  # the settings check names missing settings, with what to set
            if len(error.absolute_path) == 1 and error.absolute_path[0] in CHECKED_SETTINGS:
                continue  # the settings check names its type or value, with what to write
            if len(error.absolute_path) > 1 and error.absolute_path[0] == "mappings":
                continue  # the mapping check names each bad mapping, with what to write
            where = ".".join(str(p) for p in error.absolute_path) or "config"
            if where.split(".")[0] in SECRET_SETTINGS:
                problems.append(f"{where} must be a non-empty string")  # never echo a secret
            else:
                problems.append(f"{where}: {error.message}")
        problems += unknown_setting_problems(self._config, schema["properties"])
        for name in INAPPLICABLE_SDK_SETTINGS:
            if self._config.get(name) not in (None, False, ""):
                self.logger.warning(
                    "%s does not apply to this target and is ignored (upsert_mode alone "
                    "decides whether records are created)",
                    name,
                )
        self._schema_problems = problems
        return problems

    def _start_run(self) -> BatchProcessor:
        """Everything that can fail before the first record is read."""
        settings, problems = read_settings(self.config)
        # A setting the schema check already named is not named again by the settings check.
        named = {p.split(":")[0].split(".")[0].split(" ")[0] for p in self._schema_problems}
        problems = self._schema_problems + [p for p in problems if p.split(" ")[0] not in named]
        if settings is None:
            raise ConfigurationError(problems)
        client = SalesforceClient(
            settings.instance_url,
            settings.client_id,
            settings.client_secret,
            api_version=settings.api_version,
            retry=self.retry_policy,
        )
        try:
            client.authenticate()
            obj = describe_object(client, settings.salesforce_object)
        except AuthenticationError as exc:
            raise ConfigurationError(
                [*problems, f"Salesforce refused the credentials: {exc}"]
            ) from None
        except ApiLimitExceededError as exc:
            raise RunError(limit_message(exc)) from None
        except SalesforceError as exc:
            if is_outage(exc, authenticated=client.authenticated):
                raise RunError(unavailable_message(exc)) from None
            raise ConfigurationError(
                [*problems, f"Salesforce call failed during the check: {exc}"]
            ) from None
        resolved, org_problems = check_against_object(settings, obj)
        problems += org_problems
        if resolved is None or problems:
            raise ConfigurationError(problems)
        try:
            self._report = RunReport(report_file_path(settings.report_path))
        except OSError as exc:
            raise ConfigurationError(
                [
                    f"report_path {settings.report_path!r} cannot be written ({exc.strerror}): "
                    "give a file path in a writable directory"
                ]
            ) from None
        self._failed = self._open_failed_records(settings)
        self.logger.info(
            "Writing %s to %s %s through Bulk API 2.0%s",
            ", ".join(m.field for m in resolved.mappings),
            settings.salesforce_object,
            "records (creating unmatched ones)" if settings.upsert_mode else "records",
            " (dry run: nothing is written)" if settings.dry_run else "",
        )
        try:
            changes = start_salesforce_changes(
                settings.respect_salesforce_changes, client, resolved, self.logger
            )
        except ApiLimitExceededError as exc:
            raise RunError(limit_message(exc)) from None
        except SalesforceError as exc:  # only an outage: an unreadable history falls back
            raise RunError(unavailable_message(exc)) from None
        processor = BatchProcessor(
            resolved,
            client,
            BulkIngest(client, poll_interval=self.poll_interval),
            self._report,
            self.logger,
            salesforce_changes=changes,
        )
        self._processor = processor
        if self._failed is not None:
            processor.on_batch = self._batch_settled
            self._send_failed_again(self._failed)
        return processor

    # -- failed records, kept and sent again (failed_records.py) -----------------------------

    def _open_failed_records(self, settings: Settings) -> FailedRecordStore | None:
        if settings.max_record_retries == 0:
            return None
        root = settings.failed_records_path or default_failed_records_root(os.environ)
        try:
            folder = open_folder(root, settings.instance_url, settings.salesforce_object)
            store = FailedRecordStore(
                folder, settings.max_record_retries, dry_run=settings.dry_run, logger=self.logger
            )
            store.check()
            if isinstance(self.message_reader, SingerLineReader):
                store.spool.record_of_line = SingerLineReader.record_of_line
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigurationError(
                [
                    f"failed_records_path {root!r} cannot be used ({reason}): give a writable "
                    "folder or bucket URL, or set max_record_retries to 0 to keep no failed "
                    "records"
                ]
            ) from None
        return store

    def _send_failed_again(self, store: FailedRecordStore) -> None:
        """Records that failed in earlier runs go first, before any new input."""
        assert self._processor is not None
        try:
            entries = store.load()
        except OSError as exc:
            raise RunError(
                f"the failed records kept in {store.folder.location} cannot be read "
                f"({exc.strerror or exc}); nothing was read or written"
            ) from None
        batch_rows = self.config.get("batch_size_rows") or ConsentSink.MAX_SIZE_DEFAULT
        for entry in entries:
            record = entry.record if entry.record is not None else UnreadableRecord(
                entry.error or "the record could not be decoded"
            )
            item = self._processor.read(entry.stream, record)
            item.retry, item.failed_key = entry.failures, entry.key
            self.buffer(item)
            if self.buffered >= batch_rows:
                self.flush()

    def _batch_settled(
        self, buffer: list[BufferedRecord], lines: dict[int, OutcomeLine], completed: bool
    ) -> None:
        assert self._failed is not None
        try:
            self._failed.batch_done(
                (  # an Outcome is its value as text
                    (buffer[seq], line.outcome, line.outcome is Outcome.FAILED, line.error)
                    for seq, line in lines.items()
                ),
                completed,
            )
        except OSError as exc:
            raise RunError(
                f"the batch's failed records could not be kept in {self._failed.folder.location} "
                f"({exc.strerror or exc}); no STATE was emitted, so the tap sends them again"
            ) from None

    # -- the shared buffer (see sinks.py) ---------------------------------------------------

    def _process_record_message(self, message_dict: dict) -> None:
        record = message_dict.get("record")
        if record.__class__ is PlainLine:
            if self._read_plain_record(message_dict["stream"], record.shape, record.line):
                return
            # A stream with maps or validation, or a record the plain reader leaves to the
            # full path: the record as sent, decoded whole.
            message_dict = cast("SingerLineReader", self.message_reader).decode_whole(record.line)
            record = message_dict.get("record")
        if not isinstance(record, dict):
            # The SDK's record handling assumes an object; report anything else ourselves
            # (as failed) instead of crashing the run or dropping it.
            self._assert_line_requires(message_dict, requires={"stream"})
            self.buffer(self.read_record(str(message_dict["stream"]), record))
            return
        sink = self._plain_sink(message_dict.get("stream"))
        if sink is None:
            super()._process_record_message(message_dict)
            return
        # The SDK's per-record path, for a stream without maps, metadata or validation: what
        # remains of it are the counters (about 40% of a no-op target's time is spent in the
        # steps skipped here; the sink makes no key-property check, see ConsentSink).
        reader = self.message_reader
        line = reader.line_of(message_dict) if isinstance(reader, SingerLineReader) else None
        self._buffer_read(sink, self.read_record(sink.stream_name, record, line))

    def _read_plain_record(self, stream: str, shape: PlainShape, line: str) -> bool:
        """``SingerLineReader.read_plain_record``: what ``_process_record_message`` does with
        a RECORD in the plain shape, when the plain reader reads it (False: it did nothing)."""
        sink = self._plain_sinks.get(stream)
        if sink is None:  # a stream not seen yet, or one the plain reader leaves to the SDK
            sink = self._plain_sink(stream)
            if sink is None:
                return False
        processor = self._processor
        if processor is None:
            processor = self._start_run()
        failed = self._failed
        spool = failed.spool if failed is not None and not failed.dry_run else None
        if spool is not None and spool.record_of_line is None:
            return False  # only the record as sent can be kept
        item = processor.read_shape(sink.stream_name, shape)
        if item is None:
            return False
        if spool is not None and item.outcome in (None, Outcome.FAILED):
            spool.put_line(item.seq, line)  # should the record fail (as keep_record keeps it)
            item.spooled = True
        self._buffer_read(sink, item)
        return True

    def _buffer_read(self, sink: ConsentSink, item: BufferedRecord) -> None:
        sink.tally_record_read()
        self.buffer(item)
        sink.record_counter_metric.increment()
        limit = self._read_limits.get(sink)
        if limit is None:
            limit = self._read_limits[sink] = self._batch_limit(sink.max_size)
        if len(self._buffer) >= limit:
            self.drain_one(sink)
        self._handle_max_record_age()

    def _batch_limit(self, max_size: int) -> int:
        """Records in the batch being read before it is handed over.

        The first two batches of a large batch size are a quarter and a half of it: the org
        starts writing after a fraction of the first batch was read, and has that batch's rows
        to process while the next, larger one is read and matched.
        """
        if max_size < RAMP_MIN_BATCH or self._handed_over >= 2:
            return max_size
        return max_size >> (2 - self._handed_over)

    def _plain_sink(self, stream: Any) -> ConsentSink | None:
        """The stream's sink when nothing between the message and the sink would change the
        record (no stream map, no _sdc metadata, no validation); else None."""
        if stream in self._plain_sinks:
            return self._plain_sinks[stream]
        maps = self.mapper.stream_maps.get(stream, []) if isinstance(stream, str) else []
        sink = self._sinks_active.get(stream) if maps else None
        plain = None
        if (
            isinstance(sink, ConsentSink)
            and len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and maps[0].stream_alias == stream
            and not sink.include_sdc_metadata_properties
            and sink._validator is None
        ):
            plain = sink
        self._plain_sinks[stream] = plain
        return plain

    def _process_schema_message(self, message_dict: dict) -> None:
        self._plain_sinks.clear()  # a new SCHEMA may bring a new sink or new maps
        super()._process_schema_message(message_dict)

    def read_record(self, stream: str, raw: Any, line: str | None = None) -> BufferedRecord:
        """Read one record; ``line``: the Singer line it came in (see ``SingerLineReader``)."""
        if self._processor is None:
            self._start_run()
            assert self._processor is not None
        item = self._processor.read(stream, raw)
        if (
            self._failed is not None
            and not self._failed.dry_run
            and item.outcome in (None, Outcome.FAILED)  # filtered ones never fail
        ):
            self._failed.keep_record(item.seq, raw, line)  # on disk, should the record fail
            item.spooled = True
        return item

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def buffer(self, item: BufferedRecord) -> None:
        if not self._buffer:
            self._oldest_buffered_at = time.monotonic()
        self._buffer.append(item)
        self._progress.record_read()

    def _drain_if_late(self) -> float | None:
        """Write the buffer (and emit STATE) once its oldest record is max_latency_seconds
        old; returns the seconds until that, or None when nothing waits."""
        if self._oldest_buffered_at is None or self._max_latency is None:
            return None
        waited = time.monotonic() - self._oldest_buffered_at
        if waited < self._max_latency:
            return self._max_latency - waited
        self.logger.debug("Writing %d record(s): the oldest waited %.1f s (max_latency_seconds)",
                          self.buffered, waited)
        self.flush()
        self.drain_all()  # the sinks' counters, and the STATE that now covers these records
        return None

    def flush(self, *, settle: bool = False) -> None:
        """Hand the buffer to the processor; with `settle`, also wait until Salesforce has
        confirmed every write (the batch's jobs otherwise run while the next one is read)."""
        if not self._buffer and not (settle and self._processor is not None):
            return
        if self._processor is None:
            self._start_run()
            assert self._processor is not None
        batch, self._buffer = self._buffer, []
        self._oldest_buffered_at = None
        self._writing = True
        try:
            if batch:
                self._handed_over += 1
                self._read_limits.clear()
                self._processor.submit(batch)
            if settle:
                self._processor.drain()
        except RunError:
            self._log_summary()
            raise
        finally:
            self._writing = False

    @property
    def writing(self) -> bool:
        """Whether a batch is on its way to Salesforce (its outcome not yet known)."""
        return self._writing or (self._processor is not None and self._processor.in_flight)

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT (Meltano cancelling a run): never emit STATE for unwritten records."""
        if self.writing:
            # A batch is half-way through Salesforce: its outcome is unknown. The SDK's
            # handler would drain (nothing left to drain) and emit STATE covering it.
            self.logger.error(
                "Stopped by signal %d while a batch was being written to Salesforce; its "
                "outcome is unknown, no STATE is emitted and the tap sends it again next run",
                signum,
            )
            self._log_summary()
            sys.exit(128 + signum)
        try:
            self.flush(settle=True)
        except RunError as exc:
            _fail(str(exc), 1)
        super()._handle_termination(signum, frame)

    def process_endofpipe(self) -> None:
        try:
            self.flush(settle=True)  # before the SDK's final drain writes STATE
            if self._failed is not None:
                try:
                    self._failed.finish()
                except OSError as exc:
                    raise RunError(
                        f"the failed records could not be saved to "
                        f"{self._failed.folder.location} ({exc.strerror or exc}); no STATE was "
                        "emitted, so the tap sends this run's records again"
                    ) from None
            super().process_endofpipe()
        finally:
            self._log_summary()

    def _outcome_counts(self) -> Counter[Outcome]:
        return self._report.run_counts if self._report is not None else Counter()

    def _log_summary(self) -> None:
        if self._summary_logged or self._report is None:
            return
        self._summary_logged = True
        counts = self._report.run_counts
        self.logger.info("Run: %d record(s): %s", sum(counts.values()), format_counts(counts))
        if self._processor is not None and self._processor.client.api_usage:
            # Sforce-Limit-Info of the last answer: the org's daily API usage after this run.
            self.logger.info("Salesforce %s", self._processor.client.api_usage)
        if self._report.path is not None:
            self.logger.info("Report written to %s", self._report.path)
        self._report.close()
        if self._processor is not None:
            self._processor.close()
        if self._failed is not None:
            self._failed.close()

    def _write_state_message(self, state: dict) -> None:
        # A dry run emits no state: the tap must send the same records to the real run.
        if self._processor is not None and self._processor.rs.settings.dry_run:
            return
        # STATE covers every record read so far: only once Salesforce confirmed their writes.
        self.flush(settle=True)
        super()._write_state_message(state)


def is_outage(exc: SalesforceError, *, authenticated: bool) -> bool:
    """Whether a failure of the start-up check means Salesforce is down, not misconfigured.

    A transient failure that outlived the client's retries (5xx, a maintenance page) is an
    outage. A network error before any token was issued is not: a wrong instance_url, DNS,
    proxy or TLS fail the same way, and those are for the user to fix.
    """
    return exc.transient and (authenticated or exc.code != "CONNECTION_ERROR")


def limit_message(exc: ApiLimitExceededError) -> str:
    return (
        f"Salesforce refused the run at start-up: {exc}. Nothing was read or written "
        "and no STATE was emitted; run again when the org's rolling 24-hour usage has "
        "dropped (Setup > Company Information shows it)."
    )


def unavailable_message(exc: SalesforceError) -> str:
    return (
        f"Salesforce is unavailable ({exc}). This is not a configuration problem: nothing was "
        "read or written and no STATE was emitted, so run again later and the tap sends the "
        "same records (https://status.salesforce.com shows maintenance windows and incidents)."
    )


def report_file_path(report_path: str | None) -> str | None:
    """`{timestamp}` in report_path becomes the run's start (UTC), so runs keep their reports."""
    if report_path is None:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return report_path.replace("{timestamp}", stamp)


HELP = (
    "Write Didomi consent, read as Singer messages on stdin, into Salesforce Leads or Contacts "
    "through Bulk API 2.0. `target-salesforce-consent --about` lists every setting with its "
    "description; the documentation is in the repository's README.md and docs/."
)
CONFIG_EXAMPLE = '{"instance_url": "https://..."}'


#: The garbage collector's thresholds for a run. A run allocates millions of short-lived
#: objects and holds a few batches of long-lived ones; with the defaults (700, 10, 10) the
#: collector walked those batches over and over (about a third of the CPU of a 100,000-record
#: run). Batches are freed by reference counting as soon as they settle (they hold no
#: reference cycles), so collecting rarely costs no memory.
GC_THRESHOLDS = (50_000, 20, 10)


def collect_garbage_rarely() -> None:
    """Set :data:`GC_THRESHOLDS`, and leave what start-up loaded out of every collection."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


#: glibc's malloc settings for a run (mallopt parameter number, value): two arenas instead of
#: eight per core, each thread's freed blocks otherwise kept in an arena of its own; and a
#: fixed 256 KiB threshold above which blocks (response bodies, job CSVs) are mapped apart and
#: returned to the system once freed, instead of a threshold that grows with the largest
#: block freed. Together they lowered a 100,000-record run's peak RSS by about 10 MiB.
MALLOC_OPTIONS = ((-8, 2), (-3, 256 * 1024), (-1, 256 * 1024))  # ARENA_MAX, MMAP_, TRIM_


def tune_malloc() -> bool:
    """Apply :data:`MALLOC_OPTIONS` where the C library is glibc (before threads start)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in MALLOC_OPTIONS)


def cli(target_class: type[TargetSalesforceConsent] = TargetSalesforceConsent) -> None:
    """Console entry point: clean messages and a non-zero exit for what a user must fix.

    Exit status 2: the configuration or the credentials must be fixed. 1: the run left
    something unresolved (Salesforce unavailable included) and can be retried. The message is
    logged at error level, so that Meltano shows it at `--log-level=warning` too.
    """
    collect_garbage_rarely()
    tune_malloc()
    command = target_class.cli  # sets up logging (Meltano's structured format included)
    command.help = HELP
    problem = config_file_problem(sys.argv[1:], CONFIG_EXAMPLE)
    if problem is not None:
        _fail(f"{problem}. Nothing was read.", 2)
    try:
        command()
    except (ConfigurationError, RunError) as exc:
        _fail(str(exc), 2 if isinstance(exc, ConfigurationError) else 1)
    except RecordsWithoutSchemaException as exc:
        _invalid_input(f"{exc} Each stream needs a SCHEMA message before its records.")
    except MissingKeyPropertiesError as exc:
        _invalid_input(f"a record lacks a key property its SCHEMA message declares: {exc}")


def _fail(message: str, status: int) -> NoReturn:
    fail(TargetSalesforceConsent.name, f"error: {message}", status,
         logging.getLogger(TargetSalesforceConsent.name))


def _invalid_input(problem: str) -> None:
    _fail(
        f"the Singer input is not valid: {problem} Fix the tap or the input; no STATE was "
        "emitted for the records not yet written, so they are sent again next run.",
        1,
    )


if __name__ == "__main__":
    cli()
