"""The Sandbox: an org, its HTTP server on a background thread, and test helpers."""

from __future__ import annotations

import copy
import json
import re
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from . import ids
from .errors import ApiError
from .http import App, Request, Response, SandboxHTTPServer, json_response
from .ingest import IngestJobs
from .org import LoggedRequest, Org, load_seed
from .query_jobs import QueryJobs
from .schema import HISTORY_OBJECTS


class Sandbox:
    """A local Salesforce emulator. See the package docstring for the API."""

    def __init__(
        self,
        seed: dict[str, Any] | str | Path | None = None,
        *,
        token_ttl: float | None = None,
        job_polls_to_complete: int = 0,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        latency: float = 0.0,
        rows_per_second: float | None = None,
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be zero or more seconds")
        self.org = Org(load_seed(seed), token_ttl=token_ttl)
        self.latency = float(latency)
        # How an answer waits out `latency` (on the connection's thread, outside the org
        # lock); a test may replace it to see the waits without waiting.
        self.delay: Callable[[float], None] = time.sleep
        self.ingest = IngestJobs(self.org, job_polls_to_complete, rows_per_second)
        self.queries = QueryJobs(self.org, job_polls_to_complete)
        self.app = App(self.org, self.ingest, self.queries)
        self.certfile = str(certfile) if certfile else None
        self.keyfile = str(keyfile) if keyfile else None
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Sandbox:
        if self._server is not None:
            return self
        context: ssl.SSLContext | None = None
        if self.certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.certfile, self.keyfile)
        # Each accepted connection is wrapped (and its handshake run) on its own thread.
        server = SandboxHTTPServer((host, port), self.app, self._admin, context, self.latency,
                                   lambda seconds: self.delay(seconds))
        scheme = "https" if context is not None else "http"
        bound_host, bound_port = server.server_address[:2]
        shown = host if host not in {"", "0.0.0.0"} else "127.0.0.1"
        del bound_host
        self.url = f"{scheme}://{shown}:{bound_port}"
        with self.org.lock:
            self.org.instance_url = self.url
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                                        name="salesforce-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    @property
    def client_id(self) -> str:
        return self.org.client_id

    @property
    def client_secret(self) -> str:
        return self.org.client_secret

    # ------------------------------------------------------------------ records

    def records(self, object_name: str, *, include_deleted: bool = False
                ) -> list[dict[str, Any]]:
        """The live records (with ``include_deleted``, the Recycle Bin's too) of any object,
        ``LeadHistory``, ``ContactHistory`` and ``User`` included."""
        with self.org.lock:
            schema = self.org.readable_schema(object_name)
            if schema is None:
                raise KeyError(object_name)
            return copy.deepcopy(self.org.all_records(schema.name,
                                                      include_deleted=include_deleted))

    def record(self, object_name: str, record_id: str, *, include_deleted: bool = False
               ) -> dict[str, Any]:
        """One live record (with ``include_deleted``, also a soft-deleted one); KeyError else."""
        with self.org.lock:
            found = self.org.find_record(record_id, include_deleted=include_deleted)
            if found is None or found[0].lower() != object_name.lower():
                raise KeyError(record_id)
            return copy.deepcopy(found[1])

    def add_records(self, object_name: str, records: list[dict[str, Any]]) -> list[str]:
        with self.org.lock:
            return self.org.add_records(object_name, records)

    def convert_lead(self, lead_id: str) -> None:
        with self.org.lock:
            self.org.convert_lead(lead_id)

    # ------------------------------------------------------------------ users and history

    @property
    def integration_user_id(self) -> str:
        """The user the client-credentials token acts as (the token response's ``id``)."""
        return self.org.user_id

    def users(self) -> list[dict[str, Any]]:
        """The org's users: the integration user and the people."""
        return self.records("User")

    def people(self) -> list[dict[str, Any]]:
        """The users other than the integration user (who a test writes "as a person")."""
        return [u for u in self.users() if u["Id"] != self.org.user_id]

    def update_as(self, user_id: str, object_name: str, record_id: str,
                  values: dict[str, Any], *, at: str | None = None) -> dict[str, Any]:
        """Change a record as ``user_id`` would in Salesforce's UI: the rules of a REST PATCH,
        ``LastModifiedById`` and field history rows naming that user. ``at`` (a Salesforce
        datetime such as ``2025-01-02T03:04:05Z``) backdates the change and its history.
        Returns the record; a refused change raises ValueError with Salesforce's error."""
        body = json.dumps(values).encode("utf-8")
        with self.org.lock, self.org.acting_as(user_id, at):
            try:
                self.app.sobjects.update_row(object_name, record_id, body)
            except ApiError as err:
                raise ValueError(f"{err.error_code}: {err.message}") from None
            return self.record(object_name, record_id)

    def create_as(self, user_id: str, object_name: str, values: dict[str, Any], *,
                  at: str | None = None) -> str:
        """Create a record as ``user_id`` (the rules of a REST POST); returns its Id."""
        body = json.dumps(values).encode("utf-8")
        with self.org.lock, self.org.acting_as(user_id, at):
            try:
                created = self.app.sobjects.create_row(object_name, body, "62.0")
            except ApiError as err:
                raise ValueError(f"{err.error_code}: {err.message}") from None
            return str(created.body["id"])

    def history(self, object_name: str, record_id: str | None = None
                ) -> list[dict[str, Any]]:
        """The field history rows of ``object_name`` (Lead or Contact), oldest first; of one
        record when ``record_id`` is given. KeyError when the object's history is off."""
        with self.org.lock:
            schema = self.org.schema(object_name)
            if schema is None or not self.org.tracked.get(schema.name):
                raise KeyError(f"{object_name} keeps no field history in this sandbox")
            rows = self.records(HISTORY_OBJECTS[schema.name])
        wanted = ids.normalize(record_id) if record_id is not None else None
        return [r for r in rows if wanted is None or r[f"{schema.name}Id"] == wanted]

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[LoggedRequest]:
        with self.org.lock:
            return list(self.org.log)

    def api_calls(self) -> dict[str, int]:
        with self.org.lock:
            return dict(self.org.calls)

    def ingest_job(self, job_id: str) -> dict[str, Any]:
        """The job info as ``GET`` would answer it (without advancing its state)."""
        with self.org.lock:
            return self.ingest.get(job_id).info_json(self.org.user_id)

    def ingest_jobs(self) -> list[dict[str, Any]]:
        with self.org.lock:
            return [j.info_json(self.org.user_id) for j in self.ingest.jobs.values()]

    # ------------------------------------------------------------------ faults

    def expire_tokens(self) -> None:
        with self.org.lock:
            self.org.expire_tokens()

    def fail_next(self, status: int | None, body: str = "", *, count: int = 1,
                  method: str | None = None, path: str | None = None,
                  content_type: str = "application/json;charset=UTF-8",
                  after: bool = False) -> None:
        """Answer the next ``count`` matching requests with ``status``/``body``.

        ``status`` 0 or None closes the connection without a response. With ``after=True`` the
        request is handled first (a PUT's data lands, a job is created...) and only its
        response is replaced: "the request succeeded but the response was lost".
        """
        with self.org.lock:
            self.org.add_http_fault(status, body, count=count, method=method, path=path,
                                    content_type=content_type, after=after)

    def lock_records(self, ids: list[str], attempts: int | None = None) -> None:
        with self.org.lock:
            self.org.lock_records(list(ids), attempts)

    def unlock_records(self, ids: list[str] | None = None) -> None:
        with self.org.lock:
            self.org.unlock_records(list(ids) if ids is not None else None)

    def fail_next_job(self, error_message: str = "InvalidBatch : Failed to process job") -> None:
        with self.org.lock:
            self.org.faults.job_failures.append(error_message)

    def leave_unprocessed(self, count: int) -> None:
        with self.org.lock:
            self.org.faults.unprocessed.append(int(count))

    def set_api_limit(self, max_requests: int, remaining: int | None = None) -> None:
        with self.org.lock:
            self.org.set_api_limit(max_requests, remaining)

    def set_token_ttl(self, seconds: float) -> None:
        with self.org.lock:
            self.org.token_ttl = float(seconds)

    def reset(self) -> None:
        with self.org.lock:
            self.org.reset()

    # ------------------------------------------------------------------ admin HTTP API

    def apply_fault(self, spec: dict[str, Any]) -> None:
        """Apply one admin fault description (the JSON of ``POST /__sandbox/faults``)."""
        kind = spec.get("type")
        if kind == "fail_next":
            status = spec["status"]
            self.fail_next(None if status is None else int(status), str(spec.get("body", "")),
                           count=int(spec.get("count", 1)), method=spec.get("method"),
                           path=spec.get("path"),
                           content_type=spec.get("content_type",
                                                 "application/json;charset=UTF-8"),
                           after=bool(spec.get("after", False)))
        elif kind == "lock_records":
            self.lock_records(list(spec["ids"]), spec.get("attempts"))
        elif kind == "unlock_records":
            self.unlock_records(spec.get("ids"))
        elif kind == "fail_next_job":
            self.fail_next_job(str(spec.get("error_message",
                                            "InvalidBatch : Failed to process job")))
        elif kind == "leave_unprocessed":
            self.leave_unprocessed(int(spec["count"]))
        elif kind == "set_api_limit":
            self.set_api_limit(int(spec["max_requests"]), spec.get("remaining"))
        elif kind == "expire_tokens":
            self.expire_tokens()
        elif kind == "set_token_ttl":
            self.set_token_ttl(float(spec["seconds"]))
        else:
            raise ValueError(f"unknown fault type: {kind!r}")

    def _admin(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        try:
            body: Any = json.loads(req.body.decode("utf-8")) if req.body.strip() else None
        except ValueError:
            return json_response(400, {"error": "body is not JSON"})
        try:
            m = re.fullmatch(r"/__sandbox/records/(\w+)", path)
            if m and req.method == "GET":
                deleted = (req.arg("include_deleted") or "").lower() in {"1", "true"}
                return json_response(200, self.records(m.group(1), include_deleted=deleted))
            as_user = req.arg("as_user")
            if m and req.method == "POST" and as_user:
                return json_response(201, {"id": self.create_as(as_user, m.group(1),
                                                                dict(body or {}),
                                                                at=req.arg("at"))})
            if m and req.method == "POST":
                items = body if isinstance(body, list) else [body]
                return json_response(201, {"ids": self.add_records(m.group(1), items)})
            m = re.fullmatch(r"/__sandbox/records/(\w+)/(\w+)", path)
            if m and req.method in {"POST", "PATCH"}:
                if not as_user:
                    raise ValueError("as_user is required: the Id of the user who makes the "
                                     "change (GET /__sandbox/users lists them)")
                return json_response(200, self.update_as(as_user, m.group(1), m.group(2),
                                                         dict(body or {}), at=req.arg("at")))
            if path == "/__sandbox/users" and req.method == "GET":
                return json_response(200, {"integration_user_id": self.integration_user_id,
                                           "users": self.users()})
            m = re.fullmatch(r"/__sandbox/leads/(\w+)/convert", path)
            if m and req.method == "POST":
                self.convert_lead(m.group(1))
                return json_response(200, self.record("Lead", m.group(1)))
            if path == "/__sandbox/requests" and req.method == "GET":
                return json_response(200, [r.to_json() for r in self.requests])
            if path == "/__sandbox/calls" and req.method == "GET":
                return json_response(200, self.api_calls())
            if path == "/__sandbox/jobs" and req.method == "GET":
                return json_response(200, self.ingest_jobs())
            if path == "/__sandbox/health" and req.method == "GET":
                return json_response(200, {"status": "ok"})
            if path == "/__sandbox/expire-tokens" and req.method == "POST":
                self.expire_tokens()
                return json_response(200, {"ok": True})
            if path == "/__sandbox/reset" and req.method == "POST":
                self.reset()
                return json_response(200, {"ok": True})
            if path == "/__sandbox/faults" and req.method == "POST":
                for spec in body if isinstance(body, list) else [body]:
                    self.apply_fault(dict(spec))
                return json_response(200, {"ok": True})
        except (KeyError, ValueError, TypeError, ApiError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": f"unknown admin endpoint {req.method} {path}"})
