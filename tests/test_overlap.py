"""Overlapping stages against a distant org (the sandbox with latency and a processing rate).

A batch's ingest job runs while the next batch is read, merged and matched, and match queries
run a few at a time. These tests pin what overlapping must never change: one person's writes
land in batch order, nothing is written twice, STATE never runs ahead of a confirmed write,
every record gets exactly one outcome, and a failure in any stage stops the run cleanly.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.pipeline import MATCH_CONCURRENCY, MatchPool, conflicting_keys
from tests.conftest import SEED, FastTarget, base_config, newsletter, run_target, singer_lines, user

LATENCY = 0.02  # seconds added to every answer
RATE = 100  # ingest rows per second: a job of a few rows is in progress for tens of ms


@pytest.fixture
def distant() -> Iterator[Sandbox]:
    with Sandbox(seed=copy.deepcopy(SEED), latency=LATENCY, rows_per_second=RATE) as sb:
        yield sb


def stamp(second: int) -> str:
    return f"2024-06-18T16:40:{second:02d}.000Z"


def people(prefix: str, count: int, second: int, enabled: bool) -> list[dict[str, Any]]:
    return [user(f"{prefix}{i}@example.com", purposes=[newsletter(enabled)],
                 updated_at=stamp(second)) for i in range(count)]  # fmt: skip


def job_events(sb: Sandbox) -> list[tuple[str, str]]:
    """(kind, job id) of every ingest call, ("query", "") of every match query and
    ("history", "") of every field history query, in order."""
    events = []
    for req in sb.requests:
        if req.kind == "query":
            soql = urllib.parse.unquote_plus(req.query)
            events.append(("history" if "History" in soql else "query", ""))
        elif req.kind.startswith("ingest_"):
            parts = req.path.split("/jobs/ingest")[1].strip("/").split("/")
            events.append((req.kind, parts[0] if parts and parts[0] else ""))
    return events


def test_the_next_batch_is_matched_while_the_previous_job_runs(
    distant: Sandbox, tmp_path: Path
) -> None:
    records = people("first", 3, 1, True) + people("second", 3, 2, True)
    config = base_config(distant, tmp_path / "report.jsonl", upsert_mode=True, batch_size_rows=3,
                         insert_defaults={"LastName": "x", "Company": "y"})  # fmt: skip
    result = run_target(config, singer_lines(records, state={"s": 1}))
    assert result.error is None, result.stderr
    events = job_events(distant)
    first_job = next(job for kind, job in events if kind == "ingest_upload")
    done = max(i for i, (kind, job) in enumerate(events) if job == first_job)
    # Both batches' match queries were sent before the first job's last call.
    assert events[:done].count(("query", "")) == 2, "the second batch was matched afterwards"
    assert [line["outcome"] for line in result.report] == ["inserted"] * 6
    assert result.states == [{"s": 1}]


def test_match_queries_run_a_few_at_a_time(tmp_path: Path) -> None:
    # Long ids make many queries per batch (the URI-length limit), all answered with latency.
    waiting = 0
    most = 0
    lock = threading.Lock()

    def delay(seconds: float) -> None:
        nonlocal waiting, most
        with lock:
            waiting += 1
            most = max(most, waiting)
        time.sleep(seconds)
        with lock:
            waiting -= 1

    sb = Sandbox(seed=copy.deepcopy(SEED), latency=0.05)
    sb.delay = delay
    with sb:
        records = [user(f"{'x' * 200}.{i}@example.com", purposes=[newsletter(True)])
                   for i in range(400)]  # fmt: skip
        result = run_target(base_config(sb, tmp_path / "report.jsonl"), singer_lines(records))
        queries = sb.api_calls()["query"]
    assert result.error is None, result.stderr
    assert queries > MATCH_CONCURRENCY
    assert 2 <= most <= MATCH_CONCURRENCY


def test_one_persons_writes_land_in_batch_order_and_once(distant: Sandbox, tmp_path: Path) -> None:
    # jane changes her mind in every batch; john says the same thing twice; nobody is created
    # in the first batch and seen again in the next one, while that insert is still running.
    batches = [
        [user("jane@example.com", purposes=[newsletter(True)], updated_at=stamp(1)),
         user("john@example.com", purposes=[newsletter(True)], updated_at=stamp(1)),
         user("new@example.com", purposes=[newsletter(True)], updated_at=stamp(1))],
        [user("jane@example.com", purposes=[newsletter(False)], updated_at=stamp(2)),
         user("john@example.com", purposes=[newsletter(True)], updated_at=stamp(2)),
         user("new@example.com", purposes=[newsletter(False)], updated_at=stamp(2))],
        [user("jane@example.com", purposes=[newsletter(True)], updated_at=stamp(3)),
         user("other@example.com", purposes=[newsletter(True)], updated_at=stamp(3)),
         user("new@example.com", purposes=[newsletter(False)], updated_at=stamp(3))],
    ]  # fmt: skip
    config = base_config(distant, tmp_path / "report.jsonl", upsert_mode=True, batch_size_rows=3,
                         consent_timestamp_field="Didomi_Consent_Updated__c",
                         insert_defaults={"LastName": "x", "Company": "y"})  # fmt: skip
    result = run_target(config, singer_lines([r for b in batches for r in b], state={"s": 1}))
    assert result.error is None, result.stderr

    leads = {lead["Email"]: lead for lead in distant.records("Lead")}
    assert leads["jane@example.com"]["Didomi_Newsletter__c"] is True  # the newest choice
    assert leads["new@example.com"]["Didomi_Newsletter__c"] is False
    created = [lead for lead in distant.records("Lead") if lead["Email"] == "new@example.com"]
    assert len(created) == 1, "the person created by the first batch was created again"

    # A job that writes a record again is uploaded only once the job before it is complete;
    # jobs of different people may run side by side.
    events = job_events(distant)
    jobs = [job for kind, job in events if kind == "ingest_upload"]
    id_of = {lead["Email"].lower(): lead["Id"] for lead in distant.records("Lead")}
    written: dict[str, list[str]] = {}
    for job_id in jobs:
        rows = csv.DictReader(io.StringIO((distant.ingest.get(job_id).data or b"").decode()))
        for row in rows:
            written.setdefault(row.get("Id") or id_of[row["Email"].lower()], []).append(job_id)
    assert written[id_of["jane@example.com"]] and len(written[id_of["jane@example.com"]]) == 3
    assert len(written[id_of["new@example.com"]]) == 2
    for record_jobs in written.values():
        for earlier, later in itertools.pairwise(record_jobs):
            last_of_earlier = max(i for i, (_, job) in enumerate(events) if job == earlier)
            assert last_of_earlier < events.index(("ingest_upload", later))
    # Report: one line per record; john's repeat and new's unchanged repeat wrote nothing.
    outcomes = [(line["organization_user_id"], line["outcome"]) for line in result.report]
    assert outcomes == [
        ("jane@example.com", "updated"), ("john@example.com", "updated"),
        ("new@example.com", "inserted"),
        ("jane@example.com", "updated"), ("john@example.com", "skipped_unchanged"),
        ("new@example.com", "updated"),
        ("jane@example.com", "updated"), ("other@example.com", "inserted"),
        ("new@example.com", "skipped_unchanged"),
    ]  # fmt: skip


class StateWatcher(FastTarget):
    """Notes the org's jobs at the moment each STATE line reaches stdout."""

    sandbox: Sandbox
    seen: list[tuple[dict[str, Any], set[str], list[str]]]  # STATE, Leads, job states

    def _write_state_message(self, state: dict) -> None:
        original = sys.stdout
        watcher = self

        class Watching(io.StringIO):
            def write(self, text: str) -> int:
                sb = watcher.sandbox
                watcher.seen.append((
                    json.loads(text), {lead["Email"] for lead in sb.records("Lead")},
                    [job["state"] for job in sb.ingest_jobs()],
                ))  # fmt: skip
                return original.write(text)

        sys.stdout = Watching()
        try:
            super()._write_state_message(state)
        finally:
            sys.stdout = original


