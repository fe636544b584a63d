"""The singer-sdk standard target tests, run against the sandbox.

The standard streams are not Didomi records: they carry no organization_user_id, so the
target reports each one as `skipped_no_ouid`. What the suite checks still applies to us:
the CLI prints, SCHEMA/RECORD/STATE handling, and STATE relaying. A record without its
stream's key property is reported like any other record (the suite's own test expects the
run to stop).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from salesforce_sandbox import Sandbox
from singer_sdk.testing import TargetTestRunner, get_target_test_class

from tests.conftest import SEED, FastTarget, base_config, run_target

StandardTargetTests = get_target_test_class(FastTarget, config={})


@pytest.fixture(scope="module")
def standard_sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        yield sb


class TestTargetSalesforceConsent(StandardTargetTests):  # type: ignore[misc,valid-type]
    """Standard target tests, each run against the sandbox."""

    @pytest.fixture
    def runner(self, standard_sandbox: Sandbox) -> TargetTestRunner:
        return TargetTestRunner(target_class=FastTarget, config=base_config(standard_sandbox))

    def test_target_record_missing_key_property(  # replaces the suite's: no abort wanted
        self, standard_sandbox: Sandbox, tmp_path: Path
    ) -> None:
        """A record without its stream's key property gets its outcome and the run completes:
        the target identifies records by its own reading (a webhook envelope has no top-level
        id), never by key_properties."""
        singer = files("singer_sdk.testing") / "target_test_streams"
        messages = (singer / "record_missing_key_property.singer").read_text()
        report = tmp_path / "report.jsonl"
        result = run_target(base_config(standard_sandbox, report), messages)
        assert result.error is None, result.stderr
        assert [line["outcome"] for line in result.report] == ["skipped_no_ouid"]
