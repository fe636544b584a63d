"""SalesforceClient and describe against the sandbox over real HTTP."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from salesforce_sandbox import Sandbox

from target_salesforce_consent.salesforce import (
    ApiLimitExceededError,
    AuthenticationError,
    RetryPolicy,
    SalesforceClient,
    SalesforceError,
    describe_object,
)
from target_salesforce_consent.salesforce.client import query_record_type

from .conftest import CLIENT_ID, CLIENT_SECRET, seed

SESSION_EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
UNAVAILABLE = [{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}]
BAD_GATEWAY_HTML = "<html><head><title>502 Bad Gateway</title></head><body>Edge</body></html>"


def token_calls(sb: Any) -> list[Any]:
    return [r for r in sb.requests if r.path.rstrip("/") == "/services/oauth2/token"]


def calls_to(sb: Any, fragment: str, method: str | None = None) -> list[Any]:
    return [
        r
        for r in sb.requests
        if fragment in r.path and (method is None or r.method.upper() == method)
    ]


def current_token(client: SalesforceClient) -> str:
    # The sandbox redacts Authorization in its log, so read the client's cached token.
    token = client._token
    assert token is not None
    return token.access_token


# -- OAuth -----------------------------------------------------------------------------------


def test_token_success_uses_returned_instance_url_and_identifies_client(
    sandbox: Any, client: SalesforceClient
) -> None:
    client.authenticate()
    assert client.instance_url == sandbox.url.rstrip("/")
    [call] = token_calls(sandbox)
    assert call.method == "POST"
    body = call.body.decode() if isinstance(call.body, bytes) else str(call.body)
    assert "grant_type=client_credentials" in body
    client.get_json("limits")
    data_call = calls_to(sandbox, "/limits")[-1]
    headers = {k.lower(): v for k, v in dict(data_call.headers).items()}
    assert headers["sforce-call-options"] == "client=target-salesforce-consent"
    assert headers["authorization"].startswith("Bearer ")
    assert client.api_usage is not None and client.api_usage.startswith("api-usage=")


def test_unknown_client_id(sandbox: Any) -> None:
    c = SalesforceClient(sandbox.url, "3MVG9unknown", sandbox.client_secret)
    with pytest.raises(AuthenticationError) as info:
        c.authenticate()
    assert info.value.code == "invalid_client_id"
    assert info.value.message == "client identifier invalid"
    assert "consumer key" in info.value.hint and "2-10 minutes" in info.value.hint
    assert str(info.value).startswith("invalid_client_id: client identifier invalid (")
    assert info.value.hint in str(info.value)


def test_wrong_client_secret_never_appears_in_error(sandbox: Any) -> None:
    wrong = "WRONG-SECRET-VALUE-123"
    c = SalesforceClient(sandbox.url, sandbox.client_id, wrong)
    with pytest.raises(AuthenticationError) as info:
        c.authenticate()
    assert info.value.code == "invalid_client"
    assert info.value.message == "invalid client credentials"
    assert "client_secret is wrong" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(info.value)


@pytest.mark.parametrize(
    ("error", "description", "hint_needle"),
    [
        ("unsupported_grant_type", "grant type not supported", "Client Credentials Flow"),
        ("invalid_grant", "no client credentials user enabled", "Run As"),
        ("invalid_grant", "request not supported on this domain", "My Domain"),
        ("invalid_grant", "inactive user", "inactive"),
    ],
)
def test_oauth_error_hints(
    sandbox: Any, client: SalesforceClient, error: str, description: str, hint_needle: str
) -> None:
    sandbox.fail_next(
        400,
        json.dumps({"error": error, "error_description": description}),
        path=r"/services/oauth2/token",
        content_type="application/json;charset=UTF-8",
    )
    with pytest.raises(AuthenticationError) as info:
        client.authenticate()
    assert info.value.code == error
    assert info.value.message == description
    assert hint_needle in info.value.hint
    assert len(token_calls(sandbox)) == 1  # OAuth errors are not retried


MAINTENANCE_PAGE = (
    "<html><head><title>Salesforce is down for maintenance</title></head>"
    "<body>We are performing scheduled maintenance.</body></html>"
)


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (503, MAINTENANCE_PAGE, "text/html;charset=UTF-8"),
        (200, MAINTENANCE_PAGE, "text/html"),  # a maintenance page behind a redirect
        (502, BAD_GATEWAY_HTML, "text/html"),
        (500, json.dumps({"error": "server_error", "error_description": "boom"}),
         "application/json"),
    ],
)  # fmt: skip
def test_token_endpoint_outage_is_retried_then_transient(
    sandbox: Any, client: SalesforceClient, status: int, body: str, content_type: str
) -> None:
    attempts = client.retry.max_attempts
    sandbox.fail_next(
        status, body, count=attempts, path=r"/services/oauth2/token", content_type=content_type
    )
    with pytest.raises(SalesforceError) as info:
        client.authenticate()
    assert not isinstance(info.value, AuthenticationError)
    assert info.value.transient
    assert info.value.code == f"HTTP_{status}"
    assert "unavailable" in info.value.message
    assert f"after {attempts} attempts" in info.value.message
    assert len(token_calls(sandbox)) == attempts
    assert not client.authenticated
    assert CLIENT_SECRET not in str(info.value)


def test_token_endpoint_outage_that_ends_is_no_error(
    sandbox: Any, client: SalesforceClient
) -> None:
    sandbox.fail_next(503, MAINTENANCE_PAGE, count=2, path=r"/services/oauth2/token",
                      content_type="text/html")  # fmt: skip
    client.authenticate()
    assert client.authenticated
    assert len(token_calls(sandbox)) == 3


def test_html_page_that_is_not_an_outage_is_a_configuration_error(
    sandbox: Any, client: SalesforceClient
) -> None:
    sandbox.fail_next(
        404,
        "<html><head><title>Page not found</title></head><body>Nope</body></html>",
        path=r"/services/oauth2/token",
        content_type="text/html",
    )
    with pytest.raises(AuthenticationError) as info:
        client.authenticate()
    assert not info.value.transient
    assert "My Domain" in info.value.hint
    assert len(token_calls(sandbox)) == 1


def test_unreachable_host_is_connection_error() -> None:
    c = SalesforceClient(
        "http://127.0.0.1:9",
        "id",
        CLIENT_SECRET,
        retry=RetryPolicy(max_attempts=2, base_delay=0.0),
        sleep=lambda s: None,
        timeout=2.0,
    )
    with pytest.raises(SalesforceError) as info:
        c.authenticate()
    assert info.value.code == "CONNECTION_ERROR"
    assert "instance_url" in info.value.message
    assert CLIENT_SECRET not in str(info.value)


def test_client_rejects_bad_instance_url() -> None:
    with pytest.raises(ValueError, match="https"):
        SalesforceClient("http://acme.my.salesforce.com", "id", "secret")


# -- token renewal ---------------------------------------------------------------------------


def test_expired_token_is_renewed_once_and_request_replayed(
    sandbox: Any, client: SalesforceClient
) -> None:
    client.authenticate()
    first = current_token(client)
    sandbox.expire_tokens()
    info = client.get_json("sobjects/Lead/describe")
    assert info["name"] == "Lead"
    assert len(token_calls(sandbox)) == 2
    describes = calls_to(sandbox, "/sobjects/Lead/describe")
    assert [r.status for r in describes] == [401, 200]
    assert current_token(client) != first


def test_second_401_fails_without_looping(sandbox: Any, client: SalesforceClient) -> None:
    client.authenticate()
    sandbox.fail_next(
        401,
        json.dumps(SESSION_EXPIRED),
        count=3,
        path=r"/sobjects/Lead/describe",
        content_type="application/json;charset=UTF-8",
    )
    with pytest.raises(SalesforceError) as info:
        client.get_json("sobjects/Lead/describe")
    assert info.value.status == 401
    assert info.value.code == "INVALID_SESSION_ID"
    assert len(calls_to(sandbox, "/sobjects/Lead/describe")) == 2
    assert len(token_calls(sandbox)) == 2


# -- retries ---------------------------------------------------------------------------------


def test_503_json_is_retried(sandbox: Any, client: SalesforceClient, sleeps: list[float]) -> None:
    sandbox.fail_next(
        503,
        json.dumps(UNAVAILABLE),
        count=2,
        path=r"/limits",
        content_type="application/json;charset=UTF-8",
    )
    limits = client.get_json("limits")
    assert "DailyApiRequests" in limits
    assert [r.status for r in calls_to(sandbox, "/limits")] == [503, 503, 200]
    assert len(sleeps) == 2


def test_502_html_is_retried_then_reported(sandbox: Any, client: SalesforceClient) -> None:
    sandbox.fail_next(502, BAD_GATEWAY_HTML, count=1, path=r"/limits", content_type="text/html")
    assert "DailyApiRequests" in client.get_json("limits")
    sandbox.fail_next(502, BAD_GATEWAY_HTML, count=10, path=r"/limits", content_type="text/html")
    with pytest.raises(SalesforceError) as info:
        client.get_json("limits")
    assert info.value.status == 502 and info.value.transient
    assert info.value.code == "HTTP_502"
    assert "502 Bad Gateway" in info.value.message and "<html>" not in info.value.message
    assert len(calls_to(sandbox, "/limits")) == 2 + 4  # max_attempts=4


def test_concurrent_long_txn_403_is_retried(sandbox: Any, client: SalesforceClient) -> None:
    body = [
        {
            "message": "ConcurrentPerOrgLongTxn Limit exceeded.",
            "errorCode": "REQUEST_LIMIT_EXCEEDED",
        }
    ]
    sandbox.fail_next(
        403, json.dumps(body), path=r"/limits", content_type="application/json;charset=UTF-8"
    )
    assert "DailyApiRequests" in client.get_json("limits")
    assert [r.status for r in calls_to(sandbox, "/limits")] == [403, 200]


def test_total_requests_limit_is_not_retried(sandbox: Any, client: SalesforceClient) -> None:
    client.authenticate()
    sandbox.set_api_limit(100, remaining=0)
    with pytest.raises(ApiLimitExceededError) as info:
        client.get_json("sobjects/Lead/describe")
    assert info.value.status == 403
    assert info.value.code == "REQUEST_LIMIT_EXCEEDED"
    assert "TotalRequests" in str(info.value)
    assert len(calls_to(sandbox, "/sobjects/Lead/describe")) == 1


def test_other_4xx_is_not_retried(sandbox: Any, client: SalesforceClient) -> None:
    with pytest.raises(SalesforceError) as info:
        list(client.query_all("SELECT Id, Nope__c FROM Lead"))
    assert info.value.status == 400
    assert info.value.code == "INVALID_FIELD"
    assert "Nope__c" in info.value.message
    assert len(calls_to(sandbox, "/query")) == 1


def test_nothing_secret_is_logged(
    sandbox: Any, client: SalesforceClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.authenticate()
    tokens = [current_token(client)]
    sandbox.expire_tokens()
    sandbox.fail_next(
        503, json.dumps(UNAVAILABLE), path=r"/limits", content_type="application/json"
    )
    client.get_json("limits")
    text = caplog.text
    assert sandbox.client_secret not in text
    tokens.append(current_token(client))
    for token in tokens:
        assert token not in text


# -- describe and query ----------------------------------------------------------------------


def test_describe_lead(client: SalesforceClient) -> None:
    info = describe_object(client, "Lead")
    assert info.name == "Lead"
    email = info.field("email")
    assert email is not None and email.type == "email" and email.updateable and email.id_lookup
    opt_out = info.field("HasOptedOutOfEmail")
    assert opt_out is not None and opt_out.type == "boolean" and not opt_out.required_on_insert
    custom = info.field("newsletter__c")
    assert custom is not None and custom.name == "Newsletter__c" and custom.updateable
    converted = info.field("IsConverted")
    assert converted is not None and not converted.updateable
    required = {f.name for f in info.required_on_insert()}
    assert {"LastName", "Company"} <= required


def test_describe_unknown_object(client: SalesforceClient) -> None:
    with pytest.raises(SalesforceError) as info:
        describe_object(client, "Leed")
    assert info.value.code == "NOT_FOUND" and info.value.status == 404


def test_query_all_follows_next_records_url(sandbox: Any, client: SalesforceClient) -> None:
    sandbox.add_records(
        "Lead",
        [{"LastName": f"Bulk{i}", "Company": "Acme", "Email": f"b{i}@x.com"} for i in range(2500)],
    )
    records = list(client.query_all("SELECT Id, Email FROM Lead"))
    assert len(records) == 2503
    assert len({r["Id"] for r in records}) == 2503
    assert all("attributes" not in r for r in records)
    assert set(records[0]) == {"Id", "Email"}
    query_calls = calls_to(sandbox, "/query")
    assert len(query_calls) >= 2
    assert query_calls[1].path.startswith("/services/data/v62.0/query/")


def test_query_records_reads_the_same_records_as_query_all(
    sandbox: Any, client: SalesforceClient
) -> None:
    """Decoded into a struct of the selected fields, page after page: the same records, values
    and order as query_all's dicts; a field not selected reads as absent, as in a dict."""
    sandbox.add_records(
        "Lead",
        [{"LastName": f"Rec{i}", "Company": "Acme", "Email": f"r{i}@x.com",
          "HasOptedOutOfEmail": i % 3 == 0} for i in range(2500)],
    )  # fmt: skip
    soql = "SELECT Id, Email, HasOptedOutOfEmail, IsConverted FROM Lead"
    record_type = query_record_type("Lead", ["Id", "Email", "HasOptedOutOfEmail", "IsConverted"])
    expected = list(client.query_all(soql))
    records = client.query_records(soql, record_type)
    assert len(calls_to(sandbox, "/query")) >= 4  # two pages each
    fields = ["Id", "Email", "HasOptedOutOfEmail", "IsConverted"]
    assert [[r[f] for f in fields] for r in records] == [[d[f] for f in fields] for d in expected]
    assert [[r.get(f) for f in fields] for r in records] == [
        [d.get(f) for f in fields] for d in expected
    ]
    first = records[0]
    assert first.get("attributes") is None and first.get("LastName", "none") == "none"
    with pytest.raises(KeyError):
        first["attributes"]
    first["Email"] = "changed@x.com"  # a dry run lays its planned values over a match
    assert first.get("Email") == "changed@x.com"


