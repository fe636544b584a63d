"""tap-didomi on local export folders: records, bookmarks, incremental runs, bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from didomi_tap_helpers import TapRunner, build_export, partition_dir, user, write_file


def test_reads_every_partition_and_file_unchanged(tmp_path: Path, run_tap: TapRunner) -> None:
    expected = build_export(tmp_path / "exports")
    run = run_tap({"export_path": str(tmp_path / "exports")})
    assert run.returncode == 0, run.stderr[-3000:]

    # Didomi's objects exactly as written: nested consents as objects, unknown keys kept.
    assert run.records("users") == expected["users"]
    assert run.records("events") == expected["events"]
    schemas = run.schemas()
    assert schemas["users"]["key_properties"] == ["id"]
    assert schemas["events"]["key_properties"] == ["id"]
    consents = schemas["users"]["schema"]["properties"]["consents"]
    assert "object" in consents["type"]

    both = ["part-00000.json.gz", "part-00001.json"]
    for stream in ("users", "events"):
        # The newest modification time of a file seen (checked in test_tap_trust_exports).
        assert isinstance(run.state["bookmarks"][stream]["exports"]["exp-1"].pop("seen_until"),
                          str)
    assert run.state["bookmarks"]["users"]["exports"] == {
        "exp-1": {"date": "2025-03-03", "files": {"2025-03-01": both, "2025-03-02": both,
                                                  "2025-03-03": both}}
    }
    # 2025-03-02 has no events/ folder: read, with no file.
    assert run.state["bookmarks"]["events"]["exports"] == {
        "exp-1": {"date": "2025-03-03", "files": {"2025-03-01": ["events-0.json.gz"],
                                                  "2025-03-02": [],
                                                  "2025-03-03": ["events-0.json.gz"]}}
    }


def test_state_follows_each_complete_partition(tmp_path: Path, run_tap: TapRunner) -> None:
    build_export(tmp_path / "exports")
    run = run_tap({"export_path": str(tmp_path / "exports")})
    assert run.returncode == 0, run.stderr[-3000:]
    # A STATE after each partition, written after that partition's last record.
    dates_seen = []
    users_so_far = 0
    for message in run.messages:
        if message["type"] == "RECORD" and message["stream"] == "users":
            users_so_far += 1
        if message["type"] == "STATE":
            bookmark = message["value"]["bookmarks"].get("users", {}).get("exports", {})
            if "exp-1" in bookmark and bookmark["exp-1"]["date"] not in dates_seen:
                dates_seen.append(bookmark["exp-1"]["date"])
                assert users_so_far == 3 * len(dates_seen)
    assert dates_seen == ["2025-03-01", "2025-03-02", "2025-03-03"]


def test_second_run_reads_only_what_is_new(tmp_path: Path, run_tap: TapRunner) -> None:
    root = tmp_path / "exports"
    build_export(root)
    config = {"export_path": str(root)}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr[-3000:]

    again = run_tap(config, first.state)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.records() == []

    # Didomi adds a file to the bookmarked partition (still being written) and a new day.
    late = [user(100, "2025-03-03T23:00:00.000Z")]
    write_file(partition_dir(root, "2025-03-03") / "part-00002.json.gz", late)
    newer = [user(101, "2025-03-04T08:00:00.000Z"), user(102, "2025-03-04T08:00:01.000Z")]
    write_file(partition_dir(root, "2025-03-04") / "part-00000.json.gz", newer)

    third = run_tap(config, again.state)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.records("users") == late + newer
    assert third.records("events") == []
    files = third.state["bookmarks"]["users"]["exports"]["exp-1"]["files"]
    assert third.state["bookmarks"]["users"]["exports"]["exp-1"]["date"] == "2025-03-04"
    assert files["2025-03-03"] == ["part-00000.json.gz", "part-00001.json", "part-00002.json.gz"]
    assert files["2025-03-04"] == ["part-00000.json.gz"]
    # The events bookmark moves on too: 2025-03-04 has no events folder, nothing to read.
    assert third.state["bookmarks"]["events"]["exports"]["exp-1"]["date"] == "2025-03-04"

    fourth = run_tap(config, third.state)
    assert fourth.returncode == 0 and fourth.records() == []


def test_start_date_skips_older_partitions(tmp_path: Path, run_tap: TapRunner) -> None:
    expected = build_export(tmp_path / "exports")
    run = run_tap({"export_path": str(tmp_path / "exports"), "start_date": "2025-03-02"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.records("users") == expected["users"][3:]
    assert run.records("events") == expected["events"][2:]


def test_export_path_at_the_export_folder_or_above(tmp_path: Path, run_tap: TapRunner) -> None:
    expected = build_export(tmp_path / "bucket" / "data")
    write_file(partition_dir(tmp_path / "bucket" / "data", "2025-03-01", export_id="exp-2")
               / "a.json.gz", [user(500, "2025-03-01T00:00:00.000Z")])
    above = run_tap({"export_path": str(tmp_path / "bucket")})
    assert above.returncode == 0, above.stderr[-3000:]
    assert len(above.records("users")) == len(expected["users"]) + 1
    assert set(above.state["bookmarks"]["users"]["exports"]) == {"exp-1", "exp-2"}

    at = run_tap({"export_path": str(tmp_path / "bucket" / "data" / "export-id=exp-1")})
    assert at.returncode == 0, at.stderr[-3000:]
    assert at.records("users") == expected["users"]


def test_malformed_line_stops_with_file_and_line(tmp_path: Path, run_tap: TapRunner) -> None:
    root = tmp_path / "exports"
    good = [user(1, "2025-03-01T00:00:00.000Z")]
    write_file(partition_dir(root, "2025-03-01") / "a.json.gz", good)
    lines = [json.dumps(user(2, "2025-03-02T00:00:00.000Z")), "",
             '{"id": "user-0003", "consents": {', json.dumps(user(4, "2025-03-02T01:00:00Z"))]
    bad = write_file(partition_dir(root, "2025-03-02") / "b.json.gz", [],
                     raw=("\n".join(lines) + "\n").encode())
    write_file(partition_dir(root, "2025-03-03") / "c.json.gz",
               [user(5, "2025-03-03T00:00:00.000Z")])

    run = run_tap({"export_path": str(root)})
    assert run.returncode == 1
    assert f"{bad}: line 3 is not valid JSON" in run.stderr
    # Nothing of the partition after the bad file; no STATE past the last complete partition.
    assert [r["id"] for r in run.records()] == ["user-0001", "user-0002"]
    assert run.state["bookmarks"]["users"]["exports"]["exp-1"]["date"] == "2025-03-01"
    assert all(
        s.get("bookmarks", {}).get("users", {}).get("exports", {}).get("exp-1", {}).get("date")
        in (None, "2025-03-01") for s in run.states()
    )

    # Once the file is fixed, the run resumes at the partition that failed.
    write_file(bad, [user(2, "2025-03-02T00:00:00.000Z")])
    resumed = run_tap({"export_path": str(root)}, run.state)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["id"] for r in resumed.records()] == ["user-0002", "user-0005"]


def test_corrupt_gzip_stops_with_file_and_line(tmp_path: Path, run_tap: TapRunner) -> None:
    root = tmp_path / "exports"
    write_file(partition_dir(root, "2025-03-01") / "a.json.gz", [user(1, "2025-03-01T00:00Z")])
    records = [user(i, "2025-03-02T00:00:00.000Z") for i in range(2, 400)]
    packed = gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())
    corrupt = partition_dir(root, "2025-03-02") / "b.json.gz"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(packed[: len(packed) // 2])  # cut mid-stream, as a failed upload

    run = run_tap({"export_path": str(root)})
    assert run.returncode == 1
    assert f"{corrupt}: corrupt gzip data at line " in run.stderr
    assert run.state["bookmarks"]["users"]["exports"]["exp-1"]["date"] == "2025-03-01"

    not_gzip = partition_dir(root, "2025-03-02") / "b.json.gz"
    not_gzip.write_bytes(b"this is not gzip\n")
    run = run_tap({"export_path": str(root)})
    assert run.returncode == 1
    assert f"{not_gzip}: corrupt gzip data at line 1" in run.stderr


def test_empty_or_truncated_gzip_stops_and_is_read_once_complete(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    root = tmp_path / "exports"
    write_file(partition_dir(root, "2025-03-01") / "a.json.gz", [user(1, "2025-03-01T00:00Z")])
    empty = partition_dir(root, "2025-03-02") / "b.json.gz"
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")  # still being written, or a failed upload

    run = run_tap({"export_path": str(root)})
    assert run.returncode == 1
    assert f"tap-didomi: error: {empty}: the file is empty (0 bytes)" in run.stderr
    # Not bookmarked as read: the state stays at the last complete partition.
    assert [r["id"] for r in run.records()] == ["user-0001"]
    assert all(
        s["bookmarks"]["users"]["exports"]["exp-1"]["date"] == "2025-03-01"
        for s in run.states()
    )

    # Cut short within the gzip header: no line could be read.
    packed = gzip.compress((json.dumps(user(2, "2025-03-02T00:00Z")) + "\n").encode())
    empty.write_bytes(packed[:10])
    run = run_tap({"export_path": str(root)}, run.state)
    assert run.returncode == 1
    assert f"{empty}: corrupt gzip data at line 1" in run.stderr
    assert "no line of it could be read" in run.stderr
    assert "lines 1 to 0" not in run.stderr
    assert run.state["bookmarks"]["users"]["exports"]["exp-1"]["date"] == "2025-03-01"

    # Once the data has landed, the next run reads it.
    empty.write_bytes(packed)
    resumed = run_tap({"export_path": str(root)}, run.state)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["id"] for r in resumed.records()] == ["user-0002"]


def test_storage_errors_are_one_clear_line(tmp_path: Path, run_tap: TapRunner) -> None:
    # Nothing listens on port 1 of the loopback: the connection is refused at once.
    run = run_tap({"export_path": "ftp://reader:ftp-password-42@127.0.0.1:1/exports"})
    assert run.returncode == 1 and run.stdout == ""
    assert "tap-didomi: error: cannot connect to ftp://reader:***@127.0.0.1:1/exports" \
        in run.stderr
    assert "ConnectionRefusedError" in run.stderr
    assert "credentials" in run.stderr and "endpoint" in run.stderr
    assert "Traceback" not in run.stderr
    assert "ftp-password-42" not in run.output


def test_gzip_named_json_and_records_without_id(tmp_path: Path, run_tap: TapRunner) -> None:
    root = tmp_path / "exports"
    mislabelled = write_file(partition_dir(root, "2025-03-01") / "a.json", [],
                             raw=gzip.compress(b'{"id": "x"}\n'))
    run = run_tap({"export_path": str(root)})
    assert run.returncode == 1
    assert f"{mislabelled}: line 1 is not valid JSON" in run.stderr
    assert "name it .json.gz" in run.stderr

    mislabelled.unlink()
    no_id = write_file(partition_dir(root, "2025-03-01") / "a.json.gz",
                       [{"organization_user_id": "x@example.com"}])
    run = run_tap({"export_path": str(root)})
    assert run.returncode == 1
    assert f"{no_id}: line 1 has no string `id`" in run.stderr


def test_discover_without_events_folder(tmp_path: Path, run_tap: TapRunner) -> None:
    root = tmp_path / "exports"
    write_file(partition_dir(root, "2025-03-01") / "a.json.gz", [user(1, "2025-03-01T00:00Z")])
    run = run_tap({"export_path": str(root)}, None, "--discover")
    assert run.returncode == 0, run.stderr[-3000:]
    catalog = json.loads(run.stdout)
    assert [s["tap_stream_id"] for s in catalog["streams"]] == ["users"]

    build_export(tmp_path / "with-events")
    run = run_tap({"export_path": str(tmp_path / "with-events")}, None, "--discover")
    catalog = json.loads(run.stdout)
    assert sorted(s["tap_stream_id"] for s in catalog["streams"]) == ["events", "users"]


def test_unusable_export_paths_are_named(tmp_path: Path, run_tap: TapRunner) -> None:
    missing = tmp_path / "nowhere"
    run = run_tap({"export_path": str(missing)})
    # Nothing there at all: a configuration error, with no note about resuming from a STATE.
    assert run.returncode == 2 and run.stdout == ""
    assert f"tap-didomi: configuration error: export_path {missing} does not exist" \
        in run.stderr
    assert "No STATE" not in run.stderr and "Traceback" not in run.stderr

    empty = tmp_path / "empty"
    (empty / "something").mkdir(parents=True)
    run = run_tap({"export_path": str(empty)})
    assert run.returncode == 1 and run.stdout == ""
    assert "tap-didomi: error: no export-id=… folder found" in run.stderr
    assert "No STATE" not in run.stderr  # nothing was read: nothing to resume from

    build_export(tmp_path / "exports")
    date_dir = tmp_path / "exports" / "export-id=exp-1" / "date=2025-03-01"
    run = run_tap({"export_path": str(date_dir)})
    assert run.returncode == 1
    assert "names a date partition" in run.stderr

    (tmp_path / "exports" / "export-id=exp-1" / "date=2025-3-1").mkdir()
    run = run_tap({"export_path": str(tmp_path / "exports")})
    assert run.returncode == 1
    assert "'2025-3-1' is not a YYYY-MM-DD date" in run.stderr


def test_other_files_and_folders_are_logged_not_read(tmp_path: Path, run_tap: TapRunner) -> None:
    root = tmp_path / "exports"
    records = [user(1, "2025-03-01T00:00:00.000Z")]
    write_file(partition_dir(root, "2025-03-01") / "a.json.gz", records)
    (partition_dir(root, "2025-03-01") / "_SUCCESS").write_bytes(b"")
    (partition_dir(root, "2025-03-01") / "notes.txt").write_text("not data\n")
    write_file(partition_dir(root, "2025-03-01", "proofs") / "p.json.gz", [{"id": "proof"}])

    run = run_tap({"export_path": str(root)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.records() == records
    assert "notes.txt: not a .json or .json.gz file" in run.stderr
    assert "Ignoring proofs/ folders" in run.stderr
    assert "_SUCCESS" not in run.stderr


def test_state_of_an_api_run_does_not_leak_into_exports(
    tmp_path: Path, run_tap: TapRunner
) -> None:
    expected = build_export(tmp_path / "exports")
    api_state = {"bookmarks": {"users": {"partitions": [
        {"context": {"regulation": "gdpr"}, "replication_key": "updated_at",
         "replication_key_value": "2025-03-05T10:00:00.000Z"}]}}}
    run = run_tap({"export_path": str(tmp_path / "exports")}, api_state)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.records("users") == expected["users"]  # unchanged: no `regulation` added
