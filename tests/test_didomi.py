"""Record shapes, normalisation and merging."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from target_salesforce_consent.didomi import (
    _NO_VENDORS,
    ConsentRecord,
    ConsentState,
    Needs,
    PlainRecord,
    PlainShape,
    PurposeState,
    RecordError,
    _Unusual,
    fast_stamp,
    format_timestamp,
    merge,
    parse_record,
    parse_timestamp,
    read_needed,
    read_plain,
    read_shape,
)
from target_salesforce_consent.extract import PlainChoiceReader
from target_salesforce_consent.plan import to_micros

UTC = timezone.utc

# Reference 2.3: a full v2 User record.
USER_V2: dict[str, Any] = {
    "id": "3f1c2d7e-8a4b-4c1e-9f6a-2b7d5e9c0a11",
    "organization_id": "acme",
    "organization_user_id": "jane.doe@example.com",
    "organization_user_id_type": None,
    "version": 7,
    "created_at": "2024-03-02T09:14:55.120Z",
    "updated_at": "2024-06-18T16:40:03.512Z",
    "metadata": {"crm_segment": "b2b"},
    "country": None,
    "last_seen_country": "FR",
    "consents": {
        "purposes": [
            {
                "id": "marketing-9HmMn6Vt",
                "enabled": True,
                "values": {
                    "CFWKNVJV": {"value": "dK7rBBXk,Ab12Cd34"},
                    "jmHmf37H": {"value": "Zz9Yy8Xx"},
                },
            },
            {"id": "analytics-7Ghq2Lp0", "enabled": False},
            {"id": "profiling-Qw3Er5Ty", "enabled": None, "values": {"P0p0P0p0": {"value": ""}}},
        ],
        "channels": [],
        "vendors": {"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []},
        "tcfcs": None,
    },
}

# Reference 2.4: a v2 Event.
EVENT_V2: dict[str, Any] = {
    "id": "0b9f1a52-6d3e-4a57-9d8c-6a2f4b1e7c90",
    "organization_id": "acme",
    "created_at": "2024-06-18T16:40:03.001Z",
    "updated_at": "2024-06-18T16:40:03.001Z",
    "status": "confirmed",
    "regulation": "gdpr",
    "metadata": {},
    "user": {
        "id": "3f1c2d7e-8a4b-4c1e-9f6a-2b7d5e9c0a11",
        "organization_user_id": "jane.doe@example.com",
        "metadata": {},
        "country": None,
        "last_seen_country": "FR",
    },
    "consents": {
        "purposes": [
            {
                "id": "marketing-9HmMn6Vt",
                "enabled": True,
                "values": {"CFWKNVJV": {"value": "dK7rBBXk,Ab12Cd34"}},
            }
        ],
        "vendors": {"enabled": [], "disabled": []},
    },
    "proofs_id": [],
    "delegate": None,
}

# Reference 2.5: a v1 / full-tree Event.
EVENT_V1: dict[str, Any] = {
    "id": "legacy-event-1",
    "organization_id": "acme",
    "created_at": "2021-11-05T10:00:00Z",
    "status": "confirmed",
    "user": {"id": "8d0e", "organization_user_id": "jane.doe@example.com"},
    "consents": {
        "purposes": [
            {
                "id": "cookies",
                "enabled": True,
                "preferences": [
                    {
                        "id": "newsletter",
                        "enabled": True,
                        "channels": [
                            {"id": "email", "enabled": True},
                            {"id": "sms", "enabled": False},
                        ],
                    }
                ],
            }
        ],
        "channels": [{"id": "email", "enabled": True}],
        "vendors": {"enabled": [], "disabled": []},
    },
}

# Reference 2.6: a CMP-originated Event.
EVENT_CMP: dict[str, Any] = {
    "id": "c1d2e3f4-0000-4000-8000-000000000001",
    "organization_id": "acme",
    "created_at": "2024-06-18T08:00:00Z",
    "status": "confirmed",
    "regulation": "gdpr",
    "user": {
        "id": "5b1f0c1a",
        "organization_user_id": "CRM-000123",
        "country": "FR",
        "last_seen_country": "FR",
    },
    "consents": {
        "purposes": [
            {"id": "cookies", "enabled": True},
            {"id": "select_basic_ads", "enabled": False, "enabled_li": True},
        ],
        "vendors": {
            "enabled": ["google", "c:hotjar"],
            "disabled": ["facebook"],
            "enabled_li": ["google"],
            "disabled_li": [],
        },
        "tcfcs": "CP...AAAA",
    },
}

# Reference 2.7 webhooks.
WEBHOOK_USER_UPDATED: dict[str, Any] = {
    "type": "user.updated",
    "parameters": {
        "source": {"id": "unique_event_id", "created_at": "2019-08-07T10:45:11Z"},
        "old_entity": {"id": "didomi_user_id", "organization_user_id": "old@example.com"},
        "new_entity": {"id": "didomi_user_id", "organization_user_id": "organization_user_id"},
    },
}
WEBHOOK_EVENT_CREATED: dict[str, Any] = {
    "type": "event.created",
    "regulation": "gdpr",
    "parameters": {
        "entity": {
            "organization_id": "didomi",
            "user": {"id": "some_unique_id", "organization_user_id": "user@example.com"},
            "consents": {"purposes": [{"id": "geolocation_data", "enabled": True}]},
        }
    },
}
WEBHOOK_EVENT_DELETED: dict[str, Any] = {
    "type": "event.deleted",
    "parameters": {"entity": {"id": "deleted_event_id", "created_at": "2019-08-07T10:45:11Z"}},
}


def ts(text: str) -> datetime:
    return parse_timestamp(text)


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def test_user_v2() -> None:
    rec = parse_record(USER_V2)
    assert rec.kind == "user"
    assert rec.ouid == "jane.doe@example.com"
    assert rec.didomi_id == "3f1c2d7e-8a4b-4c1e-9f6a-2b7d5e9c0a11"
    assert rec.regulation == "gdpr"
    assert rec.status is None
    assert rec.timestamp == datetime(2024, 6, 18, 16, 40, 3, 512000, tzinfo=UTC)
    assert rec.created_at == datetime(2024, 3, 2, 9, 14, 55, 120000, tzinfo=UTC)
    assert rec.metadata == {"crm_segment": "b2b"}
    marketing = rec.consents.purposes["marketing-9HmMn6Vt"]
    assert marketing.enabled is True
    assert marketing.enabled_li is None
    assert marketing.values == {"CFWKNVJV": ["dK7rBBXk", "Ab12Cd34"], "jmHmf37H": ["Zz9Yy8Xx"]}
    assert rec.consents.purposes["analytics-7Ghq2Lp0"].enabled is False
    profiling = rec.consents.purposes["profiling-Qw3Er5Ty"]
    assert profiling.enabled is None
    assert profiling.values == {"P0p0P0p0": []}
    assert rec.consents.channels == {}
    assert rec.consents.vendors == {
        "enabled": set(),
        "disabled": set(),
        "enabled_li": set(),
        "disabled_li": set(),
    }


def test_event_v2() -> None:
    rec = parse_record(EVENT_V2)
    assert rec.kind == "event"
    assert rec.ouid == "jane.doe@example.com"
    assert rec.didomi_id == "0b9f1a52-6d3e-4a57-9d8c-6a2f4b1e7c90"
    assert rec.status == "confirmed"
    assert rec.timestamp == datetime(2024, 6, 18, 16, 40, 3, 1000, tzinfo=UTC)
    assert rec.metadata == {}
    assert rec.consents.purposes["marketing-9HmMn6Vt"].values == {
        "CFWKNVJV": ["dK7rBBXk", "Ab12Cd34"]
    }


def test_event_metadata_comes_from_user_block() -> None:
    raw = copy.deepcopy(EVENT_V2)
    raw["metadata"] = {"event_level": "x"}
    raw["user"]["metadata"] = {"segment": "b2c"}
    assert parse_record(raw).metadata == {"segment": "b2c"}


def test_event_v1_full_tree() -> None:
    rec = parse_record(EVENT_V1)
    assert rec.kind == "event"
    assert rec.timestamp == datetime(2021, 11, 5, 10, 0, tzinfo=UTC)
    assert rec.updated_at is None
    cookies = rec.consents.purposes["cookies"]
    assert cookies.enabled is True
    pref = cookies.preferences["newsletter"]
    assert pref.enabled is True
    assert pref.channels == {"email": True, "sms": False}
    assert rec.consents.channels == {"email": True}


def test_cmp_event_with_vendors() -> None:
    rec = parse_record(EVENT_CMP)
    assert rec.ouid == "CRM-000123"
    ads = rec.consents.purposes["select_basic_ads"]
    assert (ads.enabled, ads.enabled_li) == (False, True)
    assert rec.consents.vendors == {
        "enabled": {"google", "c:hotjar"},
        "disabled": {"facebook"},
        "enabled_li": {"google"},
        "disabled_li": set(),
    }


def test_firebase_minimal_event() -> None:
    rec = parse_record(
        {
            "organization_id": "x",
            "user": {"organization_user_id": "user@domain.com"},
            "consents": {"purposes": [{"id": "purpose_id", "enabled": True}]},
        }
    )
    assert rec.kind == "event"
    assert rec.didomi_id is None
    assert rec.timestamp is None
    assert rec.consents.purposes["purpose_id"].enabled is True


def test_webhook_user_updated_takes_new_entity() -> None:
    rec = parse_record(WEBHOOK_USER_UPDATED)
    assert rec.kind == "user"
    assert rec.ouid == "organization_user_id"
    assert rec.didomi_id == "didomi_user_id"
    # no timestamp in the entity: the triggering event's created_at
    assert rec.timestamp == datetime(2019, 8, 7, 10, 45, 11, tzinfo=UTC)


def test_webhook_event_created_with_envelope_regulation() -> None:
    raw = copy.deepcopy(WEBHOOK_EVENT_CREATED)
    raw["regulation"] = "CPRA"
    rec = parse_record(raw)
    assert rec.kind == "event"
    assert rec.ouid == "user@example.com"
    assert rec.regulation == "cpra"
    assert rec.consents.purposes["geolocation_data"].enabled is True


def test_inner_regulation_wins_over_envelope() -> None:
    raw = copy.deepcopy(WEBHOOK_EVENT_CREATED)
    raw["regulation"] = "cpra"
    raw["parameters"]["entity"]["regulation"] = "GDPR"
    assert parse_record(raw).regulation == "gdpr"


def test_webhook_event_deleted() -> None:
    rec = parse_record(WEBHOOK_EVENT_DELETED)
    assert rec.kind == "deleted"
    assert rec.didomi_id == "deleted_event_id"
    assert rec.ouid is None
    assert rec.timestamp == datetime(2019, 8, 7, 10, 45, 11, tzinfo=UTC)


def test_webhook_user_deleted_keeps_ouid_for_the_report() -> None:
    rec = parse_record(
        {
            "type": "user.deleted",
            "parameters": {"entity": {"id": "u1", "organization_user_id": " a@b.c "}},
        }
    )
    assert (rec.kind, rec.ouid, rec.didomi_id) == ("deleted", "a@b.c", "u1")


def test_webhook_event_type_decides_kind() -> None:
    # an event.* envelope carries an event even if its entity has a top-level OUID only
    rec = parse_record(
        {
            "type": "event.updated",
            "parameters": {
                "new_entity": {"id": "e", "organization_user_id": "x@y.z", "consents": {}},
                "old_entity": {"id": "e-old"},
            },
        }
    )
    assert (rec.kind, rec.ouid, rec.didomi_id) == ("event", "x@y.z", "e")


def test_webhook_without_entity_fails() -> None:
    with pytest.raises(RecordError) as err:
        parse_record({"type": "event.created", "parameters": {"source": {}}})
    assert err.value.code == "REQUIRED_FIELD_MISSING"


def test_type_field_without_parameters_is_not_an_envelope() -> None:
    rec = parse_record({"type": "user.updated", "organization_user_id": "a@b.c"})
    assert (rec.kind, rec.ouid) == ("user", "a@b.c")


# --------------------------------------------------------------------------------------------
# Robustness
# --------------------------------------------------------------------------------------------


def test_stringified_nested_objects() -> None:
    raw = copy.deepcopy(EVENT_CMP)
    raw["user"] = json.dumps(raw["user"])
    consents = raw["consents"]
    consents["vendors"] = json.dumps(consents["vendors"])
    consents["purposes"] = json.dumps(consents["purposes"])
    raw["consents"] = json.dumps(consents)
    rec = parse_record(raw)
    assert rec == parse_record(EVENT_CMP)


def test_stringified_envelope_parts() -> None:
    raw = copy.deepcopy(WEBHOOK_EVENT_CREATED)
    entity = raw["parameters"]["entity"]
    entity["consents"] = json.dumps(entity["consents"])
    raw["parameters"] = json.dumps({"entity": json.dumps(entity)})
    rec = parse_record(raw)
    assert rec.ouid == "user@example.com"
    assert rec.consents.purposes["geolocation_data"].enabled is True


def test_stringified_values_preferences_channels_metadata() -> None:
    raw = {
        "organization_user_id": "a@b.c",
        "metadata": json.dumps({"k": "v"}),
        "consents": {
            "purposes": [
                {
                    "id": "p",
                    "values": json.dumps({"pref": {"value": "a,b"}}),
                    "preferences": json.dumps(
                        [{"id": "n", "enabled": True, "channels": json.dumps([{"id": "e"}])}]
                    ),
                }
            ],
            "channels": json.dumps([{"id": "email", "enabled": False}]),
        },
    }
    rec = parse_record(raw)
    assert rec.metadata == {"k": "v"}
    purpose = rec.consents.purposes["p"]
    assert purpose.values == {"pref": ["a", "b"]}
    assert purpose.preferences["n"].enabled is True
    assert purpose.preferences["n"].channels == {"e": None}
    assert rec.consents.channels == {"email": False}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"organization_user_id": "a", "consents": "{not json"}, "consents"),
        ({"user": "{broken", "consents": {}}, "user"),
        ({"type": "event.created", "parameters": "nope{"}, "parameters"),
        ({"organization_user_id": "a", "consents": {"purposes": "[{"}}, "consents.purposes"),
        ({"organization_user_id": "a", "metadata": "{x}"}, "metadata"),
        (
            {"organization_user_id": "a", "consents": {"vendors": "{oops"}},
            "consents.vendors",
        ),
        (
            {"organization_user_id": "a", "consents": {"vendors": {"enabled": "google"}}},
            "consents.vendors.enabled",
        ),
    ],
)
def test_bad_json_strings(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(RecordError) as err:
        parse_record(raw)
    assert err.value.code == "JSON_PARSER_ERROR"
    assert err.value.message.startswith(key)
    assert str(err.value) == f"JSON_PARSER_ERROR: {err.value.message}"


@pytest.mark.parametrize(
    "raw",
    [
        ["not", "an", "object"],
        42,
        {"organization_user_id": {"nested": 1}},
        {"organization_user_id": "a", "consents": ["x"]},
        {"organization_user_id": "a", "consents": {"purposes": [{"id": "p", "enabled": "yes"}]}},
        {"organization_user_id": "a", "consents": {"purposes": {"p": 3}}},
        {"organization_user_id": "a", "updated_at": "yesterday"},
        {"organization_user_id": "a", "updated_at": 1718700000},
        {"organization_user_id": "a", "consents": {"vendors": {"enabled": 5}}},
        {"organization_user_id": "a", "consents": {"vendors": {"enabled": '{"a": 1}'}}},
        {"organization_user_id": True},
    ],
)
def test_wrong_types(raw: Any) -> None:
    with pytest.raises(RecordError) as err:
        parse_record(raw)
    assert err.value.code == "INVALID_TYPE_ON_FIELD_IN_RECORD"


def test_nulls_everywhere_are_tolerated() -> None:
    rec = parse_record(
        {
            "organization_user_id": "a@b.c",
            "metadata": None,
            "regulation": None,
            "consents": {
                "purposes": [
                    None,
                    {"id": None, "enabled": True},
                    {
                        "id": "p",
                        "enabled": None,
                        "enabled_li": None,
                        "values": {"x": None, "y": {"value": None}, "z": {"value": "a"}},
                        "preferences": None,
                        "channels": None,
                        "metadata": None,
                    },
                ],
                "channels": None,
                "vendors": {"enabled": None, "disabled": [None, "v"]},
            },
        }
    )
    assert rec.metadata == {}
    assert rec.regulation == "gdpr"
    assert list(rec.consents.purposes) == ["p"]
    assert rec.consents.purposes["p"].values == {"z": ["a"]}
    assert rec.consents.vendors["disabled"] == {"v"}
    assert parse_record({"organization_user_id": "a", "consents": None}).consents == ConsentState()
    assert parse_record({"organization_user_id": "a", "consents": {"purposes": None}}).consents == (
        ConsentState()
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a,b", ["a", "b"]),
        (" a , ,b,", ["a", "b"]),
        ("", []),
        ("a,a", ["a"]),
        (["a", "b"], ["a", "b"]),
        ('["a", "b"]', ["a", "b"]),
        ([], []),
    ],
)
def test_values_parsing(value: Any, expected: list[str]) -> None:
    raw = {
        "organization_user_id": "a",
        "consents": {"purposes": [{"id": "p", "values": {"pref": {"value": value}}}]},
    }
    assert parse_record(raw).consents.purposes["p"].values == {"pref": expected}


def test_values_entry_given_directly_as_string() -> None:
    raw = {
        "organization_user_id": "a",
        "consents": {"purposes": [{"id": "p", "values": {"pref": "a,b", "q": '{"value": "c"}'}}]},
    }
    assert parse_record(raw).consents.purposes["p"].values == {"pref": ["a", "b"], "q": ["c"]}


def test_boolean_strings_accepted() -> None:
    raw = {
        "organization_user_id": "a",
        "consents": {"purposes": [{"id": "p", "enabled": "TRUE", "enabled_li": "false"}]},
    }
    purpose = parse_record(raw).consents.purposes["p"]
    assert (purpose.enabled, purpose.enabled_li) == (True, False)


def test_purposes_as_object_keyed_by_id() -> None:
    raw = {"organization_user_id": "a", "consents": {"purposes": {"p": {"enabled": False}}}}
    assert parse_record(raw).consents.purposes["p"].enabled is False


def test_double_underscore_flattened_keys_are_unflattened() -> None:
    raw = {
        "id": "e1",
        "user__organization_user_id": "flat@example.com",
        "user__id": "u",
        "consents__purposes": json.dumps([{"id": "p", "enabled": True}]),
        "consents__vendors__enabled": json.dumps(["google"]),
        "created_at": "2024-01-01T00:00:00Z",
    }
    rec = parse_record(raw)
    assert rec.kind == "event"
    assert rec.ouid == "flat@example.com"
    assert rec.consents.purposes["p"].enabled is True
    assert rec.consents.vendors["enabled"] == {"google"}


@pytest.mark.parametrize("ouid", [None, "", "   ", "\t\n"])
def test_missing_or_blank_ouid(ouid: str | None) -> None:
    assert parse_record({"organization_user_id": ouid, "version": 1}).ouid is None
    assert parse_record({"user": {"id": "u", "organization_user_id": ouid}}).ouid is None


def test_ouid_is_stripped_and_numbers_become_text() -> None:
    assert parse_record({"organization_user_id": "  Jane@Example.com \n"}).ouid == (
        "Jane@Example.com"
    )
    assert parse_record({"organization_user_id": 12345}).ouid == "12345"


def test_event_ouid_falls_back_to_top_level() -> None:
    rec = parse_record({"user": {"id": "u"}, "organization_user_id": "top@example.com"})
    assert (rec.kind, rec.ouid) == ("event", "top@example.com")


def test_status_and_regulation_normalised() -> None:
    rec = parse_record(
        {"organization_user_id": "a", "status": " Pending_Approval ", "regulation": "CPRA"}
    )
    assert rec.status == "pending_approval"
    assert rec.regulation == "cpra"


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-18T16:40:03.512Z", datetime(2024, 6, 18, 16, 40, 3, 512000, tzinfo=UTC)),
        ("2024-06-18T16:40:03Z", datetime(2024, 6, 18, 16, 40, 3, tzinfo=UTC)),
        ("2024-06-18T18:40:03.512+02:00", datetime(2024, 6, 18, 16, 40, 3, 512000, tzinfo=UTC)),
        ("2024-06-18T16:40:03.512+0000", datetime(2024, 6, 18, 16, 40, 3, 512000, tzinfo=UTC)),
        ("2024-06-18T11:40:03-05", datetime(2024, 6, 18, 16, 40, 3, tzinfo=UTC)),
        ("2024-06-18 16:40:03.123456789", datetime(2024, 6, 18, 16, 40, 3, 123456, tzinfo=UTC)),
        ("2024-06-18T16:40", datetime(2024, 6, 18, 16, 40, tzinfo=UTC)),
        ("2024-06-18", datetime(2024, 6, 18, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_parse_timestamp_datetime_objects() -> None:
    naive = datetime(2024, 1, 1, 12, 0)
    assert parse_timestamp(naive) == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    paris = datetime(2024, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert parse_timestamp(paris) == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01T00:00:00Z", "2024-06-18T25:00Z"])
def test_parse_timestamp_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_format_timestamp() -> None:
    dt = datetime(2024, 6, 18, 18, 40, 3, 512999, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(dt) == "2024-06-18T16:40:03.512Z"
    assert format_timestamp(datetime(2024, 6, 18)) == "2024-06-18T00:00:00.000Z"


def test_record_timestamp_prefers_updated_at() -> None:
    rec = parse_record(
        {
            "organization_user_id": "a",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-02-01T00:00:00+01:00",
        }
    )
    assert rec.timestamp == datetime(2024, 1, 31, 23, 0, tzinfo=UTC)
    rec = parse_record(
        {"organization_user_id": "a", "created_at": "2024-01-01T00:00:00Z", "updated_at": None}
    )
    assert rec.timestamp == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_record({"organization_user_id": "a"}).timestamp is None


def test_sdk_parsed_datetime_values_are_accepted() -> None:
    rec = parse_record({"organization_user_id": "a", "updated_at": datetime(2024, 5, 1, 8, 0)})
    assert rec.timestamp == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Merge
# --------------------------------------------------------------------------------------------


def user(
    when: str | None, purposes: list[dict[str, Any]], *, rid: str = "u", **extra: Any
) -> ConsentRecord:
    raw: dict[str, Any] = {
        "id": rid,
        "organization_user_id": "jane@example.com",
        "consents": {"purposes": purposes, **extra.pop("consents", {})},
        **extra,
    }
    if when is not None:
        raw["updated_at"] = when
    return parse_record(raw)


def event(
    when: str | None, purposes: list[dict[str, Any]], *, rid: str = "e", **extra: Any
) -> ConsentRecord:
    raw: dict[str, Any] = {
        "id": rid,
        "user": {"id": "d", "organization_user_id": extra.pop("ouid", "jane@example.com")},
        "consents": {"purposes": purposes, **extra.pop("consents", {})},
        **extra,
    }
    if when is not None:
        raw["created_at"] = when
    return parse_record(raw)


def test_merge_single_user() -> None:
    merged = merge([parse_record(USER_V2)])
    assert merged.ouid == "jane.doe@example.com"
    assert merged.consents == parse_record(USER_V2).consents
    assert merged.timestamp == ts("2024-06-18T16:40:03.512Z")
    assert merged.created_at == "2024-03-02T09:14:55.120Z"
    assert merged.updated_at == "2024-06-18T16:40:03.512Z"
    assert merged.regulation == "gdpr"
    assert merged.metadata == {"crm_segment": "b2b"}
    assert merged.didomi_ids == ["3f1c2d7e-8a4b-4c1e-9f6a-2b7d5e9c0a11"]


def test_user_replaces_state() -> None:
    first = user(
        "2024-01-01T00:00:00Z", [{"id": "a", "enabled": True}, {"id": "b", "enabled": True}]
    )
    second = user("2024-02-01T00:00:00Z", [{"id": "a", "enabled": False}], rid="u2")
    merged = merge([first, second])
    assert merged.consents.purposes == {"a": PurposeState(enabled=False)}
    assert merged.didomi_ids == ["u", "u2"]


def test_event_overlays_user() -> None:
    base = user(
        "2024-01-01T00:00:00Z",
        [
            {"id": "a", "enabled": True, "enabled_li": True},
            {"id": "b", "enabled": True, "values": {"p": {"value": "x,y"}, "q": {"value": "z"}}},
        ],
    )
    update = event(
        "2024-02-01T00:00:00Z",
        [
            {"id": "a", "enabled": None, "enabled_li": False},
            {"id": "b", "values": {"p": {"value": "w"}}},
            {"id": "c", "enabled": False},
        ],
    )
    merged = merge([base, update])
    purposes = merged.consents.purposes
    assert purposes["a"] == PurposeState(enabled=True, enabled_li=False)  # null keeps True
    assert purposes["b"].enabled is True
    assert purposes["b"].values == {"p": ["w"], "q": ["z"]}  # p replaced, q untouched
    assert purposes["c"].enabled is False
    # the records themselves are not changed by merging
    assert base.consents.purposes["b"].values["p"] == ["x", "y"]


def test_event_empty_selection_clears_preference() -> None:
    base = user("2024-01-01T00:00:00Z", [{"id": "b", "values": {"p": {"value": "x,y"}}}])
    update = event("2024-02-01T00:00:00Z", [{"id": "b", "values": {"p": {"value": ""}}}])
    assert merge([base, update]).consents.purposes["b"].values == {"p": []}


def test_event_overlays_v1_tree_and_channels() -> None:
    base = parse_record(EVENT_V1)
    update = event(
        "2022-01-01T00:00:00Z",
        [
            {
                "id": "cookies",
                "preferences": [
                    {
                        "id": "newsletter",
                        "enabled": None,
                        "channels": [
                            {"id": "sms", "enabled": True},
                            {"id": "email", "enabled": None},
                        ],
                    }
                ],
            }
        ],
        consents={
            "channels": [{"id": "email", "enabled": False}, {"id": "phone", "enabled": None}]
        },
    )
    merged = merge([update, base])  # out of arrival order: base is older
    pref = merged.consents.purposes["cookies"].preferences["newsletter"]
    assert pref.enabled is True
    assert pref.channels == {"email": True, "sms": True}
    assert merged.consents.purposes["cookies"].enabled is True
    assert merged.consents.channels == {"email": False, "phone": None}


def test_vendor_overlay_moves_ids() -> None:
    base = parse_record(EVENT_CMP)
    update = event(
        "2024-06-19T00:00:00Z",
        [],
        ouid="CRM-000123",
        consents={
            "vendors": {"enabled": ["facebook"], "disabled": ["google"], "disabled_li": ["google"]}
        },
    )
    merged = merge([base, update])
    assert merged.consents.vendors == {
        "enabled": {"c:hotjar", "facebook"},
        "disabled": {"google"},
        "enabled_li": set(),
        "disabled_li": {"google"},
    }


def test_user_after_event_replaces_everything() -> None:
    update = event("2024-01-01T00:00:00Z", [{"id": "a", "enabled": True}])
    snapshot = user("2024-02-01T00:00:00Z", [{"id": "b", "enabled": False}])
    merged = merge([snapshot, update])
    assert set(merged.consents.purposes) == {"b"}
    assert merged.didomi_ids == ["e", "u"]


def test_out_of_order_arrival_is_sorted() -> None:
    newer = event("2024-03-01T00:00:00Z", [{"id": "a", "enabled": False}], rid="e2")
    older = event("2024-01-01T00:00:00Z", [{"id": "a", "enabled": True}], rid="e1")
    merged = merge([newer, older])
    assert merged.consents.purposes["a"].enabled is False
    assert merged.didomi_ids == ["e1", "e2"]
    assert merged.timestamp == ts("2024-03-01T00:00:00Z")


def test_records_without_timestamp_sort_first_in_arrival_order() -> None:
    untimed_1 = event(None, [{"id": "a", "enabled": True}], rid="n1")
    timed = event("2024-01-01T00:00:00Z", [{"id": "a", "enabled": False}], rid="t")
    untimed_2 = event(None, [{"id": "a", "enabled": True}, {"id": "b", "enabled": True}], rid="n2")
    merged = merge([untimed_1, timed, untimed_2])
    assert merged.didomi_ids == ["n1", "n2", "t"]
    assert merged.consents.purposes["a"].enabled is False
    assert merged.consents.purposes["b"].enabled is True
    assert merged.timestamp == ts("2024-01-01T00:00:00Z")
    assert merge([untimed_1]).timestamp is None


def test_equal_timestamps_keep_arrival_order() -> None:
    first = event("2024-01-01T00:00:00Z", [{"id": "a", "enabled": True}], rid="1")
    second = event("2024-01-01T00:00:00Z", [{"id": "a", "enabled": False}], rid="2")
    assert merge([first, second]).consents.purposes["a"].enabled is False
    assert merge([second, first]).consents.purposes["a"].enabled is True


def test_merge_metadata_regulation_ouid_and_dates() -> None:
    first = user(
        "2024-01-01T00:00:00Z",
        [],
        metadata={"a": 1, "b": 2},
        created_at="2023-12-01T00:00:00Z",
        regulation="gdpr",
    )
    second = event(
        "2024-02-01T00:00:00Z",
        [],
        ouid="JANE@example.com",
        regulation="cpra",
        rid="e",
    )
    raw_third = {
        "id": "e3",
        "user": {"organization_user_id": "Jane@Example.com", "metadata": {"b": 3}},
        "updated_at": "2024-01-15T00:00:00Z",
    }
    third = parse_record(raw_third)
    merged = merge([first, second, third])
    assert merged.metadata == {"a": 1, "b": 3}
    assert merged.ouid == "JANE@example.com"  # the newest record's spelling
    assert merged.regulation == "cpra"
    assert merged.created_at == "2024-02-01T00:00:00.000Z"  # the event's created_at is newest
    assert merged.updated_at == "2024-01-15T00:00:00.000Z"
    assert merged.didomi_ids == ["u", "e3", "e"]


def test_merge_deduplicates_ids_and_ignores_deleted() -> None:
    one = event("2024-01-01T00:00:00Z", [{"id": "a", "enabled": True}], rid="same")
    again = event("2024-01-01T00:00:00Z", [{"id": "a", "enabled": True}], rid="same")
    deleted = parse_record(WEBHOOK_EVENT_DELETED)
    merged = merge([one, deleted, again])
    assert merged.didomi_ids == ["same"]
    with pytest.raises(ValueError):
        merge([deleted])
    with pytest.raises(ValueError):
        merge([])


def test_merge_rejects_record_without_ouid() -> None:
    with pytest.raises(ValueError):
        merge([parse_record({"organization_user_id": " "})])


# -- the fast path --------------------------------------------------------------------------


def _restricted(rec: ConsentRecord, needs: Needs) -> ConsentRecord:
    """`rec` with only the parts of consents that `needs` names."""
    consents = ConsentState(
        purposes={k: v for k, v in rec.consents.purposes.items() if k in needs.purposes},
        channels=rec.consents.channels if needs.channels else {},
        vendors=rec.consents.vendors if needs.vendors else ConsentState().vendors,
    )
    return dataclasses.replace(rec, consents=consents)


NEEDS = [
    Needs(frozenset({"news"})),
    Needs(frozenset({"news", "sms"}), channels=True, vendors=True),
    Needs(),
]


@pytest.mark.parametrize("seed", range(200))
def test_reading_only_the_needed_parts_equals_reading_everything(seed: int) -> None:
    from tests.test_extract import _record

    rng = random.Random(seed)
    raw = _record(rng, seed)
    for needs in NEEDS:
        fast = read_needed(raw, needs)
        assert fast is not None, raw
        assert fast == _restricted(parse_record(raw), needs)


# -- the plain reader: the raw parts, checked as read_needed checks them ---------------------

#: Values a mutation puts anywhere in a record: each is read by one of the readers or refused.
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, 1.5, "", " ", "x", " x ", "true", "null", "[\"A\"]", " [A]",
    "A, ,B,A", [], [None], [{"id": "news"}], {}, {"id": "news"}, {"value": "A"},
    "2024-06-18T16:40:03.512Z", "2024-02-30T10:00:00.000Z", "2024-06-18T24:00:00.000Z",
    "2024-06-18T16:60:03.512Z", "2024-06-18T16:40:60.512Z", "0000-01-01T00:00:00.000Z",
    "2024-06-18T16:40:03Z", "2024-06-18T16:40:03.512+02:00", "2024-06-18 16:40:03.512Z",
    "2024-06-18T16:40:03.512z", "\u0662024-06-18T16:40:03.512Z", "\ud800", "caf\u00e9", "A,\ud800",
]  # fmt: skip


def mutate(raw: Any, rng: random.Random) -> Any:
    """`raw` with one value somewhere in it replaced (or a key removed)."""
    raw = copy.deepcopy(raw)
    node, parents = raw, []
    while isinstance(node, (dict, list)) and node and rng.random() < 0.75:
        key = rng.choice(list(node) if isinstance(node, dict) else range(len(node)))
        parents.append((node, key))
        node = node[key]
    if not parents:
        return raw
    parent, key = parents[-1]
    if isinstance(parent, dict) and rng.random() < 0.15:
        del parent[key]
    else:
        parent[key] = rng.choice(ODD_VALUES)
    return raw


def assert_plain_reads_as_read_needed(raw: Any, needs: Needs) -> bool:
    """read_plain gives what read_needed gives (None where it gives None); True when read."""
    fast = read_needed(raw, needs)
    plain = read_plain(raw, needs)
    if fast is None:
        assert plain is None, raw
        return False
    assert plain is not None, raw
    restricted = _restricted(fast, needs)
    assert plain.kind == restricted.kind
    assert (plain.ouid, plain.didomi_id) == (restricted.ouid, restricted.didomi_id)
    assert (plain.regulation, plain.status) == (restricted.regulation, restricted.status)
    assert plain.metadata == restricted.metadata
    for stamp, dt in (
        (plain.timestamp, restricted.timestamp),
        (plain.created_at, restricted.created_at),
        (plain.updated_at, restricted.updated_at),
    ):
        assert stamp == (None if dt is None else (format_timestamp(dt), to_micros(dt)))
    assert set(plain.purposes) == set(restricted.consents.purposes)
    if needs.channels:
        assert plain.channels == restricted.consents.channels
    if needs.vendors:
        assert plain.vendors == restricted.consents.vendors
    return True


@pytest.mark.parametrize("seed", range(200))
def test_the_plain_reader_reads_what_read_needed_reads(seed: int) -> None:
    from tests.test_extract import _record

    rng = random.Random(seed)
    raw = _record(rng, seed)
    for needs in NEEDS:
        assert assert_plain_reads_as_read_needed(raw, needs)  # the common shapes are read
    for _ in range(20):
        odd = mutate(raw, rng)
        for needs in NEEDS:
            assert_plain_reads_as_read_needed(odd, needs)


@pytest.mark.parametrize(
    "raw",
    [
        {"organization_user_id": "a", "consents": '{"purposes": []}'},  # stringified
        {"organization_user_id": "a", "consents": {"purposes": [{"id": "news", "enabled": "1"}]}},
        {"organization_user_id": "a", "consents__purposes": "[]"},  # flattened
        {"organization_user_id": 42},
        {"organization_user_id": " a "},
        {"organization_user_id": "a", "updated_at": "2024-06-18 16:40:03"},
        {"organization_user_id": "a", "updated_at": "2024-06-18T25:40:03Z"},
        {"organization_user_id": "a", "updated_at": "2024-06-18T23:40:03.000Z",
         "created_at": "2024-02-30T00:00:00.000Z"},  # a created_at no mapping reads
        {"organization_user_id": "a", "consents": {"purposes": {"news": {"enabled": True}}}},
        {"type": "event.created", "parameters": {"new_entity": {}}},
        {"user": '{"organization_user_id": "a"}'},
        {"organization_user_id": "a",
         "consents": {"purposes": [{"id": "news", "values": {"t": {"value": '["A"]'}}}]}},
        {"organization_user_id": "a",  # a purpose no mapping reads, with an id that is no text
         "consents": {"purposes": [{"id": 7, "enabled": True}]}},
        {"organization_user_id": "a",  # the first of two items of one needed purpose
         "consents": {"purposes": [{"id": "news", "enabled_li": 1}, {"id": "news"}]}},
        {"organization_user_id": "a", "consents": {"purposes": [{"id": "news", "preferences": [
            {"id": "digest", "channels": [{"id": "sms", "enabled": "yes"}]}]}]}},
        ["not", "an", "object"],
    ],
)
def test_unusual_records_are_left_to_the_full_reader(raw: Any) -> None:
    assert read_needed(raw, Needs(frozenset({"news"}))) is None
    assert read_plain(raw, Needs(frozenset({"news"}))) is None


def _didomi_stamps(rng: random.Random) -> list[str]:
    """Timestamps in Didomi's own form, the odd calendar days and clock limits among them."""
    stamps = []
    for _ in range(200):
        year = rng.choice([1, 1969, 1970, 2000, 2023, 2024, 2100, 9999])
        month, day = rng.randint(0, 13), rng.choice([0, 1, 28, 29, 30, 31, 32])
        hour, minute, second = rng.choice([0, 23, 24]), rng.choice([0, 59, 60]), rng.choice(
            [0, 59, 60, 99]
        )
        millis = rng.choice([0, 1, 512, 999])
        stamps.append(
            f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"
        )
    return stamps


