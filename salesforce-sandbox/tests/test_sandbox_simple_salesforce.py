"""A real client nobody here wrote (simple-salesforce) against the sandbox over https."""

from __future__ import annotations

import csv
import datetime as dt
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from salesforce_sandbox import Sandbox
from sandbox_helpers import seed
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)


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


def connect(sb: Sandbox, ca_path: str) -> Any:
    """simple-salesforce, unchanged, logged in to the sandbox by client credentials."""
    session = requests.Session()
    session.verify = ca_path
    # REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE in the environment would override session.verify.
    session.trust_env = False
    # simple-salesforce builds https://{domain}.salesforce.com/services/oauth2/token; the
    # fragment swallows the ".salesforce.com..." suffix so the token request hits the sandbox.
    domain = sb.url.removeprefix("https://") + "/services/oauth2/token#"
    return Salesforce(  # its types do not describe the dynamic sObject attributes
        consumer_key=sb.client_id,
        consumer_secret=sb.client_secret,
        domain=domain,
        session=session,
        version="62.0",
    )


def test_simple_salesforce_end_to_end(https_sandbox: tuple[Sandbox, str]) -> None:
    sb, ca_path = https_sandbox
    assert sb.url.startswith("https://127.0.0.1:")
    sf = connect(sb, ca_path)
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


def test_simple_salesforce_sobject_rows(https_sandbox: tuple[Sandbox, str]) -> None:
    sb, ca_path = https_sandbox
    sf = connect(sb, ca_path)
    jane = sf.query("SELECT Id FROM Lead WHERE Email = 'jane.doe@example.com'")["records"][0]["Id"]

    got = sf.Lead.get(jane)
    assert got["Id"] == jane and got["Email"] == "jane.doe@example.com"
    assert got["attributes"]["url"] == f"/services/data/v62.0/sobjects/Lead/{jane}"
    assert sf.Lead.get(jane, params={"fields": "Id,LastName"}) == {
        "attributes": got["attributes"], "Id": jane, "LastName": "Doe"}
    assert sf.Lead.metadata()["objectDescribe"]["keyPrefix"] == "00Q"
    assert "Lead" in {o["name"] for o in sf.describe()["sobjects"]}

    created = sf.Lead.create({"LastName": "Simple", "Company": "SF", "Email": "s@example.com",
                              "Didomi_Id__c": "ext-1"})
    assert created["success"] is True and created["errors"] == []
    new_id = created["id"]
    assert sf.Lead.update(new_id, {"HasOptedOutOfEmail": True}) == 204
    assert sb.record("Lead", new_id)["HasOptedOutOfEmail"] is True
    assert sf.Lead.get_by_custom_id("Didomi_Id__c", "ext-1")["Id"] == new_id

    assert sf.Lead.upsert("Didomi_Id__c/ext-1", {"DoNotCall": True}) == 200
    assert sf.Lead.upsert("Didomi_Id__c/ext-2", {"LastName": "Up", "Company": "SF"}) == 201
    upserted = sf.Lead.upsert("Didomi_Id__c/ext-2", {"DoNotCall": True}, raw_response=True)
    assert upserted.json()["created"] is False
    sf.Lead.create({"LastName": "Twin", "Company": "SF", "Didomi_Id__c": "EXT-2"})
    with pytest.raises(SalesforceMoreThanOneRecord) as many:
        sf.Lead.get_by_custom_id("Didomi_Id__c", "ext-2")
    assert len(many.value.content) == 2
    with pytest.raises(SalesforceMalformedRequest) as bad:
        sf.Lead.create({"Email": "x@example.com"})
    content: Any = bad.value.content  # typed bytes; simple-salesforce stores the parsed JSON
    assert content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"

    assert sf.Lead.delete(new_id) == 204
    with pytest.raises(SalesforceResourceNotFound) as gone:
        sf.Lead.get(new_id)
    content = gone.value.content
    assert content[0]["errorCode"] == "ENTITY_IS_DELETED"
    soql = "SELECT Id, IsDeleted FROM Lead WHERE Email = 's@example.com'"
    assert sf.query_all(soql)["totalSize"] == 0
    deleted = sf.query_all(soql, include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in deleted] == [(new_id, True)]
    assert sf.api_usage["api-usage"].used > 0  # read from Sforce-Limit-Info

    now = dt.datetime.now(dt.timezone.utc)
    window = (now - dt.timedelta(hours=1), now + dt.timedelta(minutes=5))
    gone_list = sf.Lead.deleted(*window)["deletedRecords"]
    assert [r["id"] for r in gone_list] == [new_id]
    sf.Lead.update(jane, {"DoNotCall": True})
    updated = sf.Lead.updated(*window)["ids"]
    assert jane in updated and new_id not in updated  # live records only
    assert sf.Lead.updated(now - dt.timedelta(days=2), now - dt.timedelta(days=1))["ids"] == []


