"""Users, writing users and field history tracking, over raw HTTP.

The org has an integration user (the one the client-credentials token acts as, named by the
token response's ``id``) and people; every write stamps its user; a change of a tracked Lead or
Contact field leaves a ``LeadHistory``/``ContactHistory`` row whichever path made it.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
import requests
from salesforce_sandbox import DEMO_SEED, Sandbox
from sandbox_helpers import API, Client, seed

HISTORY_SOQL = (
    "SELECT Id, LeadId, Field, OldValue, NewValue, CreatedDate, CreatedById FROM LeadHistory "
    "WHERE LeadId IN ({ids}) AND Field IN ('HasOptedOutOfEmail', 'DoNotCall', "
    "'Didomi_Newsletter__c') AND CreatedDate > {since} ORDER BY CreatedDate, Id"
)


def tracked_seed(**lead: Any) -> dict[str, Any]:
    """The shared seed with the newsletter and topics fields tracked too."""
    data = seed()
    fields = data["objects"]["Lead"]["custom_fields"]
    for spec in fields:
        if spec["name"] in {"Didomi_Newsletter__c", "Didomi_Topics__c"}:
            spec["trackHistory"] = True
    data["objects"]["Lead"].update(lead)
    return data


@pytest.fixture
def sb() -> Any:
    with Sandbox(tracked_seed()) as sandbox:
        yield sandbox


@pytest.fixture
def api(sb: Sandbox) -> Client:
    c = Client(sb)
    c.login()
    return c


def lead_id(sb: Sandbox, last_name: str = "Doe") -> str:
    return next(str(r["Id"]) for r in sb.records("Lead") if r["LastName"] == last_name)


def rest_query(api: Client, soql: str) -> requests.Response:
    return api.get(f"{API}/query", params={"q": soql})


def person(api: Client) -> str:
    users = requests.get(api.sb.url + "/__sandbox/users").json()
    return next(str(u["Id"]) for u in users["users"] if u["Id"] != users["integration_user_id"])


def as_person(api: Client, user_id: str, object_name: str, record_id: str,
              values: dict[str, Any], at: str | None = None) -> requests.Response:
    params = {"as_user": user_id} | ({"at": at} if at else {})
    return requests.post(f"{api.sb.url}/__sandbox/records/{object_name}/{record_id}",
                         params=params, json=values)


# ---------------------------------------------------------------------- users


def test_token_id_names_the_integration_user_and_userinfo_answers_for_it(
        sb: Sandbox) -> None:
    token = requests.post(sb.url + "/services/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": sb.client_id,
        "client_secret": sb.client_secret}).json()
    org_id, user_id = token["id"].split("/")[-2:]
    assert token["id"] == f"https://login.salesforce.com/id/{org_id}/{user_id}"
    assert user_id == sb.integration_user_id and user_id.startswith("005")
    info = requests.get(sb.url + "/services/oauth2/userinfo",
                        headers={"Authorization": f"Bearer {token['access_token']}"})
    assert info.status_code == 200
    assert info.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = info.json()
    assert body["user_id"] == user_id and body["organization_id"] == org_id
    assert body["sub"] == token["id"]
    assert body["preferred_username"] == "integration@sandbox.example"
    assert body["email"] == "integration@sandbox.example"
    assert body["urls"]["rest"] == sb.url + "/services/data/v{version}/"
    assert body["urls"]["sobjects"] == sb.url + "/services/data/v{version}/sobjects/"
    assert body["active"] is True and body["user_type"] == "STANDARD"
    assert "Sforce-Limit-Info" not in info.headers


def test_userinfo_refuses_a_bad_token(sb: Sandbox) -> None:
    resp = requests.get(sb.url + "/services/oauth2/userinfo",
                        headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 403
    assert resp.text == "Bad_OAuth_Token"


def test_default_users_and_user_rows_by_soql(api: Client) -> None:
    listed = requests.get(api.sb.url + "/__sandbox/users").json()
    names = sorted(u["Name"] for u in listed["users"])
    assert names == ["Avery Rep", "Blake Agent", "Integration User"]
    resp = rest_query(api, "SELECT Id, Name, Username, Email, IsActive FROM User "
                           "ORDER BY Name")
    assert resp.status_code == 200, resp.text
    rows = resp.json()["records"]
    assert [r["Name"] for r in rows] == ["Avery Rep", "Blake Agent", "Integration User"]
    assert all(r["Id"].startswith("005") and r["IsActive"] is True for r in rows)


def test_seeded_users_and_the_integration_flag() -> None:
    data = seed()
    data["users"] = [
        {"Id": "0055g00000PipeA", "Name": "Pipeline Bot", "Username": "bot@example.com",
         "Email": "bot@example.com", "integration": True},
        {"Id": "0055g00000Rep0A", "Name": "Ada Lovelace", "Username": "ada@example.com",
         "Email": "ada@example.com"},
    ]
    with Sandbox(data) as sb:
        token = requests.post(sb.url + "/services/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": sb.client_id,
            "client_secret": sb.client_secret}).json()
        assert token["id"].split("/")[-1] == sb.integration_user_id
        assert sb.integration_user_id.startswith("0055g00000PipeA")
        assert len(sb.integration_user_id) == 18
        assert [u["Name"] for u in sb.people()] == ["Ada Lovelace"]


@pytest.mark.parametrize("users, problem", [
    ([{"Name": "No Id", "Username": "x@example.com"}], "Id missing"),
    ([{"Id": "00Q5g00000Rep0A", "Name": "Wrong", "Username": "w@example.com"}],
     "not a User Id"),
    ({"Name": "not a list"}, 'seed "users" must be a list'),
    ([{"Id": "0055g00000Rep0A", "Name": "A", "Username": "a@x.com", "integration": True},
      {"Id": "0055g00000Rep0B", "Name": "B", "Username": "b@x.com", "integration": True}],
     "only one user"),
])
def test_bad_seed_users_are_refused(users: Any, problem: str) -> None:
    data = seed()
    data["users"] = users
    with pytest.raises(ValueError, match=problem):
        Sandbox(data)


def test_records_carry_the_writing_user(api: Client) -> None:
    created = api.post(f"{API}/sobjects/Lead", json={"LastName": "New", "Company": "C"})
    assert created.status_code == 201, created.text
    record_id = created.json()["id"]
    row = api.get(f"{API}/sobjects/Lead/{record_id}").json()
    integration = api.sb.integration_user_id
    assert row["CreatedById"] == integration and row["LastModifiedById"] == integration
    assert row["OwnerId"] == integration
    rep = person(api)
    changed = as_person(api, rep, "Lead", record_id, {"Title": "CEO"})
    assert changed.status_code == 200, changed.text
    row = api.get(f"{API}/sobjects/Lead/{record_id}").json()
    assert row["CreatedById"] == integration and row["LastModifiedById"] == rep
    assert row["LastModifiedDate"] == row["SystemModstamp"]
    described = {f["name"]: f for f in api.get(f"{API}/sobjects/Lead/describe").json()["fields"]}
    assert described["LastModifiedById"]["referenceTo"] == ["User"]
    assert described["CreatedById"]["updateable"] is False


def test_writing_as_an_unknown_user_is_refused(api: Client) -> None:
    resp = as_person(api, "0055g00000Nobdy", "Lead", lead_id(api.sb), {"DoNotCall": True})
    assert resp.status_code == 400
    assert "no user '0055g00000Nobdy'" in resp.json()["error"]
    missing = requests.post(f"{api.sb.url}/__sandbox/records/Lead/{lead_id(api.sb)}",
                            json={"DoNotCall": True})
    assert missing.status_code == 400 and "as_user is required" in missing.json()["error"]


# ---------------------------------------------------------------------- history rows


def history_rows(api: Client, record_id: str) -> list[dict[str, Any]]:
    resp = rest_query(api, "SELECT Id, LeadId, Field, DataType, OldValue, NewValue, "
                           "CreatedDate, CreatedById, IsDeleted FROM LeadHistory WHERE LeadId = "
                           f"'{record_id}' ORDER BY CreatedDate, Id")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["records"])


def test_a_person_changing_a_tracked_field_leaves_a_history_row(api: Client) -> None:
    record_id, rep = lead_id(api.sb), person(api)
    assert history_rows(api, record_id) == []  # seed records have no history
    resp = as_person(api, rep, "Lead", record_id,
                     {"HasOptedOutOfEmail": True, "Title": "untracked"})
    assert resp.status_code == 200, resp.text
    rows = history_rows(api, record_id)
    assert len(rows) == 1
    row = rows[0]
    assert row["attributes"]["type"] == "LeadHistory"
    assert row["Id"].startswith("017") and len(row["Id"]) == 18
    assert row["LeadId"] == record_id and row["Field"] == "HasOptedOutOfEmail"
    assert row["DataType"] == "Boolean"
    assert row["OldValue"] is False and row["NewValue"] is True
    assert row["CreatedById"] == rep and row["IsDeleted"] is False
    # Field history is kept to the second.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000\+0000", row["CreatedDate"])


def test_an_unchanged_value_or_an_untracked_field_leaves_no_row(api: Client) -> None:
    record_id, rep = lead_id(api.sb), person(api)
    as_person(api, rep, "Lead", record_id, {"HasOptedOutOfEmail": False, "Phone": "123"})
    assert history_rows(api, record_id) == []


def test_every_write_path_records_history_with_its_user(api: Client) -> None:
    doe, smith = lead_id(api.sb), lead_id(api.sb, "O'Brien")
    integration = api.sb.integration_user_id
    # Bulk API 2.0 ingest.
    info = api.run_job(f"Id,DoNotCall\n{doe},true\n")
    assert info["numberRecordsProcessed"] == 1 and info["numberRecordsFailed"] == 0
    # sObject row PATCH.
    assert api.patch(f"{API}/sobjects/Lead/{doe}",
                     json={"Didomi_Newsletter__c": True}).status_code == 204
    # sObject Collections update.
    coll = api.patch(f"{API}/composite/sobjects", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Lead"}, "Id": smith, "HasOptedOutOfEmail": True}]})
    assert coll.status_code == 200 and coll.json()[0]["success"] is True
    fields = [(r["Field"], r["NewValue"], r["CreatedById"]) for r in history_rows(api, doe)]
    assert fields == [("DoNotCall", True, integration),
                      ("Didomi_Newsletter__c", True, integration)]
    assert [(r["Field"], r["OldValue"]) for r in history_rows(api, smith)] == [
        ("HasOptedOutOfEmail", False)]


def test_inserts_leave_a_created_row(api: Client) -> None:
    info = api.run_job("LastName,Company,DoNotCall\nBulk,Co,true\n", operation="insert")
    assert info["numberRecordsProcessed"] == 1
    record_id = next(r["Id"] for r in api.sb.records("Lead") if r["LastName"] == "Bulk")
    rows = history_rows(api, record_id)
    assert [(r["Field"], r["OldValue"], r["NewValue"]) for r in rows] == [
        ("created", None, None)]


def test_multi_select_changes_are_recorded_without_values(api: Client) -> None:
    record_id, rep = lead_id(api.sb), person(api)
    resp = as_person(api, rep, "Lead", record_id, {"Didomi_Topics__c": "News;Offers"})
    assert resp.status_code == 200, resp.text
    rows = history_rows(api, record_id)
    assert [(r["Field"], r["DataType"], r["OldValue"], r["NewValue"]) for r in rows] == [
        ("Didomi_Topics__c", "MultiEnum", None, None)]


def test_all_or_none_rollback_takes_the_history_back(api: Client) -> None:
    record_id = lead_id(api.sb)
    resp = api.patch(f"{API}/composite/sobjects", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Lead"}, "Id": record_id, "DoNotCall": True},
        {"attributes": {"type": "Lead"}, "Id": "00Q5g00000ZZZZZZZZ"[:15], "DoNotCall": True},
    ]})
    assert resp.status_code == 200
    assert [r["success"] for r in resp.json()] == [False, False]
    assert history_rows(api, record_id) == []
    created = api.post(f"{API}/composite/sobjects", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Lead"}, "LastName": "Gone", "Company": "C"},
        {"attributes": {"type": "Lead"}, "Company": "no last name"},
    ]})
    assert [r["success"] for r in created.json()] == [False, False]
    everything = rest_query(api, "SELECT Id, Field FROM LeadHistory")
    assert everything.json()["totalSize"] == 0


def test_backdated_change_and_the_targets_history_query(api: Client) -> None:
    """The query a loader sends to find people's newer changes, over REST and Bulk."""
    doe, obrien = lead_id(api.sb), lead_id(api.sb, "O'Brien")
    rep = person(api)
    assert as_person(api, rep, "Lead", doe, {"HasOptedOutOfEmail": True},
                     at="2025-03-01T10:00:00.250Z").status_code == 200
    assert as_person(api, rep, "Lead", obrien, {"DoNotCall": True},
                     at="2025-03-01T09:00:00Z").status_code == 200
    assert as_person(api, rep, "Lead", doe, {"HasOptedOutOfEmail": False},
                     at="2024-01-01T00:00:00Z").status_code == 200  # before "since"
    soql = HISTORY_SOQL.format(ids=f"'{doe}', '{obrien}'", since="2025-01-01T00:00:00Z")
    resp = rest_query(api, soql)
    assert resp.status_code == 200, resp.text
    rows = resp.json()["records"]
    assert [(r["LeadId"], r["Field"], r["NewValue"], r["CreatedDate"]) for r in rows] == [
        (obrien, "DoNotCall", True, "2025-03-01T09:00:00.000+0000"),
        (doe, "HasOptedOutOfEmail", True, "2025-03-01T10:00:00.000+0000"),
    ]
    assert api.sb.record("Lead", doe)["LastModifiedDate"] == "2024-01-01T00:00:00.000+0000"
    job = api.post(f"{API}/jobs/query", json={"operation": "query", "query": soql})
    assert job.status_code == 200, job.text
    assert api.get(f"{API}/jobs/query/{job.json()['id']}").json()["state"] == "JobComplete"
    results = api.get(f"{API}/jobs/query/{job.json()['id']}/results")
    table = list(csv.DictReader(io.StringIO(results.text)))
    assert [(r["LeadId"], r["Field"], r["OldValue"], r["NewValue"], r["CreatedDate"],
             r["CreatedById"]) for r in table] == [
        (obrien, "DoNotCall", "false", "true", "2025-03-01T09:00:00.000Z", rep),
        (doe, "HasOptedOutOfEmail", "false", "true", "2025-03-01T10:00:00.000Z", rep),
    ]


