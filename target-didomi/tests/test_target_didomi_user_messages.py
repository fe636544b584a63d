"""What a user sees of target-didomi on the command line and under Meltano's structured logs:
misspelt settings, a missing config file, --help and --about, errors at error level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from consent_pipelines_common.testing import about_text_gaps, json_lines, structured_logging
from tap_didomi.emulator import DidomiEmulator
from target_didomi_helpers import TargetRunner, change, config


def run_module(args: list[str], env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_DIDOMI_")}
    run_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "target_didomi", *args], capture_output=True,
                          text=True, env=run_env, stdin=subprocess.DEVNULL, timeout=300)


def test_a_misspelt_dry_run_stops_before_anything_is_read_or_sent(
    emulator: DidomiEmulator, run_target: TargetRunner
) -> None:
    run = run_target(config(emulator, dry_runn=True),
                     [change("h1", "jane@example.com", "HasOptedOutOfEmail", True,
                             "2025-02-01T00:00:00.000Z")])
    assert run.returncode == 2, run.stderr[-3000:]
    assert "unknown setting dry_runn: did you mean dry_run?" in run.stderr
    assert emulator.calls == [] and run.states == []


def test_a_misspelt_mappings_is_named_with_the_nearest_name(
    emulator: DidomiEmulator, run_target: TargetRunner
) -> None:
    settings = config(emulator)
    settings["mapping"] = settings.pop("mappings")
    run = run_target(settings, [])
    assert run.returncode == 2
    assert "unknown setting mapping: did you mean mappings?" in run.stderr
    unlike = run_target({**config(emulator), "zzz": 1}, [])
    assert unlike.returncode == 2
    assert "unknown setting zzz: target-didomi --about lists the settings" in unlike.stderr
    assert emulator.calls == []


def test_the_sdk_builtin_settings_are_known(
    emulator: DidomiEmulator, run_target: TargetRunner
) -> None:
    run = run_target(config(emulator, batch_size_rows=10, add_record_metadata=False,
                            stream_maps={}, stream_map_config={}), [])
    assert run.returncode == 0, run.stderr[-3000:]


def test_missing_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_module(["--config", str(tmp_path / "nope.json")])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "nope.json" in x]
    assert "target-didomi: error: the config file" in line and "does not exist" in line


def test_help_describes_the_target_and_points_at_about() -> None:
    proc = run_module(["--help"])
    assert proc.returncode == 0
    help_text = " ".join(proc.stdout.split())
    assert "to Didomi as consent events" in help_text and "--about" in help_text
    assert "Execute the Singer target" not in proc.stdout


def test_about_text_shows_each_setting_description_default_and_variable() -> None:
    about = run_module(["--about", "--format=json"]).stdout
    text = run_module(["--about"]).stdout
    assert about_text_gaps(about, text) == []
    assert "dry_run (optional, default false, TARGET_DIDOMI_DRY_RUN)" in text


def test_configuration_error_is_logged_at_error_level(
    emulator: DidomiEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config(emulator, api_secret="not-the-secret")))
    proc = run_module(["--config", str(path)], env=structured_logging(tmp_path))
    assert proc.returncode == 2
    (error,) = [r for r in json_lines(proc.stderr) if r.get("level") == "error"]
    assert error["message"].startswith("target-didomi: error:")
    assert "Didomi refused the API key" in error["message"]
    assert "not-the-secret" not in proc.stderr
