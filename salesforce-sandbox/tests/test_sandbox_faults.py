"""Fault injection, the admin HTTP API and the query jobs (reference 4, 10.3)."""

from __future__ import annotations

import csv
import io

import pytest
import requests
from salesforce_sandbox import Sandbox
from sandbox_helpers import API, Client

UNAVAILABLE = '[{"message":"Server unavailable","errorCode":"SERVER_UNAVAILABLE"}]'


def test_fail_next_matching_requests(sandbox: Sandbox, client: Client) -> None:
    sandbox.fail_next(503, UNAVAILABLE, count=2, method="GET", path=r"/limits$")
    sandbox.fail_next(
        502, "<html><body>Bad Gateway</body></html>", path="/query", content_type="text/html"
    )
    first = client.get(API + "/limits")
    assert first.status_code == 503 and first.text == UNAVAILABLE
    assert client.get(API + "/limits").status_code == 503
    assert client.get(API + "/limits").status_code == 200
    html = client.get(API + "/query", params={"q": "SELECT Id FROM Lead"})
    assert html.status_code == 502 and html.headers["Content-Type"] == "text/html"
    assert client.get(API + "/query", params={"q": "SELECT Id FROM Lead"}).status_code == 200
    assert sandbox.api_calls()["limits"] == 3
    assert [r.status for r in sandbox.requests if r.kind == "limits"] == [503, 503, 200]


def test_locked_records(sandbox: Sandbox, client: Client) -> None:
    jane = sandbox.records("Lead")[0]["Id"]
    sandbox.lock_records([jane], attempts=1)
    info = client.run_job(f"Id,DoNotCall\n{jane},true\n")
    assert info["numberRecordsFailed"] == 1 and info["retries"] >= 1
    failed = list(csv.DictReader(io.StringIO(client.results(info["id"], "failedResults"))))
    assert failed[0]["sf__Error"] == (
        "UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 1 records: "
        f"{jane}:--"
    )
    retry = client.run_job(f"Id,DoNotCall\n{jane},true\n")
    assert retry["numberRecordsFailed"] == 0
    assert sandbox.record("Lead", jane)["DoNotCall"] is True
    sandbox.lock_records([jane])
    assert client.run_job(f"Id,DoNotCall\n{jane},false\n")["numberRecordsFailed"] == 1
    assert client.run_job(f"Id,DoNotCall\n{jane},false\n")["numberRecordsFailed"] == 1
    sandbox.unlock_records()
    assert client.run_job(f"Id,DoNotCall\n{jane},false\n")["numberRecordsFailed"] == 0


def test_fail_next_job_and_leave_unprocessed(sandbox: Sandbox, client: Client) -> None:
    ids = [r["Id"] for r in sandbox.records("Lead") if not r["IsConverted"]]
    data = "Id,DoNotCall\n" + "".join(f"{i},true\n" for i in ids)
    sandbox.fail_next_job("Timeout : The job timed out")
    failed = client.run_job(data)
    assert failed["state"] == "Failed" and failed["errorMessage"] == "Timeout : The job timed out"
    assert all(not sandbox.record("Lead", i)["DoNotCall"] for i in ids)
    assert len(client.results(failed["id"], "unprocessedrecords").splitlines()) == 1 + len(ids)
    sandbox.leave_unprocessed(1)
    partial = client.run_job(data)
    assert partial["state"] == "JobComplete"
    assert partial["numberRecordsProcessed"] == len(ids) - 1
    unprocessed = client.results(partial["id"], "unprocessedrecords").splitlines()
    assert unprocessed == ["Id,DoNotCall", f'"{ids[-1]}","true"']
    assert sandbox.record("Lead", ids[-1])["DoNotCall"] is False


def test_admin_http_api(sandbox: Sandbox, client: Client) -> None:
    base = sandbox.url + "/__sandbox"
    created = requests.post(base + "/records/Contact", json=[{"LastName": "Admin"}])
    assert created.status_code == 201
    new_id = created.json()["ids"][0]
    assert new_id.startswith("003") and len(new_id) == 18
    listed = requests.get(base + "/records/Contact").json()
    assert any(r["Id"] == new_id and r["HasOptedOutOfEmail"] is False for r in listed)
    requests.post(
        base + "/faults", json={"type": "fail_next", "status": 500, "body": "[]", "path": "/limits"}
    )
    assert client.get(API + "/limits").status_code == 500
    requests.post(base + "/expire-tokens")
    assert client.get(API + "/limits").status_code == 401
    calls = requests.get(base + "/calls").json()
    assert calls == {"token": 1, "limits": 2}
    log = requests.get(base + "/requests").json()
    assert [e["status"] for e in log] == [200, 500, 401]
    requests.post(base + "/reset")
    assert sandbox.api_calls() == {}
    assert all(r["Id"] != new_id for r in sandbox.records("Contact"))


