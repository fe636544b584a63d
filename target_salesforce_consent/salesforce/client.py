"""Salesforce REST client: token handling, retries, error mapping (reference §1, §2, §8)."""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

import msgspec
import requests
from requests.cookies import RequestsCookieJar, extract_cookies_to_jar, merge_cookies
from requests.sessions import preferred_clock
from requests.structures import CaseInsensitiveDict

from .auth import Token, fetch_token, instance_url_problem, normalise_instance_url
from .errors import ApiLimitExceededError, SalesforceError
from .soql import form_encode

logger = logging.getLogger("target_salesforce_consent.salesforce")

CLIENT_NAME = "target-salesforce-consent"
RETRY_STATUSES = frozenset({500, 502, 503, 504})
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
_API_VERSION = re.compile(r"^v?(\d{2,3}\.\d)$")


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("target-salesforce-consent")
    except Exception:
        return "0"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for transient failures."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): base * 2**(attempt-1), jittered."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(attempt - 1, 0)))
        if ceiling <= 0:
            return 0.0
        return random.uniform(ceiling / 2, ceiling)


def parse_error_body(response: requests.Response) -> tuple[str, str]:
    """(code, message) from a Salesforce error response of any shape.

    REST/Bulk errors are ``[{"message", "errorCode"}]``; OAuth errors ``{"error",
    "error_description"}``; Edge/gateway errors are HTML pages.
    """
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        body = [body]
    if isinstance(body, list) and body and all(isinstance(item, dict) for item in body):
        codes: list[str] = []
        messages: list[str] = []
        for item in body:
            code = item.get("errorCode") or item.get("error") or item.get("statusCode")
            message = item.get("message") or item.get("error_description")
            if code and str(code) not in codes:
                codes.append(str(code))
            if message:
                messages.append(str(message))
        if codes or messages:
            return (codes[0] if codes else f"HTTP_{status}", "; ".join(messages) or "(no message)")
    text = response.text or ""
    content_type = response.headers.get("Content-Type", "")
    if "html" in content_type.lower() or text.lstrip().lower().startswith("<"):
        match = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        title = " ".join(match.group(1).split()) if match else ""
        detail = f" ({title[:200]})" if title else ""
        return f"HTTP_{status}", f"HTTP {status} {response.reason or ''} with an HTML page{detail}"
    snippet = " ".join(text.split())[:300]
    return f"HTTP_{status}", f"HTTP {status} {response.reason or ''}: {snippet or '(empty body)'}"


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class SalesforceClient:
    """Authenticated access to one org's REST and Bulk API 2.0 endpoints."""

    def __init__(
        self,
        instance_url: str,
        client_id: str,
        client_secret: str,
        *,
        api_version: str = "62.0",
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        timeout: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        client_name: str = CLIENT_NAME,
    ) -> None:
        problem = instance_url_problem(instance_url)
        if problem:
            raise ValueError(problem)
        match = _API_VERSION.match(str(api_version).strip())
        if not match:
            raise ValueError(f"api_version {api_version!r} must look like '62.0'")
        self.login_url = normalise_instance_url(instance_url)
        self.api_version = match.group(1)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.session = session or requests.Session()
        self._owns_session = session is None
        self._sleep = sleep
        self._client_id = client_id
        self._client_secret = client_secret
        self._token: Token | None = None
        self._token_lock = threading.Lock()
        # Per origin: the auth and send settings the environment gives (see _send).
        self._environments: dict[str, _Environment] = {}
        #: The latest ``Sforce-Limit-Info`` header, e.g. ``api-usage=18/15000``.
        self.api_usage: str | None = None
        self._headers = {
            "User-Agent": f"{client_name}/{_package_version()}",
            "Sforce-Call-Options": f"client={client_name}",
            "Accept": "application/json",
        }

    def __repr__(self) -> str:
        return f"SalesforceClient({self.login_url!r}, api_version={self.api_version!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> SalesforceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth ---------------------------------------------------------------------------------

    @property
    def instance_url(self) -> str:
        """The instance_url returned by the token response (authenticates if needed)."""
        return self._current_token().instance_url

    @property
    def user_id(self) -> str | None:
        """The id of the user the client acts as (the token response's ``id``), if it says."""
        return self._current_token().user_id

    @property
    def authenticated(self) -> bool:
        """Whether a token was issued (the credentials and instance_url work)."""
        return self._token is not None

    def authenticate(self) -> None:
        """Fetch a fresh token now (transient failures are retried; OAuth errors are not)."""
        self._renew_token(None)

    def _current_token(self) -> Token:
        token = self._token
        if token is None:
            return self._renew_token(None)
        return token

    def _renew_token(self, stale: Token | None) -> Token:
        with self._token_lock:
            if self._token is not None and self._token is not stale and stale is not None:
                return self._token  # someone else renewed it meanwhile
            attempt = 0
            while True:
                attempt += 1
                try:
                    token = fetch_token(
                        self.session,
                        self.login_url,
                        self._client_id,
                        self._client_secret,
                        timeout=self.timeout,
                    )
                except SalesforceError as exc:
                    if not exc.transient:
                        raise
                    if attempt >= self.retry.max_attempts:
                        if attempt > 1:
                            exc.message += f" (after {attempt} attempts)"
                        raise
                    delay = self.retry.delay(attempt)
                    logger.warning(
                        "Token request failed (%s); retry %d/%d in %.1fs",
                        exc.code,
                        attempt,
                        self.retry.max_attempts - 1,
                        delay,
                    )
                    self._sleep(delay)
                    continue
                self._token = token
                logger.info("Authenticated to Salesforce; instance_url=%s", token.instance_url)
                return token

    # -- requests -----------------------------------------------------------------------------

    def data_path(self, path: str) -> str:
        """``/services/data/v62.0/`` + path."""
        return f"/services/data/v{self.api_version}/{path.lstrip('/')}"

    def _url(self, token: Token, path: str) -> str:
        if path.startswith(("http://", "https://")):
            raise ValueError("pass a path, not a full URL")
        absolute = path if path.startswith("/services/") else self.data_path(path)
        return token.instance_url + absolute

    def _scrub(self, text: str) -> str:
        secrets = [self._client_secret, self._client_id]
        if self._token is not None:
            secrets.append(self._token.access_token)
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        expected: tuple[int, ...] = (200,),
        retry_unsafe: bool = True,
    ) -> requests.Response:
        """Send one API call with token renewal, retries and error mapping.

        ``path`` is relative to the data root (``sobjects/Lead/describe``) or absolute
        (``/services/data/v62.0/query/01g...``). With ``retry_unsafe=False`` (a Bulk PUT of job
        data), a network error or 5xx is raised at once as a transient SalesforceError because
        the server may have accepted the data; a 401 is still renewed and replayed (the request
        was refused before it was processed).
        """
        method = method.upper()
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            token = self._current_token()
            url = self._url(token, path)
            send_headers = dict(self._headers)
            if headers:
                send_headers.update(headers)
            send_headers["Authorization"] = f"Bearer {token.access_token}"
            retry_reason: str
            retry_after: float | None = None
            try:
                response = self._send(
                    method, url, token.instance_url, params, json, data, send_headers
                )
            except _NETWORK_ERRORS as exc:
                detail = self._scrub(f"{type(exc).__name__}: {exc}")
                error = SalesforceError(
                    "CONNECTION_ERROR",
                    f"{method} {path} failed: {detail}; check network access to "
                    f"{token.instance_url}",
                    transient=True,
                )
                if not retry_unsafe or attempt >= self.retry.max_attempts:
                    raise error from None
                retry_reason = error.code
            else:
                limit_info = response.headers.get("Sforce-Limit-Info")
                if limit_info:
                    self.api_usage = limit_info
                status = response.status_code
                if status in expected:
                    return response
                code, message = parse_error_body(response)
                message = self._scrub(message)
                if status == 401:
                    if not renewed:
                        renewed = True
                        logger.info("Access token rejected (%s); renewing it once", code)
                        self._renew_token(token)
                        attempt -= 1  # a renewal is not a retry
                        continue
                    raise SalesforceError(
                        code,
                        f"{message} (still refused after renewing the access token: check that "
                        "the Run As user has API access and the app's session policies)",
                        status=status,
                    )
                if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
                    if "concurrent" not in message.lower():
                        raise ApiLimitExceededError(
                            code,
                            f"{message} (the org's rolling 24-hour API request allocation is "
                            "used up; run again when usage has dropped or raise the limit)",
                            status=status,
                        )
                    retryable = True
                else:
                    retryable = status in RETRY_STATUSES
                error = SalesforceError(
                    code, f"{method} {path}: {message}", status=status, transient=retryable
                )
                if not retryable:
                    raise error
                if not retry_unsafe or attempt >= self.retry.max_attempts:
                    if attempt > 1:
                        error.message += f" (after {attempt} attempts)"
                    raise error
                retry_reason = f"HTTP {status} {code}"
                retry_after = _retry_after(response)
            delay = self.retry.delay(attempt)
            if retry_after is not None:
                delay = max(delay, min(retry_after, max(self.retry.max_delay, 60.0)))
            logger.warning(
                "%s %s failed (%s); retry %d/%d in %.1fs",
                method,
                path,
                retry_reason,
                attempt,
                self.retry.max_attempts - 1,
                delay,
            )
            self._sleep(delay)

    def _send(
        self,
        method: str,
        url: str,
        origin: str,
        params: Mapping[str, Any] | None,
        json: Any,
        data: bytes | None,
        headers: Mapping[str, str],
    ) -> requests.Response:
        """What ``session.request(...)`` sends and answers, for less CPU.

        The environment's settings for ``origin`` (proxies, CA bundle, a ~/.netrc login) are
        read once per client and host: a session that trusts the environment reads them again
        for every call otherwise (the netrc file, every proxy variable, the URL parsed twice).
        A URL the client built is sent as it is when requests would leave it unchanged (its
        check re-parses and re-quotes the whole URL, up to 16 KB for a query), straight through
        the session's adapter (proxies, TLS, connection pool), with the session's headers,
        cookies and auth, and redirects followed by requests' own code. Anything else (query
        ``params``, a session with hooks or default params, an unusual URL) goes through the
        session as it is."""
        session = self.session
        environment = self._environments.get(origin)
        if environment is None:
            environment = self._environments[origin] = _read_environment(session, origin)
        if (
            params
            or not environment.plain_origin
            or session.params
            or session.hooks.get("response")
            or not _is_plain_target(url, len(origin))
        ):
            return self._send_through_session(method, url, environment, params, json, data,
                                              headers)  # fmt: skip
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = url
        merged = CaseInsensitiveDict(session.headers)
        merged.update(headers)
        prepared.prepare_headers({k: v for k, v in merged.items() if v is not None})
        if session.cookies:  # Salesforce sets a few: sent back as a session would
            prepared.prepare_cookies(merge_cookies(RequestsCookieJar(), session.cookies))
        prepared.prepare_body(data or {}, None, json)
        auth = environment.auth if environment.auth is not None else session.auth
        if auth is not None and auth is not _unchanged:
            prepared.prepare_auth(auth)
        settings = environment.settings
        start = preferred_clock()
        try:
            response = session.get_adapter(url).send(prepared, timeout=self.timeout, **settings)
            response.elapsed = timedelta(seconds=preferred_clock() - start)
            if "Set-Cookie" in response.headers or "Set-Cookie2" in response.headers:
                extract_cookies_to_jar(session.cookies, prepared, response.raw)
            if response.is_redirect:
                response = _follow_redirects(session, response, prepared, self.timeout, settings)
            if not settings["stream"]:
                response.content  # noqa: B018  # read now, as a session does
            return response
        finally:
            if len(url) > _LONG_URL:
                _forget_split_urls()

    def _send_through_session(
        self,
        method: str,
        url: str,
        environment: _Environment,
        params: Mapping[str, Any] | None,
        json: Any,
        data: bytes | None,
        headers: Mapping[str, str],
    ) -> requests.Response:
        session = self.session
        request = requests.Request(
            method, url, headers=headers, data=data or {}, json=json,
            params=params or {}, auth=environment.auth,
        )  # fmt: skip
        prepared = session.prepare_request(request)
        try:
            return session.send(
                prepared, timeout=self.timeout, allow_redirects=True, **environment.settings
            )
        finally:
            if len(prepared.url or "") > _LONG_URL:
                _forget_split_urls()

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._json(self.request("GET", path, params=params), path)

    @staticmethod
    def _json(response: requests.Response, path: str) -> Any:
        try:
            return msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            raise SalesforceError(
                "INVALID_RESPONSE",
                f"GET {path} returned a non-JSON body",
                status=response.status_code,
            ) from None

    def query_all(self, soql: str) -> Iterator[dict[str, Any]]:
        """Run a REST SOQL query and yield every record (without ``attributes``).

        For SELECTs of plain fields, as the target's: a relationship field's nested record
        would keep its own ``attributes``.
        """
        for records, _ in self.query_pages(soql):
            yield from records

    def query_records(self, soql: str, record_type: type[_R]) -> list[_R]:
        """Every record of a REST SOQL query, decoded straight into ``record_type`` (see
        :func:`query_record_type`): only the selected fields, without ``attributes``.

        An answer of another shape is read as :meth:`query_all` reads it (the same records,
        the same errors), then converted."""
        records: list[_R] = []
        path = "query?q=" + form_encode(soql)
        decode = _page_decoder(record_type)
        while True:
            response = self.request("GET", path)
            try:
                page = decode(response.content)
            except msgspec.DecodeError:  # not this shape: as query_all reads it, from here on
                rest = self._pages_from(self._json(response, path))
                records += (msgspec.convert(r, record_type) for rs, _ in rest for r in rs)
                return records
            records += page.records
            if page.done or not page.nextRecordsUrl:
                return records
            path = page.nextRecordsUrl

    def query_pages(self, soql: str) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """The pages of a REST SOQL query, each with the query's ``totalSize``: one call per
        page, the next one only when asked for (a caller may stop after the first)."""
        yield from self._pages_from(self.get_json("query?q=" + form_encode(soql)))

    def _pages_from(self, page: Any) -> Iterator[tuple[list[dict[str, Any]], int]]:
        while True:
            if not isinstance(page, dict):
                raise SalesforceError("INVALID_RESPONSE", "query returned an unexpected body")
            records = [r for r in page.get("records") or [] if isinstance(r, dict)]
            for record in records:
                record.pop("attributes", None)  # fresh from the parser: edit in place
            total = page.get("totalSize")
            yield records, total if isinstance(total, int) else len(records)
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not next_url:
                return
            page = self.get_json(str(next_url))


