"""``salesforce-sandbox``: run the Salesforce sandbox until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from . import DEMO_SEED
from .server import Sandbox


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="salesforce-sandbox",
        description="A local HTTP emulator of Salesforce (OAuth, describe, SOQL, Bulk API 2.0).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument("--seed", default=str(DEMO_SEED),
                        help="seed JSON file (org credentials, fields, records); default: the "
                        "bundled demo org")
    parser.add_argument("--certfile", help="PEM certificate: serve https")
    parser.add_argument("--keyfile", help="PEM private key for --certfile")
    parser.add_argument("--token-ttl", type=float, default=None,
                        help="seconds an access token lives (default: seed or 7200)")
    parser.add_argument("--job-polls", type=int, default=0,
                        help="job-info polls before a job leaves InProgress (default 0)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                        help="seconds added to every answer, as a distant org's round trip "
                        "(default 0)")
    parser.add_argument("--rows-per-second", type=float, default=None, metavar="N",
                        help="ingest jobs are processed one after another at N rows per "
                        "second, InProgress meanwhile (default: at once)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.latency < 0:
        parser.error("--latency must be zero or more seconds")
    if args.rows_per_second is not None and args.rows_per_second <= 0:
        parser.error("--rows-per-second must be a positive number")
    try:
        sandbox = Sandbox(args.seed, token_ttl=args.token_ttl,
                          job_polls_to_complete=args.job_polls, certfile=args.certfile,
                          keyfile=args.keyfile, latency=args.latency,
                          rows_per_second=args.rows_per_second)
    except (OSError, ValueError) as exc:  # an unreadable or invalid seed: say why, no traceback
        print(f"salesforce-sandbox: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        sandbox.start(args.host, args.port)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        print(f"salesforce-sandbox: cannot listen on {args.host}:{args.port} "
              f"({exc.strerror or exc}): choose another --port (0: any free port)",
              file=sys.stderr)
        return 2
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(f"Salesforce sandbox listening on {sandbox.url}", flush=True)
    # One line a script can read (the credentials are the seed's; a sandbox holds no secrets).
    print(f"instance_url={sandbox.url} client_id={sandbox.client_id} "
          f"client_secret={sandbox.client_secret}", flush=True)
    print("ready", flush=True)
    try:
        stop.wait()
    finally:
        sandbox.stop()
    print("stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
