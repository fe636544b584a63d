"""A distant org: latency added to every answer, ingest jobs processed at a rate.

The clock and the wait are replaced, so the tests see what the sandbox does without timing it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from salesforce_sandbox import Sandbox
from salesforce_sandbox.cli import build_parser
from sandbox_helpers import API, Client, seed


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rated() -> Iterator[tuple[Sandbox, FakeClock]]:
    sb = Sandbox(seed(), rows_per_second=4)  # a row every 0.25 s (exact in binary)
    clock = FakeClock()
    sb.ingest.clock = clock
    with sb:
        yield sb, clock


def _submit(client: Client, emails: list[str]) -> str:
    """Create, upload and close an update job that sets Didomi_Newsletter__c on Leads."""
    ids = {r["Email"]: r["Id"] for r in client.sb.records("Lead")}
    rows = "".join(f'"{ids[e]}","true"\n' for e in emails)
    job = client.create_job("Lead", "update")
    put = client.put(f"{API}/jobs/ingest/{job['id']}/batches",
                     data=('"Id","Didomi_Newsletter__c"\n' + rows).encode(),
                     headers={"Content-Type": "text/csv"})
    assert put.status_code == 201, put.text
    close = client.patch(f"{API}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    assert close.status_code == 200, close.text
    return str(job["id"])


def _info(client: Client, job_id: str) -> dict[str, object]:
    resp = client.get(f"{API}/jobs/ingest/{job_id}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_a_job_stays_in_progress_while_its_rows_are_processed_at_the_rate(
    rated: tuple[Sandbox, FakeClock],
) -> None:
    sb, clock = rated
    client = Client(sb)
    client.login()
    job_id = _submit(client, ["jane.doe@example.com", "o'brien@example.com"])  # 0.5 s
    seen = []
    info = _info(client, job_id)
    seen.append((info["state"], info["numberRecordsProcessed"]))
    clock.now += 0.25
    info = _info(client, job_id)
    seen.append((info["state"], info["numberRecordsProcessed"]))
    # Not written yet: the rows land when the org is done with them.
    jane = next(r for r in sb.records("Lead") if r["Email"] == "jane.doe@example.com")
    assert not jane.get("Didomi_Newsletter__c")
    results = client.get(f"{API}/jobs/ingest/{job_id}/successfulResults")
    assert results.status_code == 400 and "INVALIDJOBSTATE" in results.text
    clock.now += 0.25
    info = _info(client, job_id)
    seen.append((info["state"], info["numberRecordsProcessed"]))
    assert seen == [("InProgress", 0), ("InProgress", 1), ("JobComplete", 2)]
    jane = next(r for r in sb.records("Lead") if r["Email"] == "jane.doe@example.com")
    assert jane["Didomi_Newsletter__c"] is True


def test_jobs_queue_one_after_another_at_the_rate(rated: tuple[Sandbox, FakeClock]) -> None:
    sb, clock = rated
    client = Client(sb)
    client.login()
    first = _submit(client, ["jane.doe@example.com"])  # 1 row: done at +0.25 s
    second = _submit(client, ["o'brien@example.com"])  # queued behind it: +0.25 to +0.5 s
    clock.now += 0.125
    assert _info(client, first)["state"] == "InProgress"
    info = _info(client, second)
    assert (info["state"], info["numberRecordsProcessed"]) == ("UploadComplete", 0)
    clock.now += 0.125
    assert _info(client, first)["state"] == "JobComplete"
    clock.now += 0.125
    assert _info(client, second)["state"] == "InProgress"
    clock.now += 0.125
    assert _info(client, second)["state"] == "JobComplete"


def test_latency_is_waited_for_every_answer_outside_the_admin_api() -> None:
    waits: list[float] = []
    sb = Sandbox(seed(), latency=0.15)
    sb.delay = waits.append
    with sb:
        client = Client(sb)
        client.login()
        assert client.get(f"{API}/limits").status_code == 200
        assert client.get(f"{API}/sobjects/Nope/describe").status_code == 404
        sb.records("Lead")
        assert client.http.get(sb.url + "/__sandbox/health").status_code == 200
    assert waits == [0.15, 0.15, 0.15]  # token, limits, the 404: not the admin call


def test_no_latency_no_wait() -> None:
    waits: list[float] = []
    sb = Sandbox(seed())
    sb.delay = waits.append
    with sb:
        client = Client(sb)
        client.login()
    assert waits == []


def test_bad_knobs_are_refused() -> None:
    with pytest.raises(ValueError, match="latency"):
        Sandbox(seed(), latency=-1)
    with pytest.raises(ValueError, match="rows_per_second"):
        Sandbox(seed(), rows_per_second=0)
    args = build_parser().parse_args(["--latency", "0.15", "--rows-per-second", "1000"])
    assert (args.latency, args.rows_per_second) == (0.15, 1000)
    done = subprocess.run([sys.executable, "-m", "salesforce_sandbox", "--rows-per-second", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--rows-per-second must be a positive number" in done.stderr