@pytest.mark.parametrize("seed", range(5))
def test_a_didomi_timestamp_is_read_as_the_datetime_path_reads_it(seed: int) -> None:
    rng = random.Random(seed)
    for stamp in [*_didomi_stamps(rng), *(v for v in ODD_VALUES if isinstance(v, str))]:
        raw = {"organization_user_id": "a", "updated_at": stamp}
        fast = read_needed(raw, Needs())
        if fast is None:
            assert read_plain(raw, Needs()) is None, stamp
            continue
        assert fast.timestamp is not None
        expected = (format_timestamp(fast.timestamp), to_micros(fast.timestamp))
        assert fast_stamp(stamp) == expected, stamp


_TAILS = [":00.000Z", ":59.999Z", ":60.000Z", ":99.000Z", ":6.0000Z", ":05.512z", ":05.512+",
          ":05,512Z", ":0\u0665.512Z", ":05.5\u0661\u0662Z", ":05.51 Z", ": 5.512Z", "-05.512Z",
          ":05.512Z"[::-1]]  # fmt: skip


@pytest.mark.parametrize("seed", range(3))
def test_a_timestamp_in_a_minute_read_before_is_read_as_the_datetime_path_reads_it(
    seed: int,
) -> None:
    """A minute once read is kept: a later timestamp in it, whatever follows the minute, reads
    as the datetime path reads it (or is left to it)."""
    rng = random.Random(seed)
    for stamp in _didomi_stamps(rng):
        # The minute read first (one that is not, month 13 or hour 24, is never kept valid)
        with contextlib.suppress(_Unusual):
            fast_stamp(stamp[:16] + ":30.000Z")
        for tail in [stamp[16:], *_TAILS]:
            value = stamp[:16] + tail
            raw = {"organization_user_id": "a", "updated_at": value}
            fast = read_needed(raw, Needs())
            if fast is None:
                assert read_plain(raw, Needs()) is None, value
                with pytest.raises(_Unusual):
                    fast_stamp(value)
                continue
            assert fast.timestamp is not None
            expected = (format_timestamp(fast.timestamp), to_micros(fast.timestamp))
            assert fast_stamp(value) == expected, value


