"""sObject rows, rows by external id and sObject Collections (reference 5.2, 5.3, 8.2).

The rules only: :mod:`.http` routes the URLs here and renders an :class:`Answer` (status and
JSON body) or an :class:`~.errors.ApiError`. Record-level problems are :class:`RowError`s: a
single-row call answers them as a REST error array, a collection as a per-item result.

Rows (``/sobjects/{Object}/{Id}``): GET (``?fields=``) 200, PATCH 204, DELETE 204 (to the Recycle
Bin), POST ``/sobjects/{Object}`` (or ``/sobjects/{Object}/Id``) 201 ``{id, success, errors}``.
A soft-deleted record answers 404 ``ENTITY_IS_DELETED``; an unknown one 404 ``NOT_FOUND``.

Rows by external id (``/sobjects/{Object}/{Field}/{value}``, any External ID or idLookup field):
GET 200 or 300 (several matches: a JSON list of their URLs); PATCH upserts: 201 created, 200
updated (``{..., "created": false}``; 204 before API 46.0), 300 on several matches; DELETE 204.

Collections (``/composite/sobjects``, at most 200 records): POST create, PATCH update, PATCH
``/{Object}/{ExternalIdField}`` upsert (API >= 46.0), DELETE ``?ids=``, GET/POST
``/{Object}`` retrieve. A well-formed request answers 200 with one result per item, in order;
with ``allOrNone`` one failure rolls every write back.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from . import ids, soql
from .errors import NOT_FOUND_MESSAGE, ApiError, RowError
from .org import Org
from .schema import (
    HISTORY_OBJECTS,
    NUMBER_TYPES,
    REQUIRED_ON_INSERT,
    FieldDef,
    SObjectSchema,
    format_datetime,
    parse_value,
)

MAX_COLLECTION = 200
MAX_RETRIEVE_POST = 2000
UPSERT_RESULT_VERSION = 46  # "created" in results and 200 (not 204) for an upsert-update
COLLECTIONS_VERSION = 42
COLLECTIONS_UPSERT_VERSION = 46
POST_ID_VERSION = 37  # POST /sobjects/{Object}/Id creates a record
READ_ONLY_MESSAGE = (
    "Unable to create/update fields: {fields}. Please check the security settings of this field "
    "and verify that it is read/write for your profile or permission set."
)
ROLLED_BACK = RowError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone "
    "header",
)
# [I] Salesforce's statuses for these row errors are not documented; 404 mirrors NOT_FOUND.
_NOT_FOUND_CODES = {"ENTITY_IS_DELETED", "NOT_FOUND"}


@dataclass
class Answer:
    """A successful outcome: the HTTP status and the JSON body (None: no body)."""

    status: int
    body: Any = None


def not_found(message: str = NOT_FOUND_MESSAGE) -> ApiError:
    return ApiError(404, "NOT_FOUND", message)


def as_api_error(err: RowError) -> ApiError:
    """A record-level error of a single-row call, as its REST error array."""
    status = 404 if err.code in _NOT_FOUND_CODES else 400
    return ApiError(status, err.code, err.message, fields=list(err.fields))


def version_at_least(version: str, major: int) -> bool:
    return float(version) >= major


def parse_json_body(body: bytes) -> Any:
    """The request's JSON; malformed JSON is 400 ``JSON_PARSER_ERROR`` (reference 8.2)."""
    try:
        return json.loads(body.decode("utf-8") or "null")
    except UnicodeDecodeError:
        raise ApiError(400, "JSON_PARSER_ERROR", "Invalid UTF-8 in the request body") from None
    except json.JSONDecodeError as exc:
        # [I] Jackson's wording, without its exact token description.
        raise ApiError(
            400, "JSON_PARSER_ERROR",
            f"Unexpected character: {exc.msg} at [line:{exc.lineno}, column:{exc.colno}]",
        ) from None


