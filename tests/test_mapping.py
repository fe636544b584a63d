"""Source paths, mapping options and Salesforce conversions."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from target_salesforce_consent.didomi import MergedConsent, merge, parse_record
from target_salesforce_consent.mapping import (
    CLEAR,
    FieldMapping,
    FieldType,
    FieldValues,
    MappingError,
    as_sent,
    cell_problem,
    cells_problem,
    compatibility_problem,
    json_text,
    number_text,
    parse_source_path,
    report_value,
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


# -- numbers as plain text ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (Decimal("0.75"), "0.75"),
        (0.75, "0.75"),
        (Decimal("1.50"), "1.5"),
        (Decimal("100"), "100"),
        (Decimal("1E+2"), "100"),
        (7, "7"),
        (7.0, "7"),
        (-3, "-3"),
        (Decimal("-0.0"), "0"),
        (0.0, "0"),
        (Decimal("1e21"), "1000000000000000000000"),
        (1e21, "1000000000000000000000"),
        (1e15, "1000000000000000"),
        (Decimal("0.000001"), "0.000001"),
        (1e-7, "0.0000001"),
        (Decimal("1.2345678901234567890123456789012"), "1.2345678901234567890123456789012"),
        (Decimal("1E+300"), "1E+300"),
        (Decimal("-2.5E-40"), "-2.5E-40"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (Decimal("-Infinity"), "-Infinity"),
        (True, "true"),
    ],
)
def test_number_text_is_plain(number: Any, text: str) -> None:
    assert number_text(number) == text
    assert '"' not in number_text(number)


def test_json_text_writes_numbers_as_numbers() -> None:
    assert json_text({"score": Decimal("0.75"), "n": Decimal("2"), "a": [Decimal("1.5")]}) == (
        '{"a": [1.5], "n": 2, "score": 0.75}'
    )
    assert json_text(["x", 1, True, None]) == '["x", 1, true, null]'


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (Decimal("0.75"), "0.75"),
        (Decimal("1e21"), "1000000000000000000000"),
        (Decimal("3.0"), "3"),
        ({"score": Decimal("0.75")}, '{"score": 0.75}'),
        ([Decimal("1.5"), "a"], "1.5;a"),
    ],
)
def test_to_csv_cell_numbers_into_text(value: Any, cell: str) -> None:
    assert to_csv_cell(value, STRING) == cell
    assert to_report_value(value, STRING) == cell
    assert same_value(cell, cell, STRING)


def test_metadata_decimal_resolves_to_a_number() -> None:
    raw = {**RAW, "metadata": {"score": Decimal("0.75"), "nested": {"x": Decimal("2.50")}}}
    consent = merge([parse_record(raw)])
    assert fm("metadata.score").value_for(consent) == Decimal("0.75")
    assert to_csv_cell(fm("metadata.score").value_for(consent), STRING) == "0.75"
    assert to_csv_cell(fm("metadata.nested").value_for(consent), STRING) == '{"x": 2.5}'


@pytest.mark.parametrize(
    ("cell", "current", "field", "same"),
    [
        ("0.75", "0.75", STRING, True),
        ("0.75", Decimal("0.75"), STRING, True),
        ("0.75", 0.75, STRING, True),
        ("0.75", '"0.75"', STRING, False),  # what older runs wrote is rewritten once
        ("1.5", 1.50, NUMBER, True),
        ("0.1", 0.1, NUMBER, True),
        ("abc", 1, NUMBER, False),
    ],
)
def test_same_value_numbers(cell: str, current: Any, field: FieldType, same: bool) -> None:
    assert same_value(cell, current, field) is same


# -- what is sent, and "unchanged" ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("a\r\nb", "a\nb"),
        ("a\rb", "a\nb"),
        ("a\nb", "a\nb"),
        ("a\r\n\r\nb", "a\n\nb"),
        ("a\x00b", "ab"),
        ("\x00", ""),
        ("plain", "plain"),
    ],
)
def test_as_sent(text: str, sent: str) -> None:
    assert as_sent(text) == sent
    assert as_sent(text, "\r\n") == sent.replace("\n", "\r\n")
    assert as_sent(as_sent(text)) == as_sent(text)  # idempotent


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("line one\r\nline two", "line one\nline two"),
        ("line one\rline two", "line one\nline two"),
        ("nul\x00here", "nulhere"),
        (["a\r\nb", "c"], "a\nb;c"),
    ],
)
def test_to_csv_cell_is_the_text_as_sent(value: Any, cell: str) -> None:
    assert to_csv_cell(value, STRING) == cell


@pytest.mark.parametrize(
    ("cell", "current", "field", "same"),
    [
        ("a\r\nb", "a\nb", STRING, True),  # Salesforce holds what was sent
        ("a\rb", "a\nb", STRING, True),
        ("a\nb", "a\r\nb", STRING, True),  # line-break style is not consent content
        ("a\x00b", "ab", STRING, True),
        ("a\nb", "a b", STRING, False),
        ("a\r\nb", "a\nb", EMAIL, True),
        ("x\r\n;y", "y;x\n", MULTI, True),
    ],
)
def test_same_value_compares_what_is_sent(
    cell: str, current: Any, field: FieldType, same: bool
) -> None:
    assert same_value(cell, current, field) is same


# -- "#N/A" is only ever our own clear -------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "value", "refused"),
    [
        (CLEAR, [], False),  # an empty selection: the clear we mean
        (CLEAR, (), False),
        (CLEAR, None, False),  # the report form of that clear
        (CLEAR, "#N/A", True),  # a text that happens to be the marker
        (CLEAR, ["#N/A"], True),  # a selection whose only id is the marker
        ("#N/A\x00", "#N/A\x00", True),  # NUL is dropped when sent
        (" #N/A", " #N/A", False),  # values are not trimmed: plain text
        ("#n/a", "#n/a", False),
        ("#N/A;x", ["#N/A", "x"], False),
        ("", None, False),
        ("b2b", "b2b", False),
    ],
)
def test_cell_problem(cell: str, value: Any, refused: bool) -> None:
    problem = cell_problem("Consent_Note__c", cell, value)
    if not refused:
        assert problem is None
        return
    assert problem is not None
    assert problem.startswith("INVALID_FIELD: Consent_Note__c: ")
    assert '"#N/A"' in problem and "clear this field" in problem


def test_text_na_is_reported_as_text_and_refused() -> None:
    cell = to_csv_cell("#N/A", STRING)
    assert cell == CLEAR
    assert to_report_value("#N/A", STRING) == "#N/A"
    assert to_report_value([], MULTI) is None
    assert cell_problem("F", cell, to_report_value("#N/A", STRING)) is not None
    assert cell_problem("F", to_csv_cell([], MULTI), to_report_value([], MULTI)) is None


def test_cells_problem_names_the_first_refused_field() -> None:
    cells = {"A": "x", "B": CLEAR, "C": CLEAR}
    values = {"A": "x", "B": None, "C": "#N/A"}
    problem = cells_problem(cells, values)
    assert problem is not None and problem.startswith("INVALID_FIELD: C: ")
    assert cells_problem({"A": "x", "B": CLEAR}, {"A": "x", "B": None}) is None


# -- FieldValues: the remembered report_value / same_value of planning -------------------------


_MEMO_TYPES = [
    FieldType("HasOptedOutOfEmail", "boolean"),
    FieldType("Topics__c", "multipicklist", picklist_values=("A", "B")),
    FieldType("Status__c", "picklist", picklist_values=("1", "true")),
    FieldType("Note__c", "string"),
    FieldType("Email", "email"),
    FieldType("Score__c", "double"),
    FieldType("At__c", "datetime"),
]
_MEMO_CELLS = ["true", "false", "1", "0", "#N/A", "A;B", "B;A", "a@B.c", "2024-06-18T16:40:03.512Z",
               "x" * 70]
_MEMO_HELD: list[Any] = [None, True, False, 1, 0, 1.0, "", "true", "1", "A;B", "B;A", "A@b.C",
                         "2024-06-18T16:40:03.512+0000", "x" * 70, ["A"]]


@pytest.mark.parametrize("ftype", _MEMO_TYPES, ids=lambda t: t.type)
def test_field_values_answer_as_report_value_and_same_value(ftype: FieldType) -> None:
    """Asked twice over (the second time from the memo), in an order where 1 follows True:
    the memo never answers for another value that compares equal."""
    values = FieldValues(ftype)
    for _ in range(2):
        for cell in _MEMO_CELLS:
            assert values.report(cell) == report_value(cell, ftype)
            assert values.cell(cell) == cell
            for held in _MEMO_HELD:
                for as_set in (False, True):
                    expected = same_value(cell, held, ftype, as_set=as_set)
                    assert values.same(cell, held, as_set) is expected, (cell, held, as_set)


def test_field_values_share_one_string_per_short_cell_and_stay_bounded() -> None:
    values = FieldValues(FieldType("Status__c", "picklist"))
    first = "".join(["op", "en"])
    again = "".join(["o", "pen"])
    assert first is not again
    assert values.cell(first) is first and values.cell(again) is first
    for n in range(FieldValues.LIMIT * 3):
        assert values.same(f"v{n}", f"v{n}", False) is True
        assert values.report(f"v{n}") == f"v{n}"
        values.cell(f"v{n}")
    assert len(values._same) <= FieldValues.LIMIT
    assert len(values._report) <= FieldValues.LIMIT
    assert len(values._cells) <= FieldValues.LIMIT