# -- decoding straight to what the plain reader reads ---------------------------------------

_shape_decoder = msgspec.json.Decoder(PlainShape, float_hook=Decimal)
_dict_decoder = msgspec.json.Decoder(float_hook=Decimal)


def assert_shape_reads_as_the_record(text: str, needs: Needs) -> bool:
    """A record decoded as PlainShape reads as the whole record does; True when it decoded."""
    try:
        shape = _shape_decoder.decode(text)
    except msgspec.DecodeError:
        return False
    from tests.test_extract import MAPPINGS, TYPES

    whole = _dict_decoder.decode(text)
    expected = read_plain(whole, needs)
    try:
        as_read = shape.as_read()
    except msgspec.DecodeError:  # consents in another shape: the record is decoded whole
        as_read = None
    else:
        assert _as_read(read_plain(as_read, needs)) == _as_read(expected), text
    # The fields outside consents, read from the struct
    if expected is not None:
        assert read_shape(shape) == _outside_consents(expected), text
    reader = PlainChoiceReader(MAPPINGS, TYPES)
    for _ in range(2):  # the second time from what the reader remembers
        from_shape = reader.read_shape(shape)
        from_whole = reader.read(whole)
        if from_shape is None:
            assert from_whole is None, text
        else:
            assert from_whole is not None, text
            assert from_shape == (_outside_consents(from_whole[0]), from_whole[1]), text
            assert list(from_shape[1]) == list(from_whole[1])  # in the order of the mappings
    return True


