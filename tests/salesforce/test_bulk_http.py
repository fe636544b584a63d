"""BulkIngest against the sandbox over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from target_salesforce_consent.salesforce import (
    BulkIngest,
    JobFailedError,
    RowResult,
    SalesforceClient,
    SalesforceError,
    build_csv,
)

from .test_client_http import calls_to


def leads(sb: Any) -> dict[str, dict[str, Any]]:
    return {r["Id"]: r for r in sb.records("Lead")}


def lead_ids(sb: Any) -> list[str]:
    return sorted(leads(sb))


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def put_paths(sb: Any) -> list[str]:
    return [r.path for r in calls_to(sb, "/batches", "PUT")]


def job_id_of(path: str) -> str:
    return path.split("/jobs/ingest/")[1].split("/")[0]


def test_empty_rows_create_no_job(sandbox: Any, bulk: BulkIngest) -> None:
    outcome = bulk.run("Lead", "update", ["Id", "HasOptedOutOfEmail"], [], "Id")
    assert outcome.results == {} and outcome.job_ids == []
    assert calls_to(sandbox, "/jobs/ingest") == []


def test_update_reconciles_by_key(sandbox: Any, bulk: BulkIngest) -> None:
    ids = lead_ids(sandbox)
    # send ids lower-cased to prove reconciliation is by value, case-insensitively
    rows = [
        {"Id": ids[0], "HasOptedOutOfEmail": "true", "Newsletter__c": "false"},
        {"Id": ids[1].lower(), "HasOptedOutOfEmail": "true"},
        {"Id": ids[2], "Newsletter__c": "true"},
        {"Id": "00Q000000000000EAA", "HasOptedOutOfEmail": "true"},
    ]
    outcome = bulk.run("Lead", "update", ["Id", "HasOptedOutOfEmail", "Newsletter__c"], rows, "Id")
    assert set(outcome.results) == {r["Id"] for r in rows}
    for key in (ids[0], ids[1].lower(), ids[2]):
        result = outcome.results[key]
        assert result.status == "succeeded", result
        assert result.sf_id is not None and result.sf_id.lower() == key.lower()
        assert result.created is False and result.error is None
        assert result.job_id == outcome.job_ids[0]
    bad = outcome.results["00Q000000000000EAA"]
    assert bad.status == "failed" and bad.error is not None
    assert bad.error.split(":")[0] in {"INVALID_CROSS_REFERENCE_KEY", "ENTITY_IS_DELETED"}
    assert not bad.error.endswith("--")
    records = leads(sandbox)
    assert truthy(records[ids[0]]["HasOptedOutOfEmail"])
    assert truthy(records[ids[1]]["HasOptedOutOfEmail"])
    assert truthy(records[ids[2]]["Newsletter__c"])
    assert not truthy(records[ids[2]]["HasOptedOutOfEmail"])  # empty cell = unchanged
    # the wire: one job, exactly one PUT of LF CSV without BOM, fully quoted
    assert len(outcome.job_ids) == 1
    [put] = calls_to(sandbox, "/batches", "PUT")
    body = put.body if isinstance(put.body, bytes) else str(put.body).encode()
    assert body.startswith(b'"Id","HasOptedOutOfEmail","Newsletter__c"\n')
    assert b"\r" not in body
    [create] = [r for r in calls_to(sandbox, "/jobs/ingest", "POST")]
    create_body = json.loads(create.body)
    assert create_body == {
        "object": "Lead",
        "operation": "update",
        "contentType": "CSV",
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    }


def test_many_rows_split_into_jobs(sandbox: Any, client: SalesforceClient) -> None:
    ids = lead_ids(sandbox)
    bulk = BulkIngest(client, poll_interval=0.0, sleep=lambda s: None, max_rows_per_job=2)
    rows = [{"Id": i, "Newsletter__c": "true"} for i in ids]
    outcome = bulk.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id")
    assert len(outcome.job_ids) == 2
    assert len(put_paths(sandbox)) == 2
    assert all(r.status == "succeeded" for r in outcome.results.values())


def test_rows_over_the_upload_size_split_into_jobs(
    sandbox: Any, client: SalesforceClient
) -> None:
    """A job's CSV kept under max_upload_bytes: too big, the rows go in halves to two jobs."""
    ids = lead_ids(sandbox)
    rows = [{"Id": i, "Newsletter__c": "true"} for i in ids]
    size = len(build_csv(["Id", "Newsletter__c"], rows))
    bulk = BulkIngest(client, poll_interval=0.0, sleep=lambda s: None, max_upload_bytes=size - 1)
    outcome = bulk.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id")
    assert len(outcome.job_ids) == 2 and len(put_paths(sandbox)) == 2
    assert all(r.status == "succeeded" for r in outcome.results.values())
    whole = BulkIngest(client, poll_interval=0.0, sleep=lambda s: None, max_upload_bytes=size)
    assert len(whole.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id").job_ids) == 1


def test_insert_maps_created_ids_back_by_email(sandbox: Any, bulk: BulkIngest) -> None:
    rows = [
        {"Email": f"new{i}@example.com", "LastName": f"New{i}", "Company": "Acme"}
        for i in range(30)
    ]
    rows.append({"Email": "nocompany@example.com", "LastName": "NoCo"})
    before = set(leads(sandbox))
    outcome = bulk.run("Lead", "insert", ["Email", "LastName", "Company"], rows, "Email")
    records = leads(sandbox)
    created = {i: r for i, r in records.items() if i not in before}
    assert len(created) == 30
    for row in rows[:30]:
        result = outcome.results[row["Email"]]
        assert result.status == "succeeded" and result.created is True
        assert result.sf_id in created
        assert created[result.sf_id]["Email"] == row["Email"]
        assert created[result.sf_id]["LastName"] == row["LastName"]
    failed = outcome.results["nocompany@example.com"]
    assert failed.status == "failed" and failed.sf_id is None
    assert failed.error is not None and failed.error.startswith("REQUIRED_FIELD_MISSING: ")


def test_converted_lead_fails_permanently(sandbox: Any, bulk: BulkIngest) -> None:
    ids = lead_ids(sandbox)
    sandbox.convert_lead(ids[0])
    outcome = bulk.run(
        "Lead", "update", ["Id", "Newsletter__c"], [{"Id": ids[0], "Newsletter__c": "true"}], "Id"
    )
    result = outcome.results[ids[0]]
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("CANNOT_UPDATE_CONVERTED_LEAD")
    assert len(outcome.job_ids) == 1  # permanent errors are not resubmitted


def test_locked_rows_are_resubmitted_then_succeed(sandbox: Any, bulk: BulkIngest) -> None:
    ids = lead_ids(sandbox)
    sandbox.lock_records(ids[:2], attempts=1)
    rows = [{"Id": i, "Newsletter__c": "true"} for i in ids]
    outcome = bulk.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id")
    assert all(r.status == "succeeded" for r in outcome.results.values()), outcome
    assert len(outcome.job_ids) == 2
    # the second job carried only the two locked rows
    second = [r for r in calls_to(sandbox, "/batches", "PUT")][1]
    body = second.body if isinstance(second.body, bytes) else str(second.body).encode()
    assert body.count(b"\n") == 3
    assert outcome.results[ids[0]].job_id == outcome.job_ids[1]
    assert outcome.results[ids[2]].job_id == outcome.job_ids[0]
    assert all(truthy(leads(sandbox)[i]["Newsletter__c"]) for i in ids)


def test_rows_locked_forever_are_unresolved(sandbox: Any, bulk: BulkIngest) -> None:
    ids = lead_ids(sandbox)
    sandbox.lock_records([ids[0]])
    rows = [{"Id": i, "Newsletter__c": "true"} for i in ids]
    outcome = bulk.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id")
    stuck = outcome.results[ids[0]]
    assert stuck.status == "unresolved"
    assert stuck.error is not None and stuck.error.startswith("UNABLE_TO_LOCK_ROW: ")
    assert stuck.job_id == outcome.job_ids[-1]
    assert len(outcome.job_ids) == 3  # max_rounds
    assert outcome.results[ids[1]].status == "succeeded"


def test_unprocessed_rows_are_resubmitted(sandbox: Any, bulk: BulkIngest) -> None:
    ids = lead_ids(sandbox)
    sandbox.leave_unprocessed(2)
    rows = [{"Id": i, "Newsletter__c": "true"} for i in ids]
    outcome = bulk.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id")
    assert all(r.status == "succeeded" for r in outcome.results.values()), outcome
    assert len(outcome.job_ids) == 2
    # Only the first job's counters showed unprocessed rows; the second processed them all.
    assert len(calls_to(sandbox, "/unprocessedrecords", "GET")) == 1


def result_files_read(sandbox: Any) -> list[str]:
    return [r.path.rstrip("/").rsplit("/", 1)[-1] for r in calls_to(sandbox, "Results", "GET")]


def test_result_files_read_follow_the_job_counters(sandbox: Any, bulk: BulkIngest) -> None:
    ids = lead_ids(sandbox)
    rows = [{"Id": ids[1], "Newsletter__c": "true"}, {"Id": ids[2], "Newsletter__c": "maybe"}]
    outcome = bulk.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id")
    assert outcome.results[ids[1]].status == "succeeded"
    assert outcome.results[ids[2]].status == "failed"
    assert sorted(result_files_read(sandbox)) == ["failedResults", "successfulResults"]
    assert calls_to(sandbox, "/unprocessedrecords", "GET") == []


def test_update_whose_counters_show_every_row_succeeded_reads_no_result_file(
    sandbox: Any, bulk: BulkIngest
) -> None:
    ids = lead_ids(sandbox)
    rows = [{"Id": ids[0], "Newsletter__c": "true"}, {"Id": ids[1].lower(), "DoNotCall": "true"}]
    outcome = bulk.run("Lead", "update", ["Id", "Newsletter__c", "DoNotCall"], rows, "Id")
    assert result_files_read(sandbox) == []
    [job_id] = outcome.job_ids
    for key in (ids[0], ids[1].lower()):
        assert outcome.results[key] == RowResult(key, "succeeded", key, False, None, job_id)
    records = leads(sandbox)
    assert truthy(records[ids[0]]["Newsletter__c"]) and truthy(records[ids[1]]["DoNotCall"])


def test_insert_reads_its_successful_results_for_the_new_ids(
    sandbox: Any, bulk: BulkIngest
) -> None:
    rows = [{"Email": "new@example.com", "LastName": "New", "Company": "Acme"}]
    outcome = bulk.run("Lead", "insert", ["Email", "LastName", "Company"], rows, "Email")
    assert result_files_read(sandbox) == ["successfulResults"]
    result = outcome.results["new@example.com"]
    assert result.status == "succeeded" and result.created
    assert result.sf_id in leads(sandbox)


def test_non_transient_job_failure_raises(sandbox: Any, bulk: BulkIngest) -> None:
    ids = lead_ids(sandbox)
    sandbox.fail_next_job("InvalidBatch : Field name not found : Newsletter__c")
    rows = [{"Id": i, "Newsletter__c": "true"} for i in ids]
    with pytest.raises(JobFailedError) as info:
        bulk.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id")
    assert info.value.error_message == "InvalidBatch : Field name not found : Newsletter__c"
    assert info.value.job_id in str(info.value)
    assert len(calls_to(sandbox, "/jobs/ingest", "POST")) == 1  # not resubmitted
    assert not any(truthy(leads(sandbox)[i]["Newsletter__c"]) for i in ids)
    assert info.value.outcome is not None


def test_transient_job_failure_is_resubmitted(sandbox: Any, bulk: BulkIngest) -> None:
    ids = lead_ids(sandbox)
    sandbox.fail_next_job("Timeout : the batch exceeded the processing time limit")
    rows = [{"Id": i, "Newsletter__c": "true"} for i in ids]
    outcome = bulk.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id")
    assert all(r.status == "succeeded" for r in outcome.results.values()), outcome
    assert len(outcome.job_ids) == 2


def test_put_failure_aborts_job_and_redoes_in_new_job(sandbox: Any, bulk: BulkIngest) -> None:
    ids = lead_ids(sandbox)
    sandbox.fail_next(
        503,
        json.dumps([{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}]),
        method="PUT",
        path=r"/batches",
        content_type="application/json;charset=UTF-8",
    )
    rows = [{"Id": i, "Newsletter__c": "true"} for i in ids]
    outcome = bulk.run("Lead", "update", ["Id", "Newsletter__c"], rows, "Id")
    assert all(r.status == "succeeded" for r in outcome.results.values()), outcome
    first, second = outcome.job_ids
    puts = put_paths(sandbox)
    assert [job_id_of(p) for p in puts] == [first, second]  # never two PUTs on one job
    patches = [r for r in calls_to(sandbox, f"/jobs/ingest/{first}", "PATCH")]
    assert [json.loads(r.body)["state"] for r in patches] == ["Aborted"]
    assert calls_to(sandbox, f"/jobs/ingest/{first}", "GET")  # looked at the job first
    assert all(outcome.results[i].job_id == second for i in ids)


def test_put_client_error_is_not_retried(sandbox: Any, bulk: BulkIngest) -> None:
    ids = lead_ids(sandbox)
    sandbox.fail_next(
        400,
        json.dumps([{"errorCode": "BULK_API_ERROR", "message": "Found multipe contents for job"}]),
        method="PUT",
        path=r"/batches",
        content_type="application/json;charset=UTF-8",
    )
    with pytest.raises(SalesforceError) as info:
        bulk.run(
            "Lead",
            "update",
            ["Id", "Newsletter__c"],
            [{"Id": ids[0], "Newsletter__c": "true"}],
            "Id",
        )
    assert info.value.code == "BULK_API_ERROR"
    assert len(put_paths(sandbox)) == 1


def test_delete_jobs(sandbox: Any, client: SalesforceClient) -> None:
    ids = lead_ids(sandbox)
    bulk = BulkIngest(client, poll_interval=0.0, sleep=lambda s: None, delete_jobs=True)
    outcome = bulk.run(
        "Lead", "update", ["Id", "Newsletter__c"], [{"Id": ids[0], "Newsletter__c": "true"}], "Id"
    )
    [job_id] = outcome.job_ids
    assert [r.status for r in calls_to(sandbox, f"/jobs/ingest/{job_id}", "DELETE")] == [204]


def test_polls_until_complete(sandbox: Any, client: SalesforceClient) -> None:
    from salesforce_sandbox import Sandbox

    from .conftest import seed

    sleeps: list[float] = []
    with (
        Sandbox(seed=seed(), job_polls_to_complete=3) as sb,
        SalesforceClient(sb.url, sb.client_id, sb.client_secret) as c,
    ):
        bulk = BulkIngest(c, poll_interval=0.5, max_poll_interval=1.0, sleep=sleeps.append)
        ids = lead_ids(sb)
        outcome = bulk.run(
            "Lead", "update", ["Id", "DoNotCall"], [{"Id": ids[0], "DoNotCall": "true"}], "Id"
        )
        assert outcome.results[ids[0]].status == "succeeded"
        assert sleeps and sleeps[0] == 0.5 and max(sleeps) <= 1.0
        job_gets = [
            r
            for r in calls_to(sb, f"/jobs/ingest/{outcome.job_ids[0]}", "GET")
            if r.path.rstrip("/").endswith(outcome.job_ids[0])
        ]
        assert len(job_gets) >= 2


def test_insert_missing_from_results_is_never_sent_again(sandbox: Any, bulk: BulkIngest) -> None:
    # The job completes and creates the record, but its success row does not come back: the
    # outcome is unknown, and a second insert could create a duplicate.
    sandbox.fail_next(
        200, '"sf__Id","sf__Created",Email,LastName,Company\n', method="GET",
        path="successfulResults", content_type="text/csv; charset=UTF-8", after=True,
    )  # fmt: skip
    before = set(leads(sandbox))
    rows = [{"Email": "once@example.com", "LastName": "Once", "Company": "Acme"}]
    outcome = bulk.run("Lead", "insert", ["Email", "LastName", "Company"], rows, "Email")
    created = [r for i, r in leads(sandbox).items() if i not in before]
    assert len(created) == 1
    result = outcome.results["once@example.com"]
    assert result.status == "unresolved"
    assert result.error is not None and result.error.startswith("UNKNOWN_OUTCOME")
    assert len(outcome.job_ids) == 1


def test_update_missing_from_results_is_sent_again(sandbox: Any, bulk: BulkIngest) -> None:
    # A row fails, so the result files are read; the successful one comes back empty.
    ids = lead_ids(sandbox)
    sandbox.fail_next(
        200, '"sf__Id","sf__Created",Id,HasOptedOutOfEmail\n', method="GET",
        path="successfulResults", content_type="text/csv; charset=UTF-8", after=True,
    )  # fmt: skip
    rows = [{"Id": ids[0], "HasOptedOutOfEmail": "true"}, {"Id": ids[1], "HasOptedOutOfEmail": "x"}]
    outcome = bulk.run("Lead", "update", ["Id", "HasOptedOutOfEmail"], rows, "Id")
    assert outcome.results[ids[0]].status == "succeeded"
    assert outcome.results[ids[1]].status == "failed"
    assert len(outcome.job_ids) == 2


def test_keys_are_reconciled_as_uploaded(sandbox: Any, bulk: BulkIngest) -> None:
    # build_csv turns CR into LF and drops NUL; the echoed key must still match its row.
    rows = [{"Email": "a\r\nb\x00@example.com", "LastName": "Odd", "Company": "Acme"}]
    outcome = bulk.run("Lead", "insert", ["Email", "LastName", "Company"], rows, "Email")
    assert len(outcome.job_ids) == 1
    assert outcome.results[rows[0]["Email"]].status in ("succeeded", "failed")