def test_history_values_cannot_be_filtered(api: Client) -> None:
    resp = rest_query(api, "SELECT Id FROM LeadHistory WHERE NewValue = 'true'")
    assert resp.status_code == 400
    assert resp.json()[0]["errorCode"] == "INVALID_FIELD"
    assert "field 'NewValue' can not be filtered in a query call" in resp.json()[0]["message"]


def test_contact_history_and_describe(api: Client) -> None:
    contact = api.sb.records("Contact")[0]["Id"]
    rep = person(api)
    assert as_person(api, rep, "Contact", contact, {"HasOptedOutOfFax": True}).status_code == 200
    resp = rest_query(api, "SELECT ContactId, Field, OldValue, NewValue, CreatedById "
                           f"FROM ContactHistory WHERE ContactId = '{contact}'")
    assert [(r["ContactId"], r["Field"], r["NewValue"], r["CreatedById"])
            for r in resp.json()["records"]] == [(contact, "HasOptedOutOfFax", True, rep)]
    described = api.get(f"{API}/sobjects/LeadHistory/describe")
    assert described.status_code == 200
    body = described.json()
    assert body["name"] == "LeadHistory" and body["keyPrefix"] == "017"
    assert body["createable"] is False and body["updateable"] is False
    assert body["queryable"] is True
    fields = {f["name"]: f for f in body["fields"]}
    assert sorted(fields) == sorted(["Id", "IsDeleted", "LeadId", "CreatedById", "CreatedDate",
                                     "Field", "DataType", "OldValue", "NewValue"])
    assert fields["OldValue"]["type"] == "anyType" and fields["OldValue"]["filterable"] is False
    assert fields["LeadId"]["referenceTo"] == ["Lead"]
    assert {"HasOptedOutOfEmail", "DoNotCall", "HasOptedOutOfFax", "Didomi_Newsletter__c",
            "created"} <= {v["value"] for v in fields["Field"]["picklistValues"]}
    names = [s["name"] for s in api.get(f"{API}/sobjects").json()["sobjects"]]
    assert {"LeadHistory", "ContactHistory", "User"} <= set(names)
    # Read-only: no client creates history.
    assert api.post(f"{API}/sobjects/LeadHistory", json={"Field": "DoNotCall"}
                    ).status_code == 404
    job = api.post(f"{API}/jobs/ingest", json={"object": "LeadHistory", "operation": "insert",
                                               "contentType": "CSV"})
    assert job.status_code == 400