def _json_object(body: bytes) -> dict[str, Any]:
    value = parse_json_body(body)
    if not isinstance(value, dict):
        # [I] the message Jackson gives when the body is not an object.
        raise ApiError(400, "JSON_PARSER_ERROR",
                       "Cannot deserialize instance of sObject from a non-object value")
    return value


def _item_error(err: RowError) -> dict[str, Any]:
    return {"statusCode": err.code, "message": err.message, "fields": list(err.fields)}


@dataclass
class Prepared:
    """One record of a request body, deserialised: its fields (by definition) and its Id."""

    schema: SObjectSchema
    fields: list[tuple[FieldDef, str | None]]
    id_value: str | None = None
    has_id: bool = False

    def raw(self, name: str) -> str | None:
        for fdef, raw in self.fields:
            if fdef.name == name:
                return raw
        return None


@dataclass
class Item:
    """The outcome of one collection item."""

    record_id: str | None = None
    error: RowError | None = None
    created: bool | None = None
    existing: bool = False  # the item named a record that exists (its id shows when rolled back)


class Journal:
    """What a request changed, to roll it back (``allOrNone``)."""

    def __init__(self) -> None:
        self.saved: dict[str, tuple[str, dict[str, Any] | None]] = {}

    def created(self, object_name: str, record_id: str) -> None:
        self.saved.setdefault(record_id, (object_name, None))

    def before(self, object_name: str, record: dict[str, Any]) -> None:
        self.saved.setdefault(str(record["Id"]), (object_name, copy.copy(record)))

    def rollback(self, org: Org) -> None:
        for record_id, (object_name, record) in reversed(list(self.saved.items())):
            if record is None:
                org.forget_record(object_name, record_id)
            else:
                org.restore_record(object_name, record)
        self.saved.clear()