Answer = tuple[int, bytes, dict[str, str]]  # status, body, headers


@contextlib.contextmanager
def stub_gateway(
    answer_get: Callable[[str], Answer],
    seen: list[tuple[str, str | None]] | None = None,
    headers_seen: list[dict[str, str]] | None = None,
) -> Iterator[str]:
    """A minimal stdlib HTTP server in front of a fake org, for answers the sandbox cannot
    give: every POST is a token request (answered with a token for this server), every GET is
    answered by `answer_get(path)` (and appended to `seen` with its Authorization header when
    given, its headers to `headers_seen`). Yields the server's URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            port = self.server.server_port  # type: ignore[attr-defined]
            token = {"access_token": "00D!tok", "instance_url": f"http://127.0.0.1:{port}"}
            self._send(200, json.dumps(token).encode(), {"Content-Type": "application/json"})

        def do_GET(self) -> None:
            if seen is not None:
                seen.append((self.path, self.headers.get("Authorization")))
            if headers_seen is not None:
                headers_seen.append(dict(self.headers.items()))
            self._send(*answer_get(self.path))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_query_records_reads_an_answer_of_another_shape_as_query_all() -> None:
    """A page whose records are not all objects (or any other shape the struct does not fit)
    is read as query_all reads it: the objects kept, the rest left out; a body that is not
    JSON fails alike."""
    page = {
        "totalSize": 3, "done": True,
        "records": [7, {"attributes": {"type": "Lead"}, "Id": "00Q1", "Email": "a@b.c"},
                    {"Id": "00Q2", "Email": None, "Extra": [1]}],
    }  # fmt: skip
    json_type = {"Content-Type": "application/json"}

    def answer(path: str) -> Answer:
        body = b"<html>not json</html>" if "bad" in path else json.dumps(page).encode()
        return 200, body, json_type

    with stub_gateway(answer) as url:
        c = SalesforceClient(url, "id", "secret")
        record_type = query_record_type("Lead", ["Id", "Email"])
        records = c.query_records("SELECT Id, Email FROM Lead", record_type)
        assert [(r["Id"], r.get("Email")) for r in records] == [
            (d["Id"], d.get("Email")) for d in c.query_all("SELECT Id, Email FROM Lead")
        ] == [("00Q1", "a@b.c"), ("00Q2", None)]
        for query in (lambda: c.query_records("SELECT bad", record_type),
                      lambda: list(c.query_all("SELECT bad"))):  # fmt: skip
            with pytest.raises(SalesforceError) as info:
                query()
            assert info.value.code == "INVALID_RESPONSE"


def test_a_long_query_leaves_no_url_in_the_split_cache() -> None:
    """requests splits each URL it sends and Python caches the last 128 split: a query's URL
    (its SOQL, up to 16 KB) must not stay there after the query."""
    long_query = "SELECT Id FROM Lead WHERE Email IN (" + ",".join(["'x@y.z'"] * 2000) + ")"
    page = {"totalSize": 0, "done": True, "records": []}

    def answer(path: str) -> Answer:
        return 200, json.dumps(page).encode(), {"Content-Type": "application/json"}

    with stub_gateway(answer) as url:
        c = SalesforceClient(url, "id", "secret")
        for _ in range(2):
            assert list(c.query_all(long_query)) == []
            assert urllib.parse.urlsplit.cache_info().currsize == 0  # type: ignore[attr-defined]


def test_retry_after_header_is_honoured() -> None:
    """The sandbox cannot send Retry-After, so a minimal stdlib HTTP server plays the gateway."""
    hits: list[str] = []

    def answer(path: str) -> Answer:
        hits.append(path)
        if len(hits) == 1:
            return 503, b"busy", {"Retry-After": "7", "Content-Type": "text/plain"}
        return 200, b"{}", {"Content-Type": "application/json"}

    with stub_gateway(answer) as url:
        sleeps: list[float] = []
        c = SalesforceClient(
            url,
            "id",
            "secret",
            retry=RetryPolicy(base_delay=0.0, max_delay=30.0),
            sleep=sleeps.append,
        )
        assert c.get_json("limits") == {}
        assert sleeps == [7.0]
        assert len(hits) == 2


@contextlib.contextmanager
def org_and_proxy(
    org_seen: list[tuple[str, str | None]], proxy_seen: list[tuple[str, str | None]]
) -> Iterator[tuple[str, str]]:
    """Two gateways, the org's and a proxy's, each answering ``{"from": ...}``: their URLs."""
    json_type = {"Content-Type": "application/json"}
    with stub_gateway(lambda path: (200, b'{"from": "org"}', json_type), org_seen) as org_url, \
            stub_gateway(lambda path: (200, b'{"from": "proxy"}', json_type),
                         proxy_seen) as proxy_url:  # fmt: skip
        yield org_url, proxy_url


def test_proxies_and_netrc_of_the_environment_apply_to_every_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The environment is read once per host, not per call, and still applies: a proxy named
    by HTTP_PROXY carries every call (the org itself sees none), and a ~/.netrc login for the
    host is sent as requests sends it."""
    org_seen: list[tuple[str, str | None]] = []
    proxy_seen: list[tuple[str, str | None]] = []
    with org_and_proxy(org_seen, proxy_seen) as (org_url, proxy_url):
        for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        c = SalesforceClient(org_url, "id", "secret")
        c.authenticate()  # the token from the org, before the environment names a proxy
        assert c.get_json("limits") == {"from": "org"}
        assert org_seen[-1][1] == "Bearer 00D!tok"

        proxied = SalesforceClient(org_url, "id", "secret")
        proxied.authenticate()
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        assert [proxied.get_json("limits") for _ in range(2)] == [{"from": "proxy"}] * 2
        assert [path for path, _ in proxy_seen] == [
            f"{org_url}/services/data/v62.0/limits"  # the absolute form a proxy receives
        ] * 2
        monkeypatch.delenv("HTTP_PROXY")

        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login someone password pw\n")
        monkeypatch.setenv("NETRC", str(netrc))
        with_netrc = SalesforceClient(org_url, "id", "secret")
        with_netrc.authenticate()
        for _ in range(2):
            with_netrc.get_json("limits")
        basic = "Basic " + base64.b64encode(b"someone:pw").decode()
        assert [auth for _, auth in org_seen[-2:]] == [basic, basic]


