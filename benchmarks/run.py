"""Performance benchmark of target-salesforce-consent against the sandbox.

    python benchmarks/run.py [--records N ...] [--batch-size-rows B] [--profile out.prof]

For each N it generates a Singer input of N Didomi records (user- and event-shaped, v2 values,
a few v1 events with preferences, matched and unmatched people, one person repeated through
the stream, a shared address matching two Leads, a few filtered and anonymous records), starts
the sandbox in this process seeded with the matching Leads, and runs as subprocesses, on the
same input file:

* the real target: ``python -m target_salesforce_consent.target --config cfg.json < input``;
* a no-op singer-sdk target (``benchmarks/noop_target.py``) that discards the records.

It measures each child's user+system CPU seconds and peak RSS (``os.wait4``), the wall time,
and the data API calls the sandbox counted during the target's run, by kind (``token`` is not a
data call). The sandbox runs in this process, so its CPU is not in the target's figures.
The table is printed and written to ``benchmarks/results.md``.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import importlib.util
import json
import os
import platform
import pstats
import random
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from salesforce_sandbox import Sandbox
from tap_didomi.schemas import EVENT_SCHEMA, USER_SCHEMA

HERE = Path(__file__).resolve().parent
NOOP_TARGET = HERE / "noop_target.py"
PEAK_RSS = HERE / "peak_rss.py"
DEFAULT_RESULTS = HERE / "results.md"
# The sandbox indexes the match field, so large sizes run in minutes on 2 cores.
DEFAULT_SIZES = (1_000, 10_000, 100_000)
PACKAGE = "target_salesforce_consent"

MARKETING = "marketing-9HmMn6Vt"
NEWSLETTER = "newsletter-Lq3Vx8Rw"
TOPICS_KEY = "topics-CFWKNVJV"
TOPIC_IDS = {"dK7rBBXk": "News", "Ab12Cd34": "Offers", "Zz9Yy8Xx": "Events"}

CUSTOM_FIELDS: list[dict[str, Any]] = [
    {"name": "Didomi_Newsletter__c", "type": "boolean", "label": "Newsletter (Didomi)"},
    {"name": "Didomi_SMS_Optin__c", "type": "boolean", "label": "Newsletter by SMS (Didomi)"},
    {
        "name": "Didomi_Topics__c",
        "type": "multipicklist",
        "label": "Marketing topics (Didomi)",
        "picklistValues": list(TOPIC_IDS.values()),
        "restrictedPicklist": True,
    },
    {"name": "Didomi_Consent_Updated__c", "type": "datetime", "label": "Consent updated"},
]

MAPPINGS: list[dict[str, Any]] = [
    {"id": "HasOptedOutOfEmail", "value": f"purposes.{MARKETING}.enabled", "invert": True},
    {"id": "Didomi_Newsletter__c", "value": f"purposes.{NEWSLETTER}.enabled"},
    {
        "id": "Didomi_SMS_Optin__c",
        "value": f"purposes.{NEWSLETTER}.preferences.digest.channels.sms.enabled",
    },
    {
        "id": "Didomi_Topics__c",
        "value": f"purposes.{MARKETING}.values.{TOPICS_KEY}",
        "value_map": TOPIC_IDS,
    },
]

# The wall-time mode writes ten fields, as a typical consent integration does.
WALL_FIELDS: list[dict[str, Any]] = [
    {"name": "Didomi_Analytics__c", "type": "boolean", "label": "Analytics (Didomi)"},
    {"name": "Didomi_Marketing_LI__c", "type": "boolean", "label": "Marketing LI (Didomi)"},
    *({"name": f"Didomi_Topic_{name}__c", "type": "boolean", "label": f"Topic {name}"}
      for name in TOPIC_IDS.values()),
    {"name": "Didomi_Segment__c", "type": "string", "length": 16, "label": "Segment"},
]
WALL_MAPPINGS: list[dict[str, Any]] = [
    *MAPPINGS,
    {"id": "Didomi_Analytics__c", "value": "purposes.analytics-7Ghq2Lp0.enabled"},
    {"id": "Didomi_Marketing_LI__c", "value": f"purposes.{MARKETING}.enabled_li"},
    *({"id": f"Didomi_Topic_{name}__c", "value": f"purposes.{MARKETING}.values.{TOPICS_KEY}.{tid}"}
      for tid, name in TOPIC_IDS.items()),
    {"id": "Didomi_Segment__c", "value": "metadata.crm_segment"},
]

CLIENT_ID = "bench-client-id"
CLIENT_SECRET = "bench-client-secret-value"
REPEATED_PERSON = "repeat.customer@example.com"
SHARED_ADDRESS = "shared.inbox@example.com"  # two Leads hold it
EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


# ----------------------------------------------------------------------------- input data


def _ts(seconds: float) -> str:
    value = EPOCH + dt.timedelta(seconds=seconds)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _topics(rng: random.Random) -> str:
    chosen = [t for t in TOPIC_IDS if rng.random() < 0.4]
    return ",".join(chosen)


def _v2_purposes(rng: random.Random) -> list[dict[str, Any]]:
    purposes: list[dict[str, Any]] = [
        {
            "id": MARKETING,
            "enabled": rng.random() < 0.6,
            "enabled_li": None,
            "metadata": {},
            "values": {TOPICS_KEY: {"value": _topics(rng)}},
        },
        {"id": "analytics-7Ghq2Lp0", "enabled": rng.random() < 0.5, "metadata": {}},
    ]
    if rng.random() < 0.7:
        purposes.append(
            {"id": NEWSLETTER, "enabled": rng.random() < 0.5, "enabled_li": None, "metadata": {}}
        )
    return purposes


def user_record(
    rng: random.Random, ouid: str | None, seq: int, **extra: Any
) -> dict[str, Any]:
    """A user-shaped v2 record (``/consents/users``), as the reference's 2.3."""
    record: dict[str, Any] = {
        "id": f"u-{seq:08d}-{rng.getrandbits(32):08x}",
        "organization_id": "acme-corp",
        "organization_user_id": ouid,
        "organization_user_id_type": "email",
        "version": rng.randint(1, 9),
        "created_at": _ts(seq - 86_400 * 30),
        "updated_at": _ts(seq),
        "metadata": {"crm_segment": rng.choice(["b2b", "b2c"])},
        "country": None,
        "last_seen_country": rng.choice(["FR", "DE", "ES", "US"]),
        "consents": {
            "purposes": _v2_purposes(rng),
            "channels": [],
            "vendors": {"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []},
            "tcfcs": None,
        },
    }
    record.update(extra)
    return record


def event_record(
    rng: random.Random, ouid: str | None, seq: int, *, v1: bool = False, **extra: Any
) -> dict[str, Any]:
    """An event-shaped record (``/consents/events``): v2 (2.4) or v1 with preferences (2.5)."""
    if v1:
        purposes: list[dict[str, Any]] = [
            {
                "id": NEWSLETTER,
                "enabled": True,
                "preferences": [
                    {
                        "id": "digest",
                        "enabled": True,
                        "channels": [
                            {"id": "email", "enabled": True},
                            {"id": "sms", "enabled": rng.random() < 0.5},
                        ],
                    }
                ],
            }
        ]
    else:
        purposes = [
            {
                "id": MARKETING,
                "enabled": rng.random() < 0.6,
                "values": {TOPICS_KEY: {"value": _topics(rng)}},
            }
        ]
    record: dict[str, Any] = {
        "id": f"e-{seq:08d}-{rng.getrandbits(32):08x}",
        "organization_id": "acme-corp",
        "created_at": _ts(seq + 0.5),
        "updated_at": _ts(seq + 0.5),
        "status": "confirmed",
        "regulation": "gdpr",
        "metadata": {},
        "user": {
            "id": f"didomi-{(ouid or 'anon').split('@')[0]}",
            "organization_user_id": ouid,
            "metadata": {},
            "country": None,
            "last_seen_country": "FR",
        },
        "consents": {"purposes": purposes, "vendors": {"enabled": [], "disabled": []}},
        "proofs_id": [],
        "delegate": None,
    }
    record.update(extra)
    return record


def lead_for(rng: random.Random, email: str, seq: int, name: str) -> dict[str, Any]:
    """A Lead as a CRM holds it: some prior consent values, an older (rarely newer) stamp."""
    lead: dict[str, Any] = {
        "FirstName": "Bench",
        "LastName": name,
        "Company": rng.choice(["Acme", "Globex", "Initech", "Umbrella", "Hooli"]),
        "Email": email,
        "HasOptedOutOfEmail": rng.random() < 0.3,
    }
    if rng.random() < 0.5:
        lead["Didomi_Newsletter__c"] = rng.random() < 0.5
    if rng.random() < 0.3:
        lead["Didomi_Topics__c"] = rng.choice(list(TOPIC_IDS.values()))
    if rng.random() < 0.6:
        # 10% of the stamps are newer than the consent: those people are skipped_stale.
        offset = 86_400 * 365 if rng.random() < 0.1 else -86_400 * 7
        lead["Didomi_Consent_Updated__c"] = _ts(seq + offset)
    return lead


@dataclass
class Dataset:
    records: int
    leads: list[dict[str, Any]]
    kinds: Counter[str]


def write_input(path: Path, n: int, seed: int, schema: str = "tap") -> Dataset:
    """Write N Didomi records as Singer messages on two streams; return the Leads to seed."""
    rng = random.Random(seed)
    leads: list[dict[str, Any]] = [
        lead_for(rng, REPEATED_PERSON, 0, "Repeat"),
        lead_for(rng, SHARED_ADDRESS, 0, "SharedOne"),
        lead_for(rng, SHARED_ADDRESS.upper(), 0, "SharedTwo"),
    ]
    recent: deque[str] = deque(maxlen=200)  # matched people an event may refer back to
    kinds: Counter[str] = Counter()
    matched = unmatched = 0

    def message(stream: str, record: dict[str, Any]) -> str:
        return json.dumps({"type": "RECORD", "stream": stream, "record": record}) + "\n"

    with path.open("w", encoding="utf-8") as out:
        # The SCHEMA messages tap-didomi sends: with singer-sdk's defaults a target validates
        # every record against them (the no-op does; this target does not, see README).
        empty = {"type": "object", "properties": {}}
        for stream, tap_schema in (("users", USER_SCHEMA), ("events", EVENT_SCHEMA)):
            declared = {"type": "SCHEMA", "stream": stream, "key_properties": ["id"],
                        "schema": tap_schema if schema == "tap" else empty}  # fmt: skip
            out.write(json.dumps(declared) + "\n")
        for seq in range(n):
            roll = rng.random()
            if roll < 0.50 or not recent:
                matched += 1
                email = f"lead{matched:07d}@example.com"
                leads.append(lead_for(rng, email, seq, f"Lead{matched}"))
                recent.append(email)
                ouid = email.upper() if rng.random() < 0.1 else email  # matching ignores case
                out.write(message("users", user_record(rng, ouid, seq)))
                kinds["user matched"] += 1
            elif roll < 0.70:
                ouid = rng.choice(recent)
                v1 = rng.random() < 0.25
                out.write(message("events", event_record(rng, ouid, seq, v1=v1)))
                kinds["event matched (v1)" if v1 else "event matched"] += 1
            elif roll < 0.85:
                unmatched += 1
                ouid = f"prospect{unmatched:07d}@example.net"
                out.write(message("users", user_record(rng, ouid, seq)))
                kinds["user unmatched"] += 1
            elif roll < 0.90:
                unmatched += 1
                ouid = f"prospect{unmatched:07d}@example.net"
                out.write(message("events", event_record(rng, ouid, seq)))
                kinds["event unmatched"] += 1
            elif roll < 0.94:
                out.write(message("users", user_record(rng, REPEATED_PERSON, seq)))
                kinds["repeated person"] += 1
            elif roll < 0.95:
                out.write(message("events", event_record(rng, SHARED_ADDRESS, seq)))
                kinds["shared address (2 Leads)"] += 1
            elif roll < 0.97:
                ouid = rng.choice(recent)
                out.write(message("events", event_record(rng, ouid, seq, regulation="ccpa")))
                kinds["event other regulation"] += 1
            elif roll < 0.98:
                out.write(message("users", user_record(rng, None, seq)))
                kinds["user without organization_user_id"] += 1
            else:
                # A later user record of someone seen before: a duplicate across batches.
                ouid = rng.choice(recent)
                out.write(message("users", user_record(rng, ouid, seq)))
                kinds["user matched again"] += 1
            if (seq + 1) % 1000 == 0:
                state = {"bookmarks": {"users": {"replication_key_value": _ts(seq)}}}
                out.write(json.dumps({"type": "STATE", "value": state}) + "\n")
        state = {"bookmarks": {"users": {"replication_key_value": _ts(n)}}}
        out.write(json.dumps({"type": "STATE", "value": state}) + "\n")
    return Dataset(n, leads, kinds)


# ----------------------------------------------------------------------------- children


@dataclass
class ChildRun:
    cpu: float  # user + system seconds
    user: float
    system: float
    max_rss_mib: float
    wall: float
    exit_code: int
    stderr_path: Path


def run_child(
    argv: Sequence[str], stdin_path: Path, stdout_path: Path, stderr_path: Path, cwd: Path
) -> ChildRun:
    """Run one child to completion and take its own rusage from ``os.wait4``."""
    with (
        stdin_path.open("rb") as fin,
        stdout_path.open("wb") as fout,
        stderr_path.open("wb") as ferr,
    ):
        # peak_rss.py runs the program and records its own peak RSS (see its docstring)
        peak_file = stderr_path.with_suffix(".peak")
        wrapped = [argv[0], str(PEAK_RSS), str(peak_file), *argv[1:]]
        started = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdin=fin, stdout=fout, stderr=ferr, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped by wait4; keep Popen from waiting again
    peak_kib = float(peak_file.read_text()) if peak_file.exists() else usage.ru_maxrss
    return ChildRun(
        cpu=usage.ru_utime + usage.ru_stime,
        user=usage.ru_utime,
        system=usage.ru_stime,
        max_rss_mib=peak_kib / 1024,  # KiB on Linux
        wall=wall,
        exit_code=code,
        stderr_path=stderr_path,
    )


def fail(what: str, run: ChildRun, lines: int = 40) -> None:
    tail = run.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    sys.stderr.write(f"{what} exited with {run.exit_code}; last lines of its stderr:\n")
    sys.stderr.write("\n".join(f"  {line}" for line in tail) + "\n")
    sys.exit(1)


def start_sandbox(dataset: Dataset, org_leads: int = 0, *, latency: float = 0.0,
                  rows_per_second: float | None = None) -> Sandbox:
    seed = {
        "org": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "daily_api_limit": 10_000_000},
        "objects": {"Lead": {"custom_fields": CUSTOM_FIELDS + WALL_FIELDS, "records": []}},
    }
    sandbox = Sandbox(seed=seed, job_polls_to_complete=0, latency=latency,
                      rows_per_second=rows_per_second).start()
    sandbox.add_records("Lead", dataset.leads)
    rng = random.Random(org_leads)
    for start in range(0, org_leads, 50_000):  # the rest of the org: nobody in the input
        count = min(50_000, org_leads - start)
        sandbox.add_records(
            "Lead",
            [lead_for(rng, f"other{start + i:07d}@example.org", i, f"Other{start + i}")
             for i in range(count)],
        )  # fmt: skip
    return sandbox


