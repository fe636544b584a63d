"""tap-didomi's settings: one source per configuration, --about, --version."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from didomi_tap_helpers import TapRunner, build_export


def test_no_source_is_a_configuration_error(run_tap: TapRunner) -> None:
    run = run_tap({})
    assert run.returncode == 2 and run.stdout == ""
    assert "no source configured: set export_path" in run.stderr
    assert "or webhook_spool (the spool of didomi-webhook-receiver)" in run.stderr
    assert "api_key, api_secret and organization_id" in run.stderr


def test_both_sources_is_a_configuration_error(tmp_path: Path, run_tap: TapRunner) -> None:
    build_export(tmp_path / "exports")
    secret = "super-secret-value-123"
    run = run_tap({"export_path": str(tmp_path / "exports"), "api_key": "k",
                   "api_secret": secret, "organization_id": "acme"})
    assert run.returncode == 2 and run.stdout == ""
    assert "both export_path and the Consents API settings" in run.stderr
    assert "Unset export_path to read the API" in run.stderr
    assert secret not in run.stderr
    # The same in discovery mode: nothing on stdout.
    run = run_tap({"export_path": str(tmp_path / "exports"), "api_key": "k"}, None, "--discover")
    assert run.returncode == 2 and run.stdout == ""


def test_incomplete_or_unsafe_api_settings(run_tap: TapRunner) -> None:
    run = run_tap({"api_key": "k", "organization_id": "acme"})
    assert run.returncode == 2 and run.stdout == ""
    assert "set api_secret" in run.stderr

    run = run_tap({"api_key": "k", "api_secret": "s", "organization_id": "acme",
                   "api_url": "http://api.didomi.io/v1"})
    assert run.returncode == 2
    assert "must use https" in run.stderr

    run = run_tap({"api_key": "k", "api_secret": "s", "organization_id": "acme",
                   "regulations": []})
    assert run.returncode == 2
    assert "regulations must be a non-empty list" in run.stderr


def test_bad_start_date(tmp_path: Path, run_tap: TapRunner) -> None:
    build_export(tmp_path / "exports")
    run = run_tap({"export_path": str(tmp_path / "exports"), "start_date": "03/01/2025"})
    assert run.returncode == 2 and run.stdout == ""
    assert "start_date" in run.stderr


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("include_full_tree", "yes", 'include_full_tree must be true or false, without quotes '
                                 '(it is a string "yes")'),
    ("regulations", "gdpr", 'regulations must be a list of regulation ids, e.g. ["gdpr"]'),
    ("export_path", 123, 'export_path must be a folder path or URL in quotes'),
    ("start_date", 20250101, 'start_date must be a date in quotes, "YYYY-MM-DD"'),
])
def test_settings_of_the_wrong_type_are_configuration_errors(
    tmp_path: Path, run_tap: TapRunner, setting: str, value: object, expected: str
) -> None:
    build_export(tmp_path / "exports")
    config = {"export_path": str(tmp_path / "exports"), setting: value}
    for args in ((), ("--discover",)):
        run = run_tap(config, None, *args)
        assert run.returncode == 2 and run.stdout == "", run.stderr[-3000:]
        assert f"tap-didomi: configuration error: {expected}" in run.stderr
        assert "Config validation failed" not in run.stderr


def test_a_secret_of_the_wrong_type_is_not_printed(run_tap: TapRunner) -> None:
    run = run_tap({"api_key": "k", "api_secret": 987654321, "organization_id": "acme"})
    assert run.returncode == 2
    assert "configuration error: api_secret must be a string" in run.stderr
    assert "987654321" not in run.output


def test_api_only_settings_with_exports_are_warned_about(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    build_export(tmp_path / "exports")
    run = run_tap({"export_path": str(tmp_path / "exports"), "regulations": ["ccpa"]})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("regulations applies to the Consents API only") == 1
    # The schema's default (["gdpr"]) is not a setting the user made: no warning.
    run = run_tap({"export_path": str(tmp_path / "exports")})
    assert run.returncode == 0 and "Consents API only" not in run.stderr


def test_about_lists_the_settings_and_marks_the_secret() -> None:
    proc = subprocess.run([sys.executable, "-m", "tap_didomi", "--about", "--format=json"],
                          capture_output=True, text=True, check=True)
    about = json.loads(proc.stdout)
    settings = about["settings"]["properties"]
    for name in ("export_path", "api_key", "api_secret", "organization_id", "api_url",
                 "include_full_tree", "regulations", "start_date"):
        assert settings[name].get("description"), name
    assert settings["api_secret"].get("secret") is True
    assert settings["api_url"]["default"] == "https://api.didomi.io/v1"
    assert settings["regulations"]["default"] == ["gdpr"]
    assert settings["include_full_tree"]["default"] is False
    assert "batch" not in about["capabilities"]
    assert "state" in about["capabilities"]


def test_version_is_the_distribution_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "tap_didomi", "--version"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.startswith(f"tap-didomi v{version('tap-didomi')},")
