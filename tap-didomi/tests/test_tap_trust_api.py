"""Consents API listing through the real CLI against the emulator: empty pages that carry a
cursor, cut connections, and Retry-After on 503."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from didomi_tap_helpers import TapRunner, user
from tap_didomi.emulator import DidomiEmulator


def _users(count: int) -> list[dict[str, Any]]:
    return [user(i, f"2025-03-{1 + i % 28:02d}T10:00:00.{i:03d}Z") for i in range(count)]


@pytest.fixture()
def emulator() -> Iterator[DidomiEmulator]:
    emu = DidomiEmulator(users=_users(9), page_size=2).start()
    try:
        yield emu
    finally:
        emu.stop()


def _config(emu: DidomiEmulator) -> dict[str, Any]:
    return {"api_url": emu.url, "api_key": emu.api_key, "api_secret": emu.api_secret,
            "organization_id": emu.organization_id}


def test_an_empty_page_with_a_cursor_does_not_end_the_listing(
    emulator: DidomiEmulator, run_tap: TapRunner
) -> None:
    # Page 2 (and the one after it) come back empty, each with a cursor to what follows.
    emulator.insert_empty_pages(2)
    run = run_tap(_config(emulator))
    assert run.returncode == 0, run.stderr[-3000:]
    assert [r["id"] for r in run.records("users")] == [u["id"] for u in _users(9)]
    pages = [c for c in emulator.calls if c.path == "/consents/users"]
    assert len(pages) == 7  # 5 pages of users and the 2 empty ones
    # The bookmark, written once the listing ended on a null cursor, covers every user.
    partitions = run.state["bookmarks"]["users"]["partitions"]
    assert partitions[0]["replication_key_value"] == max(u["updated_at"] for u in _users(9))
    assert "Pagination stopped" not in run.stderr


def test_a_cut_connection_is_retried(emulator: DidomiEmulator, run_tap: TapRunner) -> None:
    emulator.hold_faults(1)  # mid-listing: after the first page
    emulator.cut_connections(1)
    run = run_tap(_config(emulator))
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.records("users")) == 9
    assert emulator.statuses("/consents/users").count(0) == 1
    assert "GET /consents/users failed (ConnectionError); retrying" in run.stderr


def test_connections_cut_past_the_retries_end_in_one_error_line(
    emulator: DidomiEmulator, run_tap: TapRunner
) -> None:
    emulator.hold_faults(1)
    # Five answers of 503 that ask for a one-second wait, then the connection cut again:
    # every try of page 2 fails.
    emulator.throttle(5, retry_after=1, status=503)
    emulator.cut_connections(1)
    run = run_tap(_config(emulator))
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    # The message is logged at error level: the log line ends with it.
    errors = [line[line.index("tap-didomi: error:"):] for line in run.stderr.splitlines()
              if "tap-didomi: error:" in line]
    assert len(errors) == 1, run.stderr[-3000:]
    assert errors[0].startswith(f"tap-didomi: error: GET {emulator.url}/consents/users?")
    assert "failed 6 times (ConnectionError" in errors[0]
    # 503 is waited for as its Retry-After says (not the exponential back-off's 2, 4, 8 s).
    assert run.stderr.count("answered 503; retrying in 1.0 s") == 5
    # No bookmark from a listing that did not end.
    assert not any("partitions" in s.get("bookmarks", {}).get("users", {})
                   and any("replication_key_value" in p
                           for p in s["bookmarks"]["users"]["partitions"])
                   for s in run.states())
    for token in list(emulator._tokens):
        assert token not in run.output
    assert emulator.api_secret not in run.output
