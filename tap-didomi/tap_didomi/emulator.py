"""A local emulator of the Didomi Consents API routes the tap uses, for tests and trials.

    python -m tap_didomi.emulator --users users.jsonl [--port 8080] [--page-size 100]

Serves, under ``http://127.0.0.1:<port>/v1``:

* ``POST /sessions`` ``{"type": "api-key", "key", "secret"}`` → ``{"access_token": ...}``;
  wrong credentials → 400 BadRequest.
* ``GET /consents/users?organization_id=…[&regulation=…][&$cursor=…][&$include_full_tree=true]``
  → ``{"data": [...], "limit": <page size>, "cursor": <next or null>}``; no, unknown or
  expired token → 401 NotAuthenticated; another organization → 403 Forbidden.
* ``$include_full_tree=true`` calls count against 100 requests per 15 s per organization;
  past that, 429 TooManyRequests with ``Retry-After`` (seconds) and ``RateLimit`` headers.

Every error body is Didomi's ``{"code", "name", "message", "errors"}``. Tests steer it with
``expire_tokens()``, ``expire_tokens_after(n)``, ``throttle(n, retry_after[, status])``,
``insert_empty_pages(n)`` (pages ``{"data": [], "cursor": <next>}``, as Didomi may serve),
``cut_connections(n)`` (the connection closed without an answer) and ``hold_faults(pages)``
(the queued 429/503s and cuts start after that many pages), and read what it saw in
``calls`` (status 0: a cut connection) and ``tokens_minted``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import secrets
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/v1"


@dataclass(frozen=True)
class Call:
    """One request the emulator answered."""

    method: str
    path: str
    query: dict[str, str]
    status: int


class DidomiEmulator:
    """In-process Didomi Consents API on loopback (a thread per request)."""

    def __init__(
        self,
        *,
        api_key: str = "emulator-api-key",
        api_secret: str = "emulator-api-secret",
        organization_id: str = "acme-corp",
        users: Iterable[dict[str, Any]] = (),
        page_size: int = 100,
        token_lifetime: float = 3600.0,
        full_tree_limit: int = 100,
        full_tree_window: float = 15.0,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.organization_id = organization_id
        self.page_size = page_size
        self.token_lifetime = token_lifetime
        self.full_tree_limit = full_tree_limit
        self.full_tree_window = full_tree_window
        self._lock = threading.Lock()
        self._users: dict[str, list[dict[str, Any]]] = {"gdpr": [dict(u) for u in users]}
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._expire_after: int | None = None
        # Forced answers to come, in order: (status, Retry-After); status 0 cuts the connection.
        self._throttled: list[tuple[int, float]] = []
        self._fault_hold = 0  # pages to serve before the forced answers start
        self._empty_pages = 0  # empty pages (with a cursor) to serve before the next real ones
        self._window_start = 0.0
        self._window_count = 0
        self.calls: list[Call] = []
        self.tokens_minted = 0
        self._server: ThreadingHTTPServer | None = None
        self._host = "127.0.0.1"
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> DidomiEmulator:
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        self._host = host
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> DidomiEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the emulator first"
        return f"http://{self._host}:{self._server.server_port}{PREFIX}"

    # -- steering ----------------------------------------------------------------------------

    def set_users(self, users: Iterable[dict[str, Any]], regulation: str = "gdpr") -> None:
        with self._lock:
            self._users[regulation] = [dict(u) for u in users]

    def upsert_user(self, user: dict[str, Any], regulation: str = "gdpr") -> None:
        """Add the user, or replace the one with its id (keeping its place in the listing)."""
        with self._lock:
            users = self._users.setdefault(regulation, [])
            for i, existing in enumerate(users):
                if existing.get("id") == user.get("id"):
                    users[i] = dict(user)
                    return
            users.append(dict(user))

    def expire_tokens(self) -> None:
        """Every token minted so far answers 401 from now on."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    def expire_tokens_after(self, pages: int) -> None:
        """Expire every token once ``pages`` more user pages have been served."""
        with self._lock:
            self._expire_after = pages

    def throttle(self, count: int, retry_after: float = 1.0, status: int = 429) -> None:
        """Answer the next ``count`` consents calls with 429 (or ``status``, e.g. 503) and this
        ``Retry-After``."""
        with self._lock:
            self._throttled.extend([(status, retry_after)] * count)

    def insert_empty_pages(self, count: int) -> None:
        """Answer the next ``count`` calls that carry a ``$cursor`` with no user and a cursor to
        the page they would have served."""
        with self._lock:
            self._empty_pages += count

    def cut_connections(self, count: int) -> None:
        """Close the connection of the next ``count`` consents calls without answering (after
        the forced answers already queued)."""
        with self._lock:
            self._throttled.extend([(0, 0.0)] * count)

    def hold_faults(self, pages: int) -> None:
        """Serve ``pages`` pages normally before the queued 429/503s and cuts begin."""
        with self._lock:
            self._fault_hold = pages

    def statuses(self, path: str | None = None) -> list[int]:
        with self._lock:
            return [c.status for c in self.calls if path is None or c.path == path]

    # -- request handling (called from the handler threads) ----------------------------------

    def _record(self, method: str, path: str, query: dict[str, str], status: int) -> None:
        with self._lock:
            self.calls.append(Call(method, path, query, status))

    def handle_session(self, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        if not isinstance(body, dict) or body.get("type") != "api-key":
            return _error(400, "BadRequest", 'type must be "api-key"',
                          {"type": "required"})
        if body.get("key") != self.api_key or body.get("secret") != self.api_secret:
            return _error(400, "BadRequest", "Invalid API key or secret")
        token = "emu." + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
            self.tokens_minted += 1
        return 200, {"access_token": token, "token_type": "Bearer",
                     "expires_in": int(self.token_lifetime)}, {}

    def handle_users(
        self, authorization: str | None, query: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self._lock:
            expiry = self._tokens.get(token)
        if not token or expiry is None:
            return _error(401, "NotAuthenticated", "No valid access token was provided")
        if expiry <= time.monotonic():
            return _error(401, "NotAuthenticated", "jwt expired")
        headers: dict[str, str] = {}
        with self._lock:
            if self._throttled and self._fault_hold <= 0:
                status, wait = self._throttled.pop(0)
                if status == 0:
                    return 0, {}, {}  # the handler closes the connection
                name = "TooManyRequests" if status == 429 else "ServiceUnavailable"
                return _error(status, name, "Rate limit exceeded" if status == 429
                              else "Service unavailable", headers={"Retry-After": _seconds(wait)})
            if query.get("$include_full_tree") == "true":
                now = time.monotonic()
                if now - self._window_start >= self.full_tree_window:
                    self._window_start, self._window_count = now, 0
                reset = self.full_tree_window - (now - self._window_start)
                if self._window_count >= self.full_tree_limit:
                    return _error(
                        429, "TooManyRequests", "Rate limit exceeded",
                        headers={"Retry-After": _seconds(reset),
                                 "RateLimit": f"limit={self.full_tree_limit}, remaining=0, "
                                              f"reset={_seconds(reset)}"},
                    )
                self._window_count += 1
                headers["RateLimit"] = (
                    f"limit={self.full_tree_limit}, "
                    f"remaining={self.full_tree_limit - self._window_count}, "
                    f"reset={_seconds(reset)}"
                )
                headers["RateLimit-Policy"] = (
                    f"{self.full_tree_limit};w={int(self.full_tree_window)}"
                )
        organization_id = query.get("organization_id")
        if not organization_id:
            return _error(400, "BadRequest", "organization_id is required",
                          {"organization_id": "required"})
        if organization_id != self.organization_id:
            return _error(403, "Forbidden", "You do not have access to this organization")
        regulation = query.get("regulation", "gdpr")
        with self._lock:
            if regulation not in self._users:
                return _error(400, "BadRequest", f"Unknown regulation {regulation}",
                              {"regulation": "unknown"})
            users = list(self._users[regulation])
        offset = 0
        if "$cursor" in query:
            offset_or_none = _decode_cursor(query["$cursor"], regulation)
            if offset_or_none is None:
                return _error(400, "BadRequest", "Invalid cursor", {"$cursor": "invalid"})
            offset = offset_or_none
            with self._lock:
                if self._empty_pages > 0:
                    self._empty_pages -= 1
                    # A cursor of its own (the SDK refuses a cursor equal to the last one).
                    again = _encode_cursor(offset, regulation, f"e{self._empty_pages}")
                    return 200, {"data": [], "limit": self.page_size, "cursor": again}, headers
        page = users[offset:offset + self.page_size]
        following = offset + self.page_size
        cursor = _encode_cursor(following, regulation) if following < len(users) else None
        with self._lock:
            self._fault_hold -= 1
            if self._expire_after is not None:
                self._expire_after -= 1
                if self._expire_after <= 0:
                    self._expire_after = None
                    self._tokens = dict.fromkeys(self._tokens, 0.0)
        return 200, {"data": page, "limit": self.page_size, "cursor": cursor}, headers


def _seconds(value: float) -> str:
    return str(max(1, math.ceil(value)))


def _error(
    code: int, name: str, message: str, errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    return code, {"code": code, "name": name, "message": message, "errors": errors or {}}, \
        headers or {}


def _encode_cursor(offset: int, regulation: str, tag: str = "") -> str:
    text = f"{regulation}:{offset}" + (f":{tag}" if tag else "")
    return base64.urlsafe_b64encode(text.encode()).decode()


def _decode_cursor(cursor: str, regulation: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        cursor_regulation, offset, *_tag = text.split(":")
        value = int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return value if cursor_regulation == regulation and value >= 0 else None


class _Handler(BaseHTTPRequestHandler):
    emulator: DidomiEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tests read `calls` instead

    def _send(self, method: str, path: str, query: dict[str, str],
              result: tuple[int, dict[str, Any], dict[str, str]]) -> None:
        status, body, headers = result
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)
        self.emulator._record(method, path, query, status)

    def _split(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = parts.path[len(PREFIX):] if parts.path.startswith(PREFIX) else parts.path
        return path.rstrip("/") or "/", query

    def do_POST(self) -> None:
        path, query = self._split()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path != "/sessions":
            self._send("POST", path, query, _error(404, "NotFound", f"No route POST {path}"))
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._send("POST", path, query, _error(400, "BadRequest", "Body is not JSON"))
            return
        self._send("POST", path, query, self.emulator.handle_session(body))

    def do_GET(self) -> None:
        path, query = self._split()
        if path != "/consents/users":
            self._send("GET", path, query, _error(404, "NotFound", f"No route GET {path}"))
            return
        result = self.emulator.handle_users(self.headers.get("Authorization"), query)
        if result[0] == 0:
            self.close_connection = True  # no status line: the client sees the connection drop
            self.emulator._record("GET", path, query, 0)
            return
        self._send("GET", path, query, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local Didomi Consents API emulator.")
    parser.add_argument("--users", type=Path, help="JSON Lines file of user objects (gdpr)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args(argv)
    users = []
    if args.users:
        lines = args.users.read_text(encoding="utf-8").splitlines()
        users = [json.loads(line) for line in lines if line.strip()]
    emulator = DidomiEmulator(users=users, page_size=args.page_size).start(args.host, args.port)
    print(json.dumps({"api_url": emulator.url, "api_key": emulator.api_key,
                      "api_secret": emulator.api_secret,
                      "organization_id": emulator.organization_id}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
