"""Source paths, mapping options and Salesforce conversions (SPEC 4, 5, 7)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from target_salesforce_consent.didomi import MergedConsent, merge, parse_record
from target_salesforce_consent.mapping import (
    FieldMapping,
    FieldType,
    MappingError,
    compatibility_problem,
    parse_source_path,
    same_value,
    to_csv_cell,
    to_report_value,
)

RAW: dict[str, Any] = {
    "id": "user-1",
    "organization_user_id": " jane.doe@example.com ",
    "created_at": "2024-03-02T09:14:55.120Z",
    "updated_at": "2024-06-18T18:40:03.512+02:00",
    "regulation": "GDPR",
    "metadata": {
        "crm_segment": "b2b",
        "score": 7,
        "vip": True,
        "tags": ["a", "b"],
        "nested": {"level": "deep"},
        "dotted.key": "whole",
        "empty": "",
        "nothing": None,
    },
    "consents": {
        "purposes": [
            {
                "id": "marketing-9HmMn6Vt",
                "enabled": True,
                "enabled_li": False,
                "values": {
                    "CFWKNVJV": {"value": "dK7rBBXk,Ab12Cd34"},
                    "P0p0P0p0": {"value": ""},
                },
            },
            {"id": "select_basic_ads", "enabled": False, "enabled_li": True},
            {"id": "profiling", "enabled": None},
            {
                "id": "cookies",
                "enabled": True,
                "preferences": [
                    {
                        "id": "newsletter",
                        "enabled": False,
                        "channels": [
                            {"id": "email", "enabled": True},
                            {"id": "sms", "enabled": False},
                            {"id": "push", "enabled": None},
                        ],
                    }
                ],
            },
        ],
        "channels": [{"id": "email", "enabled": True}, {"id": "sms_text", "enabled": False}],
        "vendors": {"enabled": ["google", "c:hotjar"], "disabled": ["facebook"]},
    },
}


@pytest.fixture
def consent() -> MergedConsent:
    return merge([parse_record(RAW)])


def fm(value: str, **extra: Any) -> FieldMapping:
    return FieldMapping.from_config({"id": "Field__c", "value": value, **extra}, 0)


BOOLEAN = FieldType("HasOptedOutOfEmail", "boolean")
STRING = FieldType("Text__c", "string", length=255)
TEXTAREA = FieldType("Notes__c", "textarea", length=32768)
MULTI = FieldType("Topics__c", "multipicklist", picklist_values=("News", "Offers", "Events"))
RESTRICTED_MULTI = FieldType(
    "Topics__c", "multipicklist", picklist_values=("News", "Offers"), restricted_picklist=True
)
PICKLIST = FieldType("Status__c", "picklist", picklist_values=("Yes", "No"))
RESTRICTED_PICKLIST = FieldType(
    "Status__c", "picklist", picklist_values=("Yes", "No"), restricted_picklist=True
)
DATETIME = FieldType("Consent_At__c", "datetime")
DATE = FieldType("Birthdate", "date")
EMAIL = FieldType("Email", "email", length=80)
NUMBER = FieldType("Score__c", "double")


# --------------------------------------------------------------------------------------------
# Source paths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "flattened", "kind", "expected"),
    [
        (
            "purposes.marketing-9HmMn6Vt.enabled",
            "consents_purposes_marketing-9HmMn6Vt_enabled",
            "boolean",
            True,
        ),
        (
            "purposes.marketing-9HmMn6Vt.enabled_li",
            "consents_purposes_marketing-9HmMn6Vt_enabled_li",
            "boolean",
            False,
        ),
        (
            "purposes.select_basic_ads.enabled",
            "consents_purposes_select_basic_ads_enabled",
            "boolean",
            False,
        ),
        (
            "purposes.select_basic_ads.enabled_li",
            "consents_purposes_select_basic_ads_enabled_li",
            "boolean",
            True,
        ),
        (
            "purposes.cookies.preferences.newsletter.enabled",
            "consents_purposes_cookies_preferences_newsletter_enabled",
            "boolean",
            False,
        ),
        (
            "purposes.cookies.preferences.newsletter.channels.email.enabled",
            "consents_purposes_cookies_preferences_newsletter_channel_email_enabled",
            "boolean",
            True,
        ),
        (
            "purposes.cookies.preferences.newsletter.channels.sms.enabled",
            "consents_purposes_cookies_preferences_newsletter_channel_sms_enabled",
            "boolean",
            False,
        ),
        ("channels.email.enabled", "consents_channels_email_enabled", "boolean", True),
        ("channels.sms_text.enabled", "consents_channels_sms_text_enabled", "boolean", False),
    ],
)
def test_paths_with_flattened_alias(
    consent: MergedConsent, dotted: str, flattened: str, kind: str, expected: Any
) -> None:
    path = parse_source_path(dotted)
    alias = parse_source_path(flattened)
    assert alias == path
    assert str(path) == dotted
    assert str(alias) == dotted
    assert path.kind == kind
    assert path.resolve(consent) == expected


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("purposes.marketing-9HmMn6Vt.values.CFWKNVJV", "list", ["dK7rBBXk", "Ab12Cd34"]),
        ("purposes.marketing-9HmMn6Vt.values.P0p0P0p0", "list", []),
        ("purposes.marketing-9HmMn6Vt.values.unknown", "list", None),
        ("purposes.absent.values.CFWKNVJV", "list", None),
        ("purposes.marketing-9HmMn6Vt.values.CFWKNVJV.dK7rBBXk", "boolean", True),
        ("purposes.marketing-9HmMn6Vt.values.CFWKNVJV.other", "boolean", False),
        ("purposes.marketing-9HmMn6Vt.values.P0p0P0p0.x", "boolean", False),
        ("purposes.marketing-9HmMn6Vt.values.unknown.x", "boolean", None),
        ("purposes.profiling.enabled", "boolean", None),
        ("purposes.profiling.enabled_li", "boolean", None),
        ("purposes.absent.enabled", "boolean", None),
        ("purposes.cookies.preferences.absent.enabled", "boolean", None),
        ("purposes.cookies.preferences.newsletter.channels.push.enabled", "boolean", None),
        ("purposes.cookies.preferences.newsletter.channels.fax.enabled", "boolean", None),
        ("channels.absent.enabled", "boolean", None),
        ("vendors.google", "boolean", True),
        ("vendors.c:hotjar", "boolean", True),
        ("vendors.facebook", "boolean", False),
        ("vendors.unknown", "boolean", None),
        ("organization_user_id", "text", "jane.doe@example.com"),
        ("regulation", "text", "gdpr"),
        ("updated_at", "datetime", "2024-06-18T16:40:03.512Z"),
        ("created_at", "datetime", "2024-03-02T09:14:55.120Z"),
        ("metadata.crm_segment", "text", "b2b"),
        ("metadata.score", "text", 7),
        ("metadata.vip", "text", True),
        ("metadata.tags", "text", '["a", "b"]'),
        ("metadata.nested", "text", '{"level": "deep"}'),
        ("metadata.nested.level", "text", "deep"),
        ("metadata.dotted.key", "text", "whole"),
        ("metadata.nothing", "text", None),
        ("metadata.missing", "text", None),
        ("consents.purposes.select_basic_ads.enabled", "boolean", False),
    ],
)
def test_dotted_paths(consent: MergedConsent, text: str, kind: str, expected: Any) -> None:
    path = parse_source_path(text)
    assert path.kind == kind
    assert path.resolve(consent) == expected


def test_canonical_form_drops_consents_prefix_and_whitespace() -> None:
    assert str(parse_source_path("  consents.vendors.google ")) == "vendors.google"
    assert str(parse_source_path("metadata.dotted.key")) == "metadata.dotted.key"


def test_flattened_ids_with_underscores_and_hyphens() -> None:
    path = parse_source_path(
        "consents_purposes_my_purpose-x1_preferences_pref_a-2_channel_e_mail_enabled"
    )
    assert path.segments == (
        "purposes",
        "my_purpose-x1",
        "preferences",
        "pref_a-2",
        "channels",
        "e_mail",
        "enabled",
    )
    assert str(parse_source_path("consents_purposes_x_enabled_enabled")) == (
        "purposes.x_enabled.enabled"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "purposes",
        "purposes.x",
        "purposes.x.disabled",
        "purposes.x.values",
        "purposes.x.values.p.v.extra",
        "purposes.x.preferences.p",
        "purposes.x.preferences.p.channels.c",
        "purposes..enabled",
        "purposes.a b.enabled",
        "channels.email",
        "vendors",
        "vendors.a.b",
        "metadata",
        "metadata.",
        "organization_user_id.x",
        "consents_purposes_x",
        "consents_preferences_newsletter_enabled",
        "something_else",
        "tcfcs",
    ],
)
def test_bad_paths_list_accepted_forms(text: str) -> None:
    with pytest.raises(MappingError) as err:
        parse_source_path(text)
    message = str(err.value)
    assert "purposes.<purposeId>.enabled" in message
    assert "consents_channels_<channelId>_enabled" in message


def test_paths_are_case_sensitive(consent: MergedConsent) -> None:
    assert parse_source_path("purposes.COOKIES.enabled").resolve(consent) is None


# --------------------------------------------------------------------------------------------
# Mappings from config
# --------------------------------------------------------------------------------------------


def test_from_config_minimal() -> None:
    mapping = FieldMapping.from_config({"id": " Consent__c ", "value": "purposes.a.enabled"}, 3)
    assert mapping.field == "Consent__c"
    assert str(mapping.source) == "purposes.a.enabled"
    assert mapping.invert is False
    assert mapping.value_map == {}
    assert mapping.index == 3
    assert mapping.label == "mappings[3]"


def test_from_config_options() -> None:
    mapping = FieldMapping.from_config(
        {
            "id": "Topics__c",
            "value": "purposes.m.values.p",
            "value_map": {"dK7rBBXk": "News"},
            "invert": None,
        },
        0,
    )
    assert mapping.value_map == {"dK7rBBXk": "News"}
    assert mapping.invert is False


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("purposes.a.enabled", "must be an object"),
        ({"value": "purposes.a.enabled"}, 'needs "id"'),
        ({"id": "", "value": "purposes.a.enabled"}, 'needs "id"'),
        ({"id": "F"}, 'needs "value"'),
        ({"id": "F", "value": 3}, 'needs "value"'),
        ({"id": "F", "value": "purposes.a"}, "accepted forms"),
        ({"id": "F", "value": "purposes.a.enabled", "inverted": True}, "unknown key(s) inverted"),
        ({"id": "F", "value": "purposes.a.enabled", "invert": "yes"}, '"invert" must be'),
        ({"id": "F", "value": "purposes.a.values.p", "invert": True}, '"invert" applies only'),
        ({"id": "F", "value": "metadata.k", "invert": True}, '"invert" applies only'),
        ({"id": "F", "value": "purposes.a.enabled", "value_map": ["x"]}, '"value_map" must be'),
        ({"id": "F", "value": "purposes.a.enabled", "value_map": {"true": 1}}, "string to a"),
        (
            {"id": "F", "value": "purposes.a.enabled", "value_map": {"yes": "Y"}},
            'keys must be "true"',
        ),
        ({"id": "F", "value": "updated_at", "value_map": {"a": "b"}}, "does not apply"),
    ],
)
def test_from_config_errors(item: Any, fragment: str) -> None:
    with pytest.raises(MappingError) as err:
        FieldMapping.from_config(item, 4)
    assert str(err.value).startswith("mappings[4]")
    assert fragment in str(err.value)


def test_from_config_error_names_field() -> None:
    with pytest.raises(MappingError, match=r"^mappings\[1\] \(Consent__c\): source path"):
        FieldMapping.from_config({"id": "Consent__c", "value": "nope"}, 1)


# --------------------------------------------------------------------------------------------
# value_for: invert and value_map
# --------------------------------------------------------------------------------------------


def test_value_for_plain(consent: MergedConsent) -> None:
    assert fm("purposes.cookies.enabled").value_for(consent) is True
    assert fm("purposes.profiling.enabled").value_for(consent) is None
    assert fm("purposes.marketing-9HmMn6Vt.values.CFWKNVJV").value_for(consent) == [
        "dK7rBBXk",
        "Ab12Cd34",
    ]


def test_invert(consent: MergedConsent) -> None:
    assert fm("purposes.cookies.enabled", invert=True).value_for(consent) is False
    assert fm("purposes.select_basic_ads.enabled", invert=True).value_for(consent) is True
    assert fm("purposes.profiling.enabled", invert=True).value_for(consent) is None
    assert fm("vendors.facebook", invert=True).value_for(consent) is True


def test_value_map_on_list(consent: MergedConsent) -> None:
    mapping = fm("purposes.marketing-9HmMn6Vt.values.CFWKNVJV", value_map={"dK7rBBXk": "News"})
    assert mapping.value_for(consent) == ["News", "Ab12Cd34"]
    empty = fm("purposes.marketing-9HmMn6Vt.values.P0p0P0p0", value_map={"x": "X"})
    assert empty.value_for(consent) == []


def test_value_map_on_boolean(consent: MergedConsent) -> None:
    both = {"true": "Opted in", "false": "Opted out"}
    assert fm("purposes.cookies.enabled", value_map=both).value_for(consent) == "Opted in"
    assert fm("purposes.select_basic_ads.enabled", value_map=both).value_for(consent) == (
        "Opted out"
    )
    only_true = {"true": "Yes"}
    assert fm("purposes.select_basic_ads.enabled", value_map=only_true).value_for(consent) is False
    # invert applies before value_map
    inverted = fm("purposes.cookies.enabled", invert=True, value_map=both)
    assert inverted.value_for(consent) == "Opted out"
    assert fm("purposes.profiling.enabled", value_map=both).value_for(consent) is None


def test_value_map_on_text(consent: MergedConsent) -> None:
    assert fm("metadata.crm_segment", value_map={"b2b": "Business"}).value_for(consent) == (
        "Business"
    )
    assert fm("metadata.crm_segment", value_map={"b2c": "Consumer"}).value_for(consent) == "b2b"
    assert fm("metadata.score", value_map={"7": "Seven"}).value_for(consent) == "Seven"
    assert fm("regulation", value_map={"gdpr": "GDPR"}).value_for(consent) == "GDPR"


def test_empty_text_is_no_choice(consent: MergedConsent) -> None:
    assert fm("metadata.empty").value_for(consent) is None
    assert fm("metadata.crm_segment", value_map={"b2b": ""}).value_for(consent) is None


def test_datetime_value(consent: MergedConsent) -> None:
    assert fm("updated_at").value_for(consent) == "2024-06-18T16:40:03.512Z"


# --------------------------------------------------------------------------------------------
# Compatibility with the field type
# --------------------------------------------------------------------------------------------


def test_compatibility_message() -> None:
    mapping = FieldMapping.from_config({"id": "Birthdate", "value": "purposes.x.enabled"}, 2)
    assert compatibility_problem(mapping, DATE, "Lead") == (
        "mappings[2]: purposes.x.enabled yields true/false, but Lead.Birthdate is a date field; "
        "map it to a checkbox or text field, or add a value_map"
    )
    assert "but Birthdate is a date field" in (compatibility_problem(mapping, DATE) or "")


@pytest.mark.parametrize(
    ("path", "extra", "field", "ok"),
    [
        ("purposes.x.enabled", {}, BOOLEAN, True),
        ("purposes.x.enabled", {}, STRING, True),
        ("purposes.x.enabled", {}, TEXTAREA, True),
        ("purposes.x.enabled", {}, PICKLIST, True),
        ("purposes.x.enabled", {}, FieldType("C", "combobox"), True),
        ("purposes.x.enabled", {}, MULTI, False),
        ("purposes.x.enabled", {"value_map": {"true": "News"}}, MULTI, True),
        ("purposes.x.enabled", {"value_map": {"true": "Y", "false": "N"}}, BOOLEAN, False),
        ("purposes.x.enabled", {}, DATE, False),
        ("purposes.x.enabled", {}, DATETIME, False),
        ("purposes.x.enabled", {}, NUMBER, False),
        ("purposes.x.enabled", {}, EMAIL, False),
        ("purposes.x.enabled", {}, FieldType("S", "string", length=4), False),
        ("purposes.x.enabled", {}, FieldType("S", "string", length=5), True),
        ("vendors.google", {}, BOOLEAN, True),
        ("purposes.x.values.p.v", {}, BOOLEAN, True),
        ("purposes.x.values.p", {}, MULTI, True),
        ("purposes.x.values.p", {}, STRING, True),
        ("purposes.x.values.p", {}, TEXTAREA, True),
        ("purposes.x.values.p", {}, PICKLIST, True),
        ("purposes.x.values.p", {}, BOOLEAN, False),
        ("purposes.x.values.p", {}, DATE, False),
        ("purposes.x.values.p", {}, EMAIL, False),
        ("updated_at", {}, DATETIME, True),
        ("created_at", {}, DATE, True),
        ("updated_at", {}, STRING, True),
        ("updated_at", {}, TEXTAREA, True),
        ("updated_at", {}, BOOLEAN, False),
        ("updated_at", {}, MULTI, False),
        ("updated_at", {}, PICKLIST, False),
        ("organization_user_id", {}, EMAIL, True),
        ("organization_user_id", {}, STRING, True),
        ("organization_user_id", {}, FieldType("P", "phone"), True),
        ("organization_user_id", {}, FieldType("U", "url"), True),
        ("regulation", {}, PICKLIST, True),
        ("metadata.k", {}, TEXTAREA, True),
        ("metadata.k", {}, BOOLEAN, False),
        ("metadata.k", {}, DATE, False),
        ("metadata.k", {}, MULTI, False),
        ("metadata.k", {}, FieldType("R", "reference"), False),
    ],
)
def test_compatibility_rules(path: str, extra: dict[str, Any], field: FieldType, ok: bool) -> None:
    problem = compatibility_problem(fm(path, **extra), field)
    assert (problem is None) is ok, problem


def test_restricted_picklists() -> None:
    yes_no = {"true": "Yes", "false": "No"}
    assert (
        compatibility_problem(fm("purposes.x.enabled", value_map=yes_no), RESTRICTED_PICKLIST)
        is None
    )
    problem = compatibility_problem(fm("purposes.x.enabled"), RESTRICTED_PICKLIST, "Lead")
    assert problem is not None
    assert "'true', 'false'" in problem
    assert "Lead.Status__c" in problem
    assert "Yes, No" in problem
    half = compatibility_problem(
        fm("purposes.x.enabled", value_map={"true": "Yes"}), RESTRICTED_PICKLIST
    )
    assert half is not None and "'false'" in half and "'Yes'" not in half
    # lists: value_map targets must be allowed; an empty value_map is checked at write time
    assert compatibility_problem(fm("purposes.x.values.p"), RESTRICTED_MULTI) is None
    good = fm("purposes.x.values.p", value_map={"a": "News", "b": "Offers"})
    assert compatibility_problem(good, RESTRICTED_MULTI) is None
    bad = fm("purposes.x.values.p", value_map={"a": "News", "b": "Spam"})
    problem = compatibility_problem(bad, RESTRICTED_MULTI)
    assert problem is not None and "'Spam'" in problem
    assert compatibility_problem(bad, MULTI) is None  # not restricted
    assert compatibility_problem(fm("metadata.k", value_map={"x": "Maybe"}), RESTRICTED_PICKLIST)
    assert compatibility_problem(fm("metadata.k"), RESTRICTED_PICKLIST) is None


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field", "cell"),
    [
        (True, BOOLEAN, "true"),
        (False, BOOLEAN, "false"),
        (True, STRING, "true"),
        (False, PICKLIST, "false"),
        (["a", "b"], MULTI, "a;b"),
        (["b", "a", "b"], MULTI, "b;a"),
        (["a", "b"], STRING, "a;b"),
        ([], MULTI, "#N/A"),
        ([], STRING, "#N/A"),
        ("2024-06-18T16:40:03.512Z", DATETIME, "2024-06-18T16:40:03.512Z"),
        ("2024-06-18T18:40:03+02:00", DATETIME, "2024-06-18T16:40:03.000Z"),
        ("2024-06-18T16:40:03.512Z", DATE, "2024-06-18"),
        ("2024-06-18T23:30:00-02:00", DATE, "2024-06-19"),
        ("2024-06-18T16:40:03.512Z", STRING, "2024-06-18T16:40:03.512Z"),
        (
            datetime(2024, 6, 18, 16, 40, 3, 512000, tzinfo=timezone.utc),
            DATETIME,
            "2024-06-18T16:40:03.512Z",
        ),
        (datetime(2024, 6, 18, 16, 40, 3, 512000, tzinfo=timezone.utc), DATE, "2024-06-18"),
        (
            datetime(2024, 6, 18, 16, 40, 3, 512000, tzinfo=timezone.utc),
            STRING,
            "2024-06-18T16:40:03.512Z",
        ),
        ("b2b", STRING, "b2b"),
        ("Yes", PICKLIST, "Yes"),
        ("jane@example.com", EMAIL, "jane@example.com"),
        ("not a date", DATE, "not a date"),
        (7, STRING, "7"),
        (7.0, STRING, "7"),
        (2.5, STRING, "2.5"),
    ],
)
def test_to_csv_cell(value: Any, field: FieldType, cell: str) -> None:
    assert to_csv_cell(value, field) == cell


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        (True, BOOLEAN, True),
        (False, BOOLEAN, False),
        (True, STRING, "true"),
        (["A", "B"], MULTI, "A;B"),
        ([], MULTI, None),
        ("2024-06-18T18:40:03.512+02:00", DATETIME, "2024-06-18T16:40:03.512Z"),
        ("2024-06-18T16:40:03.512Z", DATE, "2024-06-18"),
        ("b2b", STRING, "b2b"),
        (None, STRING, None),
    ],
)
def test_to_report_value(value: Any, field: FieldType, expected: Any) -> None:
    assert to_report_value(value, field) == expected


@pytest.mark.parametrize(
    ("cell", "current", "field", "same"),
    [
        # no choice: nothing is written, so nothing changes
        ("", "anything", STRING, True),
        ("", None, BOOLEAN, True),
        # booleans
        ("true", True, BOOLEAN, True),
        ("false", False, BOOLEAN, True),
        ("true", False, BOOLEAN, False),
        ("false", True, BOOLEAN, False),
        ("false", None, BOOLEAN, False),
        ("true", "true", BOOLEAN, True),
        # multipicklists compare as sets
        ("a;b", "b;a", MULTI, True),
        ("a;b", "a;b;c", MULTI, False),
        ("a;b", "a", MULTI, False),
        ("a", None, MULTI, False),
        ("#N/A", None, MULTI, True),
        ("#N/A", "", MULTI, True),
        ("#N/A", "a", MULTI, False),
        # text is exact (including list text: order matters there)
        ("a;b", "a;b", STRING, True),
        ("a;b", "b;a", STRING, False),
        ("#N/A", None, STRING, True),
        ("b2b", "b2b", STRING, True),
        ("b2b", "B2B", STRING, False),
        ("b2b", None, STRING, False),
        ("true", "true", STRING, True),
        ("true", True, STRING, True),
        ("Yes", "Yes", PICKLIST, True),
        ("Yes", "No", PICKLIST, False),
        # emails ignore case
        ("Jane@Example.com", "jane@example.com", EMAIL, True),
        # datetimes compare as instants
        ("2024-06-18T16:40:03.512Z", "2024-06-18T16:40:03.512+0000", DATETIME, True),
        ("2024-06-18T16:40:03.512Z", "2024-06-18T18:40:03.512+0200", DATETIME, True),
        ("2024-06-18T16:40:03.512Z", "2024-06-18T16:40:03.000+0000", DATETIME, False),
        ("2024-06-18T16:40:03.000Z", "2024-06-18T16:40:03Z", DATETIME, True),
        ("2024-06-18T16:40:03.512Z", None, DATETIME, False),
        ("2024-06-18T16:40:03.512Z", "garbage", DATETIME, False),
        # dates
        ("2024-06-18", "2024-06-18", DATE, True),
        ("2024-06-18", "2024-06-19", DATE, False),
        # numbers
        ("7", 7.0, NUMBER, True),
        ("7", 8, NUMBER, False),
    ],
)
def test_same_value(cell: str, current: Any, field: FieldType, same: bool) -> None:
    assert same_value(cell, current, field) is same


def test_round_trip_written_value_is_same(consent: MergedConsent) -> None:
    """What we would write, read back as Salesforce returns it, is unchanged."""
    cases: list[tuple[FieldMapping, FieldType, Any]] = [
        (fm("purposes.cookies.enabled"), BOOLEAN, True),
        (fm("purposes.marketing-9HmMn6Vt.values.CFWKNVJV"), MULTI, "Ab12Cd34;dK7rBBXk"),
        (fm("purposes.marketing-9HmMn6Vt.values.P0p0P0p0"), MULTI, None),
        (fm("updated_at"), DATETIME, "2024-06-18T16:40:03.512+0000"),
        (fm("created_at"), DATE, "2024-03-02"),
    ]
    for mapping, field, current in cases:
        cell = to_csv_cell(mapping.value_for(consent), field)
        assert same_value(cell, current, field), (mapping, cell)
