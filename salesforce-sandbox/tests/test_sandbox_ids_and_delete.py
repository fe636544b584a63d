"""Ids are never reused and always valid; deletes are soft; Bulk query rules (reference 1.4,
3.10, 4)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from salesforce_sandbox import Sandbox, cli
from salesforce_sandbox import ids as sf_ids
from sandbox_helpers import API, Client

SEEDED_ID = "00Q5g0000000002EAA"


def minimal_seed(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"objects": {"Lead": {"custom_fields": [], "records": records}}}


def login(sb: Sandbox) -> Client:
    client = Client(sb)
    client.login()
    return client


def test_a_bulk_insert_never_replaces_a_seeded_lead() -> None:
    """The lost-record case: the Id generator handed out the seeded Lead's Id."""
    seeded = {"Id": SEEDED_ID, "LastName": "Seeded", "Company": "Acme",
              "Email": "seeded@example.com"}
    with Sandbox(minimal_seed([seeded])) as sb:
        client = login(sb)
        info = client.run_job("LastName,Company\nInserted,Acme\n", operation="insert")
        assert info["state"] == "JobComplete" and info["numberRecordsFailed"] == 0
        [row] = csv.DictReader(io.StringIO(client.results(info["id"], "successfulResults")))
        assert row["sf__Id"] != SEEDED_ID
        assert sb.record("Lead", SEEDED_ID)["LastName"] == "Seeded"
        assert sorted(r["LastName"] for r in sb.records("Lead")) == ["Inserted", "Seeded"]


def test_generated_ids_skip_every_id_the_org_holds() -> None:
    # The generator's next Ids, seeded out of order, as 15 and 18 characters.
    taken = [sf_ids.to18(f"00Q5g{n:010d}") for n in range(1, 8)]
    seed = minimal_seed([{"Id": rid if n % 2 else rid[:15], "LastName": f"S{n}",
                          "Company": "C"} for n, rid in enumerate(taken)])
    with Sandbox(seed) as sb:
        client = login(sb)
        created = [
            client.post(f"{API}/sobjects/Lead", json={"LastName": f"N{i}", "Company": "C"})
            .json()["id"] for i in range(5)
        ]
        info = client.run_job("LastName,Company\nB1,C\nB2,C\n", operation="insert")
        bulk = [r["sf__Id"] for r in
                csv.DictReader(io.StringIO(client.results(info["id"], "successfulResults")))]
        every = [r["Id"] for r in sb.records("Lead")]
        assert len(every) == len(set(every)) == 14
        assert set(taken) <= set(every)
        for rid in created + bulk:
            assert rid not in taken
            assert len(rid) == 18 and sf_ids.to18(rid[:15]) == rid
        # A deleted record's Id is not handed out again either.
        assert client.delete(f"{API}/sobjects/Lead/{created[0]}").status_code == 204
        more = client.post(f"{API}/sobjects/Lead", json={"LastName": "M", "Company": "C"})
        assert more.json()["id"] not in every


