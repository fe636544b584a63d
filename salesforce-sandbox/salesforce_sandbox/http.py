"""The HTTP layer: routing, status codes, headers and body encodings only.

Every rule lives in the model (:mod:`.org`, :mod:`.ingest`, :mod:`.query_jobs`, :mod:`.soql`);
this module maps Salesforce's URLs onto it and renders its answers and errors the way
Salesforce does (reference sections 1, 2.2, 8).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import json
import random
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

from . import query_jobs
from .errors import NOT_FOUND_MESSAGE, ApiError, OAuthError
from .ingest import IngestJobs
from .org import HttpFault, LoggedRequest, Org
from .query_jobs import QueryJobs
from .sobjects import MAX_COLLECTION, Answer, SObjects

JSON_TYPE = "application/json;charset=UTF-8"
CSV_TYPE = "text/csv; charset=UTF-8"
MAX_URI_BYTES = 16384
MIN_VERSION = 31
MAX_VERSION = 67
_SEASONS = ("Spring", "Summer", "Winter")
_VERSION_PREFIX = r"^/services/data/v(?P<version>\d+\.\d+)"


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, *, pretty: bool = False) -> Response:
    if pretty:
        text = json.dumps(payload, indent=2, separators=(",", " : "), ensure_ascii=False)
    else:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return Response(status, text.encode("utf-8"), {"Content-Type": JSON_TYPE})


def error_response(err: ApiError) -> Response:
    if err.style == "bulk":
        item: dict[str, Any] = {"errorCode": err.error_code, "message": err.message}
        text = "[ " + json.dumps(item, indent=2, separators=(",", " : "),
                                 ensure_ascii=False) + " ]"
        return Response(err.status, text.encode("utf-8"), {"Content-Type": JSON_TYPE})
    rest: dict[str, Any] = {}
    if err.fields is not None:
        rest["fields"] = err.fields
    rest.update({"message": err.message, "errorCode": err.error_code})
    resp = json_response(err.status, [rest])
    if err.status == 401:
        resp.headers["WWW-Authenticate"] = "Token"
    return resp


def unknown_exception() -> Response:
    """Salesforce's answer to an internal error (reference 8.2): 500 UNKNOWN_EXCEPTION."""
    error_id = (f"{random.randint(100_000_000, 2_147_483_647)}-{random.randint(1_000, 999_999)} "
                f"({random.randint(-2_147_483_648, 2_147_483_647)})")
    return error_response(ApiError(
        500, "UNKNOWN_EXCEPTION",
        f"An unexpected error occurred. Please include this ErrorId if you contact support: "
        f"{error_id}"))


def not_found_rest() -> ApiError:
    return ApiError(404, "NOT_FOUND", NOT_FOUND_MESSAGE)


def release_label(version: int) -> str:
    n = version - 60  # v60.0 is Spring '24
    season = _SEASONS[n % 3]
    year = 24 + n // 3 + (1 if season == "Winter" else 0)
    return f"{season} '{year:02d}"


