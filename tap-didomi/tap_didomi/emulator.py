"""A local emulator of the Didomi Consents API routes the tap uses, for tests and trials.

    python -m tap_didomi.emulator --users users.jsonl [--port 8080] [--page-size 100]

Serves, under ``http://127.0.0.1:<port>/v1``:

* ``POST /sessions`` ``{"type": "api-key", "key", "secret"}`` → ``{"access_token": ...}``;
  wrong credentials → 400 BadRequest.
* ``GET /consents/users?organization_id=…[&regulation=…][&$cursor=…][&$include_full_tree=true]``
  → ``{"data": [...], "limit": <page size>, "cursor": <next or null>}``; no, unknown or
  expired token → 401 NotAuthenticated; another organization → 403 Forbidden.
* ``GET /consents/users?…&organization_user_id=…`` → only that person's users.
* ``POST /consents/events[?organization_id=…]`` with one event object or an array of up to
  100 → 201 with what was stored (the object or the array). An event whose ``id`` is already
  stored is not created again: the stored one is answered (a resend is harmless). An event
  without ``id`` gets one; without ``created_at``, the time it arrives. Its user is found by
  ``user.id``, else by ``user.organization_user_id``, else created. A request with any invalid
  event stores none of them (400, ``errors`` keyed by position).
* ``GET /consents/events?organization_id=…&organization_user_id=…`` (or ``user_id=…``)
  ``[&regulation=…][&$limit=…][&$skip=…]`` → ``{"data", "total", "limit", "skip"}``, the
  person's events in the order they were stored.
* A user's ``consents`` are recomputed from its events ordered by ``created_at``, on top of the
  state it was seeded with: each purpose, channel, preference and vendor holds the choice of the
  newest event that carries one (a ``null`` is no choice), whatever order the events arrived
  in. Each new event sets ``updated_at`` to the time it arrived and adds one to ``version``,
  also when it confirms choices the user already holds.
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
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
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
        self._events: dict[str, dict[str, Any]] = {}  # event id -> event, in arrival order
        self._seeded_consents: dict[str, Any] = {}  # user id -> consents before its events
        self.max_events_per_request = 100
        # When Didomi receives an event (its users' updated_at); a soak sets a simulated clock.
        self.clock: Callable[[], str] = _now
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
        if "organization_user_id" in query:
            users = [u for u in users
                     if u.get("organization_user_id") == query["organization_user_id"]]
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

    # -- consent events ----------------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every stored event, in arrival order (copies)."""
        with self._lock:
            return [json.loads(json.dumps(e)) for e in self._events.values()]

    def add_events(self, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store events as ``POST /consents/events`` does (choices made in Didomi)."""
        batch = list(events)
        for event in batch:
            problems = event_problems(event, self.organization_id)
            if problems:
                raise ValueError(f"invalid event {event!r}: {problems}")
        with self._lock:
            return [json.loads(json.dumps(self._store_event(e))) for e in batch]

    def users(self, regulation: str = "gdpr") -> list[dict[str, Any]]:
        """The users of ``regulation`` as the API lists them (copies)."""
        with self._lock:
            return [json.loads(json.dumps(u)) for u in self._users.get(regulation, [])]

    def _token_error(
        self, authorization: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self._lock:
            expiry = self._tokens.get(token)
        if not token or expiry is None:
            return _error(401, "NotAuthenticated", "No valid access token was provided")
        if expiry <= time.monotonic():
            return _error(401, "NotAuthenticated", "jwt expired")
        return None

    def handle_events_post(
        self, authorization: str | None, query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any] | list[Any], dict[str, str]]:
        refused = self._token_error(authorization)
        if refused is not None:
            return refused
        organization_id = query.get("organization_id", self.organization_id)
        if organization_id != self.organization_id:
            return _error(403, "Forbidden", "You do not have access to this organization")
        batch = body if isinstance(body, list) else [body]
        if not batch or len(batch) > self.max_events_per_request:
            return _error(400, "BadRequest",
                          f"Send 1 to {self.max_events_per_request} events per request",
                          {"body": f"{len(batch)} events"})
        errors: dict[str, str] = {}
        for index, event in enumerate(batch):
            for key, problem in event_problems(event, self.organization_id).items():
                errors[f"{index}.{key}" if isinstance(body, list) else key] = problem
        if errors:
            return _error(400, "BadRequest", "Invalid consent event", errors)
        with self._lock:
            stored = [self._store_event(event) for event in batch]
        answer: dict[str, Any] | list[Any] = stored if isinstance(body, list) else stored[0]
        return 201, json.loads(json.dumps(answer)), {}

    def handle_events_get(
        self, authorization: str | None, query: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        refused = self._token_error(authorization)
        if refused is not None:
            return refused
        if query.get("organization_id", self.organization_id) != self.organization_id:
            return _error(403, "Forbidden", "You do not have access to this organization")
        ouid, user_id = query.get("organization_user_id"), query.get("user_id")
        if not ouid and not user_id:
            return _error(400, "BadRequest", "user_id or organization_user_id is required",
                          {"organization_user_id": "required"})
        try:
            limit = min(int(query.get("$limit", "100")), 100)
            skip = int(query.get("$skip", "0"))
        except ValueError:
            return _error(400, "BadRequest", "$limit and $skip must be integers")
        if limit < 1 or skip < 0:
            return _error(400, "BadRequest", "$limit must be 1 to 100 and $skip 0 or more")
        regulation = query.get("regulation", "gdpr")
        with self._lock:
            found = [
                e for e in self._events.values()
                if e["regulation"] == regulation
                and (not ouid or e["user"].get("organization_user_id") == ouid)
                and (not user_id or e["user"].get("id") == user_id)
            ]
            page = json.loads(json.dumps(found[skip:skip + limit]))
        return 200, {"data": page, "total": len(found), "limit": limit, "skip": skip}, {}

    def _store_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Store one valid event and recompute its user (under the lock)."""
        if isinstance(event.get("id"), str) and event["id"] in self._events:
            return self._events[event["id"]]  # idempotent on id
        now = self.clock()
        regulation = event.get("regulation") or "gdpr"
        user = self._user_for(event["user"], regulation, now)
        stored: dict[str, Any] = {
            "id": event.get("id") or str(uuid.uuid4()),
            "organization_id": self.organization_id,
            "created_at": event.get("created_at") or now,
            "updated_at": now,
            "status": "confirmed",
            "regulation": regulation,
            "metadata": event.get("metadata") or {},
            "user": {"id": user["id"], "organization_user_id": user.get("organization_user_id")},
            "consents": json.loads(json.dumps(event["consents"])),
            "proofs_id": event.get("proofs_id") or [],
            "delegate": event.get("delegate"),
        }
        self._events[stored["id"]] = stored
        own = [e for e in self._events.values()
               if e["user"]["id"] == user["id"] and e["regulation"] == regulation]
        # Every event is merged into its user, a choice confirmed again included: the user is
        # updated (updated_at, version) even when its consents stay the same.
        user["consents"] = consents_from_events(self._seeded_consents[user["id"]], own)
        user["updated_at"] = now
        user["version"] = int(user.get("version") or 0) + 1
        user_metadata = event["user"].get("metadata")
        if isinstance(user_metadata, dict):
            user["metadata"] = {**(user.get("metadata") or {}), **user_metadata}
        return stored

    def _user_for(self, who: dict[str, Any], regulation: str, now: str) -> dict[str, Any]:
        """The stored user an event is about (created when Didomi knows no such person)."""
        users = self._users.setdefault(regulation, [])
        match = None
        if who.get("id"):
            match = next((u for u in users if u.get("id") == who["id"]), None)
        if match is None and who.get("organization_user_id"):
            match = next((u for u in users
                          if u.get("organization_user_id") == who["organization_user_id"]), None)
        if match is None:
            match = {
                "id": who.get("id") or str(uuid.uuid4()),
                "organization_id": self.organization_id,
                "organization_user_id": who.get("organization_user_id"),
                "version": 0, "created_at": now, "updated_at": now, "metadata": {},
                "country": None, "last_seen_country": None,
                "consents": {"purposes": [], "channels": [],
                             "vendors": {k: [] for k in _VENDOR_KEYS}, "tcfcs": None},
            }
            users.append(match)
        self._seeded_consents.setdefault(
            match["id"], json.loads(json.dumps(match.get("consents") or {})))
        return match


# -- consent event rules (pure) ---------------------------------------------------------------

_VENDOR_KEYS = ("enabled", "disabled", "enabled_li", "disabled_li")
_VENDOR_OPPOSITE = {"enabled": "disabled", "disabled": "enabled",
                    "enabled_li": "disabled_li", "disabled_li": "enabled_li"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))


