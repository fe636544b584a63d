"""Helpers for target-didomi's tests: the Didomi emulator, the real CLI, consent changes.

The target runs as a subprocess (``python -m target_didomi``) so that the tests see what
Meltano sees: its stdin, the STATE on stdout, logs on stderr and the exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tap_didomi.emulator import DidomiEmulator

NEWSLETTER = "newsletter"
MAPPINGS: list[dict[str, Any]] = [
    {"id": "HasOptedOutOfEmail", "value": "purposes.newsletter.enabled", "invert": True},
    {"id": "SMS_Consent__c", "value": "purposes.sms.enabled",
     "value_map": {"true": "Granted", "false": "Refused"}},
    {"id": "Didomi_Topics__c", "value": "purposes.newsletter.values.topics"},
]

CHANGE_SCHEMA: dict[str, Any] = {
    "type": "SCHEMA",
    "stream": "consent_changes",
    "key_properties": ["history_id"],
    "schema": {"type": "object", "properties": {
        name: {"type": ["string", "boolean", "null"]} for name in (
            "history_id", "salesforce_id", "object", "organization_user_id", "field",
            "old_value", "new_value", "changed_at", "changed_by_id")
    }},
}


def change(history_id: str, ouid: str | None, field: str, new_value: Any, changed_at: str,
           **extra: Any) -> dict[str, Any]:
    """A ``consent_changes`` record as tap-salesforce-consent emits it."""
    return {"history_id": history_id, "salesforce_id": "00Q000000000001AAA", "object": "Lead",
            "organization_user_id": ouid, "field": field, "old_value": None,
            "new_value": new_value, "changed_at": changed_at,
            "changed_by_id": "005000000000002AAA", **extra}


def didomi_event(ouid: str, purpose: str, enabled: bool, created_at: str,
                 event_id: str) -> dict[str, Any]:
    """A choice made in Didomi (as its SDKs and preference centres post them)."""
    return {"id": event_id, "created_at": created_at, "user": {"organization_user_id": ouid},
            "consents": {"purposes": [{"id": purpose, "enabled": enabled}]}}


def config(emu: DidomiEmulator, report: Path | None = None, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "api_url": emu.url, "api_key": emu.api_key, "api_secret": emu.api_secret,
        "organization_id": emu.organization_id, "mappings": MAPPINGS,
    }
    if report is not None:
        settings["report_path"] = str(report)
    return {**settings, **extra}


@dataclass
class TargetRun:
    returncode: int
    stdout: str
    stderr: str
    report: list[dict[str, Any]]

    @property
    def states(self) -> list[dict[str, Any]]:
        """The state values the target wrote (a target writes each value on a line)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def outcomes(self) -> list[str]:
        return [line["outcome"] for line in self.report]


class TargetRunner:
    """Runs ``python -m target_didomi`` with a config file and Singer messages on stdin."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0

    def __call__(self, settings: dict[str, Any], records: list[dict[str, Any]],
                 *, state: dict[str, Any] | None = None,
                 raw_lines: list[str] | None = None) -> TargetRun:
        self.count += 1
        config_path = self.workdir / f"config-{self.count}.json"
        config_path.write_text(json.dumps(settings))
        lines = [json.dumps(CHANGE_SCHEMA)]
        lines += [json.dumps({"type": "RECORD", "stream": "consent_changes", "record": r})
                  for r in records]
        lines += raw_lines or []
        lines.append(json.dumps({"type": "STATE", "value": state or {"run": self.count}}))
        report = Path(settings["report_path"]) if settings.get("report_path") else None
        if report is not None and report.exists():
            report.unlink()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_DIDOMI_")}
        proc = subprocess.run(
            [sys.executable, "-m", "target_didomi", "--config", str(config_path)],
            input="\n".join(lines) + "\n", capture_output=True, text=True, env=env,
            timeout=300,
        )
        lines_out = []
        if report is not None and report.exists():
            lines_out = [json.loads(x) for x in report.read_text().splitlines() if x]
        return TargetRun(proc.returncode, proc.stdout, proc.stderr, lines_out)


@pytest.fixture()
def emulator() -> Iterator[DidomiEmulator]:
    emu = DidomiEmulator().start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture()
def run_target(tmp_path: Path) -> TargetRunner:
    workdir = tmp_path / "runs"
    workdir.mkdir()
    return TargetRunner(workdir)