def versions() -> list[dict[str, str]]:
    return [{"label": release_label(v), "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(MIN_VERSION, MAX_VERSION + 1)]


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def arg(self, name: str) -> str | None:
        values = parse_qs(self.query, keep_blank_values=True).get(name)
        return values[0] if values else None


Handler = Callable[["App", Request], Response]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    kind: str
    handler: Handler
    data: bool = True  # a data API call: needs a token, counts against the limit


class App:
    """Routes requests to the model; owns no state of its own."""

    def __init__(self, org: Org, ingest: IngestJobs, queries: QueryJobs) -> None:
        self.org = org
        self.ingest = ingest
        self.queries = queries
        self.sobjects = SObjects(org)

    # ------------------------------------------------------------------ handlers

    def token(self, req: Request) -> Response:
        ctype = (req.header("Content-Type") or "").lower()
        form: dict[str, str] = {}
        if ctype.startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        basic: tuple[str, str] | None = None
        auth = req.header("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            cid, _, secret = decoded.partition(":")
            basic = (unquote(cid), unquote(secret))
        try:
            payload = self.org.issue_token(form, basic)
        except OAuthError as err:
            resp = json_response(err.status, {"error": err.error,
                                              "error_description": err.description})
        else:
            resp = json_response(200, payload)
        resp.headers["Cache-Control"] = "no-cache,must-revalidate,max-age=0,no-store,private"
        return resp

    def versions(self, req: Request) -> Response:
        return json_response(200, versions())

    def userinfo(self, req: Request) -> Response:
        """OpenID Connect UserInfo of the token's user; a bad token is 403 Bad_OAuth_Token."""
        try:
            self.org.check_token(req.header("Authorization"))
        except ApiError:
            return Response(403, b"Bad_OAuth_Token", {"Content-Type": "text/plain"})
        return json_response(200, self.org.userinfo(self.org.user_id))

    def resources(self, req: Request) -> Response:
        """``GET /services/data/vXX.X``: the version's resources by name (those served here)."""
        base = f"/services/data/v{req.params['version']}"
        body = {name: f"{base}/{name}" for name in
                ("composite", "jobs", "limits", "query", "queryAll", "sobjects")}
        body["identity"] = (f"https://login.salesforce.com/id/{self.org.org_id}/"
                            f"{self.org.user_id}")
        return json_response(200, dict(sorted(body.items())))

    def limits(self, req: Request) -> Response:
        return json_response(200, self.org.limits())

    def describe_global(self, req: Request) -> Response:
        version = req.params["version"]
        return json_response(200, {
            "encoding": "UTF-8",
            "maxBatchSize": 200,
            "sobjects": [s.summary(version) for s in self.org.all_schemas.values()],
        })

    def describe(self, req: Request) -> Response:
        schema = self.org.readable_schema(req.params["object"])
        if schema is None:
            raise not_found_rest()
        return json_response(200, schema.describe(req.params["version"]))

    def _batch_size(self, req: Request) -> int:
        options = req.header("Sforce-Query-Options") or ""
        m = re.search(r"batchSize\s*=\s*(\d+)", options)
        size = int(m.group(1)) if m else query_jobs.REST_DEFAULT_BATCH
        return max(200, min(2000, size))

    def query(self, req: Request) -> Response:
        text = req.arg("q")
        if text is None or not text.strip():
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        if req.arg("columns") == "true":
            return json_response(200, query_jobs.rest_query_columns(self.org, text))
        body = query_jobs.rest_query(self.org, req.params["version"], text,
                                     self._batch_size(req),
                                     include_deleted=req.params.get("all") is not None)
        return json_response(200, body)

    def tooling_query(self, req: Request) -> Response:
        text = req.arg("q")
        if text is None or not text.strip():
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        return json_response(200, query_jobs.tooling_query(self.org, text))

    def query_more(self, req: Request) -> Response:
        body = query_jobs.rest_query_more(self.org, req.params["version"],
                                          req.params["locator"])
        return json_response(200, body)

    def ingest_create(self, req: Request) -> Response:
        job = self.ingest.create(req.params["version"], req.body,
                                 req.header("Content-Type") or "")
        return json_response(200, job.create_json(self.org.user_id), pretty=True)

    def ingest_list(self, req: Request) -> Response:
        locator = req.arg("queryLocator")
        jobs, total = self.ingest.list_page(locator)
        start = int(locator) if locator and locator.isdigit() else 0
        end = start + len(jobs)
        body: dict[str, Any] = {"done": end >= total,
                                "records": [j.list_json(self.org.user_id) for j in jobs]}
        body["nextRecordsUrl"] = (
            None if end >= total else
            f"/services/data/v{req.params['version']}/jobs/ingest?"
            + urlencode({"queryLocator": str(end)})
        )
        return json_response(200, body, pretty=True)

    def ingest_upload(self, req: Request) -> Response:
        self.ingest.upload(req.params["job"], req.body, req.header("Content-Type") or "")
        return Response(201)

    def ingest_patch(self, req: Request) -> Response:
        job = self.ingest.set_state(req.params["job"], req.body)
        return json_response(200, job.patch_json(self.org.user_id), pretty=True)

    def ingest_info(self, req: Request) -> Response:
        job = self.ingest.poll(req.params["job"])
        return json_response(200, job.info_json(self.org.user_id), pretty=True)

    def ingest_delete(self, req: Request) -> Response:
        self.ingest.delete(req.params["job"])
        return Response(204)

    def ingest_results(self, req: Request) -> Response:
        text = self.ingest.results(req.params["job"], req.params["which"])
        return csv_response(req, text)

    def query_job_create(self, req: Request) -> Response:
        job = self.queries.create(req.params["version"], req.body)
        return json_response(200, job.create_json(self.org.user_id), pretty=True)

    def query_job_list(self, req: Request) -> Response:
        jobs = list(self.queries.jobs.values())
        return json_response(200, {"done": True,
                                   "records": [j.create_json(self.org.user_id) for j in jobs],
                                   "nextRecordsUrl": None}, pretty=True)

    def query_job_info(self, req: Request) -> Response:
        job = self.queries.poll(req.params["job"])
        return json_response(200, job.info_json(self.org.user_id), pretty=True)

    def query_job_abort(self, req: Request) -> Response:
        job = self.queries.abort(req.params["job"], req.body)
        return json_response(200, job.create_json(self.org.user_id), pretty=True)

    def query_job_delete(self, req: Request) -> Response:
        self.queries.delete(req.params["job"])
        return Response(204)

    def query_job_results(self, req: Request) -> Response:
        max_records = req.arg("maxRecords")
        text, locator, count = self.queries.results(
            req.params["job"], req.arg("locator"),
            int(max_records) if max_records and max_records.isdigit() else None,
            req.params["version"])
        resp = csv_response(req, text)
        resp.headers["Sforce-Locator"] = locator
        resp.headers["Sforce-NumberOfRecords"] = str(count)
        return resp

    # sObject rows and collections: the rules live in :mod:`.sobjects`.

    def sobject_info(self, req: Request) -> Response:
        return answer(self.sobjects.info(req.params["object"], req.params["version"]))

    def sobject_create(self, req: Request) -> Response:
        return answer(self.sobjects.create_row(req.params["object"], req.body,
                                               req.params["version"],
                                               via_id="id_post" in req.params))

    def sobject_changed(self, req: Request) -> Response:
        return answer(self.sobjects.changed(req.params["object"], req.params["which"],
                                            req.arg("start"), req.arg("end")))

    def sobject_get(self, req: Request) -> Response:
        return answer(self.sobjects.get_row(req.params["object"], req.params["row"],
                                            req.params["version"], req.arg("fields")))

    def sobject_update(self, req: Request) -> Response:
        return answer(self.sobjects.update_row(req.params["object"], req.params["row"],
                                               req.body))

    def sobject_delete(self, req: Request) -> Response:
        return answer(self.sobjects.delete_row(req.params["object"], req.params["row"]))

    def sobject_get_by_external_id(self, req: Request) -> Response:
        return answer(self.sobjects.get_by_external(
            req.params["object"], req.params["field"], req.params["value"],
            req.params["version"], req.arg("fields")))

    def sobject_upsert(self, req: Request) -> Response:
        return answer(self.sobjects.upsert_by_external(
            req.params["object"], req.params["field"], req.params["value"], req.body,
            req.params["version"], (req.arg("updateOnly") or "").lower() == "true"))

    def sobject_delete_by_external_id(self, req: Request) -> Response:
        return answer(self.sobjects.delete_by_external(
            req.params["object"], req.params["field"], req.params["value"],
            req.params["version"]))

    def collection_create(self, req: Request) -> Response:
        return answer(self.sobjects.collection_create(req.params["version"], req.body))

    def collection_update(self, req: Request) -> Response:
        return answer(self.sobjects.collection_update(req.params["version"], req.body))

    def collection_upsert(self, req: Request) -> Response:
        return answer(self.sobjects.collection_upsert(req.params["object"],
                                                      req.params["field"],
                                                      req.params["version"], req.body))

    def collection_delete(self, req: Request) -> Response:
        return answer(self.sobjects.collection_delete(req.params["version"], req.arg("ids"),
                                                      req.arg("allOrNone")))

    def collection_retrieve(self, req: Request) -> Response:
        if req.method == "POST":
            return answer(self.sobjects.collection_retrieve_post(
                req.params["object"], req.params["version"], req.body))
        raw_ids, raw_fields = req.arg("ids"), req.arg("fields")
        return answer(self.sobjects.collection_retrieve(
            req.params["object"], req.params["version"],
            [i for i in raw_ids.split(",") if i.strip()] if raw_ids else None,
            raw_fields.split(",") if raw_fields else None, MAX_COLLECTION))


def answer(result: Answer) -> Response:
    if result.body is None:
        return Response(result.status)
    return json_response(result.status, result.body)


def csv_response(req: Request, text: str) -> Response:
    body = text.encode("utf-8")
    headers = {"Content-Type": CSV_TYPE}
    if "gzip" in (req.header("Accept-Encoding") or "").lower():
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return Response(200, body, headers)


def _r(method: str, pattern: str, kind: str, handler: Handler, *, data: bool = True) -> Route:
    full = pattern if pattern.startswith("^") else _VERSION_PREFIX + pattern
    return Route(method, re.compile(full + r"/?$"), kind, handler, data)


_JOB = r"(?P<job>[A-Za-z0-9]{15,18})"
# /sobjects/{Object}/{Id} (not .../describe) and /sobjects/{Object}/{Field}/{value}
_ROW = r"/sobjects/(?P<object>\w+)/(?P<row>(?!describe/?$)[^/]+)"
_BY_FIELD = r"/sobjects/(?P<object>\w+)/(?P<field>(?!describe/)\w+)/(?P<value>[^/]+)"
ROUTES: list[Route] = [
    _r("POST", r"^/services/oauth2/token", "token", App.token, data=False),
    _r("GET", r"^/services/data", "versions", App.versions, data=False),
    _r("GET", r"^/services/oauth2/userinfo", "userinfo", App.userinfo, data=False),
    _r("GET", r"", "resources", App.resources),
    _r("GET", r"/limits", "limits", App.limits),
    _r("GET", r"/sobjects", "describe_global", App.describe_global),
    _r("GET", r"/sobjects/(?P<object>\w+)", "sobject_info", App.sobject_info),
    _r("POST", r"/sobjects/(?P<object>\w+)", "sobject_create", App.sobject_create),
    _r("GET", r"/sobjects/(?P<object>\w+)/describe", "describe", App.describe),
    _r("POST", r"/sobjects/(?P<object>\w+)/(?P<id_post>Id)", "sobject_create",
       App.sobject_create),
    _r("GET", r"/sobjects/(?P<object>\w+)/(?P<which>deleted|updated)", "sobject_changed",
       App.sobject_changed),
    _r("GET", _ROW, "sobject_get", App.sobject_get),
    _r("PATCH", _ROW, "sobject_update", App.sobject_update),
    _r("DELETE", _ROW, "sobject_delete", App.sobject_delete),
    _r("GET", _BY_FIELD, "sobject_get_by_external_id", App.sobject_get_by_external_id),
    _r("PATCH", _BY_FIELD, "sobject_upsert", App.sobject_upsert),
    _r("DELETE", _BY_FIELD, "sobject_delete_by_external_id",
       App.sobject_delete_by_external_id),
    _r("POST", r"/composite/sobjects", "collection_create", App.collection_create),
    _r("PATCH", r"/composite/sobjects", "collection_update", App.collection_update),
    _r("DELETE", r"/composite/sobjects", "collection_delete", App.collection_delete),
    _r("GET", r"/composite/sobjects/(?P<object>\w+)", "collection_retrieve",
       App.collection_retrieve),
    _r("POST", r"/composite/sobjects/(?P<object>\w+)", "collection_retrieve",
       App.collection_retrieve),
    _r("PATCH", r"/composite/sobjects/(?P<object>\w+)/(?P<field>\w+)", "collection_upsert",
       App.collection_upsert),
    _r("GET", r"/query", "query", App.query),
    _r("GET", r"/(?P<all>queryAll)", "query", App.query),
    _r("GET", r"/tooling/query", "tooling_query", App.tooling_query),
    _r("GET", r"/query/(?P<locator>[A-Za-z0-9]+-\d+)", "query_more", App.query_more),
    _r("GET", r"/queryAll/(?P<locator>[A-Za-z0-9]+-\d+)", "query_more", App.query_more),
    _r("POST", r"/jobs/ingest", "ingest_create", App.ingest_create),
    _r("GET", r"/jobs/ingest", "ingest_list", App.ingest_list),
    _r("PUT", r"/jobs/ingest/" + _JOB + r"/batches", "ingest_upload", App.ingest_upload),
    _r("PATCH", r"/jobs/ingest/" + _JOB, "ingest_patch", App.ingest_patch),
    _r("GET", r"/jobs/ingest/" + _JOB, "ingest_info", App.ingest_info),
    _r("DELETE", r"/jobs/ingest/" + _JOB, "ingest_delete", App.ingest_delete),
    _r("GET", r"/jobs/ingest/" + _JOB
       + r"/(?P<which>successfulResults|failedResults|unprocessedrecords)",
       "ingest_results", App.ingest_results),
    _r("POST", r"/jobs/query", "query_job_create", App.query_job_create),
    _r("GET", r"/jobs/query", "query_job_list", App.query_job_list),
    _r("GET", r"/jobs/query/" + _JOB, "query_job_info", App.query_job_info),
    _r("PATCH", r"/jobs/query/" + _JOB, "query_job_abort", App.query_job_abort),
    _r("DELETE", r"/jobs/query/" + _JOB, "query_job_delete", App.query_job_delete),
    _r("GET", r"/jobs/query/" + _JOB + r"/results", "query_job_results",
       App.query_job_results),
]


def classify(method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
    """The route for (method, path), its parameters, and the methods the path allows."""
    allowed: list[str] = []
    for route in ROUTES:
        m = route.pattern.match(path)
        if m:
            if route.method == method:
                return route, {k: v for k, v in m.groupdict().items() if v is not None}, []
            allowed.append(route.method)
    return None, {}, allowed


def kind_of(route: Route, body: bytes) -> str:
    if route.kind != "ingest_patch":
        return route.kind
    try:
        state = json.loads(body.decode("utf-8")).get("state")
    except (ValueError, AttributeError, UnicodeDecodeError):
        state = None
    return {"UploadComplete": "ingest_close", "Aborted": "ingest_abort"}.get(
        str(state), "ingest_patch")


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    clean = {}
    for key, value in headers.items():
        if key.lower() == "authorization":
            scheme = value.split(" ", 1)[0]
            value = f"{scheme} [REDACTED]"
        clean[key] = value
    return clean


def redact_body(kind: str, body: bytes) -> bytes:
    if kind != "token":
        return body
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return b""
    if not pairs:
        return body if b"secret" not in body else b"[REDACTED]"
    return urlencode([(k, "[REDACTED]" if "secret" in k.lower() else v)
                      for k, v in pairs]).encode()


# ---------------------------------------------------------------------- dispatch


def dispatch(app: App, req: Request, raw_uri_len: int, headers_len: int) -> Response:
    """Answer one (non-admin) request and log it. The caller holds the org lock."""
    org = app.org
    route, params, allowed = classify(req.method, req.path)
    kind = kind_of(route, req.body) if route is not None else "unknown"
    req.params = params
    try:
        resp = _answer(app, req, route, allowed, raw_uri_len, headers_len)
    except Exception:  # any bug answers 500 rather than dropping the connection
        resp = unknown_exception()
    if _carries_limit_info(req.path, resp):
        resp.headers.setdefault("Sforce-Limit-Info", org.limit_info())
    org.record_request(LoggedRequest(
        method=req.method, path=req.path, query=req.query,
        headers=redact_headers(req.headers), body=redact_body(kind, req.body),
        status=resp.status, kind=kind, time=time.time(),
    ))
    return resp


def _carries_limit_info(path: str, resp: Response) -> bool:
    """Every response under ``/services/data`` but the versions list carries the usage header
    (reference 1.3 [D]): errors (401, 403, 404, 405...) included. [I] An HTML page (414/431,
    or an injected gateway fault) comes from Salesforce's edge, not the API, so it does not."""
    if resp.status == 0 or not path.startswith("/services/data/"):
        return False
    if path.rstrip("/") == "/services/data":
        return False
    return "html" not in resp.headers.get("Content-Type", "").lower()


def _answer(app: App, req: Request, route: Route | None, allowed: list[str],
            raw_uri_len: int, headers_len: int) -> Response:
    org = app.org
    if raw_uri_len > MAX_URI_BYTES:
        return Response(414, b"<html><head><title>414 Request-URI Too Large</title></head>"
                             b"<body><h1>Request-URI Too Large</h1></body></html>",
                        {"Content-Type": "text/html; charset=UTF-8"})
    if raw_uri_len + headers_len > MAX_URI_BYTES:
        return Response(431, b"<html><body><h1>Request Header Fields Too Large</h1>"
                             b"</body></html>", {"Content-Type": "text/html; charset=UTF-8"})
    fault = org.take_http_fault(req.method, req.path)
    if fault is not None and not fault.after:
        return _fault_response(fault)
    resp = _route(app, req, route, allowed)
    if fault is not None:
        # The request took effect; its response is lost and the fault answered instead.
        return _fault_response(fault)
    return resp


def _fault_response(fault: HttpFault) -> Response:
    if fault.drops:
        return Response(0)
    return Response(fault.status, fault.body.encode("utf-8"), {"Content-Type": fault.content_type})


def _route(app: App, req: Request, route: Route | None, allowed: list[str]) -> Response:
    org = app.org
    version = re.match(_VERSION_PREFIX, req.path)
    if version is not None:
        major, _, minor = version.group("version").partition(".")
        if minor != "0" or not MIN_VERSION <= int(major) <= MAX_VERSION:
            return error_response(not_found_rest())
    if route is None:
        if allowed:
            return error_response(ApiError(
                405, "METHOD_NOT_ALLOWED",
                f"HTTP Method '{req.method}' not allowed. Allowed are {','.join(allowed)}"))
        return error_response(not_found_rest())
    if not route.data:
        return _call(app, req, route)
    try:
        org.check_token(req.header("Authorization"))
        org.count_api_request()
    except ApiError as err:
        return error_response(err)
    resp = _call(app, req, route)
    resp.headers["Sforce-Limit-Info"] = org.limit_info()
    return resp


def _call(app: App, req: Request, route: Route) -> Response:
    try:
        return route.handler(app, req)
    except ApiError as err:
        return error_response(err)
    except Exception:  # a handler bug is Salesforce's UNKNOWN_EXCEPTION
        return unknown_exception()


# ---------------------------------------------------------------------- server


TLS_HANDSHAKE_TIMEOUT = 10.0


class SandboxHTTPServer(ThreadingHTTPServer):
    """One thread per connection; with ``ssl_context`` the TLS handshake runs on that thread.

    The listening socket stays plain: wrapping it would run every handshake inside
    ``accept()`` on the serve_forever thread, so one stalled client would block everyone.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: App,
                 admin: Callable[[Request], Response],
                 ssl_context: ssl.SSLContext | None = None, latency: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(address, SandboxRequestHandler)
        self.app = app
        self.admin = admin
        self.ssl_context = ssl_context
        # Seconds added to every Salesforce answer (not the admin API's): a distant org's
        # round trip. Waited outside the org lock, so concurrent calls overlap as they would.
        self.latency = latency
        self.sleep = sleep

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            raw = request
            try:
                raw.settimeout(TLS_HANDSHAKE_TIMEOUT)
                request = self.ssl_context.wrap_socket(raw, server_side=True)
                request.settimeout(None)
            except (OSError, ValueError):  # failed or stalled handshake: drop this client only
                self.shutdown_request(raw)
                return
        super().process_request_thread(request, client_address)


class SandboxRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "SalesforceSandbox/1.0"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version
    server: SandboxHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log is in the org, and tokens must never reach a log."""

    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        try:
            self._handle_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away
        except Exception:  # a sandbox bug answers 500 instead of a silent drop
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send(unknown_exception())

    def _handle_request(self) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        req = Request(self.command, split.path, split.query,
                      {k: v for k, v in self.headers.items()}, body)
        if split.path.startswith("/__sandbox/"):
            resp = self.server.admin(req)
        else:
            headers_len = sum(len(k) + len(v) + 4 for k, v in self.headers.items())
            with self.server.app.org.lock:
                resp = dispatch(self.server.app, req, len(self.path.encode("utf-8")),
                                headers_len)
            if self.server.latency > 0:
                self.server.sleep(self.server.latency)
        self._send(resp)

    def _send(self, resp: Response) -> None:
        if resp.status == 0:  # an injected network drop: close without answering
            self.close_connection = True
            return
        self.send_response(resp.status)
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD" and resp.body:
            self.wfile.write(resp.body)

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_PATCH = _handle
    do_DELETE = _handle
