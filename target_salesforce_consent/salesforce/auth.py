"""OAuth 2.0 client credentials flow (reference §2.1) and instance_url validation."""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from .errors import AuthenticationError, SalesforceError

logger = logging.getLogger("target_salesforce_consent.salesforce")

TOKEN_PATH = "/services/oauth2/token"

_LOGIN_HOSTS = {"login.salesforce.com", "test.salesforce.com"}

_HINTS: dict[str, str] = {
    "invalid_client_id": (
        "client_id is not the consumer key of a connected app / external client app on this "
        "org (new apps take 2-10 minutes to become active)"
    ),
    "invalid_client": (
        "client_secret is wrong (it must be the consumer secret of the same app as client_id)"
    ),
    "unsupported_grant_type": (
        "enable the Client Credentials Flow in the OAuth settings of the connected app / "
        "external client app"
    ),
    "invalid_app_access": (
        "the integration (Run As) user is not pre-authorised for the app: add its profile or "
        "permission set to the app's policies"
    ),
    "rate_limit_exceeded": "too many token requests; wait a few minutes and run again",
}

_INVALID_GRANT_HINTS: tuple[tuple[str, str], ...] = (
    (
        "no client credentials user enabled",
        "set a Run As (execution) user for the Client Credentials Flow in the app's OAuth policies",
    ),
    (
        "request not supported on this domain",
        "instance_url must be the org's My Domain URL (https://<domain>.my.salesforce.com), "
        "not login.salesforce.com or test.salesforce.com",
    ),
    ("inactive user", "the app's Run As user is inactive: activate it or choose another user"),
    ("inactive organization", "the Salesforce org is inactive"),
)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def instance_url_problem(url: str) -> str | None:
    """Return None if ``url`` is usable as instance_url, else a message saying what to do."""
    example = "e.g. https://acme.my.salesforce.com"
    if not isinstance(url, str) or not url.strip():
        return f"instance_url is empty: set it to the org's My Domain URL, {example}"
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return f"instance_url {url!r} is not a valid URL: use the org's My Domain URL, {example}"
    if parts.scheme not in ("http", "https") or not host:
        return (
            f"instance_url {url!r} must be an absolute https URL of the org's My Domain, {example}"
        )
    if parts.username is not None or parts.password is not None:
        return f"instance_url must not contain credentials: use the plain My Domain URL, {example}"
    if parts.scheme == "http" and not _is_loopback(host):
        return (
            f"instance_url {url!r} must use https (http is only allowed for loopback hosts "
            f"such as the local sandbox), {example}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return (
            f"instance_url {url!r} must have no path, query or fragment: use only the scheme "
            f"and host, {example}"
        )
    if host.lower() in _LOGIN_HOSTS:
        return (
            f"instance_url must be the org's My Domain URL, {example}, not {host}: the client "
            "credentials flow is refused on the generic login hosts"
        )
    return None


def normalise_instance_url(url: str) -> str:
    """Strip whitespace and the trailing slash."""
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class Token:
    """An access token and the instance_url data calls must use."""

    access_token: str = field(repr=False)
    instance_url: str
    issued_at: str
    #: The user the token acts as (the app's Run As user), from the identity URL in the token
    #: response's ``id``; None when the response carries none.
    user_id: str | None = None


_ID_SEGMENT = re.compile(r"^[A-Za-z0-9]{15,18}$")


def identity_user_id(identity_url: Any) -> str | None:
    """The user id of an identity URL ``https://login.salesforce.com/id/{orgId}/{userId}``.

    None when the value is not such a URL (no ``/id/`` followed by two Salesforce ids).
    """
    if not isinstance(identity_url, str):
        return None
    parts = urlsplit(identity_url.strip()).path.rstrip("/").split("/")
    if len(parts) < 3 or parts[-3] != "id":
        return None
    org_id, user_id = parts[-2], parts[-1]
    if not (_ID_SEGMENT.match(org_id) and _ID_SEGMENT.match(user_id)):
        return None
    return user_id


