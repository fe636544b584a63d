"""A local HTTP emulator of Salesforce for tests and demos.

It follows Salesforce's documented wire contract (OAuth client credentials, REST and SOQL,
describe, Bulk API 2.0 ingest and query, limits), with Salesforce's own status codes, bodies and
error strings; what the documentation leaves open is marked ``[I]`` (inferred) in the code. The
model (:mod:`.org`, :mod:`.schema`, :mod:`.soql`,
:mod:`.ingest`, :mod:`.query_jobs`, :mod:`.sobjects`) is kept apart from the HTTP layer
(:mod:`.http`).

Beyond the target's calls it serves everyday clients' (simple-salesforce and the Salesforce CLI
run on it unchanged): userinfo, the User and Organization rows, a version's resources, query
columns (``/query?columns=true``), the Tooling API query on ``SandboxProcess`` (no rows), and
(:mod:`.sobjects`) sObject rows
(``GET/PATCH/DELETE /sobjects/{Object}/{Id}``, ``POST /sobjects/{Object}``), rows by external
id (GET, upsert by PATCH, DELETE), ``/sobjects/{Object}/deleted|updated``, and sObject
Collections (create, update, upsert, retrieve, delete; at most 200; ``allOrNone``). Deletes are
soft: a deleted record leaves ``query`` but ``queryAll`` (REST and Bulk) still returns it with
``IsDeleted`` true, and writes to it fail ``ENTITY_IS_DELETED``. Ids are 18 characters with the
case-safe checksum and never reused: no generated Id takes one the org holds (seeded, created,
deleted). A seed with a malformed, mistyped or repeated Id is refused (ValueError).

Python API::

    with Sandbox(seed, token_ttl=7200.0, job_polls_to_complete=0, latency=0.0,
                 rows_per_second=None) as sb:
        sb.url, sb.client_id, sb.client_secret
        sb.records("Lead", include_deleted=False); sb.record("Lead", id, include_deleted=False)
        sb.add_records("Lead", [...])   # seed-like: no history, stamped by the integration user
        sb.integration_user_id; sb.users(); sb.people()
        sb.update_as(user_id, "Lead", id, {"DoNotCall": True}, at=None)  # a person's change
        sb.create_as(user_id, "Contact", {...}, at=None)                 # -> the new Id
        sb.history("Lead", id=None)     # LeadHistory rows (sb.records("LeadHistory") too)
        sb.convert_lead(id)
        sb.requests            # list[LoggedRequest] (Authorization and client secrets redacted)
        sb.api_calls()         # {"kind": count}
        sb.expire_tokens(); sb.set_token_ttl(seconds)
        sb.fail_next(503, body, count=1, method=None, path=None, content_type=...,
                     after=False)
        sb.lock_records(ids, attempts=None); sb.unlock_records(ids=None)
        sb.fail_next_job(error_message); sb.leave_unprocessed(count)
        sb.set_api_limit(max_requests, remaining=None); sb.reset()
        sb.ingest_job(job_id); sb.ingest_jobs()
        sb.delay = fn          # how an answer waits out `latency` (default time.sleep)
        sb.ingest.clock = fn   # the clock of the ingest rate (default time.monotonic)

A distant org: ``latency`` seconds are added to every answer (waited outside the org lock, so
concurrent calls overlap), and with ``rows_per_second`` closed ingest jobs are processed one
after another at that rate: ``InProgress`` with ``numberRecordsProcessed`` growing until the
job's rows are done (the CLI's ``--latency`` and ``--rows-per-second``).

Users: an integration user (the one every token acts as; the token response's ``id`` is
``https://login.salesforce.com/id/{orgId}/{userId}`` and ``GET /services/oauth2/userinfo``
describes it) and people, from the seed's ``"users": [{"Id": "005...", "Name", "Username",
"Email", "integration": false}]`` (two people by default). Writes stamp ``CreatedById`` and
``LastModifiedById`` with the writing user.

Field history: each change of a tracked field of a Lead or Contact, by any write path, leaves a
``LeadHistory``/``ContactHistory`` row (``CreatedDate`` to the second; multi-select and long
text values not kept; a ``created`` row per insert). Tracked: ``HasOptedOutOfEmail``,
``DoNotCall``, ``HasOptedOutOfFax`` and custom fields with ``"trackHistory": true``, or the seed
object's ``"history_tracked_fields": [...]``; ``"field_history": false`` removes the history
object (queries fail ``INVALID_TYPE``).

Request kinds counted by :meth:`Sandbox.api_calls` (every request received, faults included):
``token``, ``userinfo``, ``versions``, ``resources`` (``GET /services/data/vXX.X``),
``limits``, ``describe_global``, ``describe``, ``query`` (``/query`` and ``/queryAll``,
``columns=true`` too), ``tooling_query``, ``query_more``, ``ingest_create``, ``ingest_upload``,
``ingest_close``, ``ingest_abort``, ``ingest_patch`` (a PATCH with another state),
``ingest_info``, ``ingest_results``, ``ingest_delete``, ``ingest_list``, ``query_job_create``,
``query_job_info``, ``query_job_results``, ``query_job_abort``, ``query_job_delete``,
``query_job_list``, ``sobject_info``, ``sobject_get``, ``sobject_create``, ``sobject_update``,
``sobject_delete``, ``sobject_changed``, ``sobject_get_by_external_id``, ``sobject_upsert``,
``sobject_delete_by_external_id``, ``collection_create``, ``collection_update``,
``collection_upsert``, ``collection_delete``, ``collection_retrieve``, ``unknown``.

``fail_next`` answers the next ``count`` requests matching ``method`` and the ``path`` regex with
``status``/``body`` instead of handling them; ``status`` 0 (or None) closes the connection
without any response. With ``after=True`` the request is handled first and only its response is
lost: the PUT's data lands, the job is created or closed, and then the client gets the injected
status/body, or (status 0/None) the connection drops after the body was read (reference 10.3).

Admin HTTP API (no token, not logged, not counted), under ``/__sandbox/``:
``GET|POST records/{Object}`` (GET ``?include_deleted=true`` adds the Recycle Bin),
``POST records/{Object}?as_user={userId}[&at=...]`` (create as a person: ``{"id"}``),
``POST|PATCH records/{Object}/{Id}?as_user={userId}[&at=...]`` (change as a person: the record),
``GET users`` (``{"integration_user_id", "users"}``),
``POST leads/{id}/convert``, ``GET requests``, ``GET calls``,
``GET jobs``, ``GET health``, ``POST expire-tokens``, ``POST reset``, ``POST faults`` with one
object or a list of objects ``{"type": "fail_next", "status", "body", "count", "method", "path",
"content_type", "after"}`` (``"status": 0`` or ``null`` drops the connection),
``{"type": "lock_records", "ids", "attempts"}``,
``{"type": "unlock_records", "ids"}``, ``{"type": "fail_next_job", "error_message"}``,
``{"type": "leave_unprocessed", "count"}``, ``{"type": "set_api_limit", "max_requests",
"remaining"}``, ``{"type": "expire_tokens"}``, ``{"type": "set_token_ttl", "seconds"}``.
"""

from pathlib import Path

from .org import LoggedRequest
from .server import Sandbox

# A small org (credentials, consent fields, a few Leads and Contacts) for demos and trials.
DEMO_SEED = Path(__file__).with_name("demo_seed.json")

__all__ = ["DEMO_SEED", "LoggedRequest", "Sandbox"]