@pytest.mark.parametrize("drain_every_record", [False, True])
def test_state_never_runs_ahead_of_a_confirmed_write(
    distant: Sandbox, tmp_path: Path, drain_every_record: bool
) -> None:
    # The last batch's job is still running when the input ends; with the SDK's periodic full
    # drain (made immediate here), STATE is also written while batches are in flight.
    class Watcher(StateWatcher):
        _MAX_RECORD_AGE_IN_MINUTES = 0.0 if drain_every_record else 30.0

    Watcher.sandbox, Watcher.seen = distant, []
    records = people("person", 6, 1, True)
    lines = []
    for n, record in enumerate(records, start=1):
        lines.append(json.dumps({"type": "RECORD", "stream": "users", "record": record}))
        lines.append(json.dumps({"type": "STATE", "value": {"after": n}}))
    messages = singer_lines([]) + "\n".join(lines) + "\n"
    config = base_config(distant, tmp_path / "report.jsonl", upsert_mode=True, batch_size_rows=2,
                         insert_defaults={"LastName": "x", "Company": "y"})  # fmt: skip
    result = run_target(config, messages, target_class=Watcher)
    assert result.error is None, result.stderr
    assert result.states[-1] == {"after": 6}
    assert Watcher.seen, "no STATE was emitted"
    for state, leads, jobs in Watcher.seen:
        covered = {f"person{i}@example.com" for i in range(state["after"])}
        assert covered <= leads, f"STATE {state} covers records not yet in Salesforce"
        assert set(jobs) == {"JobComplete"}, jobs
    assert len(result.report) == 6