def event_problems(event: Any, organization_id: str) -> dict[str, str]:
    """What makes ``event`` unacceptable to ``POST /consents/events`` (empty when nothing)."""
    if not isinstance(event, dict):
        return {"event": "must be an object"}
    problems: dict[str, str] = {}
    if "id" in event and (not isinstance(event["id"], str) or not event["id"]):
        problems["id"] = "must be a non-empty string"
    if event.get("organization_id") not in (None, organization_id):
        problems["organization_id"] = "another organization"
    who = event.get("user")
    if not isinstance(who, dict) or not (who.get("id") or who.get("organization_user_id")):
        problems["user"] = "required: an object with id or organization_user_id"
    if not isinstance(event.get("consents"), dict):
        problems["consents"] = "required: an object"
    elif not isinstance(event["consents"].get("purposes", []), list):
        problems["consents.purposes"] = "must be an array"
    created_at = event.get("created_at")
    if created_at is not None:
        try:
            if not isinstance(created_at, str):
                raise ValueError
            _instant(created_at)
        except ValueError:
            problems["created_at"] = "must be an ISO 8601 date-time"
    return problems


def consents_from_events(seeded: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """A user's ``consents``: the seeded state, then each event's choices, oldest event first.

    Events are partial: what an event carries replaces that choice (a ``null`` is no choice and
    replaces nothing; a preference's ``values`` entry is its whole selection).
    """
    state = json.loads(json.dumps(seeded or {}))
    purposes: list[dict[str, Any]] = state.setdefault("purposes", [])
    channels: list[dict[str, Any]] = state.setdefault("channels", [])
    vendors: dict[str, list[str]] = state.setdefault("vendors", {})
    for key in _VENDOR_KEYS:
        vendors.setdefault(key, [])
    for event in sorted(events, key=lambda e: _instant(e["created_at"])):  # stable on ties
        consents = event.get("consents") or {}
        for item in consents.get("purposes") or []:
            if not isinstance(item, dict) or not item.get("id"):
                continue
            purpose = next((p for p in purposes if p.get("id") == item["id"]), None)
            if purpose is None:
                purpose = {"id": item["id"], "enabled": None}
                purposes.append(purpose)
            for flag in ("enabled", "enabled_li"):
                if item.get(flag) is not None:
                    purpose[flag] = item[flag]
            if isinstance(item.get("values"), dict):
                purpose["values"] = {**(purpose.get("values") or {}), **item["values"]}
            if isinstance(item.get("metadata"), dict):
                purpose["metadata"] = {**(purpose.get("metadata") or {}), **item["metadata"]}
            if isinstance(item.get("preferences"), list):
                purpose["preferences"] = item["preferences"]
        for item in consents.get("channels") or []:
            if not isinstance(item, dict) or not item.get("id") or item.get("enabled") is None:
                continue
            channel = next((c for c in channels if c.get("id") == item["id"]), None)
            if channel is None:
                channels.append({"id": item["id"], "enabled": item["enabled"]})
            else:
                channel["enabled"] = item["enabled"]
        for key, ids in (consents.get("vendors") or {}).items():
            if key not in _VENDOR_OPPOSITE or not isinstance(ids, list):
                continue
            for vendor in ids:
                if vendor in vendors[_VENDOR_OPPOSITE[key]]:
                    vendors[_VENDOR_OPPOSITE[key]].remove(vendor)
                if vendor not in vendors[key]:
                    vendors[key].append(vendor)
        if consents.get("tcfcs"):
            state["tcfcs"] = consents["tcfcs"]
    return state


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
              result: tuple[int, dict[str, Any] | list[Any], dict[str, str]]) -> None:
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
        if path not in ("/sessions", "/consents/events"):
            self._send("POST", path, query, _error(404, "NotFound", f"No route POST {path}"))
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._send("POST", path, query, _error(400, "BadRequest", "Body is not JSON"))
            return
        if path == "/consents/events":
            result = self.emulator.handle_events_post(self.headers.get("Authorization"), query,
                                                      body)
            self._send("POST", path, query, result)
            return
        self._send("POST", path, query, self.emulator.handle_session(body))

    def do_GET(self) -> None:
        path, query = self._split()
        if path == "/consents/events":
            result = self.emulator.handle_events_get(self.headers.get("Authorization"), query)
            self._send("GET", path, query, result)
            return
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
