"""What a user sees of the loader on the command line and under Meltano's structured logs:
one line per failure, at error level; --help and --about; progress lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from consent_pipelines_common.testing import about_text_gaps, json_lines, structured_logging
from salesforce_sandbox import Sandbox

from tests.conftest import base_config, newsletter, singer_lines, user


def run_cli(args: list[str], stdin: str = "",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TARGET_SALESFORCE_CONSENT_", "CONSENT_PROGRESS"))}
    run_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "target_salesforce_consent.target", *args], input=stdin,
        capture_output=True, text=True, timeout=120, env=run_env, check=False,
    )


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_missing_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_cli(["--config", str(tmp_path / "nope.json")])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "target-salesforce-consent: error: the config file" in line
    assert "does not exist" in line


def test_malformed_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"instance_url": ')
    proc = run_cli([f"--config={bad}"])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"the config file {bad} is not valid JSON" in line
    text = tmp_path / "text.json"
    text.write_text('"Lead"')
    proc = run_cli(["--config", str(text)])
    assert proc.returncode == 2
    assert "must be an object of settings" in proc.stderr


def test_help_describes_the_loader_and_points_at_about() -> None:
    proc = run_cli(["--help"])
    assert proc.returncode == 0
    help_text = " ".join(proc.stdout.split())
    assert "Salesforce Leads or Contacts" in help_text and "--about" in help_text
    assert "Execute the Singer target" not in proc.stdout


def test_about_text_shows_each_setting_description() -> None:
    about = run_cli(["--about", "--format=json"]).stdout
    assert about_text_gaps(about, run_cli(["--about"]).stdout) == []


def test_configuration_problem_is_logged_at_error_level(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"client_id": "x", "client_secret": "y",
                                     "salesforce_object": "Lead",
                                     "mappings": [{"id": "A", "value": "purposes.p.enabled"}]})
    proc = run_cli(["--config", str(config)], env=structured_logging(tmp_path))
    assert proc.returncode == 2
    errors = [r for r in json_lines(proc.stderr) if r.get("level") == "error"]
    assert len(errors) == 1, proc.stderr
    assert errors[0]["message"].startswith("target-salesforce-consent: error: The configuration")
    assert "instance_url" in errors[0]["message"]


def test_progress_lines_name_records_outcomes_and_rate(sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, base_config(sandbox, tmp_path / "report.jsonl",
                                                batch_size_rows=1))
    messages = singer_lines([user("jane@example.com", purposes=[newsletter(False)]),
                             user("nobody@example.com", purposes=[newsletter(True)])])
    proc = run_cli(["--config", str(config)], messages, env={"CONSENT_PROGRESS_INTERVAL": "0"})
    assert proc.returncode == 0, proc.stderr
    lines = [x.split("Progress: ", 1)[1] for x in proc.stderr.splitlines() if "Progress: " in x]
    assert len(lines) == 2, proc.stderr  # interval 0: a line for every record
    assert lines[0].startswith("1 record(s) read, 0 with an outcome, ")
    # The first batch's jobs run while the next record is read: its outcome counts once its
    # write is confirmed, before or after this line.
    assert re.match(
        r"2 record\(s\) read, (0 with an outcome|1 with an outcome \(updated=1\)), ", lines[1]
    ), lines[1]
    assert all(line.endswith(" records/s") for line in lines)
    quiet = run_cli(["--config", str(config)], messages)
    assert quiet.returncode == 0, quiet.stderr
    assert "Progress: " not in quiet.stderr  # the default: at most one line every 10 s


def test_progress_log_waits_for_its_interval() -> None:
    from collections import Counter

    from target_salesforce_consent.report import Outcome
    from target_salesforce_consent.target import ProgressLog

    now = [100.0]
    logged: list[str] = []

    class Collect:
        def info(self, fmt: str, line: str) -> None:
            logged.append(line)

    outcomes = Counter({Outcome.UPDATED: 2})
    progress = ProgressLog(Collect(), lambda: outcomes, 10.0,  # type: ignore[arg-type]
                           clock=lambda: now[0])
    for _ in range(5):
        progress.record_read()
        now[0] += 3.0  # 0, 3, 6, 9, 12 s after the start
    assert logged == ["Progress: 5 record(s) read, 2 with an outcome (updated=2), 0.4 records/s"]
