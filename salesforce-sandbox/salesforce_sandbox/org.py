"""The org: configuration, tokens, records, API usage, request log and injected faults.

Everything here is plain state and rules; :mod:`.http` only translates HTTP to calls on it.
All public methods expect the caller to hold :attr:`Org.lock` (the HTTP layer takes it around
each request; :class:`~.server.Sandbox` takes it around each test helper).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ids, soql
from .errors import ApiError, OAuthError
from .index import FieldIndex
from .schema import (
    DEFAULT_TRACKED_FIELDS,
    HISTORY_DATA_TYPES,
    HISTORY_OBJECTS,
    LEAD_STATUSES,
    SUPPORTED_OBJECTS,
    VALUELESS_HISTORY_TYPES,
    FieldDef,
    SObjectSchema,
    custom_field,
    format_datetime,
    history_fields,
    now_datetime,
    organization_fields,
    parse_datetime,
    sandbox_process_fields,
    user_fields,
)

DEFAULT_CLIENT_ID = "sandbox-client-id"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"
DEFAULT_DAILY_API_LIMIT = 15000
SESSION_EXPIRED = "Session expired or invalid"
INTEGRATION_USER_ID = ids.to18("0055g00000Intgr")
# The org's people when the seed lists none: who a test can write "as a person".
DEFAULT_PEOPLE = (
    {"Id": ids.to18("0055g00000Rep01"), "Name": "Avery Rep",
     "Username": "avery.rep@sandbox.example", "Email": "avery.rep@sandbox.example"},
    {"Id": ids.to18("0055g00000Rep02"), "Name": "Blake Agent",
     "Username": "blake.agent@sandbox.example", "Email": "blake.agent@sandbox.example"},
)
DEFAULT_INTEGRATION_USER = {
    "Id": INTEGRATION_USER_ID, "Name": "Integration User",
    "Username": "integration@sandbox.example", "Email": "integration@sandbox.example",
}
_TOKEN_ALPHABET = string.ascii_letters + string.digits + "._"


@dataclass
class LoggedRequest:
    """One request the sandbox received (credentials redacted)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int
    kind: str
    time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body.decode("utf-8", "replace"),
            "status": self.status,
            "kind": self.kind,
            "time": self.time,
        }


@dataclass
class HttpFault:
    status: int
    body: str
    count: int
    method: str | None
    path: re.Pattern[str] | None
    content_type: str
    # False: answer instead of handling the request. True: handle it (its effects land), then
    # answer the fault instead of the real response ("the response was lost").
    after: bool = False

    @property
    def drops(self) -> bool:
        """Status 0: close the connection without any response (a network drop)."""
        return self.status == 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or self.path.search(path) is not None


@dataclass
class Faults:
    http: list[HttpFault] = field(default_factory=list)
    locked: dict[str, int | None] = field(default_factory=dict)  # id -> jobs left (None: forever)
    job_failures: list[str] = field(default_factory=list)
    unprocessed: list[int] = field(default_factory=list)


def load_seed(seed: dict[str, Any] | str | Path | None) -> dict[str, Any]:
    if seed is None:
        return {}
    if isinstance(seed, dict):
        return copy.deepcopy(seed)
    return dict(json.loads(Path(seed).read_text(encoding="utf-8")))


