"""The records of unsettled batches, kept on disk as sent until their batch settles."""

from __future__ import annotations

import json
import logging
import random
import threading
from pathlib import Path
from typing import Any

from salesforce_sandbox import Sandbox
from singer_sdk.contrib.msgspec import decoder as msgspec_decoder

from target_salesforce_consent.failed_records import RecordSpool, encode_record, entry_key
from target_salesforce_consent.target import SingerLineReader
from tests.conftest import run_target, singer_lines, user
from tests.test_trust_failed_records import config, kept, topics


def test_a_record_is_read_back_as_kept_until_its_batch_is_dropped() -> None:
    spool = RecordSpool()
    try:
        spool.put(0, b'{"a":1}')
        spool.put(1, b'{"b":"\\u00e9"}')
        assert spool.get(1) == b'{"b":"\\u00e9"}'  # before its chunk was written
        spool.drop([0, 1])
        assert spool.get(0) is None
        assert spool.get(1) is None
    finally:
        spool.close()


def test_records_put_on_one_thread_are_read_on_another() -> None:
    spool = RecordSpool()
    try:
        count = 2 * RecordSpool.SEGMENT + 7  # whole chunks and a partial one

        def read_records() -> None:
            for seq in range(count):
                spool.put(seq, b"[%d]" % seq)

        reader = threading.Thread(target=read_records)
        reader.start()
        reader.join()
        assert [spool.get(seq) for seq in range(count)] == [b"[%d]" % s for s in range(count)]
        spool.drop(list(range(RecordSpool.SEGMENT)))
        assert spool.get(0) is None
        assert spool.get(count - 1) == b"[%d]" % (count - 1)
    finally:
        spool.close()


LINES = [
    '{"type": "RECORD", "stream": "users",'
    ' "record": {"b": 1.50, "a": [1e3, -0.0, 12345678901234567890]}}',
    '{"type":"RECORD","stream":"users","record":{"x":"caf\\u00e9 \\ud83d\\ude00 é","n":null}}',
    '{"record": {"z": {"y": {"x": [true, false, {}]}}}, "type": "RECORD", "stream": "events"}',
]  # fmt: skip


