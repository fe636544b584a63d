"""BatchProcessor.read: the plain path gives every record exactly what the full path gives."""

from __future__ import annotations

import copy
import io
import json
import logging
import random
from collections.abc import Iterator
from contextlib import redirect_stdout
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.didomi import PlainShape
from target_salesforce_consent.extract import is_valid_unicode
from target_salesforce_consent.mapping import FieldMapping, FieldType
from target_salesforce_consent.salesforce.client import SalesforceClient
from target_salesforce_consent.settings import ResolvedSettings, Settings
from target_salesforce_consent.sinks import (
    _CONTROL_CHARS,
    INVALID_UNICODE,
    BatchProcessor,
    ouid_problem,
)
from target_salesforce_consent.target import PlainLine, SingerLineReader
from tests.conftest import SEED, FastTarget, base_config, event, newsletter, singer_lines, user
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

    def read_shape(self, shape: Any) -> Any:
        result = self.reader.read_shape(shape)
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


_shape = msgspec.json.Decoder(PlainShape, float_hook=Decimal).decode
_whole = msgspec.json.Decoder(float_hook=Decimal).decode


def _read_line(processor: BatchProcessor, text: str) -> Any:
    """What the target reads of a record sent as ``text``: from its plain shape, else whole."""
    try:
        item = processor.read_shape("users", _shape(text))
    except msgspec.DecodeError:
        item = None
    return item if item is not None else processor.read("users", _decoded(text))


def _decoded(text: str) -> Any:
    """The record of ``text`` decoded whole (by json when msgspec refuses a lone surrogate)."""
    try:
        return _whole(text)
    except msgspec.DecodeError:
        return json.loads(text, parse_float=Decimal)


@pytest.mark.parametrize("seed", range(40))
def test_a_record_read_from_its_line_reads_as_the_full_path(
    seed: int, processors: tuple[BatchProcessor, BatchProcessor]
) -> None:
    plain, full = processors
    rng = random.Random(seed)
    base = _record(rng, seed)
    texts = [json.dumps(base)]
    for _ in range(40):
        odd = mutate(base, rng)
        if "user" not in odd and rng.random() < 0.5:
            odd["organization_user_id"] = rng.choice(OUIDS)
        text = json.dumps(odd)
        if rng.random() < 0.2:  # a key given twice: the last one counts
            consents = mutate(base, rng).get("consents")
            text = text[:-1] + ', "consents": ' + json.dumps(consents) + "}"
        texts.append(text)
    # Each text twice, in another order: the second time from what the reader remembers.
    for text in [*texts, *reversed(texts)]:
        assert _read_line(plain, text) == full.read("users", _decoded(text)), text
    if plain.rs.mappings is MAPPINGS:
        assert cast(Any, plain.plain_reader).read_records > 0


ODD_OUIDS = [
    "jane@example.com", "a b@example.com", " padded ", "line\nbreak", "tab\there", "nul\x00",
    "del\x7f", "\x1f", "caf\u00e9@example.fr", "nbsp\u00a0x", "sep\u2028x", "zw\u200bx",
    "next\x85line", "\ud800@example.com", "x" * 300, "%'\\" * 100, "\u00e9" * 2000,
]  # fmt: skip


def test_an_organization_user_id_is_checked_by_each_rule_in_turn() -> None:
    """ouid_problem gives what its rules give one after another (an id of printable ASCII
    passes the first two at once)."""
    processor = _processor(MAPPINGS, TYPES)
    try:
        for ouid in ODD_OUIDS:
            if _CONTROL_CHARS.search(ouid):
                expected = ouid_problem("\n", processor.queries)
                assert expected is not None and expected.startswith("INVALID_FIELD: "), ouid
            elif not is_valid_unicode(ouid):
                expected = INVALID_UNICODE
            else:
                expected = processor.queries.problem(ouid)
            assert ouid_problem(ouid, processor.queries) == expected, ouid
    finally:
        processor.close()


def test_records_that_give_the_same_choices_share_one_dict() -> None:
    processor = _processor(MAPPINGS, TYPES)
    try:
        purposes = [{"id": "news", "enabled": True, "values": {"topics": {"value": "A,B"}}}]
        texts = [  # two records of one person (the mappings read the id and timestamp)
            json.dumps({"id": didomi_id, "organization_user_id": "a@example.com",
                        "updated_at": "2024-06-01T10:00:00.000Z",
                        "consents": {"purposes": purposes}})
            for didomi_id in ("one", "two")
        ]  # fmt: skip
        first, second = (processor.read_shape("users", _shape(text)) for text in texts)
        assert first is not None and second is not None
        assert first.choices is second.choices
        other = json.loads(texts[1])
        other["consents"]["purposes"][0]["enabled"] = False
        third = processor.read_shape("users", _shape(json.dumps(other)))
        assert third is not None and third.choices is not None
        assert third.choices is not first.choices
        assert third.choices["News__c"].cell == "false"
    finally:
        processor.close()


# -- the reading loop: plain RECORD lines straight to the target, the others as messages -------


