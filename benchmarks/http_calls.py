"""CPU per HTTP call of the Salesforce client, against the sandbox on loopback.

    python benchmarks/http_calls.py [--calls 300] [--rounds 3] [--latency SECONDS]

Starts the sandbox in this process (its CPU is not counted), seeded with Leads, and runs a
child process that makes each kind of call the target makes, ``--calls`` times per round:

* ``match query``: a REST query of 520 addresses (a URL of about 14 KB, as the target's match
  queries), 10 of them in the org;
* ``match query, a '+' in each address``: the same with plus-addressed emails, whose ``+`` is
  sent percent-encoded;
* ``job poll``: a GET of one ingest job (a short URL, a small JSON answer);
* ``job create``: a POST of a small JSON body.

The child measures its own user+system CPU seconds (``resource.getrusage``) around each kind's
calls and prints CPU milliseconds per call, the lowest of ``--rounds`` rounds (the least
disturbed by other work on the machine). Connections are kept alive, as the target's are.

With ``--latency`` (the sandbox's: added to every answer, as a distant org's round trip) a call
takes several times the CPU it takes on an answer that comes at once: the process sleeps
between calls, and what a call runs (interpreter, requests, urllib3) is no longer in the
processor's caches when it wakes. The target's calls in wall mode cost that.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable

from salesforce_sandbox import Sandbox

CLIENT_ID = "3MVG9benchmark.http.calls"
CLIENT_SECRET = "http-calls-benchmark-secret"
ADDRESSES = 520
IN_ORG = 10


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(url: str, calls: int, rounds: int) -> dict[str, float]:
    """CPU ms per call of each kind, measured in this process."""
    from target_salesforce_consent.salesforce import SalesforceClient
    from target_salesforce_consent.salesforce.client import query_record_type
    from target_salesforce_consent.salesforce.soql import quote

    client = SalesforceClient(url, CLIENT_ID, CLIENT_SECRET, timeout=30.0)
    client.authenticate()
    record_type = query_record_type("Lead", ["Id", "Email", "HasOptedOutOfEmail"])

    def match_query(separator: str) -> Callable[[], object]:
        emails = ", ".join(quote(f"lead{separator}{i:07d}@example.com") for i in range(ADDRESSES))
        soql = f"SELECT Id, Email, HasOptedOutOfEmail FROM Lead WHERE Email IN ({emails})"
        return lambda: client.query_records(soql, record_type)

    job = {"object": "Lead", "operation": "update", "contentType": "CSV", "lineEnding": "LF"}
    job_id = client.request("POST", "jobs/ingest", json=job, expected=(200, 201)).json()["id"]
    kinds: dict[str, Callable[[], object]] = {
        "match query": match_query(""),
        "match query, a '+' in each address": match_query("+"),
        "job poll": lambda: client.get_json(f"jobs/ingest/{job_id}"),
        "job create": lambda: client.request("POST", "jobs/ingest", json=job,
                                             expected=(200, 201)),
    }  # fmt: skip
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, call in kinds.items():
            call()  # warm: imports, the connection
            start = _cpu()
            for _ in range(calls):
                call()
            per_call = (_cpu() - start) / calls * 1000
            best[name] = min(best.get(name, per_call), per_call)
    client.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls of each kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                        help="added by the sandbox to every answer")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.calls, args.rounds)))
        return
    leads = [
        {"LastName": f"Lead{i}", "Company": "Acme", "Email": f"lead{sep}{i:07d}@example.com"}
        for sep in ("", "+")
        for i in range(0, ADDRESSES, ADDRESSES // IN_ORG)
    ]
    seed = {
        "org": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "daily_api_limit": 10_000_000},
        "objects": {"Lead": {"records": leads}},
    }  # fmt: skip
    with Sandbox(seed=seed, job_polls_to_complete=0, latency=args.latency) as sandbox:
        result = subprocess.run(
            [sys.executable, __file__, "--child", sandbox.url, "--calls", str(args.calls),
             "--rounds", str(args.rounds)],
            check=True, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
    figures: dict[str, float] = json.loads(result.stdout)
    print(f"CPU ms per call, lowest of {args.rounds} rounds of {args.calls} calls, "
          f"{args.latency * 1000:g} ms of latency:")
    for name, ms in figures.items():
        print(f"  {name:<40} {ms:6.2f}")


if __name__ == "__main__":
    main()
