"""sObject rows, rows by external id and sObject Collections: exact bodies and statuses
(reference 5.2, 5.3, 8.1, 8.2), with plain ``requests``."""

from __future__ import annotations

from typing import Any

from salesforce_sandbox import Sandbox
from salesforce_sandbox import ids as sf_ids
from sandbox_helpers import API, Client

NOT_FOUND = [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
DELETED = [{"fields": [], "message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED"}]
ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was "
    "using AllOrNone header",
    "fields": [],
}


def lead_id(sandbox: Sandbox, email: str) -> str:
    [lead] = [r for r in sandbox.records("Lead") if r["Email"] == email]
    return str(lead["Id"])


def valid18(record_id: str) -> bool:
    return len(record_id) == 18 and sf_ids.to18(record_id[:15]) == record_id


# ---------------------------------------------------------------------- rows


def test_get_row_whole_record_and_fields(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    resp = client.get(f"{API}/sobjects/Lead/{jane}")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = resp.json()
    assert body["attributes"] == {"type": "Lead", "url": f"{API}/sobjects/Lead/{jane}"}
    assert body["Id"] == jane and body["Email"] == "jane.doe@example.com"
    assert body["IsDeleted"] is False and body["Didomi_Newsletter__c"] is False
    assert body["Name"] == "Jane Doe" and body["Status"] == "Open - Not Contacted"
    # ?fields= chooses (case-insensitively, canonical names back) and orders the fields.
    resp = client.get(f"{API}/sobjects/Lead/{jane[:15]}", params={"fields": "email,Id"})
    assert resp.json() == {
        "attributes": {"type": "Lead", "url": f"{API}/sobjects/Lead/{jane}"},
        "Email": "jane.doe@example.com",
        "Id": jane,
    }
    bad = client.get(f"{API}/sobjects/Lead/{jane}", params={"fields": "Id,Foo"})
    assert bad.status_code == 400
    [error] = bad.json()
    assert error["errorCode"] == "INVALID_FIELD"
    assert error["message"].endswith(
        "No such column 'Foo' on entity 'Lead'. If you are attempting to use a custom field, be "
        "sure to append the '__c' after the custom field name. Please reference your WSDL or the "
        "describe call for the appropriate names."
    )


def test_row_errors(sandbox: Sandbox, client: Client) -> None:
    unknown = sf_ids.to18("00Q5g00000ZZZZZ")
    resp = client.get(f"{API}/sobjects/Lead/{unknown}")
    assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
    resp = client.get(f"{API}/sobjects/Lead/not-an-id")
    assert resp.status_code == 404
    assert resp.json() == [{
        "message": "Provided external ID field does not exist or is not accessible: not-an-id",
        "errorCode": "NOT_FOUND",
    }]
    smith = sandbox.records("Contact")[0]["Id"]
    resp = client.patch(f"{API}/sobjects/Lead/{smith}", json={"LastName": "X"})
    assert resp.status_code == 400
    assert resp.json() == [{"fields": ["Id"],
                            "message": f"Lead ID: id value of incorrect type: {smith}",
                            "errorCode": "MALFORMED_ID"}]
    assert client.get(f"{API}/sobjects/Leed/{unknown}").json() == NOT_FOUND
    resp = client.post(f"{API}/sobjects/Lead/{unknown}", json={})
    assert resp.status_code == 405
    assert resp.json() == [{
        "message": "HTTP Method 'POST' not allowed. Allowed are GET,PATCH,DELETE",
        "errorCode": "METHOD_NOT_ALLOWED",
    }]


def test_create_row(sandbox: Sandbox, client: Client) -> None:
    resp = client.post(f"{API}/sobjects/Lead/", json={
        "attributes": {"type": "Lead"}, "LastName": "New", "Company": "Acme",
        "Email": "new@example.com", "HasOptedOutOfEmail": True, "Score__c": 12,
        "Didomi_Consent_Updated__c": "2024-01-05T10:00:00+02:00",
    })
    assert resp.status_code == 201
    body = resp.json()
    assert list(body) == ["id", "success", "errors"]
    assert body["success"] is True and body["errors"] == []
    assert body["id"].startswith("00Q") and valid18(body["id"])
    stored = sandbox.record("Lead", body["id"])
    assert stored["HasOptedOutOfEmail"] is True and stored["Score__c"] == 12.0
    assert stored["Didomi_Consent_Updated__c"] == "2024-01-05T08:00:00.000+0000"
    assert stored["Status"] == "Open - Not Contacted" and stored["IsDeleted"] is False
    # POST /sobjects/{Object}/Id creates too (API >= 37.0).
    resp = client.post(f"{API}/sobjects/Contact/Id", json={"LastName": "ViaId"})
    assert resp.status_code == 201
    assert sandbox.record("Contact", resp.json()["id"])["LastName"] == "ViaId"


def test_create_row_errors(client: Client) -> None:
    url = f"{API}/sobjects/Lead"
    resp = client.post(url, json={"Email": "x@example.com"})
    assert resp.status_code == 400
    assert resp.json() == [{"fields": ["LastName"],
                            "message": "Required fields are missing: [LastName, Company]",
                            "errorCode": "REQUIRED_FIELD_MISSING"}]
    resp = client.post(url, json={"LastName": "A", "Company": "B", "Foo__c": 1})
    assert resp.json() == [{"message": "No such column 'Foo__c' on sobject of type Lead",
                            "errorCode": "INVALID_FIELD"}]
    resp = client.post(url, json={"LastName": "A", "Company": "B", "IsDeleted": True})
    assert resp.status_code == 400
    [error] = resp.json()
    assert error["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert error["fields"] == ["IsDeleted"]
    assert error["message"].startswith("Unable to create/update fields: IsDeleted. ")
    resp = client.post(url, json={"Id": "00Q5g00000ZZZZZ", "LastName": "A", "Company": "B"})
    assert resp.json() == [{"fields": ["Id"], "message": "cannot specify Id in an insert call",
                            "errorCode": "INVALID_FIELD_FOR_INSERT_UPDATE"}]
    resp = client.post(url, json={"LastName": "A", "Company": "B", "Email": "nope"})
    assert resp.json() == [{"fields": ["Email"], "message": "Email: invalid email address: nope",
                            "errorCode": "INVALID_EMAIL_ADDRESS"}]
    resp = client.post(url, data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_update_and_delete_row(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    resp = client.patch(f"{API}/sobjects/Lead/{jane}",
                        json={"Didomi_Newsletter__c": True, "FirstName": None})
    assert (resp.status_code, resp.content) == (204, b"")
    stored = sandbox.record("Lead", jane)
    assert stored["Didomi_Newsletter__c"] is True and stored["FirstName"] is None
    assert stored["Name"] == "Doe"
    resp = client.patch(f"{API}/sobjects/Lead/{jane}", json={"LastName": None})
    assert resp.json() == [{"fields": ["LastName"],
                            "message": "Required fields are missing: [LastName]",
                            "errorCode": "REQUIRED_FIELD_MISSING"}]
    old = lead_id(sandbox, "old@example.com")
    resp = client.patch(f"{API}/sobjects/Lead/{old}", json={"DoNotCall": True})
    assert resp.status_code == 400
    assert resp.json() == [{"fields": [], "message": "cannot reference converted lead",
                            "errorCode": "CANNOT_UPDATE_CONVERTED_LEAD"}]
    sandbox.lock_records([jane], attempts=1)
    resp = client.patch(f"{API}/sobjects/Lead/{jane}", json={"DoNotCall": True})
    assert resp.json()[0]["errorCode"] == "UNABLE_TO_LOCK_ROW"
    assert client.patch(f"{API}/sobjects/Lead/{jane}", json={"DoNotCall": True}).status_code == 204

    resp = client.delete(f"{API}/sobjects/Lead/{jane}")
    assert (resp.status_code, resp.content) == (204, b"")
    for method in ("GET", "PATCH", "DELETE"):
        resp = client.request(method, f"{API}/sobjects/Lead/{jane}", json={"DoNotCall": False})
        assert (resp.status_code, resp.json()) == (404, DELETED), method
    assert [r["Id"] for r in sandbox.records("Lead") if r["Id"] == jane] == []
    assert sandbox.record("Lead", jane, include_deleted=True)["IsDeleted"] is True


def test_soft_delete_query_and_query_all(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    assert client.delete(f"{API}/sobjects/Lead/{jane}").status_code == 204
    soql = "SELECT Id, IsDeleted FROM Lead WHERE Email = 'jane.doe@example.com'"
    assert client.get(f"{API}/query", params={"q": soql}).json()["totalSize"] == 0
    body = client.get(f"{API}/queryAll", params={"q": soql}).json()
    assert body["totalSize"] == 1
    assert body["records"][0]["Id"] == jane and body["records"][0]["IsDeleted"] is True
    every = client.get(f"{API}/queryAll/", params={"q": "SELECT Id FROM Lead"}).json()
    assert every["totalSize"] == 3
    admin = client.http.get(sandbox.url + "/__sandbox/records/Lead?include_deleted=true").json()
    assert len(admin) == 3
    assert len(client.http.get(sandbox.url + "/__sandbox/records/Lead").json()) == 2


# ---------------------------------------------------------------------- rows by external id


def seed_external(sandbox: Sandbox) -> list[str]:
    return sandbox.add_records("Lead", [
        {"LastName": "Ext", "Company": "E", "Didomi_Id__c": "abc-1", "Email": "e1@example.com"},
        {"LastName": "Twin", "Company": "E", "Didomi_Id__c": "twin"},
        {"LastName": "Twin", "Company": "F", "Didomi_Id__c": "TWIN"},
    ])


def test_get_by_external_id(sandbox: Sandbox, client: Client) -> None:
    ext, twin1, twin2 = seed_external(sandbox)
    resp = client.get(f"{API}/sobjects/Lead/Didomi_Id__c/abc-1", params={"fields": "Id"})
    assert resp.status_code == 200
    assert resp.json() == {"attributes": {"type": "Lead", "url": f"{API}/sobjects/Lead/{ext}"},
                           "Id": ext}
    by_email = client.get(f"{API}/sobjects/Lead/Email/e1%40example.com").json()
    assert by_email["Id"] == ext  # Email is idLookup (the docs use Lead/Email)
    resp = client.get(f"{API}/sobjects/Lead/Didomi_Id__c/twin")
    assert resp.status_code == 300
    assert sorted(resp.json()) == sorted([f"{API}/sobjects/Lead/{twin1}",
                                          f"{API}/sobjects/Lead/{twin2}"])
    assert client.get(f"{API}/sobjects/Lead/Didomi_Id__c/none").json() == NOT_FOUND
    resp = client.get(f"{API}/sobjects/Lead/Company/Acme")  # neither External ID nor idLookup
    assert (resp.status_code, resp.json()) == (404, NOT_FOUND)


def test_upsert_by_external_id(sandbox: Sandbox, client: Client) -> None:
    ext, _, _ = seed_external(sandbox)
    url = f"{API}/sobjects/Lead/Didomi_Id__c"
    resp = client.patch(f"{url}/new-1", json={"LastName": "Up", "Company": "Serted"})
    assert resp.status_code == 201
    created = resp.json()
    assert list(created) == ["id", "success", "errors", "created"]
    assert created["created"] is True and created["success"] is True
    assert sandbox.record("Lead", created["id"])["Didomi_Id__c"] == "new-1"

    resp = client.patch(f"{url}/ABC-1", json={"DoNotCall": True})  # case-insensitive match
    assert resp.status_code == 200
    assert resp.json() == {"id": ext, "success": True, "errors": [], "created": False}
    assert sandbox.record("Lead", ext)["DoNotCall"] is True
    # Before API 46.0 an update by external id answers 204 without a body.
    old = client.patch("/services/data/v45.0/sobjects/Lead/Didomi_Id__c/abc-1",
                       json={"DoNotCall": False})
    assert (old.status_code, old.content) == (204, b"")
    old_create = client.patch("/services/data/v45.0/sobjects/Lead/Didomi_Id__c/new-2",
                              json={"LastName": "Old", "Company": "Version"})
    assert old_create.status_code == 201 and "created" not in old_create.json()

    resp = client.patch(f"{url}/twin", json={"DoNotCall": True})
    assert resp.status_code == 300 and len(resp.json()) == 2
    resp = client.patch(f"{url}/missing", params={"updateOnly": "true"}, json={"DoNotCall": True})
    assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
    resp = client.patch(f"{url}/missing", json={"DoNotCall": True})
    assert resp.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    resp = client.patch(f"{url}/abc-1", json={"Didomi_Id__c": "abc-2"})
    assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "INVALID_FIELD"
    resp = client.patch(f"{API}/sobjects/Lead/Company/x", json={"LastName": "Y"})
    assert (resp.status_code, resp.json()) == (404, NOT_FOUND)

    assert client.delete(f"{url}/abc-1").status_code == 204
    assert sandbox.record("Lead", ext, include_deleted=True)["IsDeleted"] is True
    # A deleted record no longer matches: the same key now creates a new one.
    again = client.patch(f"{url}/abc-1", json={"LastName": "Again", "Company": "C"})
    assert again.status_code == 201 and again.json()["id"] != ext


# ---------------------------------------------------------------------- collections


def test_collection_create_per_item_results(sandbox: Sandbox, client: Client) -> None:
    resp = client.post(f"{API}/composite/sobjects", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Lead"}, "LastName": "C1", "Company": "Acme",
         "Email": "c1@example.com"},
        {"attributes": {"type": "Lead"}, "LastName": "C2"},
        {"attributes": {"type": "Contact"}, "LastName": "C3"},
    ]})
    assert resp.status_code == 200
    first, second, third = resp.json()
    assert first["success"] is True and first["errors"] == [] and valid18(first["id"])
    assert second == {"success": False, "errors": [{
        "statusCode": "REQUIRED_FIELD_MISSING",
        "message": "Required fields are missing: [Company]", "fields": []}]}
    assert third["id"].startswith("003") and third["success"] is True
    assert sandbox.record("Lead", first["id"])["Email"] == "c1@example.com"


def test_collection_all_or_none_rolls_back(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    before = len(sandbox.records("Lead"))
    resp = client.post(f"{API}/composite/sobjects", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Lead"}, "LastName": "Ok", "Company": "Acme"},
        {"attributes": {"type": "Lead"}, "LastName": "Bad", "Company": "Acme", "Email": "no"},
    ]})
    assert resp.status_code == 200
    assert resp.json() == [
        {"success": False, "errors": [ROLLED_BACK]},
        {"success": False, "errors": [{"statusCode": "INVALID_EMAIL_ADDRESS",
                                       "message": "Email: invalid email address: no",
                                       "fields": ["Email"]}]},
    ]
    assert len(sandbox.records("Lead")) == before
    resp = client.patch(f"{API}/composite/sobjects", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Lead"}, "id": jane, "DoNotCall": True},
        {"attributes": {"type": "Lead"}, "DoNotCall": True},
    ]})
    assert resp.json() == [
        {"id": jane, "success": False, "errors": [ROLLED_BACK]},
        {"success": False, "errors": [{"statusCode": "MISSING_ARGUMENT",
                                       "message": "Id not specified in an update call",
                                       "fields": []}]},
    ]
    assert sandbox.record("Lead", jane)["DoNotCall"] is False
    resp = client.delete(f"{API}/composite/sobjects",
                         params={"ids": f"{jane},bad", "allOrNone": "true"})
    assert resp.json()[0] == {"id": jane, "success": False, "errors": [ROLLED_BACK]}
    assert resp.json()[1]["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert sandbox.record("Lead", jane)["IsDeleted"] is False


def test_collection_update_delete_and_retrieve(sandbox: Sandbox, client: Client) -> None:
    jane = lead_id(sandbox, "jane.doe@example.com")
    smith = sandbox.records("Contact")[0]["Id"]
    unknown = sf_ids.to18("00Q5g00000ZZZZZ")
    resp = client.patch(f"{API}/composite/sobjects", json={"records": [
        {"attributes": {"type": "Lead"}, "id": jane, "HasOptedOutOfEmail": True},
        {"attributes": {"type": "Contact"}, "Id": smith, "DoNotCall": True},
        {"attributes": {"type": "Lead"}, "id": smith, "DoNotCall": True},
        {"attributes": {"type": "Lead"}, "id": unknown, "DoNotCall": True},
    ]})
    ok_lead, ok_contact, wrong_type, missing = resp.json()
    assert ok_lead == {"id": jane, "success": True, "errors": []}
    assert ok_contact == {"id": smith, "success": True, "errors": []}
    assert wrong_type == {"success": False, "errors": [{
        "statusCode": "MALFORMED_ID", "message": f"Lead ID: id value of incorrect type: {smith}",
        "fields": ["Id"]}]}
    assert missing["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert sandbox.record("Lead", jane)["HasOptedOutOfEmail"] is True

    retrieved = client.get(f"{API}/composite/sobjects/Lead",
                           params={"ids": f"{jane},{unknown}", "fields": "Id,HasOptedOutOfEmail"})
    assert retrieved.status_code == 200
    assert retrieved.json() == [
        {"attributes": {"type": "Lead", "url": f"{API}/sobjects/Lead/{jane}"}, "Id": jane,
         "HasOptedOutOfEmail": True},
        None,
    ]
    posted = client.post(f"{API}/composite/sobjects/Lead",
                         json={"ids": [jane], "fields": ["Email"]})
    assert posted.json()[0]["Email"] == "jane.doe@example.com"

    resp = client.delete(f"{API}/composite/sobjects", params={"ids": f"{jane},{smith}"})
    assert resp.json() == [{"id": jane, "success": True, "errors": []},
                           {"id": smith, "success": True, "errors": []}]
    again = client.delete(f"{API}/composite/sobjects", params={"ids": jane}).json()
    assert again == [{"id": jane, "success": False, "errors": [{
        "statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}]}]
    resp = client.patch(f"{API}/composite/sobjects", json={"records": [
        {"attributes": {"type": "Lead"}, "id": jane, "DoNotCall": True}]})
    assert resp.json()[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert client.get(f"{API}/composite/sobjects/Lead",
                      params={"ids": jane, "fields": "Id"}).json() == [None]


def test_collection_upsert(sandbox: Sandbox, client: Client) -> None:
    ext, _, _ = seed_external(sandbox)
    resp = client.patch(f"{API}/composite/sobjects/Lead/Didomi_Id__c", json={"records": [
        {"attributes": {"type": "Lead"}, "Didomi_Id__c": "abc-1", "DoNotCall": True},
        {"attributes": {"type": "Lead"}, "Didomi_Id__c": "fresh", "LastName": "F",
         "Company": "G"},
        {"attributes": {"type": "Lead"}, "Didomi_Id__c": "twin", "DoNotCall": True},
        {"attributes": {"type": "Lead"}, "DoNotCall": True},
    ]})
    assert resp.status_code == 200
    updated, created, twin, keyless = resp.json()
    assert updated == {"id": ext, "success": True, "errors": [], "created": False}
    assert created["created"] is True and created["success"] is True
    assert sandbox.record("Lead", created["id"])["Didomi_Id__c"] == "fresh"
    assert twin["success"] is False
    assert twin["errors"][0]["statusCode"] == "DUPLICATE_EXTERNAL_ID"
    assert keyless["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    resp = client.patch(f"{API}/composite/sobjects/Lead/Email", json={"records": []})
    assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "INVALID_FIELD"
    old = client.patch("/services/data/v45.0/composite/sobjects/Lead/Didomi_Id__c",
                       json={"records": []})
    assert old.status_code == 404


def test_collection_request_errors(client: Client) -> None:
    too_many: list[dict[str, Any]] = [
        {"attributes": {"type": "Lead"}, "LastName": str(i), "Company": "C"} for i in range(201)
    ]
    resp = client.post(f"{API}/composite/sobjects", json={"records": too_many})
    assert resp.status_code == 400
    assert resp.json() == [{
        "message": "record limit reached. cannot submit more than 200 records into this call",
        "errorCode": "EXCEEDED_ID_LIMIT"}]
    resp = client.post(f"{API}/composite/sobjects", json={"records": [{"LastName": "X"}]})
    assert resp.status_code == 400
    assert resp.json() == [{"message": "Must send a concrete entity type.",
                            "errorCode": "INVALID_TYPE"}]
    resp = client.post(f"{API}/composite/sobjects", json={"records": [
        {"attributes": {"type": "Lead"}, "LastName": "A", "Company": "B"},
        {"attributes": {"type": "Lead"}, "Nope__c": 1}]})
    assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "INVALID_FIELD"
    assert client.delete(f"{API}/composite/sobjects").status_code == 400
    resp = client.get(f"{API}/composite/sobjects/Lead", params={"ids": "x"})
    assert resp.status_code == 400


# ---------------------------------------------------------------------- headers


def test_limit_info_on_every_data_response(sandbox: Sandbox, client: Client) -> None:
    answers = [
        client.get(f"{API}/sobjects/Lead/{sf_ids.to18('00Q5g00000ZZZZZ')}"),  # 404
        client.get(f"{API}/nothing"),  # 404 without a route
        client.get("/services/data/v12.0/limits"),  # 404 unknown version
        client.put(f"{API}/limits"),  # 405
        client.get(f"{API}/limits", headers={"Authorization": "Bearer nope"}),  # 401
    ]
    assert [a.status_code for a in answers] == [404, 404, 404, 405, 401]
    for resp in answers:
        assert resp.headers["Sforce-Limit-Info"].startswith("api-usage="), resp.url
    sandbox.set_api_limit(5, remaining=0)
    refused = client.get(f"{API}/limits")
    assert refused.status_code == 403
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=5/5"
