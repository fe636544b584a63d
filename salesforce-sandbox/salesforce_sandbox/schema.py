"""sObject schemas: the standard Lead and Contact fields, seed custom fields, describe JSON,
and the type rules Bulk API 2.0 applies to CSV values (reference sections 3.11, 6, 7).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from . import ids
from .errors import RowError

TEXT_TYPES = {"string", "textarea", "phone", "url", "email", "picklist", "multipicklist",
              "combobox", "encryptedstring"}
NUMBER_TYPES = {"double", "currency", "percent"}
SOAP_TYPES = {
    "id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean", "int": "xsd:int",
    "long": "xsd:long", "double": "xsd:double", "currency": "xsd:double",
    "percent": "xsd:double", "date": "xsd:date", "datetime": "xsd:dateTime",
    "time": "xsd:time", "base64": "xsd:base64Binary", "anyType": "xsd:anyType",
}
NULL_MARKER = "#N/A"

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?(Z|[+-]\d{2}:?\d{2})$"
)
_INT_RE = re.compile(r"^[+-]?\d+$")
_DOUBLE_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


@dataclass
class FieldDef:
    name: str
    type: str
    label: str
    length: int = 0
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    defaulted_on_create: bool = False
    default_value: Any = None
    external_id: bool = False
    id_lookup: bool = False
    unique: bool = False
    custom: bool = False
    picklist_values: list[str] = field(default_factory=list)
    default_picklist_value: str | None = None
    restricted_picklist: bool = False
    reference_to: list[str] = field(default_factory=list)
    relationship_name: str | None = None
    precision: int = 0
    scale: int = 0
    digits: int = 0
    filterable: bool = True

    def describe(self) -> dict[str, Any]:
        """The describe ``Field`` object (reference 6.2), REST JSON names."""
        text = self.type in TEXT_TYPES or self.type in {"id", "reference"}
        return {
            "aggregatable": self.type not in {"textarea", "multipicklist"},
            "aiPredictionField": False,
            "autoNumber": False,
            "byteLength": self.length * 3 if text else 0,
            "calculated": False,
            "calculatedFormula": None,
            "cascadeDelete": False,
            "caseSensitive": False,
            "compoundFieldName": "Name" if self.name in {"FirstName", "LastName"} else None,
            "controllerName": None,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": self.default_value,
            "defaultValueFormula": None,
            "defaultedOnCreate": self.defaulted_on_create,
            "dependentPicklist": False,
            "deprecatedAndHidden": False,
            "digits": self.digits,
            "displayLocationInDecimal": False,
            "encrypted": False,
            "externalId": self.external_id,
            "extraTypeInfo": None,
            "filterable": self.filterable,
            "filteredLookupInfo": None,
            "formulaTreatNullNumberAsZero": False,
            "groupable": self.type not in {"textarea", "multipicklist", "double", "currency",
                                           "percent", "datetime"},
            "highScaleNumber": False,
            "htmlFormatted": False,
            "idLookup": self.id_lookup,
            "inlineHelpText": None,
            "label": self.label,
            "length": self.length,
            "mask": None,
            "maskType": None,
            "name": self.name,
            "nameField": self.name == "Name",
            "namePointing": False,
            "nillable": self.nillable,
            "permissionable": self.nillable and self.custom,
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": value == self.default_picklist_value,
                    "label": value,
                    "validFor": None,
                    "value": value,
                }
                for value in self.picklist_values
            ],
            "polymorphicForeignKey": len(self.reference_to) > 1,
            "precision": self.precision,
            "queryByDistance": False,
            "referenceTargetField": None,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "relationshipOrder": None,
            "restrictedDelete": False,
            "restrictedPicklist": self.restricted_picklist,
            "scale": self.scale,
            "searchPrefilterable": False,
            "soapType": SOAP_TYPES.get(self.type, "xsd:string"),
            "sortable": self.type not in {"textarea", "multipicklist"},
            "type": self.type,
            "unique": self.unique,
            "updateable": self.updateable,
            "writeRequiresMasterRead": False,
        }


def _f(name: str, type_: str, label: str, **kw: Any) -> FieldDef:
    if type_ == "boolean":
        kw.setdefault("nillable", False)
        kw.setdefault("defaulted_on_create", True)
        kw.setdefault("default_value", False)
    if type_ in {"id", "reference"}:
        kw.setdefault("length", 18)
    return FieldDef(name=name, type=type_, label=label, **kw)


LEAD_STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted",
                 "Closed - Not Converted"]
LEAD_SOURCES = ["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"]
_READONLY: dict[str, Any] = {"createable": False, "updateable": False}


def _common_tail() -> list[FieldDef]:
    return [
        _f("HasOptedOutOfEmail", "boolean", "Email Opt Out"),
        _f("HasOptedOutOfFax", "boolean", "Fax Opt Out"),
        _f("DoNotCall", "boolean", "Do Not Call"),
        _f("IndividualId", "reference", "Individual ID", reference_to=["Individual"],
           relationship_name="Individual"),
        _f("OwnerId", "reference", "Owner ID", nillable=False, defaulted_on_create=True,
           reference_to=["Group", "User"], relationship_name="Owner"),
        _f("CreatedDate", "datetime", "Created Date", nillable=False,
           defaulted_on_create=True, **_READONLY),
        _f("CreatedById", "reference", "Created By ID", nillable=False,
           defaulted_on_create=True, reference_to=["User"], relationship_name="CreatedBy",
           **_READONLY),
        _f("LastModifiedDate", "datetime", "Last Modified Date", nillable=False,
           defaulted_on_create=True, **_READONLY),
        _f("LastModifiedById", "reference", "Last Modified By ID", nillable=False,
           defaulted_on_create=True, reference_to=["User"], relationship_name="LastModifiedBy",
           **_READONLY),
        _f("SystemModstamp", "datetime", "System Modstamp", nillable=False,
           defaulted_on_create=True, **_READONLY),
    ]


def standard_fields(object_name: str) -> list[FieldDef]:
    id_field = _f("Id", "id", f"{object_name} ID", nillable=False, defaulted_on_create=True,
                  id_lookup=True, **_READONLY)
    if object_name == "Lead":
        return [
            id_field,
            _f("IsDeleted", "boolean", "Deleted", **_READONLY),
            _f("LastName", "string", "Last Name", length=80, nillable=False),
            _f("FirstName", "string", "First Name", length=40),
            _f("Name", "string", "Full Name", length=121, nillable=False, id_lookup=True,
               **_READONLY),
            _f("Title", "string", "Title", length=128),
            _f("Company", "string", "Company", length=255),
            _f("Phone", "phone", "Phone", length=40),
            _f("Email", "email", "Email", length=80, id_lookup=True),
            _f("LeadSource", "picklist", "Lead Source", length=255,
               picklist_values=list(LEAD_SOURCES)),
            _f("Status", "picklist", "Status", length=255, nillable=False,
               defaulted_on_create=True, picklist_values=list(LEAD_STATUSES),
               default_picklist_value=LEAD_STATUSES[0]),
            _f("IsConverted", "boolean", "Converted", updateable=False),
            _f("ConvertedDate", "date", "Converted Date", **_READONLY),
            _f("ConvertedAccountId", "reference", "Converted Account ID",
               reference_to=["Account"], relationship_name="ConvertedAccount", **_READONLY),
            _f("ConvertedContactId", "reference", "Converted Contact ID",
               reference_to=["Contact"], relationship_name="ConvertedContact", **_READONLY),
            *_common_tail(),
        ]
    if object_name == "Contact":
        return [
            id_field,
            _f("IsDeleted", "boolean", "Deleted", **_READONLY),
            _f("AccountId", "reference", "Account ID", reference_to=["Account"],
               relationship_name="Account"),
            _f("LastName", "string", "Last Name", length=80, nillable=False),
            _f("FirstName", "string", "First Name", length=40),
            _f("Name", "string", "Full Name", length=121, nillable=False, id_lookup=True,
               **_READONLY),
            _f("Title", "string", "Title", length=128),
            _f("Phone", "phone", "Business Phone", length=40),
            _f("Email", "email", "Email", length=80, id_lookup=True),
            _f("LeadSource", "picklist", "Lead Source", length=255,
               picklist_values=list(LEAD_SOURCES)),
            *_common_tail(),
        ]
    raise KeyError(object_name)


REQUIRED_ON_INSERT: dict[str, list[str]] = {"Lead": ["LastName", "Company"],
                                            "Contact": ["LastName"]}
SUPPORTED_OBJECTS = ("Lead", "Contact")
# The field history object of each tracked object, and its field naming the parent record.
HISTORY_OBJECTS = {"Lead": "LeadHistory", "Contact": "ContactHistory"}
# Tracked when the seed names no list: the standard consent fields (custom fields join them
# with "trackHistory": true).
DEFAULT_TRACKED_FIELDS = ("HasOptedOutOfEmail", "DoNotCall", "HasOptedOutOfFax")
# Field types whose changes history records without values (Salesforce keeps no old and new
# values for multi-select picklists and long text areas).
VALUELESS_HISTORY_TYPES = {"multipicklist", "textarea"}
# The history row's DataType for a field type (its restricted picklist uses these names).
HISTORY_DATA_TYPES = {
    "boolean": "Boolean", "string": "Text", "email": "Email", "phone": "Phone", "url": "Url",
    "picklist": "DynamicEnum", "multipicklist": "MultiEnum", "textarea": "MultiLineText",
    "datetime": "DateTime", "date": "DateOnly", "double": "Double", "currency": "Currency",
    "percent": "Percent", "int": "Double", "long": "Double", "reference": "EntityId",
    "encryptedstring": "EncryptedText", "combobox": "Text",
}


def user_fields() -> list[FieldDef]:
    """The User fields the sandbox keeps (read-only here: users come from the seed)."""
    return [
        _f("Id", "id", "User ID", nillable=False, defaulted_on_create=True, id_lookup=True,
           **_READONLY),
        _f("Username", "string", "Username", length=80, nillable=False, id_lookup=True,
           unique=True, **_READONLY),
        _f("LastName", "string", "Last Name", length=80, nillable=False, **_READONLY),
        _f("FirstName", "string", "First Name", length=40, **_READONLY),
        _f("Name", "string", "Full Name", length=121, nillable=False, **_READONLY),
        _f("Alias", "string", "Alias", length=8, nillable=False, **_READONLY),
        _f("Email", "email", "Email", length=128, nillable=False, **_READONLY),
        _f("IsActive", "boolean", "Active", **_READONLY),
        _f("UserType", "picklist", "User Type", length=40, picklist_values=["Standard"],
           **_READONLY),
        _f("ProfileId", "reference", "Profile ID", reference_to=["Profile"],
           relationship_name="Profile", **_READONLY),
        _f("TimeZoneSidKey", "picklist", "Time Zone", length=40, nillable=False, **_READONLY),
        _f("LocaleSidKey", "picklist", "Locale", length=40, nillable=False, **_READONLY),
        _f("LanguageLocaleKey", "picklist", "Language", length=40, nillable=False,
           **_READONLY),
        _f("EmailEncodingKey", "picklist", "Email Encoding", length=40, nillable=False,
           **_READONLY),
        _f("IsDeleted", "boolean", "Deleted", **_READONLY),
        _f("CreatedDate", "datetime", "Created Date", nillable=False, **_READONLY),
        _f("CreatedById", "reference", "Created By ID", nillable=False, reference_to=["User"],
           relationship_name="CreatedBy", **_READONLY),
        _f("LastModifiedDate", "datetime", "Last Modified Date", nillable=False, **_READONLY),
        _f("LastModifiedById", "reference", "Last Modified By ID", nillable=False,
           reference_to=["User"], relationship_name="LastModifiedBy", **_READONLY),
        _f("SystemModstamp", "datetime", "System Modstamp", nillable=False, **_READONLY),
    ]


def organization_fields() -> list[FieldDef]:
    """The Organization fields the sandbox keeps (the one row describing the org)."""
    return [
        _f("Id", "id", "Organization ID", nillable=False, defaulted_on_create=True,
           id_lookup=True, **_READONLY),
        _f("Name", "string", "Name", length=80, nillable=False, **_READONLY),
        _f("OrganizationType", "picklist", "Edition", length=40,
           picklist_values=["Developer Edition", "Enterprise Edition"], **_READONLY),
        _f("InstanceName", "string", "Instance Name", length=5, **_READONLY),
        _f("IsSandbox", "boolean", "Is Sandbox", **_READONLY),
        _f("TrialExpirationDate", "datetime", "Trial Expiration Date", **_READONLY),
        _f("NamespacePrefix", "string", "Namespace Prefix", length=15, **_READONLY),
        _f("LanguageLocaleKey", "picklist", "Language", length=40, nillable=False,
           **_READONLY),
        _f("DefaultLocaleSidKey", "picklist", "Locale", length=40, nillable=False,
           **_READONLY),
        _f("TimeZoneSidKey", "picklist", "Default Time Zone", length=40, nillable=False,
           **_READONLY),
        _f("CreatedDate", "datetime", "Created Date", nillable=False, **_READONLY),
        _f("CreatedById", "reference", "Created By ID", nillable=False, reference_to=["User"],
           relationship_name="CreatedBy", **_READONLY),
        _f("LastModifiedDate", "datetime", "Last Modified Date", nillable=False, **_READONLY),
        _f("LastModifiedById", "reference", "Last Modified By ID", nillable=False,
           reference_to=["User"], relationship_name="LastModifiedBy", **_READONLY),
        _f("SystemModstamp", "datetime", "System Modstamp", nillable=False, **_READONLY),
    ]


def sandbox_process_fields() -> list[FieldDef]:
    """Tooling API ``SandboxProcess``: the sandboxes copied from this org (none here)."""
    return [
        _f("Id", "id", "Sandbox Process ID", nillable=False, id_lookup=True, **_READONLY),
        _f("Status", "picklist", "Status", length=40, **_READONLY),
        _f("SandboxName", "string", "Sandbox Name", length=10, **_READONLY),
        _f("SandboxInfoId", "reference", "Sandbox Info ID", **_READONLY),
        _f("LicenseType", "picklist", "License Type", length=40, **_READONLY),
        _f("CreatedDate", "datetime", "Created Date", **_READONLY),
        _f("CopyProgress", "int", "Copy Progress", **_READONLY),
        _f("SandboxOrganization", "string", "Sandbox Organization", length=18, **_READONLY),
        _f("SourceId", "reference", "Source ID", **_READONLY),
        _f("Description", "string", "Description", length=255, **_READONLY),
        _f("EndDate", "datetime", "End Date", **_READONLY),
        _f("Features", "multipicklist", "Features", length=4099, **_READONLY),
    ]


def history_fields(parent: str) -> list[FieldDef]:
    """The fields of ``{parent}History``: read-only; OldValue/NewValue are anyType, which
    SOQL can neither filter nor group by."""
    return [
        _f("Id", "id", f"{parent} History ID", nillable=False, defaulted_on_create=True,
           id_lookup=True, **_READONLY),
        _f("IsDeleted", "boolean", "Deleted", **_READONLY),
        _f(f"{parent}Id", "reference", f"{parent} ID", nillable=False, reference_to=[parent],
           relationship_name=parent, **_READONLY),
        _f("CreatedById", "reference", "Created By ID", nillable=False,
           defaulted_on_create=True, reference_to=["User"], relationship_name="CreatedBy",
           **_READONLY),
        _f("CreatedDate", "datetime", "Created Date", nillable=False,
           defaulted_on_create=True, **_READONLY),
        _f("Field", "picklist", "Changed Field", length=255, nillable=False,
           restricted_picklist=True, **_READONLY),
        _f("DataType", "picklist", "Data Type", length=40, restricted_picklist=True,
           picklist_values=sorted(set(HISTORY_DATA_TYPES.values())), **_READONLY),
        _f("OldValue", "anyType", "Old Value", length=255, filterable=False, **_READONLY),
        _f("NewValue", "anyType", "New Value", length=255, filterable=False, **_READONLY),
    ]


def custom_field(spec: dict[str, Any]) -> FieldDef:
    """A custom field from a seed entry (defaults per the seed format)."""
    name = str(spec["name"])
    type_ = str(spec.get("type", "string")).lower()
    if type_ == "text":
        type_ = "string"
    is_bool = type_ == "boolean"
    text_like = type_ in TEXT_TYPES
    default_length = 0
    if text_like:
        default_length = 80 if type_ == "email" else 40 if type_ == "phone" else 255
    if type_ == "multipicklist":
        default_length = 4099
    return FieldDef(
        name=name,
        type=type_,
        label=str(spec.get("label", name.removesuffix("__c").replace("_", " "))),
        length=int(spec.get("length", default_length)),
        createable=bool(spec.get("createable", True)),
        updateable=bool(spec.get("updateable", True)),
        nillable=bool(spec.get("nillable", not is_bool)),
        defaulted_on_create=bool(spec.get("defaultedOnCreate", is_bool)),
        default_value=spec.get("defaultValue", False if is_bool else None),
        external_id=bool(spec.get("externalId", False)),
        id_lookup=bool(spec.get("externalId", False)),
        unique=bool(spec.get("unique", False)),
        custom=True,
        picklist_values=[str(v) for v in spec.get("picklistValues", [])],
        restricted_picklist=bool(spec.get("restrictedPicklist", spec.get("restricted", False))),
        reference_to=[str(v) for v in spec.get("referenceTo", [])],
        precision=int(spec.get("precision", 18 if type_ in NUMBER_TYPES else 0)),
        scale=int(spec.get("scale", 2 if type_ in NUMBER_TYPES else 0)),
        digits=int(spec.get("digits", 9 if type_ == "int" else 0)),
        filterable=type_ not in {"textarea"},
    )


class SObjectSchema:
    """One sObject: its fields (case-insensitive lookup) and its describe JSON.

    ``writable`` False: an object clients may only read (field history, users, the org):
    query, retrieve and describe, never create, update or delete.
    """

    def __init__(self, name: str, custom_fields: list[FieldDef], *,
                 fields: list[FieldDef] | None = None, writable: bool = True,
                 label: str | None = None) -> None:
        self.name = name
        self.key_prefix = ids.KEY_PREFIXES[name]
        self.writable = writable
        self.label = label or name
        self.fields: list[FieldDef] = standard_fields(name) if fields is None else fields
        known = {f.name.lower() for f in self.fields}
        for cf in custom_fields:
            if cf.name.lower() in known:
                raise ValueError(f"duplicate field {cf.name} on {name}")
            known.add(cf.name.lower())
            self.fields.append(cf)
        self._by_lower = {f.name.lower(): f for f in self.fields}

    def field(self, name: str) -> FieldDef | None:
        return self._by_lower.get(name.lower())

    def urls(self) -> dict[str, str]:
        base = "/services/data/v{version}/sobjects/" + self.name
        return {
            "compactLayouts": base + "/describe/compactLayouts",
            "rowTemplate": base + "/{ID}",
            "approvalLayouts": base + "/describe/approvalLayouts",
            "describe": base + "/describe",
            "quickActions": base + "/quickActions",
            "layouts": base + "/describe/layouts",
            "sobject": base,
        }

    def summary(self, version: str) -> dict[str, Any]:
        """The entry of this object in ``GET /sobjects/``."""
        writable = self.writable
        return {
            "activateable": False,
            "createable": writable,
            "custom": False,
            "customSetting": False,
            "deepCloneable": False,
            "deletable": writable,
            "deprecatedAndHidden": False,
            "feedEnabled": True,
            "hasSubtypes": False,
            "isInterface": False,
            "isSubtype": False,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": self.label + "s" if not self.label.endswith("y") else
            self.label[:-1] + "ies",
            "layoutable": writable,
            "mergeable": writable,
            "mruEnabled": writable,
            "name": self.name,
            "queryable": True,
            "replicateable": True,
            "retrieveable": True,
            "searchable": writable,
            "triggerable": writable,
            "undeletable": writable,
            "updateable": writable,
            "urls": {k: v.replace("{version}", version) for k, v in self.urls().items()},
        }

    def describe(self, version: str) -> dict[str, Any]:
        body = self.summary(version)
        body.update(
            {
                "actionOverrides": [],
                "childRelationships": [],
                "compactLayoutable": True,
                "fields": [f.describe() for f in self.fields],
                "listviewable": None,
                "lookupLayoutable": None,
                "namedLayoutInfos": [],
                "networkScopeFieldName": None,
                "recordTypeInfos": [
                    {
                        "active": True,
                        "available": True,
                        "defaultRecordTypeMapping": True,
                        "developerName": "Master",
                        "master": True,
                        "name": "Master",
                        "recordTypeId": "012000000000000AAA",
                        "urls": {"layout": f"/services/data/v{version}/sobjects/{self.name}"
                                           "/describe/layouts/012000000000000AAA"},
                    }
                ],
                "searchLayoutable": True,
                "supportedScopes": [
                    {"label": "All " + self.name.lower() + "s", "name": "everything"},
                    {"label": "My " + self.name.lower() + "s", "name": "mine"},
                ],
            }
        )
        return dict(sorted(body.items()))


# --------------------------------------------------------------------------- value rules


def format_datetime(moment: dt.datetime) -> str:
    """Salesforce JSON datetime: ``2018-12-18T22:51:36.000+0000`` (always UTC here)."""
    moment = moment.astimezone(dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def now_datetime() -> str:
    return format_datetime(dt.datetime.now(dt.timezone.utc))


def java_double(value: float) -> str:
    """Java ``Double.toString``: ``500.0``, ``9.12260031E8``, ``1.0E-4``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0.0"
    if 1e-3 <= abs(value) < 1e7:
        text = repr(float(value))
        return text if "." in text else text + ".0"
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    chars = "".join(str(d) for d in digits)
    mantissa = chars[0] + "." + (chars[1:] or "0")
    return ("-" if sign else "") + f"{mantissa}E{len(chars) - 1 + exponent}"


