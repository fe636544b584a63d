"""What a user sees of tap-didomi on the command line and under Meltano's structured logs:
one line per failure, at error level; --help and --about; progress lines."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from consent_pipelines_common.testing import about_text_gaps, json_lines, structured_logging
from didomi_tap_helpers import TapRunner, build_export, partition_dir, user, write_file


def run_module(args: list[str], env: dict[str, str] | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_DIDOMI_")}
    run_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "tap_didomi", *args], capture_output=True,
                          text=True, env=run_env, stdin=subprocess.DEVNULL, timeout=300,
                          cwd=cwd)


def test_missing_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_module(["--config", str(tmp_path / "nope.json")])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "nope.json" in x]
    assert "tap-didomi: configuration error: the config file" in line
    assert "does not exist" in line


def test_malformed_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"export_path": "x",}')
    proc = run_module([f"--config={bad}"])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"the config file {bad} is not valid JSON" in proc.stderr
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    proc = run_module(["--config", str(listed)])
    assert proc.returncode == 2
    assert "must be an object of settings" in proc.stderr


def test_help_describes_the_tap_and_points_at_about() -> None:
    proc = run_module(["--help"])
    assert proc.returncode == 0
    help_text = " ".join(proc.stdout.split())
    assert "Didomi consent" in help_text and "--about" in help_text
    assert "Execute the Singer tap" not in proc.stdout


def test_about_text_shows_each_setting_description() -> None:
    about = run_module(["--about", "--format=json"]).stdout
    assert about_text_gaps(about, run_module(["--about"]).stdout) == []


def test_failure_is_logged_at_error_level_without_an_unhandled_error_line(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    root = tmp_path / "exports"
    write_file(partition_dir(root, "2025-03-01") / "a.json.gz", [user(1, "2025-03-01T00:00Z")])
    corrupt = partition_dir(root, "2025-03-02") / "b.json.gz"
    corrupt.parent.mkdir(parents=True)
    packed = gzip.compress(b"".join(json.dumps(user(i, "2025-03-02T00:00Z")).encode() + b"\n"
                                    for i in range(2, 300)))
    corrupt.write_bytes(packed[: len(packed) // 2])

    run = run_tap({"export_path": str(root)}, env=structured_logging(tmp_path))
    assert run.returncode == 1
    logged = json_lines(run.stderr)
    errors = [r for r in logged if r.get("level") == "error"]
    assert len(errors) == 1, logged
    assert f"{corrupt}: corrupt gzip data at line " in errors[0]["message"]
    assert "next run starts from there" in errors[0]["message"]
    assert "unhandled error" not in run.stderr


def test_configuration_error_is_logged_at_error_level(tmp_path: Path, run_tap: TapRunner) -> None:
    run = run_tap({"export_path": str(tmp_path / "missing")}, env=structured_logging(tmp_path))
    assert run.returncode == 2
    (error,) = [r for r in json_lines(run.stderr) if r.get("level") == "error"]
    assert error["message"].startswith("tap-didomi: configuration error: export_path")


def test_api_only_settings_at_their_defaults_are_not_warned_about(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    build_export(tmp_path / "exports")
    # What Meltano passes from the plugin definition's own defaults.
    defaults = {"api_url": "https://api.didomi.io/v1", "include_full_tree": False,
                "regulations": ["gdpr"]}
    run = run_tap({"export_path": str(tmp_path / "exports"), **defaults})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ignored when reading exports" not in run.stderr
    run = run_tap({"export_path": str(tmp_path / "exports"), **defaults,
                   "regulations": ["ccpa"]})
    assert run.returncode == 0, run.stderr[-3000:]
    warned = [x for x in run.stderr.splitlines() if "ignored when reading exports" in x]
    assert len(warned) == 1 and "regulations applies" in warned[0], warned


def test_progress_lines_name_records_read_per_stream_and_the_rate(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    expected = build_export(tmp_path / "exports")
    run = run_tap({"export_path": str(tmp_path / "exports")},
                  env={"CONSENT_PROGRESS_INTERVAL": "0"})
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [x for x in run.stderr.splitlines() if "Progress: " in x]
    total = len(expected["users"]) + len(expected["events"])
    assert len(lines) == total  # interval 0: a line for every record
    last = lines[-1].split("Progress: ", 1)[1]
    assert last.startswith(f"{total} record(s) read (events={len(expected['events'])} "
                           f"users={len(expected['users'])}), ")
    assert last.endswith(" records/s")
    quiet = run_tap({"export_path": str(tmp_path / "exports")})
    assert "Progress: " not in quiet.stderr  # the default: at most one line every 10 s


def test_progress_log_waits_for_its_interval() -> None:
    from tap_didomi.streams import ProgressLog

    now = [100.0]
    logged: list[str] = []

    class Collect:
        def info(self, fmt: str, line: str) -> None:
            logged.append(line)

    progress = ProgressLog(Collect(), 10.0, clock=lambda: now[0])  # type: ignore[arg-type]
    for _ in range(5):
        progress.record_read("users")
        now[0] += 3.0  # 0, 3, 6, 9, 12 s after the start
    assert logged == ["Progress: 5 record(s) read (users=5), 0.4 records/s"]
