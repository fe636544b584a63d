"""max_latency_seconds: a batch is written while the tap is quiet, not only when input ends."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import requests
from salesforce_sandbox import Sandbox

from target_salesforce_consent.settings import read_settings
from target_salesforce_consent.target import lines_with_idle_checks
from tests.conftest import base_config, singer_lines, user


def newsletter(enabled: bool) -> dict[str, Any]:
    return {"id": "newsletter", "enabled": enabled}


def _pump(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def _lead(sb: Sandbox, email: str) -> dict[str, Any]:
    return next(r for r in sb.records("Lead") if r.get("Email") == email)


def test_a_batch_is_written_and_its_state_emitted_while_the_input_stays_open(
        sandbox: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(base_config(sandbox, tmp_path / "report.jsonl",
                                             max_latency_seconds=0.5)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "target_salesforce_consent", "--config", str(config)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    states: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, states), daemon=True).start()
    try:
        proc.stdin.write(singer_lines([user("jane@example.com", purposes=[newsletter(True)])],
                                      state={"position": 1}))
        proc.stdin.flush()
        # Nothing more is sent, and stdin stays open (a tap following a spool): the record is
        # written and its STATE emitted all the same.
        assert json.loads(states.get(timeout=120)) == {"position": 1}
        assert _lead(sandbox, "jane@example.com")["Didomi_Newsletter__c"] is True

        later = user("jane@example.com", purposes=[newsletter(False)],
                     updated_at="2024-07-01T00:00:00.000Z")
        proc.stdin.write(json.dumps({"type": "RECORD", "stream": "users", "record": later})
                         + "\n" + json.dumps({"type": "STATE", "value": {"position": 2}}) + "\n")
        proc.stdin.flush()
        assert json.loads(states.get(timeout=120)) == {"position": 2}
        assert _lead(sandbox, "jane@example.com")["Didomi_Newsletter__c"] is False
        proc.stdin.close()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_the_idle_checks_run_while_no_line_comes() -> None:
    lines: queue.Queue[str | None] = queue.Queue()

    def source() -> Any:
        while (line := lines.get()) is not None:
            yield line

    calls: list[str] = []
    seen: list[str] = []

    def idle_check() -> float | None:
        calls.append("check")
        if len(calls) == 3:
            lines.put("second\n")
        if len(calls) == 6:
            lines.put(None)
        return 0.01

    lines.put("first\n")
    for line in lines_with_idle_checks(source(), idle_check):
        seen.append(line)
    assert seen == ["first\n", "second\n"]
    assert len(calls) >= 6


def test_an_input_error_reaches_the_reader() -> None:
    def failing() -> Any:
        yield "one\n"
        raise OSError("stdin went away")

    got: list[str] = []
    try:
        for line in lines_with_idle_checks(failing(), lambda: None):
            got.append(line)
    except OSError as exc:
        assert str(exc) == "stdin went away"
    else:
        raise AssertionError("the input's error was swallowed")
    assert got == ["one\n"]


def test_max_latency_seconds_must_be_a_positive_number(sandbox: Sandbox) -> None:
    for bad in (0, -1, "2", True):
        _, problems = read_settings(base_config(sandbox, max_latency_seconds=bad))
        assert any(p.startswith("max_latency_seconds is ") and "above 0" in p
                   for p in problems), (bad, problems)
    settings, problems = read_settings(base_config(sandbox, max_latency_seconds=1.5))
    assert problems == [] and settings is not None and settings.max_latency_seconds == 1.5
    settings, _ = read_settings(base_config(sandbox))
    assert settings is not None and settings.max_latency_seconds is None


def test_without_the_setting_the_input_is_read_as_before(sandbox: Sandbox,
                                                         tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(base_config(sandbox, tmp_path / "report.jsonl")))
    run = subprocess.run(
        [sys.executable, "-m", "target_salesforce_consent", "--config", str(config)],
        input=singer_lines([user("jane@example.com", purposes=[newsletter(False)])],
                           state={"position": 9}),
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert [json.loads(line) for line in run.stdout.splitlines()] == [{"position": 9}]
    assert _lead(sandbox, "jane@example.com")["Didomi_Newsletter__c"] is False


# ------------------------------------------------------------- receiver -> tap -> target

RECEIVER_ID, RECEIVER_SECRET = "didomi-integration", "e2e-webhook-secret-0123456789"


def _start_receiver(spool: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "DIDOMI_WEBHOOK_CLIENT_ID": RECEIVER_ID,
           "DIDOMI_WEBHOOK_CLIENT_SECRET": RECEIVER_SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "tap_didomi.receiver", "--spool", str(spool),
                             "--port", "0"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on http://" in line:
            url = line.split("listening on ", 1)[1].split()[0]
            threading.Thread(target=lambda: [None for _ in proc.stderr or ()],  # drain
                             daemon=True).start()
            return proc, url
    raise AssertionError("the receiver did not start")


def _webhook(email: str, enabled: bool, updated_at: str) -> dict[str, Any]:
    entity = {"id": f"didomi-{email}", "organization_user_id": email, "updated_at": updated_at,
              "created_at": "2024-01-01T00:00:00.000Z",
              "consents": {"purposes": [newsletter(enabled)],
                           "vendors": {"enabled": [], "disabled": []}}}
    return {"type": "user.updated", "parameters": {
        "source": {"id": f"event-{updated_at}", "created_at": updated_at},
        "old_entity": {**entity, "consents": {"purposes": []}}, "new_entity": entity}}


def _wait_for_state(states: queue.Queue[str], last_id: int) -> dict[str, Any]:
    while True:
        state = json.loads(states.get(timeout=120))
        if state["bookmarks"]["webhooks"]["spool_position"]["last_id"] >= last_id:
            return dict(state)


def test_a_webhook_reaches_the_lead_through_a_following_tap(sandbox: Sandbox,
                                                            tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    receiver, url = _start_receiver(spool)
    tap_config, target_config = tmp_path / "tap.json", tmp_path / "target.json"
    tap_config.write_text(json.dumps({"webhook_spool": str(spool), "follow": True,
                                      "poll_interval_seconds": 0.2}))
    target_config.write_text(json.dumps(base_config(
        sandbox, tmp_path / "report.jsonl", max_latency_seconds=0.5,
        consent_timestamp_field="Didomi_Consent_Updated__c")))
    tap = target = None
    try:
        token = requests.post(url + "/oauth/token", auth=(RECEIVER_ID, RECEIVER_SECRET),
                              data={"grant_type": "client_credentials"}, timeout=10
                              ).json()["access_token"]

        def send(body: dict[str, Any]) -> dict[str, Any]:
            answer = requests.post(url + "/webhooks/didomi", json=body, timeout=10,
                                   headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        first = send(_webhook("jane@example.com", True, "2025-05-01T10:00:00.000Z"))
        tap = subprocess.Popen([sys.executable, "-m", "tap_didomi", "--config", str(tap_config)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
        target = subprocess.Popen(
            [sys.executable, "-m", "target_salesforce_consent", "--config", str(target_config)],
            stdin=tap.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert target.stdout is not None
        states: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(target.stdout, states), daemon=True).start()

        _wait_for_state(states, int(first["id"]))
        lead = _lead(sandbox, "jane@example.com")
        assert lead["Didomi_Newsletter__c"] is True and lead["HasOptedOutOfEmail"] is False

        # Withdrawn a minute later; the retry of the first webhook is stored once.
        assert send(_webhook("jane@example.com", True, "2025-05-01T10:00:00.000Z")) == \
            {"status": "duplicate"}
        second = send(_webhook("jane@example.com", False, "2025-05-01T10:01:00.000Z"))
        _wait_for_state(states, int(second["id"]))
        lead = _lead(sandbox, "jane@example.com")
        assert lead["Didomi_Newsletter__c"] is False and lead["HasOptedOutOfEmail"] is True
        report = [json.loads(line) for line in
                  (tmp_path / "report.jsonl").read_text().splitlines()]
        assert [(r["didomi_id"], r["outcome"]) for r in report] == [
            ("didomi-jane@example.com", "updated"), ("didomi-jane@example.com", "updated")]
    finally:
        for proc in (tap, target, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(30)