# -- what a session does, on the client's own way of sending ---------------------------------


def test_redirects_are_followed_and_the_token_stays_with_its_host() -> None:
    """A redirect is followed as requests follows it: to the same host with the access token,
    to another host (here another port) without it."""
    json_type = {"Content-Type": "application/json"}
    org_seen: list[tuple[str, str | None]] = []
    other_seen: list[tuple[str, str | None]] = []
    with stub_gateway(lambda path: (200, b'{"from": "elsewhere"}', json_type),
                      other_seen) as other_url:  # fmt: skip

        def answer(path: str) -> Answer:
            if path.endswith("/limits"):
                return 307, b"", {"Location": "/services/data/v62.0/moved"}
            if path.endswith("/away"):
                return 302, b"", {"Location": f"{other_url}/services/data/v62.0/there"}
            return 200, b'{"from": "org"}', json_type

        with stub_gateway(answer, org_seen) as org_url:
            c = SalesforceClient(org_url, "id", "secret")
            assert c.get_json("limits") == {"from": "org"}
            assert org_seen == [("/services/data/v62.0/limits", "Bearer 00D!tok"),
                                ("/services/data/v62.0/moved", "Bearer 00D!tok")]  # fmt: skip
            assert c.get_json("away") == {"from": "elsewhere"}
            assert org_seen[-1] == ("/services/data/v62.0/away", "Bearer 00D!tok")
            assert other_seen == [("/services/data/v62.0/there", None)]


