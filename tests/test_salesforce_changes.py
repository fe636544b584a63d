"""Pure logic of respecting newer Salesforce changes: the identity of the token's user, the
history queries, and the per-field decision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, cast

import pytest

from target_salesforce_consent.extract import FieldChoice
from target_salesforce_consent.plan import GroupPlan, plan_group, to_micros
from target_salesforce_consent.report import Outcome
from target_salesforce_consent.salesforce.auth import identity_user_id
from target_salesforce_consent.salesforce.history import (
    FieldChange,
    HistoryQueryBuilder,
    changes_since_query,
    format_changed_at,
    pages_needed,
    parse_change,
)
from target_salesforce_consent.salesforce.soql import MAX_URL_BYTES, URL_SAFETY_MARGIN, form_encode
from target_salesforce_consent.salesforce_changes import (
    choice_is_newer,
    newest_changes,
    oldest_choice_second,
    respect_changes,
)
from target_salesforce_consent.store import PersonState, RecordChoices
from tests.test_plan import consent, lead, resolved

LEAD_ID = "00Q000000000001AAA"
REP = "005000000000002AAA"


@pytest.mark.parametrize(
    ("identity", "user"),
    [
        ("https://login.salesforce.com/id/00Dd000000XXXXXXX/005d000000XXXXX", "005d000000XXXXX"),
        (
            "https://acme.my.salesforce.com/id/00D000000000001AAA/005000000000001AAA/",
            "005000000000001AAA",
        ),
        (None, None),
        ("", None),
        ("https://login.salesforce.com/id/00D000000000001AAA", None),
        ("https://login.salesforce.com/services/005000000000001AAA/005000000000001AAA", None),
        ("https://login.salesforce.com/id/00D000000000001AAA/not an id", None),
        (42, None),
    ],
)
def test_identity_url_names_the_user(identity: Any, user: str | None) -> None:
    assert identity_user_id(identity) == user


def test_history_queries_read_only_mapped_fields_by_others_in_chunks_under_the_uri_limit() -> None:
    prefix = "/services/data/v62.0/query"
    builder = HistoryQueryBuilder(
        "Contact", ["HasOptedOutOfEmail", "Didomi_Newsletter__c"], ["005INTEGRATION00AAA"],
        url_prefix=prefix,
    )  # fmt: skip
    ids = [f"003{n:012d}AAA" for n in range(1200)]
    queries = builder.queries(ids)
    assert queries[0].startswith(
        "SELECT Id, ContactId, Field, OldValue, NewValue, CreatedDate, CreatedById "
        "FROM ContactHistory WHERE ContactId IN ('003000000000000AAA', "
    )
    assert queries[0].endswith(
        ") AND Field IN ('HasOptedOutOfEmail', 'Didomi_Newsletter__c') "
        "AND CreatedById NOT IN ('005INTEGRATION00AAA')"
    )
    assert 2 <= len(queries) <= 4  # about 650 Ids per query
    for soql in queries:  # as the client sends it
        assert len(prefix + "?q=" + form_encode(soql)) <= MAX_URL_BYTES - URL_SAFETY_MARGIN
    assert sum(q.count("'003") for q in queries) == 1200


def test_history_field_names_cannot_smuggle_soql() -> None:
    with pytest.raises(ValueError):
        HistoryQueryBuilder("Lead", ["Email') OR Id != ('"], [])
    with pytest.raises(ValueError):
        HistoryQueryBuilder("Account", ["Email"], [])


def test_incremental_query_is_ordered_and_bounded() -> None:
    since = datetime(2025, 3, 10, 9, 15, 22, 120000, tzinfo=timezone.utc)
    soql = changes_since_query("Lead", ["HasOptedOutOfEmail"], ["005A", "005B", ""], since)
    assert soql == (
        "SELECT Id, LeadId, Field, OldValue, NewValue, CreatedDate, CreatedById FROM LeadHistory "
        "WHERE Field IN ('HasOptedOutOfEmail') AND CreatedById NOT IN ('005A', '005B') "
        "AND CreatedDate >= 2025-03-10T09:15:22Z ORDER BY CreatedDate ASC, Id ASC"
    )
    assert "CreatedDate >=" not in changes_since_query("Lead", ["X__c"], [], None)


def test_history_rows_are_read_with_the_callers_field_names() -> None:
    names = {"hasoptedoutofemail": "HasOptedOutOfEmail"}
    row = {
        "Id": "017A",
        "LeadId": LEAD_ID,
        "Field": "hasOptedOutOfEmail",
        "OldValue": False,
        "NewValue": True,
        "CreatedDate": "2025-03-10T09:15:22.000+0000",
        "CreatedById": REP,
    }
    change = parse_change(row, "LeadId", names)
    assert change == FieldChange(
        "017A", LEAD_ID, "HasOptedOutOfEmail", False, True,
        datetime(2025, 3, 10, 9, 15, 22, tzinfo=timezone.utc), REP,
    )  # fmt: skip
    assert format_changed_at(change.changed_at) == "2025-03-10T09:15:22.000Z"
    assert parse_change({**row, "Field": "Phone"}, "LeadId", names) is None
    assert parse_change({**row, "CreatedDate": None}, "LeadId", names) is None


def change(field: str, at: str, record_id: str = LEAD_ID) -> FieldChange:
    when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return FieldChange("017" + at, record_id, field, None, True, when, REP)


def test_the_newest_change_per_record_and_field_counts() -> None:
    newest = newest_changes(
        [
            change("HasOptedOutOfEmail", "2025-01-01T00:00:00Z"),
            change("HasOptedOutOfEmail", "2025-02-01T00:00:00Z"),
            change("HasOptedOutOfEmail", "2024-12-01T00:00:00Z"),
            change("Topics__c", "2024-12-01T00:00:00Z", "00Q000000000002AAA"),
        ]
    )
    feb = to_micros(datetime(2025, 2, 1, tzinfo=timezone.utc))
    assert newest[LEAD_ID] == {"HasOptedOutOfEmail": feb}
    assert set(newest) == {LEAD_ID, "00Q000000000002AAA"}


def _plan(choice_at: str, **held: Any) -> tuple[Any, Any, list[dict[str, Any]]]:
    person = consent(True, "A", at=choice_at)  # opted in, topic A
    records = [lead(HasOptedOutOfEmail=True, Topics__c=None, **held)]
    return person, plan_group(person, records, resolved()), records


def test_a_rep_change_after_the_choice_keeps_that_field_and_the_rest_is_written() -> None:
    person, plan, records = _plan("2025-01-01T00:00:00Z")
    assert plan.update_rows == [{"Id": LEAD_ID, "HasOptedOutOfEmail": "false", "Topics__c": "A"}]
    newest = newest_changes([change("HasOptedOutOfEmail", "2025-01-02T00:00:00Z")])
    respected = respect_changes(plan, person, records, newest, None)
    assert respected.outcome is None
    assert respected.update_rows == [{"Id": LEAD_ID, "Topics__c": "A"}]
    assert respected.kept == {LEAD_ID: ["HasOptedOutOfEmail"]}
    # the report claims what Salesforce holds for the field kept, not the choice
    assert respected.fields == {"HasOptedOutOfEmail": True, "Topics__c": "A"}


def test_a_rep_change_before_the_choice_is_overwritten() -> None:
    person, plan, records = _plan("2025-01-03T00:00:00Z")
    newest = newest_changes([change("HasOptedOutOfEmail", "2025-01-02T00:00:00Z")])
    assert respect_changes(plan, person, records, newest, None) == plan


@pytest.mark.parametrize(
    ("choice_at", "changed_at", "kept"),
    [
        # history to the second: a choice within the change's second is not newer
        ("2025-01-02T00:00:00.500Z", "2025-01-02T00:00:00Z", True),
        ("2025-01-02T00:00:01.000Z", "2025-01-02T00:00:00Z", False),
        # a change with milliseconds is compared to the millisecond
        ("2025-01-02T00:00:00.5004Z", "2025-01-02T00:00:00.500Z", True),
        ("2025-01-02T00:00:00.501Z", "2025-01-02T00:00:00.500Z", False),
    ],
)
def test_ties_go_to_the_persons_change(choice_at: str, changed_at: str, kept: bool) -> None:
    person, plan, records = _plan(choice_at)
    newest = newest_changes([change("HasOptedOutOfEmail", changed_at)])
    respected = respect_changes(plan, person, records, newest, None)
    assert respected.kept == ({LEAD_ID: ["HasOptedOutOfEmail"]} if kept else {})


def test_nothing_left_to_write_is_skipped_salesforce_newer_without_a_timestamp() -> None:
    person = consent(True, "A", at="2025-01-01T00:00:00Z")
    records = [lead(HasOptedOutOfEmail=True, Topics__c="B",
                    Consent_At__c="2024-01-01T00:00:00.000+0000")]  # fmt: skip
    plan = plan_group(person, records, resolved(consent_timestamp_field="Consent_At__c"))
    assert plan.update_rows[0]["Consent_At__c"]
    newest = newest_changes(
        [
            change("HasOptedOutOfEmail", "2025-01-05T00:00:00Z"),
            change("Topics__c", "2025-01-05T00:00:00Z"),
        ]
    )
    respected = respect_changes(plan, person, records, newest, "Consent_At__c")
    assert respected.outcome is Outcome.SKIPPED_SALESFORCE_NEWER
    assert respected.update_rows == [] and respected.stamp is None
    assert respected.kept == {LEAD_ID: ["HasOptedOutOfEmail", "Topics__c"]}
    assert respected.fields == {
        "HasOptedOutOfEmail": True,
        "Topics__c": "B",
        "Consent_At__c": "2024-01-01T00:00:00.000+0000",
    }


def test_changes_of_other_records_or_fields_change_nothing() -> None:
    person, plan, records = _plan("2025-01-01T00:00:00Z")
    newest = newest_changes(
        [
            change("HasOptedOutOfEmail", "2025-01-05T00:00:00Z", "00Q000000000009AAA"),
            change("Email", "2025-01-05T00:00:00Z"),
        ]
    )
    assert respect_changes(plan, person, records, newest, None) == plan


@dataclass
class Planned:
    state: PersonState
    plan: GroupPlan | None


def test_the_history_a_batch_needs_starts_at_its_oldest_choices_second() -> None:
    newer, plan_newer, _ = _plan("2025-01-03T00:00:00Z")
    older, plan_older, _ = _plan("2025-01-02T08:30:15.750Z")
    skipped, _, _ = _plan("2024-01-01T00:00:00Z")
    groups = {"a": Planned(newer, plan_newer), "b": Planned(older, plan_older),
              "c": Planned(skipped, None)}  # fmt: skip
    since = oldest_choice_second(groups)
    assert since == datetime(2025, 1, 2, 8, 30, 15, tzinfo=timezone.utc)
    # A person's change before that second never keeps a field; one within it may.
    assert since is not None
    just_before = to_micros(since) - 1000
    within = to_micros(since)  # recorded on the whole second
    oldest_ts = to_micros(datetime(2025, 1, 2, 8, 30, 15, 750_000, tzinfo=timezone.utc))
    assert choice_is_newer(oldest_ts, just_before)
    assert not choice_is_newer(oldest_ts, within)
    # A choice to write without a timestamp is never newer: all its history is needed.
    older.choices["HasOptedOutOfEmail"].ts = None
    assert oldest_choice_second(groups) is None


def test_a_lone_records_choices_start_the_history_at_their_records_second() -> None:
    """Choices the run store hands out as a lone record's (every one at the record's time)
    give the second that the same choices held one by one give."""
    people = [_plan(at) for at in ("2025-01-03T00:00:00Z", "2025-01-02T08:30:15.750Z")]
    as_dicts = {str(n): Planned(person, plan) for n, (person, plan, _) in enumerate(people)}
    lone = {
        key: Planned(
            PersonState(
                group.state.ouid,
                RecordChoices(
                    {f: FieldChoice(c.cell, c.is_list) for f, c in group.state.choices.items()},
                    group.state.newest,
                ),
                group.state.newest,
            ),
            group.plan,
        )
        for key, group in as_dicts.items()
    }
    assert oldest_choice_second(lone) == oldest_choice_second(as_dicts)
    assert oldest_choice_second(lone) == datetime(2025, 1, 2, 8, 30, 15, tzinfo=timezone.utc)
    # A record without a timestamp: all of the history is needed.
    lone["1"].state.choices = RecordChoices(cast(RecordChoices, lone["1"].state.choices).cells,
                                            None)  # fmt: skip
    assert oldest_choice_second(lone) is None


@pytest.mark.parametrize(
    ("total", "first_page", "pages"),
    [(0, 0, 1), (1500, 1500, 1), (2001, 2000, 2), (4000, 2000, 2), (4001, 2000, 3)],
)
def test_pages_a_query_takes(total: int, first_page: int, pages: int) -> None:
    assert pages_needed(total, first_page) == pages
