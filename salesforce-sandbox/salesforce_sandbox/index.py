"""Equality indexes over an org's records, so ``field IN (...)`` costs the literals, not the org.

An :class:`FieldIndex` maps the comparison key of one field (:func:`.soql.index_key`: the value
as SOQL's ``=`` compares it) to the Ids of the records holding it, live and soft-deleted alike.
It holds Ids, never record objects: a rolled-back write puts back a copy of the record.
:class:`~.org.Org` builds one lazily on first use and keeps it current on every write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

_UNMATCHABLE = object()  # the bucket of unhashable stored values: no literal ever equals them
_ABSENT = object()


class FieldIndex:
    """Record Ids by the comparison key of one field's value."""

    __slots__ = ("buckets", "field_name", "key_of", "make_key")

    def __init__(self, field_name: str, make_key: Callable[[Any], Any]) -> None:
        self.field_name = field_name
        self.make_key = make_key
        self.buckets: dict[Any, set[str]] = {}
        self.key_of: dict[str, Any] = {}

    def _key(self, record: dict[str, Any]) -> Any:
        key = self.make_key(record.get(self.field_name))
        try:
            hash(key)
        except TypeError:
            return _UNMATCHABLE
        return key

    def put(self, record_id: str, record: dict[str, Any]) -> None:
        """Index (or re-index, after a change) the record stored under ``record_id``."""
        key = self._key(record)
        old = self.key_of.get(record_id, _ABSENT)
        if old is not _ABSENT:
            if old is key or (type(old) is type(key) and old == key):
                return
            self._unbucket(record_id, old)
        self.key_of[record_id] = key
        self.buckets.setdefault(key, set()).add(record_id)

    def build(self, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Index records not indexed yet (the first build: no old keys to move)."""
        buckets, key_of, key = self.buckets, self.key_of, self._key
        for record_id, record in records:
            k = key(record)
            key_of[record_id] = k
            bucket = buckets.get(k)
            if bucket is None:
                buckets[k] = {record_id}
            else:
                bucket.add(record_id)

    def remove(self, record_id: str) -> None:
        old = self.key_of.pop(record_id, _ABSENT)
        if old is not _ABSENT:
            self._unbucket(record_id, old)

    def _unbucket(self, record_id: str, key: Any) -> None:
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.discard(record_id)
            if not bucket:
                del self.buckets[key]

    def ids_for(self, keys: Iterable[Any]) -> set[str]:
        """The Ids of the records whose key is one of ``keys``."""
        found: set[str] = set()
        for key in keys:
            bucket = self.buckets.get(key)
            if bucket:
                found.update(bucket)
        return found