#: requests splits every URL it sends (the adapter, the proxy choice) and Python keeps the last
#: 128 URLs split, with their parts: a query's URL carries its SOQL, up to 16 KB, so those
#: would hold megabytes for the whole run. A URL longer than this is not left there (splitting
#: a short URL again costs microseconds).
_LONG_URL = 2048
# functools.lru_cache's method on Python 3.11 and later (older ones keep a few dozen URLs).
_forget_split_urls: Callable[[], None] = getattr(
    urllib.parse.urlsplit, "cache_clear", lambda: None
)


def _unchanged(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


@dataclass(frozen=True)
class _Environment:
    """What a session would read from the environment for one origin, read once."""

    #: The ~/.netrc login; ``_unchanged`` when there is none to look for; None: the session's.
    auth: Any
    #: ``proxies``, ``stream``, ``verify`` and ``cert``, as the session merges them.
    settings: dict[str, Any]
    #: Whether requests sends this origin's URLs as they are (see _is_plain_target).
    plain_origin: bool


def _read_environment(session: requests.Session, origin: str) -> _Environment:
    auth: Any = None
    if session.trust_env and not session.auth:
        # The netrc login when there is one (as requests would use); otherwise an auth that
        # changes nothing, so that requests does not look for one on every call.
        auth = requests.utils.get_netrc_auth(origin) or _unchanged
    settings = dict(session.merge_environment_settings(origin, {}, None, None, None))
    probe = requests.PreparedRequest()
    try:
        probe.prepare_url(origin + "/", None)
    except requests.RequestException:
        return _Environment(auth, settings, plain_origin=False)
    # A login in the URL would be requests' auth for the call: left to the session.
    return _Environment(auth, settings, probe.url == origin + "/" and "@" not in origin)


# A path and query requests sends as they are: RFC 3986's unreserved characters, its
# sub-delimiters, ":", "@", "/" (and "?" in the query), and in the query percent-escapes as
# form encoding writes them (upper-case hex, never of an unreserved character, which requests
# would decode). Every one of them is left alone by urllib3's URL check and requests'
# re-quoting; no fragment, no empty query (requests drops the "?").
_PLAIN_TARGET = re.compile(
    r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*(?:\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]+)?"
)
_CHANGED_ESCAPE = re.compile(
    r"%(?![0-9A-F]{2})|%(?:2[DE]|3[0-9]|4[1-9A-F]|5[0-9AF]|6[1-9A-F]|7[0-9AE])"
)


