"""The singer-sdk standard target tests, run against the sandbox.

The standard streams are not Didomi records: they carry no organization_user_id, so the
target reports each one as `skipped_no_ouid`. What the suite checks still applies to us:
the CLI prints, SCHEMA/RECORD/STATE handling, key properties, and STATE relaying.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from salesforce_sandbox import Sandbox
from singer_sdk.testing import TargetTestRunner, get_target_test_class

from tests.conftest import SEED, FastTarget, base_config

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
