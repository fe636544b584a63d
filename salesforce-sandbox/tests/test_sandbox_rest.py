"""Versions, limits, describe, REST SOQL (reference 1, 5.1, 6, 8)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from salesforce_sandbox import Sandbox
from sandbox_helpers import API, Client


def test_versions_need_no_token_and_no_limit_header(sandbox: Sandbox) -> None:
    resp = requests.get(sandbox.url + "/services/data/")
    assert resp.status_code == 200
    versions = resp.json()
    assert {"label": "Spring '24", "url": "/services/data/v60.0", "version": "60.0"} in versions
    assert versions[-1] == {"label": "Summer '26", "url": "/services/data/v67.0", "version": "67.0"}
    assert "Sforce-Limit-Info" not in resp.headers


def test_limits_and_usage_header(client: Client) -> None:
    resp = client.get(API + "/limits")
    assert resp.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    body = resp.json()
    assert body["DailyApiRequests"]["Max"] == 15000
    assert body["DailyApiRequests"]["Remaining"] == 14999
    assert body["DailyBulkV2QueryJobs"] == {"Max": 10000, "Remaining": 10000}
    assert client.get(API + "/limits/").headers["Sforce-Limit-Info"] == "api-usage=2/15000"


def test_request_limit_exceeded(sandbox: Sandbox, client: Client) -> None:
    sandbox.set_api_limit(5, remaining=1)
    assert client.get(API + "/limits").status_code == 200
    resp = client.get(API + "/limits")
    assert resp.status_code == 403
    assert resp.text == (
        '[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]'
    )


def test_unknown_version_and_path_are_404(client: Client) -> None:
    for path in ("/services/data/v12.0/limits", "/services/data/v62.0/nothing"):
        resp = client.get(path)
        assert resp.status_code == 404
        assert resp.json() == [
            {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
        ]


def test_describe_standard_and_custom_fields(client: Client) -> None:
    resp = client.get(API + "/sobjects/Lead/describe/")
    assert resp.status_code == 200
    body = resp.json()
    assert body["name"] == "Lead" and body["keyPrefix"] == "00Q"
    fields = {f["name"]: f for f in body["fields"]}
    for name in (
        "Id",
        "FirstName",
        "LastName",
        "Company",
        "Email",
        "HasOptedOutOfEmail",
        "HasOptedOutOfFax",
        "DoNotCall",
        "IsConverted",
        "ConvertedContactId",
        "Status",
        "LeadSource",
        "IndividualId",
        "LastModifiedDate",
    ):
        assert name in fields
    assert fields["IsConverted"]["updateable"] is False
    assert fields["IsConverted"]["createable"] is True
    assert fields["Email"]["type"] == "email" and fields["Email"]["idLookup"] is True
    assert fields["HasOptedOutOfEmail"]["nillable"] is False
    assert fields["HasOptedOutOfEmail"]["defaultValue"] is False
    topics = fields["Didomi_Topics__c"]
    assert topics["type"] == "multipicklist" and topics["restrictedPicklist"] is True
    assert topics["custom"] is True
    assert [v["value"] for v in topics["picklistValues"]] == ["News", "Offers", "Events"]
    assert topics["picklistValues"][0] == {
        "active": True,
        "defaultValue": False,
        "label": "News",
        "validFor": None,
        "value": "News",
    }
    newsletter = fields["Didomi_Newsletter__c"]
    assert (
        newsletter["nillable"],
        newsletter["defaultedOnCreate"],
        newsletter["defaultValue"],
    ) == (False, True, False)
    assert fields["Legacy_Flag__c"]["updateable"] is False
    assert fields["Didomi_Id__c"]["externalId"] is True and fields["Didomi_Id__c"]["length"] == 64
    contact = client.get(API + "/sobjects/Contact/describe").json()
    assert "Company" not in {f["name"] for f in contact["fields"]}
    missing = client.get(API + "/sobjects/Leed/describe")
    assert missing.status_code == 404


def query(client: Client, soql: str, **kw: object) -> requests.Response:
    return client.get(API + "/query", params={"q": soql}, **kw)


def test_query_case_insensitive_in_and_shape(client: Client) -> None:
    resp = query(
        client,
        "SELECT Id, Email, IsConverted FROM Lead WHERE Email IN "
        "('JANE.DOE@example.com', 'old@EXAMPLE.com') AND IsConverted = false",
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["totalSize"] == 1 and body["done"] is True and "nextRecordsUrl" not in body
    record = body["records"][0]
    assert list(record) == ["attributes", "Id", "Email", "IsConverted"]
    assert record["attributes"] == {
        "type": "Lead",
        "url": f"/services/data/v62.0/sobjects/Lead/{record['Id']}",
    }
    assert record["Email"] == "jane.doe@example.com" and record["IsConverted"] is False


def test_query_escaping_cannot_break_out(client: Client) -> None:
    ok = query(client, r"SELECT Id FROM Lead WHERE Email = 'o\'brien@example.com'")
    assert ok.json()["totalSize"] == 1
    injected = query(client, r"SELECT Id FROM Lead WHERE Email = 'x\' OR Email != \'x'")
    assert injected.status_code == 200 and injected.json()["totalSize"] == 0
    backslash = query(client, r"SELECT Id FROM Lead WHERE Email = 'a\\' OR LastName = 'Doe'")
    assert backslash.json()["totalSize"] == 1  # \\ is one backslash; the literal ended there
    bad = query(client, r"SELECT Id FROM Lead WHERE Email = 'a\_b'")
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "MALFORMED_QUERY"
    like = query(client, r"SELECT Id FROM Lead WHERE Email LIKE 'o\'brien%'")
    assert like.json()["totalSize"] == 1
    unterminated = query(client, "SELECT Id FROM Lead WHERE Email = 'x")
    assert unterminated.json()[0]["errorCode"] == "MALFORMED_QUERY"


def test_query_errors(client: Client) -> None:
    resp = query(client, "SELECT Id, Foo FROM Lead")
    assert resp.status_code == 400
    assert resp.json() == [
        {
            "message": "\nSELECT Id, Foo FROM Lead\n           ^\nERROR at Row:1:Column:12"
            "\nNo such column 'Foo' on entity 'Lead'. If you are attempting to use a custom field, "
            "be sure to append the '__c' after the custom field name. Please reference "
            "your WSDL or the describe call for the appropriate names.",
            "errorCode": "INVALID_FIELD",
        }
    ]
    resp = query(client, "SELECT Id FROM Leed")
    assert resp.json() == [
        {
            "message": "sObject type 'Leed' is not supported. If you are attempting to use a "
            "custom object, be sure to append the '__c' after the entity name. Please reference "
            "your WSDL or the describe call for the appropriate names.",
            "errorCode": "INVALID_TYPE",
        }
    ]
    resp = query(client, "SELECT Id FROM Lead WHERE")
    assert resp.status_code == 400
    assert resp.json() == [{"message": "unexpected token: <EOF>", "errorCode": "MALFORMED_QUERY"}]
    resp = query(client, "SELECT Id FROM Lead WHERE IsConverted = 'false'")
    assert resp.json()[0]["errorCode"] == "INVALID_FIELD"
    assert (
        "must be of type boolean and should not be enclosed in quotes" in resp.json()[0]["message"]
    )


def test_query_paging(sandbox: Sandbox, client: Client) -> None:
    sandbox.add_records(
        "Contact", [{"LastName": f"P{i}", "Email": f"p{i}@example.com"} for i in range(450)]
    )
    resp = query(
        client,
        "SELECT Id, Email FROM Contact WHERE Email LIKE 'p%'",
        headers={"Sforce-Query-Options": "batchSize=200"},
    )
    body = resp.json()
    assert body["totalSize"] == 450 and body["done"] is False and len(body["records"]) == 200
    seen = [r["Id"] for r in body["records"]]
    while not body["done"]:
        assert body["nextRecordsUrl"].startswith("/services/data/v62.0/query/01g")
        body = client.get(body["nextRecordsUrl"]).json()
        seen += [r["Id"] for r in body["records"]]
    assert len(set(seen)) == 450
    assert sandbox.api_calls()["query_more"] == 2


def test_uri_too_long_is_414(client: Client) -> None:
    emails = ",".join(f"'person{i}@example.com'" for i in range(700))
    resp = query(client, f"SELECT Id FROM Lead WHERE Email IN ({emails})")
    assert resp.status_code == 414


def test_unexpected_handler_error_is_500_unknown_exception(
    sandbox: Sandbox, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> dict[str, Any]:
        raise RuntimeError("sandbox bug")

    monkeypatch.setattr(sandbox.org, "limits", boom)
    resp = client.get(API + "/limits")
    assert resp.status_code == 500
    [error] = resp.json()
    assert list(error) == ["message", "errorCode"]
    assert error["errorCode"] == "UNKNOWN_EXCEPTION"
    assert re.fullmatch(
        r"An unexpected error occurred\. Please include this ErrorId if you "
        r"contact support: \d+-\d+ \(-?\d+\)",
        error["message"],
    )
    assert "Sforce-Limit-Info" in resp.headers
    assert [r.status for r in sandbox.requests if r.kind == "limits"] == [500]
    monkeypatch.undo()
    assert client.get(API + "/limits").status_code == 200  # the same keep-alive session


def test_bad_date_and_datetime_literals_are_malformed_query(client: Client) -> None:
    for literal in ("2024-13-45T10:00:00Z", "2024-02-30T10:00:00Z", "2024-01-05T25:00:00Z"):
        resp = client.get(
            API + "/query",
            params={"q": f"SELECT Id FROM Lead WHERE Didomi_Consent_Updated__c > {literal}"},
        )
        assert resp.status_code == 400, resp.text
        assert resp.json()[0]["errorCode"] == "MALFORMED_QUERY"
        assert literal in resp.json()[0]["message"]
    resp = client.get(
        API + "/query", params={"q": "SELECT Id FROM Lead WHERE Birthday__c = 2024-02-30"}
    )
    assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "MALFORMED_QUERY"


def test_query_length_limits_and_duplicate_fields(sandbox: Sandbox, client: Client) -> None:
    ok = client.get(
        API + "/query", params={"q": "SELECT Id FROM Lead WHERE Email = '" + "a" * 4000 + "'"}
    )
    assert ok.status_code == 200
    long = client.get(
        API + "/query", params={"q": "SELECT Id FROM Lead WHERE Email = '" + "a" * 4001 + "'"}
    )
    assert long.status_code == 400 and long.json()[0]["errorCode"] == "MALFORMED_QUERY"
    # An escape counts as the one character it stands for.
    escaped = client.get(
        API + "/query",
        params={"q": "SELECT Id FROM Lead WHERE Email = '" + "\\n" * 2000 + "a" * 2000 + "'"},
    )
    assert escaped.status_code == 200
    # A statement over 100,000 characters (only reachable in a POST body: Bulk query).
    values = ",".join(f"'{i:08d}@example.com'" for i in range(4400))
    statement = f"SELECT Id FROM Lead WHERE Email IN ({values})"
    assert len(statement) > 100_000
    job = client.post(API + "/jobs/query", json={"operation": "query", "query": statement})
    assert job.status_code == 400 and job.json()[0]["errorCode"] == "MALFORMED_QUERY"
    dup = client.get(API + "/query", params={"q": "SELECT Id, Email, email FROM Lead"})
    assert dup.status_code == 400
    assert dup.text == (
        '[{"message":"duplicate field selected: email","errorCode":"DUPLICATE_FIELD"}]'
    )
    prefixed = client.get(API + "/query", params={"q": "SELECT Email, Lead.Email FROM Lead"})
    assert prefixed.json() == [
        {"message": "duplicate field selected: Email", "errorCode": "DUPLICATE_FIELD"}
    ]


def test_uppercase_escapes(sandbox: Sandbox, client: Client) -> None:
    sandbox.add_records("Lead", [{"LastName": "Two\nLines\tTab", "Company": "C"}])
    for text in ("Two\\nLines\\tTab", "Two\\NLines\\TTab"):
        resp = client.get(
            API + "/query", params={"q": f"SELECT Id FROM Lead WHERE LastName = '{text}'"}
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["totalSize"] == 1
    for esc in ("\\R", "\\B", "\\F"):
        resp = client.get(
            API + "/query", params={"q": f"SELECT Id FROM Lead WHERE LastName = 'x{esc}'"}
        )
        assert resp.status_code == 200, resp.text
    bad = client.get(API + "/query", params={"q": "SELECT Id FROM Lead WHERE LastName = '\\X'"})
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "MALFORMED_QUERY"