def target_config(sandbox: Sandbox, batch_size_rows: int, report: Path | None,
                  upsert_mode: bool, mappings: list[dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    config: dict[str, Any] = {
        "instance_url": sandbox.url,
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "salesforce_object": "Lead",
        "upsert_mode": upsert_mode,
        "match_field": "Email",
        "mappings": mappings or MAPPINGS,
        "consent_timestamp_field": "Didomi_Consent_Updated__c",
        "insert_defaults": {"Company": "[not provided]", "LastName": "[not provided]"},
        "on_multiple_matches": "update_all",
        "regulations": ["gdpr"],
        "batch_size_rows": batch_size_rows,
    }
    if report is not None:
        config["report_path"] = str(report)
    return config


def data_calls(before: dict[str, int], after: dict[str, int],
               logged: Sequence[Any] = ()) -> Counter[str]:
    """Data calls by kind between two counts; the queries of `logged` (requests made in
    between) on a field history object are counted apart, as "history"."""
    calls: Counter[str] = Counter()
    for kind, count in after.items():
        delta = count - before.get(kind, 0)
        if kind != "token" and delta:
            calls[kind] = delta
    history = sum(1 for r in logged
                  if r.kind == "query" and "History" in urllib.parse.unquote_plus(r.query))
    if history:
        calls["query"] -= history
        calls["history"] = history
    return calls


# ----------------------------------------------------------------------------- one size


@dataclass
class Result:
    n: int
    target: ChildRun
    noop: ChildRun
    calls: Counter[str]
    outcomes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    leads: int = 0

    @property
    def ratio(self) -> float:
        return self.target.cpu / self.noop.cpu if self.noop.cpu else float("inf")


def bench_size(n: int, args: argparse.Namespace, work: Path) -> Result:
    size_dir = work / f"n{n}"
    size_dir.mkdir()
    input_path = size_dir / "input.singer"
    dataset = write_input(input_path, n, args.seed, args.schema)

    noop_cfg = size_dir / "noop.json"
    noop_cfg.write_text(
        # singer-sdk's defaults otherwise: what a user would run
        json.dumps({"batch_size_rows": args.batch_size_rows})
    )
    noop = run_child(
        [sys.executable, str(NOOP_TARGET), "--config", str(noop_cfg)],
        input_path, size_dir / "noop.out", size_dir / "noop.err", size_dir,
    )
    if noop.exit_code != 0:
        fail(f"no-op target (N={n})", noop)

    sandbox = start_sandbox(dataset, args.org_leads)
    try:
        report = None if args.no_report else size_dir / "report.jsonl"
        cfg = size_dir / "target.json"
        config = target_config(sandbox, args.batch_size_rows, report, args.upsert_mode)
        cfg.write_text(json.dumps(config))
        before = sandbox.api_calls()
        logged_before = len(sandbox.requests)
        target = run_child(
            [sys.executable, "-m", f"{PACKAGE}.target", "--config", str(cfg)],
            input_path, size_dir / "target.out", size_dir / "target.err", size_dir,
        )
        calls = data_calls(before, sandbox.api_calls(), sandbox.requests[logged_before:])
    finally:
        sandbox.stop()
    if target.exit_code != 0:
        fail(f"target (N={n})", target)

    outcomes: Counter[str] = Counter()
    if report is not None:
        with report.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    outcomes[json.loads(line)["outcome"]] += 1
        if sum(outcomes.values()) != n:
            sys.stderr.write(
                f"warning: N={n}: the report has {sum(outcomes.values())} line(s), expected {n}\n"
            )
    leads = len(dataset.leads) + args.org_leads
    return Result(n, target, noop, calls, outcomes, dataset.kinds, leads)


@dataclass
class WallResult:
    n: int
    leads: int
    target: ChildRun
    noop: ChildRun
    calls: Counter[str]
    rows_written: int
    jobs: int
    latency: float
    rate: float
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def floor(self) -> float:
        """The org's own time: its rows at its rate, plus eight round trips."""
        return self.rows_written / self.rate + 8 * self.latency

    @property
    def ratio(self) -> float:
        return self.target.wall / self.floor if self.floor else float("inf")

    @property
    def cpu_ratio(self) -> float:
        return self.target.cpu / self.noop.cpu if self.noop.cpu else float("inf")


def bench_wall(n: int, args: argparse.Namespace, work: Path) -> WallResult:
    """One run against a distant org: every answer delayed, ingest jobs at a rate."""
    size_dir = work / f"wall-n{n}"
    size_dir.mkdir()
    input_path = size_dir / "input.singer"
    dataset = write_input(input_path, n, args.seed, args.schema)
    noop_cfg = size_dir / "noop.json"
    noop_cfg.write_text(json.dumps({"batch_size_rows": args.batch_size_rows}))
    noop = run_child(
        [sys.executable, str(NOOP_TARGET), "--config", str(noop_cfg)],
        input_path, size_dir / "noop.out", size_dir / "noop.err", size_dir,
    )
    if noop.exit_code != 0:
        fail(f"no-op target (N={n})", noop)
    padding = max(0, args.org_size - len(dataset.leads))
    sandbox = start_sandbox(dataset, padding, latency=args.latency,
                            rows_per_second=args.rows_per_second)
    try:
        report = None if args.no_report else size_dir / "report.jsonl"
        cfg = size_dir / "target.json"
        cfg.write_text(json.dumps(target_config(sandbox, args.batch_size_rows, report,
                                                args.upsert_mode, WALL_MAPPINGS)))
        before = sandbox.api_calls()
        logged_before = len(sandbox.requests)
        jobs_before = {job["id"] for job in sandbox.ingest_jobs()}
        target = run_child(
            [sys.executable, "-m", f"{PACKAGE}.target", "--config", str(cfg)],
            input_path, size_dir / "target.out", size_dir / "target.err", size_dir,
        )
        calls = data_calls(before, sandbox.api_calls(), sandbox.requests[logged_before:])
        jobs = [job for job in sandbox.ingest_jobs() if job["id"] not in jobs_before]
    finally:
        sandbox.stop()
    if target.exit_code != 0:
        fail(f"target (N={n}, wall mode)", target)
    outcomes: Counter[str] = Counter()
    if report is not None:
        with report.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    outcomes[json.loads(line)["outcome"]] += 1
    rows = sum(int(job.get("numberRecordsProcessed") or 0) for job in jobs)
    return WallResult(n, len(dataset.leads) + padding, target, noop, calls, rows, len(jobs),
                      args.latency, args.rows_per_second, outcomes)


def wall_lines(results: Sequence[WallResult], args: argparse.Namespace) -> list[str]:
    kinds = call_kinds(results)
    head = ["N", "Leads in org", "rows written", "jobs", "wall s", "floor s", "wall / floor",
            *kinds, "data calls", "target CPU s", "no-op CPU s", "CPU ratio",
            "target peak RSS MiB"]
    lines = [
        "# target-salesforce-consent wall-time benchmark",
        "",
        "Generated by `python benchmarks/run.py --wall"
        + " --records" + "".join(f" {r.n}" for r in results)
        + f" --latency {args.latency:g} --rows-per-second {args.rows_per_second:g}"
        + f" --org-size {args.org_size} --batch-size-rows {args.batch_size_rows}"
        + (f" --schema {args.schema}" if args.schema != "empty" else "")
        + "`.",
        "",
        *machine_lines(),
        f"- the sandbox adds {args.latency * 1000:.0f} ms to every answer and processes ingest "
        f"jobs one after another at {args.rows_per_second:g} rows/s; {len(WALL_MAPPINGS)} "
        f"mappings; SCHEMA messages: {'tap-didomi' if args.schema == 'tap' else 'empty'}",
        "",
        "The floor is what the org itself needs: the rows written at its rate plus eight round "
        "trips. Wall time is the target process's, start-up included. CPU is user+system "
        "seconds, the target's modules byte-compiled first as an installed wheel's are; the "
        "no-op singer-sdk target reads the same input. The sandbox tracks the "
        "field history of the consent fields (every write leaves history rows, and the "
        "target reads the history of the records it is about to change: `history`).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---:|" * len(head),
    ]
    for r in results:
        cells = [f"{r.n:,}", f"{r.leads:,}", f"{r.rows_written:,}", str(r.jobs),
                 f"{r.target.wall:.1f}", f"{r.floor:.1f}", f"{r.ratio:.2f}",
                 *(str(r.calls.get(k, 0)) for k in kinds), str(sum(r.calls.values())),
                 f"{r.target.cpu:.2f}", f"{r.noop.cpu:.2f}", f"{r.cpu_ratio:.2f}",
                 f"{r.target.max_rss_mib:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        outcomes = "; ".join(f"{k}: {v}" for k, v in sorted(r.outcomes.items())) or "(none)"
        lines.append(f"- N={r.n:,} outcomes: {outcomes}")
    return lines


def profile_size(n: int, args: argparse.Namespace, work: Path, out: Path) -> list[str]:
    """One more run of the target under cProfile (not measured); a summary of its hot spots."""
    size_dir = work / f"profile-n{n}"
    size_dir.mkdir()
    input_path = size_dir / "input.singer"
    dataset = write_input(input_path, n, args.seed, args.schema)
    sandbox = start_sandbox(dataset, args.org_leads)
    try:
        cfg = size_dir / "target.json"
        report = None if args.no_report else size_dir / "report.jsonl"
        config = target_config(sandbox, args.batch_size_rows, report, args.upsert_mode)
        cfg.write_text(json.dumps(config))
        run = run_child(
            [sys.executable, "-m", "cProfile", "-o", str(out), "-m", f"{PACKAGE}.target",
             "--config", str(cfg)],
            input_path, size_dir / "target.out", size_dir / "target.err", size_dir,
        )
    finally:
        sandbox.stop()
    if run.exit_code != 0:
        fail(f"profiled target (N={n})", run)
    return summarise_profile(out, run.cpu)


def summarise_profile(path: Path, cpu: float, top: int = 25) -> list[str]:
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = max((ct for (_, _, _, ct, _) in raw.values()), default=0.0)
    rows: list[tuple[float, float, int, str]] = []
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in raw.items():
        if f"/{PACKAGE}/" in filename:
            short = filename.split(f"/{PACKAGE}/", 1)[1]
            rows.append((cumtime, tottime, ncalls, f"{short}:{line}({func})"))
    rows.sort(reverse=True)
    own: list[tuple[float, int, str]] = []
    for (filename, line, func), (_, ncalls, tottime, _, _) in raw.items():
        own.append((tottime, ncalls, f"{_short(filename)}:{line}({func})"))
    own.sort(reverse=True)
    waiting = sum(
        tottime for (_, _, func), (_, _, tottime, _, _) in raw.items() if "recv" in func
    )
    lines = [
        f"Profile: `{path.name}` (profiled run: {cpu:.2f} s CPU under cProfile, "
        f"{total:.2f} s in all, of which {waiting:.2f} s waiting for the sandbox's answers "
        "in socket recv; cumulative times below include that wait).",
        "",
        f"Top {top} functions of {PACKAGE} by cumulative time:",
        "",
        "| cumulative s | own s | calls | function |",
        "|---:|---:|---:|---|",
    ]
    lines += [f"| {c:.3f} | {t:.3f} | {k} | `{name}` |" for c, t, k, name in rows[:top]]
    lines += [
        "",
        "Top 15 functions overall by own time:",
        "",
        "| own s | calls | function |",
        "|---:|---:|---|",
    ]
    lines += [f"| {t:.3f} | {k} | `{name}` |" for t, k, name in own[:15]]
    return lines


def _short(filename: str) -> str:
    for marker in (f"/{PACKAGE}/", "/site-packages/", "/lib/python"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# ----------------------------------------------------------------------------- output


def call_kinds(results: Sequence[Result | WallResult]) -> list[str]:
    order = ["describe", "query", "history", "query_more", "ingest_create", "ingest_upload",
             "ingest_close", "ingest_info", "ingest_results"]
    seen = {kind for r in results for kind in r.calls}
    return [k for k in order if k in seen] + sorted(seen - set(order))


def table(results: Sequence[Result]) -> list[str]:
    kinds = call_kinds(results)
    head = ["N", "target CPU s", "no-op CPU s", "ratio", "target peak RSS MiB",
            "no-op peak RSS MiB", *(f"{k}" for k in kinds), "data calls", "target wall s",
            "no-op wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in results:
        cells = [
            f"{r.n:,}",
            f"{r.target.cpu:.2f}",
            f"{r.noop.cpu:.2f}",
            f"{r.ratio:.2f}",
            f"{r.target.max_rss_mib:.1f}",
            f"{r.noop.max_rss_mib:.1f}",
            *(str(r.calls.get(k, 0)) for k in kinds),
            str(sum(r.calls.values())),
            f"{r.target.wall:.2f}",
            f"{r.noop.wall:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def marginal_lines(results: Sequence[Result]) -> list[str]:
    """CPU per record between the smallest and each larger N (start-up cost cancels out)."""
    if len(results) < 2:
        return []
    base = results[0]
    lines = [
        f"Marginal CPU per 1,000 records above N={base.n:,} (start-up cancels out):",
        "",
        "| N | target ms / 1k records | no-op ms / 1k records | marginal ratio |",
        "|---:|---:|---:|---:|",
    ]
    for r in results[1:]:
        extra = (r.n - base.n) / 1000
        t = (r.target.cpu - base.target.cpu) / extra * 1000
        o = (r.noop.cpu - base.noop.cpu) / extra * 1000
        lines.append(f"| {r.n:,} | {t:.0f} | {o:.0f} | {t / o if o > 0 else float('inf'):.2f} |")
    return lines


def machine_lines() -> list[str]:
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, nproc {os.cpu_count()}, {platform.platform()}",
        f"- python: {platform.python_version()} ({sys.executable})",
    ]


def render(results: Sequence[Result], args: argparse.Namespace,
           profile: list[str] | None) -> str:
    out = [
        "# target-salesforce-consent benchmark",
        "",
        "Generated by `python benchmarks/run.py"
        + " --records" + "".join(f" {r.n}" for r in results)
        + f" --batch-size-rows {args.batch_size_rows}"
        + (" --upsert-mode" if args.upsert_mode else "")
        + (" --no-report" if args.no_report else "")
        + (f" --schema {args.schema}" if args.schema != "tap" else "")
        + (f" --org-leads {args.org_leads}" if args.org_leads else "")
        + (f" --profile {args.profile.name}" if args.profile else "")
        + "`.",
        "",
        *machine_lines(),
        f"- batch_size_rows: {args.batch_size_rows}; upsert_mode: {args.upsert_mode}; "
        f"report_path: {'off' if args.no_report else 'on'}; input seed: {args.seed}; "
        f"SCHEMA messages: {'tap-didomi' if args.schema == 'tap' else 'empty'}",
        "",
        "CPU is user+system seconds of the child process (`os.wait4`), including interpreter "
        "start-up and imports (the target's modules byte-compiled first, as an installed "
        "wheel's are); the ratio is target / no-op singer-sdk target on the same input. "
        "Peak RSS is the child's own high-water mark (`VmHWM`, see `peak_rss.py`). API calls "
        "are the sandbox's data calls during the target's run, by kind (token requests "
        "excluded; `describe` is the start-up check; `history` the field history queries: the "
        "sandbox tracks the history of the consent fields, so the target reads it for the "
        "records it is about to change). "
        "The sandbox runs in the benchmark process: its CPU is not in the target's.",
        "",
        *table(results),
        "",
        *marginal_lines(results),
        "",
        "Input mix and outcomes (from the run report):",
        "",
    ]
    for r in results:
        kinds = "; ".join(f"{k}: {v}" for k, v in sorted(r.kinds.items()))
        outcomes = "; ".join(f"{k}: {v}" for k, v in sorted(r.outcomes.items())) or "(no report)"
        out += [f"- N={r.n:,} ({r.leads:,} Leads seeded): input: {kinds}", f"  - outcomes: "
                f"{outcomes}"]
    if profile:
        out += ["", *profile]
    return "\n".join(out) + "\n"


def print_table(results: Sequence[Result], stream: TextIO) -> None:
    kinds = call_kinds(results)
    head = ["N", "tgt CPU s", "noop CPU s", "ratio", "tgt RSS MiB", "noop RSS MiB",
            "data calls by kind", "tgt wall s", "noop wall s"]
    rows = [head]
    for r in results:
        calls = " ".join(f"{k}={r.calls[k]}" for k in kinds if r.calls.get(k))
        rows.append([
            f"{r.n:,}", f"{r.target.cpu:.2f}", f"{r.noop.cpu:.2f}", f"{r.ratio:.2f}",
            f"{r.target.max_rss_mib:.1f}", f"{r.noop.max_rss_mib:.1f}",
            f"{calls} (total {sum(r.calls.values())})", f"{r.target.wall:.2f}",
            f"{r.noop.wall:.2f}",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        stream.write("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) + "\n")


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, nargs="+", action="extend", metavar="N",
                        help=f"input sizes (default: {' '.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--batch-size-rows", type=int, default=10_000, metavar="B",
                        help="batch_size_rows of both targets (default: 10000, the target's)")
    parser.add_argument("--schema", choices=("tap", "empty"), default=None,
                        help="SCHEMA messages of the input: tap-didomi's (default), which a "
                        "target validates against under singer-sdk's defaults, or an empty one")
    parser.add_argument("--org-leads", type=int, default=0, metavar="L",
                        help="also seed L Leads that no record matches (a bigger org)")
    parser.add_argument("--seed", type=int, default=20250314, help="input generator seed")
    parser.add_argument("--upsert-mode", action="store_true",
                        help="create Leads for unmatched people (default: report them)")
    parser.add_argument("--no-report", action="store_true",
                        help="run the target without report_path")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help=f"markdown output (default: {DEFAULT_RESULTS})")
    parser.add_argument("--profile", type=Path, metavar="OUT.prof",
                        help="also profile one target run at the largest N with cProfile")
    parser.add_argument("--wall", action="store_true",
                        help="wall-time mode: a distant org (--latency, --rows-per-second, "
                        "--org-size), ten mappings; reports wall time against the org's floor "
                        "(default N 100000, SCHEMA empty)")
    parser.add_argument("--latency", type=float, default=0.15, metavar="SECONDS",
                        help="wall mode: seconds added to every answer (default 0.15)")
    parser.add_argument("--rows-per-second", type=float, default=1000.0, metavar="R",
                        help="wall mode: ingest rows the org processes per second (default 1000)")
    parser.add_argument("--org-size", type=int, default=100_000, metavar="L",
                        help="wall mode: Leads in the org, matched ones included "
                        "(default 100000)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (inputs, configs, logs, reports)")
    args = parser.parse_args(argv)
    args.schema = args.schema or ("empty" if args.wall else "tap")
    args.records = sorted(set(args.records or ((100_000,) if args.wall else DEFAULT_SIZES)))
    if args.wall and args.results == DEFAULT_RESULTS:
        args.results = HERE / "wall_results.md"
    if any(n < 1 for n in args.records) or args.batch_size_rows < 1:
        parser.error("--records and --batch-size-rows must be positive")
    return args


def byte_compile_target() -> None:
    """Byte-compile the target's packages, as pip does when it installs a wheel.

    A checkout is imported from source; where ``PYTHONDONTWRITEBYTECODE`` is set (this
    project's machine sets it) Python would compile every module again on every run, about
    0.1 s of the target's CPU that an installed target never spends. The files go to the
    packages' ``__pycache__`` folders, which git ignores."""
    for name in (PACKAGE, "consent_pipelines_common"):
        spec = importlib.util.find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    byte_compile_target()
    if args.wall:
        return main_wall(args)
    results: list[Result] = []
    profile: list[str] | None = None
    with _workdir(args.keep) as work:
        for n in args.records:
            sys.stderr.write(f"N={n:,}: running ...\n")
            result = bench_size(n, args, work)
            sys.stderr.write(
                f"N={n:,}: target {result.target.cpu:.2f} s CPU, no-op {result.noop.cpu:.2f} s "
                f"(ratio {result.ratio:.2f})\n"
            )
            results.append(result)
        if args.profile:
            sys.stderr.write(f"profiling N={args.records[-1]:,} ...\n")
            profile = profile_size(args.records[-1], args, work, args.profile.resolve())
    print_table(results, sys.stdout)
    rss = [r.target.max_rss_mib for r in results]
    noop_rss = [r.noop.max_rss_mib for r in results]
    sys.stdout.write(
        f"\npeak RSS from N={results[0].n:,} to N={results[-1].n:,}: target "
        f"{rss[-1] - rss[0]:+.1f} MiB, no-op {noop_rss[-1] - noop_rss[0]:+.1f} MiB\n"
    )
    for line in marginal_lines(results):
        sys.stdout.write(line + "\n")
    if profile:
        sys.stdout.write("\n" + "\n".join(profile) + "\n")
    args.results.write_text(render(results, args, profile), encoding="utf-8")
    sys.stdout.write(f"\nwritten to {args.results}\n")
    return 0


def main_wall(args: argparse.Namespace) -> int:
    walls: list[WallResult] = []
    with _workdir(args.keep) as work:
        for n in args.records:
            sys.stderr.write(f"N={n:,}: wall-time run ...\n")
            r = bench_wall(n, args, work)
            sys.stderr.write(
                f"N={n:,}: wall {r.target.wall:.1f} s, floor {r.floor:.1f} s (ratio "
                f"{r.ratio:.2f}), {sum(r.calls.values())} data calls, CPU {r.target.cpu:.2f} s "
                f"(no-op {r.noop.cpu:.2f} s, ratio {r.cpu_ratio:.2f}), peak RSS "
                f"{r.target.max_rss_mib:.1f} MiB\n"
            )
            walls.append(r)
    text = "\n".join(wall_lines(walls, args)) + "\n"
    sys.stdout.write(text)
    args.results.write_text(text, encoding="utf-8")
    sys.stdout.write(f"\nwritten to {args.results}\n")
    return 0


class _workdir:
    """A temporary directory, or a kept one when ``keep`` (its path is printed)."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        if self.keep:
            path = Path(tempfile.mkdtemp(prefix="tsc-bench-"))
            sys.stderr.write(f"work directory: {path}\n")
            return path
        self._tmp = tempfile.TemporaryDirectory(prefix="tsc-bench-")
        return Path(self._tmp.name)

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
