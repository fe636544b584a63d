"""No echo: a Didomi event that target-didomi created from a Salesforce change comes back to
Salesforce through the Consents API (tap-didomi), an export, or a webhook, and finds Salesforce
already holding it: target-salesforce-consent reports it ``skipped_unchanged`` and writes
nothing. Every hop is a real CLI over HTTP on loopback (the Didomi emulator, the sandbox)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox
from tap_didomi.emulator import DidomiEmulator
from target_didomi_helpers import TargetRunner, change, config, didomi_event

JANE = "jane@example.com"
MAPPING = [{"id": "HasOptedOutOfEmail", "value": "purposes.newsletter.enabled", "invert": True}]


@pytest.fixture()
def sandbox() -> Iterator[Sandbox]:
    seed = {
        "org": {"client_id": "echo-client-id", "client_secret": "echo-client-secret"},
        "objects": {"Lead": {"records": [
            # A rep ticked "Email Opt Out" on Jane's Lead: the change target-didomi carries.
            {"FirstName": "Jane", "LastName": "Doe", "Company": "Acme", "Email": JANE,
             "HasOptedOutOfEmail": True},
        ]}},
    }
    with Sandbox(seed=seed) as sb:
        yield sb


def _run(module: str, settings: dict[str, Any], workdir: Path, stdin: str = "") -> str:
    path = workdir / f"{module}-config.json"
    path.write_text(json.dumps(settings))
    proc = subprocess.run([sys.executable, "-m", module, "--config", str(path)], input=stdin,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _forward(sb: Sandbox, lines: str, workdir: Path) -> list[dict[str, Any]]:
    """target-salesforce-consent over the Singer lines; its report."""
    report = workdir / "forward-report.jsonl"
    _run("target_salesforce_consent", {
        "instance_url": sb.url, "client_id": sb.client_id, "client_secret": sb.client_secret,
        "salesforce_object": "Lead", "mappings": MAPPING, "report_path": str(report),
    }, workdir, lines)
    return [json.loads(line) for line in report.read_text().splitlines()]


def _singer(stream: str, records: list[dict[str, Any]]) -> str:
    messages = [{"type": "SCHEMA", "stream": stream, "key_properties": [],
                 "schema": {"type": "object", "properties": {}}}]
    messages += [{"type": "RECORD", "stream": stream, "record": r} for r in records]
    return "".join(json.dumps(m) + "\n" for m in messages)


def test_an_event_written_from_salesforce_comes_back_unchanged_by_every_route(
    sandbox: Sandbox, run_target: TargetRunner, tmp_path: Path
) -> None:
    with DidomiEmulator() as emu:
        emu.add_events([didomi_event(JANE, "newsletter", True, "2025-01-01T00:00:00.000Z",
                                     "opt-in-in-didomi")])
        run = run_target(config(emu, tmp_path / "didomi-report.jsonl", mappings=MAPPING), [
            change("0170000000000001", JANE, "HasOptedOutOfEmail", True,
                   "2025-02-01T10:00:00.000Z")])
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.outcomes() == ["sent"]
        (event,) = [e for e in emu.events if e["id"] == run.report[0]["event_id"]]
        before = sandbox.records("Lead")

        # 1. The Consents API: tap-didomi lists the users, Jane's now opted out.
        users = _run("tap_didomi", {"api_url": emu.url, "api_key": emu.api_key,
                                    "api_secret": emu.api_secret,
                                    "organization_id": emu.organization_id}, tmp_path)
        assert '"enabled":false' in users
        through_api = _forward(sandbox, users, tmp_path)
        assert [(r["organization_user_id"], r["outcome"]) for r in through_api] == [
            (JANE, "skipped_unchanged")]

        # 2. A batch export holding the event (and the user) as Didomi writes them.
        partition = tmp_path / "export" / "export-id=e1" / "date=2025-02-01"
        for folder, records in (("users", emu.users()), ("events", [event])):
            (partition / folder).mkdir(parents=True)
            (partition / folder / "part-0.json").write_text(
                "".join(json.dumps(r) + "\n" for r in records))
        exported = _run("tap_didomi", {"export_path": str(tmp_path / "export")}, tmp_path)
        through_export = _forward(sandbox, exported, tmp_path)
        assert {(r["stream"], r["outcome"]) for r in through_export} == {
            ("users", "skipped_unchanged"), ("events", "skipped_unchanged")}

        # 3. A webhook delivering the event.
        webhook = {"type": "event.created", "parameters": {"entity": event}}
        through_webhook = _forward(sandbox, _singer("didomi_webhooks", [webhook]), tmp_path)
        assert [r["outcome"] for r in through_webhook] == ["skipped_unchanged"]

    assert sandbox.records("Lead") == before
    assert sandbox.ingest_jobs() == []  # nothing was written back to Salesforce


def test_a_rep_change_reaches_didomi_and_does_not_come_back(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """tap-salesforce-consent → target-didomi, then tap-didomi → target-salesforce-consent: the
    rep's opt-out reaches Didomi once, and its way back changes nothing in Salesforce."""
    (lead,) = sandbox.records("Lead")
    rep = sandbox.people()[0]["Id"]
    sandbox.update_as(rep, "Lead", lead["Id"], {"HasOptedOutOfEmail": False},
                      at="2025-01-01T00:00:00Z")
    sandbox.update_as(rep, "Lead", lead["Id"], {"HasOptedOutOfEmail": True},
                      at="2025-02-01T10:00:00Z")
    salesforce = {"instance_url": sandbox.url, "client_id": sandbox.client_id,
                  "client_secret": sandbox.client_secret, "salesforce_object": "Lead",
                  "mappings": MAPPING}
    with DidomiEmulator() as emu:
        emu.add_events([didomi_event(JANE, "newsletter", True, "2025-01-15T00:00:00.000Z",
                                     "opt-in-in-didomi")])
        changes = _run("tap_salesforce_consent", salesforce, tmp_path)
        report = tmp_path / "didomi-report.jsonl"
        _run("target_didomi", config(emu, report, mappings=MAPPING), tmp_path, changes)
        outcomes = [(r["changed_at"], r["outcome"]) for r in map(
            json.loads, report.read_text().splitlines())]
        # The rep's first change states what Didomi holds; the opt-out is newer: sent.
        assert outcomes == [("2025-01-01T00:00:00.000Z", "skipped_unchanged"),
                            ("2025-02-01T10:00:00.000Z", "sent")]
        (event,) = [e for e in emu.events if e["id"] != "opt-in-in-didomi"]
        assert event["delegate"]["id"] == rep
        before = sandbox.records("Lead")

        users = _run("tap_didomi", {"api_url": emu.url, "api_key": emu.api_key,
                                    "api_secret": emu.api_secret,
                                    "organization_id": emu.organization_id}, tmp_path)
        back = _forward(sandbox, users, tmp_path)
        assert [r["outcome"] for r in back] == ["skipped_unchanged"]
        assert sandbox.records("Lead") == before

        # The tap reads nothing new: the loader wrote nothing, and its own writes never count.
        again = _run("tap_salesforce_consent", salesforce, tmp_path)
        assert [json.loads(line)["record"]["history_id"] for line in again.splitlines()
                if '"RECORD"' in line] == [json.loads(line)["record"]["history_id"]
                                           for line in changes.splitlines() if '"RECORD"' in line]
