"""Fixtures for HTTP tests: every wire test runs against the local sandbox over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.salesforce import BulkIngest, RetryPolicy, SalesforceClient

CLIENT_ID = "3MVG9test.consumer.key.for.sandbox"
CLIENT_SECRET = "8A4BE698SECRETSECRET0123456789"


def seed(leads: int = 3, contacts: int = 2) -> dict[str, Any]:
    return {
        "org": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        "objects": {
            "Lead": {
                "custom_fields": [
                    {"name": "Newsletter__c", "type": "boolean"},
                    {"name": "Consent_Date__c", "type": "datetime"},
                ],
                "records": [
                    {"LastName": f"Lead{i}", "Company": "Acme", "Email": f"lead{i}@example.com"}
                    for i in range(leads)
                ],
            },
            "Contact": {
                "records": [
                    {"LastName": f"Contact{i}", "Email": f"contact{i}@example.com"}
                    for i in range(contacts)
                ]
            },
        },
    }


@pytest.fixture
def sandbox() -> Iterator[Any]:
    with Sandbox(seed=seed()) as sb:
        yield sb


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sandbox: Any, sleeps: list[float]) -> Iterator[SalesforceClient]:
    with SalesforceClient(
        sandbox.url,
        sandbox.client_id,
        sandbox.client_secret,
        retry=RetryPolicy(max_attempts=4, base_delay=0.0),
        sleep=sleeps.append,
        timeout=10.0,
    ) as c:
        yield c


@pytest.fixture
def bulk(client: SalesforceClient) -> BulkIngest:
    return BulkIngest(client, poll_interval=0.0, sleep=lambda s: None, max_rounds=3)
