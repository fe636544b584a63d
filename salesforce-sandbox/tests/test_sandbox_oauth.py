"""OAuth client credentials (reference 2.1) and invalid sessions (2.2)."""

from __future__ import annotations

import base64
import re
import time

import requests
from salesforce_sandbox import Sandbox
from sandbox_helpers import API, Client, seed

JSON_TYPE = "application/json;charset=UTF-8"
INVALID_SESSION = '[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]'


def token_url(sb: Sandbox) -> str:
    return sb.url + "/services/oauth2/token"


def test_token_in_form_body(sandbox: Sandbox) -> None:
    resp = requests.post(
        token_url(sandbox),
        data={
            "grant_type": "client_credentials",
            "client_id": "demo-client-id",
            "client_secret": "demo-client-secret",
        },
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == JSON_TYPE
    body = resp.json()
    assert list(body) == [
        "access_token",
        "signature",
        "scope",
        "token_format",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "api_instance_url",
    ]
    assert "expires_in" not in body and "refresh_token" not in body
    assert isinstance(body["issued_at"], str) and re.fullmatch(r"\d{13}", body["issued_at"])
    assert abs(int(body["issued_at"]) / 1000 - time.time()) < 60
    assert body["instance_url"] == sandbox.url
    assert body["token_type"] == "Bearer"
    assert body["access_token"].startswith(body["id"].split("/")[-2][:15] + "!")
    assert "Sforce-Limit-Info" not in resp.headers


def test_token_with_http_basic(sandbox: Sandbox) -> None:
    basic = base64.b64encode(b"demo-client-id:demo-client-secret").decode()
    resp = requests.post(
        token_url(sandbox),
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert resp.status_code == 200
    token = resp.json()["access_token"]
    limits = requests.get(
        sandbox.url + API + "/limits", headers={"Authorization": f"Bearer {token}"}
    )
    assert limits.status_code == 200


def test_oauth_errors(sandbox: Sandbox) -> None:
    cases = [
        (
            {"grant_type": "client_credentials", "client_id": "nope", "client_secret": "x"},
            {"error": "invalid_client_id", "error_description": "client identifier invalid"},
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": "demo-client-id",
                "client_secret": "wrong",
            },
            {"error": "invalid_client", "error_description": "invalid client credentials"},
        ),
        (
            {
                "grant_type": "password",
                "client_id": "demo-client-id",
                "client_secret": "demo-client-secret",
            },
            {"error": "unsupported_grant_type", "error_description": "grant type not supported"},
        ),
    ]
    for form, expected in cases:
        resp = requests.post(token_url(sandbox), data=form)
        assert resp.status_code == 400
        assert resp.headers["Content-Type"] == JSON_TYPE
        assert resp.json() == expected
    as_json = requests.post(
        token_url(sandbox),
        json={
            "grant_type": "client_credentials",
            "client_id": "demo-client-id",
            "client_secret": "demo-client-secret",
        },
    )
    assert as_json.status_code == 400
    assert as_json.json() == {
        "error": "unsupported_grant_type",
        "error_description": "grant type not supported",
    }


def test_missing_or_bad_token_is_401(sandbox: Sandbox) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        resp = requests.get(sandbox.url + API + "/limits", headers=headers)
        assert resp.status_code == 401
        assert resp.text == INVALID_SESSION
        assert resp.headers["WWW-Authenticate"] == "Token"
        assert resp.headers["Content-Type"] == JSON_TYPE


def test_expire_tokens_and_ttl() -> None:
    with Sandbox(seed(), token_ttl=0.3) as sb:
        client = Client(sb)
        client.login()
        assert client.get(API + "/limits").status_code == 200
        time.sleep(0.35)
        assert client.get(API + "/limits").status_code == 401
        client.login()
        assert client.get(API + "/limits").status_code == 200
        sb.expire_tokens()
        resp = client.get(API + "/limits")
        assert resp.status_code == 401 and resp.text == INVALID_SESSION


def test_request_log_redacts_credentials(sandbox: Sandbox, client: Client) -> None:
    client.get(API + "/limits")
    for entry in sandbox.requests:
        assert client.token not in str(entry.headers)
        assert b"demo-client-secret" not in entry.body
    token_req = sandbox.requests[0]
    assert token_req.kind == "token" and b"client_id=demo-client-id" in token_req.body
    assert sandbox.requests[1].headers["Authorization"] == "Bearer [REDACTED]"
