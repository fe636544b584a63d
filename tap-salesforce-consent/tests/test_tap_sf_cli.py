"""tap-salesforce-consent through its real CLI against the sandbox over HTTP."""

from __future__ import annotations

from pathlib import Path

from salesforce_sandbox import Sandbox
from tap_sf_helpers import (
    JANE,
    JOHN,
    config,
    didomi_user,
    lead_id,
    person,
    run_loader,
    run_tap,
    seed,
)


def test_peoples_changes_are_read_with_the_records_match_field(
    org: Sandbox, tmp_path: Path
) -> None:
    rep, agent = person(org, 0), person(org, 1)
    jane, john = lead_id(org, JANE), lead_id(org, JOHN)
    org.update_as(rep, "Lead", jane, {"HasOptedOutOfEmail": True}, at="2025-03-10T09:00:00Z")
    org.update_as(agent, "Lead", john, {"Didomi_Newsletter__c": True}, at="2025-03-10T10:00:00Z")
    # A multi-select change is in the history without values: never read back.
    org.update_as(rep, "Lead", jane, {"Didomi_Topics__c": "News"}, at="2025-03-10T11:00:00Z")
    # A change of a field that is not mapped is not read.
    org.update_as(rep, "Lead", jane, {"DoNotCall": True}, at="2025-03-10T12:00:00Z")

    run = run_tap(tmp_path, config(org))
    assert run.returncode == 0, run.stderr
    schema = next(m for m in run.messages if m["type"] == "SCHEMA")
    assert schema["stream"] == "consent_changes" and schema["key_properties"] == ["history_id"]
    records = run.records
    history = {r["Id"]: r for r in org.history("Lead")}
    assert [r["history_id"] for r in records] == [
        r["Id"]
        for r in org.history("Lead")
        if r["Field"] in ("HasOptedOutOfEmail", "Didomi_Newsletter__c")
    ]
    assert records[0] == {
        "history_id": records[0]["history_id"],
        "salesforce_id": jane,
        "object": "Lead",
        "organization_user_id": JANE,
        "field": "HasOptedOutOfEmail",
        "old_value": False,
        "new_value": True,
        "changed_at": "2025-03-10T09:00:00.000Z",
        "changed_by_id": rep,
    }
    assert history[records[0]["history_id"]]["CreatedById"] == rep
    assert records[1]["organization_user_id"] == JOHN  # stripped
    assert (records[1]["field"], records[1]["new_value"], records[1]["changed_by_id"]) == (
        "Didomi_Newsletter__c",
        True,
        agent,
    )
    assert run.stderr.count("Didomi_Topics__c is multi-select: not carried back") == 1
    assert run.state["bookmarks"]["consent_changes"]["bookmark"] == {
        "changed_at": "2025-03-10T10:00:00.000Z",
        "history_id": records[1]["history_id"],
    }
    assert org.client_secret not in run.stdout + run.stderr


def test_the_pipelines_own_writes_are_never_read_back(org: Sandbox, tmp_path: Path) -> None:
    """The first no-echo loop: what the forward loader writes is not a person's change."""
    org.update_as(person(org), "Lead", lead_id(org, JANE), {"HasOptedOutOfEmail": True},
                  at="2025-03-10T09:00:00Z")  # fmt: skip
    first = run_tap(tmp_path, config(org))
    assert first.returncode == 0, first.stderr
    assert len(first.records) == 1
    # The loader writes Didomi's newer choice (history rows naming its own user)...
    loader = run_loader(tmp_path, org, [didomi_user(JANE, True, "2025-03-11T00:00:00Z")])
    assert loader.returncode == 0, loader.stderr
    own = [r for r in org.history("Lead") if r["CreatedById"] == org.integration_user_id]
    assert {r["Field"] for r in own} == {"HasOptedOutOfEmail", "Didomi_Newsletter__c"}
    # ...and none of them comes back, from the bookmark or from scratch.
    again = run_tap(tmp_path, config(org), state=first.state)
    assert again.returncode == 0, again.stderr
    assert again.records == []
    assert [r["changed_by_id"] for r in run_tap(tmp_path, config(org)).records] == [person(org)]