def _json_raw(fdef: FieldDef, value: Any) -> str | None:
    """A JSON value as the text the type rules parse; a value of the wrong JSON kind fails the
    whole request (deserialisation), as Salesforce's Jackson does ([I] wording)."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        kind = "START_OBJECT" if isinstance(value, dict) else "START_ARRAY"
        raise ApiError(400, "JSON_PARSER_ERROR",
                       f"Cannot deserialize instance of {fdef.type} from {kind} value for field "
                       f"{fdef.name}")
    if isinstance(value, bool):
        if fdef.type in {"int", "long", *NUMBER_TYPES}:
            raise ApiError(400, "JSON_PARSER_ERROR",
                           f"Cannot deserialize instance of {fdef.type} from VALUE_"
                           f"{str(value).upper()} value {str(value).lower()} for field "
                           f"{fdef.name}")
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return str(value)


class SObjects:
    """The sObject row and collection operations of one org."""

    def __init__(self, org: Org) -> None:
        self.org = org

    # ------------------------------------------------------------------ lookups

    def schema(self, object_name: str) -> SObjectSchema:
        """An object clients write (Lead, Contact); NOT_FOUND for any other."""
        schema = self.org.schema(object_name)
        if schema is None:
            raise not_found()
        return schema

    def readable(self, object_name: str) -> SObjectSchema:
        """Any object clients read (users and field history too); NOT_FOUND else."""
        schema = self.org.readable_schema(object_name)
        if schema is None:
            raise not_found()
        return schema

    def info(self, object_name: str, version: str) -> Answer:
        """``GET /sobjects/{Object}``: the object's summary and (no) recent items."""
        schema = self.readable(object_name)
        return Answer(200, {"objectDescribe": schema.summary(version), "recentItems": []})

    def record_json(self, schema: SObjectSchema, record: dict[str, Any], version: str,
                    fields: list[FieldDef] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"attributes": {
            "type": schema.name,
            "url": f"/services/data/v{version}/sobjects/{schema.name}/{record['Id']}",
        }}
        for fdef in fields if fields is not None else schema.fields:
            body[fdef.name] = record.get(fdef.name)
        return body

    def select_fields(self, schema: SObjectSchema, names: list[str],
                      record_id: str = "") -> list[FieldDef]:
        """The ``fields`` of a GET; an unknown one fails as the SOQL Salesforce runs for it."""
        names = [n.strip() for n in names if n.strip()]
        text = f"SELECT {', '.join(names)} FROM {schema.name} WHERE Id = '{record_id}'"
        chosen: list[FieldDef] = []
        pos = len("SELECT ")
        for name in names:
            fdef = schema.field(name)
            if fdef is None:
                # [I] a row GET with fields= runs a SOQL query; its error is that query's.
                raise soql.caret_error(
                    text, pos, "INVALID_FIELD",
                    f"No such column '{name}' on entity '{schema.name}'. "
                    f"{soql.INVALID_FIELD_HINT}")
            pos += len(name) + 2
            if fdef not in chosen:
                chosen.append(fdef)
        return chosen

    def _row_id(self, schema: SObjectSchema, segment: str) -> str:
        """The live record a row URL names, or Salesforce's error for it."""
        raw = unquote(segment)
        if not ids.id_shaped(raw):
            # [O] restforce/restforce#376: a segment that is no Id is read as an external id
            # field name.
            raise not_found(f"Provided external ID field does not exist or is not accessible: "
                            f"{raw}")
        record_id = ids.normalize(raw)
        if record_id is None or not record_id.startswith(schema.key_prefix):
            # [I] status; the body is reference 8.1's MALFORMED_ID.
            raise ApiError(400, "MALFORMED_ID",
                           f"{schema.name} ID: id value of incorrect type: {raw}", fields=["Id"])
        if record_id in self.org.records[schema.name]:
            return record_id
        if self.org.is_deleted(schema.name, record_id):
            raise as_api_error(RowError("ENTITY_IS_DELETED", "entity is deleted"))
        raise not_found()

    def _collection_id(self, schema: SObjectSchema, raw: str) -> str:
        """The live record a collection item names, or the item's error."""
        record_id = ids.normalize(raw)
        if record_id is None or not record_id.startswith(schema.key_prefix):
            raise RowError("MALFORMED_ID", f"{schema.name} ID: id value of incorrect type: {raw}",
                           ["Id"])
        if record_id in self.org.records[schema.name]:
            return record_id
        if self.org.is_deleted(schema.name, record_id):
            raise RowError("ENTITY_IS_DELETED", "entity is deleted")
        raise RowError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")

    def _lookup_field(self, schema: SObjectSchema, name: str) -> FieldDef:
        """A field usable in ``/sobjects/{Object}/{Field}/{value}``: Id, External ID or
        idLookup (the docs use ``Lead/Email``); any other answers NOT_FOUND ([D] dome_upsert)."""
        fdef = schema.field(unquote(name))
        if fdef is None or not (fdef.external_id or fdef.id_lookup):
            raise not_found()
        return fdef

    def matches(self, schema: SObjectSchema, fdef: FieldDef, value: str) -> list[str]:
        """Ids of the live records whose ``fdef`` equals ``value`` (text case-insensitively)."""
        if fdef.name == "Id":
            record_id = ids.normalize(value)
            live = self.org.records[schema.name]
            return [record_id] if record_id is not None and record_id in live else []
        if fdef.type in {"int", "long", *NUMBER_TYPES}:
            try:
                number = float(value)
            except ValueError:
                return []
            return [rid for rid, rec in self.org.records[schema.name].items()
                    if isinstance(rec.get(fdef.name), (int, float))
                    and float(rec[fdef.name]) == number]
        folded = value.casefold()
        if soql.indexable(fdef) and fdef.type not in {"id", "reference"}:
            # The index compares these types by casefold too: a lookup instead of a scan.
            candidates = self.org.records_with_keys(schema.name, fdef, [folded],
                                                    include_deleted=False)
        else:
            candidates = self.org.all_records(schema.name, include_deleted=False)
        return [str(rec["Id"]) for rec in candidates
                if isinstance(rec.get(fdef.name), str) and rec[fdef.name].casefold() == folded]

    def _urls(self, schema: SObjectSchema, version: str, record_ids: list[str]) -> list[str]:
        return [f"/services/data/v{version}/sobjects/{schema.name}/{rid}" for rid in record_ids]

    # ------------------------------------------------------------------ body rules

    def prepare(self, schema: SObjectSchema, body: dict[str, Any]) -> Prepared:
        """Deserialise one record: an unknown field or a value of the wrong JSON kind fails
        the whole request (400), as Salesforce's deserialiser does."""
        prepared = Prepared(schema, [])
        for key, value in body.items():
            if key == "attributes":
                continue
            fdef = schema.field(key)
            if fdef is None:
                # [I] the message Salesforce gives for an unknown field in a JSON body.
                raise ApiError(400, "INVALID_FIELD",
                               f"No such column '{key}' on sobject of type {schema.name}")
            if fdef.name == "Id":
                prepared.has_id = True
                prepared.id_value = None if value is None else str(value)
                continue
            prepared.fields.append((fdef, _json_raw(fdef, value)))
        return prepared

    def values(self, prepared: Prepared, *, creating: bool,
               skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The stored values of a prepared record, or its RowError (read-only fields first)."""
        object_name = prepared.schema.name
        read_only = [fdef.name for fdef, _ in prepared.fields if fdef.name not in skip
                     and not (fdef.createable if creating else fdef.updateable)]
        if read_only:
            raise RowError("INVALID_FIELD_FOR_INSERT_UPDATE",
                           READ_ONLY_MESSAGE.format(fields=", ".join(read_only)), read_only)
        values: dict[str, Any] = {}
        for fdef, raw in prepared.fields:
            if fdef.name in skip:
                continue
            if raw is None or raw == "":  # [I] an empty string clears a value, as null does
                if fdef.type == "boolean":
                    values[fdef.name] = fdef.default_value is True  # [I] null unchecks a box
                    continue
                if not fdef.nillable and not creating:
                    raise RowError("REQUIRED_FIELD_MISSING",
                                   f"Required fields are missing: [{fdef.name}]", [fdef.name])
                values[fdef.name] = None
                continue
            values[fdef.name] = parse_value(fdef, raw, object_name)
        return values

    # ------------------------------------------------------------------ writes

    def _check_lock(self, record_id: str, touched: set[str]) -> None:
        if self.org.is_locked(record_id):
            touched.add(record_id)
            raise RowError(
                "UNABLE_TO_LOCK_ROW",
                f"unable to obtain exclusive access to this record or 1 records: {record_id}")

    def create(self, prepared: Prepared, journal: Journal,
               extra: dict[str, Any] | None = None) -> str:
        schema = prepared.schema
        if prepared.has_id and prepared.id_value:
            raise RowError("INVALID_FIELD_FOR_INSERT_UPDATE",
                           "cannot specify Id in an insert call", ["Id"])
        values = self.values(prepared, creating=True)
        values.update(extra or {})
        missing = [name for name in REQUIRED_ON_INSERT[schema.name] if values.get(name) is None]
        if missing:
            strict = [m for m in missing if not (f := schema.field(m)) or not f.nillable]
            raise RowError("REQUIRED_FIELD_MISSING",
                           f"Required fields are missing: [{', '.join(missing)}]", strict)
        record = self.org.new_record(schema.name, values, tracked=True)
        journal.created(schema.name, str(record["Id"]))
        return str(record["Id"])

    def update(self, prepared: Prepared, record_id: str, touched: set[str], journal: Journal,
               skip: frozenset[str] = frozenset()) -> None:
        schema = prepared.schema
        self._check_lock(record_id, touched)
        record = self.org.records[schema.name][record_id]
        if schema.name == "Lead" and record.get("IsConverted"):
            raise RowError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
        values = self.values(prepared, creating=False, skip=skip)
        journal.before(schema.name, record)
        for history_id in self.org.update_record(schema.name, record, values):
            journal.created(HISTORY_OBJECTS[schema.name], history_id)

    def delete(self, schema: SObjectSchema, record_id: str, touched: set[str],
               journal: Journal) -> None:
        self._check_lock(record_id, touched)
        record = self.org.records[schema.name][record_id]
        if schema.name == "Lead" and record.get("IsConverted"):
            # As the Bulk delete does (reference 3.10: converted leads are read-only).
            raise RowError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
        journal.before(schema.name, record)
        self.org.soft_delete(schema.name, record_id)

    def _single(self, action: Any) -> Any:
        """Run one single-row write: its RowError becomes the REST error array."""
        touched: set[str] = set()
        try:
            return action(touched, Journal())
        except RowError as err:
            raise as_api_error(err) from None
        finally:
            self.org.release_lock_attempts(touched)

    # ------------------------------------------------------------------ rows

    def get_row(self, object_name: str, segment: str, version: str,
                fields: str | None) -> Answer:
        schema = self.readable(object_name)
        record_id = self._row_id(schema, segment)
        chosen = self.select_fields(schema, fields.split(","), record_id) if fields else None
        record = self.org.records[schema.name][record_id]
        return Answer(200, self.record_json(schema, record, version, chosen))

    def create_row(self, object_name: str, body: bytes, version: str,
                   via_id: bool = False) -> Answer:
        schema = self.schema(object_name)
        if via_id and not version_at_least(version, POST_ID_VERSION):
            raise not_found()
        prepared = self.prepare(schema, _json_object(body))
        record_id = self._single(lambda touched, journal: self.create(prepared, journal))
        return Answer(201, {"id": record_id, "success": True, "errors": []})

    def update_row(self, object_name: str, segment: str, body: bytes) -> Answer:
        schema = self.schema(object_name)
        record_id = self._row_id(schema, segment)
        prepared = self.prepare(schema, _json_object(body))
        if prepared.has_id and ids.normalize(prepared.id_value or "") != record_id:
            # [I] an Id in the body must name the record of the URL.
            raise ApiError(400, "INVALID_FIELD",
                           f"The Id in the request body ({prepared.id_value}) does not match the "
                           f"Id in the URL ({record_id})", fields=["Id"])
        self._single(lambda touched, journal: self.update(prepared, record_id, touched, journal))
        return Answer(204)

    def delete_row(self, object_name: str, segment: str) -> Answer:
        schema = self.schema(object_name)
        record_id = self._row_id(schema, segment)
        self._single(lambda touched, journal: self.delete(schema, record_id, touched, journal))
        return Answer(204)

    # ------------------------------------------------------------------ deleted / updated

    def changed(self, object_name: str, which: str, start: str | None,
                end: str | None) -> Answer:
        """``GET /sobjects/{Object}/deleted`` or ``/updated`` ``?start=&end=`` (ISO 8601):
        soft-deleted records by their deletion time, or live records by ``SystemModstamp``."""
        schema = self.schema(object_name)
        if not start or not end:
            # [I] status, code and wording.
            raise ApiError(400, "MISSING_ARGUMENT", "start and end are required")
        try:
            low = format_datetime(dt.datetime.fromisoformat(start.replace(" ", "+")))
            high = format_datetime(dt.datetime.fromisoformat(end.replace(" ", "+")))
        except ValueError:
            raise ApiError(400, "INVALID_DATE_FORMAT",  # [I] code and wording
                           f"Invalid date format: {start} / {end}") from None
        covered = high[:17] + "00.000+0000"  # [I] the end, down to the minute
        if which == "deleted":
            gone = [rec for rec in self.org.deleted[schema.name].values()
                    if low <= str(rec["SystemModstamp"]) <= high]
            return Answer(200, {
                "deletedRecords": [{"id": rec["Id"], "deletedDate": rec["SystemModstamp"]}
                                   for rec in gone],
                "earliestDateAvailable": low,
                "latestDateCovered": covered,
            })
        touched = [rid for rid, rec in self.org.records[schema.name].items()
                   if low <= str(rec["SystemModstamp"]) <= high]
        return Answer(200, {"ids": touched, "latestDateCovered": covered})

    # ------------------------------------------------------------------ rows by external id

    def get_by_external(self, object_name: str, field_name: str, value: str, version: str,
                        fields: str | None) -> Answer:
        schema = self.schema(object_name)
        fdef = self._lookup_field(schema, field_name)
        found = self.matches(schema, fdef, unquote(value))
        if not found:
            raise not_found()
        if len(found) > 1:
            return Answer(300, self._urls(schema, version, found))
        chosen = self.select_fields(schema, fields.split(","), found[0]) if fields else None
        record = self.org.records[schema.name][found[0]]
        return Answer(200, self.record_json(schema, record, version, chosen))

    def upsert_by_external(self, object_name: str, field_name: str, value: str, body: bytes,
                           version: str, update_only: bool = False) -> Answer:
        """PATCH ``/sobjects/{Object}/{Field}/{value}`` (reference 8.2, [D] dome_upsert)."""
        schema = self.schema(object_name)
        fdef = self._lookup_field(schema, field_name)
        key = unquote(value)
        prepared = self.prepare(schema, _json_object(body))
        named = [f.name for f, _ in prepared.fields if f.name == fdef.name]
        if prepared.has_id or named:
            # [D] "Do not specify Id or an external ID field in the request body or an error is
            # generated"; the code and wording are [I].
            shown = "Id" if prepared.has_id else fdef.name
            raise ApiError(400, "INVALID_FIELD",
                           f"The field {shown} can not be specified in the request body when "
                           f"upserting by {fdef.name}", fields=[shown])
        found = self.matches(schema, fdef, key)
        if len(found) > 1:
            return Answer(300, self._urls(schema, version, found))
        with_created = version_at_least(version, UPSERT_RESULT_VERSION)
        if found:
            self._single(lambda touched, journal: self.update(prepared, found[0], touched,
                                                              journal))
            if not with_created:
                return Answer(204)
            return Answer(200, {"id": found[0], "success": True, "errors": [],
                                "created": False})
        if update_only or fdef.name == "Id":
            raise not_found()
        key_value = self._single(lambda touched, journal: self.values(
            Prepared(schema, [(fdef, key)]), creating=True))
        record_id = self._single(lambda touched, journal: self.create(prepared, journal,
                                                                      key_value))
        body_out: dict[str, Any] = {"id": record_id, "success": True, "errors": []}
        if with_created:
            body_out["created"] = True
        return Answer(201, body_out)

    def delete_by_external(self, object_name: str, field_name: str, value: str,
                           version: str) -> Answer:
        schema = self.schema(object_name)
        fdef = self._lookup_field(schema, field_name)
        found = self.matches(schema, fdef, unquote(value))
        if not found:
            raise not_found()
        if len(found) > 1:
            return Answer(300, self._urls(schema, version, found))
        self._single(lambda touched, journal: self.delete(schema, found[0], touched, journal))
        return Answer(204)

    # ------------------------------------------------------------------ collections

    def _check_collections_version(self, version: str, major: int = COLLECTIONS_VERSION) -> None:
        if not version_at_least(version, major):
            raise not_found()

    def _collection_body(self, body: bytes) -> tuple[bool, list[dict[str, Any]]]:
        spec = _json_object(body)
        records = spec.get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            # [I] wording.
            raise ApiError(400, "JSON_PARSER_ERROR",
                           "Cannot deserialize the request: 'records' must be a list of "
                           "sObjects")
        all_or_none = spec.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise ApiError(400, "JSON_PARSER_ERROR",
                           "Cannot deserialize instance of boolean for 'allOrNone'")
        _check_count(len(records), MAX_COLLECTION)
        return all_or_none, records

    def _record_schema(self, record: dict[str, Any]) -> SObjectSchema:
        attributes = record.get("attributes")
        type_name = attributes.get("type") if isinstance(attributes, dict) else None
        if not type_name:
            # [D] missing attributes.type is a 400; [I] code and wording.
            raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        schema = self.org.schema(str(type_name))
        if schema is None:
            raise ApiError(400, "INVALID_TYPE",
                           f"sObject type '{type_name}' is not supported. "
                           f"{soql.INVALID_TYPE_HINT}")
        return schema

    def _finish(self, items: list[Item], all_or_none: bool, journal: Journal,
                touched: set[str]) -> Answer:
        self.org.release_lock_attempts(touched)
        failed = any(item.error is not None for item in items)
        if failed and all_or_none:
            journal.rollback(self.org)
        results: list[dict[str, Any]] = []
        for item in items:
            result: dict[str, Any] = {}
            error = item.error
            if error is None and failed and all_or_none:
                error = ROLLED_BACK
                if item.existing and item.record_id is not None:
                    result["id"] = item.record_id
            elif item.record_id is not None and (error is None or item.existing):
                result["id"] = item.record_id
            result["success"] = error is None
            result["errors"] = [] if error is None else [_item_error(error)]
            if item.created is not None and error is None:
                result["created"] = item.created
            results.append(result)
        return Answer(200, results)

    def collection_create(self, version: str, body: bytes) -> Answer:
        self._check_collections_version(version)
        all_or_none, records = self._collection_body(body)
        prepared = [self.prepare(self._record_schema(r), r) for r in records]
        journal, touched, items = Journal(), set[str](), []
        for record in prepared:
            try:
                items.append(Item(record_id=self.create(record, journal)))
            except RowError as err:
                items.append(Item(error=err))
        return self._finish(items, all_or_none, journal, touched)

    def collection_update(self, version: str, body: bytes) -> Answer:
        self._check_collections_version(version)
        all_or_none, records = self._collection_body(body)
        prepared = [self.prepare(self._record_schema(r), r) for r in records]
        journal, touched, items = Journal(), set[str](), []
        for record in prepared:
            item = Item()
            try:
                if not record.id_value:
                    raise RowError("MISSING_ARGUMENT", "Id not specified in an update call")
                item.record_id = self._collection_id(record.schema, record.id_value)
                item.existing = True
                self.update(record, item.record_id, touched, journal)
            except RowError as err:
                item.error = err
            items.append(item)
        return self._finish(items, all_or_none, journal, touched)

    def collection_upsert(self, object_name: str, field_name: str, version: str,
                          body: bytes) -> Answer:
        self._check_collections_version(version, COLLECTIONS_UPSERT_VERSION)
        schema = self.schema(object_name)
        fdef = schema.field(field_name)
        if fdef is None or not fdef.external_id:
            # [D] only External ID fields (no record ids); [I] status, code and wording.
            raise ApiError(400, "INVALID_FIELD",
                           f"Field name provided, {field_name} does not match an External ID "
                           f"for {schema.name}")
        all_or_none, records = self._collection_body(body)
        prepared: list[Prepared] = []
        for body_record in records:
            record_schema = self._record_schema(body_record)
            if record_schema.name != schema.name:
                # [D] only objects of the URL's type; [I] code and wording.
                raise ApiError(400, "INVALID_TYPE",
                               f"The records must be of type {schema.name}, not "
                               f"{record_schema.name}")
            prepared.append(self.prepare(schema, body_record))
        journal, touched, items = Journal(), set[str](), []
        for record in prepared:
            item = Item()
            try:
                key = record.raw(fdef.name)
                if record.has_id:
                    # [I] collections upsert by external id takes no record ids.
                    raise RowError("INVALID_FIELD", "cannot specify Id in an upsert call",
                                   ["Id"])
                if not key:
                    raise RowError("MISSING_ARGUMENT", f"{fdef.name} not specified")
                found = self.matches(schema, fdef, key)
                if len(found) > 1:
                    raise RowError("DUPLICATE_EXTERNAL_ID",
                                   f"{fdef.name}: more than one record found for external id "
                                   f"field: [{', '.join(found)}]")
                if found:
                    item.record_id, item.existing, item.created = found[0], True, False
                    self.update(record, found[0], touched, journal,
                                skip=frozenset({fdef.name}))
                else:
                    item.record_id = self.create(record, journal)
                    item.created = True
            except RowError as err:
                item.error = err
            items.append(item)
        return self._finish(items, all_or_none, journal, touched)

    def collection_delete(self, version: str, id_list: str | None,
                          all_or_none_arg: str | None) -> Answer:
        self._check_collections_version(version)
        raw_ids = [r for r in (id_list or "").split(",") if r.strip()]
        if not raw_ids:
            # [I] status, code and wording.
            raise ApiError(400, "MISSING_ARGUMENT", "The ids parameter is required")
        _check_count(len(raw_ids), MAX_COLLECTION)
        all_or_none = (all_or_none_arg or "false").strip().lower() == "true"
        journal, touched, items = Journal(), set[str](), []
        for raw in raw_ids:
            raw = raw.strip()
            item = Item()
            try:
                record_id = ids.normalize(raw)
                if record_id is None:
                    raise RowError("MALFORMED_ID", f"malformed id {raw}")  # [I] wording
                object_name = self.org.object_of_id(record_id)
                if object_name is None:
                    raise RowError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                item.record_id = record_id
                schema = self.org.schemas[object_name]
                if record_id not in self.org.records[object_name]:
                    if self.org.is_deleted(object_name, record_id):
                        item.existing = True
                        raise RowError("ENTITY_IS_DELETED", "entity is deleted")
                    item.record_id = None
                    raise RowError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                item.existing = True
                self.delete(schema, record_id, touched, journal)
            except RowError as err:
                item.error = err
            items.append(item)
        return self._finish(items, all_or_none, journal, touched)

    def collection_retrieve_post(self, object_name: str, version: str, body: bytes) -> Answer:
        """POST ``/composite/sobjects/{Object}`` ``{"ids": [...], "fields": [...]}``."""
        spec = _json_object(body)
        id_list, names = spec.get("ids"), spec.get("fields")
        return self.collection_retrieve(
            object_name, version,
            [str(i) for i in id_list] if isinstance(id_list, list) else None,
            [str(n) for n in names] if isinstance(names, list) else None, MAX_RETRIEVE_POST)

    def collection_retrieve(self, object_name: str, version: str, id_list: list[str] | None,
                            field_names: list[str] | None, limit: int) -> Answer:
        """GET ``?ids=&fields=`` (<= 200) or POST ``{"ids", "fields"}`` (<= 2,000): the
        records in order, ``null`` for an id that names no live record."""
        self._check_collections_version(version)
        schema = self.readable(object_name)
        if not field_names or not any(n.strip() for n in field_names):
            # [D] fields is required; [I] code and wording.
            raise ApiError(400, "MISSING_ARGUMENT", "The fields parameter is required")
        if not id_list:
            raise ApiError(400, "MISSING_ARGUMENT", "The ids parameter is required")
        _check_count(len(id_list), limit)
        chosen = self.select_fields(schema, field_names)
        out: list[dict[str, Any] | None] = []
        live = self.org.records[schema.name]
        for raw in id_list:
            record_id = ids.normalize(str(raw).strip())
            record = live.get(record_id) if record_id is not None else None
            out.append(None if record is None else self.record_json(schema, record, version,
                                                                    chosen))
        return Answer(200, out)


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        # [D] the limit; [I] the code and wording.
        raise ApiError(400, "EXCEEDED_ID_LIMIT",
                       f"record limit reached. cannot submit more than {limit} records into "
                       "this call")


__all__ = ["Answer", "Item", "Journal", "Prepared", "SObjects"]
