"""Helpers for tap-didomi's tests: run the real CLI, build export folders, make records.

The tap runs as a subprocess (``python -m tap_didomi``) so that the tests see exactly what
Meltano sees: stdout messages, stderr logs and the exit code.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TapRun:
    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    def records(self, stream: str | None = None) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages
                if m["type"] == "RECORD" and (stream is None or m["stream"] == stream)]

    def schemas(self) -> dict[str, dict[str, Any]]:
        return {m["stream"]: m for m in self.messages if m["type"] == "SCHEMA"}

    def states(self) -> list[dict[str, Any]]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def state(self) -> dict[str, Any]:
        states = self.states()
        assert states, f"no STATE message; stderr:\n{self.stderr[-3000:]}"
        return states[-1]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class TapRunner:
    """Runs ``python -m tap_didomi`` with a config (and state) written to a temp folder."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0

    def __call__(
        self,
        config: dict[str, Any],
        state: dict[str, Any] | None = None,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> TapRun:
        self.count += 1
        config_path = self.workdir / f"config-{self.count}.json"
        config_path.write_text(json.dumps(config))
        cmd = [sys.executable, "-m", "tap_didomi", "--config", str(config_path)]
        if state is not None:
            state_path = self.workdir / f"state-{self.count}.json"
            state_path.write_text(json.dumps(state))
            cmd += ["--state", str(state_path)]
        cmd += list(args)
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_DIDOMI_")}
        run_env.update(env or {})
        proc = subprocess.run(cmd, capture_output=True, text=True, env=run_env,
                              stdin=subprocess.DEVNULL, timeout=300)
        run = TapRun(proc.returncode, proc.stdout, proc.stderr)
        if "--discover" not in args and "--about" not in args:
            run.messages = [json.loads(line) for line in proc.stdout.splitlines() if line]
        return run


# ----------------------------------------------------------------------------- records


def user(n: int, updated_at: str, **extra: Any) -> dict[str, Any]:
    """A v2 Didomi user object (reference 2.3) with nested consents."""
    record: dict[str, Any] = {
        "id": f"user-{n:04d}",
        "organization_id": "acme-corp",
        "organization_user_id": f"person{n}@example.com",
        "organization_user_id_type": "email",
        "version": 1,
        "created_at": "2024-01-01T00:00:00.000Z",
        "updated_at": updated_at,
        "metadata": {"segment": "b2b", "tags": ["a", "b"]},
        "country": None,
        "last_seen_country": "FR",
        "consents": {
            "purposes": [
                {"id": "marketing-9HmMn6Vt", "enabled": n % 2 == 0, "enabled_li": None,
                 "metadata": {}, "values": {"topics-CFWKNVJV": {"value": "dK7rBBXk,Ab12Cd34"}}},
                {"id": "newsletter-Lq3Vx8Rw", "enabled": None},
            ],
            "channels": [],
            "vendors": {"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []},
            "tcfcs": None,
        },
        # A field Didomi may add one day: passed through, never dropped.
        "future_field": {"nested": [1, 2, 3]},
    }
    record.update(extra)
    return record


def event(n: int, created_at: str) -> dict[str, Any]:
    """A v2 Didomi consent event (reference 2.4)."""
    return {
        "id": f"event-{n:04d}",
        "organization_id": "acme-corp",
        "created_at": created_at,
        "updated_at": created_at,
        "status": "confirmed",
        "regulation": "gdpr",
        "metadata": {},
        "user": {"id": f"user-{n:04d}", "organization_user_id": f"person{n}@example.com"},
        "consents": {"purposes": [{"id": "newsletter-Lq3Vx8Rw", "enabled": True}],
                     "vendors": {"enabled": [], "disabled": []}},
        "proofs_id": [],
        "delegate": None,
    }


# ----------------------------------------------------------------------------- exports


def write_file(path: Path, records: list[dict[str, Any]], *, raw: bytes | None = None) -> Path:
    """NDJSON at ``path``, gzip-compressed when the name ends with .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = raw if raw is not None else "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def partition_dir(root: Path, date: str, folder: str = "users",
                  export_id: str = "exp-1") -> Path:
    return root / f"export-id={export_id}" / f"date={date}" / folder


def build_export(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Three partitions, two files each (gzip and plain), events in two of them.

    Returns the records per stream in the order the tap reads them.
    """
    users: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    n = 0
    for day in ("2025-03-01", "2025-03-02", "2025-03-03"):
        folder = partition_dir(root, day)
        first = [user(n + i, f"{day}T08:00:0{i}.000Z") for i in range(2)]
        second = [user(n + 2, f"{day}T09:00:00.000Z")]
        n += 3
        write_file(folder / "part-00000.json.gz", first)
        write_file(folder / "part-00001.json", second)
        users += first + second
        if day != "2025-03-02":
            batch = [event(n + i, f"{day}T10:00:00.000Z") for i in range(2)]
            write_file(partition_dir(root, day, "events") / "events-0.json.gz", batch)
            events += batch
    return {"users": users, "events": events}


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[dict[str, str]]:
    """moto's S3 server on a loopback port with `bucket` created; the AWS variables that point
    boto (and so the tap, the receiver and s3fs) at it are set in os.environ meanwhile."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # The tap finds credentials and the endpoint the way boto does, from the environment.
    env = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
