"""The records of unsettled batches, kept on disk as sent until their batch settles."""

from __future__ import annotations

import threading

from target_salesforce_consent.failed_records import RecordSpool


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
        count = 2 * RecordSpool._CHUNK + 7  # whole chunks and a partial one

        def read_records() -> None:
            for seq in range(count):
                spool.put(seq, b"[%d]" % seq)

        reader = threading.Thread(target=read_records)
        reader.start()
        reader.join()
        assert [spool.get(seq) for seq in range(count)] == [b"[%d]" % s for s in range(count)]
        spool.drop(list(range(RecordSpool._CHUNK)))
        assert spool.get(0) is None
        assert spool.get(count - 1) == b"[%d]" % (count - 1)
    finally:
        spool.close()