def test_a_failed_job_stops_the_run_before_its_people_are_written_again(
    distant: Sandbox, tmp_path: Path
) -> None:
    distant.fail_next_job("InvalidBatch : Field name not found : Didomi_Newsletter__c")
    # first0 comes back in the second batch: that write must wait for the first job, which
    # fails, so it is never sent. second0 is nobody the first job writes: its job ran beside.
    records = [
        *people("first", 2, 1, True),
        user("first0@example.com", purposes=[newsletter(False)], updated_at=stamp(2)),
        user("second0@example.com", purposes=[newsletter(True)], updated_at=stamp(2)),
    ]
    config = base_config(distant, tmp_path / "report.jsonl", upsert_mode=True, batch_size_rows=2,
                         insert_defaults={"LastName": "x", "Company": "y"})  # fmt: skip
    result = run_target(config, singer_lines(records, state={"s": 1}))
    assert result.error is not None and "Field name not found" in str(result.error)
    assert result.states == []
    outcomes = [(line["organization_user_id"], line["outcome"]) for line in result.report]
    assert outcomes == [
        ("first0@example.com", "failed"), ("first1@example.com", "failed"),
        ("first0@example.com", "failed"), ("second0@example.com", "inserted"),
    ]  # fmt: skip
    assert "NOT_ATTEMPTED" in result.report[2]["error"]
    emails = {lead["Email"] for lead in distant.records("Lead")}
    assert "first0@example.com" not in emails and "second0@example.com" in emails


def test_a_failed_match_stops_the_run_after_the_previous_batch_is_settled(
    distant: Sandbox, tmp_path: Path
) -> None:
    records = people("first", 2, 1, True) + people("second", 2, 2, True)
    config = base_config(distant, tmp_path / "report.jsonl", upsert_mode=True, batch_size_rows=2,
                         insert_defaults={"LastName": "x", "Company": "y"})  # fmt: skip
    # The second batch's match query is refused: the fault is set once the first batch's
    # query has been answered (the answer's wait runs before the client sees it).
    armed: list[bool] = []

    def delay(seconds: float) -> None:
        if not armed and job_events(distant).count(("query", "")) == 1:
            armed.append(True)
            distant.fail_next(400, '[{"message":"no","errorCode":"MALFORMED_QUERY"}]',
                              method="GET", path=r".*/query/?$")  # fmt: skip
        time.sleep(seconds)

    distant.delay = delay
    result = run_target(config, singer_lines(records, state={"s": 1}))
    assert result.error is not None and "MALFORMED_QUERY" in str(result.error)
    assert result.states == []
    outcomes = [line["outcome"] for line in result.report]
    assert outcomes == ["inserted", "inserted", "failed", "failed"]
    assert len(distant.ingest_jobs()) == 1


def test_the_cli_exit_codes_are_unchanged(distant: Sandbox, tmp_path: Path) -> None:
    records = people("first", 2, 1, True) + people("second", 2, 2, True)
    config = base_config(distant, tmp_path / "report.jsonl", upsert_mode=True, batch_size_rows=2,
                         insert_defaults={"LastName": "x", "Company": "y"})  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    distant.fail_next_job("InvalidBatch : Field name not found : Didomi_Newsletter__c")
    proc = subprocess.run(
        [sys.executable, "-m", "target_salesforce_consent.target", "--config", str(path)],
        input=singer_lines(records, state={"s": 1}), capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert "Field name not found" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "target_salesforce_consent.target", "--config", str(path)],
        input=singer_lines(records, state={"s": 1}), capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"s": 1}


def test_polls_wake_when_the_job_is_likely_done(distant: Sandbox, tmp_path: Path) -> None:
    # 50 rows at 100 rows/s: half a second. Polling at a fixed short interval would ask about
    # 25 times; following the job's progress, a few polls see it through.
    records = people("many", 50, 1, True)
    config = base_config(distant, tmp_path / "report.jsonl", upsert_mode=True,
                         insert_defaults={"LastName": "x", "Company": "y"})  # fmt: skip
    result = run_target(config, singer_lines(records))
    assert result.error is None, result.stderr
    assert distant.api_calls()["ingest_info"] <= 6


