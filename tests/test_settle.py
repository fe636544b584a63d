"""Settling a batch: one outcome per person from the results of the rows written for it."""

from __future__ import annotations

import itertools

from target_salesforce_consent.report import Outcome
from target_salesforce_consent.salesforce.bulk import RowResult
from target_salesforce_consent.sinks import _combine


def _combined_plainly(
    results: list[RowResult], success: Outcome
) -> tuple[Outcome, str | None, str | None]:
    """The rule in its plain form: written when any row was; the first row error kept."""
    errors = [r for r in results if r.status != "succeeded"]
    first_error = (errors[0].error or "UNKNOWN_EXCEPTION: no result row") if errors else None
    written = [r for r in results if r.status == "succeeded"]
    if written:
        return success, first_error, written[0].job_id
    return Outcome.FAILED, first_error, errors[0].job_id


def test_a_persons_rows_combine_into_one_outcome() -> None:
    kinds = [
        ("succeeded", None, "J1"), ("succeeded", None, "J2"), ("failed", "E1: one", "J3"),
        ("failed", None, "J4"), ("unresolved", "E2: two", None),
    ]  # fmt: skip
    for size in (1, 2, 3):
        for picked in itertools.product(kinds, repeat=size):
            results = [
                RowResult(f"K{i}", status, None, False, error, job)  # type: ignore[arg-type]
                for i, (status, error, job) in enumerate(picked)
            ]
            for success in (Outcome.UPDATED, Outcome.INSERTED):
                assert _combine(results, success) == _combined_plainly(results, success)