def _bad_type(fdef: FieldDef, raw: str) -> RowError:
    return RowError("INVALID_TYPE_ON_FIELD_IN_RECORD",
                    f"{fdef.label}: value not of required type: {raw}", [fdef.name])


def parse_value(fdef: FieldDef, raw: str, object_name: str) -> Any:
    """Parse one non-empty, non-``#N/A`` CSV cell for ``fdef``; raise RowError when invalid.

    Returns the stored value (bool, int, float, str; datetimes as Salesforce JSON strings).
    """
    t = fdef.type
    if t == "boolean":
        low = raw.lower()
        if low in {"true", "1"}:
            return True
        if low in {"false", "0"}:
            return False
        raise _bad_type(fdef, raw)
    if t in {"int", "long"}:
        if not _INT_RE.match(raw):
            raise _bad_type(fdef, raw)
        return int(raw)
    if t in NUMBER_TYPES:
        if not _DOUBLE_RE.match(raw):
            raise _bad_type(fdef, raw)
        return float(raw)
    if t == "date":
        m = _DATE_RE.match(raw)
        try:
            if not m:
                raise ValueError(raw)
            return dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
        except ValueError:
            raise _bad_type(fdef, raw) from None
    if t == "datetime":
        return parse_datetime(raw, fdef)
    if t in {"id", "reference"}:
        normalized = ids.normalize(raw)
        targets = [ids.KEY_PREFIXES.get(o) for o in fdef.reference_to]
        if normalized is None or (targets and normalized[:3] not in targets):
            target = fdef.reference_to[0] if fdef.reference_to else object_name
            raise RowError("MALFORMED_ID", f"{target} ID: id value of incorrect type: {raw}",
                           [fdef.name])
        return normalized
    if t == "email" and not _EMAIL_RE.match(raw):
        raise RowError("INVALID_EMAIL_ADDRESS", f"{fdef.label}: invalid email address: {raw}",
                       [fdef.name])
    if t in {"picklist", "multipicklist"} and fdef.restricted_picklist:
        values = raw.split(";") if t == "multipicklist" else [raw]
        for value in values:
            if value not in fdef.picklist_values:
                raise RowError(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{fdef.label}: bad value for restricted picklist field: {value}",
                    [fdef.name],
                )
    if fdef.length and len(raw) > fdef.length:
        raise RowError(
            "STRING_TOO_LONG",
            f"{fdef.label}: data value too large: {raw} (max length={fdef.length})",
            [fdef.name],
        )
    return raw


def parse_datetime(raw: str, fdef: FieldDef | None = None) -> str:
    m = _DATETIME_RE.match(raw)
    try:
        if not m:
            raise ValueError(raw)
        millis = int((m[7] or "0").ljust(3, "0"))
        zone = m[8]
        if zone == "Z":
            tz = dt.timezone.utc
        else:
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            tz = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        moment = dt.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]),
                             millis * 1000, tzinfo=tz)
    except ValueError:
        if fdef is None:
            raise
        raise _bad_type(fdef, raw) from None
    return format_datetime(moment)


def csv_echo(fdef: FieldDef | None, raw: str) -> str:
    """A value as the result CSVs echo it: doubles in Java form, other values as sent."""
    if fdef is not None and fdef.type in NUMBER_TYPES and raw and raw != NULL_MARKER:
        try:
            return java_double(float(raw))
        except ValueError:
            return raw
    return raw


def csv_value(fdef: FieldDef, value: Any) -> str:
    """A stored value as Bulk query results print it (null → empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if fdef.type == "datetime" and isinstance(value, str):
        return value[:23] + "Z" if value.endswith("+0000") else value
    if isinstance(value, float):
        return java_double(value)
    return str(value)