def test_convert_lead(sandbox: Sandbox, client: Client) -> None:
    jane = sandbox.records("Lead")[0]["Id"]
    sandbox.convert_lead(jane)
    lead = sandbox.record("Lead", jane)
    assert lead["IsConverted"] is True
    assert sandbox.record("Contact", lead["ConvertedContactId"])["LastName"] == "Doe"


def test_bulk_query_job_with_locator_paging(sandbox: Sandbox, client: Client) -> None:
    sandbox.add_records(
        "Lead",
        [{"LastName": f"Q{i}", "Company": "C", "Email": f"q{i}@example.com"} for i in range(5)],
    )
    resp = client.post(
        API + "/jobs/query",
        json={
            "operation": "query",
            "query": "SELECT Id, Email, IsConverted FROM Lead WHERE Email LIKE 'q%' ORDER BY Email",
        },
    )
    assert resp.status_code == 200
    job = resp.json()
    assert job["state"] == "UploadComplete" and job["object"] == "Lead"
    info = client.get(f"{API}/jobs/query/{job['id']}").json()
    assert info["state"] == "JobComplete" and info["jobType"] == "V2Query"
    assert info["numberRecordsProcessed"] == 5
    url = f"{API}/jobs/query/{job['id']}/results"
    first = client.get(url, params={"maxRecords": 3}, headers={"Accept": "text/csv"})
    assert first.headers["Sforce-NumberOfRecords"] == "3"
    locator = first.headers["Sforce-Locator"]
    assert locator != "null"
    lines = first.text.splitlines()
    assert lines[0] == '"Id","Email","IsConverted"'
    assert lines[1].endswith(',"q0@example.com","false"')
    second = client.get(url, params={"maxRecords": 3, "locator": locator})
    assert second.headers["Sforce-Locator"] == "null"
    assert second.headers["Sforce-NumberOfRecords"] == "2"
    assert len(second.text.splitlines()) == 3
    assert sandbox.api_calls()["query_job_results"] == 2
    bad = client.post(
        API + "/jobs/query", json={"operation": "query", "query": "SELECT Nope FROM Lead"}
    )
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"


MULTIPE = (
    "Found multipe contents for job: <{}>, please 'Close' / 'Abort' / 'Delete' the "
    "current Job then create a new Job and make sure you only do 'PUT' once on a given "
    "Job."
)


def test_lost_response_after_the_put_landed(sandbox: Sandbox, client: Client) -> None:
    jane = sandbox.records("Lead")[0]["Id"]
    job = client.create_job()
    url = f"{API}/jobs/ingest/{job['id']}/batches"
    data = f"Id,DoNotCall\n{jane},true\n".encode()
    # The connection drops after the body was read and handled (reference 10.3).
    sandbox.fail_next(0, method="PUT", path="/batches", after=True)
    with pytest.raises(requests.ConnectionError):
        requests.put(
            client.sb.url + url,
            data=data,
            headers={"Authorization": f"Bearer {client.token}", "Content-Type": "text/csv"},
        )
    assert sandbox.ingest.get(job["id"]).data == data
    assert sandbox.ingest_job(job["id"])["state"] == "Open"
    assert [r.status for r in sandbox.requests if r.kind == "ingest_upload"] == [0]
    retry = client.put(url, data=data, headers={"Content-Type": "text/csv"})
    assert retry.status_code == 400
    assert retry.text == (
        '[ {\n  "errorCode" : "BULK_API_ERROR",\n  "message" : "'
        + MULTIPE.format(job["id"][:15])
        + '"\n} ]'
    )
    # The same through the admin API, with an injected status instead of a drop.
    requests.post(
        sandbox.url + "/__sandbox/faults",
        json={
            "type": "fail_next",
            "status": 503,
            "body": "[]",
            "method": "POST",
            "path": "/jobs/ingest$",
            "after": True,
        },
    )
    lost = client.post(f"{API}/jobs/ingest", json={"object": "Lead", "operation": "update"})
    assert lost.status_code == 503 and lost.text == "[]"
    assert len(sandbox.ingest_jobs()) == 2  # the job was created all the same
    # Without "after", a dropped request never reaches the handler.
    sandbox.fail_next(None, method="POST", path="/jobs/ingest$")
    with pytest.raises(requests.ConnectionError):
        requests.post(
            client.sb.url + f"{API}/jobs/ingest",
            json={"object": "Lead", "operation": "update"},
            headers={"Authorization": f"Bearer {client.token}"},
        )
    assert len(sandbox.ingest_jobs()) == 2
    assert client.get(API + "/limits").status_code == 200
