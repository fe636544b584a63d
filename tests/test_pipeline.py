"""The stages' machinery (pipeline.py) on its own: what it keeps alive between batches."""

from __future__ import annotations

import urllib.parse
from typing import Any

from target_salesforce_consent.pipeline import MatchPool


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
