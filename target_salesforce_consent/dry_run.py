"""A dry run plans as if its planned writes had been made.

The real run writes each batch before planning the next, so a person whose first batch wrote
the values finds them in Salesforce in a later batch (``skipped_unchanged``), and a person it
created is matched, not created again. A dry run writes nothing; to predict the same
outcomes it keeps what it would have written (per Salesforce Id, and per person it would have
created) and lays that over what Salesforce returns before each later batch is planned.

What it keeps grows with the run, so it lives in SQLite's private temporary on-disk database,
as the run's own store does (``store.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import msgspec

from target_salesforce_consent.mapping import CLEAR, FieldType
from target_salesforce_consent.store import RunStore

__all__ = ["PlannedWrites", "new_record_id", "returned_value"]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(dict[str, str]).decode


def new_record_id(person: str) -> str:
    """The Id a record the dry run would have created is known by in later batches."""
    return f"(would_insert:{person})"


class _Group(Protocol):
    plan: Any


def returned_value(cell: str, ftype: FieldType) -> Any:
    """What Salesforce's query returns for a field after ``cell`` was written to it."""
    if cell == CLEAR:
        return None
    if ftype.type.lower() == "boolean":
        return cell == "true"
    return cell


class PlannedWrites:
    def __init__(self, field_types: Mapping[str, FieldType], match_field: str) -> None:
        self.field_types = field_types
        self.match_field = match_field
        # Private, on disk, removed when closed; used by the batch worker, then by the thread
        # that ends the run, never by two at once.
        self._db = sqlite3.connect("", check_same_thread=False)
        self._db.executescript(
            "CREATE TABLE planned (sf_id TEXT PRIMARY KEY, cells BLOB NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE created (person TEXT PRIMARY KEY, cells BLOB NOT NULL) WITHOUT ROWID;"
        )

    def close(self) -> None:
        self._db.close()

    def _cells(self, table: str, column: str, keys: Iterable[str]) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, cells in self._db.execute(
                f"SELECT {column}, cells FROM {table} WHERE {column} IN ({marks})", chunk
            ):
                found[key] = _decode(cells)
        return found

    def overlay(
        self,
        matches: dict[str, list[dict[str, Any]]],
        people: Iterable[str],
    ) -> dict[str, list[dict[str, Any]]]:
        """``matches`` (person key -> records found) as Salesforce would return them had the
        earlier batches' planned writes been made: a person the dry run would have created
        is matched by a stand-in record (Id ``(would_insert:<organization_user_id>)``)."""
        created = self._cells("created", "person", (k for k in people if k not in matches))
        for key, cells in created.items():
            record: dict[str, Any] = {"Id": new_record_id(key), "IsConverted": False}
            for name, cell in cells.items():
                ftype = self.field_types.get(name)
                record[name] = returned_value(cell, ftype) if ftype else cell
            matches[key] = [record]
        planned = self._cells(
            "planned", "sf_id", (str(r["Id"]) for rs in matches.values() for r in rs)
        )
        for records in matches.values():
            for record in records:
                for name, cell in planned.get(str(record["Id"]), {}).items():
                    record[name] = returned_value(cell, self.field_types[name])
        return matches

    def remember(self, groups: Mapping[str, _Group], store: RunStore, stamped: bool) -> None:
        """Keep what the batch's plans would write; ``stamped``: the consent timestamp field is
        set, so the run's store learns the stamps as the real run's writes teach it."""
        rows = [row for g in groups.values() if g.plan and g.plan.outcome is None
                for row in g.plan.update_rows]  # fmt: skip
        held = self._cells("planned", "sf_id", (row["Id"] for row in rows))
        for row in rows:
            cells = held.setdefault(row["Id"], {})
            cells.update({k: v for k, v in row.items() if k != "Id"})
        created = {
            key: {k: v for k, v in g.plan.insert_row.items() if v != ""}
            for key, g in groups.items()
            if g.plan and g.plan.outcome is None and g.plan.insert_row is not None
        }
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO planned VALUES (?, ?)",
                ((sf_id, _encode(cells)) for sf_id, cells in held.items()),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO created VALUES (?, ?)",
                ((key, _encode(cells)) for key, cells in created.items()),
            )
        if not stamped:
            return
        written: list[tuple[str, int | None, int]] = []
        for key, group in groups.items():
            plan = group.plan
            if plan is None or plan.outcome is not None or plan.stamp is None:
                continue
            written += [
                (r["Id"], plan.baselines.get(r["Id"]), plan.stamp) for r in plan.update_rows
            ]
            if plan.insert_row is not None:
                written.append((new_record_id(key), None, plan.stamp))
        if written:
            store.record_written(written)
