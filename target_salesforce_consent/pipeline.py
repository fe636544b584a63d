"""Overlapping the stages of a run: match queries a few at a time, one batch written while the
next is read, merged and matched.

Against a distant org every call is a round trip and an ingest job takes seconds per thousand
rows; run one after another, the stages leave the org idle most of the time. Two rules keep
overlapping safe:

* one batch is written at a time, in input order (a later batch's job is created only once the
  earlier one is confirmed), so a person's writes are never reordered;
* a person of the next batch whose Salesforce records the batch in flight is writing is matched
  again once that write is confirmed: planning never looks at what Salesforce held before it.

Nothing here touches the run store or the report: the batch worker does, one batch at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Match queries in flight at once. Four hide a batch's matching (about 25 queries of 400 ids
#: for 10,000 records) behind the previous batch's ingest job at a 100-300 ms round trip, while
#: staying far below Salesforce's 25 concurrent long-running requests per org and leaving the
#: target's own CPU (parsing the answers) to the one thread that needs it.
MATCH_CONCURRENCY = 4


class MatchPool:
    """Runs a batch's match queries a few at a time; results come back in query order."""

    def __init__(self, fetch: Callable[[str], list[dict[str, Any]]],
                 concurrency: int = MATCH_CONCURRENCY) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._fetch = fetch
        self._concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None

    def fetch_all(self, queries: Sequence[str]) -> list[list[dict[str, Any]]]:
        if len(queries) <= 1 or self._concurrency == 1:
            return [self._fetch(q) for q in queries]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="match")
        futures = [self._pool.submit(self._fetch, q) for q in queries]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:  # after a failure, the queries not yet started are dropped
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class InFlight(Generic[T]):
    """One batch's writes, running on a daemon thread (a stopped run never waits for it)."""

    def __init__(self, work: Callable[[], T], name: str = "salesforce-writer") -> None:
        self._work: Callable[[], T] | None = work
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # The work usually closes over the batch that holds this InFlight: forgetting it
        # breaks that cycle, so a settled batch is freed at once, not at the next full
        # garbage collection (which, over a heap of batches, costs seconds per run).
        work, self._work = self._work, None
        assert work is not None
        try:
            self._value = work()
        except BaseException as exc:  # handed to the thread that waits for the result
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def conflicting_keys(
    keys: Iterable[str],
    matches: Mapping[str, Sequence[Mapping[str, Any]]],
    writing_keys: set[str],
    writing_ids: set[str],
) -> set[str]:
    """The keys of a batch that the batch in flight is writing to.

    A key conflicts when its case-folded form is one the batch in flight writes (an update, or
    an insert that a match query issued now could not see yet), or when one of its matched
    records is among the records being written.
    """
    found: set[str] = set()
    for key in keys:
        if key.casefold() in writing_keys or any(
            str(record.get("Id")) in writing_ids for record in matches.get(key, ())
        ):
            found.add(key)
    return found


class BatchWorker(Generic[T]):
    """Processes batches one at a time, in order, on a thread of its own.

    The reading thread hands a batch over and waits until the worker has processed it
    (matched, planned, started its jobs, settled the batch before): the next batch is read
    while this one's jobs run, so at most two batches are held at a time. Reading ahead as
    well measured no faster, since reading and processing share one interpreter lock, and
    held one batch more. The first exception stops the worker: the batches handed over after
    it go to ``skip`` with it, and ``submit`` and ``wait`` raise it.
    """

    def __init__(self, handle: Callable[[T], None],
                 skip: Callable[[T, BaseException], None]) -> None:
        self._handle = handle
        self._skip = skip
        self._cond = threading.Condition()
        self._pending: T | None = None
        self._has_pending = False
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._has_pending

    def submit(self, item: T) -> None:
        with self._cond:
            if self._error is not None:
                error = self._error
            else:
                error = None
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="batch-worker",
                                                    daemon=True)
                    self._thread.start()
                self._pending, self._has_pending = item, True
                self._cond.notify_all()
                while self._has_pending and self._error is None:
                    self._cond.wait()
                if self._has_pending:  # the worker stopped before taking it
                    self._pending, self._has_pending = None, False
                    error = self._error
                else:
                    while self._busy:  # until processed (an error ends it too)
                        self._cond.wait()
                    return
        assert error is not None
        self._skip(item, error)
        raise error

    def wait(self) -> None:
        """Until every batch handed over is processed; raises the worker's error, if any."""
        with self._cond:
            while (self._busy or self._has_pending) and self._error is None:
                self._cond.wait()
            while self._busy:
                self._cond.wait()
            if self._error is not None:
                raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._has_pending:
                    self._cond.wait()
                item = self._pending
                self._pending, self._has_pending = None, False
                self._busy = True
                self._cond.notify_all()
            try:
                self._handle(item)  # type: ignore[arg-type]
                del item  # not held while waiting for the next batch
            except BaseException as exc:  # handed to the reading thread
                with self._cond:
                    self._error = exc
                    self._busy = False
                    self._cond.notify_all()
                return
            with self._cond:
                self._busy = False
                self._cond.notify_all()
