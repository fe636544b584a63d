"""``didomi-webhook-receiver``: flags (each with an environment variable) and the server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

ENV_PREFIX = "DIDOMI_WEBHOOK_"
DEFAULT_SPOOL = "./didomi-webhooks"
MIN_SECRET_LENGTH = 16

logger = logging.getLogger("didomi-webhook-receiver")


class UsageError(Exception):
    """A flag is missing or wrong; the message says what to set."""


@dataclass(frozen=True)
class Options:
    spool: str
    host: str
    port: int
    client_id: str | None
    client_secret: str | None
    signing_key: str | None
    token_expires_in: int
    jwks_url: str | None
    audience: str | None
    keep_guests: bool
    receiver_id: str | None
    log_level: str


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(ENV_PREFIX + name)
    return value if value not in (None, "") else default


def _env_flag(name: str) -> bool:
    return (_env(name) or "").strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="didomi-webhook-receiver",
        description=(
            "Receives Didomi webhooks (POST /webhooks/didomi), issues the OAuth client-"
            "credentials tokens Didomi authenticates with (POST /oauth/token), and stores "
            "every webhook durably in a spool that tap-didomi reads (webhook_spool). Each flag "
            f"can be given as an environment variable {ENV_PREFIX}<FLAG> (e.g. "
            f"{ENV_PREFIX}CLIENT_SECRET); prefer the environment for secrets."
        ),
    )
    parser.add_argument("--spool", default=_env("SPOOL", DEFAULT_SPOOL),
                        help="a local folder (a SQLite spool) or a bucket URL (s3://, gs://) "
                             f"shared by several receivers [{ENV_PREFIX}SPOOL; default "
                             f"{DEFAULT_SPOOL}]")
    parser.add_argument("--host", default=_env("HOST", "127.0.0.1"),
                        help=f"address to listen on [{ENV_PREFIX}HOST; default 127.0.0.1; "
                             "0.0.0.0 in a container]")
    parser.add_argument("--port", default=_env("PORT", "8080"),
                        help=f"port to listen on, 0 for any free one [{ENV_PREFIX}PORT; "
                             "default 8080]")
    parser.add_argument("--client-id", default=_env("CLIENT_ID"),
                        help=f"client id Didomi's integration is given [{ENV_PREFIX}CLIENT_ID]")
    parser.add_argument("--client-secret", default=_env("CLIENT_SECRET"),
                        help="client secret Didomi's integration is given, at least "
                             f"{MIN_SECRET_LENGTH} characters [{ENV_PREFIX}CLIENT_SECRET]")
    parser.add_argument("--signing-key", default=_env("SIGNING_KEY"),
                        help="key the access tokens are signed with (default: derived from the "
                             "client secret); the same on every receiver behind one load "
                             f"balancer [{ENV_PREFIX}SIGNING_KEY]")
    parser.add_argument("--token-expires-in", default=_env("TOKEN_EXPIRES_IN", "3600"),
                        help=f"lifetime of an access token in seconds [{ENV_PREFIX}"
                             "TOKEN_EXPIRES_IN; default 3600]")
    parser.add_argument("--jwks-url", default=_env("JWKS_URL"),
                        help="accept tokens issued by your own authorization server, checked "
                             "against this JWKS URL, instead of issuing them "
                             f"[{ENV_PREFIX}JWKS_URL]")
    parser.add_argument("--audience", default=_env("AUDIENCE"),
                        help=f"with --jwks-url: the audience tokens must carry [{ENV_PREFIX}"
                             "AUDIENCE]")
    parser.add_argument("--keep-guests", action="store_true", default=_env_flag("KEEP_GUESTS"),
                        help="store webhooks without any organization_user_id too (cookie-"
                             "banner guests; dropped and counted by default) "
                             f"[{ENV_PREFIX}KEEP_GUESTS=true]")
    parser.add_argument("--receiver-id", default=_env("RECEIVER_ID"),
                        help="bucket spool: this receiver's name in its object names (default: "
                             f"host name and process id) [{ENV_PREFIX}RECEIVER_ID]")
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"],
                        help=f"[{ENV_PREFIX}LOG_LEVEL; default info]")
    return parser


def parse_options(argv: Sequence[str] | None = None) -> Options:
    args = build_parser().parse_args(argv)
    problems: list[str] = []
    try:
        port = int(args.port)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        problems.append(f"--port must be a number from 0 to 65535 (it is {args.port!r})")
        port = 0
    try:
        expires_in = int(args.token_expires_in)
        if expires_in < 60:
            raise ValueError
    except ValueError:
        problems.append("--token-expires-in must be a number of seconds, at least 60 (it is "
                        f"{args.token_expires_in!r})")
        expires_in = 3600
    if args.jwks_url:
        if not args.jwks_url.startswith(("https://", "http://127.", "http://localhost")):
            problems.append("--jwks-url must be an https URL (http only for loopback)")
    else:
        if not args.client_id:
            problems.append(f"--client-id (or {ENV_PREFIX}CLIENT_ID) is required: the client "
                            "id you give Didomi's webhook integration")
        if not args.client_secret:
            problems.append(f"--client-secret (or {ENV_PREFIX}CLIENT_SECRET) is required: the "
                            "client secret you give Didomi's webhook integration")
        elif len(args.client_secret) < MIN_SECRET_LENGTH:
            problems.append(f"the client secret must be at least {MIN_SECRET_LENGTH} characters "
                            "(generate one, e.g. `openssl rand -hex 32`)")
        if args.audience:
            problems.append("--audience applies only with --jwks-url")
    if args.signing_key is not None and len(args.signing_key) < MIN_SECRET_LENGTH:
        problems.append(f"--signing-key must be at least {MIN_SECRET_LENGTH} characters")
    if not str(args.spool).strip():
        problems.append("--spool must be a folder or a bucket URL")
    if problems:
        raise UsageError("; ".join(problems))
    return Options(
        spool=str(args.spool).strip(), host=args.host, port=port, client_id=args.client_id,
        client_secret=args.client_secret, signing_key=args.signing_key,
        token_expires_in=expires_in, jwks_url=args.jwks_url, audience=args.audience,
        keep_guests=bool(args.keep_guests), receiver_id=args.receiver_id,
        log_level=args.log_level,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another "
                         "--port or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(options: Options) -> None:
    # Imported here so that --help and usage errors work without the receiver extra.
    try:
        import uvicorn
    except ImportError:
        raise UsageError("the receiver needs its web server: pip install "
                         "'tap-didomi[receiver]'") from None
    from tap_didomi.receiver.app import ReceiverConfig, create_app
    from tap_didomi.receiver.auth import TokenIssuer, TokenVerifier
    from tap_didomi.receiver.spool import SpoolError, open_spool

    receiver_id = options.receiver_id or f"{socket.gethostname()}-{os.getpid()}"
    receiver_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in receiver_id)
    try:
        spool = open_spool(options.spool, receiver_id)
    except (SpoolError, OSError) as exc:
        raise UsageError(f"cannot open the spool {options.spool}: {exc}") from None
    issuer: TokenIssuer | None = None
    if options.jwks_url:
        verifier = TokenVerifier(jwks_url=options.jwks_url, audience=options.audience)
    else:
        assert options.client_id and options.client_secret
        issuer = TokenIssuer(options.client_id, options.client_secret, options.signing_key,
                             options.token_expires_in)
        verifier = TokenVerifier(key=issuer.key)
    app = create_app(ReceiverConfig(spool=spool, verifier=verifier, issuer=issuer,
                                    keep_guests=options.keep_guests))
    sock = _bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    logger.info("listening on http://%s:%d (webhooks: POST /webhooks/didomi, tokens: POST "
                "/oauth/token, health: GET /healthz)", shown, port)
    config = uvicorn.Config(app, log_level=options.log_level, access_log=False,
                            lifespan="on", timeout_graceful_shutdown=30,
                            server_header=False, log_config=None)
    # uvicorn finishes in-flight requests on SIGTERM/SIGINT, then raises the signal again
    # under the handlers found at start: these make that a clean exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    uvicorn.Server(config).run(sockets=[sock])


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    sys.exit(0)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = parse_options(argv)
        logging.getLogger().setLevel(options.log_level.upper())
        run(options)
    except UsageError as exc:
        sys.stderr.write(f"didomi-webhook-receiver: error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
