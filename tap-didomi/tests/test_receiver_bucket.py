"""Receivers sharing a bucket spool (moto's S3 server on loopback), read by tap-didomi."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from didomi_tap_helpers import TapRunner, moto_s3
from receiver_helpers import running_receiver, webhook

BUCKET = "didomi-webhooks"


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with moto_s3(BUCKET) as env:
        yield env


def _objects(prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_receivers_group_webhooks_into_objects_and_the_tap_reads_each_once(
        run_tap: TapRunner, s3_env: dict[str, str]) -> None:
    spool = f"s3://{BUCKET}/spool"
    with running_receiver(spool, "--receiver-id", "rx-a", env=s3_env) as one, \
            running_receiver(spool, "--receiver-id", "rx-b", env=s3_env) as two:
        token = one.token()

        def send(n: int) -> dict[str, Any]:
            answer = (one if n % 2 else two).post(webhook(n % 30), token)
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(send, range(60)))  # each webhook sent to both receivers
        stored = [a for a in answers if a["status"] == "stored"]
        assert len(stored) >= 30
        objects = _objects("spool/")
        # Webhooks of one window share an object: far fewer objects than webhooks.
        assert 2 <= len(objects) < len(stored)
        assert {key.split("-rx-")[1][0] for key in objects} == {"a", "b"}

        first = run_tap({"webhook_spool": spool}, env=s3_env)
        assert first.returncode == 0, first.stderr[-3000:]
        records = first.records("webhooks")
        people = sorted(r["parameters"]["new_entity"]["organization_user_id"] for r in records)
        assert people == sorted(f"person{n}@example.com" for n in range(30))
        assert all(r["received_at"].endswith("Z") for r in records)

        assert one.post(webhook(99), token).json()["status"] == "stored"
        assert two.post(webhook(99), token).json()["status"] == "stored"  # other receiver
        second = run_tap({"webhook_spool": spool}, first.state, env=s3_env)
        assert second.returncode == 0, second.stderr[-3000:]
        assert [r["parameters"]["new_entity"]["organization_user_id"]
                for r in second.records()] == ["person99@example.com"]

        # A retry that reaches the other receiver after the tap emitted the first copy.
        assert one.post(webhook(200), token).json()["status"] == "stored"
        third = run_tap({"webhook_spool": spool}, second.state, env=s3_env)
        assert len(third.records()) == 1
        assert two.post(webhook(200), token).json()["status"] == "stored"
        fourth = run_tap({"webhook_spool": spool}, third.state, env=s3_env)
        assert fourth.returncode == 0 and fourth.records() == []
        assert s3_env["AWS_SECRET_ACCESS_KEY"] not in first.output + second.output


def test_a_missing_bucket_prefix_is_a_configuration_error(
        run_tap: TapRunner, s3_env: dict[str, str]) -> None:
    run = run_tap({"webhook_spool": f"s3://{BUCKET}/nothing-yet"}, env=s3_env)
    assert run.returncode == 2 and run.stdout == ""
    assert f"webhook_spool s3://{BUCKET}/nothing-yet does not exist" in run.stderr
