"""Didomi Consents API plumbing: the session token and error descriptions.

``POST {api_url}/sessions {"type": "api-key", "key", "secret"}`` returns ``access_token``, a JWT
valid one hour, with no refresh token: Didomi asks clients to reuse it, so one token serves a
whole run and a new one is minted only when a call answers 401 (once per call) or when it is
nearly an hour old. Errors come as ``{"code", "name", "message", "errors"}``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import time

import requests
from singer_sdk.authenticators import APIAuthenticatorBase
from singer_sdk.pagination import BaseAPIPaginator

# Mint a new token before Didomi's one hour is up, so that a long run does not pay a 401.
TOKEN_REUSE_SECONDS = 50 * 60
SESSION_TRIES = 4
# Didomi's window is 15 s; a longer Retry-After is honoured up to this bound.
MAX_RETRY_AFTER_SECONDS = 120.0

logger = logging.getLogger("tap-didomi")


class DidomiAPIError(Exception):
    """The Consents API refused a call or answered something the tap cannot use."""


def describe_error(response: requests.Response) -> str:
    """``"<status> <name>: <message>"`` from Didomi's error body, or the raw status line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("message" in body or "name" in body):
        text = f"{response.status_code} {body.get('name') or response.reason}"
        if body.get("message"):
            text += f": {body['message']}"
        if body.get("errors"):
            text += f" (errors: {json.dumps(body['errors'], sort_keys=True)[:500]})"
        return text
    snippet = response.text.strip()[:200]
    return f"{response.status_code} {response.reason}" + (f": {snippet}" if snippet else "")


def http_date(value: str) -> dt.datetime | None:
    """An HTTP date (``Retry-After``, ``Date``) as an aware datetime; None if it is none."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


def retry_after_seconds(response: requests.Response | None, default: float) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), bounded."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        when = http_date(value)
        if when is None:
            return default
        seconds = (when - dt.datetime.now(dt.timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class CursorPaginator(BaseAPIPaginator[str | None]):
    """Didomi's ``{"data": [...], "cursor": <next or null>}`` paging: the listing ends only when
    ``cursor`` is null. A page may be empty and still have a next one (the SDK's
    JSONPathPaginator stops at the first empty page, which would lose every later user)."""

    def __init__(self) -> None:
        super().__init__(None)

    @staticmethod
    def _cursor(response: requests.Response) -> str | None:
        try:
            body = response.json()
        except ValueError:
            return None
        cursor = body.get("cursor") if isinstance(body, dict) else None
        return cursor if isinstance(cursor, str) and cursor else None

    def get_next(self, response: requests.Response) -> str | None:
        return self._cursor(response)

    def has_more(self, response: requests.Response) -> bool:
        return self._cursor(response) is not None

    def continue_if_empty(self, response: requests.Response) -> bool:
        return self.has_more(response)


class DidomiSession(APIAuthenticatorBase):
    """Adds ``Authorization: Bearer <access_token>`` to every Consents API call."""

    def __init__(
        self,
        *,
        api_url: str,
        api_key: str,
        api_secret: str,
        http: requests.Session,
        timeout: float,
    ) -> None:
        super().__init__()
        self._url = f"{api_url.rstrip('/')}/sessions"
        self._credentials = {"type": "api-key", "key": api_key, "secret": api_secret}
        self._http = http
        self._timeout = timeout
        self._token: str | None = None
        self._minted_at = 0.0
        self.tokens_minted = 0

    def authenticate_request(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._current_token()}"
        return request

    def invalidate(self) -> None:
        """Forget the token: the next call mints a new one."""
        self._token = None

    def _current_token(self) -> str:
        if self._token is None or time.monotonic() - self._minted_at > TOKEN_REUSE_SECONDS:
            self._token = self._mint()
            self._minted_at = time.monotonic()
        return self._token

    def _mint(self) -> str:
        for attempt in range(1, SESSION_TRIES + 1):
            try:
                response = self._http.post(self._url, json=self._credentials,
                                           timeout=self._timeout)
            except requests.RequestException as exc:
                if attempt == SESSION_TRIES:
                    raise DidomiAPIError(
                        f"cannot reach POST {self._url} ({type(exc).__name__}); check api_url "
                        "and the network"
                    ) from None  # the exception's request holds the credentials: not chained
                time.sleep(2**attempt)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if attempt == SESSION_TRIES:
                    break
                wait = retry_after_seconds(response, default=2.0**attempt)
                logger.warning("POST %s answered %s; retrying in %.0f s", self._url,
                               response.status_code, wait)
                time.sleep(wait)
                continue
            if response.status_code in (400, 401, 403):
                raise DidomiAPIError(
                    f"Didomi refused the API key at POST {self._url}: "
                    f"{describe_error(response)}. Check api_key and api_secret (a private API "
                    "key created in the Didomi Console)"
                )
            if not response.ok:
                raise DidomiAPIError(f"POST {self._url} failed: {describe_error(response)}")
            try:
                token = response.json().get("access_token")
            except (ValueError, AttributeError):
                token = None
            if not isinstance(token, str) or not token:
                raise DidomiAPIError(
                    f"POST {self._url} answered {response.status_code} without an access_token; "
                    "check that api_url is Didomi's API base URL (https://api.didomi.io/v1)"
                )
            self.tokens_minted += 1
            return token
        raise DidomiAPIError(
            f"POST {self._url} kept failing ({describe_error(response)}) after "
            f"{SESSION_TRIES} tries; try again later"
        )