def _is_plain_target(url: str, start: int) -> bool:
    """Whether requests would send ``url`` as it is, its origin (up to ``start``) aside."""
    if not _PLAIN_TARGET.fullmatch(url, start):
        return False
    if "%" in url and _CHANGED_ESCAPE.search(url, start):
        return False
    end = url.find("?", start)
    path = url[start:] if end < 0 else url[start:end]
    # urllib3 removes "." and ".." segments.
    return "/." not in path or not any(part in (".", "..") for part in path.split("/"))


def _follow_redirects(
    session: requests.Session,
    response: requests.Response,
    prepared: requests.PreparedRequest,
    timeout: float,
    settings: dict[str, Any],
) -> requests.Response:
    """The answer at the end of ``response``'s redirects, followed as a session follows them
    (by its own code: the Authorization header dropped on a change of host, a netrc login
    for the new one, a 303 sent again as a GET, at most ``session.max_redirects``)."""
    # The cookies a session prepares a request with, which redirects start from.
    jar = merge_cookies(RequestsCookieJar(), session.cookies)
    prepared._cookies = jar  # type: ignore[attr-defined]
    history = [response]
    history += session.resolve_redirects(response, prepared, timeout=timeout, **settings)
    final = history.pop()
    if history:
        final.history = history
    return final