def test_tracked_fields_are_configurable() -> None:
    with Sandbox(tracked_seed(history_tracked_fields=["Phone"])) as sb:
        api = Client(sb)
        api.login()
        record_id = lead_id(sb)
        rep = person(api)
        as_person(api, rep, "Lead", record_id, {"Phone": "555", "HasOptedOutOfEmail": True})
        assert [(r["Field"], r["OldValue"], r["NewValue"]) for r in history_rows(api, record_id)
                ] == [("Phone", None, "555")]
        assert [r["Field"] for r in sb.history("Lead", record_id)] == ["Phone"]


def test_an_unknown_tracked_field_is_refused() -> None:
    with pytest.raises(ValueError, match="no field 'Nope__c' on Lead"):
        Sandbox(tracked_seed(history_tracked_fields=["Nope__c"]))


def test_history_turned_off_is_not_a_supported_object() -> None:
    with Sandbox(tracked_seed(field_history=False)) as sb:
        api = Client(sb)
        api.login()
        resp = rest_query(api, HISTORY_SOQL.format(ids=f"'{lead_id(sb)}'",
                                                   since="2025-01-01T00:00:00Z"))
        assert resp.status_code == 400
        error = resp.json()[0]
        assert error["errorCode"] == "INVALID_TYPE"
        assert error["message"].startswith("sObject type 'LeadHistory' is not supported.")
        job = api.post(f"{API}/jobs/query", json={"operation": "query", "query": HISTORY_SOQL
                                                  .format(ids="'x'", since="2025-01-01T00:00:00Z")})
        assert job.status_code == 400
        assert job.json()[0]["errorCode"] == "INVALID_TYPE"
        assert api.get(f"{API}/sobjects/LeadHistory/describe").status_code == 404
        # Contacts keep theirs: history is turned off per object.
        assert rest_query(api, "SELECT Id FROM ContactHistory").status_code == 200
        # Writes go on without history.
        rep = person(api)
        assert as_person(api, rep, "Lead", lead_id(sb), {"DoNotCall": True}).status_code == 200


