"""The stages' machinery (pipeline.py) on its own: what it keeps alive between batches."""

from __future__ import annotations

import threading

from target_salesforce_consent.pipeline import BatchWorker


def test_the_next_batch_is_read_once_the_worker_has_processed_the_previous_one() -> None:
    """A hand-over returns only once the batch is processed (its jobs started): the reading
    thread never holds a batch read ahead beside the two the worker and the jobs hold."""
    returned = threading.Event()
    seen_returned: list[bool] = []

    def handle(batch: int) -> None:
        # Had the hand-over returned at once, the reading thread would have said so by now.
        seen_returned.append(returned.wait(timeout=0.5))

    def skip(batch: int, error: BaseException) -> None:
        raise AssertionError(f"batch {batch} skipped: {error}")

    worker: BatchWorker[int] = BatchWorker(handle, skip)
    for batch in (1, 2):
        returned.clear()
        worker.submit(batch)
        returned.set()
        assert len(seen_returned) == batch  # processed before submit returned
    worker.wait()
    assert seen_returned == [False, False]
