"""Export state: every file read exactly once whatever day folder it lands in, over the
look-back window; old bookmarks migrated; hand-edited bookmarks refused with one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from didomi_tap_helpers import TapRun, TapRunner, partition_dir, user, write_file
from tap_didomi.export_state import ExportBookmark, PartitionStatus, StateError


def _day_file(root: Path, date: str, name: str, n: int) -> list[dict[str, Any]]:
    records = [user(n, f"{date}T08:00:00.000Z"), user(n + 1, f"{date}T09:00:00.000Z")]
    write_file(partition_dir(root, date) / name, records)
    return records


def _ids(run: TapRun) -> list[str]:
    return [r["id"] for r in run.records("users")]


def _first_run(root: Path, run_tap: TapRunner, config: dict[str, Any]) -> TapRun:
    """Run 1 of the scenario: date=2024-06-15..17, one file each."""
    expected = []
    for i, date in enumerate(("2024-06-15", "2024-06-16", "2024-06-17")):
        expected += _day_file(root, date, "part-00000.json.gz", 10 * i)
    run = run_tap(config)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.records("users") == expected
    return run


def test_late_files_and_backfilled_partitions_are_read_once(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    root = tmp_path / "exports"
    config = {"export_path": str(root)}
    first = _first_run(root, run_tap, config)

    # A retried upload lands a file in 06-16, a back-filled 06-14 appears, a late file lands
    # in 06-17, and 06-18 appears.
    retried = _day_file(root, "2024-06-16", "part-00001.json.gz", 100)
    backfilled = _day_file(root, "2024-06-14", "part-00000.json.gz", 200)
    late = _day_file(root, "2024-06-17", "part-00001.json.gz", 300)
    newest = _day_file(root, "2024-06-18", "part-00000.json.gz", 400)

    second = run_tap(config, first.state)
    assert second.returncode == 0, second.stderr[-3000:]
    # Each new file once, in partition date order; nothing read before comes again.
    assert second.records("users") == backfilled + retried + late + newest
    bookmark = second.state["bookmarks"]["users"]["exports"]["exp-1"]
    assert bookmark["date"] == "2024-06-18"
    assert bookmark["files"] == {
        "2024-06-14": ["part-00000.json.gz"],
        "2024-06-15": ["part-00000.json.gz"],
        "2024-06-16": ["part-00000.json.gz", "part-00001.json.gz"],
        "2024-06-17": ["part-00000.json.gz", "part-00001.json.gz"],
        "2024-06-18": ["part-00000.json.gz"],
    }

    third = run_tap(config, second.state)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.records() == []


def test_the_bookmark_keeps_only_the_look_back_window(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    root = tmp_path / "exports"
    for day in range(1, 13):
        _day_file(root, f"2024-06-{day:02d}", "part-00000.json.gz", 10 * day)
    run = run_tap({"export_path": str(root), "export_lookback_days": 3})
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.records("users")) == 24
    bookmark = run.state["bookmarks"]["users"]["exports"]["exp-1"]
    # Three days of file names; the days before as one range, however many there are.
    assert sorted(bookmark["files"]) == ["2024-06-10", "2024-06-11", "2024-06-12"]
    assert bookmark["closed"] == [["2024-06-01", "2024-06-09"]]


def test_partitions_older_than_the_window_are_named_not_read(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    root = tmp_path / "exports"
    config = {"export_path": str(root), "export_lookback_days": 2}
    first = _first_run(root, run_tap, config)
    assert first.state["bookmarks"]["users"]["exports"]["exp-1"]["closed"] == [
        ["2024-06-15", "2024-06-15"]]

    # A partition far older than the window appears.
    old = _day_file(root, "2024-06-10", "part-00000.json.gz", 500)
    second = run_tap(config, first.state)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.records() == []
    old_file = partition_dir(root, "2024-06-10") / "part-00000.json.gz"
    assert "export-id=exp-1/date=2024-06-10 is older than the look-back window" in second.stderr
    assert f"NOT reading {old_file}" in second.stderr
    assert "export_lookback_days of at least 8" in second.stderr

    # As the warning says: a window reaching back to it reads it, once.
    wider = run_tap(dict(config, export_lookback_days=8), first.state)
    assert wider.returncode == 0, wider.stderr[-3000:]
    assert wider.records("users") == old
    assert "older than the look-back window" not in wider.stderr
    again = run_tap(dict(config, export_lookback_days=8), wider.state)
    assert again.returncode == 0 and again.records() == []


def test_files_landing_in_days_past_the_window_are_named_once(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    root = tmp_path / "exports"
    config = {"export_path": str(root), "export_lookback_days": 2}
    first = _first_run(root, run_tap, config)
    bookmark = first.state["bookmarks"]["users"]["exports"]["exp-1"]
    # The newest modification time of a file seen, as a UTC time string (a JSON number with a
    # fraction would reach an SDK target as a Decimal it cannot write back).
    assert isinstance(bookmark["seen_until"], str) and bookmark["seen_until"].endswith("Z")

    # A retried upload lands in 06-15, which has left the 2-day window: not listed file by
    # file any more, but found by its modification time and named.
    _day_file(root, "2024-06-15", "part-00009.json.gz", 700)
    late_file = partition_dir(root, "2024-06-15") / "part-00009.json.gz"
    second = run_tap(config, first.state)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.records() == []
    assert f"export-id=exp-1: NOT reading {late_file}: written after the last run" \
        in second.stderr
    assert "start_date=2024-06-15" in second.stderr
    assert second.state["bookmarks"]["users"]["exports"]["exp-1"]["seen_until"] \
        > bookmark["seen_until"]

    third = run_tap(config, second.state)
    assert third.returncode == 0 and third.records() == []
    assert "NOT reading" not in third.stderr  # named once


def test_a_bookmark_of_the_earlier_format_is_migrated(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    root = tmp_path / "exports"
    config = {"export_path": str(root)}
    _first_run(root, run_tap, config)
    # What earlier releases wrote: the newest partition read and its files.
    old_state = {"bookmarks": {"users": {"exports": {"exp-1": {
        "date": "2024-06-17", "files": ["part-00000.json.gz"]}}}}}
    late = _day_file(root, "2024-06-17", "part-00001.json.gz", 300)
    newest = _day_file(root, "2024-06-18", "part-00000.json.gz", 400)

    run = run_tap(config, old_state)
    assert run.returncode == 0, run.stderr[-3000:]
    # The days that bookmark said were read are not read again.
    assert run.records("users") == late + newest
    bookmark = run.state["bookmarks"]["users"]["exports"]["exp-1"]
    assert bookmark["files"] == {"2024-06-17": ["part-00000.json.gz", "part-00001.json.gz"],
                                 "2024-06-18": ["part-00000.json.gz"]}
    assert bookmark["closed"] == [["0001-01-01", "2024-06-16"]]
    # And the migrated state reads a late file of its window as any other.
    later = _day_file(root, "2024-06-18", "part-00001.json.gz", 600)
    after = run_tap(config, run.state)
    assert after.returncode == 0 and after.records("users") == later


@pytest.mark.parametrize(("entry", "expected"), [
    ("2024-06-15",
     'bookmarks.users.exports["exp-1"] is a string "2024-06-15", not an object: write '
     '{"date": "2024-06-15"} (the newest partition read)'),
    ({"date": 20240615},
     'bookmarks.users.exports["exp-1"].date is a number 20240615: write the newest partition '
     'read as a string "YYYY-MM-DD", e.g. "2024-06-15"'),
    ({"date": "2024-06-15", "files": "part-00000.json.gz"},
     'bookmarks.users.exports["exp-1"].files is a string "part-00000.json.gz": write an object '
     "of partition dates to the file names read in them"),
])
def test_a_hand_edited_bookmark_is_one_clear_line(
    tmp_path: Path, run_tap: TapRunner, entry: Any, expected: str
) -> None:
    root = tmp_path / "exports"
    _day_file(root, "2024-06-15", "part-00000.json.gz", 0)
    run = run_tap({"export_path": str(root)}, {"bookmarks": {"users": {"exports": {
        "exp-1": entry}}}})
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.stdout == ""  # stopped before any output
    assert f"tap-didomi: state error: {expected}" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.count("tap-didomi: ") == 1


# ----------------------------------------------------------------- the bookmark, as pure logic


def test_bookmark_statuses_and_window() -> None:
    bookmark = ExportBookmark()
    assert bookmark.status("2024-06-01", 3) is PartitionStatus.NEW
    for day in ("2024-06-01", "2024-06-02", "2024-06-04", "2024-06-05", "2024-06-06"):
        bookmark.record(day, ["a.json.gz"], 3)
    # 06-03 never existed: the closed days split around it, and it is too old when it appears.
    assert bookmark.closed == [("2024-06-01", "2024-06-02")]
    assert sorted(bookmark.files) == ["2024-06-04", "2024-06-05", "2024-06-06"]
    assert bookmark.status("2024-06-03", 3) is PartitionStatus.TOO_OLD
    assert bookmark.status("2024-06-02", 3) is PartitionStatus.CLOSED
    assert bookmark.status("2024-06-04", 3) is PartitionStatus.IN_WINDOW
    assert bookmark.status("2024-06-07", 3) is PartitionStatus.NEW
    assert bookmark.unread("2024-06-05", ["a.json.gz", "b.json.gz"]) == ["b.json.gz"]
    # A state round trip gives the same bookmark.
    again = ExportBookmark.from_state(bookmark.to_state(), "x")
    assert again == bookmark
    bookmark.record("2024-06-07", [], 3)
    assert bookmark.closed == [("2024-06-01", "2024-06-02"), ("2024-06-04", "2024-06-04")]


def test_seen_until_is_rounded_up_to_the_microsecond() -> None:
    for seconds in (1718679600.0, 1718679600.1234567, 1796562120.4955876, 0.0000004):
        bookmark = ExportBookmark(newest="2024-06-18", seen_until=seconds)
        again = ExportBookmark.from_state(bookmark.to_state(), "x")
        assert again.seen_until is not None
        assert seconds < again.seen_until <= seconds + 0.000002
    with pytest.raises(StateError, match=r"x.seen_until is a number 1718679600"):
        ExportBookmark.from_state({"date": "2024-06-05", "files": {},
                                   "seen_until": 1718679600}, "x")


def test_bookmark_refuses_malformed_closed_ranges() -> None:
    with pytest.raises(StateError, match=r'x.closed holds a list \["2024-06-02"\]'):
        ExportBookmark.from_state({"date": "2024-06-05", "files": {},
                                   "closed": [["2024-06-02"]]}, "x")
    with pytest.raises(StateError, match=r'x.files has the key "June"'):
        ExportBookmark.from_state({"date": "2024-06-05", "files": {"June": []}}, "x")
