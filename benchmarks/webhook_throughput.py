"""Throughput of didomi-webhook-receiver with the SQLite folder spool.

    python benchmarks/webhook_throughput.py [--webhooks 10000] [--connections 32]

Starts the receiver (a subprocess) on a fresh spool, posts N distinct webhooks as fast as the
client can over keep-alive connections, and prints webhooks acknowledged per second (each 2xx
sent only after the webhook was committed to SQLite with synchronous=FULL), the receiver's CPU
seconds, and a check that the spool holds every acknowledged webhook. The client runs on the
same machine and takes part of its CPU.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from webhook_load import Client, ReceiverProcess, encode, free_port, webhook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        receiver = ReceiverProcess(spool, free_port()).start()
        try:
            client = Client(receiver.url, receiver.token(), args.connections)
            bodies = [encode(webhook(f"person{i}@example.com", i % 2 == 0,
                                     "2025-05-01T10:00:00.000Z", i))
                      for i in range(args.webhooks)]
            client.send(bodies[:200])  # warm-up (connections, first transactions)
            cpu_before = receiver.cpu_seconds()
            start = time.monotonic()
            results = client.send(bodies[200:])
            took = time.monotonic() - start
            cpu = receiver.cpu_seconds() - cpu_before
        finally:
            receiver.terminate()
        acked = [r for r in results if 200 <= r.status < 300]
        conn = sqlite3.connect(spool / "webhooks.sqlite3")
        stored = conn.execute("SELECT count(*) FROM webhooks").fetchone()[0]
        conn.close()
    print(f"webhooks sent            {len(results)} over {args.connections} connections")
    print(f"acknowledged (2xx)       {len(acked)}")
    print(f"wall time                {took:.2f} s")
    print(f"throughput               {len(acked) / took:.0f} webhooks/s")
    print(f"receiver CPU             {cpu:.2f} s ({cpu / took * 100:.0f}% of one core; "
          f"{len(acked) / cpu:.0f} webhooks per CPU second)")
    print(f"rows in the spool        {stored} (warm-up included: {len(acked) + 200} expected)")


if __name__ == "__main__":
    main()