def _auth_error(status: int, body: dict[str, Any]) -> AuthenticationError:
    code = str(body.get("error") or f"HTTP_{status}")
    description = str(body.get("error_description") or "token request refused")
    hint = _HINTS.get(code)
    if hint is None and code == "invalid_grant":
        lowered = description.lower()
        for needle, candidate in _INVALID_GRANT_HINTS:
            if needle in lowered:
                hint = candidate
                break
    if hint is None:
        hint = (
            "check client_id, client_secret, that the Client Credentials Flow is enabled with a "
            "Run As user, and that instance_url is the org's My Domain URL"
        )
    return AuthenticationError(code, description, hint, status=status)


_UNAVAILABLE_PAGE = re.compile(
    r"maintenance|unavailable|temporarily|try again later|outage", re.IGNORECASE
)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _html_title(response: requests.Response) -> str | None:
    """The title of an HTML answer ("" when it has none); None when the answer is not HTML."""
    text = response.text or ""
    if "html" not in response.headers.get("Content-Type", "").lower() and not (
        text.lstrip().startswith("<")
    ):
        return None
    match = _TITLE.search(text)
    return " ".join(match.group(1).split())[:200] if match else ""


def _unavailable_error(url: str, response: requests.Response) -> SalesforceError | None:
    """A transient error when the answer says Salesforce is down: any 5xx, or an HTML page
    about maintenance or unavailability (whatever its status, e.g. after a redirect)."""
    status = response.status_code
    title = _html_title(response)
    looks_down = title is not None and _UNAVAILABLE_PAGE.search(response.text or "") is not None
    if status < 500 and not looks_down:
        return None
    page = ""
    if title is not None:
        page = f" with an HTML page ({title})" if title else " with an HTML page"
    return SalesforceError(
        f"HTTP_{status}",
        f"the token endpoint {url} answered HTTP {status}{page}; Salesforce may be "
        "unavailable (maintenance or an incident), try again later",
        status=status,
        transient=True,
    )


def _scrub(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def fetch_token(
    session: requests.Session,
    instance_url: str,
    client_id: str,
    client_secret: str,
    *,
    timeout: float,
) -> Token:
    """POST the client credentials grant to ``{instance_url}/services/oauth2/token``.

    Raises AuthenticationError for OAuth errors, SalesforceError ``CONNECTION_ERROR`` (transient)
    for network errors and a transient SalesforceError for 5xx responses.
    """
    base = normalise_instance_url(instance_url)
    url = base + TOKEN_PATH
    try:
        response = session.post(
            url,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            },
            headers={"Accept": "application/json"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        detail = _scrub(str(exc), client_id, client_secret)
        raise SalesforceError(
            "CONNECTION_ERROR",
            f"could not reach the token endpoint {url} ({type(exc).__name__}: {detail}); check "
            "instance_url, DNS, network/proxy access and TLS certificates",
            transient=True,
        ) from None

    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None

    if status == 200 and isinstance(body, dict) and body.get("access_token"):
        returned_url = str(body.get("instance_url") or base)
        return Token(
            access_token=str(body["access_token"]),
            instance_url=normalise_instance_url(returned_url),
            issued_at=str(body.get("issued_at") or ""),
            user_id=identity_user_id(body.get("id")),
        )
    if isinstance(body, dict) and "error" in body and status < 500:
        raise _auth_error(status, body)
    unavailable = _unavailable_error(url, response)
    if unavailable is not None:
        raise unavailable
    raise AuthenticationError(
        f"HTTP_{status}",
        f"unexpected answer from the token endpoint {url} (HTTP {status}, "
        f"{response.headers.get('Content-Type', 'no content type')})",
        "instance_url must be the org's My Domain URL, e.g. https://acme.my.salesforce.com",
        status=status,
    )