def test_simple_salesforce_query_all_pages(https_sandbox: tuple[Sandbox, str]) -> None:
    sb, ca_path = https_sandbox
    sb.add_records("Lead", [{"LastName": f"P{i}", "Company": "Page"} for i in range(450)])
    sf = connect(sb, ca_path)
    soql = "SELECT Id FROM Lead WHERE Company = 'Page'"
    options = {"Sforce-Query-Options": "batchSize=200"}
    first = sf.query(soql, headers=options)
    assert first["totalSize"] == 450 and len(first["records"]) == 200 and not first["done"]
    every = sf.query_all(soql, headers=options)
    assert len({r["Id"] for r in every["records"]}) == 450
    assert sb.api_calls()["query_more"] >= 2


def test_simple_salesforce_collections(https_sandbox: tuple[Sandbox, str]) -> None:
    sb, ca_path = https_sandbox
    sf = connect(sb, ca_path)
    created = sf.restful("composite/sobjects", method="POST", json={
        "allOrNone": False,
        "records": [
            {"attributes": {"type": "Lead"}, "LastName": "C1", "Company": "Co",
             "Didomi_Id__c": "col-1"},
            {"attributes": {"type": "Contact"}, "LastName": "C2"},
        ],
    })
    assert [r["success"] for r in created] == [True, True]
    lead, contact = created[0]["id"], created[1]["id"]
    updated = sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Lead"}, "id": lead, "DoNotCall": True},
        {"attributes": {"type": "Contact"}, "id": contact, "DoNotCall": True},
    ]})
    assert updated == [{"id": lead, "success": True, "errors": []},
                       {"id": contact, "success": True, "errors": []}]
    upserted = sf.restful("composite/sobjects/Lead/Didomi_Id__c", method="PATCH", json={
        "allOrNone": True,
        "records": [
            {"attributes": {"type": "Lead"}, "Didomi_Id__c": "col-1", "HasOptedOutOfFax": True},
            {"attributes": {"type": "Lead"}, "Didomi_Id__c": "col-2", "LastName": "N",
             "Company": "Co"},
        ],
    })
    assert [(r["success"], r["created"]) for r in upserted] == [(True, False), (True, True)]
    retrieved = sf.restful("composite/sobjects/Lead",
                           params={"ids": lead, "fields": "Id,DoNotCall,HasOptedOutOfFax"})
    assert retrieved[0]["DoNotCall"] is True and retrieved[0]["HasOptedOutOfFax"] is True
    deleted = sf.restful("composite/sobjects", method="DELETE",
                         params={"ids": f"{lead},{contact}", "allOrNone": "false"})
    assert [r["success"] for r in deleted] == [True, True]
    assert sb.records("Contact", include_deleted=True)[-1]["IsDeleted"] is True
    calls = sb.api_calls()
    assert calls["collection_create"] == calls["collection_update"] == 1
    assert calls["collection_upsert"] == calls["collection_delete"] == 1


def test_simple_salesforce_bulk2_upsert_and_delete(https_sandbox: tuple[Sandbox, str]) -> None:
    sb, ca_path = https_sandbox
    sf = connect(sb, ca_path)
    upserted = sf.bulk2.Lead.upsert(
        records=[{"Didomi_Id__c": "b-1", "LastName": "Bulk", "Company": "Up"}],
        external_id_field="Didomi_Id__c", wait=0)
    assert upserted[0]["numberRecordsFailed"] == 0
    [row] = csv.DictReader(io.StringIO(sf.bulk2.Lead.get_successful_records(
        upserted[0]["job_id"])))
    assert row["sf__Created"] == "true"
    new_id = row["sf__Id"]
    removed = sf.bulk2.Lead.delete(records=[{"Id": new_id}], wait=0)
    assert removed[0]["numberRecordsFailed"] == 0
    soql = f"SELECT Id, IsDeleted FROM Lead WHERE Id = '{new_id}'"
    assert sf.query(soql)["totalSize"] == 0
    assert sf.query_all(soql, include_deleted=True)["records"][0]["IsDeleted"] is True
    again = sf.bulk2.Lead.update(records=[{"Id": new_id, "DoNotCall": "true"}], wait=0)
    [failed] = csv.DictReader(io.StringIO(sf.bulk2.Lead.get_failed_records(
        again[0]["job_id"])))
    assert failed["sf__Error"] == "ENTITY_IS_DELETED:entity is deleted:--"
