"""tap-didomi on s3:// export paths, against moto's S3 server on loopback (not a mock)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from didomi_tap_helpers import TapRunner, build_export, moto_s3, user

BUCKET = "didomi-exports"


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with moto_s3(BUCKET) as env:
        yield env


def _upload(local_root: Path, prefix: str) -> None:
    s3 = boto3.client("s3")
    for path in sorted(local_root.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(local_root)}")


def test_reads_an_s3_export_incrementally(
    tmp_path: Path, run_tap: TapRunner, s3_env: dict[str, str]
) -> None:
    expected = build_export(tmp_path / "local")
    _upload(tmp_path / "local", "incremental/data")
    config = {"export_path": f"s3://{BUCKET}/incremental"}  # above data/export-id=…

    first = run_tap(config, env=s3_env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.records("users") == expected["users"]
    assert first.records("events") == expected["events"]
    assert first.state["bookmarks"]["users"]["exports"]["exp-1"]["date"] == "2025-03-03"

    boto3.client("s3").put_object(
        Bucket=BUCKET,
        Key="incremental/data/export-id=exp-1/date=2025-03-04/users/part-0.json.gz",
        Body=gzip.compress((json.dumps(user(77, "2025-03-04T00:00:00Z")) + "\n").encode()),
    )
    # A retried upload lands in a day already read: read too, once.
    boto3.client("s3").put_object(
        Bucket=BUCKET,
        Key="incremental/data/export-id=exp-1/date=2025-03-02/users/part-9.json.gz",
        Body=gzip.compress((json.dumps(user(78, "2025-03-02T23:00:00Z")) + "\n").encode()),
    )
    second = run_tap(config, first.state, env=s3_env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [r["id"] for r in second.records()] == ["user-0078", "user-0077"]
    third = run_tap(config, second.state, env=s3_env)
    assert third.returncode == 0 and third.records() == []
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in first.output + second.output


def test_corrupt_s3_object_is_named_by_url(
    tmp_path: Path, run_tap: TapRunner, s3_env: dict[str, str]
) -> None:
    s3 = boto3.client("s3")
    base = "corrupt/export-id=exp-9"
    s3.put_object(Bucket=BUCKET, Key=f"{base}/date=2025-03-01/users/a.json.gz",
                  Body=gzip.compress((json.dumps(user(1, "2025-03-01T00:00Z")) + "\n").encode()))
    packed = gzip.compress(
        "".join(json.dumps(user(i, "2025-03-02T00:00Z")) + "\n" for i in range(300)).encode())
    s3.put_object(Bucket=BUCKET, Key=f"{base}/date=2025-03-02/users/b.json.gz",
                  Body=packed[: len(packed) // 2])

    run = run_tap({"export_path": f"s3://{BUCKET}/corrupt"}, env=s3_env)
    assert run.returncode == 1
    assert f"s3://{BUCKET}/{base}/date=2025-03-02/users/b.json.gz: corrupt gzip data at line" \
        in run.stderr
    assert run.state["bookmarks"]["users"]["exports"]["exp-9"]["date"] == "2025-03-01"


def test_missing_bucket_prefix_is_named(run_tap: TapRunner, s3_env: dict[str, str]) -> None:
    run = run_tap({"export_path": f"s3://{BUCKET}/no-such-prefix"}, env=s3_env)
    assert run.returncode == 2 and run.stdout == ""
    assert f"configuration error: export_path s3://{BUCKET}/no-such-prefix does not exist" \
        in run.stderr


def test_unreachable_endpoint_is_one_clear_line(run_tap: TapRunner) -> None:
    # Nothing listens on port 1 of the loopback: botocore's EndpointConnectionError.
    secret = "unreachable-secret-key"
    env = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
           "AWS_MAX_ATTEMPTS": "1"}
    run = run_tap({"export_path": "s3://bucket/data"}, env=env)
    assert run.returncode == 1 and run.stdout == ""
    assert "tap-didomi: error: cannot list s3://bucket/data (EndpointConnectionError" \
        in run.stderr
    assert "AWS_ENDPOINT_URL" in run.stderr and "credentials" in run.stderr
    assert "Traceback" not in run.stderr
    assert secret not in run.output
