"""A settled batch is freed as soon as nothing refers to it: it holds a batch's records,
groups and plans, and a reference cycle would keep them until a full garbage collection."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.sinks import BatchProcessor
from tests.conftest import base_config, newsletter, run_target, singer_lines, user


@pytest.fixture
def no_cycle_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_settled_batches_are_freed_without_the_garbage_collector(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cycle_collection: None
) -> None:
    settled: list[weakref.ref[Any]] = []
    finish = BatchProcessor._finish

    def remember(self: BatchProcessor, batch: Any, *args: Any, **kwargs: Any) -> None:
        settled.append(weakref.ref(batch))
        finish(self, batch, *args, **kwargs)

    monkeypatch.setattr(BatchProcessor, "_finish", remember)
    records = [
        user(f"person{i}@example.com", purposes=[newsletter(i % 2 == 0)]) for i in range(9)
    ]
    defaults = {"LastName": "x", "Company": "y"}
    config = base_config(sandbox, tmp_path / "report.jsonl", upsert_mode=True,
                         batch_size_rows=3, insert_defaults=defaults)  # fmt: skip
    result = run_target(config, singer_lines(records, state={"s": 1}))
    assert result.error is None, result.stderr
    assert [line["outcome"] for line in result.report] == ["inserted"] * 9
    assert len(settled) == 3
    assert [ref() for ref in settled] == [None, None, None]
