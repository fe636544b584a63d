"""The Singer target: settings, the check before the first record, and SDK wiring."""

from __future__ import annotations

import logging
import sys
from typing import Any, ClassVar, NoReturn

from consent_pipelines_common.cli import (
    TextAbout,
    config_file_problem,
    fail,
    unknown_setting_problems,
)
from jsonschema import Draft7Validator
from singer_sdk import typing as th
from singer_sdk.exceptions import MissingKeyPropertiesError, RecordsWithoutSchemaException
from singer_sdk.helpers.capabilities import PluginCapabilities
from singer_sdk.sinks import BatchSink
from singer_sdk.target_base import Target
from tap_didomi.client import DidomiAPIError
from tap_didomi.tap import DEFAULT_API_URL

from target_didomi.consents import MAX_EVENTS_PER_REQUEST, ConsentsAPI, RetryPolicy
from target_didomi.report import ChangeReport, format_counts
from target_didomi.settings import ConfigurationError, read_settings
from target_didomi.writer import ChangeWriter, RunError
from target_salesforce_consent.target import MAPPING_SCHEMA, report_file_path

NAME = "target-didomi"


class ChangeSink(BatchSink):
    """Up to 100 changes per batch: one ``POST /consents/events`` at most per batch."""

    def __init__(self, target: Target, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        self._owner = target

    @property
    def max_size(self) -> int:
        return min(self.batch_size_rows or MAX_EVENTS_PER_REQUEST, MAX_EVENTS_PER_REQUEST)

    def process_batch(self, context: dict) -> None:
        target = self._owner
        assert isinstance(target, TargetDidomi)
        target.writer.process([(self.stream_name, r) for r in context.get("records", [])])


class TargetDidomi(TextAbout, Target):
    """Writes consent changes made in Salesforce to Didomi as consent events."""

    name = NAME
    default_sink_class = ChangeSink
    # Timings of the Didomi conversation; tests use a subclass without waits.
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    capabilities: ClassVar[list[Any]] = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    config_jsonschema = th.PropertiesList(
        th.Property("api_key", th.StringType, required=True, title="API key",
                    description="Key of a private API key from the Didomi Console."),
        th.Property("api_secret", th.StringType, required=True, secret=True,
                    title="API secret", description="Secret of that API key."),
        th.Property("organization_id", th.StringType, required=True, title="Organization ID",
                    description="The Didomi organization the events are written to."),
        th.Property("api_url", th.StringType, default=DEFAULT_API_URL, title="API URL",
                    description="Base URL of the Consents API (https; plain http only for "
                    "loopback, e.g. the local emulator)."),
        th.Property(
            "mappings", th.ArrayType(MAPPING_SCHEMA), required=True, title="Mappings",
            description="The same list as target-salesforce-consent's, read in reverse: a "
            "Salesforce field mapped to purposes.<id>.enabled, purposes.<id>.enabled_li or "
            "channels.<id>.enabled is carried back (invert undone, value_map inverted)."),
        th.Property("dry_run", th.BooleanType, default=False, title="Dry Run",
                    description="Read Didomi and decide, send nothing (`would_send` in the "
                    "report), emit no STATE."),
        th.Property("report_path", th.StringType, title="Report Path",
                    description="Path of a JSON Lines file with one outcome line per change; "
                    "`{timestamp}` in it becomes the run's start in UTC."),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._schema_problems: list[str] = []
        super().__init__(*args, **kwargs)
        if self._config.get("validate_records") is None:
            # Records are read and reported by the target itself; the tap's SCHEMA is not needed.
            self._config = {**self._config, "validate_records": False}
        self.max_parallelism = 1
        self._writer: ChangeWriter | None = None
        self._summary_logged = False
        if kwargs.get("validate_config", True):
            self._writer = self._start_run()

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        super().append_builtin_config(config_jsonschema)
        # Every change becomes one event, whatever the method: the SDK's load_method means
        # nothing here.
        config_jsonschema["properties"].pop("load_method", None)

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Unknown settings and type problems the settings check does not name itself,
        reported with its own."""
        # The known settings are the target's and the SDK's built-in ones: what --about lists.
        schema = self.config_jsonschema
        self.append_builtin_config(schema)
        problems = unknown_setting_problems(self._config, schema["properties"], NAME)
        for error in Draft7Validator(self.config_jsonschema).iter_errors(dict(self._config)):
            path = list(error.absolute_path)
            if not path or path[0] in ("api_key", "api_secret", "organization_id", "api_url",
                                       "mappings", "dry_run", "report_path"):
                continue  # read_settings names these, with what to write
            problems.append(f"{'.'.join(str(p) for p in path)}: {error.message}")
        self._schema_problems = problems
        return problems

    def _start_run(self) -> ChangeWriter:
        """Everything that can fail before the first record is read."""
        try:
            settings = read_settings(self.config)
        except ConfigurationError as exc:
            raise ConfigurationError(self._schema_problems + exc.problems) from None
        if self._schema_problems:
            raise ConfigurationError(self._schema_problems)
        api = ConsentsAPI(api_url=settings.api_url, api_key=settings.api_key,
                          api_secret=settings.api_secret,
                          organization_id=settings.organization_id, retry=self.retry_policy)
        try:
            api.check()
        except DidomiAPIError as exc:
            if "kept failing" in str(exc):
                raise RunError(f"Didomi is unavailable: {exc}") from None
            raise ConfigurationError([str(exc)]) from None
        try:
            report = ChangeReport(report_file_path(settings.report_path))
        except OSError as exc:
            raise ConfigurationError([
                f"report_path {settings.report_path!r} cannot be written ({exc.strerror}): "
                "give a file path in a writable directory"]) from None
        for why_not in settings.not_carried.values():
            self.logger.info("Not carried back to Didomi: %s", why_not)
        self.logger.info(
            "Writing changes of %s to Didomi organization %s as consent events%s",
            ", ".join(m.field for m in settings.reverse.values()), settings.organization_id,
            " (dry run: nothing is sent)" if settings.dry_run else "",
        )
        return ChangeWriter(settings, api, report, self.logger)

    @property
    def writer(self) -> ChangeWriter:
        if self._writer is None:
            self._writer = self._start_run()
        return self._writer

    def process_endofpipe(self) -> None:
        try:
            super().process_endofpipe()
        finally:
            self._log_summary()

    def _log_summary(self) -> None:
        if self._summary_logged or self._writer is None:
            return
        self._summary_logged = True
        report = self._writer.report
        self.logger.info("Run: %d change(s): %s", sum(report.counts.values()),
                         format_counts(report.counts))
        if report.path is not None:
            self.logger.info("Report written to %s", report.path)
        report.close()
        self._writer.api.close()

    def _write_state_message(self, state: dict) -> None:
        # A dry run emits no state: the tap must send the same changes to the real run.
        if self._writer is not None and self._writer.settings.dry_run:
            return
        super()._write_state_message(state)


HELP = (
    "Write consent changes made in Salesforce, read as Singer messages on stdin (from "
    "tap-salesforce-consent), to Didomi as consent events. `target-didomi --about` lists every "
    "setting with its description; see target-didomi's README.md."
)
CONFIG_EXAMPLE = '{"organization_id": "your-org-id"}'


def cli(target_class: type[TargetDidomi] = TargetDidomi) -> None:
    """Console entry point. Exit 2: fix the configuration. 1: run again later.

    The message is logged at error level, so that Meltano shows it at `--log-level=warning`
    too.
    """
    command = target_class.cli  # sets up logging (Meltano's structured format included)
    command.help = HELP
    problem = config_file_problem(sys.argv[1:], CONFIG_EXAMPLE)
    if problem is not None:
        _fail(f"error: {problem}. Nothing was read.", 2)
    try:
        command()
    except ConfigurationError as exc:
        _fail(f"error: {exc}", 2)
    except (RunError, DidomiAPIError) as exc:
        _fail(f"error: {exc}\nNo STATE was emitted for the changes not yet confirmed: the "
              "tap sends them again next run, and their event ids make a resend harmless.", 1)
    except RecordsWithoutSchemaException as exc:
        _invalid_input(f"{exc} Each stream needs a SCHEMA message before its records.")
    except MissingKeyPropertiesError as exc:
        _invalid_input(f"a record lacks a key property its SCHEMA message declares: {exc}")


def _fail(message: str, status: int) -> NoReturn:
    fail(NAME, message, status, logging.getLogger(NAME))


def _invalid_input(problem: str) -> NoReturn:
    _fail(f"error: the Singer input is not valid: {problem} Fix the tap or the input; no "
          "STATE was emitted for the changes not yet written.", 1)


if __name__ == "__main__":
    cli()