def test_incremental_ties_in_one_second_are_broken_by_history_id(
    org: Sandbox, tmp_path: Path
) -> None:
    rep = person(org)
    jane, john = lead_id(org, JANE), lead_id(org, JOHN)
    org.update_as(rep, "Lead", jane, {"HasOptedOutOfEmail": True}, at="2025-03-10T09:00:00Z")
    first = run_tap(tmp_path, config(org))
    assert len(first.records) == 1
    # Another change recorded in the same second as the bookmark, and a later one.
    org.update_as(rep, "Lead", john, {"HasOptedOutOfEmail": True}, at="2025-03-10T09:00:00Z")
    org.update_as(rep, "Lead", jane, {"Didomi_Newsletter__c": True}, at="2025-03-10T09:30:00Z")
    second = run_tap(tmp_path, config(org), state=first.state)
    assert second.returncode == 0, second.stderr
    assert [(r["salesforce_id"], r["field"]) for r in second.records] == [
        (john, "HasOptedOutOfEmail"),
        (jane, "Didomi_Newsletter__c"),
    ]
    third = run_tap(tmp_path, config(org), state=second.state)
    assert third.records == []
    assert third.state == second.state


def test_ignore_user_ids_and_start_date(org: Sandbox, tmp_path: Path) -> None:
    rep, agent = person(org, 0), person(org, 1)
    jane, john = lead_id(org, JANE), lead_id(org, JOHN)
    org.update_as(rep, "Lead", jane, {"HasOptedOutOfEmail": True}, at="2025-01-10T09:00:00Z")
    org.update_as(rep, "Lead", john, {"HasOptedOutOfEmail": True}, at="2025-03-10T09:00:00Z")
    org.update_as(agent, "Lead", jane, {"Didomi_Newsletter__c": True}, at="2025-03-10T10:00:00Z")
    run = run_tap(tmp_path, config(org, ignore_user_ids=[agent], start_date="2025-02-01"))
    assert run.returncode == 0, run.stderr
    assert [(r["salesforce_id"], r["changed_by_id"]) for r in run.records] == [(john, rep)]


def test_contacts(tmp_path: Path) -> None:
    with Sandbox(seed=seed()) as sb:
        carla = str(sb.records("Contact")[0]["Id"])
        sb.update_as(person(sb), "Contact", carla, {"HasOptedOutOfEmail": True})
        run = run_tap(tmp_path, config(sb, salesforce_object="Contact"))
    assert run.returncode == 0, run.stderr
    assert [(r["object"], r["salesforce_id"], r["organization_user_id"]) for r in run.records] == [
        ("Contact", carla, "carla@example.com")
    ]


def test_unreadable_history_is_a_configuration_error(tmp_path: Path) -> None:
    with Sandbox(seed=seed(field_history=False)) as sb:
        run = run_tap(tmp_path, config(sb))
    assert run.returncode == 2
    assert "LeadHistory cannot be read by the integration user (INVALID_TYPE" in run.stderr
    assert "turn on Field History Tracking for Lead" in run.stderr
    assert run.stdout == ""


def test_bad_settings_are_named_before_anything_is_read(org: Sandbox, tmp_path: Path) -> None:
    run = run_tap(
        tmp_path,
        config(
            org,
            salesforce_object="Account",
            ignore_user_ids="005A",
            start_date="last week",
            mappings=[],
        ),
    )
    assert run.returncode == 2
    for problem in (
        "salesforce_object is 'Account'",
        "ignore_user_ids is '005A'",
        "start_date is 'last week'",
        "mappings is missing or empty",
    ):
        assert problem in run.stderr, problem
    assert org.requests == []
    unknown = run_tap(
        tmp_path, config(org, mappings=[{"id": "Nope__c", "value": "purposes.a.enabled"}])
    )
    assert unknown.returncode == 2
    assert "mappings[0] (Nope__c): Lead has no field 'Nope__c'" in unknown.stderr
    assert org.client_secret not in unknown.stderr