class Org:
    """One Salesforce org as the sandbox models it."""

    def __init__(self, seed: dict[str, Any], *, token_ttl: float | None = None) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        org_conf = dict(seed.get("org", {}))
        self.client_id = str(org_conf.get("client_id", DEFAULT_CLIENT_ID))
        self.client_secret = str(org_conf.get("client_secret", DEFAULT_CLIENT_SECRET))
        self.token_ttl = float(token_ttl if token_ttl is not None
                               else org_conf.get("token_ttl", 7200.0))
        self.default_api_limit = int(org_conf.get("daily_api_limit", DEFAULT_DAILY_API_LIMIT))
        self.ids = ids.IdFactory()
        self.org_id = ids.to18("00D5g00000Sndbx")
        self.instance_url = ""
        # Objects clients write (Lead, Contact), and objects they only read: users and the
        # field history of each object whose history the seed leaves enabled.
        self.schemas: dict[str, SObjectSchema] = {}
        self.read_only: dict[str, SObjectSchema] = {
            "User": SObjectSchema("User", [], fields=user_fields(), writable=False),
            "Organization": SObjectSchema("Organization", [], fields=organization_fields(),
                                          writable=False)}
        self.org_name = str(org_conf.get("name", "Salesforce Sandbox"))
        # Tooling API objects: only what clients ask at login (this org has no sandboxes).
        self.tooling: dict[str, SObjectSchema] = {
            "SandboxProcess": SObjectSchema("SandboxProcess", [],
                                            fields=sandbox_process_fields(), writable=False)}
        # Tracked fields by object (empty: no history is kept for it).
        self.tracked: dict[str, frozenset[str]] = {}
        objects = dict(seed.get("objects", {}))
        unknown = set(objects) - set(SUPPORTED_OBJECTS)
        if unknown:
            raise ValueError(f"unsupported objects in seed: {sorted(unknown)}")
        for name in SUPPORTED_OBJECTS:
            spec = dict(objects.get(name, {}))
            custom = [custom_field(f) for f in spec.get("custom_fields", [])]
            self.schemas[name] = SObjectSchema(name, custom)
            self._configure_history(name, spec)
        self._object_by_prefix = {s.key_prefix: n for n, s in reversed(self.schemas.items())}
        self.user_seed = _user_seed(seed.get("users"))
        integration = next((str(u["Id"]) for u in self.user_seed if u.get("integration")),
                           INTEGRATION_USER_ID)
        self.user_id = ids.normalize(integration) or integration  # a bad Id fails in reset()
        # Who the writes in progress are made by, and the moment they are stamped with (None:
        # now); see :meth:`acting_as`.
        self.acting_user_id = self.user_id
        self._acting_at: str | None = None
        self.reset()

    def _configure_history(self, name: str, spec: dict[str, Any]) -> None:
        """Field history of ``name`` from its seed entry: ``"field_history": false`` turns it
        off (its history object then does not exist); ``"history_tracked_fields"`` lists the
        tracked fields, else the standard consent fields plus custom fields with
        ``"trackHistory": true``."""
        schema = self.schemas[name]
        enabled = spec.get("field_history", True)
        if not isinstance(enabled, bool):
            raise ValueError(f"seed objects.{name}.field_history must be true or false, not "
                             f"{enabled!r}")
        if not enabled:
            self.tracked[name] = frozenset()
            return
        listed = spec.get("history_tracked_fields")
        if listed is None:
            names = list(DEFAULT_TRACKED_FIELDS) + [
                str(f["name"]) for f in spec.get("custom_fields", []) if f.get("trackHistory")]
        elif isinstance(listed, list):
            names = [str(n) for n in listed]
        else:
            raise ValueError(f"seed objects.{name}.history_tracked_fields must be a list of "
                             f"field names, not {listed!r}")
        tracked: list[str] = []
        for raw in names:
            fdef = schema.field(raw)
            if fdef is None:
                raise ValueError(f"seed objects.{name}.history_tracked_fields: no field {raw!r} "
                                 f"on {name}; name a standard or custom field of {name}")
            if not fdef.updateable:
                raise ValueError(f"seed objects.{name}.history_tracked_fields: {fdef.name} is "
                                 "read-only; only fields that can change are tracked")
            tracked.append(fdef.name)
        self.tracked[name] = frozenset(tracked)
        history = SObjectSchema(HISTORY_OBJECTS[name], [], fields=history_fields(name),
                                writable=False, label=f"{name} History")
        changed_field = history.field("Field")
        assert changed_field is not None
        changed_field.picklist_values = ["created", *sorted(tracked)]
        self.read_only[history.name] = history

    @property
    def all_schemas(self) -> dict[str, SObjectSchema]:
        """Every object of the org, writable and read-only: what SOQL and describe see."""
        return {**self.schemas, **self.read_only}

    # ------------------------------------------------------------------ state lifecycle

    def reset(self) -> None:
        # Live records by object and Id; soft-deleted ones (the Recycle Bin) apart, so queries
        # over live records never pay for them; hard-deleted Ids are remembered, never reused.
        every = self.all_schemas
        self.records: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in every}
        self.deleted: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in every}
        self.purged: dict[str, str] = {}
        # Where each stored record sits in its store's insertion order (a record moved between
        # stores goes to the end), so an index hit sorts into the order a scan would give.
        self._positions: dict[str, int] = {}
        self._next_position = itertools.count()
        # Equality indexes by object and field name, built on first use (see .index).
        self._indexes: dict[str, dict[str, FieldIndex]] = {n: {} for n in every}
        self.retired: set[str] = set()  # Ids of rolled-back inserts: never handed out again
        self._reserved: set[str] = set()
        self.tokens: dict[str, float] = {}
        self.api_max = self.default_api_limit
        self.api_used = 0
        self.bulk_batches_max = 15000
        self.bulk_batches_used = 0
        self.query_jobs_max = 10000
        self.query_jobs_used = 0
        self.faults = Faults()
        self.log: list[LoggedRequest] = []
        self.calls: Counter[str] = Counter()
        self.ingest_jobs: dict[str, Any] = {}
        self.query_jobs: dict[str, Any] = {}
        self.query_cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
        seeded = {name: list(dict(spec).get("records", []))
                  for name, spec in dict(self.seed.get("objects", {})).items()}
        self.acting_user_id = self.user_id
        self._acting_at = None
        for user in self.user_seed:
            self._add_user(user)
        self._add_organization()
        # Explicit seed Ids first: a generated Id must never take one of them.
        self._reserved = self._seed_ids(seeded)
        try:
            for name, records in seeded.items():
                self.add_records(name, records)
        finally:
            self._reserved = set()

    def _seed_ids(self, seeded: dict[str, list[Any]]) -> set[str]:
        """Validate the seed's explicit Ids; refuse malformed, mistyped or repeated ones."""
        taken: set[str] = set()
        for name, records in seeded.items():
            schema = self.schema(name)
            if schema is None:
                continue
            for index, values in enumerate(records, start=1):
                raw = values.get("Id") if isinstance(values, dict) else None
                if not raw:
                    continue
                record_id = self._checked_id(schema, str(raw), f"seed record {index} of {name}")
                if record_id in taken:
                    raise ValueError(f"seed record {index} of {name}: Id {raw!r} is used by "
                                     "another seed record; Ids must be unique")
                taken.add(record_id)
        return taken

    @staticmethod
    def _checked_id(schema: SObjectSchema, raw: str, where: str) -> str:
        record_id = ids.normalize(raw)
        if record_id is None:
            raise ValueError(
                f"{where}: malformed Id {raw!r}: a Salesforce Id is 15 letters and digits, or "
                "18 whose last 3 are the case-safe checksum of the first 15 (e.g. "
                f"{ids.to18(schema.key_prefix + '5g0000000001')!r}); omit Id to have one "
                "generated")
        if not record_id.startswith(schema.key_prefix):
            raise ValueError(f"{where}: Id {raw!r} is not a {schema.name} Id (those start with "
                             f"{schema.key_prefix!r})")
        return record_id

    # ------------------------------------------------------------------ ids

    def holds(self, record_id: str) -> bool:
        """True when the org holds (or held) this Id: live, deleted, purged, job or reserved."""
        if record_id in self._reserved or record_id in self.purged or record_id in self.retired:
            return True
        if record_id in self.ingest_jobs or record_id in self.query_jobs:
            return True
        return any(record_id in store for store in self.records.values()) or any(
            record_id in store for store in self.deleted.values())

    def new_id(self, prefix: str) -> str:
        """A fresh 18-character Id that the org has never held (seeded, created or deleted)."""
        while True:  # ends: the counter only grows and the org holds finitely many Ids
            candidate = self.ids.new(prefix)
            if not self.holds(candidate):
                return candidate

    # ------------------------------------------------------------------ schema helpers

    def schema(self, object_name: str) -> SObjectSchema | None:
        """A writable object (Lead, Contact) by name, case-insensitively."""
        for name, schema in self.schemas.items():
            if name.lower() == object_name.lower():
                return schema
        return None

    def readable_schema(self, object_name: str) -> SObjectSchema | None:
        """Any object clients can query, retrieve or describe, by name."""
        for name, schema in self.all_schemas.items():
            if name.lower() == object_name.lower():
                return schema
        return None

    # ------------------------------------------------------------------ users

    def _add_user(self, spec: dict[str, Any]) -> None:
        schema = self.read_only["User"]
        user_id = self._checked_id(schema, str(spec["Id"]), f"seed user {spec.get('Name')!r}")
        if user_id in self.records["User"]:
            raise ValueError(f"seed users: Id {spec['Id']!r} is used by two users")
        now = now_datetime()
        name = str(spec.get("Name") or "")
        first, _, last = name.rpartition(" ")
        username = str(spec.get("Username") or "")
        record: dict[str, Any] = {f.name: None for f in schema.fields}
        record.update({
            "Id": user_id, "Username": username, "Name": name, "FirstName": first or None,
            "LastName": last, "Email": spec.get("Email"), "Alias": (first[:1] + last)[:8],
            "IsActive": bool(spec.get("IsActive", True)), "UserType": "Standard",
            "TimeZoneSidKey": spec.get("TimeZoneSidKey", "GMT"),
            "LocaleSidKey": spec.get("LocaleSidKey", "en_US"),
            "LanguageLocaleKey": spec.get("LanguageLocaleKey", "en_US"),
            "EmailEncodingKey": "UTF-8", "ProfileId": None, "IsDeleted": False,
            "CreatedDate": now, "CreatedById": self.user_id, "LastModifiedDate": now,
            "LastModifiedById": self.user_id, "SystemModstamp": now,
        })
        self._place(self.records, "User", record)

    def _add_organization(self) -> None:
        """The one Organization row: a production org (not a sandbox, no trial, no namespace)."""
        now = now_datetime()
        schema = self.read_only["Organization"]
        record: dict[str, Any] = {f.name: None for f in schema.fields}
        record.update({
            "Id": self.org_id, "Name": self.org_name, "OrganizationType": "Enterprise Edition",
            "InstanceName": "SBX1", "IsSandbox": False, "LanguageLocaleKey": "en_US",
            "DefaultLocaleSidKey": "en_US", "TimeZoneSidKey": "GMT", "CreatedDate": now,
            "CreatedById": self.user_id, "LastModifiedDate": now,
            "LastModifiedById": self.user_id, "SystemModstamp": now,
        })
        self._place(self.records, "Organization", record)

    def user(self, user_id: str) -> dict[str, Any] | None:
        normalized = ids.normalize(user_id)
        return self.records["User"].get(normalized) if normalized is not None else None

    @contextlib.contextmanager
    def acting_as(self, user_id: str, at: str | None = None) -> Iterator[None]:
        """Make the writes inside the block as ``user_id`` (stamped ``CreatedById``,
        ``LastModifiedById`` and history ``CreatedById``), at ``at`` (a Salesforce datetime;
        None: the current time)."""
        user = self.user(user_id)
        if user is None:
            known = ", ".join(f"{u['Id']} ({u['Name']})" for u in self.records["User"].values())
            raise ValueError(f"no user {user_id!r} in this org; its users are: {known}")
        if not user["IsActive"]:
            raise ValueError(f"user {user_id} ({user['Name']}) is inactive and cannot write")
        try:
            moment = parse_datetime(at) if at is not None else None
        except ValueError:
            raise ValueError(f"at {at!r} is not a datetime; write it as Salesforce does, e.g. "
                             "2025-01-02T03:04:05Z") from None
        saved = self.acting_user_id, self._acting_at
        self.acting_user_id, self._acting_at = str(user["Id"]), moment
        try:
            yield
        finally:
            self.acting_user_id, self._acting_at = saved

    def userinfo(self, user_id: str) -> dict[str, Any]:
        """The OpenID Connect UserInfo of ``user_id`` (``GET /services/oauth2/userinfo``)."""
        user = self.user(user_id)
        assert user is not None
        base = self.instance_url
        ver = "{version}"  # as Salesforce, when the request names no version
        identity = f"https://login.salesforce.com/id/{self.org_id}/{user['Id']}"
        updated = str(user["LastModifiedDate"])[:19] + "Z"
        return {
            "sub": identity,
            "user_id": user["Id"],
            "organization_id": self.org_id,
            "preferred_username": user["Username"],
            "nickname": str(user["Username"]).split("@")[0],
            "name": user["Name"],
            "email": user["Email"],
            "email_verified": True,
            "given_name": user["FirstName"],
            "family_name": user["LastName"],
            "zoneinfo": user["TimeZoneSidKey"],
            "photos": {"picture": f"{base}/profilephoto/005/F",
                       "thumbnail": f"{base}/profilephoto/005/T"},
            "profile": f"{base}/{user['Id']}",
            "picture": f"{base}/profilephoto/005/F",
            "address": {},
            "is_salesforce_integration_user": user["Id"] == self.user_id,
            "urls": {
                "enterprise": f"{base}/services/Soap/c/{ver}/{self.org_id}",
                "metadata": f"{base}/services/Soap/m/{ver}/{self.org_id}",
                "partner": f"{base}/services/Soap/u/{ver}/{self.org_id}",
                "rest": f"{base}/services/data/v{ver}/",
                "sobjects": f"{base}/services/data/v{ver}/sobjects/",
                "search": f"{base}/services/data/v{ver}/search/",
                "query": f"{base}/services/data/v{ver}/query/",
                "recent": f"{base}/services/data/v{ver}/recent/",
                "tooling_soap": f"{base}/services/Soap/T/{ver}/{self.org_id}",
                "tooling_rest": f"{base}/services/data/v{ver}/tooling/",
                "profile": f"{base}/{user['Id']}",
                "feeds": f"{base}/services/data/v{ver}/chatter/feeds",
                "groups": f"{base}/services/data/v{ver}/chatter/groups",
                "users": f"{base}/services/data/v{ver}/chatter/users",
                "feed_items": f"{base}/services/data/v{ver}/chatter/feed-items",
                "feed_elements": f"{base}/services/data/v{ver}/chatter/feed-elements",
                "custom_domain": base,
            },
            "active": user["IsActive"],
            "user_type": "STANDARD",
            "language": user["LanguageLocaleKey"],
            "locale": user["LocaleSidKey"],
            "utcOffset": 0,
            "updated_at": updated,
            "is_app_installed": True,
        }

    def now(self) -> str:
        """The time a write is stamped with."""
        return self._acting_at or now_datetime()

    def object_of_id(self, record_id: str) -> str | None:
        return self._object_by_prefix.get(record_id[:3])

    # ------------------------------------------------------------------ records

    def new_record(self, object_name: str, values: dict[str, Any], *,
                   tracked: bool = False) -> dict[str, Any]:
        """Store a new record: defaults filled, Id generated, timestamps and writing user set.

        ``tracked``: a client's insert, which field history records (a ``created`` row) when
        the object's history is on; seed records have no history.
        """
        schema = self.schemas[object_name]
        now = self.now()
        record: dict[str, Any] = {}
        for standard in schema.fields:
            boolean = standard.type == "boolean"
            record[standard.name] = copy.deepcopy(standard.default_value) if boolean else None
        if object_name == "Lead":
            record["Status"] = LEAD_STATUSES[0]
        record["OwnerId"] = self.acting_user_id
        for key, value in values.items():
            found = schema.field(key)
            if found is None:
                raise ValueError(f"No such field {key} on {object_name}")
            record[found.name] = _coerce_seed_value(found, value)
        if record.get("Id"):
            record_id = self._checked_id(schema, str(record["Id"]), f"{object_name} record")
            self._reserved.discard(record_id)
            if self.holds(record_id):
                raise ValueError(f"{object_name} record: Id {record_id} is already used in this "
                                 "org; Ids are never reused")
            record["Id"] = record_id
        else:
            record["Id"] = self.new_id(schema.key_prefix)
        record["CreatedDate"] = record.get("CreatedDate") or now
        record["LastModifiedDate"] = record.get("LastModifiedDate") or now
        record["SystemModstamp"] = record["LastModifiedDate"]
        record["CreatedById"] = record.get("CreatedById") or self.acting_user_id
        record["LastModifiedById"] = record.get("LastModifiedById") or record["CreatedById"]
        record["IsDeleted"] = False
        _compute_name(record)
        self._place(self.records, object_name, record)
        if tracked and self.tracked.get(object_name):
            self._history_row(object_name, str(record["Id"]), "created", "Text", None, None)
        return record

    def update_record(self, object_name: str, record: dict[str, Any],
                      values: dict[str, Any]) -> list[str]:
        """Apply a client's values to a stored record as the acting user: one history row per
        tracked field whose value changes, then the stamps. Returns the history rows' Ids.

        Every write path (Bulk ingest, sObject rows, collections) changes records here.
        """
        written: list[str] = []
        tracked = self.tracked.get(object_name)
        if tracked:
            schema = self.schemas[object_name]
            for name, new in values.items():
                old = record.get(name)
                if name not in tracked or old == new:
                    continue
                fdef = schema.field(name)
                assert fdef is not None
                data_type = HISTORY_DATA_TYPES.get(fdef.type, "Text")
                if fdef.type in VALUELESS_HISTORY_TYPES:
                    old = new = None  # Salesforce records that it changed, not the values
                written.append(self._history_row(object_name, str(record["Id"]), name,
                                                 data_type, old, new))
        record.update(values)
        self.touch(record)
        return written

    def _history_row(self, object_name: str, record_id: str, field_name: str, data_type: str,
                     old: Any, new: Any) -> str:
        history = HISTORY_OBJECTS[object_name]
        # History is kept to the second: the milliseconds of CreatedDate are always zero.
        moment = self.now()[:19] + ".000+0000"
        row = {
            "Id": self.new_id(ids.KEY_PREFIXES[history]),
            "IsDeleted": False,
            f"{object_name}Id": record_id,
            "CreatedById": self.acting_user_id,
            "CreatedDate": moment,
            "Field": field_name,
            "DataType": data_type,
            "OldValue": old,
            "NewValue": new,
        }
        self._place(self.records, history, row)
        return str(row["Id"])

    def add_records(self, object_name: str, values: list[dict[str, Any]]) -> list[str]:
        schema = self.schema(object_name)
        if schema is None:
            raise ValueError(f"unsupported object {object_name}")
        return [self.new_record(schema.name, dict(v))["Id"] for v in values]

    def touch(self, record: dict[str, Any]) -> None:
        """Stamp a stored record just changed in place; every such change must end here, as
        this re-indexes it."""
        now = self.now()
        record["LastModifiedDate"] = now
        record["SystemModstamp"] = now
        record["LastModifiedById"] = self.acting_user_id
        _compute_name(record)
        object_name = self.object_of_id(str(record["Id"]))
        if object_name is not None:
            self._reindex(object_name, record)

    def find_record(self, record_id: str, *, include_deleted: bool = False
                    ) -> tuple[str, dict[str, Any]] | None:
        normalized = ids.normalize(record_id)
        if normalized is None:
            return None
        for name, store in self.records.items():
            if normalized in store:
                return name, store[normalized]
        if include_deleted:
            for name, store in self.deleted.items():
                if normalized in store:
                    return name, store[normalized]
        return None

    def is_deleted(self, object_name: str, record_id: str) -> bool:
        """True for a record in the Recycle Bin or hard-deleted (ENTITY_IS_DELETED on writes)."""
        return record_id in self.deleted[object_name] or self.purged.get(record_id) == object_name

    def all_records(self, object_name: str, *, include_deleted: bool) -> list[dict[str, Any]]:
        live = list(self.records[object_name].values())
        return live + list(self.deleted[object_name].values()) if include_deleted else live

    def soft_delete(self, object_name: str, record_id: str) -> dict[str, Any]:
        """Move a live record to the Recycle Bin: ``IsDeleted`` true, seen by queryAll only."""
        record = self.records[object_name].pop(record_id)
        record["IsDeleted"] = True
        self.touch(record)
        self._place(self.deleted, object_name, record)
        return record

    def hard_delete(self, object_name: str, record_id: str) -> None:
        """Remove a live record for good (Bulk ``hardDelete``); its Id stays retired."""
        del self.records[object_name][record_id]
        self._unindex(object_name, record_id)
        self.purged[record_id] = object_name

    def restore_record(self, object_name: str, record: dict[str, Any]) -> None:
        """Put back a record as it was (a rolled-back write), live or deleted by its flag."""
        record_id = str(record["Id"])
        self.records[object_name].pop(record_id, None)
        self.deleted[object_name].pop(record_id, None)
        self._place(self.deleted if record.get("IsDeleted") else self.records, object_name,
                    record)

    def forget_record(self, object_name: str, record_id: str) -> None:
        """Undo a creation (a rolled-back insert) with its history. The Id is not handed out
        again."""
        if self.records[object_name].pop(record_id, None) is not None:
            self._unindex(object_name, record_id)
        self.retired.add(record_id)
        history = HISTORY_OBJECTS.get(object_name)
        if history is not None and history in self.records:
            parent = self.read_only[history].field(f"{object_name}Id")
            assert parent is not None
            for row in self.records_with_keys(history, parent, [soql.index_key(parent, record_id)],
                                              include_deleted=False):
                self.forget_record(history, str(row["Id"]))

    # ------------------------------------------------------------------ indexes

    def _place(self, stores: dict[str, dict[str, dict[str, Any]]], object_name: str,
               record: dict[str, Any]) -> None:
        """Store a record at the end of ``stores[object_name]`` (it is not in it) and index it.

        Every insertion into :attr:`records` or :attr:`deleted` goes through here.
        """
        record_id = str(record["Id"])
        stores[object_name][record_id] = record
        self._positions[record_id] = next(self._next_position)
        self._reindex(object_name, record)

    def _reindex(self, object_name: str, record: dict[str, Any]) -> None:
        record_id = str(record["Id"])
        for index in self._indexes[object_name].values():
            index.put(record_id, record)

    def _unindex(self, object_name: str, record_id: str) -> None:
        self._positions.pop(record_id, None)
        for index in self._indexes[object_name].values():
            index.remove(record_id)

    def _index(self, object_name: str, fdef: FieldDef) -> FieldIndex:
        """The equality index of ``fdef`` (an :func:`.soql.indexable` field), built on first
        use from the live and soft-deleted records."""
        index = self._indexes[object_name].get(fdef.name)
        if index is None:
            index = FieldIndex(fdef.name, lambda value: soql.index_key(fdef, value))
            index.build(itertools.chain(self.records[object_name].items(),
                                        self.deleted[object_name].items()))
            self._indexes[object_name][fdef.name] = index
        return index

    def records_with_keys(self, object_name: str, fdef: FieldDef, keys: list[Any], *,
                          include_deleted: bool) -> list[dict[str, Any]]:
        """The records whose ``fdef`` has one of these :func:`.soql.index_key` keys (None:
        NULL), in :meth:`all_records` order; costs the keys and the matches, not the org."""
        found = self._index(object_name, fdef).ids_for(keys)
        position = self._positions.__getitem__
        live = self.records[object_name]
        out = [live[rid] for rid in sorted((r for r in found if r in live), key=position)]
        if include_deleted:
            gone = self.deleted[object_name]
            out += [gone[rid] for rid in sorted((r for r in found if r in gone), key=position)]
        return out

    def query_candidates(self, query: soql.Query, *, include_deleted: bool
                         ) -> list[dict[str, Any]]:
        """A superset of the records ``query`` matches, in :meth:`all_records` order: from an
        index when its WHERE requires a text ``=``/``IN``, else every record."""
        lookup = soql.equality_lookup(query.where)
        if lookup is None:
            return self.all_records(query.object_name, include_deleted=include_deleted)
        fdef, keys = lookup
        return self.records_with_keys(query.object_name, fdef, keys,
                                      include_deleted=include_deleted)

    def convert_lead(self, lead_id: str) -> str:
        found = self.find_record(lead_id)
        if found is None or found[0] != "Lead":
            raise KeyError(lead_id)
        lead = found[1]
        if lead["IsConverted"]:
            return str(lead["ConvertedContactId"])
        contact = self.new_record("Contact", tracked=True, values={
            "FirstName": lead.get("FirstName"),
            "LastName": lead.get("LastName"),
            "Email": lead.get("Email"),
            "HasOptedOutOfEmail": lead.get("HasOptedOutOfEmail", False),
            "HasOptedOutOfFax": lead.get("HasOptedOutOfFax", False),
            "DoNotCall": lead.get("DoNotCall", False),
        })
        lead["IsConverted"] = True
        lead["ConvertedContactId"] = contact["Id"]
        lead["ConvertedDate"] = dt.date.today().isoformat()
        lead["Status"] = "Closed - Converted"
        self.touch(lead)
        return str(contact["Id"])

    # ------------------------------------------------------------------ OAuth

    def issue_token(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        """Client-credentials token (reference 2.1); raise OAuthError as Salesforce does."""
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        client_id, client_secret = basic if basic is not None else (
            form.get("client_id", ""), form.get("client_secret", ""))
        if not hmac.compare_digest(client_id.encode(), self.client_id.encode()):
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if not hmac.compare_digest(client_secret.encode(), self.client_secret.encode()):
            raise OAuthError("invalid_client", "invalid client credentials")
        token = self.org_id[:15] + "!" + "".join(
            secrets.choice(_TOKEN_ALPHABET) for _ in range(96))
        self.tokens[token] = time.monotonic()
        issued_at = str(int(time.time() * 1000))
        identity = f"https://login.salesforce.com/id/{self.org_id}/{self.user_id}"
        signature = base64.b64encode(
            hmac.new(self.client_secret.encode(), (identity + issued_at).encode(),
                     hashlib.sha256).digest()).decode()
        return {
            "access_token": token,
            "signature": signature,
            "scope": "api",
            "token_format": "opaque",
            "instance_url": self.instance_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "api_instance_url": "https://api.salesforce.com",
        }

    def check_token(self, authorization: str | None) -> None:
        if not authorization or not authorization.startswith("Bearer "):
            raise ApiError(401, "INVALID_SESSION_ID", SESSION_EXPIRED)
        token = authorization[len("Bearer "):].strip()
        issued = self.tokens.get(token)
        if issued is None or time.monotonic() - issued >= self.token_ttl:
            self.tokens.pop(token, None)
            raise ApiError(401, "INVALID_SESSION_ID", SESSION_EXPIRED)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    # ------------------------------------------------------------------ limits

    def count_api_request(self) -> None:
        """Count one data API request, or refuse it when the daily allocation is used up."""
        if self.api_used >= self.api_max:
            raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.api_used += 1

    def limit_info(self) -> str:
        return f"api-usage={self.api_used}/{self.api_max}"

    def set_api_limit(self, max_requests: int, remaining: int | None = None) -> None:
        self.api_max = int(max_requests)
        if remaining is not None:
            self.api_used = max(0, self.api_max - int(remaining))

    def limits(self) -> dict[str, Any]:
        def pair(mx: int, used: int) -> dict[str, int]:
            return {"Max": mx, "Remaining": max(0, mx - used)}

        api = pair(self.api_max, self.api_used)
        return {
            "ActiveScratchOrgs": pair(3, 0),
            "AnalyticsExternalDataSizeMB": pair(40960, 0),
            "ConcurrentAsyncGetReportInstances": pair(200, 0),
            "ConcurrentSyncReportRuns": pair(20, 0),
            "DailyApiRequests": {**api, "Ant Migration Tool": pair(0, 0),
                                 "Salesforce CLI": pair(0, 0)},
            "DailyAsyncApexExecutions": pair(250000, 0),
            "DailyBulkApiBatches": pair(self.bulk_batches_max, self.bulk_batches_used),
            "DailyBulkV2QueryFileStorageMB": pair(976562, 0),
            "DailyBulkV2QueryJobs": pair(self.query_jobs_max, self.query_jobs_used),
            "DataStorageMB": pair(5, 0),
            "FileStorageMB": pair(20, 0),
            "HourlyTimeBasedWorkflow": pair(1000, 0),
            "SingleEmail": pair(15, 0),
        }

    # ------------------------------------------------------------------ faults

    def add_http_fault(self, status: int | None, body: str, *, count: int = 1,
                       method: str | None = None, path: str | None = None,
                       content_type: str = "application/json;charset=UTF-8",
                       after: bool = False) -> None:
        self.faults.http.append(HttpFault(int(status or 0), body, int(count), method,
                                          re.compile(path) if path else None, content_type,
                                          bool(after)))

    def take_http_fault(self, method: str, path: str) -> HttpFault | None:
        for fault in self.faults.http:
            if fault.count > 0 and fault.matches(method, path):
                fault.count -= 1
                if fault.count == 0:
                    self.faults.http.remove(fault)
                return fault
        return None

    def lock_records(self, record_ids: list[str], attempts: int | None = None) -> None:
        for rid in record_ids:
            self.faults.locked[ids.normalize(rid) or rid] = attempts

    def unlock_records(self, record_ids: list[str] | None = None) -> None:
        if record_ids is None:
            self.faults.locked.clear()
            return
        for rid in record_ids:
            self.faults.locked.pop(ids.normalize(rid) or rid, None)

    def is_locked(self, record_id: str) -> bool:
        return record_id in self.faults.locked

    def release_lock_attempts(self, touched: set[str]) -> None:
        """One job touched these locked ids: count down their remaining attempts."""
        for rid in touched:
            left = self.faults.locked.get(rid)
            if left is None:
                continue
            if left <= 1:
                del self.faults.locked[rid]
            else:
                self.faults.locked[rid] = left - 1

    # ------------------------------------------------------------------ request log

    def record_request(self, entry: LoggedRequest) -> None:
        self.log.append(entry)
        self.calls[entry.kind] += 1


def _user_seed(users: Any) -> list[dict[str, Any]]:
    """The seed's users (``"users": [{"Id", "Name", "Username", "Email", "integration"}]``)
    with the integration user added when none is marked; the default people when absent."""
    if users is None:
        return [dict(DEFAULT_INTEGRATION_USER), *(dict(p) for p in DEFAULT_PEOPLE)]
    if not isinstance(users, list) or not all(isinstance(u, dict) for u in users):
        raise ValueError('seed "users" must be a list of objects like {"Id": "005...", "Name": '
                         '"Ada Rep", "Username": "ada@example.com", "Email": "ada@example.com"}')
    out: list[dict[str, Any]] = []
    for index, user in enumerate(users, start=1):
        missing = [k for k in ("Id", "Name", "Username") if not user.get(k)]
        if missing:
            raise ValueError(f"seed user {index}: {', '.join(missing)} missing; each user needs "
                             "an Id (005...), a Name and a Username")
        out.append(dict(user))
    if sum(1 for u in out if u.get("integration")) > 1:
        raise ValueError('seed users: only one user can be "integration": true (the user the '
                         "client-credentials token acts as)")
    if not any(u.get("integration") for u in out):
        out.insert(0, dict(DEFAULT_INTEGRATION_USER))
    return out


def _compute_name(record: dict[str, Any]) -> None:
    if "Name" in record:
        parts = [record.get("FirstName"), record.get("LastName")]
        record["Name"] = " ".join(str(p) for p in parts if p) or None


def _coerce_seed_value(fdef: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    if fdef.type == "boolean":
        if isinstance(value, str):
            return value.lower() in {"true", "1"}
        return bool(value)
    if fdef.type == "datetime" and isinstance(value, str):
        try:
            return parse_datetime(value)
        except ValueError:
            return value
    if fdef.type == "datetime" and isinstance(value, dt.datetime):
        return format_datetime(value)
    if fdef.type in {"int", "long"}:
        return int(value)
    if fdef.type in {"double", "currency", "percent"}:
        return float(value)
    if fdef.type == "multipicklist" and isinstance(value, list):
        return ";".join(str(v) for v in value)
    return value
