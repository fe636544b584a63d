"""The reverse reading of mappings and the send-or-skip rule (pure logic)."""

from __future__ import annotations

from datetime import datetime, timezone

from target_didomi.reverse import Choice, Outcome, ReverseMapping, decide, event_id, event_time

from target_salesforce_consent.mapping import FieldMapping


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _reverse(item: dict[str, object]) -> ReverseMapping:
    return ReverseMapping.of(FieldMapping.from_config(item, 0))


def test_invert_and_value_map_are_undone() -> None:
    opt_out = _reverse({"id": "HasOptedOutOfEmail", "value": "purposes.n.enabled",
                        "invert": True})
    assert opt_out.didomi_value(True) is False and opt_out.didomi_value("false") is True
    assert opt_out.didomi_value("TRUE") is False  # checkbox text in any case
    mapped = _reverse({"id": "Sms__c", "value": "purposes.s.enabled",
                       "value_map": {"true": "Yes"}})
    assert mapped.didomi_value("Yes") is True
    assert mapped.didomi_value("false") is False  # no entry for false: its own text
    assert isinstance(mapped.didomi_value("No"), str)


def test_a_value_two_choices_share_is_never_guessed() -> None:
    both = _reverse({"id": "Note__c", "value": "purposes.s.enabled",
                     "value_map": {"true": "Asked", "false": "Asked"}})
    assert "cannot be told" in str(both.didomi_value("Asked"))


def test_event_ids_are_derived_from_the_history_row() -> None:
    assert event_id("017A") == event_id("017A") != event_id("017B")


def test_decide() -> None:
    change = _at("2025-02-01T10:00:00Z")
    assert decide(False, change, Choice(None)) is Outcome.SENT
    assert decide(False, change, Choice(False, _at("2026-01-01T00:00:00Z"))) \
        is Outcome.SKIPPED_UNCHANGED
    assert decide(False, change, Choice(True, _at("2025-02-01T10:00:01Z"))) \
        is Outcome.SKIPPED_STALE
    assert decide(False, change, Choice(True, _at("2025-02-01T09:59:59.999Z"))) is Outcome.SENT
    tie = Choice(True, _at("2025-02-01T10:00:00.700Z"))
    assert decide(False, change, tie) is Outcome.SENT
    assert event_time(change, tie) == _at("2025-02-01T10:00:00.999Z")
    assert decide(True, change, Choice(False, _at("2025-02-01T10:00:00.700Z"))) \
        is Outcome.SKIPPED_STALE
    undated = Choice(True, None, earliest=_at("2025-01-01T00:00:00Z"),
                     latest=_at("2025-03-01T00:00:00Z"))
    assert decide(False, change, undated) is Outcome.SENT
    assert decide(True, change, Choice(False, None, earliest=undated.earliest,
                                       latest=undated.latest)) is Outcome.SKIPPED_STALE
