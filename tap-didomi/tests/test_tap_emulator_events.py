"""The Didomi emulator's consent events, over real HTTP on loopback: creating events (one or a
batch, idempotent on id), finding a person's users and events, and users' state from events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from didomi_tap_helpers import user
from tap_didomi.emulator import DidomiEmulator


@pytest.fixture()
def emulator() -> Iterator[DidomiEmulator]:
    emu = DidomiEmulator(users=[user(1, "2025-01-01T00:00:00.000Z"),
                                user(2, "2025-01-01T00:00:00.000Z")]).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture()
def http(emulator: DidomiEmulator) -> requests.Session:
    session = requests.Session()
    token = session.post(f"{emulator.url}/sessions", json={
        "type": "api-key", "key": emulator.api_key, "secret": emulator.api_secret,
    }).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def _event(ouid: str, purpose: str, enabled: bool | None, created_at: str,
           **extra: Any) -> dict[str, Any]:
    return {"user": {"organization_user_id": ouid}, "created_at": created_at,
            "consents": {"purposes": [{"id": purpose, "enabled": enabled}]}, **extra}


def _purpose(found: dict[str, Any], purpose: str) -> dict[str, Any] | None:
    return next((p for p in found["consents"]["purposes"] if p["id"] == purpose), None)


def _user(http: requests.Session, emu: DidomiEmulator, ouid: str) -> dict[str, Any]:
    answer = http.get(f"{emu.url}/consents/users",
                      params={"organization_id": emu.organization_id,
                              "organization_user_id": ouid})
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    assert len(data) == 1, data
    return data[0]


def test_users_are_found_by_organization_user_id(
    emulator: DidomiEmulator, http: requests.Session
) -> None:
    found = _user(http, emulator, "person2@example.com")
    assert found["id"] == "user-0002"
    nobody = http.get(f"{emulator.url}/consents/users",
                      params={"organization_id": emulator.organization_id,
                              "organization_user_id": "nobody@example.com"})
    assert nobody.json() == {"data": [], "limit": 100, "cursor": None}


def test_an_event_updates_its_user_and_is_listed_for_the_person(
    emulator: DidomiEmulator, http: requests.Session
) -> None:
    before = _user(http, emulator, "person1@example.com")
    answer = http.post(f"{emulator.url}/consents/events",
                       json=_event("person1@example.com", "newsletter-Lq3Vx8Rw", False,
                                   "2025-02-01T10:00:00.000Z", id="evt-1",
                                   delegate={"id": "005A", "name": "Rep"}))
    assert answer.status_code == 201, answer.text
    stored = answer.json()
    assert stored["id"] == "evt-1" and stored["user"]["id"] == "user-0001"
    assert stored["created_at"] == "2025-02-01T10:00:00.000Z"
    assert stored["delegate"] == {"id": "005A", "name": "Rep"}

    after = _user(http, emulator, "person1@example.com")
    assert _purpose(after, "newsletter-Lq3Vx8Rw") == {"id": "newsletter-Lq3Vx8Rw",
                                                      "enabled": False}
    # What the event does not carry is kept.
    assert _purpose(after, "marketing-9HmMn6Vt") == _purpose(before, "marketing-9HmMn6Vt")
    assert after["version"] == before["version"] + 1
    assert after["updated_at"] > before["updated_at"]

    listed = http.get(f"{emulator.url}/consents/events",
                      params={"organization_id": emulator.organization_id,
                              "organization_user_id": "person1@example.com"}).json()
    assert listed["total"] == 1 and [e["id"] for e in listed["data"]] == ["evt-1"]
    other = http.get(f"{emulator.url}/consents/events",
                     params={"organization_user_id": "person2@example.com"}).json()
    assert other["data"] == [] and other["total"] == 0


def test_a_batch_is_stored_once_per_id_and_the_newest_choice_per_purpose_wins(
    emulator: DidomiEmulator, http: requests.Session
) -> None:
    batch = [
        _event("person2@example.com", "newsletter-Lq3Vx8Rw", True,
               "2025-03-02T00:00:00.000Z", id="newer"),
        # Older, arriving later: it does not undo the newer choice on the same purpose...
        _event("person2@example.com", "newsletter-Lq3Vx8Rw", False,
               "2025-03-01T00:00:00.000Z", id="older"),
        # ...nor does a null, which is no choice.
        _event("person2@example.com", "newsletter-Lq3Vx8Rw", None,
               "2025-03-03T00:00:00.000Z", id="no-choice"),
    ]
    answer = http.post(f"{emulator.url}/consents/events", json=batch)
    assert answer.status_code == 201, answer.text
    assert [e["id"] for e in answer.json()] == ["newer", "older", "no-choice"]
    assert _purpose(_user(http, emulator, "person2@example.com"),
                    "newsletter-Lq3Vx8Rw")["enabled"] is True  # type: ignore[index]

    version = _user(http, emulator, "person2@example.com")["version"]
    again = http.post(f"{emulator.url}/consents/events", json=batch[:2])
    assert again.status_code == 201
    assert len(emulator.events) == 3  # a resend creates no second event
    assert _user(http, emulator, "person2@example.com")["version"] == version

    # A new event confirming the choice the user holds still updates the user.
    confirm = _event("person2@example.com", "newsletter-Lq3Vx8Rw", True,
                     "2025-03-04T00:00:00.000Z", id="confirm")
    assert http.post(f"{emulator.url}/consents/events", json=confirm).status_code == 201
    confirmed = _user(http, emulator, "person2@example.com")
    assert confirmed["version"] == version + 1


def test_an_event_for_an_unknown_person_creates_the_user(
    emulator: DidomiEmulator, http: requests.Session
) -> None:
    answer = http.post(f"{emulator.url}/consents/events",
                       json=_event("new@example.com", "newsletter-Lq3Vx8Rw", True,
                                   "2025-03-01T00:00:00.000Z"))
    assert answer.status_code == 201, answer.text
    assert answer.json()["id"]  # generated
    created = _user(http, emulator, "new@example.com")
    assert _purpose(created, "newsletter-Lq3Vx8Rw") == {"id": "newsletter-Lq3Vx8Rw",
                                                        "enabled": True}


def test_invalid_batches_store_nothing(emulator: DidomiEmulator, http: requests.Session) -> None:
    good = _event("person1@example.com", "p", True, "2025-03-01T00:00:00Z")
    bad = {"consents": {"purposes": []}, "created_at": "yesterday"}
    answer = http.post(f"{emulator.url}/consents/events", json=[good, bad])
    assert answer.status_code == 400
    assert answer.json()["errors"] == {
        "1.user": "required: an object with id or organization_user_id",
        "1.created_at": "must be an ISO 8601 date-time",
    }
    too_many = http.post(f"{emulator.url}/consents/events", json=[good] * 101)
    assert too_many.status_code == 400 and "1 to 100" in too_many.json()["message"]
    assert emulator.events == []
    unauthenticated = requests.post(f"{emulator.url}/consents/events", json=good)
    assert unauthenticated.status_code == 401
    no_person = http.get(f"{emulator.url}/consents/events",
                         params={"organization_id": emulator.organization_id})
    assert no_person.status_code == 400


def test_events_are_listed_in_pages(emulator: DidomiEmulator, http: requests.Session) -> None:
    batch = [_event("person1@example.com", f"p{i}", True, f"2025-03-01T00:00:{i:02d}Z",
                    id=f"e{i}") for i in range(5)]
    assert http.post(f"{emulator.url}/consents/events", json=batch).status_code == 201
    page = http.get(f"{emulator.url}/consents/events",
                    params={"organization_user_id": "person1@example.com", "$limit": "2",
                            "$skip": "2"}).json()
    assert [e["id"] for e in page["data"]] == ["e2", "e3"]
    assert (page["total"], page["limit"], page["skip"]) == (5, 2, 2)