def test_cookies_the_org_sets_are_sent_back() -> None:
    """Salesforce sets cookies (BrowserId) on API answers: a session sends them back."""
    headers_seen: list[dict[str, str]] = []

    def answer(path: str) -> Answer:
        headers = {"Content-Type": "application/json"}
        if not headers_seen[:-1]:  # the first call
            headers["Set-Cookie"] = "BrowserId=b1; Path=/"
        return 200, b"{}", headers

    with stub_gateway(answer, headers_seen=headers_seen) as url:
        c = SalesforceClient(url, "id", "secret")
        for _ in range(3):
            c.get_json("limits")
        assert [h.get("Cookie") for h in headers_seen] == [None, "BrowserId=b1", "BrowserId=b1"]


def test_a_session_of_the_callers_own_keeps_its_headers_auth_and_hooks() -> None:
    """A session passed to the client: its default headers and its auth reach the org, its
    response hooks see every answer."""
    headers_seen: list[dict[str, str]] = []
    session = requests.Session()
    session.headers["X-Caller"] = "theirs"
    session.headers["Accept-Encoding"] = None  # type: ignore[assignment]  # None: not sent
    with stub_gateway(lambda path: (200, b"{}", {"Content-Type": "application/json"}),
                      headers_seen=headers_seen) as url:  # fmt: skip
        c = SalesforceClient(url, "id", "secret", session=session)
        c.get_json("limits")
        assert headers_seen[-1]["X-Caller"] == "theirs"
        assert headers_seen[-1]["Accept-Encoding"] == "identity"  # http.client's, not gzip
        assert headers_seen[-1]["Authorization"] == "Bearer 00D!tok"
        session.auth = ("someone", "pw")  # as requests does, it replaces the Authorization
        SalesforceClient(url, "id", "secret", session=session).get_json("limits")
        basic = "Basic " + base64.b64encode(b"someone:pw").decode()
        assert headers_seen[-1]["Authorization"] == basic
        session.auth = None
        answered: list[str] = []
        session.hooks["response"].append(lambda r, **kwargs: answered.append(r.url))
        SalesforceClient(url, "id", "secret", session=session).get_json("limits")
        assert answered == [f"{url}/services/oauth2/token", f"{url}/services/data/v62.0/limits"]


