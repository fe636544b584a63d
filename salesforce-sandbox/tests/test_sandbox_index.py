"""The equality index answers ``=``/``IN`` exactly as the full scan does: same records, same
order, through every write path (Bulk ingest, sObject rows, collections, admin, convert, reset),
for query and queryAll alike."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from salesforce_sandbox import Sandbox, soql
from sandbox_helpers import API, Client

# (query, whether it must be answered from the index)
QUERIES: list[tuple[str, bool]] = [
    ("SELECT Id FROM Lead WHERE Email IN ('a@x.com', 'B@X.COM', 'c@x.com', 'nobody@x.com')",
     True),
    ("SELECT Id FROM Lead WHERE Email = 'A@x.com'", True),
    ("SELECT Id FROM Lead WHERE Email = ' a@x.com'", True),  # no trimming: only that spelling
    ("SELECT Id FROM Lead WHERE Email = 'STRASSE@x.com'", True),  # casefold: ß is ss
    ("SELECT Id FROM Lead WHERE Email = null", True),
    ("SELECT Id FROM Lead WHERE Email IN ('a@x.com', null)", True),
    ("SELECT Id FROM Lead WHERE Email IN ('a@x.com', 'b@x.com') AND IsConverted = false", True),
    ("SELECT Id FROM Lead WHERE Company != 'Z' AND (Email IN ('a@x.com', 'c@x.com') "
     "AND LastName != 'Zed')", True),
    ("SELECT Id, LastName FROM Lead WHERE Email IN ('a@x.com', 'b@x.com', 'c@x.com') "
     "ORDER BY LastName DESC LIMIT 3 OFFSET 1", True),
    ("SELECT Id FROM Lead WHERE Didomi_Id__c IN ('k1', 'K2', 'k3')", True),
    ("SELECT Id FROM Lead WHERE Name = 'ann SMITH'", True),  # the computed Name
    ("SELECT Id FROM Contact WHERE Email = 'a@x.com'", True),
    ("SELECT Id FROM Lead WHERE Email = 'a@x.com' OR Email = 'b@x.com'", False),
    ("SELECT Id FROM Lead WHERE NOT Email IN ('a@x.com')", False),
    ("SELECT Id FROM Lead WHERE Email != 'a@x.com'", False),
]

SEED_LEADS: list[dict[str, Any]] = [
    {"LastName": "One", "Company": "C", "Email": "a@x.com", "Didomi_Id__c": "k1"},
    {"FirstName": "Ann", "LastName": "Smith", "Company": "C", "Email": "A@X.com"},
    {"LastName": "Two", "Company": "C", "Email": "b@x.com", "Didomi_Id__c": "K1"},
    {"LastName": "Nil", "Company": "C"},
    {"LastName": "Spaced", "Company": "C", "Email": " a@x.com"},
    {"LastName": "Sharp", "Company": "C", "Email": "straße@x.com", "Didomi_Id__c": "k2"},
    {"LastName": "Three", "Company": "C", "Email": "c@x.com"},
]


def _parse(sb: Sandbox, text: str) -> soql.Query:
    return soql.parse(text, sb.org.schemas)


def by_scan(sb: Sandbox, text: str, include_deleted: bool) -> list[str]:
    with sb.org.lock:
        query = _parse(sb, text)
        rows = sb.org.all_records(query.object_name, include_deleted=include_deleted)
        return [str(r["Id"]) for r in soql.execute(query, rows)]


def by_index(sb: Sandbox, text: str, include_deleted: bool) -> list[str]:
    with sb.org.lock:
        query = _parse(sb, text)
        rows = sb.org.query_candidates(query, include_deleted=include_deleted)
        return [str(r["Id"]) for r in soql.execute(query, rows)]


def by_rest(client: Client, text: str, include_deleted: bool) -> list[str]:
    # batchSize 200 is the floor; results pass 200 rows only in the large test below.
    resp = client.get(f"{API}/{'queryAll' if include_deleted else 'query'}", params={"q": text},
                      headers={"Sforce-Query-Options": "batchSize=200"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    out = [str(r["Id"]) for r in body["records"]]
    while not body["done"]:
        body = client.get(body["nextRecordsUrl"]).json()
        out += [str(r["Id"]) for r in body["records"]]
    return out


def by_bulk(client: Client, text: str, include_deleted: bool) -> list[str]:
    job = client.post(f"{API}/jobs/query", json={
        "operation": "queryAll" if include_deleted else "query", "query": text}).json()
    client.get(f"{API}/jobs/query/{job['id']}")
    rows = client.get(f"{API}/jobs/query/{job['id']}/results").text
    return [row["Id"] for row in csv.DictReader(io.StringIO(rows))]


def assert_same(sb: Sandbox, client: Client, extra: list[str] | None = None) -> int:
    """Every query answers alike by scan, index, REST (and Bulk for a few); the number of
    (query, mode) pairs that matched something, so a test can tell it is not vacuous."""
    found = 0
    queries = QUERIES + [(text, True) for text in extra or []]
    for index, (text, indexed) in enumerate(queries):
        with sb.org.lock:
            assert (soql.equality_lookup(_parse(sb, text).where) is not None) == indexed, text
        for include_deleted in (False, True):
            expected = by_scan(sb, text, include_deleted)
            assert by_index(sb, text, include_deleted) == expected, (text, include_deleted)
            assert by_rest(client, text, include_deleted) == expected, (text, include_deleted)
            if index < 3:
                assert by_bulk(client, text, include_deleted) == expected, text
            found += bool(expected)
    return found


def lead(sb: Sandbox, **match: Any) -> str:
    [found] = [r["Id"] for r in sb.records("Lead")
               if all(r.get(k) == v for k, v in match.items())]
    return str(found)


def id_queries(sb: Sandbox) -> list[str]:
    """Id IN (...) with the 18-character Ids in lowercase and as 15 characters."""
    all_ids = [str(r["Id"]) for r in sb.records("Lead", include_deleted=True)]
    forms = [rid.lower() if n % 2 else rid[:15] for n, rid in enumerate(all_ids[:5])]
    literals = ", ".join(f"'{f}'" for f in [*forms, "00Q000000000000AAA"])
    return [f"SELECT Id FROM Lead WHERE Id IN ({literals})"]


def failed_errors(client: Client, job: dict[str, Any]) -> list[str]:
    text = client.results(job["id"], "failedResults")
    return [row["sf__Error"] for row in csv.DictReader(io.StringIO(text))]


def test_index_agrees_with_the_scan_through_every_write_path(
        sandbox: Sandbox, client: Client) -> None:
    sb = sandbox
    sb.add_records("Lead", SEED_LEADS)
    assert assert_same(sb, client, id_queries(sb)) > 10  # builds the indexes

    # Bulk insert: new holders of indexed values.
    job = client.run_job("LastName,Company,Email\nNew1,C,a@x.com\nNew2,C,C@x.com\n",
                         operation="insert")
    assert job["numberRecordsFailed"] == 0
    assert_same(sb, client)

    # Bulk update: the indexed field changes, is cleared (#N/A) and set from NULL.
    one, two, nil = lead(sb, LastName="One"), lead(sb, LastName="Two"), lead(sb, LastName="Nil")
    job = client.run_job(f"Id,Email,LastName\n{one},c@x.com,\n{two},#N/A,\n{nil},b@x.com,\n"
                         f"{lead(sb, LastName='Smith')},,Smyth\n", operation="update")
    assert job["numberRecordsFailed"] == 0
    assert_same(sb, client)

    # Bulk upsert by an External ID: k1/K1 are two records (the error lists both in scan
    # order), k2 updates, k3 inserts.
    job = client.run_job("Didomi_Id__c,Email,LastName,Company\nK1,a@x.com,X,C\n"
                         "k2,B@x.com,Sharp,C\nk3,a@x.com,Fresh,C\n",
                         operation="upsert", externalIdFieldName="Didomi_Id__c")
    assert job["numberRecordsFailed"] == 1
    twins = [str(r["Id"]) for r in sb.records("Lead") if r["Didomi_Id__c"] in {"k1", "K1"}]
    [error] = failed_errors(client, job)
    assert f"[{', '.join(twins)}]" in error
    assert_same(sb, client)

    # Bulk delete to the Recycle Bin (queryAll still sees it), then a hard delete.
    job = client.run_job(f"Id\n{lead(sb, LastName='New1')}\n", operation="delete")
    assert job["numberRecordsFailed"] == 0
    job = client.run_job(f"Id\n{lead(sb, LastName='New2')}\n", operation="hardDelete")
    assert job["numberRecordsFailed"] == 0
    assert_same(sb, client, id_queries(sb))

    # sObject rows: update the indexed field, delete, create.
    resp = client.patch(f"{API}/sobjects/Lead/{lead(sb, LastName='Three')}",
                        json={"Email": "A@x.com"})
    assert resp.status_code == 204
    assert client.delete(f"{API}/sobjects/Lead/{lead(sb, LastName='Sharp')}").status_code == 204
    resp = client.post(f"{API}/sobjects/Lead",
                       json={"LastName": "Row", "Company": "C", "Email": "b@x.com"})
    assert resp.status_code == 201
    assert_same(sb, client)

    # Collections rolled back (allOrNone): the records come back as they were.
    fresh = lead(sb, LastName="Fresh")
    resp = client.patch(f"{API}/composite/sobjects", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Lead"}, "id": fresh, "Email": "c@x.com"},
        {"attributes": {"type": "Lead"}, "Email": "c@x.com"},
    ]})
    assert resp.json()[0]["success"] is False
    resp = client.post(f"{API}/composite/sobjects", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Lead"}, "LastName": "Gone", "Company": "C", "Email": "a@x.com"},
        {"attributes": {"type": "Lead"}, "LastName": "Bad", "Company": "C", "Email": "no"},
    ]})
    assert resp.json()[0]["success"] is False
    resp = client.delete(f"{API}/composite/sobjects",
                         params={"ids": f"{fresh},bad", "allOrNone": "true"})
    assert resp.json()[0]["success"] is False
    assert sb.record("Lead", fresh)["Email"] == "a@x.com"
    assert_same(sb, client)
    # ... and applied: update, create, delete.
    resp = client.patch(f"{API}/composite/sobjects", json={"records": [
        {"attributes": {"type": "Lead"}, "id": fresh, "Email": "b@x.com"}]})
    assert resp.json()[0]["success"] is True
    resp = client.post(f"{API}/composite/sobjects", json={"records": [
        {"attributes": {"type": "Lead"}, "LastName": "Coll", "Company": "C",
         "Email": "a@x.com"}]})
    assert resp.json()[0]["success"] is True
    resp = client.delete(f"{API}/composite/sobjects", params={"ids": lead(sb, LastName="Row")})
    assert resp.json()[0]["success"] is True
    assert_same(sb, client)

    # Conversion creates a Contact and changes the Lead.
    sb.convert_lead(lead(sb, LastName="Coll"))
    assert_same(sb, client, id_queries(sb))

    # Reset: back to the seed, indexes rebuilt from it.
    sb.reset()
    client.login()  # reset forgets tokens too
    assert assert_same(sb, client) > 0


def test_rows_by_external_id_list_matches_in_scan_order(
        sandbox: Sandbox, client: Client) -> None:
    sandbox.add_records("Lead", SEED_LEADS)
    url = f"{API}/sobjects/Lead/Didomi_Id__c"
    client.get(f"{url}/k2")  # builds the index
    twins = [str(r["Id"]) for r in sandbox.records("Lead") if r["Didomi_Id__c"] in {"k1", "K1"}]
    resp = client.get(f"{url}/K1")
    assert resp.status_code == 300
    assert resp.json() == [f"{API}/sobjects/Lead/{rid}" for rid in twins]
    # Changing the indexed value moves the record between keys.
    assert client.patch(f"{API}/sobjects/Lead/{twins[0]}",
                        json={"Didomi_Id__c": "other"}).status_code == 204
    resp = client.get(f"{url}/k1")
    assert resp.status_code == 200 and resp.json()["Id"] == twins[1]
    assert client.get(f"{url}/OTHER").json()["Id"] == twins[0]


def test_indexed_query_does_not_scan_the_org(
        sandbox: Sandbox, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.add_records("Lead", [{"LastName": f"L{i}", "Company": "C",
                                  "Email": f"p{i}@x.com"} for i in range(300)])

    def no_scan(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise AssertionError("a full scan")

    monkeypatch.setattr(sandbox.org, "all_records", no_scan)
    literals = ", ".join(f"'P{i}@X.COM'" for i in range(0, 600, 2))
    text = f"SELECT Id, Email FROM Lead WHERE Email IN ({literals})"
    resp = client.get(f"{API}/query", params={"q": text})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["totalSize"] == 150 and body["records"][0]["Email"] == "p0@x.com"
    job = client.run_job("Didomi_Id__c,LastName,Company\nnew,N,C\n", operation="upsert",
                         externalIdFieldName="Didomi_Id__c")
    assert job["numberRecordsFailed"] == 0
    monkeypatch.undo()
    assert [r["Email"] for r in body["records"]] == [f"p{i}@x.com" for i in range(0, 300, 2)]


def test_paging_over_index_hits_keeps_scan_order(sandbox: Sandbox, client: Client) -> None:
    # Insert order interleaves two keys; an update in place must not move a record.
    ids = sandbox.add_records("Lead", [{"LastName": f"L{i}", "Company": "C",
                                        "Email": "even@x.com" if i % 2 else "ODD@x.com"}
                                       for i in range(450)])
    text = "SELECT Id FROM Lead WHERE Email IN ('odd@x.com', 'EVEN@x.com')"
    assert by_rest(client, text, False) == by_scan(sandbox, text, False)
    job = client.run_job(f"Id,Email\n{ids[0]},even@x.com\n{ids[5]},odd@x.com\n")
    assert job["numberRecordsFailed"] == 0
    got = by_rest(client, text, False)
    assert got == by_scan(sandbox, text, False) and got[:2] == ids[:2] and len(got) == 450
