"""JSON Schemas of the records the tap emits: Didomi's own User and Event objects.

Every level is open (``additionalProperties``) and nullable: Didomi adds fields over time and
asks clients to ignore unknown ones, and the tap passes objects through unchanged, so the
schema describes what is known without ever dropping what is not.
"""

from __future__ import annotations

from typing import Any

_NSTRING: dict[str, Any] = {"type": ["string", "null"]}
_NBOOL: dict[str, Any] = {"type": ["boolean", "null"]}
_TIMESTAMP: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
_OBJECT: dict[str, Any] = {"type": ["object", "null"], "additionalProperties": True}
_STRINGS: dict[str, Any] = {"type": ["array", "null"], "items": {"type": "string"}}


def _open_object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": ["object", "null"], "additionalProperties": True, "properties": properties}


_CHANNEL = _open_object({"id": _NSTRING, "enabled": _NBOOL, "metadata": _OBJECT})
_PREFERENCE_V1 = _open_object(
    {"id": _NSTRING, "enabled": _NBOOL, "metadata": _OBJECT,
     "channels": {"type": ["array", "null"], "items": _CHANNEL}}
)
_PURPOSE = _open_object(
    {
        "id": _NSTRING,
        "enabled": _NBOOL,
        "enabled_li": _NBOOL,
        "metadata": _OBJECT,
        # v2 preferences: {preferenceId: {"value": "valueId,valueId"}}
        "values": {"type": ["object", "null"], "additionalProperties": True},
        # v1 tree (deprecated, still served with $include_full_tree=true and in old events)
        "preferences": {"type": ["array", "null"], "items": _PREFERENCE_V1},
        "channels": {"type": ["array", "null"], "items": _CHANNEL},
    }
)
CONSENTS: dict[str, Any] = _open_object(
    {
        "purposes": {"type": ["array", "null"], "items": _PURPOSE},
        "channels": {"type": ["array", "null"], "items": _CHANNEL},
        "vendors": _open_object(
            {"enabled": _STRINGS, "disabled": _STRINGS, "enabled_li": _STRINGS,
             "disabled_li": _STRINGS}
        ),
        "tcfcs": _NSTRING,
    }
)

USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "id": {"type": "string"},
        "organization_id": _NSTRING,
        "organization_user_id": _NSTRING,
        "organization_user_id_type": _NSTRING,
        "version": {"type": ["number", "null"]},
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
        "metadata": _OBJECT,
        "country": _NSTRING,
        "last_seen_country": _NSTRING,
        "consents": CONSENTS,
        # Absent from Didomi's user objects; the API stream sets it to the regulation the user
        # was listed under, because a user object holds the state for one regulation only.
        "regulation": _NSTRING,
    },
    "required": ["id"],
}

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "id": {"type": "string"},
        "organization_id": _NSTRING,
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
        "status": _NSTRING,
        "regulation": _NSTRING,
        "metadata": _OBJECT,
        "user": _open_object(
            {"id": _NSTRING, "organization_user_id": _NSTRING,
             "organization_user_id_type": _NSTRING, "metadata": _OBJECT,
             "country": _NSTRING, "last_seen_country": _NSTRING}
        ),
        "consents": CONSENTS,
        "proofs_id": _STRINGS,
        "delegate": _OBJECT,
        "domain": _NSTRING,
    },
    "required": ["id"],
}
