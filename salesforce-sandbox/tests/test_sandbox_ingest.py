"""Bulk API 2.0 ingest (reference 3): lifecycle, exact bodies, result CSVs and row rules."""

from __future__ import annotations

import csv
import io
import json

import requests
from salesforce_sandbox import Sandbox
from sandbox_helpers import API, Client


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def lead_id(sb: Sandbox, email: str) -> str:
    return next(r["Id"] for r in sb.records("Lead") if r["Email"] == email)


def test_create_response_is_jackson_pretty_with_numeric_api_version(client: Client) -> None:
    resp = client.post(
        API + "/jobs/ingest/",
        json={"object": "lead", "operation": "update", "contentType": "CSV", "lineEnding": "LF"},
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert '"apiVersion" : 62.0' in resp.text and '"state" : "Open"' in resp.text
    body = resp.json()
    assert body["id"].startswith("750") and len(body["id"]) == 18
    assert body["object"] == "Lead"
    assert body["contentUrl"] == f"services/data/v62.0/jobs/ingest/{body['id']}/batches"
    assert list(body) == [
        "id",
        "operation",
        "object",
        "createdById",
        "createdDate",
        "systemModstamp",
        "state",
        "concurrencyMode",
        "contentType",
        "apiVersion",
        "contentUrl",
        "lineEnding",
        "columnDelimiter",
    ]
    assert "jobType" not in body


def test_create_errors(client: Client) -> None:
    cases = [
        (
            {"object": "Leed", "operation": "insert"},
            "INVALIDJOB",
            "InvalidJob : Unable to find object: Leed",
        ),
        (
            {"object": "Lead", "operation": ""},
            "API_ERROR",
            "Invalid value: '' supplied for property: 'operation'",
        ),
        (
            {"object": "Lead", "operation": "insert", "contentType": ""},
            "API_ERROR",
            "Invalid value: '' supplied for property: 'contentType'",
        ),
        (
            {"object": "Lead", "operation": "upsert"},
            "INVALIDJOB",
            "InvalidJob : Field name provided,  does not match an External ID for Lead",
        ),
    ]
    for spec, code, message in cases:
        resp = client.post(API + "/jobs/ingest", json=spec)
        assert resp.status_code == 400
        assert resp.json() == [{"errorCode": code, "message": message}]
        assert resp.text.startswith("[ {")


def test_second_put_is_rejected(client: Client) -> None:
    job = client.create_job()
    url = f"{API}/jobs/ingest/{job['id']}/batches/"
    first = client.put(url, data=b"Id\n", headers={"Content-Type": "text/csv"})
    assert first.status_code == 201 and first.content == b""
    second = client.put(url, data=b"Id\n", headers={"Content-Type": "text/csv"})
    assert second.status_code == 400
    assert second.json() == [
        {
            "errorCode": "BULK_API_ERROR",
            "message": f"Found multipe contents for job: <{job['id'][:15]}>, please 'Close' / "
            "'Abort' / 'Delete' the current Job then create a new Job and make sure you "
            "only do 'PUT' once on a given Job.",
        }
    ]


def test_update_results_and_record_changes(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    before = sandbox.record("Lead", jane)
    data = (
        f"Id,HasOptedOutOfEmail,Didomi_Topics__c,Didomi_Consent_Updated__c,FirstName,Score__c\n"
        f"{jane},TRUE,News;Events,2024-06-18T16:40:03+02:00,,500\n"
    )
    info = client.run_job(data)
    assert info["state"] == "JobComplete"
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (1, 0)
    assert info["jobType"] == "V2Ingest"
    text = client.results(info["id"], "successfulResults")
    assert text == (
        '"sf__Id","sf__Created",Id,HasOptedOutOfEmail,Didomi_Topics__c,'
        "Didomi_Consent_Updated__c,FirstName,Score__c\n"
        f'"{jane}","false","{jane}","TRUE","News;Events",'
        '"2024-06-18T16:40:03+02:00","","500.0"\n'
    )
    after = sandbox.record("Lead", jane)
    assert after["HasOptedOutOfEmail"] is True
    assert after["Didomi_Topics__c"] == "News;Events"
    assert after["Didomi_Consent_Updated__c"] == "2024-06-18T14:40:03.000+0000"
    assert after["FirstName"] == "Jane"  # empty cell: unchanged
    assert after["LastModifiedDate"] >= before["LastModifiedDate"]
    failed = client.results(info["id"], "failedResults")
    assert failed.splitlines() == [
        '"sf__Id","sf__Error",Id,HasOptedOutOfEmail,Didomi_Topics__c,'
        "Didomi_Consent_Updated__c,FirstName,Score__c"
    ]
    assert client.results(info["id"], "unprocessedrecords").splitlines() == [
        "Id,HasOptedOutOfEmail,Didomi_Topics__c,Didomi_Consent_Updated__c,FirstName,Score__c"
    ]


def test_null_marker_clears_a_field(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    info = client.run_job(f"Id,FirstName\n{jane},#N/A\n")
    assert info["numberRecordsFailed"] == 0
    assert sandbox.record("Lead", jane)["FirstName"] is None


def test_row_errors(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    old = lead_id(sandbox, "old@example.com")
    contact = sandbox.records("Contact")[0]["Id"]
    unknown = "00Q5g00000ZZZZZ"
    data = (
        "\n".join(
            [
                "Id,Email,Didomi_Topics__c,Legacy_Flag__c,HasOptedOutOfFax,Birthday__c",
                f"{jane},x,,,,",
                f"{jane},,Bogus,,,",
                f"{jane},,,true,,",
                f"{jane},,,,maybe,",
                f"{jane},,,,,2024-13-01",
                f"{old},,,,true,",
                ",,,,true,",
                f"{contact},,,,true,",
                f"{unknown},,,,true,",
            ]
        )
        + "\n"
    )
    info = client.run_job(data)
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (9, 9)
    errors = {(r["Id"], r["sf__Error"]) for r in rows(client.results(info["id"], "failedResults"))}
    assert all(r["sf__Id"] == "" for r in rows(client.results(info["id"], "failedResults")))
    assert errors == {
        (jane, "INVALID_EMAIL_ADDRESS:Email: invalid email address: x:Email --"),
        (
            jane,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:Topics: bad value for restricted "
            "picklist field: Bogus:Didomi_Topics__c --",
        ),
        (
            jane,
            "INVALID_FIELD_FOR_INSERT_UPDATE:Unable to create/update fields: Legacy_Flag__c. "
            "Please check the security settings of this field and verify that it is "
            "read/write for your profile or permission set.:Legacy_Flag__c --",
        ),
        (
            jane,
            "INVALID_TYPE_ON_FIELD_IN_RECORD:Fax Opt Out: value not of required type: "
            "maybe:HasOptedOutOfFax --",
        ),
        (
            jane,
            "INVALID_TYPE_ON_FIELD_IN_RECORD:Birthday: value not of required type: "
            "2024-13-01:Birthday__c --",
        ),
        (old, "CANNOT_UPDATE_CONVERTED_LEAD:cannot reference converted lead:--"),
        ("", "MISSING_ARGUMENT:Id not specified in an update call:--"),
        (contact, f"MALFORMED_ID:Lead ID: id value of incorrect type: {contact}:Id --"),
        (unknown, "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--"),
    }
    assert sandbox.record("Lead", old)["HasOptedOutOfFax"] is False


def test_duplicate_ids_after_twelve_updates(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    info = client.run_job("Id,DoNotCall\n" + f"{jane},true\n" * 14)
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (14, 2)
    failed = rows(client.results(info["id"], "failedResults"))
    assert {r["sf__Error"] for r in failed} == {
        "DUPLICATE_VALUE:Maximum number of duplicate updates in one batch (12 allowed). "
        f"Attempt to update Id more than once in this Api call: {jane}:--"
    }


def test_insert_required_fields_and_created_flag(sandbox: Sandbox, client: Client) -> None:
    data = (
        '"LastName","Company","Email","Didomi_Id__c"\n'
        '"New","NewCo","new@example.com","d-1"\n'
        '"NoCompany","","nc@example.com","d-2"\n'
        '"","","nn@example.com","d-3"\n'
    )
    info = client.run_job(data, operation="insert")
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (3, 2)
    ok = rows(client.results(info["id"], "successfulResults"))
    assert len(ok) == 1 and ok[0]["sf__Created"] == "true" and ok[0]["Didomi_Id__c"] == "d-1"
    created = sandbox.record("Lead", ok[0]["sf__Id"])
    assert created["Email"] == "new@example.com" and created["HasOptedOutOfEmail"] is False
    assert created["Status"] == "Open - Not Contacted" and created["Id"].startswith("00Q")
    errors = {
        r["Didomi_Id__c"]: r["sf__Error"] for r in rows(client.results(info["id"], "failedResults"))
    }
    assert errors == {
        "d-2": "REQUIRED_FIELD_MISSING:Required fields are missing: [Company]:--",
        "d-3": "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName, Company]:"
        "LastName --",
    }
    contact = client.run_job(
        "LastName,Email\nBrown,brown@example.com\n", obj="Contact", operation="insert"
    )
    assert contact["numberRecordsFailed"] == 0


def test_results_are_all_quoted_and_shuffled_deterministically(
    sandbox: Sandbox, client: Client
) -> None:
    ids = sandbox.add_records("Lead", [{"LastName": f"L{i}", "Company": "C"} for i in range(30)])
    info = client.run_job("Id,DoNotCall\n" + "".join(f"{i},true\n" for i in ids))
    text = client.results(info["id"], "successfulResults")
    lines = text.splitlines()
    assert lines[0] == '"sf__Id","sf__Created",Id,DoNotCall'
    assert all(line.startswith('"') and line.endswith('"true"') for line in lines[1:])
    order = [line.split(",")[0].strip('"') for line in lines[1:]]
    assert sorted(order) == sorted(ids) and order != ids
    assert client.results(info["id"], "successfulResults") == text


def test_whole_job_failures(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    crlf = client.run_job(f"Id,DoNotCall\r\n{jane},true\r\n")
    assert crlf["state"] == "Failed"
    assert crlf["errorMessage"] == (
        "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is LF"
    )
    lf = client.run_job(f"Id,DoNotCall\n{jane},true\n", lineEnding="CRLF")
    assert lf["errorMessage"] == (
        "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is CRLF"
    )
    bom = client.run_job(f'\ufeff"Id","DoNotCall"\n"{jane}","true"\n'.encode())
    assert bom["errorMessage"] == "InvalidBatch : Failed to parse CSV. Found unescaped quote"
    bom2 = client.run_job(f"\ufeffId,DoNotCall\n{jane},true\n".encode())
    assert bom2["errorMessage"] == "InvalidBatch : Field name not found : \ufeffId"
    unknown = client.run_job(f"Id,ContactId__c\n{jane},x\n")
    assert unknown["state"] == "Failed"
    assert unknown["errorMessage"] == "InvalidBatch : Field name not found : ContactId__c"
    assert (unknown["numberRecordsProcessed"], unknown["numberRecordsFailed"]) == (0, 0)
    assert client.results(unknown["id"], "unprocessedrecords") == (
        f'Id,ContactId__c\n"{jane}","x"\n'
    )
    assert sandbox.record("Lead", jane)["DoNotCall"] is False


def test_crlf_job_and_other_delimiter(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    info = client.run_job(
        f"Id;DoNotCall\r\n{jane};true\r\n", lineEnding="CRLF", columnDelimiter="SEMICOLON"
    )
    assert info["state"] == "JobComplete" and info["numberRecordsFailed"] == 0
    assert client.results(info["id"], "successfulResults") == (
        f'"sf__Id";"sf__Created";Id;DoNotCall\r\n"{jane}";"false";"{jane}";"true"\r\n'
    )


def test_abort_delete_and_states(client: Client) -> None:
    job = client.create_job()
    url = f"{API}/jobs/ingest/{job['id']}"
    assert client.delete(url).status_code == 400  # Open jobs must be aborted first
    aborted = client.patch(url, json={"state": "Aborted"})
    assert aborted.status_code == 200
    body = aborted.json()
    assert body["state"] == "Aborted"
    assert list(body) == [
        "id",
        "operation",
        "object",
        "createdById",
        "createdDate",
        "systemModstamp",
        "state",
        "concurrencyMode",
        "contentType",
        "apiVersion",
    ]
    again = client.patch(url + "/", json={"state": "UploadComplete"})
    assert again.status_code == 400 and again.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    deleted = client.delete(url)
    assert deleted.status_code == 204 and deleted.content == b""
    gone = client.get(url)
    assert gone.status_code == 404
    assert gone.json() == [
        {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}
    ]


def test_job_polls_before_completion() -> None:
    from sandbox_helpers import seed

    with Sandbox(seed(), job_polls_to_complete=2) as sb:
        client = Client(sb)
        client.login()
        jane = lead_id(sb, "jane.doe@example.com")
        job = client.create_job()
        client.put(
            f"{API}/jobs/ingest/{job['id']}/batches",
            data=f"Id,DoNotCall\n{jane},true\n",
            headers={"Content-Type": "text/csv"},
        )
        closed = client.patch(f"{API}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
        assert closed.json()["state"] == "UploadComplete"
        states = [client.get(f"{API}/jobs/ingest/{job['id']}").json()["state"] for _ in range(3)]
        assert states == ["InProgress", "InProgress", "JobComplete"]
        early = client.get(f"{API}/jobs/ingest/{job['id']}/successfulResults")
        assert early.status_code == 200


def test_multipart_create_and_list(sandbox: Sandbox, client: Client) -> None:
    files = {
        "job": (
            None,
            json.dumps(
                {
                    "object": "Contact",
                    "operation": "insert",
                    "contentType": "CSV",
                    "lineEnding": "LF",
                }
            ),
            "application/json",
        ),
        "content": ("content", "LastName,Email\nAstro,astro@example.com\n", "text/csv"),
    }
    resp = client.post(API + "/jobs/ingest/", files=files)
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "UploadComplete" and "contentUrl" not in resp.json()
    info = client.get(f"{API}/jobs/ingest/{resp.json()['id']}").json()
    assert info["state"] == "JobComplete" and info["numberRecordsProcessed"] == 1
    listing = client.get(API + "/jobs/ingest").json()
    assert listing["done"] is True and listing["nextRecordsUrl"] is None
    assert any(j["id"] == info["id"] for j in listing["records"])
    assert sandbox.api_calls()["ingest_list"] == 1


def test_non_string_job_properties_are_invalid_values(client: Client) -> None:
    cases = [
        (
            {"object": "Lead", "operation": "update", "lineEnding": ["LF"]},
            "Invalid value: '[\"LF\"]' supplied for property: 'lineEnding'",
        ),
        (
            {"object": "Lead", "operation": "update", "columnDelimiter": {"x": 1}},
            "Invalid value: '{\"x\":1}' supplied for property: 'columnDelimiter'",
        ),
        (
            {"object": "Lead", "operation": ["update"]},
            "Invalid value: '[\"update\"]' supplied for property: 'operation'",
        ),
        (
            {"object": ["Lead"], "operation": "update"},
            "Invalid value: '[\"Lead\"]' supplied for property: 'object'",
        ),
        (
            {"object": "Lead", "operation": "update", "lineEnding": 5},
            "Invalid value: '5' supplied for property: 'lineEnding'",
        ),
    ]
    for spec, message in cases:
        resp = client.post(API + "/jobs/ingest", json=spec)
        assert resp.status_code == 400, resp.text
        assert resp.json() == [{"errorCode": "API_ERROR", "message": message}]
    job = client.create_job()
    for state in (["Aborted"], {"s": 1}, True):
        resp = client.patch(f"{API}/jobs/ingest/{job['id']}", json={"state": state})
        assert resp.status_code == 400, resp.text
        assert resp.json()[0]["errorCode"] == "API_ERROR"
        assert resp.json()[0]["message"].endswith("supplied for property: 'state'")
    query = client.post(
        API + "/jobs/query",
        json={"operation": "query", "lineEnding": ["LF"], "query": "SELECT Id FROM Lead"},
    )
    assert query.json() == [
        {
            "errorCode": "API_ERROR",
            "message": "Invalid value: '[\"LF\"]' supplied for property: 'lineEnding'",
        }
    ]


LINE_ENDING_ERROR = (
    "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is {}"
)


def test_embedded_line_breaks_must_match_the_line_ending(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    lf = client.run_job(f'Id,LastName\n{jane},"one\r\ntwo"\n')
    assert lf["state"] == "Failed" and lf["errorMessage"] == LINE_ENDING_ERROR.format("LF")
    crlf = client.run_job(f'Id,LastName\r\n{jane},"one\ntwo"\r\n', lineEnding="CRLF")
    assert crlf["state"] == "Failed" and crlf["errorMessage"] == LINE_ENDING_ERROR.format("CRLF")
    assert sandbox.record("Lead", jane)["LastName"] == "Doe"
    ok = client.run_job(f'Id,LastName\r\n{jane},"one\r\ntwo"\r\n', lineEnding="CRLF")
    assert ok["state"] == "JobComplete" and ok["numberRecordsFailed"] == 0
    assert sandbox.record("Lead", jane)["LastName"] == "one\r\ntwo"
    embedded_lf = client.run_job(f'Id,LastName\n{jane},"three\nfour"\n')
    assert embedded_lf["numberRecordsFailed"] == 0
    assert sandbox.record("Lead", jane)["LastName"] == "three\nfour"


def test_malformed_rows_fail_alone(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    obrien = lead_id(sandbox, "o'brien@example.com")
    info = client.run_job(f'Id,LastName\n{jane}, "Smith"\n{obrien},Brien,extra\n')
    assert info["state"] == "JobComplete"
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (2, 2)
    failed = {r["Id"]: r for r in rows(client.results(info["id"], "failedResults"))}
    assert failed[jane]["sf__Error"].startswith("INVALID_FIELD:")
    assert failed[jane]["LastName"] == "Smith"
    assert failed[obrien]["sf__Error"].startswith("INVALID_FIELD:")
    assert failed[obrien]["LastName"] == "Brien"
    assert sandbox.record("Lead", jane)["LastName"] == "Doe"
    assert sandbox.record("Lead", obrien)["LastName"] == "O'Brien"
    # Spaces inside or after a value are data, not an error.
    spaced = client.run_job(f'Id,LastName\n{jane}," Smith "\n')
    assert spaced["numberRecordsFailed"] == 0
    assert sandbox.record("Lead", jane)["LastName"] == " Smith "


def test_duplicate_header_column_fails_the_job(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    info = client.run_job(f"Id,DoNotCall,donotcall\n{jane},true,false\n")
    assert info["state"] == "Failed"
    assert info["errorMessage"] == "InvalidBatch : Duplicate field name: donotcall"
    assert sandbox.record("Lead", jane)["DoNotCall"] is False


def test_upload_content_type(client: Client) -> None:
    job = client.create_job()
    url = f"{API}/jobs/ingest/{job['id']}/batches"
    for ctype in ("application/json", "application/octet-stream", "text/plain"):
        bad = client.put(url, data=b"Id\n", headers={"Content-Type": ctype})
        assert bad.status_code == 400, ctype
        assert bad.json()[0]["errorCode"] == "API_ERROR"
    assert client.put(url, data=b"Id\n", headers={"Content-Type": "text/plain"}).status_code == 400
    ok = client.put(url, data=b"Id\n", headers={"Content-Type": "text/csv; charset=UTF-8"})
    assert ok.status_code == 201


def test_size_limits() -> None:
    from sandbox_helpers import seed

    spec = seed()
    spec["objects"]["Lead"]["custom_fields"].append(
        {"name": "Notes__c", "type": "textarea", "length": 0}
    )  # no length of its own
    with Sandbox(spec) as sandbox:
        client = Client(sandbox)
        client.login()
        _check_size_limits(sandbox, client)


def _check_size_limits(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    padding = ",".join(["Notes__c"] * 4000)
    assert len("Id," + padding) > 32_000
    header = client.run_job(f"Id,{padding}\n{jane},x\n")
    assert header["state"] == "Failed" and "32000" in header["errorMessage"]
    big = "x" * 131_073
    field = client.run_job(f'Id,Notes__c\n{jane},"{big}"\n')
    assert field["state"] == "JobComplete" and field["numberRecordsFailed"] == 1
    # (Python's csv module itself refuses values over 131,072 characters.)
    _, failed = client.results(field["id"], "failedResults").splitlines()
    error = failed.split('","')[1]
    assert error.startswith("STRING_TOO_LONG:") and error.endswith(":Notes__c --")
    fits = client.run_job(f'Id,Notes__c\n{jane},"{big[:131_072]}"\n')
    assert fits["numberRecordsFailed"] == 0
    assert len(sandbox.record("Lead", jane)["Notes__c"]) == 131_072

    def multipart(chars: int) -> requests.Response:
        csv_text = "LastName\n" + "x" * (chars - len("LastName\n") - 1) + "\n"
        assert len(csv_text) == chars
        return client.post(
            API + "/jobs/ingest",
            files={
                "job": (
                    None,
                    json.dumps({"object": "Contact", "operation": "insert"}),
                    "application/json",
                ),
                "content": ("content", csv_text, "text/csv"),
            },
        )

    assert multipart(100_000).status_code == 200
    too_big = multipart(100_001)
    assert too_big.status_code == 400 and too_big.json()[0]["errorCode"] == "API_ERROR"


def test_aborted_job_serves_only_unprocessed_records(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    job = client.create_job()
    url = f"{API}/jobs/ingest/{job['id']}"
    put = client.put(
        url + "/batches", data=f"Id,DoNotCall\n{jane},true\n", headers={"Content-Type": "text/csv"}
    )
    assert put.status_code == 201
    assert client.patch(url, json={"state": "Aborted"}).status_code == 200
    assert client.results(job["id"], "unprocessedrecords") == f'Id,DoNotCall\n"{jane}","true"\n'
    for which in ("successfulResults", "failedResults"):
        resp = client.get(f"{url}/{which}")
        assert resp.status_code == 400
        assert resp.json()[0]["errorCode"] == "INVALIDJOBSTATE"
