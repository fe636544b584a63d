"""The Consents API calls target-didomi makes: a person's users and events, and new events.

The session token (``POST /sessions``) and Didomi's error descriptions are tap-didomi's
(:mod:`tap_didomi.client`). A call answered 401 mints a new token once; 429, 5xx and network
errors are tried again (``Retry-After`` honoured), then reported as :class:`UnavailableError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests
from tap_didomi.client import DidomiAPIError, DidomiSession, describe_error, retry_after_seconds

logger = logging.getLogger("target-didomi")

#: Didomi takes up to 100 events per ``POST /consents/events``.
MAX_EVENTS_PER_REQUEST = 100
EVENTS_PAGE = 100


class UnavailableError(DidomiAPIError):
    """Didomi kept failing (429, 5xx, network) after the retries: try the run again later."""


class RefusedError(DidomiAPIError):
    """Didomi refused a call for good (a 4xx other than 401 and 429)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 5
    base_delay: float = 1.0


class ConsentsAPI:
    """A Didomi organization's Consents API, with one token reused for the whole run."""

    def __init__(self, *, api_url: str, api_key: str, api_secret: str, organization_id: str,
                 timeout: float = 60.0, retry: RetryPolicy | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.organization_id = organization_id
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.http = requests.Session()
        self.auth = DidomiSession(api_url=self.api_url, api_key=api_key, api_secret=api_secret,
                                  http=self.http, timeout=timeout)
        self.calls = 0

    def check(self) -> None:
        """Mint the run's token now: wrong credentials fail before any record is read."""
        self.auth.invalidate()
        self.auth.authenticate_request(requests.Request("GET", self.api_url).prepare())

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              body: Any = None) -> Any:
        url = f"{self.api_url}{path}"
        reminted = False
        attempt = 0
        while True:
            attempt += 1
            request = requests.Request(method, url, params=params, json=body)
            prepared = self.auth.authenticate_request(self.http.prepare_request(request))
            self.calls += 1
            try:
                response = self.http.send(prepared, timeout=self.timeout)
            except requests.RequestException as exc:
                if attempt >= self.retry.tries:
                    raise UnavailableError(
                        f"{method} {url} failed ({type(exc).__name__}) {attempt} times; check "
                        "api_url and the network, then run again"
                    ) from None  # the request holds the token: not chained
                time.sleep(self.retry.base_delay * 2 ** (attempt - 1))
                continue
            if response.status_code == 401 and not reminted:
                reminted = True  # the token expired or was revoked: one new token per call
                self.auth.invalidate()
                attempt -= 1
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if attempt >= self.retry.tries:
                    raise UnavailableError(
                        f"{method} {url} kept failing ({describe_error(response)}) after "
                        f"{attempt} tries; run again later"
                    )
                wait = retry_after_seconds(response,
                                           default=self.retry.base_delay * 2 ** (attempt - 1))
                logger.warning("%s %s answered %s; retrying in %.0f s", method, path,
                               response.status_code, wait)
                time.sleep(wait)
                continue
            if not response.ok:
                raise RefusedError(f"{method} {path}: {describe_error(response)}",
                                   response.status_code)
            try:
                return response.json()
            except ValueError:
                raise DidomiAPIError(
                    f"{method} {url} answered {response.status_code} with no JSON; check that "
                    "api_url is Didomi's API base URL (https://api.didomi.io/v1)"
                ) from None

    def users(self, organization_user_id: str) -> list[dict[str, Any]]:
        """The users holding this ``organization_user_id`` (several in legacy organizations)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"organization_id": self.organization_id,
                                  "organization_user_id": organization_user_id}
        while True:
            page = self._call("GET", "/consents/users", params=params)
            found += _data(page, "/consents/users")
            cursor = page.get("cursor") if isinstance(page, dict) else None
            if not cursor:
                return found
            params = {**params, "$cursor": cursor}

    def events(self, organization_user_id: str) -> list[dict[str, Any]]:
        """Every event of this ``organization_user_id``, page by page."""
        found: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", "/consents/events", params={
                "organization_id": self.organization_id,
                "organization_user_id": organization_user_id,
                "$limit": EVENTS_PAGE, "$skip": len(found),
            })
            data = _data(page, "/consents/events")
            found += data
            total = page.get("total") if isinstance(page, dict) else None
            if not data or not isinstance(total, int) or len(found) >= total:
                return found

    def post_events(self, events: Sequence[dict[str, Any]]) -> None:
        """``POST /consents/events`` with up to 100 events (their ids make a resend harmless)."""
        if not 0 < len(events) <= MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"1 to {MAX_EVENTS_PER_REQUEST} events per request")
        self._call("POST", "/consents/events", params={"organization_id": self.organization_id},
                   body=list(events))

    def close(self) -> None:
        self.http.close()


def _data(page: Any, path: str) -> list[dict[str, Any]]:
    data = page.get("data") if isinstance(page, dict) else None
    if not isinstance(data, list):
        raise DidomiAPIError(f"GET {path} answered without a data list; check api_url")
    return [item for item in data if isinstance(item, dict)]
