"""Latency from the receiver's 2xx to the value in the sandbox's Lead, at a steady rate.

    python benchmarks/webhook_latency.py [--rate 50] [--seconds 300] [--leads 1000]
                                         [--max-latency 2] [--poll-interval 0.5]

The near-real-time pipeline as it runs in production, as processes: didomi-webhook-receiver
(SQLite spool), ``tap-didomi`` with ``webhook_spool`` and ``follow``, piped into
``target-salesforce-consent`` with ``max_latency_seconds``, against the sandbox (in this
process; its ingest jobs complete at once, where a real org takes its own processing time).
Webhooks go out at ``--rate`` per second, each for one of ``--leads`` Leads in turn, each with
its own consent timestamp (``Didomi_Consent_Updated__c`` is the consent timestamp field); a
watcher reads the Leads every 50 ms and notes when each webhook's timestamp appears. Prints
p50/p90/p99/max of (value visible in the Lead) - (2xx received by the sender).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from salesforce_sandbox import Sandbox
from webhook_load import (
    CUSTOM_FIELDS,
    Client,
    ReceiverProcess,
    drain,
    encode,
    free_port,
    percentile,
    stamp,
    webhook,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--max-latency", type=float, default=2.0)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args()

    count = int(args.rate * args.seconds)
    emails = [f"person{i:05d}@example.com" for i in range(args.leads)]
    seed = {"org": {"client_id": "bench-id", "client_secret": "bench-secret-value"},
            "objects": {"Lead": {"custom_fields": CUSTOM_FIELDS, "records": [
                {"LastName": f"Lead{i}", "Company": "Acme", "Email": e,
                 "Didomi_Newsletter__c": False}
                for i, e in enumerate(emails)]}}}
    sandbox = Sandbox(seed=seed, job_polls_to_complete=0).start()
    expected: dict[str, int] = {}  # consent timestamp -> webhook index
    for i in range(count):
        expected[stamp(i)] = i
    acked: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            now = time.monotonic()
            for lead in sandbox.records("Lead"):
                index = expected.get(str(lead.get("Didomi_Consent_Updated__c") or "")[:23] + "Z")
                if index is not None and index not in seen:
                    seen[index] = now
            time.sleep(0.05)

    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        receiver = ReceiverProcess(spool, free_port()).start()
        tap_config, target_config = Path(tmp) / "tap.json", Path(tmp) / "target.json"
        tap_config.write_text(json.dumps({"webhook_spool": str(spool), "follow": True,
                                          "poll_interval_seconds": args.poll_interval}))
        target_config.write_text(json.dumps({
            "instance_url": sandbox.url, "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret, "salesforce_object": "Lead",
            "mappings": [{"id": "Didomi_Newsletter__c",
                          "value": "purposes.newsletter-Lq3Vx8Rw.enabled"}],
            "consent_timestamp_field": "Didomi_Consent_Updated__c",
            "max_latency_seconds": args.max_latency}))
        tap = subprocess.Popen([sys.executable, "-m", "tap_didomi", "--config", str(tap_config)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
        target = subprocess.Popen([sys.executable, "-m", "target_salesforce_consent",
                                   "--config", str(target_config)], stdin=tap.stdout,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        drain(target.stdout)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            time.sleep(3)  # both processes started and the tap reading
            client = Client(receiver.url, receiver.token(), connections=8)
            bodies: list[bytes] = []
            for i in range(count):
                # Each visit to a Lead flips its value: an unchanged one would not be written.
                flip = (i // len(emails)) % 2 == 0
                body: dict[str, Any] = webhook(emails[i % len(emails)], flip, stamp(i), i)
                bodies.append(encode(body))
            start = time.monotonic()
            results = client.send(bodies, rate=args.rate,
                                  on_ack=lambda index, at: acked.__setitem__(index, at))
            sent_for = time.monotonic() - start
            deadline = time.monotonic() + 60
            while len(seen) < len(acked) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop.set()
            for proc in (tap, target):
                proc.kill()
                proc.wait(30)
            receiver.terminate()
            sandbox.stop()
    latencies = [seen[i] - acked[i] for i in acked if i in seen]
    missing = [i for i in acked if i not in seen]
    print(f"webhooks            {len(results)} at {args.rate:.0f}/s for {sent_for:.0f} s "
          f"({len(acked)} acknowledged); {args.leads} Leads")
    print(f"settings            max_latency_seconds {args.max_latency}, "
          f"poll_interval_seconds {args.poll_interval}")
    print(f"latency 2xx->Lead   p50 {percentile(latencies, 0.5):.2f} s, "
          f"p90 {percentile(latencies, 0.9):.2f} s, p99 {percentile(latencies, 0.99):.2f} s, "
          f"max {max(latencies):.2f} s")
    print(f"never seen          {len(missing)}")


if __name__ == "__main__":
    main()
