"""A real client nobody here wrote (simple-salesforce) against the sandbox over https."""

from __future__ import annotations

import csv
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from simple_salesforce import Salesforce

from target_salesforce_consent.sandbox import Sandbox

from .conftest import seed


@pytest.fixture
def https_sandbox(tmp_path: Path) -> Iterator[tuple[Sandbox, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    ca_path = tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    with Sandbox(seed(), certfile=cert_path, keyfile=key_path) as sb:
        yield sb, str(ca_path)


def test_simple_salesforce_end_to_end(https_sandbox: tuple[Sandbox, str]) -> None:
    sb, ca_path = https_sandbox
    assert sb.url.startswith("https://127.0.0.1:")
    session = requests.Session()
    session.verify = ca_path
    # REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE in the environment would override session.verify.
    session.trust_env = False
    # simple-salesforce builds https://{domain}.salesforce.com/services/oauth2/token; the
    # fragment swallows the ".salesforce.com..." suffix so the token request hits the sandbox.
    domain = sb.url.removeprefix("https://") + "/services/oauth2/token#"
    sf: Any = Salesforce(  # its types do not describe the dynamic sObject attributes
        consumer_key=sb.client_id,
        consumer_secret=sb.client_secret,
        domain=domain,
        session=session,
        version="62.0",
    )
    assert sf.sf_instance == sb.url.removeprefix("https://")

    result = sf.query_all("SELECT Id, Email FROM Lead WHERE Email IN ('JANE.DOE@EXAMPLE.COM')")
    assert result["totalSize"] == 1
    jane = result["records"][0]["Id"]
    describe = sf.Lead.describe()
    assert "Didomi_Newsletter__c" in {f["name"] for f in describe["fields"]}

    updated = sf.bulk2.Lead.update(
        records=[
            {"Id": jane, "Didomi_Newsletter__c": "true"},
            {"Id": "00Q5g00000ZZZZZ", "Didomi_Newsletter__c": "true"},
        ],
        wait=0,
    )
    assert updated[0]["numberRecordsProcessed"] == 2
    assert updated[0]["numberRecordsFailed"] == 1
    job_id = updated[0]["job_id"]
    ok = list(csv.DictReader(io.StringIO(sf.bulk2.Lead.get_successful_records(job_id))))
    assert [(r["sf__Id"], r["sf__Created"]) for r in ok] == [(jane, "false")]
    failed = list(csv.DictReader(io.StringIO(sf.bulk2.Lead.get_failed_records(job_id))))
    assert failed[0]["sf__Error"] == "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--"
    assert sb.record("Lead", jane)["Didomi_Newsletter__c"] is True

    inserted = sf.bulk2.Contact.insert(
        records=[{"LastName": "Bulk", "Email": "b@example.com"}], wait=0
    )
    assert inserted[0]["numberRecordsFailed"] == 0
    new = list(
        csv.DictReader(io.StringIO(sf.bulk2.Contact.get_successful_records(inserted[0]["job_id"])))
    )
    assert new[0]["sf__Created"] == "true"
    assert sb.record("Contact", new[0]["sf__Id"])["Email"] == "b@example.com"

    rows = list(
        sf.bulk2.Lead.query(
            "SELECT Id, Email FROM Lead WHERE IsConverted = false", max_records=2, wait=0
        )
    )
    assert sum(len(chunk.splitlines()) - 1 for chunk in rows) == 2
    calls = sb.api_calls()
    assert calls["token"] == 1 and calls["ingest_upload"] == 2 and calls["ingest_close"] == 2


def test_a_stalled_tls_client_does_not_block_others(https_sandbox: tuple[Sandbox, str]) -> None:
    sb, ca_path = https_sandbox
    stalled = socket.create_connection(("127.0.0.1", sb.port))  # never sends a ClientHello
    try:
        time.sleep(0.1)  # let the server accept it
        resp = requests.get(sb.url + "/services/data/", verify=ca_path, timeout=3)
        assert resp.status_code == 200
    finally:
        stalled.close()