def test_python_api_writes_as_a_person(sb: Sandbox) -> None:
    rep = sb.people()[0]["Id"]
    record_id = lead_id(sb)
    record = sb.update_as(rep, "Lead", record_id, {"DoNotCall": True},
                          at="2025-05-05T05:05:05Z")
    assert record["LastModifiedById"] == rep and record["DoNotCall"] is True
    [row] = sb.history("Lead", record_id)
    assert (row["Field"], row["CreatedById"], row["CreatedDate"]) == (
        "DoNotCall", rep, "2025-05-05T05:05:05.000+0000")
    new_id = sb.create_as(rep, "Contact", {"LastName": "Made", "DoNotCall": True})
    assert sb.record("Contact", new_id)["CreatedById"] == rep
    with pytest.raises(ValueError, match="INVALID_FIELD"):
        sb.update_as(rep, "Lead", record_id, {"NoSuchField": 1})
    with pytest.raises(ValueError, match="not a datetime"):
        sb.update_as(rep, "Lead", record_id, {"DoNotCall": False}, at="yesterday")


def test_admin_create_as_a_person(api: Client) -> None:
    rep = person(api)
    resp = requests.post(f"{api.sb.url}/__sandbox/records/Lead", params={"as_user": rep},
                         json={"LastName": "Walk-in", "Company": "Shop"})
    assert resp.status_code == 201, resp.text
    row = api.get(f"{API}/sobjects/Lead/{resp.json()['id']}").json()
    assert row["CreatedById"] == rep and row["OwnerId"] == rep


def test_the_demo_org_tracks_its_consent_fields() -> None:
    with Sandbox(DEMO_SEED) as sb:
        api = Client(sb)
        api.login()
        for history, expected in (
            ("LeadHistory", {"HasOptedOutOfEmail", "DoNotCall", "HasOptedOutOfFax",
                             "Didomi_Newsletter__c", "Didomi_SMS_Optin__c", "Didomi_Topics__c"}),
            ("ContactHistory", {"HasOptedOutOfEmail", "DoNotCall", "HasOptedOutOfFax",
                                "Didomi_Newsletter__c"}),
        ):
            described = api.get(f"{API}/sobjects/{history}/describe").json()
            field = next(f for f in described["fields"] if f["name"] == "Field")
            assert {v["value"] for v in field["picklistValues"]} == expected | {"created"}
