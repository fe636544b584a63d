"""Unknown settings are configuration errors; the SDK's built-in settings stay valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from didomi_tap_helpers import TapRunner, build_export


@pytest.mark.parametrize(("setting", "nearest"), [
    ("export_pth", "export_path"),
    ("start_data", "start_date"),
    ("export_lookback_day", "export_lookback_days"),
    ("flatening_enabled", "flattening_enabled"),
])
def test_a_misspelt_setting_is_a_configuration_error(
    tmp_path: Path, run_tap: TapRunner, setting: str, nearest: str
) -> None:
    root = tmp_path / "exports"
    build_export(root)
    for args in ((), ("--discover",)):
        run = run_tap({"export_path": str(root), setting: "2025-03-02"}, None, *args)
        assert run.returncode == 2, run.stderr[-3000:]
        assert run.stdout == ""  # before any input is read
        assert (f"tap-didomi: configuration error: unknown setting {setting}: did you mean "
                f"{nearest}?") in run.stderr
        assert "Traceback" not in run.stderr


def test_a_setting_like_no_other_points_to_about(tmp_path: Path, run_tap: TapRunner) -> None:
    build_export(tmp_path / "exports")
    run = run_tap({"export_path": str(tmp_path / "exports"), "zzz": 1})
    assert run.returncode == 2 and run.stdout == ""
    assert "unknown setting zzz: tap-didomi --about lists the settings" in run.stderr


def test_the_sdk_builtin_settings_are_known(tmp_path: Path, run_tap: TapRunner) -> None:
    root = tmp_path / "exports"
    expected = build_export(root)
    run = run_tap({
        "export_path": str(root),
        "export_lookback_days": 3,
        "stream_maps": {"users": {"organization_user_id": "__NULL__"}},
        "stream_map_config": {},
        "faker_config": {"locale": "en_US"},
        "flattening_enabled": False,
        "flattening_max_depth": 1,
    })
    assert run.returncode == 0, run.stderr[-3000:]
    assert [r["id"] for r in run.records("users")] == [u["id"] for u in expected["users"]]
    assert all("organization_user_id" not in r for r in run.records("users"))


def test_every_setting_about_lists_is_accepted(tmp_path: Path, run_tap: TapRunner) -> None:
    """What Meltano may pass in config.json is what the definition (checked against --about)
    declares: each of them is known."""
    proc = subprocess.run([sys.executable, "-m", "tap_didomi", "--about", "--format=json"],
                          capture_output=True, text=True, check=True)
    settings = json.loads(proc.stdout)["settings"]["properties"]
    assert "export_lookback_days" in settings
    assert settings["export_lookback_days"]["default"] == 7
    build_export(tmp_path / "exports")
    config = {"export_path": str(tmp_path / "exports")}
    # null for each (the stream map settings, which the SDK cannot take as null, are set in
    # the test above).
    mapping = ("stream_maps", "stream_map_config", "faker_config")
    config.update({name: None for name in settings if name != "export_path"
                   and name not in mapping})
    run = run_tap(config)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize("value", [0, -1, "7", 2.5])
def test_a_bad_look_back_is_a_configuration_error(
    tmp_path: Path, run_tap: TapRunner, value: object
) -> None:
    build_export(tmp_path / "exports")
    run = run_tap({"export_path": str(tmp_path / "exports"), "export_lookback_days": value})
    assert run.returncode == 2 and run.stdout == "", run.stderr[-3000:]
    assert "tap-didomi: configuration error: export_lookback_days" in run.stderr


def test_a_look_back_set_for_the_api_is_warned_about(run_tap: TapRunner) -> None:
    api = {"api_key": "k", "api_secret": "s", "organization_id": "acme",
           "api_url": "http://127.0.0.1:1/v1"}
    run = run_tap(dict(api, export_lookback_days=30), None, "--discover")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "export_lookback_days applies to exports only" in run.stderr
    # The default, which a Meltano definition passes along, is no choice of the user's.
    run = run_tap(dict(api, export_lookback_days=7), None, "--discover")
    assert run.returncode == 0 and "exports only" not in run.stderr
