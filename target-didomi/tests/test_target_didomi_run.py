"""target-didomi through its real CLI against the Didomi emulator, over HTTP on loopback:
each outcome, the event it sends, batches, resends, dry runs and configuration errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tap_didomi.emulator import DidomiEmulator
from target_didomi.reverse import event_id
from target_didomi_helpers import TargetRunner, change, config, didomi_event

JANE = "jane@example.com"


def _purpose(emu: DidomiEmulator, ouid: str, purpose: str) -> dict[str, Any] | None:
    user = next(u for u in emu.users() if u["organization_user_id"] == ouid)
    return next((p for p in user["consents"]["purposes"] if p["id"] == purpose), None)


def _only(run: Any) -> dict[str, Any]:
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.report) == 1, run.report
    line: dict[str, Any] = run.report[0]
    return line


def test_a_rep_opt_out_is_sent_as_an_event_dated_when_it_was_made(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    emulator.add_events([didomi_event(JANE, "newsletter", True, "2025-01-01T09:00:00.000Z",
                                      "didomi-1")])
    report = tmp_path / "report.jsonl"
    run = run_target(config(emulator, report), [
        change("0170000000000001", JANE, "HasOptedOutOfEmail", True,
               "2025-02-01T10:00:00.000Z")])
    line = _only(run)
    expected_id = event_id("0170000000000001")
    assert line == {
        "stream": "consent_changes", "history_id": "0170000000000001",
        "salesforce_id": "00Q000000000001AAA", "organization_user_id": JANE,
        "field": "HasOptedOutOfEmail", "changed_at": "2025-02-01T10:00:00.000Z",
        "outcome": "sent", "value": False, "event_id": expected_id, "didomi_value": True,
        "didomi_changed_at": "2025-01-01T09:00:00.000Z", "error": None,
    }
    sent = [e for e in emulator.events if e["id"] == expected_id]
    assert len(sent) == 1
    assert sent[0]["created_at"] == "2025-02-01T10:00:00.000Z"
    assert sent[0]["consents"]["purposes"] == [{"id": "newsletter", "enabled": False}]
    assert sent[0]["delegate"]["id"] == "005000000000002AAA"
    assert "005000000000002AAA" in sent[0]["delegate"]["name"]
    assert sent[0]["delegate"]["metadata"]["history_id"] == "0170000000000001"
    assert _purpose(emulator, JANE, "newsletter") == {"id": "newsletter", "enabled": False}
    assert run.states == [{"run": 1}]
    assert emulator.api_secret not in run.stdout + run.stderr


def test_what_didomi_already_holds_is_skipped_unchanged_and_a_resend_creates_nothing(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    records = [change("h1", JANE, "HasOptedOutOfEmail", True, "2025-02-01T10:00:00.000Z")]
    settings = config(emulator, tmp_path / "report.jsonl")
    assert _only(run_target(settings, records))["outcome"] == "sent"
    again = _only(run_target(settings, records))
    assert again["outcome"] == "skipped_unchanged"
    assert again["didomi_value"] is False
    assert len(emulator.events) == 1
    assert [c.method for c in emulator.calls if c.path == "/consents/events"].count("POST") == 1


def test_a_newer_choice_in_didomi_makes_the_change_stale_judged_per_purpose(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    emulator.add_events([
        didomi_event(JANE, "newsletter", True, "2025-03-01T00:00:00.000Z", "newsletter-newer"),
        didomi_event("john@example.com", "newsletter", True, "2025-01-01T00:00:00.000Z",
                     "newsletter-older"),
        # A newer choice on another purpose does not make John's newsletter choice new.
        didomi_event("john@example.com", "sms", True, "2025-03-01T00:00:00.000Z", "sms-newer"),
    ])
    run = run_target(config(emulator, tmp_path / "report.jsonl"), [
        change("h1", JANE, "HasOptedOutOfEmail", True, "2025-02-01T00:00:00.000Z"),
        change("h2", "john@example.com", "HasOptedOutOfEmail", True, "2025-02-01T00:00:00.000Z"),
    ])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outcomes() == ["skipped_stale", "sent"]
    assert run.report[0]["didomi_changed_at"] == "2025-03-01T00:00:00.000Z"
    assert _purpose(emulator, JANE, "newsletter") == {"id": "newsletter", "enabled": True}
    assert _purpose(emulator, "john@example.com", "newsletter") == {"id": "newsletter",
                                                                   "enabled": False}


def test_on_a_tie_to_the_second_the_opt_out_wins(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    emulator.add_events([
        # Didomi opted Jane in at 10:00:00.400; a rep opted her out at 10:00:00 (to the second).
        didomi_event(JANE, "newsletter", True, "2025-02-01T10:00:00.400Z", "in"),
        # Didomi opted John out at 10:00:00.400; a rep opted him in within the same second.
        didomi_event("john@example.com", "newsletter", False, "2025-02-01T10:00:00.400Z", "out"),
    ])
    run = run_target(config(emulator, tmp_path / "report.jsonl"), [
        change("h1", JANE, "HasOptedOutOfEmail", True, "2025-02-01T10:00:00.000Z"),
        change("h2", "john@example.com", "HasOptedOutOfEmail", False,
               "2025-02-01T10:00:00.000Z"),
    ])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outcomes() == ["sent", "skipped_stale"]
    # Dated at the end of its second, so that Didomi too holds the opt-out that won.
    assert emulator.events[-1]["created_at"] == "2025-02-01T10:00:00.999Z"
    assert _purpose(emulator, JANE, "newsletter") == {"id": "newsletter", "enabled": False}
    assert _purpose(emulator, "john@example.com", "newsletter") == {"id": "newsletter",
                                                                   "enabled": False}


def test_a_state_without_events_gives_the_doubt_to_the_opt_out(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    seeded = {
        "id": "u-1", "organization_id": emulator.organization_id, "version": 3,
        "created_at": "2025-01-01T00:00:00.000Z", "updated_at": "2025-03-01T00:00:00.000Z",
        "consents": {"purposes": [{"id": "newsletter", "enabled": True},
                                  {"id": "sms", "enabled": False}],
                     "vendors": {"enabled": [], "disabled": []}},
    }
    emulator.set_users([{**seeded, "organization_user_id": JANE}])
    run = run_target(config(emulator, tmp_path / "report.jsonl"), [
        # An opt-out between created_at and updated_at: the choice may be older, so it is sent.
        change("h1", JANE, "HasOptedOutOfEmail", True, "2025-02-01T00:00:00.000Z"),
        # An opt-in there: the opt-out Didomi holds may be newer, so it is kept.
        change("h2", JANE, "SMS_Consent__c", "Granted", "2025-02-01T00:00:00.000Z"),
    ])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outcomes() == ["sent", "skipped_stale"]


def test_values_that_cannot_be_carried_back_are_reported_never_guessed(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    run = run_target(config(emulator, tmp_path / "report.jsonl"), [
        change("h1", JANE, "SMS_Consent__c", "Maybe", "2025-02-01T00:00:00.000Z"),
        change("h2", JANE, "Didomi_Topics__c", "News;Offers", "2025-02-01T00:00:00.000Z"),
        change("h3", JANE, "Phone", "+33 1 23 45 67 89", "2025-02-01T00:00:00.000Z"),
        change("h4", JANE, "HasOptedOutOfEmail", None, "2025-02-01T00:00:00.000Z"),
        change("h5", JANE, "SMS_Consent__c", "Refused", "2025-02-01T00:00:00.000Z"),
    ])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outcomes() == ["skipped_unmapped"] * 4 + ["sent"]
    errors = [line["error"] for line in run.report]
    assert "'Maybe' matches none of the mapped values ('Granted', 'Refused')" in errors[0]
    assert "multi-select" in errors[1]
    assert "Phone is not the id of any mapping" in errors[2]
    assert "cleared" in errors[3]
    assert [e["consents"]["purposes"] for e in emulator.events] == [
        [{"id": "sms", "enabled": False}]]
    assert "Not carried back to Didomi: mappings[2] (Didomi_Topics__c)" in run.stderr


def test_no_ouid_and_unreadable_changes(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    run = run_target(config(emulator, tmp_path / "report.jsonl"), [
        change("h1", None, "HasOptedOutOfEmail", True, "2025-02-01T00:00:00.000Z"),
        change("h2", "  ", "HasOptedOutOfEmail", True, "2025-02-01T00:00:00.000Z"),
        change("h3", JANE, "HasOptedOutOfEmail", True, "last tuesday"),
    ])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outcomes() == ["skipped_no_ouid", "skipped_no_ouid", "failed"]
    assert "changed_at 'last tuesday' is not an ISO 8601 date-time" in run.report[2]["error"]
    assert emulator.events == []


def test_changes_of_one_run_are_judged_in_order_and_sent_100_per_request(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    records = [change(f"h{i:03d}", f"p{i}@example.com", "HasOptedOutOfEmail", True,
                      "2025-02-01T00:00:00.000Z") for i in range(150)]
    # Jane: opted out, then back in a minute later (listed in the other order).
    records += [
        change("j2", JANE, "HasOptedOutOfEmail", False, "2025-02-01T00:01:00.000Z"),
        change("j1", JANE, "HasOptedOutOfEmail", True, "2025-02-01T00:00:00.000Z"),
    ]
    run = run_target(config(emulator, tmp_path / "report.jsonl"), records)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outcomes() == ["sent"] * 152
    posts = [c for c in emulator.calls if c.method == "POST" and c.path == "/consents/events"]
    assert len(posts) == 2  # batches of 100 changes, one request each
    assert len(emulator.events) == 152
    assert _purpose(emulator, JANE, "newsletter") == {"id": "newsletter", "enabled": True}


def test_a_dry_run_reads_and_decides_but_sends_nothing(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    run = run_target(config(emulator, tmp_path / "report.jsonl", dry_run=True), [
        change("h1", JANE, "HasOptedOutOfEmail", True, "2025-02-01T00:00:00.000Z")])
    line = _only(run)
    assert line["outcome"] == "would_send" and line["event_id"] == event_id("h1")
    assert emulator.events == []
    assert run.states == []


def test_a_throttled_call_is_tried_again(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    emulator.throttle(1, retry_after=0.1)
    run = run_target(config(emulator, tmp_path / "report.jsonl"), [
        change("h1", JANE, "HasOptedOutOfEmail", True, "2025-02-01T00:00:00.000Z")])
    assert _only(run)["outcome"] == "sent"
    assert 429 in emulator.statuses("/consents/users")


def test_configuration_problems_stop_before_any_record_is_read(
    emulator: DidomiEmulator, run_target: TargetRunner, tmp_path: Path
) -> None:
    bad = config(emulator, tmp_path / "report.jsonl", api_key=None, dry_run="yes",
                 api_url="ftp://example.com",
                 mappings=[{"id": "HasOptedOutOfEmail", "value": "purposes..enabled"}])
    run = run_target(bad, [change("h1", JANE, "HasOptedOutOfEmail", True,
                                  "2025-02-01T00:00:00.000Z")])
    assert run.returncode == 2
    for words in ("api_key is missing", "dry_run is 'yes'", "api_url 'ftp://example.com'",
                  "mappings[0] (HasOptedOutOfEmail): source path 'purposes..enabled'"):
        assert words in run.stderr, run.stderr
    assert emulator.calls == [] and run.states == []

    wrong_secret = config(emulator, api_secret="not-the-secret")
    refused = run_target(wrong_secret, [])
    assert refused.returncode == 2
    assert "Didomi refused the API key" in refused.stderr
    assert "not-the-secret" not in refused.stderr

    only_multi = config(emulator, mappings=[
        {"id": "Didomi_Topics__c", "value": "purposes.newsletter.values.topics"}])
    none_back = run_target(only_multi, [])
    assert none_back.returncode == 2 and "no mapping can be carried back" in none_back.stderr

