"""Tokens: the client-credentials grant Didomi uses, and the check of its Bearer tokens.

Didomi's webhook integration obtains an access token from an endpoint the customer provides
(OAuth 2.0 client credentials) and sends it as ``Authorization: Bearer``. The receiver is that
endpoint: it issues JWTs signed (HS256) with a key derived from the client secret, or from a
separate signing key, so that every receiver sharing the configuration accepts every token, and
a token stays valid across a restart. Alternatively the tokens come from the customer's own
authorization server and are checked against its JWKS.

Nothing here logs or echoes a token or a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import jwt

ISSUER = "didomi-webhook-receiver"
AUDIENCE = "didomi-webhooks"
DEFAULT_EXPIRES_IN = 3600
# Algorithms a customer's authorization server may sign with (never "none", never HS*:
# a JWKS publishes public keys).
JWKS_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384",
                   "PS512", "EdDSA"]


def derive_key(secret: str) -> bytes:
    """The HS256 key: 32 bytes derived from the secret (the secret itself never signs)."""
    return hashlib.sha256(b"didomi-webhook-receiver token key\x00" + secret.encode()).digest()


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str


def credentials_from_request(authorization: str | None, form_body: bytes
                             ) -> tuple[str | None, ClientCredentials | None]:
    """The grant type and the client's credentials, from HTTP Basic or the form body."""
    form = parse_qs(form_body.decode("utf-8", errors="replace"), keep_blank_values=True)
    grant_type = _first(form, "grant_type")
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return grant_type, None
        client_id, sep, client_secret = decoded.partition(":")
        if not sep:
            return grant_type, None
        # RFC 6749 2.3.1: both are form-urlencoded before Basic encoding.
        return grant_type, ClientCredentials(unquote_plus(client_id), unquote_plus(client_secret))
    form_id = _first(form, "client_id")
    form_secret = _first(form, "client_secret")
    if form_id is None or form_secret is None:
        return grant_type, None
    return grant_type, ClientCredentials(form_id, form_secret)


def _first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


class TokenIssuer:
    """Checks a client's credentials and issues signed, expiring access tokens."""

    def __init__(self, client_id: str, client_secret: str, signing_key: str | None = None,
                 expires_in: int = DEFAULT_EXPIRES_IN) -> None:
        self._client_id = client_id.encode()
        self._client_secret = client_secret.encode()
        self._key = derive_key(signing_key or client_secret)
        self.expires_in = expires_in

    def client_is_valid(self, credentials: ClientCredentials) -> bool:
        # Both comparisons always run, each in constant time.
        id_ok = hmac.compare_digest(credentials.client_id.encode(), self._client_id)
        secret_ok = hmac.compare_digest(credentials.client_secret.encode(), self._client_secret)
        return id_ok & secret_ok

    def issue(self) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": self._client_id.decode(),
                  "iat": now, "exp": now + self.expires_in}
        token = jwt.encode(claims, self._key, algorithm="HS256")
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}

    @property
    def key(self) -> bytes:
        return self._key


class TokenVerifier:
    """Whether a Bearer token is valid and unexpired (signature checked in constant time)."""

    def __init__(self, *, key: bytes | None = None, jwks_url: str | None = None,
                 audience: str | None = None) -> None:
        self._key = key
        self._audience = audience
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None

    def is_valid(self, authorization: str | None) -> bool:
        if not authorization or authorization[:7].lower() != "bearer ":
            return False
        token = authorization[7:].strip()
        if not token:
            return False
        try:
            if self._jwks is not None:
                signing_key = self._jwks.get_signing_key_from_jwt(token)
                options = {"require": ["exp"], "verify_aud": self._audience is not None}
                jwt.decode(token, signing_key.key, algorithms=JWKS_ALGORITHMS,
                           audience=self._audience, options=options)  # type: ignore[arg-type]
                return True
            if self._key is None:
                return False
            jwt.decode(token, self._key, algorithms=["HS256"], audience=AUDIENCE,
                       issuer=ISSUER, options={"require": ["exp", "iat", "sub"]})
        except (jwt.PyJWTError, ValueError):
            return False
        return True