@pytest.mark.parametrize(("bad_id", "expected"), [
    ("00Q5g0000000002EAB", "seed record 1 of Lead: malformed Id '00Q5g0000000002EAB'"),
    ("00Q5g00000000", "seed record 1 of Lead: malformed Id '00Q5g00000000'"),
    ("0035g0000000002AAA", "seed record 1 of Lead: Id '0035g0000000002AAA' is not a Lead Id"),
])
def test_a_seed_with_a_malformed_id_is_refused(bad_id: str, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        Sandbox(minimal_seed([{"Id": bad_id, "LastName": "X", "Company": "Y"}]))
    assert str(info.value).startswith(expected)


def test_a_seed_repeating_an_id_is_refused() -> None:
    records = [{"Id": SEEDED_ID, "LastName": "A", "Company": "C"},
               {"Id": SEEDED_ID[:15], "LastName": "B", "Company": "C"}]
    with pytest.raises(ValueError, match="seed record 2 of Lead: Id '00Q5g0000000002' is used by "
                                         "another seed record"):
        Sandbox(minimal_seed(records))


def test_the_cli_refuses_a_malformed_seed_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps(minimal_seed([{"Id": "00Qbroken", "LastName": "X"}])))
    assert cli.main(["--seed", str(seed_file), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "cannot start: seed record 1 of Lead: malformed Id '00Qbroken'" in err
    assert "Traceback" not in err


def test_admin_refuses_an_id_the_org_holds(sandbox: Sandbox, client: Client) -> None:
    jane = sandbox.records("Lead")[0]["Id"]
    resp = client.http.post(sandbox.url + "/__sandbox/records/Lead",
                            json={"Id": jane, "LastName": "Dup", "Company": "C"})
    assert resp.status_code == 400 and "already used" in resp.json()["error"]


def test_bulk_delete_is_soft(sandbox: Sandbox, client: Client) -> None:
    jane = next(r for r in sandbox.records("Lead") if r["Email"] == "jane.doe@example.com")["Id"]
    info = client.run_job(f"Id\n{jane}\n", operation="delete")
    assert info["numberRecordsFailed"] == 0
    soql = f"SELECT Id, IsDeleted FROM Lead WHERE Id = '{jane}'"
    assert client.get(f"{API}/query", params={"q": soql}).json()["totalSize"] == 0
    [row] = client.get(f"{API}/queryAll", params={"q": soql}).json()["records"]
    assert row["IsDeleted"] is True
    # A later update fails ENTITY_IS_DELETED, not INVALID_CROSS_REFERENCE_KEY.
    update = client.run_job(f"Id,DoNotCall\n{jane},true\n", operation="update")
    [failed] = csv.DictReader(io.StringIO(client.results(update["id"], "failedResults")))
    assert failed["sf__Error"] == "ENTITY_IS_DELETED:entity is deleted:--"
    again = client.run_job(f"Id\n{jane}\n", operation="delete")
    [failed] = csv.DictReader(io.StringIO(client.results(again["id"], "failedResults")))
    assert failed["sf__Error"] == "ENTITY_IS_DELETED:entity is deleted:--"

    # Bulk queryAll sees it too; a Bulk query does not.
    for operation, expected in (("query", 0), ("queryAll", 1)):
        job = client.post(f"{API}/jobs/query",
                          json={"operation": operation, "query": soql}).json()
        client.get(f"{API}/jobs/query/{job['id']}")
        text = client.get(f"{API}/jobs/query/{job['id']}/results").text
        assert len(text.splitlines()) - 1 == expected, operation


def test_hard_delete_removes_for_good(sandbox: Sandbox, client: Client) -> None:
    jane = next(r for r in sandbox.records("Lead") if r["Email"] == "jane.doe@example.com")["Id"]
    assert client.run_job(f"Id\n{jane}\n", operation="hardDelete")["numberRecordsFailed"] == 0
    body = client.get(f"{API}/queryAll", params={"q": f"SELECT Id FROM Lead WHERE Id = '{jane}'"})
    assert body.json()["totalSize"] == 0
    resp = client.get(f"{API}/sobjects/Lead/{jane}")
    assert resp.status_code == 404 and resp.json()[0]["errorCode"] == "ENTITY_IS_DELETED"


def test_bulk_query_refuses_offset(client: Client) -> None:
    resp = client.post(f"{API}/jobs/query", json={
        "operation": "query", "query": "SELECT Id FROM Lead ORDER BY Id LIMIT 5 OFFSET 1"})
    assert resp.status_code == 400
    [error] = resp.json()
    assert error["errorCode"] == "INVALIDJOB" and "OFFSET" in error["message"]
    # A literal containing the word is no OFFSET clause; REST SOQL keeps OFFSET.
    ok = client.post(f"{API}/jobs/query", json={
        "operation": "query", "query": "SELECT Id FROM Lead WHERE LastName IN ('a', 'offset')"})
    assert ok.status_code == 200
    rest = client.get(f"{API}/query", params={"q": "SELECT Id FROM Lead LIMIT 5 OFFSET 1"})
    assert rest.status_code == 200 and rest.json()["totalSize"] == 2


def test_bulk_query_results_need_the_jobs_api_version(client: Client) -> None:
    job = client.post(f"{API}/jobs/query",
                      json={"operation": "query", "query": "SELECT Id FROM Lead"}).json()
    client.get(f"{API}/jobs/query/{job['id']}")
    other = client.get(f"/services/data/v60.0/jobs/query/{job['id']}/results")
    assert other.status_code == 409
    assert other.json()[0]["errorCode"] == "API_VERSION_MISMATCH"
    assert "Sforce-Limit-Info" in other.headers
    same = client.get(f"{API}/jobs/query/{job['id']}/results")
    assert same.status_code == 200 and len(same.text.splitlines()) == 4
