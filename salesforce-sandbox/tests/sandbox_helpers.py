"""Helpers and fixtures for the sandbox's own tests: the seed, a bare HTTP client, a Sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from salesforce_sandbox import Sandbox

API = "/services/data/v62.0"


def seed() -> dict[str, Any]:
    return {
        "org": {
            "client_id": "demo-client-id",
            "client_secret": "demo-client-secret",
            "token_ttl": 7200,
            "daily_api_limit": 15000,
        },
        "objects": {
            "Lead": {
                "custom_fields": [
                    {
                        "name": "Didomi_Newsletter__c",
                        "type": "boolean",
                        "label": "Newsletter consent",
                    },
                    {
                        "name": "Didomi_Topics__c",
                        "type": "multipicklist",
                        "label": "Topics",
                        "picklistValues": ["News", "Offers", "Events"],
                        "restrictedPicklist": True,
                    },
                    {
                        "name": "Didomi_Consent_Updated__c",
                        "type": "datetime",
                        "label": "Consent updated",
                    },
                    {"name": "Legacy_Flag__c", "type": "boolean", "updateable": False},
                    {"name": "Didomi_Id__c", "type": "string", "length": 64, "externalId": True},
                    {"name": "Score__c", "type": "double", "label": "Score"},
                    {"name": "Birthday__c", "type": "date", "label": "Birthday"},
                ],
                "records": [
                    {
                        "FirstName": "Jane",
                        "LastName": "Doe",
                        "Company": "Acme",
                        "Email": "jane.doe@example.com",
                    },
                    {
                        "LastName": "Old",
                        "Company": "X",
                        "Email": "old@example.com",
                        "IsConverted": True,
                    },
                    {"LastName": "O'Brien", "Company": "Quote Ltd", "Email": "o'brien@example.com"},
                ],
            },
            "Contact": {
                "custom_fields": [],
                "records": [{"LastName": "Smith", "Email": "smith@example.com"}],
            },
        },
    }



class Client:
    """A bare ``requests`` client that authenticates against the sandbox."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.http = requests.Session()
        self.token = ""

    def login(self) -> str:
        resp = self.http.post(
            self.sb.url + "/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.sb.client_id,
                "client_secret": self.sb.client_secret,
            },
        )
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["access_token"]
        return self.token

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        headers.setdefault("Authorization", f"Bearer {self.token}")
        url = path if path.startswith("http") else self.sb.url + path
        return self.http.request(method, url, headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    # Bulk API 2.0 helpers -------------------------------------------------------------

    def create_job(
        self, obj: str = "Lead", operation: str = "update", **extra: Any
    ) -> dict[str, Any]:
        resp = self.post(
            f"{API}/jobs/ingest",
            json={"object": obj, "operation": operation, "contentType": "CSV", **extra},
        )
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def run_job(
        self, csv_text: str | bytes, obj: str = "Lead", operation: str = "update", **extra: Any
    ) -> dict[str, Any]:
        job = self.create_job(obj, operation, **extra)
        data = csv_text.encode() if isinstance(csv_text, str) else csv_text
        put = self.put(
            f"{API}/jobs/ingest/{job['id']}/batches",
            data=data,
            headers={"Content-Type": "text/csv"},
        )
        assert put.status_code == 201, put.text
        close = self.patch(f"{API}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
        assert close.status_code == 200, close.text
        info = self.get(f"{API}/jobs/ingest/{job['id']}")
        return dict(info.json())

    def results(self, job_id: str, which: str) -> str:
        resp = self.get(f"{API}/jobs/ingest/{job_id}/{which}", headers={"Accept": "text/csv"})
        assert resp.status_code == 200, resp.text
        return resp.text


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A seeded Sandbox on an ephemeral loopback port."""
    with Sandbox(seed()) as sb:
        yield sb


@pytest.fixture
def client(sandbox: Sandbox) -> Client:
    """A Client already holding a token."""
    c = Client(sandbox)
    c.login()
    return c
