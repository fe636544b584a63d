"""tap-didomi's webhook_spool source: what the real receiver stored, read once, or followed."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from didomi_tap_helpers import TapRunner
from receiver_helpers import guest_webhook, running_receiver, webhook


def test_reads_the_folder_spool_once_and_resumes_from_the_bookmark(
        tmp_path: Path, run_tap: TapRunner) -> None:
    spool = str(tmp_path / "spool")
    sent = [webhook(n) for n in range(5)]
    with running_receiver(spool, "--keep-guests") as receiver:
        token = receiver.token()
        answers = [receiver.post(body, token).json() for body in sent]
        receiver.post(sent[2], token)  # a retry: stored once
        config = {"webhook_spool": spool}

        first = run_tap(config)
        assert first.returncode == 0, first.stderr[-3000:]
        records = first.records("webhooks")
        assert [r["id"] for r in records] == [a["id"] for a in answers]
        for record, body in zip(records, sent, strict=True):
            received_at = record.pop("received_at")
            assert received_at.endswith("Z") and received_at[:4] >= "2025"
            assert {k: v for k, v in record.items() if k != "id"} == body
        assert first.state["bookmarks"]["webhooks"]["spool_position"] == {"last_id": 5}
        schema = first.schemas()["webhooks"]
        assert schema["key_properties"] == ["id"]

        again = run_tap(config, first.state)
        assert again.returncode == 0 and again.records() == []

        receiver.post(webhook(9), token)
        receiver.post(guest_webhook(1), token)  # kept by --keep-guests: the tap passes it on
        third = run_tap(config, first.state)
        assert [r["type"] for r in third.records()] == ["user.updated", "event.created"]
        # Ids grow with each stored webhook (a refused duplicate may use one up).
        last = int(third.records()[-1]["id"])
        assert last > int(third.records()[0]["id"]) > 5
        assert third.state["bookmarks"]["webhooks"]["spool_position"] == {"last_id": last}


def _read_lines(stream: Any, lines: queue.Queue[dict[str, Any]]) -> None:
    for line in stream:
        if line.strip():
            lines.put(json.loads(line))


def _next_of_type(lines: queue.Queue[dict[str, Any]], kind: str) -> dict[str, Any]:
    while True:
        message = lines.get(timeout=60)
        if message["type"] == kind:
            return message


def test_follow_keeps_reading_and_emits_state_after_each_read(
        tmp_path: Path, run_tap: TapRunner) -> None:
    spool = str(tmp_path / "spool")
    with running_receiver(spool) as receiver:
        token = receiver.token()
        receiver.post(webhook(1), token)
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps({"webhook_spool": spool, "follow": True,
                                           "poll_interval_seconds": 0.1}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_DIDOMI_")}
        tap = subprocess.Popen([sys.executable, "-m", "tap_didomi", "--config", str(config_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, text=True, env=env)
        lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=_read_lines, args=(tap.stdout, lines), daemon=True).start()
        try:
            first = _next_of_type(lines, "RECORD")
            assert first["record"]["parameters"]["new_entity"]["organization_user_id"] == \
                "person1@example.com"
            state = _next_of_type(lines, "STATE")
            assert state["value"]["bookmarks"]["webhooks"]["spool_position"] == {"last_id": 1}
            # The tap is still running: a webhook received now comes out of it.
            time.sleep(0.5)
            assert tap.poll() is None
            receiver.post(webhook(2), token)
            second = _next_of_type(lines, "RECORD")
            assert second["record"]["id"] == "2"
            state = _next_of_type(lines, "STATE")
            assert state["value"]["bookmarks"]["webhooks"]["spool_position"] == {"last_id": 2}
        finally:
            tap.kill()
            tap.wait(30)


def test_webhook_spool_excludes_the_other_sources(tmp_path: Path, run_tap: TapRunner) -> None:
    spool = str(tmp_path / "spool")
    with running_receiver(spool):
        pass
    both = run_tap({"webhook_spool": spool, "export_path": str(tmp_path)})
    assert both.returncode == 2 and both.stdout == ""
    assert "webhook_spool and export_path are both set" in both.stderr
    api = run_tap({"webhook_spool": spool, "api_key": "k", "api_secret": "hidden-secret-value",
                   "organization_id": "o"})
    assert api.returncode == 2 and "api_key, api_secret, organization_id" in api.stderr
    assert "hidden-secret-value" not in api.output
    interval = run_tap({"webhook_spool": spool, "poll_interval_seconds": 0})
    assert interval.returncode == 2 and "poll_interval_seconds must be" in interval.stderr


def test_a_folder_without_a_spool_is_a_configuration_error(
        tmp_path: Path, run_tap: TapRunner) -> None:
    run = run_tap({"webhook_spool": str(tmp_path / "nothing-here")})
    assert run.returncode == 2 and run.stdout == ""
    assert "holds no spool (webhooks.sqlite3 is missing)" in run.stderr
    assert "Traceback" not in run.stderr