def test_records_dropped_together_are_the_records_dropped_one_by_one() -> None:
    """A batch's records are dropped segment by segment: the same records go as when each is
    looked up on its own (the newest segment that still holds it first), whatever the order,
    repeats and records never kept or already gone."""
    pick = random.Random(7)
    for _ in range(40):
        spools = RecordSpool(), RecordSpool()
        try:
            seq = 0
            for _ in range(pick.randrange(1, 4 * RecordSpool.SEGMENT // 3)):
                seq += pick.choice([1, 1, 1, 2, -pick.randrange(1, 50)])  # numbers may repeat
                seq = max(seq, 0)
                for spool in spools:
                    spool.put(seq, b"[%d]" % seq)
            for _ in range(3):
                batch = [pick.randrange(0, seq + 10) for _ in range(pick.randrange(0, 300))]
                spools[0].drop(batch)
                _drop_one_by_one(spools[1], batch)
                assert _held(spools[0]) == _held(spools[1])
        finally:
            for spool in spools:
                spool.close()


def _drop_one_by_one(spool: RecordSpool, seqs: list[int]) -> None:
    """The plain rule: each record looked up on its own, as ``get`` finds it."""
    with spool._lock:
        for seq in seqs:
            found = spool._find(seq)
            if found is not None:
                segment, index = found
                segment.offsets[index] = -1 - segment.offsets[index]
                segment.live -= 1
        for at in range(len(spool._segments) - 2, -1, -1):
            if spool._segments[at].live == 0:
                spool._segments[at].file.close()
                del spool._segments[at]


def _held(spool: RecordSpool) -> list[tuple[list[int], list[int], int]]:
    return [(list(s.seqs), list(s.offsets), s.live) for s in spool._segments]


def test_a_record_kept_as_its_line_is_read_back_as_its_json_would_have_been_kept() -> None:
    spool = RecordSpool(SingerLineReader.record_of_line)
    try:
        for seq, line in enumerate(LINES):
            spool.put_line(2 * seq, line)
            spool.put(2 * seq + 1, b"[%d]" % seq)
        spool.drop([1, 2])  # a neighbour dropped: the entries around it are read whole
        for seq, line in enumerate(LINES):
            expected = encode_record(msgspec_decoder.decode(line)["record"])
            assert spool.get(2 * seq) == (None if seq == 1 else expected)
            assert spool.get(2 * seq + 1) == (None if seq == 0 else b"[%d]" % seq)
    finally:
        spool.close()


def test_lines_written_together_are_each_read_back_as_put() -> None:
    # record_of_line gives the line itself: what is read back is that line, encoded as JSON
    spool = RecordSpool(lambda line: line)
    lines = [f"line {seq} " + ("caf\u00e9 \ud800" if seq % 7 == 0 else "plain") * (seq % 5)
             for seq in range(2 * RecordSpool.SEGMENT + 3 * RecordSpool.LINES_PER_WRITE + 5)]
    try:
        for seq, line in enumerate(lines):
            if seq % 1000 == 999:  # a record kept as its JSON between lines not written yet
                spool.put(seq, b"[%d]" % seq)
            else:
                spool.put_line(seq, line)
            if seq % 3001 == 0:  # one read back before the lines after it are put
                assert spool.get(seq) == encode_record(line)
        for seq, line in enumerate(lines):
            expected = b"[%d]" % seq if seq % 1000 == 999 else encode_record(line)
            assert spool.get(seq) == expected, seq
    finally:
        spool.close()


def test_a_file_of_the_spool_goes_once_its_records_are_dropped() -> None:
    spool = RecordSpool()
    try:
        for seq in range(RecordSpool.SEGMENT + 1):
            spool.put(seq, b"[%d]" % seq)
        first = spool._segments[0].file
        spool.drop(list(range(RecordSpool.SEGMENT - 1)))
        assert not first.closed
        spool.drop([RecordSpool.SEGMENT - 1])
        assert first.closed
        assert spool.get(RecordSpool.SEGMENT) == b"[%d]" % RecordSpool.SEGMENT
    finally:
        spool.close()


def test_a_failed_record_kept_from_its_line_has_the_key_of_its_json(
    sandbox: Sandbox, tmp_path: Path, failed_records_home: Path
) -> None:
    records = [
        user("jane@example.com", purposes=[topics("offers")], score=1.50, note="caf\u00e9"),
        user("john@example.com", purposes=[topics("offers")], big=12345678901234567890),
    ]
    lines = singer_lines(records)
    result = run_target(config(sandbox, tmp_path / "r.jsonl", {"news": "News"}), lines)
    assert result.error is None, result.stderr
    kept_records = {e["organization_user_id"]: e for e in kept(failed_records_home)}
    assert set(kept_records) == {"jane@example.com", "john@example.com"}
    for line in lines.splitlines():
        message = msgspec_decoder.decode(line)
        if message["type"] != "RECORD":
            continue
        record = message["record"]
        entry = kept_records[record["organization_user_id"]]
        assert entry["key"] == entry_key("users", encode_record(record))
        assert entry["record"] == json.loads(encode_record(record))


def test_a_deeply_nested_line_is_read_back_from_a_deep_stack() -> None:
    depth = 850  # decodes on a shallow stack; not 300 frames deeper
    line = '{"type":"RECORD","stream":"s","record":{"a":' + "[" * depth + "]" * depth + "}}"
    spool = RecordSpool(SingerLineReader.record_of_line)

    def get_from_deeper(levels: int) -> bytes | None:
        return spool.get(0) if levels == 0 else get_from_deeper(levels - 1)

    try:
        spool.put_line(0, line)
        assert get_from_deeper(300) == encode_record(msgspec_decoder.decode(line)["record"])
    finally:
        spool.close()


def test_people_settled_are_kept_with_their_newest_time_in_a_small_page_cache(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    from target_salesforce_consent.failed_records import (
        SETTLED_CACHE_KIB,
        FailedEntry,
        FailedRecordStore,
        LocalFolder,
    )

    store = FailedRecordStore(
        LocalFolder(tmp_path), 3, dry_run=False, logger=logging.getLogger("test")
    )
    try:
        # SQLite's default cache (2,000 KiB) would be filled, and held, by a long run.
        (cache,) = store._settled.execute("PRAGMA cache_size").fetchone()
        assert cache == -SETTLED_CACHE_KIB and SETTLED_CACHE_KIB < 2_000

        def settled(ouid: str, ts: int) -> tuple[Any, str, bool, None]:
            item = SimpleNamespace(spooled=False, seq=0, ouid=ouid, ts=ts, failed_key=None)
            return item, "updated", False, None

        # out of key order, a person twice in a batch and again in a later one
        store.batch_done([settled("zoe", 5_000_000), settled("Ann", 9_000_000),
                          settled("ann", 2_000_000), settled("bob", 1_000_000)], True)  # fmt: skip
        store.batch_done([settled("BOB", 3_000_000), settled("zoe", 4_000_000)], True)

        def superseded(ouid: str, seconds: int) -> bool:
            entry = FailedEntry(
                key="k", stream="s", record=None, organization_user_id=ouid,
                timestamp=f"1970-01-01T00:00:{seconds:02d}.000Z",
                error=None, failures=1, first_failed_at="", last_failed_at="",
            )  # fmt: skip
            return store._superseded(entry)

        assert superseded("ann", 8) and not superseded("ANN", 9)  # the newest of the batch
        assert superseded("bob", 2) and not superseded("bob", 3)  # the later batch's
        assert superseded("zoe", 4) and not superseded("zoe", 5)  # not the later, older one
        assert not superseded("eve", 1)
    finally:
        store.close()