def test_conflicting_keys_are_those_being_written() -> None:
    matches = {"a": [{"Id": "00Q1"}], "b": [{"Id": "00Q2"}], "c": []}
    # Keys being written are case-folded: "straße" is the "strasse" being created.
    found = conflicting_keys(["a", "b", "c", "straße"], matches, {"c", "strasse"}, {"00Q2"})
    assert found == {"b", "c", "straße"}
    assert conflicting_keys(["a"], matches, set(), set()) == set()


def test_the_first_batches_of_a_large_batch_size_are_smaller(tmp_path: Path) -> None:
    # The org starts writing after a quarter of a batch, and has rows to process while the
    # next, larger batch is read.
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        records = people("ramp", 9000, 1, True)
        result = run_target(base_config(sb, tmp_path / "report.jsonl", batch_size_rows=4000),
                            singer_lines(records))  # fmt: skip
    assert result.error is None, result.stderr
    sizes = [int(line.split(": ")[1].split(" ")[0])
             for line in result.stderr.splitlines() if line.startswith("Batch ")]  # fmt: skip
    assert sizes == [1000, 2000, 4000, 2000]
    assert len(result.report) == 9000


def test_people_matched_again_keep_what_a_person_changed_in_salesforce(tmp_path: Path) -> None:
    # Jane is written by the first batch (her newsletter box) while the second is matched, so
    # the second batch plans her again once that write is confirmed: that plan, too, leaves
    # alone the Email Opt Out a rep ticked after both Didomi choices.
    seed = copy.deepcopy(SEED)
    tracked = ["HasOptedOutOfEmail", "Didomi_Newsletter__c"]
    seed["objects"]["Lead"]["history_tracked_fields"] = tracked
    with Sandbox(seed=seed, latency=LATENCY, rows_per_second=RATE) as sb:
        jane = str(next(r["Id"] for r in sb.records("Lead") if r["Email"] == "jane@example.com"))
        rep = str(sb.people()[0]["Id"])
        sb.update_as(rep, "Lead", jane, {"HasOptedOutOfEmail": True}, at="2025-03-10T09:00:00Z")
        records = [
            user(f"{name}@example.com", purposes=[newsletter(True)], updated_at=f"{day}T00:00:00Z")
            for name, day in (("jane", "2025-03-01"), ("john", "2025-03-01"),
                              ("jane", "2025-03-02"), ("twin", "2025-03-02"))
        ]
        result = run_target(base_config(sb, tmp_path / "report.jsonl", batch_size_rows=2),
                            singer_lines(records, state={"s": 1}))  # fmt: skip
        lead = sb.record("Lead", jane)
    assert result.error is None, result.stderr
    lines = [line for line in result.report if line["organization_user_id"] == "jane@example.com"]
    assert [line["outcome"] for line in lines] == ["updated", "skipped_salesforce_newer"]
    assert lines[1]["salesforce_kept"] == {jane: ["HasOptedOutOfEmail"]}
    assert lead["HasOptedOutOfEmail"] is True and lead["Didomi_Newsletter__c"] is True
    assert result.states == [{"s": 1}]


def test_history_queries_run_on_the_match_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The history of a batch's records to change takes several queries (the URI limit): they
    # are handed to the pool together, as the match queries are, not sent one after another.
    # (People changed these Leads so often since the choices that reading every change since
    # then would take more calls: the history is read by Id.)
    handed: list[list[str]] = []
    fetch_all = MatchPool.fetch_all

    def spy(pool: MatchPool, queries: Sequence[str]) -> list[list[dict[str, Any]]]:
        handed.append(list(queries))
        return fetch_all(pool, queries)

    monkeypatch.setattr(MatchPool, "fetch_all", spy)
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        ids = sb.add_records("Lead", [{"LastName": f"P{n}", "Company": "Acme",
                                       "Email": f"p{n}@example.com"}
                                      for n in range(1500)])  # fmt: skip
        rep = sb.people()[0]["Id"]
        for second in range(2, 7):
            for record_id in ids:
                sb.update_as(rep, "Lead", record_id, {"HasOptedOutOfEmail": second % 2 == 0},
                             at=stamp(second))  # fmt: skip
        result = run_target(base_config(sb, tmp_path / "report.jsonl", batch_size_rows=2000),
                            singer_lines(people("p", 1500, 1, True)))  # fmt: skip
    assert result.error is None, result.stderr
    assert set(result.outcomes.values()) == {"updated"}
    history = [[q for q in queries if "FROM LeadHistory" in q] for queries in handed]
    assert max(len(queries) for queries in history) >= 2
