#!/usr/bin/env python3
"""Run the whole job once against the bundled Salesforce sandbox and show what changed.

    python3 scripts/demo.py [--keep-running]

Sets up `.venv` (first run only), installs the Meltano plugins (when meltano.yml changed),
starts the sandbox seeded with sample Leads and Contacts, runs

    meltano run tap-didomi target-salesforce-consent tap-didomi target-salesforce-consent-contacts

on the bundled sample Didomi batch export (tap-didomi/tap_didomi/sample_export: gzipped
daily partitions with users/ and events/, read by tap-didomi), and prints which Salesforce
records changed (field: old -> new),
the records created, and the count per outcome from each loader's report. Then, near real
time: it starts didomi-webhook-receiver and `meltano run tap-didomi-webhooks
target-salesforce-consent`, posts one Didomi webhook that flips a Lead's newsletter consent,
and shows the Lead changing seconds after the receiver's 2xx (`--skip-webhooks` leaves this
out). Safe to run again: the sandbox starts from its seed every time and the runs ignore and
keep no Meltano state.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bootstrap

if __name__ == "__main__":
    _bootstrap.ensure_venv(__file__, sys.argv[1:])

# --- from here on we run inside .venv ------------------------------------------------------------
import argparse
import contextlib
import datetime as dt
import gzip
import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from typing import Any

from salesforce_sandbox import DEMO_SEED, Sandbox

ROOT = _bootstrap.ROOT
SEED = DEMO_SEED
INPUT = ROOT / "tap-didomi" / "tap_didomi" / "sample_export"
OUTPUT = ROOT / "output"
LOG = OUTPUT / "demo-meltano.log"

# (loader, Salesforce object, report file): the demo names its reports (meltano.yml's default
# keeps one report per run, report-{timestamp}.jsonl)
PIPELINES = [
    ("target-salesforce-consent", "Lead", OUTPUT / "report.jsonl"),
    ("target-salesforce-consent-contacts", "Contact", OUTPUT / "report-contacts.jsonl"),
]
OUTCOME_MEANING = {
    "updated": "written to the matching record(s)",
    "inserted": "record created (upsert_mode)",
    "skipped_unchanged": "Salesforce already holds these choices",
    "skipped_unmatched": "no record has this organization_user_id (upsert_mode is off)",
    "skipped_converted": "only a converted Lead matches: the Contact loader serves it",
    "skipped_multiple_matches": "several matches and on_multiple_matches: skip",
    "skipped_stale": "Salesforce holds this consent or a newer one (consent_timestamp_field)",
    "skipped_no_ouid": "no organization_user_id",
    "skipped_filtered": "pending_approval, deleted, or a regulation not in `regulations`",
    "failed": "Salesforce rejected the row (see the report's error)",
}
OUTCOME_ORDER = [
    "updated", "inserted", "would_update", "would_insert", "skipped_unchanged",
    "skipped_unmatched", "skipped_converted", "skipped_multiple_matches", "skipped_stale",
    "skipped_no_ouid", "skipped_filtered", "failed",
]
# Fields Salesforce maintains itself: not interesting in a diff.
SYSTEM_FIELDS = {"LastModifiedDate", "SystemModstamp", "LastModifiedById", "LastActivityDate",
                 "LastViewedDate", "LastReferencedDate", "attributes"}


def fmt(value: Any) -> str:
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def label(rec: dict[str, Any]) -> str:
    name = " ".join(str(rec[k]) for k in ("FirstName", "LastName") if rec.get(k))
    email = rec.get("Email")
    return f"{name} <{email}>" if email else name or str(rec.get("Id"))


def diff_records(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> tuple[list[tuple[dict[str, Any], list[tuple[str, Any, Any]]]], list[dict[str, Any]]]:
    old = {r["Id"]: r for r in before}
    changed, created = [], []
    for rec in after:
        prev = old.get(rec["Id"])
        if prev is None:
            created.append(rec)
            continue
        fields = sorted((set(prev) | set(rec)) - SYSTEM_FIELDS)
        changes = [(f, prev.get(f), rec.get(f)) for f in fields if prev.get(f) != rec.get(f)]
        if changes:
            changed.append((rec, changes))
    return changed, created


def read_report(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def print_section(loader: str, obj: str, report: Path, before: list[dict[str, Any]],
                  after: list[dict[str, Any]]) -> None:
    changed, created = diff_records(before, after)
    title = f"{obj}s  ({loader})"
    print()
    print(title)
    print("=" * len(title))
    print(f"Changed {obj}s: {len(changed)} of {len(before)}")
    for rec, changes in changed:
        print(f"  {label(rec)}  [{rec['Id']}]")
        width = max(len(f) for f, _, _ in changes)
        for field, a, b in changes:
            print(f"      {field:<{width}}  {fmt(a)} -> {fmt(b)}")
    print(f"Created {obj}s: {len(created) or 'none'}")
    for rec in created:
        print(f"  {label(rec)}  [{rec['Id']}]")
        for field in sorted(set(rec) - SYSTEM_FIELDS - {"Id"}):
            if rec.get(field) not in (None, "", False):
                print(f"      {field} = {fmt(rec[field])}")

    rows = read_report(report)
    rel = report.relative_to(ROOT) if report.is_relative_to(ROOT) else report
    print(f"Outcome per Didomi record  (report: {rel})")
    if not rows:
        print("  (no report lines)")
    for row in rows:
        who = row.get("organization_user_id") or "(no organization_user_id)"
        extra = f"  {row['error']}" if row.get("error") else ""
        print(f"  {who:<32} {row.get('outcome')}{extra}")
    counts = Counter(str(r.get("outcome")) for r in rows)
    print("Count per outcome")
    order = OUTCOME_ORDER + sorted(set(counts) - set(OUTCOME_ORDER))
    for outcome in order:
        if counts.get(outcome):
            meaning = OUTCOME_MEANING.get(outcome, "")
            print(f"  {outcome:<26} {counts[outcome]:>3}  {meaning}".rstrip())
    print(f"  {'total':<26} {sum(counts.values()):>3}")


WEBHOOK_LOG = OUTPUT / "demo-webhooks-meltano.log"
WEBHOOK_SPOOL = OUTPUT / "demo-webhooks"
NEWSLETTER = "newsletter-Lq3Vx8Rw"  # the purpose meltano.yml maps to Didomi_Newsletter__c


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process and its children (meltano's tap and target), then wait."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def near_real_time(meltano: Path, sb: Sandbox, env: dict[str, str]) -> int:
    """One webhook through the receiver and the following pipeline into a Lead."""
    import requests

    print()
    print("Near real time: a Didomi webhook reaches a Lead within seconds")
    lead = next(r for r in sb.records("Lead") if r.get("Email") and not r.get("IsConverted"))
    email, before = lead["Email"], bool(lead.get("Didomi_Newsletter__c"))
    secret = os.urandom(16).hex()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    if WEBHOOK_SPOOL.exists():
        for item in WEBHOOK_SPOOL.iterdir():
            item.unlink()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "tap_didomi.receiver", "--spool", str(WEBHOOK_SPOOL), "--port",
         str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "DIDOMI_WEBHOOK_CLIENT_ID": "demo-didomi",
             "DIDOMI_WEBHOOK_CLIENT_SECRET": secret})
    pipeline_env = {**env, "TAP_DIDOMI_WEBHOOKS_WEBHOOK_SPOOL": str(WEBHOOK_SPOOL),
                    "TARGET_SALESFORCE_CONSENT_REPORT_PATH": str(OUTPUT / "report-webhooks.jsonl")}
    cmd = [str(meltano), "--log-level=info", "run", "--no-state-update", "tap-didomi-webhooks",
           "target-salesforce-consent"]
    pipeline: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(300):
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        spool = WEBHOOK_SPOOL.relative_to(ROOT)
        print(f"  receiver didomi-webhook-receiver on {url} (spool {spool})")
        print("  running  meltano " + " ".join(cmd[2:]) + "  (a service: it follows the spool)",
              flush=True)
        with WEBHOOK_LOG.open("w", encoding="utf-8") as log:
            pipeline = subprocess.Popen(cmd, cwd=ROOT, env=pipeline_env,
                                        stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while "Beginning sync of 'webhooks'" not in WEBHOOK_LOG.read_text(errors="replace"):
            if pipeline.poll() is not None or time.monotonic() > deadline:
                print(f"  the pipeline did not start; see {WEBHOOK_LOG.relative_to(ROOT)}")
                return 1
            time.sleep(0.2)
        time.sleep(2)  # the target has checked its configuration against the org
        token = requests.post(url + "/oauth/token", auth=("demo-didomi", secret), timeout=10,
                              data={"grant_type": "client_credentials"}).json()["access_token"]
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        entity = {"id": "didomi-demo-user", "organization_user_id": email, "updated_at": now,
                  "created_at": "2024-01-01T00:00:00.000Z",
                  "consents": {"purposes": [{"id": NEWSLETTER, "enabled": not before}],
                               "vendors": {"enabled": [], "disabled": []}}}
        answer = requests.post(url + "/webhooks/didomi", timeout=10,
                               headers={"Authorization": f"Bearer {token}"},
                               json={"type": "user.updated", "parameters": {
                                   "source": {"id": "demo-event", "created_at": now},
                                   "new_entity": entity}})
        acked = time.monotonic()
        print(f"  webhook  user.updated for {email}: {NEWSLETTER} enabled={not before} "
              f"-> receiver answered {answer.status_code}")
        while time.monotonic() - acked < 60:
            current = next(r for r in sb.records("Lead") if r.get("Id") == lead["Id"])
            if bool(current.get("Didomi_Newsletter__c")) is not before:
                print(f"  Lead     {label(current)}: Didomi_Newsletter__c {fmt(before)} -> "
                      f"{fmt(not before)}, {time.monotonic() - acked:.1f} s after the 2xx")
                return 0
            time.sleep(0.1)
        print(f"  the Lead did not change within 60 s; see {WEBHOOK_LOG.relative_to(ROOT)}")
        return 1
    finally:
        if pipeline is not None:
            _stop(pipeline)
        receiver.terminate()
        receiver.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the sandbox up after the run (Ctrl-C to stop)")
    parser.add_argument("--skip-webhooks", action="store_true",
                        help="leave out the near-real-time part (receiver and webhook pipeline)")
    args = parser.parse_args()

    meltano = _bootstrap.meltano_executable()
    if meltano is None:
        print("meltano is not installed in .venv", file=sys.stderr)
        return 2
    try:
        _bootstrap.ensure_meltano_plugins(meltano)
    except RuntimeError as exc:
        print(f"[setup] {exc}", file=sys.stderr)
        return 2


    OUTPUT.mkdir(exist_ok=True)
    for _, _, report in PIPELINES:
        report.unlink(missing_ok=True)

    parts = sorted(INPUT.glob("export-id=*/date=*/*/*.json.gz"))
    n_input = sum(1 for part in parts
                  for line in gzip.decompress(part.read_bytes()).splitlines() if line.strip())
    n_partitions = len({part.parent.parent for part in parts})
    sb = Sandbox(seed=str(SEED)).start(host="127.0.0.1", port=0)
    try:
        before = {obj: sb.records(obj) for _, obj, _ in PIPELINES}
        print("target-salesforce-consent demo")
        print(f"  sandbox  {sb.url}  ({len(before['Lead'])} Leads, {len(before['Contact'])} "
              f"Contacts from {SEED.relative_to(ROOT)})")
        print(f"  input    {INPUT.relative_to(ROOT)}  (Didomi batch export: {n_input} "
              f"records in {len(parts)} gzipped files, {n_partitions} daily partitions)")
        cmd = [str(meltano), "--log-level=info", "run", "--full-refresh", "--no-state-update"]
        for loader, _, _ in PIPELINES:
            cmd += ["tap-didomi", loader]
        print("  running  meltano " + " ".join(cmd[2:]), flush=True)

        env = _bootstrap.meltano_env()
        for key in list(env):  # the demo always runs on the bundled data and the sandbox
            if key.startswith(("TAP_DIDOMI", "TAP_JSONL", "TARGET_SALESFORCE_CONSENT")):
                del env[key]
        env.update({
            "SALESFORCE_INSTANCE_URL": sb.url,
            "SALESFORCE_CLIENT_ID": sb.client_id,
            "SALESFORCE_CLIENT_SECRET": sb.client_secret,
            "TARGET_SALESFORCE_CONSENT_REPORT_PATH": str(PIPELINES[0][2]),
            "TARGET_SALESFORCE_CONSENT_CONTACTS_REPORT_PATH": str(PIPELINES[1][2]),
        })
        start = time.monotonic()
        with _bootstrap.meltano_project_lock(), LOG.open("w", encoding="utf-8") as log:
            rc = subprocess.call(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT)
        took = time.monotonic() - start
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"  meltano  {status} in {took:.1f} s; log: {LOG.relative_to(ROOT)}")

        for loader, obj, report in PIPELINES:
            print_section(loader, obj, report, before[obj], sb.records(obj))

        calls = sb.api_calls()
        if calls:
            print()
            per_kind = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
            print(f"Salesforce API calls: {per_kind}")

        if rc != 0:
            print()
            print(f"meltano run failed (exit {rc}); last lines of {LOG.relative_to(ROOT)}:")
            lines = LOG.read_text(encoding="utf-8", errors="replace").splitlines()
            for line in lines[-40:]:
                print("  " + line)
            return 1

        if not args.skip_webhooks:
            with _bootstrap.meltano_project_lock():
                if near_real_time(meltano, sb, env) != 0:
                    return 1

        if args.keep_running:
            print()
            print(f"Sandbox still running at {sb.url} (GET {sb.url}/__sandbox/records/Lead); "
                  "Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        sb.stop()


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
