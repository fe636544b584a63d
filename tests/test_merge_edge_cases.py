"""Edge cases of whole-run merging and the fast reading path found in review.

Each test failed before its fix: offsets the fast reader must refuse, memoised cells of equal
numbers written differently, sub-millisecond ordering, records without a timestamp against a
Salesforce consent timestamp, and a newer record that fails on arrival.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from salesforce_sandbox import Sandbox

from target_salesforce_consent.didomi import Needs, RecordError, parse_record, read_needed
from tests.conftest import SEED, base_config, event, newsletter, run_target, singer_lines, user

TS_FIELD = "Didomi_Consent_Updated__c"
NEWSLETTER = [{"id": "Didomi_Newsletter__c", "value": "purposes.newsletter.enabled"}]


def lead_of(sb: Sandbox, email: str) -> dict[str, Any]:
    found = [r for r in sb.records("Lead") if (r.get("Email") or "").lower() == email.lower()]
    assert len(found) == 1, found
    return found[0]


# -- the fast reader must agree with parse_record ---------------------------------------------


def test_fast_reader_refuses_an_offset_parse_record_refuses() -> None:
    """`+00:60` is no UTC offset: parse_record fails the record, the fast reader must not
    accept it (datetime.fromisoformat reads it as +01:00, `+00:99` as +01:39)."""
    raw = user("jane@example.com", purposes=[newsletter(True)],
               updated_at="2024-06-18T16:40:03.512+00:60")  # fmt: skip
    needs = Needs(purposes=frozenset({"newsletter"}))
    try:
        parse_record(raw)
    except RecordError:
        pass
    else:  # pragma: no cover - parse_record refuses it today
        raise AssertionError("parse_record was expected to refuse the offset")
    assert read_needed(raw, needs) is None


def test_an_offset_with_60_minutes_fails_the_record_instead_of_writing(tmp_path: Path) -> None:
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        config = base_config(sb, tmp_path / "report.jsonl", mappings=NEWSLETTER)
        bad = user("jane@example.com", purposes=[newsletter(True)],
                   updated_at="2024-06-18T16:40:03.512+00:99")  # fmt: skip
        result = run_target(config, singer_lines([bad]))
        assert result.error is None, result.stderr
        assert result.report[0]["outcome"] == "failed", result.report
        assert lead_of(sb, "jane@example.com").get("Didomi_Newsletter__c") is not True


# -- ChoiceReader memoisation ------------------------------------------------------------------


def test_choice_cache_does_not_confuse_equal_decimals_with_different_text(tmp_path: Path) -> None:
    """Decimal('1.5') == Decimal('1.50') and both hash alike, but value_map is keyed by their
    text: the memoised cells must not let the first one seen decide the other's."""
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        mappings = [{"id": "Consent_Note__c", "value": "metadata.score",
                     "value_map": {"1.50": "High"}}]  # fmt: skip
        config = base_config(sb, tmp_path / "report.jsonl", mappings=mappings)
        jane = user("jane@example.com", metadata={"score": "__JANE__"})
        john = user("john@example.com", metadata={"score": "__JOHN__"})
        # JSON numbers exactly as a tap sends them: 1.5 and 1.50
        messages = (
            singer_lines([jane, john])
            .replace('"__JANE__"', "1.5")
            .replace('"__JOHN__"', "1.50")
        )
        result = run_target(config, messages)
        assert result.error is None, result.stderr
        assert lead_of(sb, "jane@example.com").get("Consent_Note__c") == "1.5"
        assert lead_of(sb, "john@example.com").get("Consent_Note__c") == "High"


# -- order of arrival --------------------------------------------------------------------------


def _newsletter_after(order: list[str], tmp_path: Path) -> Any:
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        config = base_config(sb, tmp_path / f"report-{'-'.join(order)}.jsonl",
                             mappings=NEWSLETTER)  # fmt: skip
        records = {
            # the newer one, by 0.8 ms, within the same millisecond
            "newer": event("jane@example.com", purposes=[newsletter(False)],
                           created_at="2024-06-19T08:00:00.000900Z"),
            "older": event("jane@example.com", purposes=[newsletter(True)],
                           created_at="2024-06-19T08:00:00.000100Z"),
        }  # fmt: skip
        result = run_target(config, singer_lines([records[name] for name in order]))
        assert result.error is None, result.stderr
        return lead_of(sb, "jane@example.com").get("Didomi_Newsletter__c")


def test_sub_millisecond_timestamps_merge_in_timestamp_order_not_arrival_order(
    tmp_path: Path,
) -> None:
    """Records merge in timestamp order to the microsecond, whatever their arrival order (the
    truncation to Salesforce's milliseconds applies only when comparing with its stamp)."""
    older_first = _newsletter_after(["older", "newer"], tmp_path)
    newer_first = _newsletter_after(["newer", "older"], tmp_path)
    assert (older_first, newer_first) == (False, False)


# -- records without a timestamp ---------------------------------------------------------------


def test_a_record_without_timestamp_does_not_undo_a_newer_salesforce_consent(
    tmp_path: Path,
) -> None:
    """A record without a timestamp cannot be shown newer than the consent timestamp
    Salesforce holds, so it is skipped_stale (old data never undoes a newer choice)."""
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        sb.add_records("Lead", [{"LastName": "Held", "Company": "Acme", "Email": "held@example.com",
                                 "Didomi_Newsletter__c": True,
                                 TS_FIELD: "2024-06-01T11:00:00.000Z"}])  # fmt: skip
        config = base_config(sb, tmp_path / "report.jsonl", mappings=NEWSLETTER,
                             consent_timestamp_field=TS_FIELD)  # fmt: skip
        rec = user("held@example.com", purposes=[newsletter(False)])
        del rec["updated_at"], rec["created_at"]
        result = run_target(config, singer_lines([rec]))
        assert result.error is None, result.stderr
        assert result.report[0]["outcome"] == "skipped_stale", result.report
        assert lead_of(sb, "held@example.com")["Didomi_Newsletter__c"] is True




# -- a record failed on arrival ---------------------------------------------------------------


def test_a_newer_opt_out_failed_for_another_field_does_not_let_an_older_opt_in_through(
    tmp_path: Path,
) -> None:
    """The 12:00 record (opt-out) fails for its note "#N/A"; it still outranks the 10:00
    opt-in for the fields it carries, so the older opt-in is not written in its place."""
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        mappings = [*NEWSLETTER, {"id": "Consent_Note__c", "value": "metadata.note"}]
        config = base_config(sb, tmp_path / "report.jsonl", mappings=mappings)
        old = user("jane@example.com", purposes=[newsletter(True)],
                   updated_at="2024-06-01T10:00:00.000Z", metadata={"note": "ok"})  # fmt: skip
        new = user("jane@example.com", purposes=[newsletter(False)],
                   updated_at="2024-06-01T12:00:00.000Z", metadata={"note": "#N/A"})  # fmt: skip
        result = run_target(config, singer_lines([old, new]))
        assert [line["outcome"] for line in result.report][1] == "failed"
        assert lead_of(sb, "jane@example.com").get("Didomi_Newsletter__c") is not True