def test_no_proxy_of_the_environment_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    org_seen: list[tuple[str, str | None]] = []
    proxy_seen: list[tuple[str, str | None]] = []
    with org_and_proxy(org_seen, proxy_seen) as (org_url, proxy_url):
        for name in ("no_proxy", "all_proxy", "ALL_PROXY", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        c = SalesforceClient(org_url, "id", "secret")
        assert [c.get_json("limits") for _ in range(2)] == [{"from": "org"}] * 2
        assert proxy_seen == []
        assert [path for path, _ in org_seen] == ["/services/data/v62.0/limits"] * 2


@pytest.fixture
def https_sandbox(tmp_path: Path) -> Iterator[tuple[Sandbox, str]]:
    """The sandbox over https, its certificate signed by a CA of the test's own."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path, ca_path = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    with Sandbox(seed=seed(), certfile=cert_path, keyfile=key_path) as sb:
        yield sb, str(ca_path)


def test_tls_is_verified_against_the_ca_bundle_of_the_environment_or_session(
    https_sandbox: tuple[Sandbox, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data calls over https trust the CA bundle REQUESTS_CA_BUNDLE names, or the caller's
    session's (the system's CAs never signed the sandbox's certificate: refused)."""
    sandbox, ca_path = https_sandbox
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    once = RetryPolicy(max_attempts=1)
    with pytest.raises(SalesforceError) as info:
        SalesforceClient(sandbox.url, CLIENT_ID, CLIENT_SECRET, retry=once).authenticate()
    assert info.value.code == "CONNECTION_ERROR" and "SSL" in info.value.message

    soql = "SELECT Id, Email FROM Lead WHERE Email IN ('lead1@example.com', 'a+b@example.com')"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_path)
    c = SalesforceClient(sandbox.url, CLIENT_ID, CLIENT_SECRET, retry=once)
    assert [r["Email"] for r in c.query_all(soql)] == ["lead1@example.com"]
    assert "DailyApiRequests" in c.get_json("limits")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")

    session = requests.Session()
    session.trust_env = False
    session.verify = ca_path
    c = SalesforceClient(sandbox.url, CLIENT_ID, CLIENT_SECRET, retry=once, session=session)
    assert [r["Email"] for r in c.query_all(soql)] == ["lead1@example.com"]
    assert "DailyApiRequests" in c.get_json("limits")
