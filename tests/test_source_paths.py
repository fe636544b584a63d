"""Every documented source path, dotted and flattened, end to end: Didomi record -> Salesforce.

Each case maps one path onto one field of Jane's Lead and checks what the sandbox stores.
Boolean paths go into a text field, so both `true` and `false` are visible changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from tests.conftest import base_config, run_target, singer_lines, user

RECORD = user(
    "jane@example.com",
    purposes=[
        {
            "id": "marketing",
            "enabled": False,
            "enabled_li": True,
            "values": {"topics": {"value": "a1,b2"}},
        },
        {
            "id": "cookies",
            "enabled": True,
            "preferences": [
                {
                    "id": "newsletter",
                    "enabled": True,
                    "channels": [{"id": "email", "enabled": True}, {"id": "sms", "enabled": False}],
                }
            ],
        },
    ],
    metadata={"source": "signup-form"},
    regulation="gdpr",
)
RECORD["consents"]["channels"] = [{"id": "phone", "enabled": False}]
RECORD["consents"]["vendors"] = {"enabled": ["google"], "disabled": ["facebook"]}

NOTE = "Consent_Note__c"

CASES: list[tuple[str, str, dict[str, Any], Any]] = [
    ("purposes.marketing.enabled", NOTE, {}, "false"),
    ("consents_purposes_marketing_enabled", NOTE, {}, "false"),
    ("purposes.marketing.enabled_li", NOTE, {}, "true"),
    ("consents_purposes_marketing_enabled_li", NOTE, {}, "true"),
    (
        "purposes.marketing.values.topics",
        "Didomi_Topics__c",
        {"value_map": {"a1": "News", "b2": "Offers"}},
        "News;Offers",
    ),
    ("purposes.marketing.values.topics", NOTE, {}, "a1;b2"),
    ("purposes.marketing.values.topics.b2", NOTE, {}, "true"),
    ("purposes.marketing.values.topics.zz", NOTE, {}, "false"),
    ("purposes.cookies.preferences.newsletter.enabled", NOTE, {}, "true"),
    ("consents_purposes_cookies_preferences_newsletter_enabled", NOTE, {}, "true"),
    ("purposes.cookies.preferences.newsletter.channels.sms.enabled", NOTE, {}, "false"),
    ("consents_purposes_cookies_preferences_newsletter_channel_sms_enabled", NOTE, {}, "false"),
    ("channels.phone.enabled", NOTE, {}, "false"),
    ("consents_channels_phone_enabled", NOTE, {}, "false"),
    ("vendors.google", NOTE, {}, "true"),
    ("vendors.facebook", NOTE, {}, "false"),
    ("organization_user_id", NOTE, {}, "jane@example.com"),
    ("regulation", NOTE, {}, "gdpr"),
    ("metadata.source", NOTE, {}, "signup-form"),
    ("updated_at", "Didomi_Consent_Updated__c", {}, "2024-06-18T16:40:03.512"),
    ("created_at", "Consent_Date__c", {}, "2024-03-02"),
    ("purposes.marketing.enabled", "Didomi_Newsletter__c", {"invert": True}, True),
]


@pytest.mark.parametrize(("path", "field", "options", "stored"), CASES)
def test_source_path_reaches_salesforce(
    sandbox: Sandbox,
    report_path: Path,
    path: str,
    field: str,
    options: dict[str, Any],
    stored: Any,
) -> None:
    config = base_config(sandbox, report_path, mappings=[{"id": field, "value": path, **options}])
    result = run_target(config, singer_lines([RECORD]))
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "updated"
    jane = next(r for r in sandbox.records("Lead") if r["Email"] == "jane@example.com")
    if isinstance(stored, str) and field == "Didomi_Consent_Updated__c":
        assert str(jane[field]).startswith(stored)
    elif field == "Didomi_Topics__c":
        assert set(jane[field].split(";")) == set(stored.split(";"))
    else:
        assert jane[field] == stored


def test_absent_choice_leaves_every_kind_of_field_untouched(
    sandbox: Sandbox, report_path: Path
) -> None:
    mappings = [
        {"id": field, "value": path, **options}
        for path, field, options, _ in CASES
        if path.startswith(("purposes.", "channels.", "vendors.")) and field != NOTE
    ]
    mappings += [{"id": NOTE, "value": "purposes.other.enabled"}]
    config = base_config(sandbox, report_path, mappings=mappings)
    before = next(r for r in sandbox.records("Lead") if r["Email"] == "jane@example.com")
    result = run_target(config, singer_lines([user("jane@example.com", purposes=[])]))
    assert result.line_for("jane@example.com")["outcome"] == "skipped_unchanged"
    after = next(r for r in sandbox.records("Lead") if r["Email"] == "jane@example.com")
    assert after == before


def test_empty_selection_clears_a_multi_select(sandbox: Sandbox, report_path: Path) -> None:
    mapping = {
        "id": "Didomi_Topics__c",
        "value": "purposes.marketing.values.topics",
        "value_map": {"a1": "News"},
    }
    config = base_config(sandbox, report_path, mappings=[mapping])
    selected = user(
        "jane@example.com", purposes=[{"id": "marketing", "values": {"topics": {"value": "a1"}}}]
    )
    run_target(config, singer_lines([selected]))
    assert (
        next(r for r in sandbox.records("Lead") if r["Email"] == "jane@example.com")[
            "Didomi_Topics__c"
        ]
        == "News"
    )
    cleared = user(
        "jane@example.com",
        updated_at="2024-07-01T00:00:00Z",
        purposes=[{"id": "marketing", "values": {"topics": {"value": ""}}}],
    )
    result = run_target(config, singer_lines([cleared]))
    assert result.line_for("jane@example.com")["fields"] == {"Didomi_Topics__c": None}
    assert next(r for r in sandbox.records("Lead") if r["Email"] == "jane@example.com")[
        "Didomi_Topics__c"
    ] in (None, "")
    upload = [r for r in sandbox.requests if r.kind == "ingest_upload"][-1]
    assert b'"#N/A"' in upload.body


def test_a_selection_in_a_text_field_compares_as_a_set(sandbox: Sandbox, report_path: Path) -> None:
    config = base_config(
        sandbox, report_path, mappings=[{"id": NOTE, "value": "purposes.m.values.t"}]
    )
    first = user("jane@example.com", purposes=[{"id": "m", "values": {"t": {"value": "a,b"}}}])
    run_target(config, singer_lines([first]))
    reordered = user(
        "jane@example.com",
        updated_at="2024-07-01T00:00:00Z",
        purposes=[{"id": "m", "values": {"t": {"value": "b,a"}}}],
    )
    result = run_target(config, singer_lines([reordered]))
    assert result.line_for("jane@example.com")["outcome"] == "skipped_unchanged"
