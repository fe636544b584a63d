"""What a user sees of tap-salesforce-consent on the command line and under Meltano's
structured logs: misspelt settings, a missing config file, --help and --about, errors at error
level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from consent_pipelines_common.testing import about_text_gaps, json_lines, structured_logging
from salesforce_sandbox import Sandbox
from tap_sf_helpers import config


def run_module(args: list[str], env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items()
               if not k.startswith("TAP_SALESFORCE_CONSENT_")}
    run_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "tap_salesforce_consent", *args],
                          capture_output=True, text=True, env=run_env,
                          stdin=subprocess.DEVNULL, timeout=300)


def run_with(tmp_path: Path, settings: dict[str, object], *args: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(settings))
    return run_module(["--config", str(path), *args], env)


@pytest.mark.parametrize(("setting", "nearest"), [
    ("ignore_user_id", "ignore_user_ids"),
    ("start_data", "start_date"),
    ("flatening_enabled", "flattening_enabled"),
])
def test_a_misspelt_setting_stops_the_tap_before_salesforce_is_read(
    org: Sandbox, tmp_path: Path, setting: str, nearest: str
) -> None:
    for args in ((), ("--discover",)):
        run = run_with(tmp_path, config(org, **{setting: ["005000000000001AAA"]}), *args)
        assert run.returncode == 2, run.stderr[-3000:]
        assert run.stdout == ""
        assert f"unknown setting {setting}: did you mean {nearest}?" in run.stderr
        assert "Traceback" not in run.stderr
    assert org.requests == []  # not even a token was asked for


def test_a_misspelt_mappings_is_named_with_the_nearest_name(
    org: Sandbox, tmp_path: Path
) -> None:
    settings = config(org)
    settings["mapings"] = settings.pop("mappings")
    run = run_with(tmp_path, settings)
    assert run.returncode == 2 and run.stdout == ""
    assert "unknown setting mapings: did you mean mappings?" in run.stderr
    unlike = run_with(tmp_path, {**config(org), "zzz": 1})
    assert unlike.returncode == 2
    assert "unknown setting zzz: tap-salesforce-consent --about lists the settings" \
        in unlike.stderr


def test_the_sdk_builtin_settings_are_known(org: Sandbox, tmp_path: Path) -> None:
    run = run_with(tmp_path, config(org, stream_maps={}, stream_map_config={},
                                    flattening_enabled=False, flattening_max_depth=1))
    assert run.returncode == 0, run.stderr[-3000:]


def test_missing_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_module(["--config", str(tmp_path / "nope.json")])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "nope.json" in x]
    assert "tap-salesforce-consent: configuration error: the config file" in line
    assert "does not exist" in line
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    proc = run_module(["--config", str(listed)])
    assert proc.returncode == 2 and "must be an object of settings" in proc.stderr


def test_help_describes_the_tap_and_points_at_about() -> None:
    proc = run_module(["--help"])
    assert proc.returncode == 0
    help_text = " ".join(proc.stdout.split())
    assert "consent changes people made in Salesforce" in help_text and "--about" in help_text
    assert "Execute the Singer tap" not in proc.stdout


def test_about_text_shows_each_setting_description_default_and_variable() -> None:
    about = run_module(["--about", "--format=json"]).stdout
    text = run_module(["--about"]).stdout
    assert about_text_gaps(about, text) == []
    assert 'match_field (optional, default "Email", TAP_SALESFORCE_CONSENT_MATCH_FIELD)' in text


def test_configuration_error_is_logged_at_error_level(org: Sandbox, tmp_path: Path) -> None:
    run = run_with(tmp_path, config(org, client_secret="not-the-secret"),
                   env=structured_logging(tmp_path))
    assert run.returncode == 2
    (error,) = [r for r in json_lines(run.stderr) if r.get("level") == "error"]
    assert error["message"].startswith("tap-salesforce-consent: configuration error:")
    assert "refused the credentials" in error["message"]
    assert "not-the-secret" not in run.stderr
