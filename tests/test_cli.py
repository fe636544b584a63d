"""The target as users run it: a process reading stdin, its exit status, stdout and stderr."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from salesforce_sandbox import Sandbox

from tests.conftest import SEED, base_config, newsletter, singer_lines, user


def run_cli(
    args: list[str], stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "target_salesforce_consent.target", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_cli_run_exit_zero_state_on_stdout_counts_on_stderr(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    report = tmp_path / "report.jsonl"
    config = write_config(tmp_path, base_config(sandbox, report))
    messages = singer_lines(
        [
            user("jane@example.com", purposes=[newsletter(False)]),
            user("nobody@example.com", purposes=[newsletter(True)]),
        ],
        state={"bookmarks": {"users": "2024-06-18"}},
    )
    proc = run_cli(["--config", str(config)], messages)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [
        {"bookmarks": {"users": "2024-06-18"}}
    ]
    assert "updated=1 skipped_unmatched=1" in proc.stderr
    assert "Run: 2 record(s)" in proc.stderr
    assert len(report.read_text().splitlines()) == 2
    for secret in (sandbox.client_secret, sandbox.client_id):
        assert secret not in proc.stdout + proc.stderr


def test_cli_configuration_error_exits_non_zero_before_reading_input(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = base_config(sandbox, tmp_path / "report.jsonl", client_secret="wrong-secret-123")
    config["mappings"].append({"id": "Nope__c", "value": "purposes.x.enabled"})
    proc = run_cli(["--config", str(write_config(tmp_path, config))], "this is not singer\n")
    assert proc.returncode == 2
    assert "target-salesforce-consent: error:" in proc.stderr
    assert "client_secret" in proc.stderr
    assert "wrong-secret-123" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "report.jsonl").exists()


def test_cli_schema_problems_are_listed_together(tmp_path: Path) -> None:
    config = {
        "instance_url": "ftp://x",
        "salesforce_object": "Account",
        "mappings": [],
        "client_secret": 12345,
    }
    proc = run_cli(["--config", str(write_config(tmp_path, config))])
    assert proc.returncode == 2
    for expected in ("client_id", "client_secret", "salesforce_object", "mappings"):
        assert expected in proc.stderr
    assert "12345" not in proc.stderr


def test_cli_fatal_run_error_exits_one_without_state(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.fail_next_job("InvalidBatch : Field name not found : Didomi_Newsletter__c")
    config = write_config(tmp_path, base_config(sandbox, tmp_path / "report.jsonl"))
    proc = run_cli(
        ["--config", str(config)],
        singer_lines([user("jane@example.com", purposes=[newsletter(False)])], state={"s": 1}),
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Field name not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_about_lists_every_setting_and_marks_secrets() -> None:
    proc = run_cli(["--about", "--format=json"])
    assert proc.returncode == 0, proc.stderr
    about = json.loads(proc.stdout)
    properties = about["settings"]["properties"]
    for setting in (
        "instance_url",
        "client_id",
        "client_secret",
        "salesforce_object",
        "upsert_mode",
        "mappings",
        "match_field",
        "insert_defaults",
        "on_multiple_matches",
        "regulations",
        "consent_timestamp_field",
        "dry_run",
        "report_path",
        "api_version",
        "fail_on_record_errors",
    ):
        assert setting in properties, setting
    assert properties["client_id"].get("secret") is True
    assert properties["client_secret"].get("secret") is True
    assert "load_method" not in properties
    assert set(about["settings"]["required"]) >= {
        "instance_url",
        "client_id",
        "client_secret",
        "salesforce_object",
        "mappings",
    }


def test_cli_record_before_schema_is_a_clean_error(sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, base_config(sandbox, tmp_path / "report.jsonl"))
    record = {"type": "RECORD", "stream": "webhooks", "record": user("jane@example.com")}
    proc = run_cli(["--config", str(config)], json.dumps(record) + "\n")
    assert proc.returncode == 1
    assert "needs a SCHEMA message" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_mapping_problem_is_named_once(sandbox: Sandbox, tmp_path: Path) -> None:
    config = base_config(sandbox, tmp_path / "report.jsonl")
    config["mappings"][1]["inverted"] = True
    proc = run_cli(["--config", str(write_config(tmp_path, config))])
    assert proc.returncode == 2
    assert "The configuration has 1 problem(s)" in proc.stderr
    assert "mappings[1]" in proc.stderr and "inverted" in proc.stderr


def test_cli_stopped_while_writing_emits_no_state(tmp_path: Path) -> None:
    # Meltano cancels a run with SIGTERM. A job still running in Salesforce has an unknown
    # outcome: the target must not emit the STATE that would tell the tap it is done.
    with Sandbox(seed=copy.deepcopy(SEED), job_polls_to_complete=100_000) as sandbox:
        config = write_config(tmp_path, base_config(sandbox, tmp_path / "report.jsonl"))
        stdin = tmp_path / "input.jsonl"
        stdin.write_text(
            singer_lines(
                [user("jane@example.com", purposes=[newsletter(False)])], state={"s": "done"}
            )
        )
        stderr = tmp_path / "stderr.log"
        with stderr.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "target_salesforce_consent.target", "--config",
                 str(config), "--input", str(stdin)],
                stdout=subprocess.PIPE, stderr=err, text=True,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while "Created Bulk job" not in stderr.read_text():
                assert time.monotonic() < deadline, stderr.read_text()
                time.sleep(0.1)
            time.sleep(0.5)  # now polling the job
            proc.send_signal(signal.SIGTERM)
            stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr.read_text()
    assert stdout == ""
    assert "outcome is unknown" in stderr.read_text()
