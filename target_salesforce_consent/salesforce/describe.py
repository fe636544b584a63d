"""sObject describe (reference §6) reduced to what the target checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from .client import SalesforceClient
from .errors import SalesforceError
from .soql import check_name

# Fields Salesforce requires on insert although describe calls them nillable (reference §7.1).
_ALWAYS_REQUIRED_ON_INSERT: dict[str, frozenset[str]] = {
    "lead": frozenset({"company", "lastname"}),
    "contact": frozenset({"lastname"}),
}


@dataclass(frozen=True)
class FieldInfo:
    name: str
    type: str
    label: str
    updateable: bool
    createable: bool
    nillable: bool
    defaulted_on_create: bool
    external_id: bool
    id_lookup: bool
    length: int
    picklist_values: tuple[str, ...]
    restricted_picklist: bool
    #: Required on insert whatever describe says (Lead.Company, reference §7.1).
    required_by_object: bool = False

    @property
    def required_on_insert(self) -> bool:
        if not self.createable:
            return False
        if self.required_by_object:
            return True
        return not self.nillable and not self.defaulted_on_create

    @classmethod
    def from_describe(cls, data: Mapping[str, Any], sobject: str = "") -> FieldInfo:
        name = str(data.get("name") or "")
        picklist = tuple(
            str(entry.get("value"))
            for entry in data.get("picklistValues") or []
            if isinstance(entry, Mapping)
            and entry.get("active", True)
            and entry.get("value") is not None
        )
        always = _ALWAYS_REQUIRED_ON_INSERT.get(sobject.lower(), frozenset())
        return cls(
            name=name,
            type=str(data.get("type") or "").lower(),
            label=str(data.get("label") or name),
            updateable=bool(data.get("updateable")),
            createable=bool(data.get("createable")),
            nillable=bool(data.get("nillable")),
            defaulted_on_create=bool(data.get("defaultedOnCreate")),
            external_id=bool(data.get("externalId")),
            id_lookup=bool(data.get("idLookup")),
            length=int(data.get("length") or 0),
            picklist_values=picklist,
            restricted_picklist=bool(data.get("restrictedPicklist")),
            required_by_object=name.lower() in always,
        )


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    fields: Mapping[str, FieldInfo] = dataclass_field(repr=False)  # keyed by lower-cased API name
    createable: bool = True
    updateable: bool = True
    key_prefix: str | None = None

    def field(self, name: str) -> FieldInfo | None:
        """The field called ``name`` (case-insensitive), or None."""
        return self.fields.get(name.lower())

    def required_on_insert(self) -> list[FieldInfo]:
        return [info for info in self.fields.values() if info.required_on_insert]

    @classmethod
    def from_describe(cls, data: Mapping[str, Any]) -> ObjectInfo:
        name = str(data.get("name") or "")
        fields: dict[str, FieldInfo] = {}
        for entry in data.get("fields") or []:
            if isinstance(entry, Mapping) and entry.get("name"):
                info = FieldInfo.from_describe(entry, name)
                fields[info.name.lower()] = info
        return cls(
            name=name,
            fields=fields,
            createable=bool(data.get("createable", True)),
            updateable=bool(data.get("updateable", True)),
            key_prefix=data.get("keyPrefix"),
        )


def describe_object(client: SalesforceClient, sobject: str) -> ObjectInfo:
    """GET ``sobjects/{sobject}/describe``; an unknown object raises SalesforceError NOT_FOUND."""
    check_name(sobject, "object name")
    try:
        data = client.get_json(f"sobjects/{sobject}/describe")
    except SalesforceError as exc:
        if exc.status == 404:
            raise SalesforceError(
                "NOT_FOUND",
                f"sObject {sobject!r} does not exist or the integration user cannot access it",
                status=404,
            ) from None
        raise
    if not isinstance(data, Mapping) or not isinstance(data.get("fields"), list):
        raise SalesforceError("INVALID_RESPONSE", f"describe of {sobject} has no field list")
    return ObjectInfo.from_describe(data)
