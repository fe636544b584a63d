"""Matching one batch: REST queries a few at a time, or Bulk API 2.0 query jobs.

The target matches a batch's people with REST SOQL queries, as many ids per query as the
16 KB URI limit allows, four at a time. A Bulk API 2.0 query job takes the SOQL in a POST
body (up to 100,000 characters, so about five times more ids), but needs at least three round
trips one after another (create, a poll that finds it complete, the results) and answers in
CSV. This measures both against the sandbox with the same latency on every answer, matching
the same ids, and prints wall time and data calls per batch.

The sandbox completes a query job at its first poll; a real org queues query jobs and takes
seconds for each, so the query-job figures are a lower bound.

    python benchmarks/match_strategies.py [--ids 10000] [--latency 0.15] [--org-size 100000]
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from run import CLIENT_ID, CLIENT_SECRET, WALL_MAPPINGS, Dataset, lead_for, start_sandbox
from salesforce_sandbox import Sandbox

from target_salesforce_consent.pipeline import MATCH_CONCURRENCY, MatchPool
from target_salesforce_consent.salesforce.client import SalesforceClient
from target_salesforce_consent.salesforce.soql import (
    MAX_STATEMENT_CHARS,
    MatchQueryBuilder,
    quote,
)

SELECT = ["Id", "Email", "IsConverted", "Didomi_Consent_Updated__c",
          *sorted({m["id"] for m in WALL_MAPPINGS})]  # fmt: skip


def rest_match(client: SalesforceClient, emails: Sequence[str]) -> int:
    """Today's way: URI-bounded REST queries, MATCH_CONCURRENCY at a time."""
    builder = MatchQueryBuilder("Lead", SELECT, "Email", url_prefix=client.data_path("query"))
    pool = MatchPool(lambda soql: list(client.query_all(soql)))
    try:
        return sum(len(answer) for answer in pool.fetch_all(list(builder.queries(emails))))
    finally:
        pool.close()


def query_job_statements(emails: Sequence[str]) -> list[str]:
    """SELECT ... WHERE Email IN (...) statements of at most 100,000 characters."""
    head = f"SELECT {', '.join(SELECT)} FROM Lead WHERE Email IN ("
    statements: list[str] = []
    chunk: list[str] = []
    size = len(head) + 1
    for email in emails:
        literal = quote(email)
        if chunk and size + len(literal) + 1 > MAX_STATEMENT_CHARS:
            statements.append(head + ",".join(chunk) + ")")
            chunk, size = [], len(head) + 1
        chunk.append(literal)
        size += len(literal) + 1
    if chunk:
        statements.append(head + ",".join(chunk) + ")")
    return statements


def run_query_job(client: SalesforceClient, soql: str) -> int:
    """Create, poll until complete (at once, then backing off from 0.5 s), read every page."""
    job = client.request("POST", "jobs/query", json={"operation": "query", "query": soql}).json()
    delay = 0.5
    while True:
        state = client.get_json(f"jobs/query/{job['id']}").get("state")
        if state == "JobComplete":
            break
        if state in ("Failed", "Aborted"):
            raise RuntimeError(f"query job {job['id']} {state}")
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)
    rows = 0
    locator: str | None = None
    while True:
        params = {"locator": locator} if locator else None
        page = client.request("GET", f"jobs/query/{job['id']}/results", params=params,
                              headers={"Accept": "text/csv"})  # fmt: skip
        rows += sum(1 for _ in csv.DictReader(io.StringIO(page.text)))
        locator = page.headers.get("Sforce-Locator")
        if not locator or locator == "null":
            return rows


def query_job_match(client: SalesforceClient, emails: Sequence[str]) -> int:
    statements = query_job_statements(emails)
    with ThreadPoolExecutor(MATCH_CONCURRENCY) as pool:
        return sum(pool.map(lambda soql: run_query_job(client, soql), statements))


def measure(sandbox: Sandbox, client: SalesforceClient, emails: Sequence[str],
            way: Callable[[SalesforceClient, Sequence[str]], int]) -> tuple[float, int, int]:
    before = sum(sandbox.api_calls().values())
    started = time.perf_counter()
    found = way(client, emails)
    wall = time.perf_counter() - started
    return wall, sum(sandbox.api_calls().values()) - before, found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=10_000, help="people in the batch")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per answer")
    parser.add_argument("--org-size", type=int, default=100_000, help="Leads in the org")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each way")
    args = parser.parse_args(argv)

    rng = random.Random(7)
    emails = [f"person{i:07d}.{rng.randrange(10**6):06d}@example.com" for i in range(args.ids)]
    # Seven in ten people have a Lead; the rest of the org is nobody in the batch.
    leads = [lead_for(rng, e, i, f"P{i}") for i, e in enumerate(emails) if i % 10 < 7]
    dataset = Dataset(len(emails), leads, Counter())
    sandbox = start_sandbox(dataset, max(0, args.org_size - len(leads)), latency=args.latency)
    try:
        client = SalesforceClient(sandbox.url, CLIENT_ID, CLIENT_SECRET)
        client.authenticate()
        results: dict[str, list[tuple[float, int, int]]] = {"REST": [], "query jobs": []}
        for _ in range(args.repeat):
            results["REST"].append(measure(sandbox, client, emails, rest_match))
            results["query jobs"].append(measure(sandbox, client, emails, query_job_match))
        client.close()
    finally:
        sandbox.stop()

    print(f"{args.ids:,} people, {len(leads):,} with a Lead, {args.org_size:,} Leads in the org, "
          f"{args.latency * 1000:.0f} ms per answer, {MATCH_CONCURRENCY} calls at a time")
    print("| way | wall s (median) | data calls | records found |")
    print("|---|---:|---:|---:|")
    for way, runs in results.items():
        walls = [wall for wall, _, _ in runs]
        print(f"| {way} | {statistics.median(walls):.2f} | {runs[0][1]} | {runs[0][2]:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
