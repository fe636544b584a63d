"""BatchProcessor.read: the plain path gives every record exactly what the full path gives."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any, cast

import pytest

from target_salesforce_consent.mapping import FieldMapping, FieldType
from target_salesforce_consent.salesforce.client import SalesforceClient
from target_salesforce_consent.settings import ResolvedSettings, Settings
from target_salesforce_consent.sinks import BatchProcessor
from tests.test_didomi import mutate
from tests.test_extract import MAPPINGS, ODD_MAPPINGS, ODD_TYPES, TYPES, _record


class _FullPathOnly:
    def read(self, raw: Any) -> None:
        return None


class _Counted:
    """The plain reader, counting the records it read (the test must exercise it)."""

    def __init__(self, reader: Any) -> None:
        self.reader, self.read_records = reader, 0

    def read(self, raw: Any) -> Any:
        result = self.reader.read(raw)
        self.read_records += result is not None
        return result


def _processor(mappings: tuple[FieldMapping, ...], types: dict[str, FieldType]) -> BatchProcessor:
    settings = Settings(
        instance_url="https://acme.my.salesforce.com",
        client_id="id",
        client_secret="secret",
        salesforce_object="Lead",
        mappings=mappings,
        regulations=frozenset({"gdpr"}),
    )
    rs = ResolvedSettings(
        settings=settings,
        mappings=mappings,
        field_types=types,
        match_field="Email",
        consent_timestamp_field=None,
        insert_defaults={},
        select_fields=("Id", "Email"),
    )
    client = SalesforceClient(settings.instance_url, "id", "secret")
    logger = logging.getLogger("test_read_path")
    return BatchProcessor(rs, client, cast(Any, None), cast(Any, None), logger)


@pytest.fixture(params=["mappings", "odd mappings"])
def processors(request: pytest.FixtureRequest) -> Iterator[tuple[BatchProcessor, BatchProcessor]]:
    odd = request.param == "odd mappings"
    mappings, types = (ODD_MAPPINGS, ODD_TYPES) if odd else (MAPPINGS, TYPES)
    plain, full = _processor(mappings, types), _processor(mappings, types)
    full.plain_reader = cast(Any, _FullPathOnly())
    plain.plain_reader = cast(Any, _Counted(plain.plain_reader))
    try:
        yield plain, full
    finally:
        plain.close()
        full.close()


OUIDS = ["jane@example.com", "line\nbreak@example.com", "\ud800@example.com", "x" * 300, None]


@pytest.mark.parametrize("seed", range(60))
def test_the_plain_path_reads_every_record_as_the_full_path(
    seed: int, processors: tuple[BatchProcessor, BatchProcessor]
) -> None:
    plain, full = processors
    rng = random.Random(seed)
    base = _record(rng, seed)
    records = [base]
    for _ in range(10):
        record = dict(base)
        record["status"] = rng.choice([None, "confirmed", "Confirmed", "pending"])
        record["regulation"] = rng.choice(["gdpr", "GDPR", "ccpa", None])
        if "user" not in record:
            record["organization_user_id"] = rng.choice(OUIDS)
        records.append(record)
    records += [mutate(r, rng) for r in records for _ in range(3)]
    for raw in records:
        assert plain.read("users", raw) == full.read("users", raw), raw
    if plain.rs.mappings is MAPPINGS:  # the odd ones often leave a record to the full path
        assert cast(Any, plain.plain_reader).read_records >= len(records) // 3


def test_a_record_with_keys_that_are_not_text_is_reported_not_raised(
    processors: tuple[BatchProcessor, BatchProcessor],
) -> None:
    plain, full = processors
    raw: dict[Any, Any] = {"organization_user_id": "jane@example.com", 1: "one"}
    assert plain.read("users", raw) == full.read("users", raw)
