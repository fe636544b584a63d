"""The receiver's HTTP layer: a Starlette app serving the token and the webhook endpoints.

A webhook is answered 2xx only after the spool has stored it durably. Concurrent webhooks are
stored together (one SQLite transaction, or one bucket object per window), which is what lets
one receiver take hundreds of webhooks per second with an fsync behind each answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tap_didomi.receiver.auth import TokenIssuer, TokenVerifier, credentials_from_request
from tap_didomi.receiver.payload import (
    MAX_BODY_BYTES,
    BadWebhook,
    has_organization_user_id,
    parse_webhook,
)
from tap_didomi.receiver.spool import (
    BucketSpool,
    Incoming,
    SqliteSpool,
    Stored,
    dedupe_key,
    utc_now_iso,
)

logger = logging.getLogger("didomi-webhook-receiver")

WEBHOOK_PATH = "/webhooks/didomi"
TOKEN_PATH = "/oauth/token"
# Webhooks arriving within this window go into one bucket object (one PUT answers them all).
BUCKET_WINDOW_SECONDS = 0.2
# How often the counters are logged (when they changed).
SUMMARY_INTERVAL_SECONDS = 60.0


@dataclass
class Counters:
    stored: int = 0
    duplicates: int = 0
    guests_dropped: int = 0
    unauthorized: int = 0
    rejected: int = 0
    store_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def summary(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in self.as_dict().items())


async def log_counters(counters: Counters, interval: float) -> None:
    """Log the counters every ``interval`` seconds when they changed (guests dropped too)."""
    last = counters.as_dict()
    while True:
        await asyncio.sleep(interval)
        now = counters.as_dict()
        if now != last:
            logger.info("since start: %s", counters.summary())
            last = now


@dataclass
class ReceiverConfig:
    spool: SqliteSpool | BucketSpool
    verifier: TokenVerifier
    issuer: TokenIssuer | None  # None: tokens come from the customer's authorization server
    keep_guests: bool = False
    counters: Counters = field(default_factory=Counters)


class GroupWriter:
    """Stores webhooks in groups: whatever is waiting (SQLite), or a window's worth (bucket)."""

    def __init__(self, spool: SqliteSpool | BucketSpool, window: float) -> None:
        self._spool = spool
        self._window = window
        self._queue: asyncio.Queue[tuple[Incoming, asyncio.Future[Stored]] | None] = (
            asyncio.Queue())
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await self._queue.put(None)
        if self._task is not None:
            await self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def store(self, item: Incoming) -> Stored:
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            group = [first]
            if self._window > 0:
                deadline = loop.time() + self._window
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    group.append(nxt)
            while not stopping and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
            try:
                results = await asyncio.to_thread(self._spool.store, [i for i, _ in group])
            except Exception as exc:
                logger.error("storing %d webhook(s) failed (%s: %s); they were answered 503 "
                             "and Didomi sends them again", len(group), type(exc).__name__, exc)
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def create_app(config: ReceiverConfig) -> Starlette:
    """The receiver's ASGI app."""
    writer = GroupWriter(config.spool,
                         BUCKET_WINDOW_SECONDS if isinstance(config.spool, BucketSpool) else 0.0)
    counters = config.counters

    async def token(request: Request) -> Response:
        if config.issuer is None:
            return _error(404, "not_found", "this receiver accepts tokens from the "
                          "authorization server given by --jwks-url; it issues none")
        body = await _read_limited(request, 64 * 1024)
        if body is None:
            return _error(413, "invalid_request", "the token request is too large")
        grant_type, credentials = credentials_from_request(
            request.headers.get("authorization"), body)
        if credentials is None or not config.issuer.client_is_valid(credentials):
            counters.unauthorized += 1
            return JSONResponse({"error": "invalid_client"}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="didomi-webhooks"'})
        if grant_type != "client_credentials":
            return _error(400, "unsupported_grant_type",
                          "only grant_type=client_credentials is supported")
        return JSONResponse(config.issuer.issue(),
                            headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def webhook(request: Request) -> Response:
        if not config.verifier.is_valid(request.headers.get("authorization")):
            counters.unauthorized += 1
            return JSONResponse(
                {"error": "invalid_token",
                 "error_description": "a valid, unexpired Bearer token is required"},
                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="didomi-webhooks"'})
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            counters.rejected += 1
            return _error(413, "payload_too_large", "a webhook body is at most 1 MiB")
        body = await _read_limited(request, MAX_BODY_BYTES)
        if body is None:
            counters.rejected += 1
            return _error(413, "payload_too_large", "a webhook body is at most 1 MiB")
        try:
            parsed = parse_webhook(body)
        except BadWebhook as exc:
            counters.rejected += 1
            return _error(400, "invalid_webhook", str(exc))
        if not config.keep_guests and not has_organization_user_id(parsed):
            counters.guests_dropped += 1
            return JSONResponse({"status": "ignored",
                                 "reason": "no organization_user_id (a guest)"}, status_code=200)
        item = Incoming(dedupe_key(parsed), utc_now_iso(), body.decode("utf-8"))
        try:
            result = await writer.store(item)
        except Exception:
            counters.store_failures += 1
            return _error(503, "temporarily_unavailable",
                          "the webhook could not be stored; send it again")
        if result.duplicate:
            counters.duplicates += 1
            return JSONResponse({"status": "duplicate"}, status_code=200)
        counters.stored += 1
        return JSONResponse({"status": "stored", "id": result.spool_id}, status_code=200)

    async def healthz(request: Request) -> Response:
        del request
        ok = writer.running and await asyncio.to_thread(config.spool.healthy)
        body: dict[str, Any] = {"status": "ok" if ok else "unavailable",
                                "spool": config.spool.kind, **counters.as_dict()}
        return JSONResponse(body, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        writer.start()
        summaries = asyncio.get_running_loop().create_task(
            log_counters(counters, SUMMARY_INTERVAL_SECONDS))
        logger.info("storing webhooks in %s (%s spool)", config.spool.location,
                    config.spool.kind)
        try:
            yield
        finally:
            summaries.cancel()
            # The server has finished its in-flight requests: nothing waits on the writer.
            await writer.stop()
            config.spool.close()
            logger.info("stopped: %s", counters.summary())

    return Starlette(
        routes=[
            Route(TOKEN_PATH, token, methods=["POST"]),
            Route(WEBHOOK_PATH, webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
