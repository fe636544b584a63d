"""When BulkIngest polls an ingest job: the forecast it keeps of the org's pace (pure), and
how many polls jobs take against the sandbox as a distant org (latency and a processing rate).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.salesforce import BulkIngest, SalesforceClient
from target_salesforce_consent.salesforce.bulk import (
    EARLY_POLL_RATE_FACTOR,
    PROGRESS_POLL_CAP,
    IngestForecast,
    IngestOutcome,
    poll_delay,
    progress_rate,
)

from .conftest import seed
from .test_bulk_http import lead_ids, leads, truthy

LATENCY = 0.02  # seconds added to every answer
RATE = 100  # ingest rows per second: a job of 60 rows runs for 0.6 s


# -- the forecast (pure) ------------------------------------------------------------------------


def test_progress_rate_needs_two_polls_that_saw_rows() -> None:
    assert progress_rate(20, 2.0, None) is None  # one sample: the job may have queued
    assert progress_rate(20, 2.0, (1.0, 0)) is None  # it started some time in between
    assert progress_rate(20, 4.0, (2.0, 20)) is None  # no progress since
    assert progress_rate(60, 4.0, (2.0, 20)) == pytest.approx(20.0)


def test_poll_delay_is_a_little_after_the_end_and_capped() -> None:
    assert poll_delay(2.0, 0.0) == pytest.approx(2.15)
    assert poll_delay(-1.0, 0.0) == 0.0  # overdue: poll now
    assert poll_delay(0.0, 0.25) == 0.25
    assert poll_delay(10_000.0, 0.0) == PROGRESS_POLL_CAP


def test_no_forecast_until_a_rate_is_seen() -> None:
    forecast = IngestForecast(queue_cap=10.0)
    assert forecast.closed("A", 100, at=0.0) is None
    assert forecast.running("A", 100, 10, at=1.0, previous=None) is None
    # Two polls that saw rows: 20 rows/s, 50 rows left.
    assert forecast.running("A", 100, 50, at=3.0, previous=(1.0, 10)) == pytest.approx(5.5)
    assert forecast.rate == pytest.approx(20.0)


def test_a_job_is_likely_done_after_its_rows_at_the_rate_seen() -> None:
    forecast = IngestForecast(queue_cap=10.0)
    forecast.rate = 100.0
    assert forecast.closed("A", 300, at=10.0) == pytest.approx(13.0)


def test_a_job_queues_behind_the_runs_earlier_jobs() -> None:
    forecast = IngestForecast(queue_cap=10.0)
    forecast.rate = 100.0
    assert forecast.closed("A", 300, at=10.0) == pytest.approx(13.0)
    assert forecast.closed("B", 50, at=11.0) == pytest.approx(13.5)
    assert forecast.closed("C", 100, at=11.5) == pytest.approx(14.5)
    # A is seen slower than foreseen: B, polled while still queued, now waits for A's new end.
    assert forecast.running("A", 300, 200, at=13.0, previous=(12.0, 150)) == pytest.approx(15.0)
    assert forecast.rate == pytest.approx(50.0)
    assert forecast.running("B", 50, 0, at=13.6, previous=None) == pytest.approx(16.0)
    # A job closed later never delays an earlier one.
    assert forecast.running("A", 300, 0, at=11.0, previous=None) == pytest.approx(17.0)


def test_a_job_no_longer_queues_behind_an_ended_one() -> None:
    forecast = IngestForecast(queue_cap=10.0)
    forecast.rate = 100.0
    forecast.closed("A", 300, at=10.0)
    forecast.ended("A")
    assert forecast.closed("B", 50, at=11.0) == pytest.approx(11.5)


def test_the_queue_wait_foreseen_is_bounded() -> None:
    # An org may run a run's jobs side by side: a job's first poll is never put off by more
    # than queue_cap for the jobs ahead of it.
    forecast = IngestForecast(queue_cap=2.0)
    forecast.rate = 10.0
    assert forecast.closed("A", 1000, at=0.0) == pytest.approx(100.0)
    assert forecast.closed("B", 10, at=1.0) == pytest.approx(4.0)  # 1 + 2 + 10 rows / 10


def test_a_job_faster_than_the_rate_seen_is_not_waited_for_at_that_rate() -> None:
    forecast = IngestForecast(queue_cap=10.0)
    forecast.rate = 10.0
    forecast.closed("A", 1000, at=0.0)
    # 500 rows in 1 s since it was closed: at least 500 rows/s, so 1 s left, not 50 s.
    assert forecast.running("A", 1000, 500, at=1.0, previous=None) == pytest.approx(2.0)
    assert forecast.rate == 10.0  # a lower bound for this job, not a measure of the org


def test_a_first_poll_that_finds_the_job_running_lowers_the_rate() -> None:
    forecast = IngestForecast(queue_cap=10.0)
    forecast.rate = 100.0
    assert forecast.closed("A", 100, at=0.0) == pytest.approx(1.0)
    # Foreseen done at 1.0, still running at 1.1: the rate seen was too high.
    end = forecast.running("A", 100, 90, at=1.1, previous=None)
    assert forecast.rate == pytest.approx(100.0 * EARLY_POLL_RATE_FACTOR)
    assert end == pytest.approx(1.1 + 10 / forecast.rate)
    # A later poll of the same job measures the rate itself.
    forecast.running("A", 100, 95, at=1.2, previous=(1.1, 90))
    assert forecast.rate == pytest.approx(50.0)
    # A job not yet foreseen done leaves the rate as it is.
    forecast.closed("B", 100, at=2.0)
    forecast.running("B", 100, 10, at=2.5, previous=None)
    assert forecast.rate == pytest.approx(50.0)


# -- against a distant org ----------------------------------------------------------------------


@pytest.fixture
def distant() -> Iterator[Sandbox]:
    with Sandbox(seed=seed(leads=260), latency=LATENCY, rows_per_second=RATE) as sb:
        yield sb


def polls(sb: Sandbox, job_ids: Sequence[str]) -> int:
    return sum(
        1 for r in sb.requests
        if r.kind == "ingest_info" and r.path.rstrip("/").split("/")[-1] in job_ids
    )  # fmt: skip


def update(bulk: BulkIngest, ids: Sequence[str]) -> IngestOutcome:
    rows = [{"Id": record_id, "Newsletter__c": "true"} for record_id in ids]
    return bulk.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id")


def closes(sb: Sandbox) -> int:
    return sum(1 for r in sb.requests if r.kind == "ingest_close")


def test_jobs_after_the_first_are_polled_when_likely_done(distant: Sandbox) -> None:
    ids = lead_ids(distant)
    with SalesforceClient(distant.url, distant.client_id, distant.client_secret) as client:
        bulk = BulkIngest(client, poll_interval=0.2, max_poll_interval=1.0)
        outcomes = [update(bulk, ids[:40])]  # the org's rate is learned from this one
        # A job alone: polled right after closing it has hardly started.
        outcomes.append(update(bulk, ids[40:100]))
        # A job closed while the run's previous job still runs waits in the org's queue.
        first: list[IngestOutcome] = []
        closed = closes(distant)
        writer = threading.Thread(target=lambda: first.append(update(bulk, ids[100:200])))
        writer.start()
        for _ in range(2000):  # until the first job is closed (a sync, not a timing)
            if closes(distant) > closed:
                break
            time.sleep(0.005)
        queued = update(bulk, ids[200:260])
        writer.join()
        outcomes += [*first, queued]
    later = [job for outcome in outcomes[1:] for job in outcome.job_ids]
    assert len(later) == 3
    # Polled as soon as closed, then after the progress showed the rate, these took three
    # polls each, the queued one more; now about one each (one spare for a busy machine).
    assert polls(distant, later) <= 4
    for outcome in outcomes:
        assert {r.status for r in outcome.results.values()} == {"succeeded"}
    assert sum(len(outcome.results) for outcome in outcomes) == 260
    assert all(truthy(record["Newsletter__c"]) for record in leads(distant).values())


@pytest.mark.parametrize("rate", [None, 0.01])
def test_waiting_stops_at_the_timeout(rate: float | None) -> None:
    # The job never completes. Whether the first poll is foreseen far off (0.01 rows/s) or
    # polls back off, the sleeps add up to the timeout, never more; the job's outcome is
    # unknown.
    sleeps: list[float] = []
    with (
        Sandbox(seed=seed(), job_polls_to_complete=100_000) as sb,
        SalesforceClient(sb.url, sb.client_id, sb.client_secret) as client,
    ):
        bulk = BulkIngest(client, poll_interval=1.0, max_poll_interval=10.0, poll_timeout=5.0,
                          sleep=sleeps.append)  # fmt: skip
        bulk.forecast.rate = rate
        record_id = lead_ids(sb)[0]
        outcome = update(bulk, [record_id])
    result = outcome.results[record_id]
    assert result.status == "unresolved"
    assert result.error is not None and result.error.startswith("POLL_TIMEOUT")
    assert sum(sleeps) == pytest.approx(5.0)
