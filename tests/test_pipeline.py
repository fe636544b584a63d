"""The stages' machinery (pipeline.py) on its own: what it keeps alive between batches."""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

from target_salesforce_consent.pipeline import BatchWorker, MatchPool


def test_match_queries_leave_no_long_url_in_the_split_cache() -> None:
    """requests splits each URL it sends and Python caches the last 128 split: a query's URL
    (its SOQL, up to 16 KB) must not stay there after the query."""
    long_query = "SELECT Id FROM Lead WHERE Email IN (" + ",".join(["'x@y.z'"] * 2000) + ")"

    def fetch(soql: str) -> list[dict[str, Any]]:
        url = "https://org.example/services/data/v62.0/query?q=" + urllib.parse.quote(soql)
        urllib.parse.urlsplit(url)  # as requests does
        return [{"Id": "00Q1"}]

    pool = MatchPool(fetch, concurrency=2)
    try:
        for queries in ([long_query], [long_query + " ", long_query + "  "]):
            assert pool.fetch_all(queries) == [[{"Id": "00Q1"}]] * len(queries)
            assert urllib.parse.urlsplit.cache_info().currsize == 0  # type: ignore[attr-defined]
    finally:
        pool.close()


def test_the_next_batch_is_read_once_the_worker_has_processed_the_previous_one() -> None:
    """A hand-over returns only once the batch is processed (its jobs started): the reading
    thread never holds a batch read ahead beside the two the worker and the jobs hold."""
    returned = threading.Event()
    seen_returned: list[bool] = []

    def handle(batch: int) -> None:
        # Had the hand-over returned at once, the reading thread would have said so by now.
        seen_returned.append(returned.wait(timeout=0.5))

    def skip(batch: int, error: BaseException) -> None:
        raise AssertionError(f"batch {batch} skipped: {error}")

    worker: BatchWorker[int] = BatchWorker(handle, skip)
    for batch in (1, 2):
        returned.clear()
        worker.submit(batch)
        returned.set()
        assert len(seen_returned) == batch  # processed before submit returned
    worker.wait()
    assert seen_returned == [False, False]
