"""tap-didomi against the local Didomi Consents API emulator, over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from didomi_tap_helpers import TapRun, TapRunner, user
from tap_didomi.emulator import DidomiEmulator


def _users(count: int, offset: int = 0) -> list[dict[str, Any]]:
    return [user(offset + i, f"2025-03-{1 + i:02d}T10:00:00.{i:03d}Z") for i in range(count)]


@pytest.fixture()
def emulator() -> Iterator[DidomiEmulator]:
    emu = DidomiEmulator(users=_users(5), page_size=2).start()
    try:
        yield emu
    finally:
        emu.stop()


def _config(emu: DidomiEmulator, **extra: Any) -> dict[str, Any]:
    return {"api_url": emu.url, "api_key": emu.api_key, "api_secret": emu.api_secret,
            "organization_id": emu.organization_id, **extra}


def _assert_no_secrets(run: TapRun, emu: DidomiEmulator) -> None:
    assert emu.api_secret not in run.output
    for token in list(emu._tokens):
        assert token not in run.output


def test_lists_every_page_and_bookmarks_newest_updated_at(
    emulator: DidomiEmulator, run_tap: TapRunner
) -> None:
    run = run_tap(_config(emulator))
    assert run.returncode == 0, run.stderr[-3000:]
    # Didomi's objects, plus the regulation they were listed under.
    assert run.records("users") == [dict(u, regulation="gdpr") for u in _users(5)]
    assert run.schemas()["users"]["key_properties"] == ["id", "regulation"]
    users_calls = [c for c in emulator.calls if c.path == "/consents/users"]
    assert len(users_calls) == 3  # pages of 2, 2 and 1
    assert users_calls[0].query == {"organization_id": "acme-corp", "regulation": "gdpr"}
    assert "$cursor" in users_calls[1].query
    assert emulator.tokens_minted == 1  # one token for the whole run
    partitions = run.state["bookmarks"]["users"]["partitions"]
    assert partitions == [{"context": {"regulation": "gdpr"}, "replication_key": "updated_at",
                           "replication_key_value": "2025-03-05T10:00:00.004Z"}]
    _assert_no_secrets(run, emulator)


def test_second_run_emits_only_users_updated_since(
    emulator: DidomiEmulator, run_tap: TapRunner
) -> None:
    first = run_tap(_config(emulator))
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_tap(_config(emulator), first.state)
    assert again.returncode == 0 and again.records() == []
    assert again.state["bookmarks"] == first.state["bookmarks"]

    changed = user(1, "2025-04-01T00:00:00.000Z")
    added = user(9, "2025-04-02T00:00:00.5Z")  # another precision: compared as a time
    emulator.upsert_user(changed)
    emulator.upsert_user(added)
    third = run_tap(_config(emulator), again.state)
    assert third.returncode == 0, third.stderr[-3000:]
    assert [r["id"] for r in third.records()] == ["user-0001", "user-0009"]
    bookmark = third.state["bookmarks"]["users"]["partitions"][0]["replication_key_value"]
    assert bookmark == "2025-04-02T00:00:00.5Z"


def test_start_date_limits_the_first_run(emulator: DidomiEmulator, run_tap: TapRunner) -> None:
    run = run_tap(_config(emulator, start_date="2025-03-04"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert [r["id"] for r in run.records()] == ["user-0003", "user-0004"]


def test_start_date_includes_its_midnight_bookmark_does_not(run_tap: TapRunner) -> None:
    emu = DidomiEmulator(users=[user(1, "2025-03-18T23:59:59.999Z"),
                                user(2, "2025-03-19T00:00:00.000Z")], page_size=10).start()
    try:
        config = _config(emu, start_date="2025-03-19")
        first = run_tap(config)
        assert first.returncode == 0, first.stderr[-3000:]
        assert [r["id"] for r in first.records()] == ["user-0002"]  # on or after start_date
        partition = first.state["bookmarks"]["users"]["partitions"][0]
        assert partition["replication_key_value"] == "2025-03-19T00:00:00.000Z"
        # Later runs: strictly after the bookmark, even though it equals start_date.
        second = run_tap(config, first.state)
        assert second.returncode == 0 and second.records() == []
    finally:
        emu.stop()


def test_expired_token_is_replaced_once(emulator: DidomiEmulator, run_tap: TapRunner) -> None:
    emulator.expire_tokens_after(1)  # the hour is up after the first page
    run = run_tap(_config(emulator))
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.records()) == 5
    assert emulator.tokens_minted == 2
    assert emulator.statuses("/consents/users") == [200, 401, 200, 200]
    _assert_no_secrets(run, emulator)


def test_401_with_a_fresh_token_stops(emulator: DidomiEmulator, run_tap: TapRunner) -> None:
    emulator.token_lifetime = 0.0  # every token is already expired when used
    run = run_tap(_config(emulator))
    assert run.returncode == 1
    assert "401 NotAuthenticated: jwt expired" in run.stderr
    assert "even with a freshly minted access token" in run.stderr
    assert emulator.tokens_minted == 2
    assert run.records() == [] and run.states() == []
    _assert_no_secrets(run, emulator)


def test_429_waits_for_retry_after(emulator: DidomiEmulator, run_tap: TapRunner) -> None:
    emulator.throttle(2, retry_after=1)
    run = run_tap(_config(emulator))
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.records()) == 5
    assert emulator.statuses("/consents/users")[:3] == [429, 429, 200]
    assert "answered 429; retrying in 1.0 s" in run.stderr


def test_full_tree_calls_are_rate_limited_and_honoured(run_tap: TapRunner) -> None:
    emu = DidomiEmulator(users=_users(4), page_size=1, full_tree_limit=2,
                         full_tree_window=1.0).start()
    try:
        run = run_tap(_config(emu, include_full_tree=True))
        assert run.returncode == 0, run.stderr[-3000:]
        assert len(run.records()) == 4
        statuses = emu.statuses("/consents/users")
        assert statuses.count(200) == 4 and 429 in statuses
        assert all(c.query.get("$include_full_tree") == "true"
                   for c in emu.calls if c.path == "/consents/users")
    finally:
        emu.stop()


def test_several_regulations_keep_a_bookmark_each(run_tap: TapRunner) -> None:
    emu = DidomiEmulator(users=_users(2), page_size=10).start()
    emu.set_users([user(7, "2025-05-01T00:00:00.000Z")], regulation="cpra")
    try:
        run = run_tap(_config(emu, regulations=["gdpr", "cpra"]))
        assert run.returncode == 0, run.stderr[-3000:]
        assert [(r["id"], r["regulation"]) for r in run.records()] == [
            ("user-0000", "gdpr"), ("user-0001", "gdpr"), ("user-0007", "cpra")]
        partitions = run.state["bookmarks"]["users"]["partitions"]
        assert {p["context"]["regulation"]: p["replication_key_value"] for p in partitions} == {
            "gdpr": "2025-03-02T10:00:00.001Z", "cpra": "2025-05-01T00:00:00.000Z"}
    finally:
        emu.stop()


def test_refused_credentials_and_organization(
    emulator: DidomiEmulator, run_tap: TapRunner
) -> None:
    wrong_secret = "not-the-secret-value"
    run = run_tap(dict(_config(emulator), api_secret=wrong_secret))
    assert run.returncode == 1 and run.records() == [] and run.states() == []
    assert "Didomi refused the API key" in run.stderr
    assert "400 BadRequest: Invalid API key or secret" in run.stderr
    assert "check api_key and api_secret" in run.stderr.lower()
    assert wrong_secret not in run.output

    run = run_tap(dict(_config(emulator), organization_id="someone-else"))
    assert run.returncode == 1
    assert "403 Forbidden: You do not have access to this organization" in run.stderr
    assert "check organization_id" in run.stderr
    _assert_no_secrets(run, emulator)


def test_api_mode_has_no_events_stream(emulator: DidomiEmulator, run_tap: TapRunner) -> None:
    run = run_tap(_config(emulator), None, "--discover")
    assert run.returncode == 0, run.stderr[-3000:]
    catalog = json.loads(run.stdout)
    assert [s["tap_stream_id"] for s in catalog["streams"]] == ["users"]
    assert emulator.calls == []  # discovery needs no API call


def test_bookmark_never_passes_the_listing_start(
    emulator: DidomiEmulator, run_tap: TapRunner
) -> None:
    # An updated_at later than the server's clock when the listing began (here: far in the
    # future) is emitted, but the bookmark stops at the listing's start, so a user updated
    # on an already-read page during the listing is not lost; that record comes again.
    emulator.upsert_user(user(3, "2099-01-01T00:00:00.000Z"))
    first = run_tap(_config(emulator))
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(first.records()) == 5
    bookmark = first.state["bookmarks"]["users"]["partitions"][0]["replication_key_value"]
    assert "2025-03-05T10:00:00.004Z" < bookmark < "2099"
    second = run_tap(_config(emulator), first.state)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [r["id"] for r in second.records()] == ["user-0003"]