def _outside_consents(rec: PlainRecord) -> PlainRecord:
    """``rec`` without what it read of ``consents`` (as read_shape gives it)."""
    return dataclasses.replace(rec, purposes={}, channels={}, vendors=_NO_VENDORS)


def _as_read(value: Any) -> Any:
    """PlainRecords (alone or first in a tuple) with each purpose as the keys read of it."""
    if isinstance(value, tuple):
        return (_as_read(value[0]), *value[1:])
    if value is None:
        return None
    read = ("id", "enabled", "enabled_li", "values", "preferences")
    purposes = {pid: {k: p.get(k) for k in read} for pid, p in value.purposes.items()}
    return dataclasses.replace(value, purposes=purposes)


@pytest.mark.parametrize("seed", range(200))
def test_a_record_decoded_as_its_plain_shape_reads_as_the_whole_record(seed: int) -> None:
    from tests.test_extract import _record

    rng = random.Random(seed)
    raw = _record(rng, seed)
    raw.update({"organization_id": "acme", "version": 3, "country": None, "proofs_id": [[1.5]]})
    for needs in NEEDS:
        assert assert_shape_reads_as_the_record(json.dumps(raw), needs)  # the common shapes
    for _ in range(20):
        odd = mutate(raw, rng)
        if rng.random() < 0.3:
            odd[rng.choice(["type", "consents__purposes", "extra", "id"])] = rng.choice(ODD_VALUES)
        text = json.dumps(odd)
        if rng.random() < 0.2:  # a key given twice: the last one counts
            text = text[:-1] + ', "user": ' + json.dumps(rng.choice(ODD_VALUES)) + "}"
        for needs in NEEDS:
            assert_shape_reads_as_the_record(text, needs)


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "user.created", "parameters": {}}',
        '{"organization_user_id": "a", "consents__purposes": "[]"}',
        '{"organization_user_id": "a", "tap_added": 1}',
        '{"user": "a"}',
        '["not", "an", "object"]',
    ],
)
def test_other_shapes_are_decoded_whole(text: str) -> None:
    with pytest.raises(msgspec.DecodeError):
        _shape_decoder.decode(text)


@pytest.mark.parametrize(
    "consents", ['"{}"', "[]", '{"purposes": {"news": {}}}', '{"purposes": [{"id": "news"}, 7]}']
)
def test_consents_in_another_shape_leave_the_record_to_be_decoded_whole(consents: str) -> None:
    shape = _shape_decoder.decode('{"organization_user_id": "a", "consents": ' + consents + "}")
    with pytest.raises(msgspec.DecodeError):
        shape.as_read()
    from tests.test_extract import MAPPINGS, TYPES

    reader = PlainChoiceReader(MAPPINGS, TYPES)
    assert reader.read_shape(shape) is None
    assert reader.read_shape(shape) is None  # also once remembered
