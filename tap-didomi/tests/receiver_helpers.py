"""Helpers for the receiver's tests: run the real receiver as a process, post webhooks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

CLIENT_ID = "didomi-integration"
CLIENT_SECRET = "webhook-secret-0123456789abcdef"

_LISTENING = re.compile(r"listening on (http://[^\s]+) ")


class Receiver:
    """``python -m tap_didomi.receiver`` on an ephemeral loopback port."""

    def __init__(self, spool: str, *args: str, env: dict[str, str] | None = None,
                 client_secret: str = CLIENT_SECRET) -> None:
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("DIDOMI_WEBHOOK_")}
        run_env.update({"DIDOMI_WEBHOOK_CLIENT_ID": CLIENT_ID,
                        "DIDOMI_WEBHOOK_CLIENT_SECRET": client_secret})
        run_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tap_didomi.receiver", "--spool", spool, "--port", "0",
             *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=run_env)
        self.lines: list[str] = []
        self._url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._pump, args=(self.proc.stderr,), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()
        if not self._ready.wait(60) or self._url is None:
            self.kill()
            raise AssertionError("the receiver did not start:\n" + self.output[-3000:])
        self.url: str = self._url
        self._wait_healthy()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)
            match = _LISTENING.search(line)
            if match:
                self._url = match.group(1)
                self._ready.set()
        self._ready.set()

    def _wait_healthy(self) -> None:
        for _ in range(200):
            try:
                if requests.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError("the receiver never became healthy:\n" + self.output[-3000:])

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def token(self) -> str:
        answer = requests.post(self.url + "/oauth/token", timeout=10,
                               data={"grant_type": "client_credentials",
                                     "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def post(self, body: Any, token: str | None, *, data: bytes | None = None,
             timeout: float = 30) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if data is not None:
            return requests.post(self.url + "/webhooks/didomi", data=data, timeout=timeout,
                                 headers={**headers, "Content-Type": "application/json"})
        return requests.post(self.url + "/webhooks/didomi", json=body, headers=headers,
                             timeout=timeout)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(60)


@contextmanager
def running_receiver(spool: str, *args: str, env: dict[str, str] | None = None
                     ) -> Iterator[Receiver]:
    receiver = Receiver(spool, *args, env=env)
    try:
        yield receiver
    finally:
        receiver.kill()


def webhook(n: int, *, updated_at: str = "2025-04-01T10:00:00.000Z", enabled: bool = True,
            email: str | None = None) -> dict[str, Any]:
    """A ``user.updated`` webhook (reference 2.7) for person n."""
    ouid = email or f"person{n}@example.com"
    entity = {
        "id": f"didomi-user-{n:05d}",
        "organization_id": "acme-corp",
        "organization_user_id": ouid,
        "created_at": "2024-01-01T00:00:00.000Z",
        "updated_at": updated_at,
        "consents": {"purposes": [{"id": "newsletter-Lq3Vx8Rw", "enabled": enabled}],
                     "channels": [], "vendors": {"enabled": [], "disabled": []}},
    }
    return {"type": "user.updated",
            "parameters": {"source": {"id": f"event-{n:05d}-{updated_at}",
                                      "created_at": updated_at},
                           "old_entity": {**entity, "consents": {"purposes": []}},
                           "new_entity": entity}}


def guest_webhook(n: int) -> dict[str, Any]:
    """An ``event.created`` of a cookie banner: no organization_user_id anywhere."""
    return {"type": "event.created", "regulation": "gdpr",
            "parameters": {"entity": {"id": f"guest-event-{n}", "organization_id": "acme-corp",
                                      "user": {"id": f"guest-{n}"},
                                      "consents": {"purposes": [{"id": "cookies",
                                                                 "enabled": True}]}}}}


def spool_rows(folder: Path) -> list[tuple[int, str, str]]:
    import sqlite3

    conn = sqlite3.connect(folder / "webhooks.sqlite3")
    try:
        return conn.execute("SELECT id, dedupe_key, body FROM webhooks ORDER BY id").fetchall()
    finally:
        conn.close()
