"""Helpers and fixtures for tap-salesforce-consent's tests: a sandbox org with field history
tracking, and the real CLIs (the tap, and the loader for the pipeline's own writes) run as
subprocesses, so the tests see what Meltano sees: stdout messages, stderr, the exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

JANE = "jane@example.com"
JOHN = "john@example.com"

MAPPINGS = [
    {"id": "HasOptedOutOfEmail", "value": "purposes.newsletter.enabled", "invert": True},
    {"id": "Didomi_Newsletter__c", "value": "purposes.newsletter.enabled"},
    {"id": "Didomi_Topics__c", "value": "purposes.newsletter.values.topics"},
]


def seed(**lead_options: Any) -> dict[str, Any]:
    """Two Leads and a Contact; the mapped fields' history is tracked."""
    custom = [
        {"name": "Didomi_Newsletter__c", "type": "boolean", "label": "Newsletter"},
        {"name": "Didomi_Topics__c", "type": "multipicklist", "label": "Topics",
         "picklistValues": ["News", "Offers"]},
    ]  # fmt: skip
    tracked = ["HasOptedOutOfEmail", "Didomi_Newsletter__c", "Didomi_Topics__c"]
    return {
        "org": {"client_id": "tap-sf-client-id", "client_secret": "tap-sf-client-secret"},
        "objects": {
            "Lead": {
                "custom_fields": custom,
                "history_tracked_fields": tracked,
                "records": [
                    {"LastName": "Doe", "Company": "Acme", "Email": JANE},
                    {"LastName": "Roe", "Company": "Acme", "Email": f"  {JOHN} "},
                ],
                **lead_options,
            },
            "Contact": {
                "custom_fields": custom,
                "history_tracked_fields": tracked,
                "records": [{"LastName": "Contact", "Email": "carla@example.com"}],
            },
        },
    }


@pytest.fixture
def org() -> Iterator[Sandbox]:
    with Sandbox(seed=seed()) as sb:
        yield sb


def config(sb: Sandbox, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "instance_url": sb.url,
        "client_id": sb.client_id,
        "client_secret": sb.client_secret,
        "salesforce_object": "Lead",
        "mappings": MAPPINGS,
    }
    base.update(overrides)
    return base


def lead_id(sb: Sandbox, email: str) -> str:
    return str(next(r["Id"] for r in sb.records("Lead") if r["Email"].strip() == email))


def person(sb: Sandbox, index: int = 0) -> str:
    """A user other than the integration user (a rep, an agent)."""
    return str(sb.people()[index]["Id"])


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    @property
    def state(self) -> dict[str, Any]:
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        assert states, f"no STATE message; stderr:\n{self.stderr[-3000:]}"
        return states[-1]


def _executable(name: str) -> str:
    exe = Path(sys.executable).parent / name
    assert exe.exists(), f"{exe} is missing: python3 scripts/test.py installs it"
    return str(exe)


def run_tap(tmp_path: Path, cfg: dict[str, Any], state: dict[str, Any] | None = None) -> CliRun:
    """``tap-salesforce-consent --config ... [--state ...]``."""
    config_path = tmp_path / "tap-config.json"
    config_path.write_text(json.dumps(cfg))
    cmd = [_executable("tap-salesforce-consent"), "--config", str(config_path)]
    if state is not None:
        state_path = tmp_path / "tap-state.json"
        state_path.write_text(json.dumps(state))
        cmd += ["--state", str(state_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=120)  # fmt: skip
    run = CliRun(proc.returncode, proc.stdout, proc.stderr)
    if proc.returncode == 0:
        run.messages = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return run


def run_loader(tmp_path: Path, sb: Sandbox, records: list[dict[str, Any]]) -> CliRun:
    """``target-salesforce-consent`` writing Didomi records: the pipeline's own writes."""
    cfg = {
        **config(sb),
        "mappings": MAPPINGS[:2],
        "report_path": str(tmp_path / "loader-report.jsonl"),
    }
    config_path = tmp_path / "loader-config.json"
    config_path.write_text(json.dumps(cfg))
    lines = [{"type": "SCHEMA", "stream": "users", "schema": {"type": "object", "properties": {}},
              "key_properties": []}]  # fmt: skip
    lines += [{"type": "RECORD", "stream": "users", "record": r} for r in records]
    proc = subprocess.run(
        [_executable("target-salesforce-consent"), "--config", str(config_path)],
        input="".join(json.dumps(line) + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


def didomi_user(ouid: str, enabled: bool, at: str) -> dict[str, Any]:
    return {
        "id": f"didomi-{ouid}",
        "organization_user_id": ouid,
        "updated_at": at,
        "consents": {"purposes": [{"id": "newsletter", "enabled": enabled}]},
    }
