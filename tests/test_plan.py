"""Planning per organization_user_id, as pure functions (no Salesforce involved)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from target_salesforce_consent.didomi import MergedConsent, format_timestamp, merge, parse_record
from target_salesforce_consent.mapping import FieldMapping, FieldType
from target_salesforce_consent.plan import (
    csv_columns,
    desired_values,
    parse_salesforce_datetime,
    plan_group,
)
from target_salesforce_consent.report import Outcome
from target_salesforce_consent.settings import ResolvedSettings, Settings

TYPES = {
    "HasOptedOutOfEmail": FieldType("HasOptedOutOfEmail", "boolean"),
    "Topics__c": FieldType("Topics__c", "multipicklist", picklist_values=("A", "B")),
    "Consent_At__c": FieldType("Consent_At__c", "datetime"),
}


def resolved(**settings: Any) -> ResolvedSettings:
    mappings = (
        FieldMapping.from_config(
            {"id": "HasOptedOutOfEmail", "value": "purposes.news.enabled", "invert": True}, 0
        ),
        FieldMapping.from_config({"id": "Topics__c", "value": "purposes.news.values.t"}, 1),
    )
    base = Settings(
        instance_url="https://acme.my.salesforce.com",
        client_id="id",
        client_secret="secret",
        salesforce_object="Lead",
        mappings=mappings,
        **settings,
    )
    return ResolvedSettings(
        settings=base,
        mappings=mappings,
        field_types=TYPES,
        match_field="Email",
        consent_timestamp_field="Consent_At__c"
        if settings.get("consent_timestamp_field")
        else None,
        insert_defaults={"LastName": "Unknown", "Company": "Acme"},
        select_fields=("Id", "Email"),
    )


def consent(
    enabled: bool | None, topics: str | None = None, at: str = "2024-06-18T16:40:03.512Z"
) -> MergedConsent:
    purpose: dict[str, Any] = {"id": "news", "enabled": enabled}
    if topics is not None:
        purpose["values"] = {"t": {"value": topics}}
    record = {"organization_user_id": "a@b.c", "updated_at": at,
              "consents": {"purposes": [purpose]}}  # fmt: skip
    return merge([parse_record(record)])


def lead(**fields: Any) -> dict[str, Any]:
    return {"Id": "00Q000000000001AAA", "Email": "a@b.c", "IsConverted": False, **fields}


def test_update_sends_only_changed_cells() -> None:
    rs = resolved()
    desired = desired_values(consent(False, "A,B"), rs)
    plan = plan_group("a@b.c", desired, [lead(HasOptedOutOfEmail=True, Topics__c="B;A")], rs)
    assert plan.outcome is Outcome.SKIPPED_UNCHANGED
    plan = plan_group("a@b.c", desired, [lead(HasOptedOutOfEmail=False, Topics__c="B;A")], rs)
    assert plan.outcome is None
    assert plan.update_rows == [{"Id": "00Q000000000001AAA", "HasOptedOutOfEmail": "true"}]
    assert plan.fields == {"HasOptedOutOfEmail": True, "Topics__c": "A;B"}


def test_no_choice_writes_nothing_and_an_empty_selection_clears() -> None:
    rs = resolved()
    assert desired_values(consent(None), rs).cells == {}
    cleared = desired_values(consent(None, ""), rs)
    assert cleared.cells == {"Topics__c": "#N/A"}
    assert cleared.report_fields == {"Topics__c": None}
    plan = plan_group("a@b.c", cleared, [lead(Topics__c="A")], rs)
    assert plan.update_rows == [{"Id": "00Q000000000001AAA", "Topics__c": "#N/A"}]


def test_unmatched_converted_and_multiple_matches() -> None:
    rs = resolved()
    desired = desired_values(consent(True), rs)
    assert plan_group("a@b.c", desired, [], rs).outcome is Outcome.SKIPPED_UNMATCHED
    converted = plan_group("a@b.c", desired, [lead(IsConverted=True)], rs)
    assert converted.outcome is Outcome.SKIPPED_CONVERTED
    assert converted.salesforce_ids == ("00Q000000000001AAA",)
    twins = [lead(HasOptedOutOfEmail=True), {**lead(HasOptedOutOfEmail=True), "Id": "00Q2"}]
    skip = plan_group("a@b.c", desired, twins, resolved(on_multiple_matches="skip"))
    assert skip.outcome is Outcome.SKIPPED_MULTIPLE_MATCHES
    assert skip.salesforce_ids == ("00Q000000000001AAA", "00Q2")
    both = plan_group("a@b.c", desired, twins, rs)
    assert [row["Id"] for row in both.update_rows] == ["00Q000000000001AAA", "00Q2"]


def test_insert_uses_defaults_mapped_values_win_and_nothing_is_cleared() -> None:
    rs = resolved(upsert_mode=True)
    desired = desired_values(consent(True, ""), rs)
    plan = plan_group("New@B.c", desired, [], rs)
    assert plan.outcome is None
    assert plan.insert_row == {
        "LastName": "Unknown",
        "Company": "Acme",
        "HasOptedOutOfEmail": "false",
        "Topics__c": "",
        "Email": "New@B.c",
    }
    assert plan_group("x", desired_values(consent(None), rs), [], rs).outcome is (
        Outcome.SKIPPED_UNCHANGED
    )


@pytest.mark.parametrize(
    ("held", "outcome"),
    [
        ("2024-06-18T16:40:03.512+0000", Outcome.SKIPPED_STALE),  # at the consent: stale
        ("2024-06-19T00:00:00.000+0000", Outcome.SKIPPED_STALE),
        ("2024-06-18T16:40:03.511+0000", None),  # a millisecond older: written
        (None, None),
    ],
)
def test_newest_consent_wins(held: str | None, outcome: Outcome | None) -> None:
    rs = resolved(consent_timestamp_field="Consent_At__c")
    desired = desired_values(consent(False), rs)
    plan = plan_group("a@b.c", desired, [lead(HasOptedOutOfEmail=False, Consent_At__c=held)], rs)
    assert plan.outcome is outcome
    if outcome is None:
        assert plan.update_rows[0]["Consent_At__c"] == "2024-06-18T16:40:03.512Z"


def test_datetime_helpers() -> None:
    moment = datetime(2024, 6, 18, 16, 40, 3, 512999, tzinfo=timezone.utc)
    assert format_timestamp(moment) == "2024-06-18T16:40:03.512Z"
    assert parse_salesforce_datetime("2024-06-18T18:40:03.512+0200") == moment.replace(
        microsecond=512000
    )
    assert parse_salesforce_datetime("not a date") is None
    assert parse_salesforce_datetime(None) is None


def test_csv_columns_follow_the_mapping_order() -> None:
    rows = [{"Id": "1", "Topics__c": "A"}, {"Id": "2", "HasOptedOutOfEmail": "true", "X": "y"}]
    assert csv_columns(["Id"], rows, ["HasOptedOutOfEmail", "Topics__c"]) == [
        "Id",
        "HasOptedOutOfEmail",
        "Topics__c",
        "X",
    ]
