"""Failed records are kept durably and sent again at the start of the next runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from salesforce_sandbox import Sandbox

from tests.conftest import base_config, newsletter, run_target, singer_lines, user
from tests.test_cli import run_cli, write_config

TOPICS = {"id": "Didomi_Topics__c", "value": "purposes.marketing.values.topics"}
FULL_MAP = {"news": "News", "offers": "Offers", "events": "Events"}


def topics(selected: str) -> dict[str, Any]:
    return {"id": "marketing", "enabled": True, "values": {"topics": {"value": selected}}}


def config(
    sandbox: Sandbox, report: Path, value_map: dict[str, str], **extra: Any
) -> dict[str, Any]:
    return base_config(sandbox, report, mappings=[{**TOPICS, "value_map": value_map}], **extra)


def lead(sb: Sandbox, email: str) -> dict[str, Any]:
    found = [r for r in sb.records("Lead") if (r.get("Email") or "").lower() == email.lower()]
    assert len(found) == 1, found
    return found[0]


def kept(folder: Path, name: str = "pending.jsonl") -> list[dict[str, Any]]:
    files = list(folder.glob(f"*/{name}"))
    assert len(files) <= 1, files
    if not files:
        return []
    return [json.loads(line) for line in files[0].read_text().splitlines() if line]


def test_records_failed_on_a_missing_value_map_entry_are_written_after_the_fix(
    sandbox: Sandbox, tmp_path: Path, failed_records_home: Path
) -> None:
    records = [
        user("jane@example.com", purposes=[topics("news,offers")]),
        user("john@example.com", purposes=[topics("news")]),
    ]
    partial = {"news": "News"}  # "offers" is missing: Salesforce refuses it
    first = run_target(
        config(sandbox, tmp_path / "r1.jsonl", partial),
        singer_lines(records, state={"bookmarks": {"users": "day-1"}}),
    )
    assert first.error is None, first.stderr
    assert first.outcomes == {"jane@example.com": "failed", "john@example.com": "updated"}
    assert first.states == [{"bookmarks": {"users": "day-1"}}]  # STATE moves on
    stored = kept(failed_records_home)
    assert [(e["organization_user_id"], e["failures"]) for e in stored] == [("jane@example.com", 1)]
    assert stored[0]["record"] == records[0]
    assert stored[0]["error"] == first.line_for("jane@example.com")["error"]

    # The mapping is fixed; the tap has nothing new. The failed record is sent again.
    second = run_target(config(sandbox, tmp_path / "r2.jsonl", FULL_MAP), singer_lines([]))
    assert second.error is None, second.stderr
    line = second.line_for("jane@example.com")
    assert (line["outcome"], line["retry"]) == ("updated", 1)
    assert set(lead(sandbox, "jane@example.com")["Didomi_Topics__c"].split(";")) == {
        "News",
        "Offers",
    }
    assert kept(failed_records_home) == []

    third = run_target(config(sandbox, tmp_path / "r3.jsonl", FULL_MAP), singer_lines([]))
    assert third.report == []


def test_retries_end_after_max_record_retries_and_the_record_stays_listed(
    sandbox: Sandbox, tmp_path: Path, failed_records_home: Path
) -> None:
    bad = user("jane@example.com", purposes=[topics("offers")])
    partial = {"news": "News"}
    retries = []
    for run in range(4):
        result = run_target(
            config(sandbox, tmp_path / f"r{run}.jsonl", partial, max_record_retries=2),
            singer_lines([bad] if run == 0 else []),
        )
        assert result.error is None, result.stderr
        retries.append([(line["outcome"], line.get("retry")) for line in result.report])
    assert retries == [[("failed", None)], [("failed", 1)], [("failed", 2)], []]
    assert kept(failed_records_home) == []
    given_up = kept(failed_records_home, "exhausted.jsonl")
    assert [(e["organization_user_id"], e["failures"]) for e in given_up] == [
        ("jane@example.com", 3)
    ]


def test_a_failed_record_superseded_by_a_newer_one_is_not_sent_again(
    sandbox: Sandbox, tmp_path: Path, failed_records_home: Path
) -> None:
    older = user("jane@example.com", updated_at="2024-06-01T00:00:00Z")
    older["consents"]["purposes"] = {"0": {"enabled": False}}  # unreadable: no purpose id
    first = run_target(base_config(sandbox, tmp_path / "r1.jsonl"), singer_lines([older]))
    assert first.line_for("jane@example.com")["outcome"] == "failed"
    assert len(kept(failed_records_home)) == 1

    newer = user("jane@example.com", purposes=[newsletter(True)], updated_at="2024-06-02T00:00:00Z")
    second = run_target(base_config(sandbox, tmp_path / "r2.jsonl"), singer_lines([newer]))
    assert second.error is None, second.stderr
    assert [(line["outcome"], line.get("retry")) for line in second.report] == [
        ("failed", 1),
        ("updated", None),
    ]
    assert kept(failed_records_home) == []  # the newer record settled the person
    assert lead(sandbox, "jane@example.com")["Didomi_Newsletter__c"] is True


def test_a_retried_older_record_never_overwrites_a_newer_one(
    sandbox: Sandbox, tmp_path: Path, failed_records_home: Path
) -> None:
    older = user("jane@example.com", purposes=[topics("offers")], updated_at="2024-06-01T00:00:00Z")
    run_target(config(sandbox, tmp_path / "r1.jsonl", {"news": "News"}), singer_lines([older]))
    newer = user("jane@example.com", purposes=[topics("news")], updated_at="2024-06-02T00:00:00Z")
    second = run_target(config(sandbox, tmp_path / "r2.jsonl", FULL_MAP), singer_lines([newer]))
    assert second.error is None, second.stderr
    assert lead(sandbox, "jane@example.com")["Didomi_Topics__c"] == "News"
    assert kept(failed_records_home) == []
    third = run_target(config(sandbox, tmp_path / "r3.jsonl", FULL_MAP), singer_lines([]))
    assert third.report == []
    assert lead(sandbox, "jane@example.com")["Didomi_Topics__c"] == "News"


def test_a_dry_run_reports_the_retries_and_keeps_them(
    sandbox: Sandbox, tmp_path: Path, failed_records_home: Path
) -> None:
    bad = user("jane@example.com", purposes=[topics("offers")])
    run_target(config(sandbox, tmp_path / "r1.jsonl", {"news": "News"}), singer_lines([bad]))
    before = kept(failed_records_home)
    dry = run_target(
        config(sandbox, tmp_path / "dry.jsonl", FULL_MAP, dry_run=True), singer_lines([])
    )
    assert [(line["outcome"], line.get("retry")) for line in dry.report] == [("would_update", 1)]
    assert kept(failed_records_home) == before


def test_failed_records_path_through_the_cli(sandbox: Sandbox, tmp_path: Path) -> None:
    store = tmp_path / "kept"
    report = tmp_path / "report.jsonl"
    bad = user("jane@example.com", purposes=[topics("offers")])
    cfg = config(sandbox, report, {"news": "News"}, failed_records_path=str(store))
    proc = run_cli(["--config", str(write_config(tmp_path, cfg))], singer_lines([bad]))
    assert proc.returncode == 0, proc.stderr
    assert [e["organization_user_id"] for e in kept(store)] == ["jane@example.com"]

    unusable = tmp_path / "a-file"
    unusable.write_text("")
    cfg["failed_records_path"] = str(unusable)
    proc = run_cli(["--config", str(write_config(tmp_path, cfg))], "not singer\n")
    assert proc.returncode == 2
    assert "failed_records_path" in proc.stderr and "Traceback" not in proc.stderr


def test_failed_records_kept_in_an_s3_bucket(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }.items():
            monkeypatch.setenv(name, value)
        boto3.client("s3").create_bucket(Bucket="consent-runs")
        url = "s3://consent-runs/failed"
        bad = user("jane@example.com", purposes=[topics("offers")])
        first = run_target(
            config(sandbox, tmp_path / "r1.jsonl", {"news": "News"}, failed_records_path=url),
            singer_lines([bad]),
        )
        assert first.line_for("jane@example.com")["outcome"] == "failed"
        listed = boto3.client("s3").list_objects_v2(Bucket="consent-runs", Prefix="failed/")
        assert [o["Key"].rsplit("/", 1)[-1] for o in listed["Contents"]] == ["pending.jsonl"]
        second = run_target(
            config(sandbox, tmp_path / "r2.jsonl", FULL_MAP, failed_records_path=url),
            singer_lines([]),
        )
        assert second.error is None, second.stderr
        line = second.line_for("jane@example.com")
        assert (line["outcome"], line["retry"]) == ("updated", 1)
        missing = run_target(
            config(sandbox, tmp_path / "r3.jsonl", FULL_MAP, failed_records_path="s3://nope/x"),
            singer_lines([]),
        )
        assert "failed_records_path 's3://nope/x' cannot be used" in str(missing.error)
        body = boto3.client("s3").get_object(
            Bucket="consent-runs", Key=listed["Contents"][0]["Key"]
        )
        assert body["Body"].read() == b""
    finally:
        server.stop()


def test_the_documented_replay_writes_an_exhausted_record(
    sandbox: Sandbox, tmp_path: Path, failed_records_home: Path
) -> None:
    bad = user("jane@example.com", purposes=[topics("offers")])
    partial = {"news": "News"}
    for run in range(2):
        run_target(
            config(sandbox, tmp_path / f"r{run}.jsonl", partial, max_record_retries=1),
            singer_lines([bad] if run == 0 else []),
        )
    exhausted = next(failed_records_home.glob("*/exhausted.jsonl"))
    # The page's own script and commands, word for word but for the folder's path.
    doc = (Path(__file__).parent.parent / "docs" / "failed-records.md").read_text()
    script = doc.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "replay_failed.py").write_text(script)
    commands = [block.split("```sh\n", 1)[1].split("```", 1)[0]
                for block in doc.split("<!-- docs-test: failed-records -->")[1:]]
    assert len(commands) == 2
    listing = "\n".join(f"F={exhausted.parent}" if line.startswith("F=") else line
                         for line in commands[0].splitlines())
    report = tmp_path / "replay.jsonl"
    (tmp_path / "config.json").write_text(json.dumps(config(sandbox, report, FULL_MAP)))
    (exhausted.parent / "pending.jsonl").write_text(exhausted.read_text())  # for the listing
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                                 os.environ.get("PATH", "")]))
    listed = subprocess.run(["bash", "-euc", listing], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("jane@example.com\t2\t"), listed.stdout
    (exhausted.parent / "pending.jsonl").unlink()
    proc = subprocess.run(["bash", "-euc", f"F={exhausted.parent}\n{commands[1]}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(line["organization_user_id"], line["outcome"]) for line in lines] == [
        ("jane@example.com", "updated")
    ]
    assert lead(sandbox, "jane@example.com")["Didomi_Topics__c"] == "Offers"


def test_a_failed_record_older_than_one_settled_earlier_in_the_run_is_not_kept(
    sandbox: Sandbox, tmp_path: Path, failed_records_home: Path
) -> None:
    newer = user("jane@example.com", purposes=[newsletter(True)], updated_at="2024-06-02T00:00:00Z")
    older = user("jane@example.com", updated_at="2024-06-01T00:00:00Z")
    older["consents"]["purposes"] = {"0": {"enabled": False}}  # unreadable: no purpose id
    unrelated = user("john@example.com", updated_at="2024-06-01T00:00:00Z")
    unrelated["consents"]["purposes"] = {"0": {"enabled": False}}
    result = run_target(
        base_config(sandbox, tmp_path / "r.jsonl", batch_size_rows=1),
        singer_lines([newer, older, unrelated]),
    )
    assert [line["outcome"] for line in result.report] == ["updated", "failed", "failed"]
    assert [e["organization_user_id"] for e in kept(failed_records_home)] == ["john@example.com"]


def test_a_run_without_failures_leaves_no_trace(
    sandbox: Sandbox, tmp_path: Path, failed_records_home: Path
) -> None:
    result = run_target(
        base_config(sandbox, tmp_path / "r.jsonl"),
        singer_lines([user("jane@example.com", purposes=[newsletter(True)])]),
    )
    assert result.error is None, result.stderr
    assert not failed_records_home.parent.exists()


def test_a_record_with_a_lone_surrogate_is_kept_and_sent_again(
    sandbox: Sandbox, tmp_path: Path, failed_records_home: Path
) -> None:
    bad = user("sur\ud800@example.com", purposes=[newsletter(False)])
    first = run_target(base_config(sandbox, tmp_path / "r1.jsonl"), singer_lines([bad]))
    assert first.error is None, first.stderr
    assert [line["outcome"] for line in first.report] == ["failed"]
    second = run_target(base_config(sandbox, tmp_path / "r2.jsonl"), singer_lines([]))
    assert second.error is None, second.stderr
    assert [(line["outcome"], line.get("retry")) for line in second.report] == [("failed", 1)]
    assert [e["failures"] for e in kept(failed_records_home)] == [2]
