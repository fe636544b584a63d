"""Durability: webhooks sent with retries while the receiver is killed with SIGKILL, again
and again; then everything acknowledged must reach Salesforce, and nothing twice.

    python benchmarks/webhook_durability.py [--webhooks 20000] [--leads 2000]
                                            [--min-kills 20] [--rate 400]

The sender behaves as Didomi does: a webhook that gets no 2xx (refused connection, reset,
timeout) is sent again until one comes. A killer sends SIGKILL to the receiver at random
moments (every 0.3 to 1.5 s) and starts it again on the same port and spool, until the sender
is done and at least ``--min-kills`` kills happened. Then:

1. every acknowledged webhook is in the spool (and the spool holds each webhook once);
2. ``tap-didomi`` (``webhook_spool``) piped into ``target-salesforce-consent`` against the
   sandbox emits and reports each stored webhook exactly once;
3. each Lead holds the newest acknowledged choice (value and consent timestamp).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from salesforce_sandbox import Sandbox
from webhook_load import (
    CUSTOM_FIELDS,
    Client,
    ReceiverProcess,
    encode,
    free_port,
    stamp,
    webhook,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=20_000)
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--min-kills", type=int, default=20)
    parser.add_argument("--rate", type=float, default=400.0,
                        help="webhooks per second offered (first attempts)")
    args = parser.parse_args()

    emails = [f"person{i:05d}@example.com" for i in range(args.leads)]
    values = [(i // args.leads) % 2 == 0 for i in range(args.webhooks)]
    bodies = [encode(webhook(emails[i % args.leads], values[i], stamp(i), i))
              for i in range(args.webhooks)]
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        receiver = ReceiverProcess(spool, free_port()).start()
        token = receiver.token()
        done = threading.Event()
        kills = 0

        def killer() -> None:
            nonlocal kills
            rng = random.Random(7)
            while not done.is_set() or kills < args.min_kills:
                time.sleep(rng.uniform(0.3, 1.5))
                receiver.kill()
                kills += 1
                receiver.start()

        thread = threading.Thread(target=killer, daemon=True)
        start = time.monotonic()
        thread.start()
        results = Client(receiver.url, token, connections=32).send(bodies, rate=args.rate,
                                                                   retry=True)
        done.set()
        thread.join()
        took = time.monotonic() - start
        receiver.terminate()
        acked = {r.index for r in results if r.acked_at}
        retried = sum(r.attempts - 1 for r in results)

        conn = sqlite3.connect(spool / "webhooks.sqlite3")
        rows = conn.execute("SELECT body FROM webhooks ORDER BY id").fetchall()
        conn.close()
        stored = Counter(json.loads(body)["parameters"]["source"]["id"] for (body,) in rows)
        stored_index = {int(source.removeprefix("evt-")) for source in stored}
        lost = acked - stored_index
        if lost:
            problems.append(f"{len(lost)} acknowledged webhook(s) are not in the spool")
        if any(n > 1 for n in stored.values()):
            problems.append("the spool holds a webhook twice")

        last_of = {emails[i % args.leads]: i for i in range(args.webhooks)}
        seed = {"org": {"client_id": "bench-id", "client_secret": "bench-secret-value"},
                "objects": {"Lead": {"custom_fields": CUSTOM_FIELDS, "records": [
                    # Each Lead starts with the opposite of its last choice: it must be written.
                    {"LastName": f"Lead{i}", "Company": "Acme", "Email": e,
                     "Didomi_Newsletter__c": not values[last_of[e]]}
                    for i, e in enumerate(emails)]}}}
        with Sandbox(seed=seed, job_polls_to_complete=0) as sandbox:
            tap_config, target_config = Path(tmp) / "tap.json", Path(tmp) / "target.json"
            report = Path(tmp) / "report.jsonl"
            tap_config.write_text(json.dumps({"webhook_spool": str(spool)}))
            target_config.write_text(json.dumps({
                "instance_url": sandbox.url, "client_id": sandbox.client_id,
                "client_secret": sandbox.client_secret, "salesforce_object": "Lead",
                "mappings": [{"id": "Didomi_Newsletter__c",
                              "value": "purposes.newsletter-Lq3Vx8Rw.enabled"}],
                "consent_timestamp_field": "Didomi_Consent_Updated__c",
                "report_path": str(report)}))
            tap = subprocess.Popen([sys.executable, "-m", "tap_didomi", "--config",
                                    str(tap_config)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            target = subprocess.run([sys.executable, "-m", "target_salesforce_consent",
                                     "--config", str(target_config)], stdin=tap.stdout,
                                    capture_output=True, text=True, check=False)
            tap.wait(60)
            if tap.returncode or target.returncode:
                problems.append(f"tap exit {tap.returncode}, target exit {target.returncode}: "
                                f"{target.stderr[-2000:]}")
            lines = [json.loads(line) for line in report.read_text().splitlines() if line]
            reported = Counter(line["timestamp"] for line in lines)
            outcomes = Counter(line["outcome"] for line in lines)
            if sorted(reported) != sorted(stamp(i) for i in stored_index):
                problems.append("the report does not list exactly the stored webhooks")
            if any(n > 1 for n in reported.values()):
                problems.append("a webhook was reported (applied) twice")
            if outcomes.get("failed"):
                problems.append(f"{outcomes['failed']} record(s) failed")
            newest: dict[str, int] = {}
            for i in sorted(stored_index):
                newest[emails[i % args.leads]] = i
            wrong = 0
            for lead in sandbox.records("Lead"):
                last = newest.get(lead["Email"])
                if last is None:
                    continue
                if (str(lead.get("Didomi_Consent_Updated__c"))[:23] != stamp(last)[:23]
                        or lead.get("Didomi_Newsletter__c") is not values[last]):
                    wrong += 1
            if wrong:
                problems.append(f"{wrong} Lead(s) do not hold their newest acknowledged choice")

    print(f"webhooks            {args.webhooks} for {args.leads} Leads, offered at "
          f"{args.rate:.0f}/s, sent in {took:.0f} s")
    print(f"SIGKILLs            {kills} (receiver restarted on the same port and spool)")
    print(f"acknowledged        {len(acked)} (retries after a failed attempt: {retried})")
    print(f"stored in the spool {len(stored_index)} (acknowledged ones missing: {len(lost)})")
    print(f"report lines        {len(lines)}: " + ", ".join(f"{k} {v}" for k, v in
                                                             sorted(outcomes.items())))
    print("result              " + ("OK: nothing acknowledged lost, nothing applied twice"
                                    if not problems else "FAILED: " + "; ".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
