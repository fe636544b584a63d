"""What a batch holds is freed as soon as the batch is settled."""

from __future__ import annotations

import copy
import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.sinks import BatchProcessor, _Batch
from tests.conftest import SEED, base_config, newsletter, run_target, singer_lines, user


def test_a_settled_batch_is_freed_without_waiting_for_the_garbage_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every record, plan and report line of a batch goes as soon as the batch is settled:
    nothing in it refers back to it (a reference cycle would keep it, and all it holds, until
    a full garbage collection: more batches alive at once than the three the memory is
    measured for)."""
    settled: list[weakref.ref[_Batch]] = []
    report_batch = BatchProcessor._report_batch

    def keep_ref(self: BatchProcessor, batch: _Batch, *, completed: bool) -> Any:
        settled.append(weakref.ref(batch))
        return report_batch(self, batch, completed=completed)

    monkeypatch.setattr(BatchProcessor, "_report_batch", keep_ref)
    records = [
        user(f"p{i}@example.com", purposes=[newsletter(True)],
             updated_at=f"2024-06-18T16:40:0{1 + i // 3}.000Z")
        for i in range(6)
    ]  # fmt: skip
    with Sandbox(seed=copy.deepcopy(SEED), latency=0.02, rows_per_second=100) as sb:
        config = base_config(sb, tmp_path / "report.jsonl", upsert_mode=True, batch_size_rows=3,
                             insert_defaults={"LastName": "x", "Company": "y"})  # fmt: skip
        gc.collect()
        gc.disable()
        try:
            result = run_target(config, singer_lines(records, state={"s": 1}))
            alive = [ref for ref in settled if ref() is not None]
        finally:
            gc.enable()
    assert result.error is None, result.stderr
    assert [line["outcome"] for line in result.report] == ["inserted"] * 6
    assert len(settled) == 2 and not alive
