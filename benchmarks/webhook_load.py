"""Shared parts of the webhook benchmarks: the receiver as a process, and a light HTTP client.

The client speaks HTTP/1.1 over asyncio streams with keep-alive connections: on a two-core
machine shared with the receiver, a heavier client (requests in threads) would measure itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

CLIENT_ID = "bench-didomi-integration"
CLIENT_SECRET = "bench-webhook-secret-0123456789"
# The consent fields the benchmarks' Leads carry, and the Didomi time of webhook number seq.
CUSTOM_FIELDS = [
    {"name": "Didomi_Newsletter__c", "type": "boolean", "label": "Newsletter (Didomi)"},
    {"name": "Didomi_Consent_Updated__c", "type": "datetime", "label": "Consent updated"},
]
EPOCH = dt.datetime(2025, 5, 1, tzinfo=dt.timezone.utc)


def stamp(seq: int) -> str:
    value = EPOCH + dt.timedelta(milliseconds=seq * 10)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ReceiverProcess:
    """``python -m tap_didomi.receiver`` on a fixed loopback port (kept across restarts)."""

    def __init__(self, spool: Path | str, port: int, *args: str) -> None:
        self.spool = str(spool)
        self.port = port
        self.args = args
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> ReceiverProcess:
        env = {**os.environ, "DIDOMI_WEBHOOK_CLIENT_ID": CLIENT_ID,
               "DIDOMI_WEBHOOK_CLIENT_SECRET": CLIENT_SECRET, "DIDOMI_WEBHOOK_LOG_LEVEL": "warning"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tap_didomi.receiver", "--spool", self.spool, "--port",
             str(self.port), *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            text=True, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"the receiver exited with {self.proc.returncode}")
            time.sleep(0.02)
        raise RuntimeError("the receiver did not become healthy")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def cpu_seconds(self) -> float:
        """User+system CPU of the running receiver (from /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def token(self) -> str:
        answer = requests.post(self.url + "/oauth/token", auth=(CLIENT_ID, CLIENT_SECRET),
                               data={"grant_type": "client_credentials"}, timeout=10)
        answer.raise_for_status()
        return str(answer.json()["access_token"])


def webhook(email: str, newsletter: bool, updated_at: str, seq: int) -> dict[str, Any]:
    """A user.updated webhook as Didomi sends it (a full user in old and new entity)."""
    entity = {
        "id": f"didomi-{email}", "organization_id": "acme-corp",
        "organization_user_id": email, "organization_user_id_type": "email",
        "created_at": "2024-01-01T00:00:00.000Z", "updated_at": updated_at,
        "metadata": {}, "version": seq,
        "consents": {"purposes": [{"id": "newsletter-Lq3Vx8Rw", "enabled": newsletter,
                                   "enabled_li": None, "metadata": {}}],
                     "channels": [], "vendors": {"enabled": [], "disabled": []}},
    }
    return {"type": "user.updated", "regulation": "gdpr",
            "parameters": {"source": {"id": f"evt-{seq:09d}", "created_at": updated_at},
                           "old_entity": {**entity, "consents": {"purposes": []}},
                           "new_entity": entity}}


@dataclass
class Sent:
    index: int
    status: int  # the last answer's status; 0 when none came
    acked_at: float  # time.monotonic() of the 2xx, 0.0 when never acknowledged
    attempts: int


class Client:
    """Posts webhooks over ``connections`` keep-alive connections, optionally paced."""

    def __init__(self, url: str, token: str, connections: int = 32) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.token = token
        self.connections = connections

    def _request(self, body: bytes) -> bytes:
        return (b"POST /webhooks/didomi HTTP/1.1\r\nHost: " + self.host.encode()
                + b"\r\nAuthorization: Bearer " + self.token.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def _post(self, conn: list[Any], body: bytes) -> int:
        if not conn:
            conn.extend(await asyncio.open_connection(self.host, self.port))
        reader, writer = conn
        writer.write(self._request(body))
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        length = 0
        close = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value.strip())
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        await reader.readexactly(length)
        if close:
            writer.close()
            conn.clear()
        return int(status_line.split()[1])

    async def _run(self, bodies: Sequence[bytes], rate: float | None, retry: bool,
                   on_ack: Callable[[int, float], None] | None) -> list[Sent]:
        results: list[Sent | None] = [None] * len(bodies)
        queue: asyncio.Queue[int] = asyncio.Queue()
        start = time.monotonic()

        async def feeder() -> None:
            for index in range(len(bodies)):
                if rate:
                    delay = start + index / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await queue.put(index)

        async def worker() -> None:
            conn: list[Any] = []
            while True:
                index = await queue.get()
                if index < 0:
                    return
                attempts, status = 0, 0
                while True:
                    attempts += 1
                    try:
                        status = await self._post(conn, bodies[index])
                    except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError,
                            IndexError):
                        status = 0
                        if conn:
                            conn[1].close()
                            conn.clear()
                    if 200 <= status < 300 or not retry:
                        break
                    await asyncio.sleep(0.05)  # Didomi waits longer; the receiver is back soon
                acked = time.monotonic() if 200 <= status < 300 else 0.0
                results[index] = Sent(index, status, acked, attempts)
                if acked and on_ack is not None:
                    on_ack(index, acked)

        workers = [asyncio.create_task(worker()) for _ in range(self.connections)]
        await feeder()
        for _ in workers:
            await queue.put(-1)
        await asyncio.gather(*workers)
        return [r for r in results if r is not None]

    def send(self, bodies: Sequence[bytes], *, rate: float | None = None, retry: bool = False,
             on_ack: Callable[[int, float], None] | None = None) -> list[Sent]:
        return asyncio.run(self._run(bodies, rate, retry, on_ack))


def encode(webhook_body: dict[str, Any]) -> bytes:
    return json.dumps(webhook_body).encode()


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def drain(stream: Any) -> None:
    """Read a pipe to its end in a thread (a full pipe would block its writer)."""
    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