class QueryRecord(msgspec.Struct, dict=False, weakref=False, gc=False):
    """A queried record as a compact struct of its selected fields (made by
    :func:`query_record_type`), read like the dict a query answer holds: ``record["Id"]``,
    ``record.get(name)``; a field not selected reads as absent. ``gc=False``: it holds
    JSON scalars, never a reference cycle."""

    _names: ClassVar[frozenset[str]] = frozenset()

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self._names else default

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        return getattr(self, name)

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self._names:
            raise KeyError(name)
        setattr(self, name, value)


_R = TypeVar("_R", bound=QueryRecord)


def query_record_type(sobject: str, fields: Iterable[str]) -> type[QueryRecord]:
    """A :class:`QueryRecord` type for answers of ``SELECT fields FROM sobject`` (plain
    fields, as Salesforce spells them): a selected field the answer lacks reads as None."""
    names = tuple(dict.fromkeys(fields))
    return msgspec.defstruct(  # type: ignore[return-value]  # a subclass, by its bases
        f"{sobject}Record", [(name, Any, None) for name in names], bases=(QueryRecord,),
        namespace={"_names": frozenset(names)}, gc=False,
    )  # fmt: skip


_PAGE_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}


def _page_decoder(record_type: type[_R]) -> Callable[[bytes], Any]:
    decoder = _PAGE_DECODERS.get(record_type)
    if decoder is None:
        page = msgspec.defstruct(
            "QueryPage",
            [("records", list[record_type]), ("done", bool, True),  # type: ignore[valid-type]
             ("nextRecordsUrl", str | None, None)],
        )  # fmt: skip
        decoder = _PAGE_DECODERS[record_type] = msgspec.json.Decoder(page)
    return decoder.decode
