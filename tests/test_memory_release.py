"""A run frees each batch as soon as it is settled, without waiting for the garbage collector.

A batch that only the cycle collector could free stays in memory until the next full
collection, and full collections over a heap of batches cost seconds of CPU per run: the
target therefore keeps its batches free of reference cycles, and collects garbage rarely.
"""

from __future__ import annotations

import gc
import platform
import subprocess
import sys
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.pipeline import InFlight
from target_salesforce_consent.plan import GroupPlan, Row
from target_salesforce_consent.report import Outcome, OutcomeLine, RunReport
from target_salesforce_consent.salesforce.bulk import BulkIngest, IngestOutcome
from target_salesforce_consent.sinks import _lean
from target_salesforce_consent.target import GC_THRESHOLDS, tune_malloc
from tests.conftest import base_config, newsletter, run_target, singer_lines, user


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Holder:
    def __init__(self) -> None:
        self.parts: list[InFlight[int]] = []


def start_writes(batch: Holder) -> None:
    batch.parts.append(InFlight(lambda: id(batch)))  # the work closes over its batch


def test_a_finished_write_forgets_the_batch_it_closed_over(no_automatic_gc: None) -> None:
    batch = Holder()
    start_writes(batch)
    assert batch.parts[0].result() == id(batch)
    freed = weakref.ref(batch)
    del batch
    assert freed() is None, "the batch is only reachable through a cycle"


def test_settled_batches_leave_no_cyclic_garbage(
    sandbox: Sandbox, tmp_path: Path, no_automatic_gc: None
) -> None:
    records = [
        user(f"p{i}@example.com", purposes=[newsletter(i % 2 == 0)]) for i in range(12)
    ] + [user("jane@example.com", purposes=[newsletter(False)])]
    config = base_config(sandbox, tmp_path / "report.jsonl", batch_size_rows=3)
    result = run_target(config, singer_lines(records, state={"s": 1}))
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "updated"

    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        leftovers = {type(obj).__qualname__ for obj in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    held = leftovers & {"_Batch", "_Group", "BufferedRecord", "GroupPlan", "OutcomeLine"}
    assert not held, f"settled batches were left for the cycle collector: {sorted(held)}"


def test_a_batch_frees_its_job_results_once_its_lines_are_made(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_automatic_gc: None
) -> None:
    # The results of a 10,000-row job are a few MiB: not held while the batch's report is
    # written and its failed records kept (the moment of the run's peak memory).
    outcomes: list[weakref.ref[IngestOutcome]] = []
    alive_at_report: list[int] = []
    run_job, write_batch = BulkIngest.run, RunReport.write_batch

    def run_and_watch(self: BulkIngest, *args: Any, **kwargs: Any) -> IngestOutcome:
        outcome = run_job(self, *args, **kwargs)
        outcomes.append(weakref.ref(outcome))
        return outcome

    def count_and_write(self: RunReport, lines: Iterable[OutcomeLine]) -> Any:
        alive_at_report.append(sum(1 for outcome in outcomes if outcome() is not None))
        return write_batch(self, lines)

    monkeypatch.setattr(BulkIngest, "run", run_and_watch)
    monkeypatch.setattr(RunReport, "write_batch", count_and_write)
    records = [user("jane@example.com", purposes=[newsletter(False)])]
    config = base_config(sandbox, tmp_path / "report.jsonl")
    result = run_target(config, singer_lines(records, state={"s": 1}))
    assert result.error is None, result.stderr
    assert result.line_for("jane@example.com")["outcome"] == "updated"
    assert len(outcomes) == 1  # the update job's
    assert alive_at_report == [0]


def test_a_lean_plan_reads_as_the_plan_it_was_made_from() -> None:
    rows = [Row(["Id", "A"], ["00Q1", "true"]), Row(["Id", "A"], ["00Q2", "false"])]
    plans = [
        GroupPlan(None, ("00Q1",), {}, update_rows=rows[:1], baselines={"00Q1": 1_000}),
        GroupPlan(None, ("00Q1",), {}, update_rows=rows[:1], baselines={"00Q1": None}),
        GroupPlan(
            None, ("00Q1", "00Q2"), {}, update_rows=rows, baselines={"00Q1": 5, "00Q2": 6},
            kept={"00Q2": ["A"]},
        ),
        GroupPlan(Outcome.SKIPPED_UNMATCHED, (), {"A": True}),
    ]
    for plan in plans:
        before = replace(plan, update_rows=list(plan.update_rows), baselines=dict(plan.baselines),
                         kept=dict(plan.kept))  # fmt: skip
        lean = _lean(plan)
        assert list(lean.update_rows) == before.update_rows
        for record_id in ("00Q1", "00Q2", "00Q3"):  # read by Id (a None baseline: none held)
            assert lean.baselines.get(record_id) == before.baselines.get(record_id)
        known = {k: v for k, v in before.baselines.items() if v is not None}
        assert dict(lean.baselines) == known
        assert lean.kept == before.kept
        assert replace(lean, update_rows=before.update_rows, baselines=before.baselines) == before


def test_the_command_collects_garbage_rarely() -> None:
    code = (
        "import gc, sys\n"
        "from target_salesforce_consent.target import cli\n"
        "sys.argv = ['target-salesforce-consent', '--about']\n"
        "try:\n"
        "    cli()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.get_threshold(), gc.get_freeze_count() > 0, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.stderr.strip().splitlines()[-1] == f"{GC_THRESHOLDS} True", done.stderr


def test_malloc_is_tuned_where_the_c_library_is_glibc() -> None:
    # True: every option accepted (mallopt answers 0 to one it refuses); elsewhere untouched.
    assert tune_malloc() is (platform.libc_ver()[0] == "glibc")
