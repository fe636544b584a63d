"""The webhook receiver over real HTTP (a subprocess on a loopback port) with a folder spool."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from receiver_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    Receiver,
    guest_webhook,
    running_receiver,
    spool_rows,
    webhook,
)
from tap_didomi.receiver.app import Counters, log_counters
from tap_didomi.receiver.auth import AUDIENCE, ISSUER, derive_key


def test_token_by_form_and_by_basic_auth(tmp_path: Path) -> None:
    with running_receiver(str(tmp_path / "spool")) as receiver:
        form = requests.post(receiver.url + "/oauth/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET})
        basic = requests.post(receiver.url + "/oauth/token", timeout=10,
                              data={"grant_type": "client_credentials"},
                              auth=(CLIENT_ID, CLIENT_SECRET))
        for answer in (form, basic):
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
            assert answer.headers["cache-control"] == "no-store"
            assert receiver.post(webhook(1), body["access_token"]).status_code == 200


def test_wrong_client_is_invalid_client(tmp_path: Path) -> None:
    with running_receiver(str(tmp_path / "spool")) as receiver:
        wrong_secret = requests.post(receiver.url + "/oauth/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": CLIENT_ID,
            "client_secret": "not-the-secret-at-all"})
        wrong_id = requests.post(receiver.url + "/oauth/token", timeout=10,
                                 data={"grant_type": "client_credentials"},
                                 auth=("someone-else", CLIENT_SECRET))
        nothing = requests.post(receiver.url + "/oauth/token", timeout=10,
                                data={"grant_type": "client_credentials"})
        bad_basic = requests.post(receiver.url + "/oauth/token", timeout=10,
                                  headers={"Authorization": "Basic !!!not-base64"})
        for answer in (wrong_secret, wrong_id, nothing, bad_basic):
            assert answer.status_code == 401
            assert answer.json() == {"error": "invalid_client"}
        grant = requests.post(receiver.url + "/oauth/token", timeout=10,
                              data={"grant_type": "password"}, auth=(CLIENT_ID, CLIENT_SECRET))
        assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
        receiver.terminate()
        assert CLIENT_SECRET not in receiver.output


def test_webhook_needs_a_valid_unexpired_token(tmp_path: Path) -> None:
    with running_receiver(str(tmp_path / "spool")) as receiver:
        now = int(time.time())
        key = derive_key(CLIENT_SECRET)
        expired = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": CLIENT_ID,
                              "iat": now - 7200, "exp": now - 3600}, key, algorithm="HS256")
        foreign = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": CLIENT_ID, "iat": now,
                              "exp": now + 3600}, derive_key("another-secret-0123456789"),
                             algorithm="HS256")
        unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": CLIENT_ID, "iat": now,
                               "exp": now + 3600}, "", algorithm="none")
        for token in (None, "garbage", expired, foreign, unsigned):
            answer = receiver.post(webhook(1), token)
            assert answer.status_code == 401, token
            assert answer.json()["error"] == "invalid_token"
        basic = requests.post(receiver.url + "/webhooks/didomi", json=webhook(1), timeout=10,
                              auth=(CLIENT_ID, CLIENT_SECRET))
        assert basic.status_code == 401
        assert spool_rows(tmp_path / "spool") == []
        receiver.terminate()
        assert expired not in receiver.output and CLIENT_SECRET not in receiver.output


def test_body_over_one_mib_is_413(tmp_path: Path) -> None:
    with running_receiver(str(tmp_path / "spool")) as receiver:
        token = receiver.token()
        big = webhook(1)
        big["parameters"]["new_entity"]["metadata"] = {"blob": "x" * (1024 * 1024)}
        assert receiver.post(big, token).status_code == 413
        # Without a Content-Length (chunked), the body is cut off as it streams in.
        chunks = iter([b'{"type": "user.updated", "pad": "', b"y" * (1024 * 1024), b'"}'])
        chunked = requests.post(receiver.url + "/webhooks/didomi", data=chunks, timeout=30,
                                headers={"Authorization": f"Bearer {token}"})
        assert chunked.status_code == 413
        just_under = webhook(2)
        just_under["parameters"]["new_entity"]["metadata"] = {"blob": "x" * 1_000_000}
        assert receiver.post(just_under, token).status_code == 200
        assert len(spool_rows(tmp_path / "spool")) == 1


@pytest.mark.parametrize("data", [
    b"not json", b"[1, 2]", b'{"parameters": {}}', b'{"type": 7}', b'{"type": ""}', b"\xff\xfe",
])
def test_body_that_is_not_a_webhook_is_400(tmp_path: Path, data: bytes) -> None:
    with running_receiver(str(tmp_path / "spool")) as receiver:
        answer = receiver.post(None, receiver.token(), data=data)
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_webhook"
        assert spool_rows(tmp_path / "spool") == []


def test_a_retried_webhook_is_stored_once(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with running_receiver(str(spool)) as receiver:
        token = receiver.token()
        original = webhook(7)
        first = receiver.post(original, token)
        assert first.status_code == 200 and first.json()["status"] == "stored"
        # The same JSON with another key order and spacing.
        reordered = json.dumps(dict(reversed(list(original.items()))), indent=3).encode()
        again = receiver.post(None, token, data=reordered)
        assert again.status_code == 200 and again.json() == {"status": "duplicate"}
        other = receiver.post(webhook(7, enabled=False), token)
        assert other.json()["status"] == "stored"
        rows = spool_rows(spool)
        assert len(rows) == 2
        assert json.loads(rows[0][2]) == original
        health = requests.get(receiver.url + "/healthz", timeout=10).json()
        assert health["stored"] == 2 and health["duplicates"] == 1


def test_duplicates_collapse_across_receivers_sharing_a_folder(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")
    with running_receiver(spool) as one, running_receiver(spool) as two:
        token = one.token()
        # A token of one receiver is good on the other: they share the configuration.
        assert two.post(webhook(1), token).json()["status"] == "stored"
        assert one.post(webhook(1), token).json()["status"] == "duplicate"
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(
                lambda n: (one if n % 2 else two).post(webhook(n // 2 + 100), token),
                range(40)))
        assert all(a.status_code == 200 for a in answers)
        statuses = sorted(a.json()["status"] for a in answers)
        assert statuses.count("stored") == 20 and statuses.count("duplicate") == 20
    assert len(spool_rows(tmp_path / "spool")) == 21


def test_guests_are_counted_and_dropped_unless_kept(tmp_path: Path) -> None:
    with running_receiver(str(tmp_path / "dropping")) as receiver:
        token = receiver.token()
        answer = receiver.post(guest_webhook(1), token)
        assert answer.status_code == 200 and answer.json()["status"] == "ignored"
        flattened = {"type": "event.created",
                     "parameters": {"entity": {"user__organization_user_id": "a@example.com"}}}
        assert receiver.post(flattened, token).json()["status"] == "stored"
        assert requests.get(receiver.url + "/healthz", timeout=10).json()["guests_dropped"] == 1
    assert len(spool_rows(tmp_path / "dropping")) == 1
    with running_receiver(str(tmp_path / "keeping"), "--keep-guests") as receiver:
        assert receiver.post(guest_webhook(1), receiver.token()).json()["status"] == "stored"
    assert len(spool_rows(tmp_path / "keeping")) == 1


def test_sigterm_finishes_and_exits_zero(tmp_path: Path) -> None:
    receiver = Receiver(str(tmp_path / "spool"))
    try:
        token = receiver.token()
        assert receiver.post(webhook(1), token).status_code == 200
        assert receiver.terminate() == 0
        assert "stopped: stored 1" in receiver.output
        assert token not in receiver.output
    finally:
        receiver.kill()


def test_kill_9_loses_nothing_acknowledged_and_tokens_survive_a_restart(
        tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")
    acknowledged: set[str] = set()
    token = ""
    for round_no in range(3):
        receiver = Receiver(spool)
        try:
            token = token or receiver.token()  # issued before the first kill, still valid

            def send(n: int, receiver: Receiver = receiver, round_no: int = round_no,
                     token: str = token) -> str | None:
                body = webhook(round_no * 1000 + n)
                try:
                    answer = receiver.post(body, token, timeout=10)
                except requests.RequestException:
                    return None
                assert answer.status_code == 200, answer.text
                return str(body["parameters"]["source"]["id"])

            with ThreadPoolExecutor(6) as pool:
                futures = [pool.submit(send, n) for n in range(300)]
                # Some answered, others in flight: SIGKILL now.
                while sum(f.done() for f in futures) < 20:
                    time.sleep(0.01)
                receiver.proc.kill()
                for future in futures:
                    result = future.result()
                    if result is not None:
                        acknowledged.add(result)
        finally:
            receiver.kill()
    stored = {json.loads(body)["parameters"]["source"]["id"] for _, _, body in spool_rows(
        tmp_path / "spool")}
    assert acknowledged, "no webhook was acknowledged before the kills"
    assert acknowledged <= stored


def test_configuration_errors_exit_2_without_echoing_secrets(tmp_path: Path) -> None:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tap_didomi.receiver", "--spool",
                               str(tmp_path / "spool"), *args], capture_output=True, text=True,
                              timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})})

    missing = run()
    assert missing.returncode == 2
    assert "--client-id (or DIDOMI_WEBHOOK_CLIENT_ID) is required" in missing.stderr
    assert "--client-secret (or DIDOMI_WEBHOOK_CLIENT_SECRET) is required" in missing.stderr
    short = run(env={"DIDOMI_WEBHOOK_CLIENT_ID": "x", "DIDOMI_WEBHOOK_CLIENT_SECRET": "short1"})
    assert short.returncode == 2 and "at least 16 characters" in short.stderr
    assert "short1" not in short.stderr
    port = run("--port", "http", env={"DIDOMI_WEBHOOK_CLIENT_ID": "x",
                                      "DIDOMI_WEBHOOK_CLIENT_SECRET": CLIENT_SECRET})
    assert port.returncode == 2 and "--port must be a number" in port.stderr
    assert "Traceback" not in missing.stderr + short.stderr + port.stderr


def test_basic_credentials_are_form_decoded(tmp_path: Path) -> None:
    secret = "s3cret:with+special/chars&more"
    receiver = Receiver(str(tmp_path / "spool"), client_secret=secret)
    try:
        encoded = base64.b64encode(
            f"{CLIENT_ID}:{quote(secret, safe='')}".encode()).decode()
        answer = requests.post(receiver.url + "/oauth/token", timeout=10,
                               data={"grant_type": "client_credentials"},
                               headers={"Authorization": f"Basic {encoded}"})
        assert answer.status_code == 200, answer.text
    finally:
        receiver.kill()


class _JwksHandler(BaseHTTPRequestHandler):
    jwks: bytes = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.jwks)))
        self.end_headers()
        self.wfile.write(self.jwks)

    def log_message(self, format: str, *args: object) -> None:
        return


def test_tokens_of_your_own_authorization_server_checked_against_its_jwks(
        tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    _JwksHandler.jwks = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig",
                                              "alg": "RS256"}]}).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JwksHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    jwks_url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    now = int(time.time())

    def token(audience: str, expires: int = now + 600) -> str:
        return jwt.encode({"iss": "https://auth.example.com", "aud": audience, "sub": "didomi",
                           "iat": now, "exp": expires}, key, algorithm="RS256",
                          headers={"kid": "k1"})

    try:
        with running_receiver(str(tmp_path / "spool"), "--jwks-url", jwks_url,
                              "--audience", "didomi-webhooks-prod") as receiver:
            good = receiver.post(webhook(1), token("didomi-webhooks-prod"))
            assert good.status_code == 200 and good.json()["status"] == "stored"
            assert receiver.post(webhook(2), token("another-api")).status_code == 401
            assert receiver.post(webhook(3), token("didomi-webhooks-prod", now - 10)
                                 ).status_code == 401
            # A token the receiver would sign itself is not accepted in this mode.
            own = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": CLIENT_ID, "iat": now,
                              "exp": now + 600}, derive_key(CLIENT_SECRET), algorithm="HS256")
            assert receiver.post(webhook(4), own).status_code == 401
            issued = requests.post(receiver.url + "/oauth/token", timeout=10,
                                   data={"grant_type": "client_credentials"},
                                   auth=(CLIENT_ID, CLIENT_SECRET))
            assert issued.status_code == 404
        assert len(spool_rows(tmp_path / "spool")) == 1
    finally:
        server.shutdown()


def test_counters_are_logged_when_they_change(caplog: pytest.LogCaptureFixture) -> None:
    counters = Counters()

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(log_counters(counters, 0.01))
        await asyncio.sleep(0.05)  # unchanged: nothing logged
        counters.guests_dropped += 3
        await asyncio.sleep(0.05)
        task.cancel()

    with caplog.at_level(logging.INFO, logger="didomi-webhook-receiver"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["since start: stored 0, duplicates 0, guests_dropped 3, unauthorized 0, "
                     "rejected 0, store_failures 0"]