def _line(message: dict[str, Any]) -> str:
    return json.dumps(message) + "\n"


def test_the_reader_reads_plain_records_itself_and_leaves_the_rest_to_the_sdk_in_order() -> None:
    plain_user = {"id": "u-1", "organization_user_id": "jane@example.com"}
    refused = {"id": "u-2", "organization_user_id": "john@example.com", "created_at": 5}
    unusual = {"id": "u-3", "organization_user_id": "ann@example.com", "custom": 1}
    lines = [
        _line({"type": "SCHEMA", "stream": "users", "schema": {}, "key_properties": []}),
        _line({"type": "RECORD", "stream": "users", "record": plain_user}),
        _line({"type": "RECORD", "stream": "users", "record": refused}),
        _line({"type": "RECORD", "stream": "users", "record": unusual}),
        _line({"type": "STATE", "value": {"bookmarks": {}}}),
        _line({"type": "RECORD", "stream": "events", "record": plain_user}),
    ]
    seen: list[tuple[str, Any]] = []

    def read_plain_record(stream: str, shape: PlainShape, line: str) -> bool:
        assert line == lines[[1, 2, 5][len([s for s in seen if s[0] == "plain"])]]
        seen.append(("plain", (stream, shape.id)))
        return shape.id != "u-2"  # the plain reader refuses the second record

    def callback(kind: str) -> Any:
        return lambda message: seen.append((kind, message))

    reader = SingerLineReader()
    reader.read_plain_record = read_plain_record
    counts = reader.process_lines(
        io.StringIO("".join(lines)),
        {kind: callback(kind) for kind in ("SCHEMA", "RECORD", "STATE")},
    )
    assert [kind for kind, _ in seen] == ["SCHEMA", "plain", "plain", "RECORD", "RECORD",
                                         "STATE", "plain"]  # fmt: skip
    assert seen[1][1] == ("users", "u-1") and seen[6][1] == ("events", "u-1")
    # A refused line reaches the SDK decoded whole, as any line outside the plain shape.
    assert seen[3][1] == {"type": "RECORD", "stream": "users", "record": refused}
    assert seen[4][1] == {"type": "RECORD", "stream": "users", "record": unusual}
    assert counts == {"SCHEMA": 1, "RECORD": 4, "STATE": 1}


def test_without_a_plain_reader_every_line_is_a_message() -> None:
    record = {"id": "u-1", "organization_user_id": "jane@example.com"}
    messages: list[dict[str, Any]] = []
    counts = SingerLineReader().process_lines(
        io.StringIO(_line({"type": "RECORD", "stream": "users", "record": record})),
        {"RECORD": messages.append},
    )
    assert counts == {"RECORD": 1}
    assert messages[0]["record"].__class__ is PlainLine
    assert messages[0]["record"].shape.id == "u-1"


class _MessagesOnly(FastTarget):
    """The target with every line read as a message by the SDK's loop (no plain reading)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(SingerLineReader, self.message_reader).read_plain_record = None


def _listen(target_class: type[FastTarget], config: dict[str, Any], messages: str
            ) -> tuple[list[dict[str, Any]], list[str]]:
    """The report lines (without job ids) and the SDK's summary of the lines it read."""
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    logger = logging.getLogger(target_class.name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with redirect_stdout(io.StringIO()):
            target_class(config=config, validate_config=True).listen(io.StringIO(messages))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    report = [json.loads(line) for line in Path(config["report_path"]).read_text().splitlines()]
    for line in report:
        line.pop("job_id", None)
    return report, [line for line in logs.getvalue().splitlines() if "completed processing" in line]


def test_a_run_reads_as_it_does_with_every_line_a_message(tmp_path: Path) -> None:
    records = [
        user("jane@example.com", purposes=[newsletter(False)]),
        user("john@example.com", purposes=[newsletter(True)], created_at=5),  # refused
        user("ann@example.com", purposes=[newsletter(True)], custom=1),  # not the plain shape
        user("line\nbreak@example.com", purposes=[newsletter(True)]),
        user(None, purposes=[newsletter(True)]),
        event("jane@example.com", purposes=[newsletter(True)], status="pending"),
    ]
    messages = singer_lines(records, state={"bookmarks": {"users": 1}}) + singer_lines(
        [event("john@example.com", purposes=[newsletter(False)])], stream="events"
    )
    runs = []
    for target_class in (FastTarget, _MessagesOnly):
        with Sandbox(seed=copy.deepcopy(SEED)) as sb:
            path = tmp_path / f"{target_class.__name__}.jsonl"
            runs.append(_listen(target_class, base_config(sb, path), messages))
    (plain_report, plain_summary), (report, summary) = runs
    assert plain_report == report
    assert [line["outcome"] for line in report] == [
        "updated", "failed", "skipped_unmatched", "failed", "skipped_no_ouid", "skipped_filtered",
        "skipped_unchanged",
    ]  # fmt: skip
    assert plain_summary == summary
    assert "(2 schemas, 7 records, 0 batch manifests, 1 state messages" in summary[0]
