"""The shared command-line helpers, as pure functions (no plugin, no network)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from consent_pipelines_common import cli
from singer_sdk.about import AboutInfo
from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities


def test_config_file_problem_names_each_kind_of_bad_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    assert cli.config_file_problem(["--config", str(missing)]) == (
        f"the config file {missing} does not exist: give the path of a JSON file of settings "
        "(`--about` lists them)")
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": 1,\n}')
    problem = cli.config_file_problem([f"--config={broken}"])
    assert problem is not None
    assert problem.startswith(f"the config file {broken} is not valid JSON (")
    assert "at line 2, column 1): fix it" in problem
    listed = tmp_path / "list.json"
    listed.write_text("[1]")
    assert cli.config_file_problem(["--config", str(listed)], '{"export_path": "/x"}') == (
        f"the config file {listed} holds a JSON list: it must be an object of settings, e.g. "
        '{"export_path": "/x"}')
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{")
    problem = cli.config_file_problem(["--config", str(binary)])
    assert problem is not None and problem.startswith(f"the config file {binary} cannot be read")


def test_config_file_problem_accepts_a_good_file_and_env(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    assert cli.config_file_problem(["--config", str(good), "--config", "ENV"]) is None
    assert cli.config_file_problem(["--about"]) is None


def _about() -> AboutInfo:
    return AboutInfo(
        name="tap-example", description="An example.", version="1.2.3", sdk_version="0",
        supported_python_versions=None,
        capabilities=[PluginCapabilities.ABOUT, TapCapabilities.STATE],
        settings={
            "required": ["token"],
            "properties": {
                "token": {"type": "string", "secret": True, "description": "The API token."},
                "page_size": {"type": "integer", "default": 100, "description": ""},
            },
        },
        env_var_prefix="TAP_EXAMPLE_",
    )


def test_about_text_lists_every_setting_with_its_facts() -> None:
    assert cli.about_text(_about()).splitlines() == [
        "tap-example 1.2.3: An example.",
        "",
        "Settings:",
        "  token (required, secret, TAP_EXAMPLE_TOKEN)",
        "      The API token.",
        "  page_size (optional, default 100, TAP_EXAMPLE_PAGE_SIZE)",
        "",
        "Capabilities: about, state",
    ]
    without = cli.about_text(_about(), show_required=False).splitlines()
    assert without[3] == "  token (secret, TAP_EXAMPLE_TOKEN)"
    assert without[5] == "  page_size (default 100, TAP_EXAMPLE_PAGE_SIZE)"


def test_progress_interval_reads_the_variable(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test-common")
    assert cli.progress_interval({}, logger) == 10.0
    assert cli.progress_interval({"CONSENT_PROGRESS_INTERVAL": " 0 "}, logger) == 0.0
    assert cli.progress_interval({"CONSENT_PROGRESS_INTERVAL": "2.5"}, logger) == 2.5
    with caplog.at_level(logging.WARNING, logger="test-common"):
        assert cli.progress_interval({"CONSENT_PROGRESS_INTERVAL": "nan"}, logger) == 10.0
        assert cli.progress_interval({"CONSENT_PROGRESS_INTERVAL": "soon"}, logger) == 10.0
    assert [r.getMessage() for r in caplog.records] == [
        "CONSENT_PROGRESS_INTERVAL='nan' is not a number of seconds; progress is logged every 10 s",
        "CONSENT_PROGRESS_INTERVAL='soon' is not a number of seconds; progress is logged every "
        "10 s",
    ]


class _Collect:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, fmt: str, line: str) -> None:
        self.lines.append(line)


def test_progress_log_counts_per_stream_and_waits_for_its_interval() -> None:
    now = [50.0]
    collect = _Collect()
    progress = cli.ProgressLog(collect, 5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    for stream in ("users", "events", "users", "users"):
        progress.record_read(stream)
        now[0] += 2.0  # 0, 2, 4, 6 s after the start
    assert collect.lines == ["Progress: 4 record(s) read (events=1 users=3), 0.7 records/s"]


def test_progress_log_details_can_be_replaced() -> None:
    class Outcomes(cli.ProgressLog):
        def details(self) -> str:
            return ", 1 with an outcome"

    collect = _Collect()
    progress = Outcomes(collect, 0.0, clock=lambda: 10.0)  # type: ignore[arg-type]
    progress.record_read()
    assert collect.lines == ["Progress: 1 record(s) read, 1 with an outcome, 0.0 records/s"]


def test_nearest_name_suggests_only_a_close_name() -> None:
    known = ["export_path", "api_key", "start_date"]
    assert cli.nearest_name("export_pth", known) == "export_path"
    assert cli.nearest_name("colour", known) is None


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


def test_fail_logs_or_writes_one_line_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    # A logger of its own: handlers other tests leave on the root logger never see the line.
    logger = logging.getLogger("test-common-fail")
    logger.propagate = False
    keep = _Keep()
    logger.addHandler(keep)
    try:
        with pytest.raises(SystemExit) as stopped:
            cli.fail("tap-example", "configuration error: token is missing", 2, logger)
        assert stopped.value.code == 2
    finally:
        logger.removeHandler(keep)
    assert keep.messages == ["ERROR tap-example: configuration error: token is missing"]
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as stopped:
        cli.fail("target-example", "error: the API refused", 1)
    assert stopped.value.code == 1
    assert capsys.readouterr().err == "target-example: error: the API refused\n"


def test_unknown_setting_problems_name_each_unknown_setting_and_its_nearest() -> None:
    known = ["dry_run", "mappings", "report_path"]
    config = {"dry_runn": True, "mappings": [], "zzz": 1}
    assert cli.unknown_setting_problems(config, known, "target-x") == [
        "unknown setting dry_runn: did you mean dry_run? A setting target-x does not know would "
        "be ignored; rename or remove it",
        "unknown setting zzz: target-x --about lists the settings. A setting target-x does not "
        "know would be ignored; rename or remove it",
    ]
    assert cli.unknown_setting_problems({"dry_run": False}, known, "target-x") == []
