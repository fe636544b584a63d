"""Pure unit tests: CSV building/parsing, sf__Error parsing, SOQL quoting/chunking, URLs."""

from __future__ import annotations

import csv
import io
import random
from typing import Any
from urllib.parse import quote_plus

import pytest
import requests

from target_salesforce_consent.mapping import as_sent
from target_salesforce_consent.plan import Row
from target_salesforce_consent.salesforce import (
    AuthenticationError,
    JobFailedError,
    RetryPolicy,
    SalesforceError,
    Token,
    build_csv,
    build_match_queries,
    instance_url_problem,
    parse_result_csv,
    quote,
)
from target_salesforce_consent.salesforce.bulk import (
    ResultRow,
    format_sf_error,
    is_transient_job_error,
    parse_sf_error,
    read_result_rows,
    upload_bound,
)
from target_salesforce_consent.salesforce.client import parse_error_body
from target_salesforce_consent.salesforce.describe import ObjectInfo
from target_salesforce_consent.salesforce.soql import QUERY_SAFE, URL_SAFETY_MARGIN

# -- build_csv ------------------------------------------------------------------------------


def test_build_csv_quotes_everything_lf_no_bom() -> None:
    body = build_csv(
        ["Id", "Note__c"],
        [{"Id": "00Q1", "Note__c": 'say "hi", ok'}, {"Id": "00Q2", "Note__c": "plain"}],
    )
    assert not body.startswith(b"\xef\xbb\xbf")
    assert body == b'"Id","Note__c"\n"00Q1","say ""hi"", ok"\n"00Q2","plain"\n'
    assert b"\r" not in body


def test_build_csv_normalises_embedded_line_breaks_to_declared_ending() -> None:
    rows = [{"Id": "1", "Note__c": "a\r\nb\rc\nd"}]
    lf = build_csv(["Id", "Note__c"], rows)
    assert lf == b'"Id","Note__c"\n"1","a\nb\nc\nd"\n'
    crlf = build_csv(["Id", "Note__c"], rows, line_ending="CRLF")
    assert crlf == b'"Id","Note__c"\r\n"1","a\r\nb\r\nc\r\nd"\r\n'
    # every CR in the CRLF variant is followed by LF: no lone CR
    assert crlf.count(b"\r") == crlf.count(b"\r\n")


def test_build_csv_unicode_is_utf8_and_missing_key_is_empty() -> None:
    body = build_csv(["Id", "LastName", "Email"], [{"Id": "1", "LastName": "Bodø 日本"}])
    assert body.decode("utf-8") == '"Id","LastName","Email"\n"1","Bodø 日本",""\n'


def test_build_csv_round_trips_through_csv_reader() -> None:
    hostile = ['x") OR 1=1', "\"'\\", "tab\there", "comma,comma", "", "é"]
    rows = [{"Id": str(i), "V": v} for i, v in enumerate(hostile)]
    parsed = list(csv.reader(io.StringIO(build_csv(["Id", "V"], rows).decode(), newline="")))
    assert parsed[1:] == [[str(i), v] for i, v in enumerate(hostile)]


def _csv_cell_by_cell(columns: list[str], rows: list[dict[str, Any]], ending: str) -> bytes:
    """The upload as its definition says: every cell through as_sent on its own."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator=ending)
    writer.writerow(columns)
    for row in rows:
        cells = [row.get(c) for c in columns]
        writer.writerow(["" if v is None else as_sent(str(v), ending) for v in cells])
    return buffer.getvalue().encode("utf-8")


@pytest.mark.parametrize("ending", ["LF", "CRLF"])
def test_build_csv_writes_each_cell_as_sent_with_or_without_line_breaks(ending: str) -> None:
    """Whole-text fast path or cell by cell, the bytes are the ones each cell gives."""
    terminator = {"LF": "\n", "CRLF": "\r\n"}[ending]
    pick = random.Random(7)
    plain = ["true", "false", "", "News;Offers", "é 日本", 'say "hi"', "a\nb", None, 12, 0.5, True]
    odd = ["a\r\nb", "x\ry", "nul\x00here", "\r"]
    columns = ["Id", "A__c", "B__c", "C__c"]
    for values in (plain, plain + odd):
        rows = [
            {
                "Id": f"00Q{n}",
                **{c: pick.choice(values) for c in columns[1:] if pick.random() < 0.8},
            }
            for n in range(300)
        ]
        expected = _csv_cell_by_cell(columns, rows, terminator)
        assert build_csv(columns, rows, line_ending=ending) == expected  # type: ignore[arg-type]
        assert build_csv(columns, iter(rows), line_ending=ending) == expected  # type: ignore[arg-type]
    tuples = [Row(["Id", "A__c"], ["00Q1", "a\r\nb"]), Row(["Id", "B__c"], ["00Q2", "true"])]
    as_dicts: list[dict[str, Any]] = [dict(r) for r in tuples]
    assert build_csv(columns, tuples) == _csv_cell_by_cell(columns, as_dicts, "\n")


def test_build_csv_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        build_csv([], [])
    with pytest.raises(ValueError):
        build_csv(["Id", "id"], [])
    with pytest.raises(ValueError):
        build_csv(["Id"], [], line_ending="CR")  # type: ignore[arg-type]


# -- parse_result_csv -----------------------------------------------------------------------


def test_parse_result_csv_by_header_name_with_shuffled_columns_and_rows() -> None:
    body = (
        b'"sf__Error",Email,"sf__Id",LastName\n'
        b'"UNABLE_TO_LOCK_ROW:unable to obtain exclusive access:--","b@x.com","","B"\n'
        b'"REQUIRED_FIELD_MISSING:Required fields are missing: [Company]:--","a@x.com","","A"\n'
    )
    rows = parse_result_csv(body)
    by_email = {r["Email"]: r for r in rows}
    assert by_email["a@x.com"]["sf__Error"].startswith("REQUIRED_FIELD_MISSING")
    assert by_email["b@x.com"]["sf__Id"] == ""
    assert by_email["b@x.com"]["LastName"] == "B"


@pytest.mark.parametrize("body", [b"", b'"sf__Id","sf__Created",Id\n', b'"sf__Id","sf__Created"'])
def test_parse_result_csv_empty_and_header_only(body: bytes) -> None:
    assert parse_result_csv(body) == []


def test_parse_result_csv_crlf_and_embedded_newlines_and_bom() -> None:
    body = '\ufeff"sf__Id","sf__Created","Note"\r\n"00Q1","true","two\nlines"\r\n'.encode()
    assert parse_result_csv(body) == [
        {"sf__Id": "00Q1", "sf__Created": "true", "Note": "two\nlines"}
    ]


RESULT_BODIES = [
    b"",
    b'"sf__Id","sf__Created",Id\n',
    b'"sf__Error",Email,"sf__Id",LastName\n'
    b'"UNABLE_TO_LOCK_ROW:unable to obtain exclusive access:--","b@x.com","","B"\n'
    b'"REQUIRED_FIELD_MISSING:Required:--","a@x.com","00Q9"\n\n',  # a short row, a blank line
    '\ufeff"sf__Id","sf__Created","email","Note"\r\n"00Q1","true","A@x.com","two\nlines"\r\n'
    '"00Q2"," TRUE ","c@x.com","x","extra cell"\r\n"00Q3","false"\r\n'.encode(),
    b'"sf__Id","sf__Created",Email,Email\n"00Q1","false","first","last"\n',  # the last one wins
    b'"sf__Id","sf__Created"\n"00Q1","true"\n',  # no key column
]


@pytest.mark.parametrize("body", RESULT_BODIES)
def test_read_result_rows_keeps_what_reconciling_reads_of_parse_result_csv(body: bytes) -> None:
    """The key (by name, else in another case), sf__Id (empty as None), sf__Created as a flag
    and sf__Error, row for row as parse_result_csv's dicts hold them."""

    def key_of(row: dict[str, str]) -> str | None:
        if "Email" in row:
            return row["Email"]
        return next((v for k, v in row.items() if k.lower() == "email"), None)

    expected = [
        ResultRow(
            key_of(row),
            row.get("sf__Id") or None,
            (row.get("sf__Created") or "").strip().lower() == "true",
            row.get("sf__Error") or "",
        )
        for row in parse_result_csv(body)
    ]
    assert list(read_result_rows(body, "Email")) == expected


def test_upload_bound_is_never_below_the_csv_built() -> None:
    """The size check builds the CSV only when this bound says it might be too big."""
    rng = random.Random(7)
    alphabet = ["a", "Z", "0", '"', ",", "\n", "\r", "\x00", "é", "€", "\U0001f600", " "]
    columns = ["Id", "Note__c", "Other__c"]
    for _ in range(200):
        rows = [
            {c: "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
             for c in columns if rng.random() < 0.8}
            for _ in range(rng.randrange(1, 6))
        ]  # fmt: skip
        assert upload_bound(columns, rows) >= len(build_csv(columns, rows))
    numbers: list[dict[str, Any]] = [{"Id": 7}, {"Id": 12.5}]
    assert upload_bound(["Id"], numbers) >= len(build_csv(["Id"], numbers))


@pytest.mark.parametrize(
    ("raw", "code", "formatted"),
    [
        (
            "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --",
            "REQUIRED_FIELD_MISSING",
            "REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]",
        ),
        (
            "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--",
            "INVALID_CROSS_REFERENCE_KEY",
            "INVALID_CROSS_REFERENCE_KEY: invalid cross reference id",
        ),
        (
            "MALFORMED_ID:Lead ID: id value of incorrect type: 001xx000003DGb2999:Id --",
            "MALFORMED_ID",
            "MALFORMED_ID: Lead ID: id value of incorrect type: 001xx000003DGb2999",
        ),
        (
            "UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 200 "
            "records: 001xxx,001yyy:--",
            "UNABLE_TO_LOCK_ROW",
            "UNABLE_TO_LOCK_ROW: unable to obtain exclusive access to this record or 200 "
            "records: 001xxx,001yyy",
        ),
        ("SOMETHING", "SOMETHING", "SOMETHING"),
    ],
)
def test_sf_error_parsing(raw: str, code: str, formatted: str) -> None:
    assert parse_sf_error(raw)[0] == code
    assert format_sf_error(raw) == formatted


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("Timeout", True),
        ("Max CPU time exceeded: batch timed out", True),
        ("TooManyLockFailure : Too many lock failure 200 Trying again later.", True),
        ("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access", True),
        ("InvalidBatch : Field name not found : ContactId__c", False),
        ("InvalidBatch : Field name not found : Lock__c", False),
        (
            "ClientInputError : LineEnding is invalid on user data. "
            "Current LineEnding setting is LF",
            False,
        ),
        ("InvalidBatch : Failed to parse CSV. Found unescaped quote", False),
        ("Blocked by admin", False),
    ],
)
def test_transient_job_error_classification(message: str, transient: bool) -> None:
    assert is_transient_job_error(message) is transient


# -- SOQL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("a@x.com", "'a@x.com'"),
        ("O'Brien", "'O\\'Brien'"),
        ('say "x"', "'say \\\"x\\\"'"),
        ("back\\slash", "'back\\\\slash'"),
        ("l1\nl2\rl3\tt\bb\ff", "'l1\\nl2\\rl3\\tt\\bb\\ff'"),
        ("x') OR Email != ('", "'x\\') OR Email != (\\''"),
    ],
)
def test_quote(value: str, literal: str) -> None:
    assert quote(value) == literal


def _unquote_soql_literals(in_list: str) -> list[str]:
    """Tiny SOQL literal tokenizer used to prove quoting keeps each value one literal."""
    values: list[str] = []
    i = 0
    unescape = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
    while i < len(in_list):
        ch = in_list[i]
        if ch in " ,":
            i += 1
            continue
        assert ch == "'", f"unexpected token at {in_list[i:]!r}"
        i += 1
        out = []
        while in_list[i] != "'":
            if in_list[i] == "\\":
                i += 1
                out.append(unescape.get(in_list[i], in_list[i]))
            else:
                out.append(in_list[i])
            i += 1
        i += 1
        values.append("".join(out))
    return values


def test_hostile_value_stays_a_single_literal() -> None:
    hostile = ["x') OR Email != ('", "a\\'", "q\\", "\n' OR ''='"]
    [query] = build_match_queries("Lead", ["Id", "Email"], "Email", hostile)
    prefix = "SELECT Id, Email FROM Lead WHERE Email IN ("
    assert query.startswith(prefix) and query.endswith(")")
    assert _unquote_soql_literals(query[len(prefix) : -1]) == [v.strip() for v in hostile]


def test_match_query_shape_dedupe_and_conditions() -> None:
    queries = build_match_queries(
        "Lead",
        ["Id", "Email", "id", "IsConverted"],
        "Email",
        ["A@x.com", " a@X.com ", "b@x.com", "", "  "],
        extra_conditions=["IsConverted = false"],
    )
    assert queries == [
        "SELECT Id, Email, IsConverted FROM Lead WHERE Email IN ('A@x.com', 'b@x.com') "
        "AND IsConverted = false"
    ]
    assert build_match_queries("Lead", ["Id"], "Email", []) == []


def test_match_queries_chunk_under_the_uri_limit() -> None:
    rng = random.Random(7)
    values = [f"user{i}.{rng.randrange(10**9)}+tag@exämple-domain.com" for i in range(3000)]
    values.append("x') OR Email != ('")
    prefix = "/services/data/v62.0/query"
    queries = build_match_queries("Contact", ["Id", "Email"], "Email", values, url_prefix=prefix)
    assert len(queries) > 1
    head = "SELECT Id, Email FROM Contact WHERE Email IN ("
    seen: list[str] = []
    for query in queries:
        url = prefix + "?q=" + quote_plus(query, QUERY_SAFE)
        assert len(url.encode()) <= 16384 - URL_SAFETY_MARGIN
        seen.extend(_unquote_soql_literals(query[len(head) : -1]))
    assert seen == values  # order kept, nothing lost or duplicated
    # chunks are reasonably full: adding the next value would have overflowed
    first_len = len(prefix + "?q=" + quote_plus(queries[0], QUERY_SAFE))
    assert first_len > 16384 - URL_SAFETY_MARGIN - 200


def test_match_queries_small_limit_and_too_long_values() -> None:
    queries = build_match_queries(
        "Lead", ["Id"], "Email", ["a", "b", "c"], max_url_bytes=400 + URL_SAFETY_MARGIN
    )
    assert len(queries) == 1
    with pytest.raises(ValueError):
        build_match_queries("Lead", ["Id"], "Email", ["x" * 4001])
    with pytest.raises(ValueError):
        build_match_queries(
            "Lead", ["Id"], "Email", ["x" * 480], max_url_bytes=500 + URL_SAFETY_MARGIN
        )
    with pytest.raises(ValueError):
        build_match_queries("Lead", ["Id"], "Email", ["x\n" * 2100])


@pytest.mark.parametrize(
    ("sobject", "field"), [("Lead WHERE", "Email"), ("Lead", "Email) OR (Id"), ("Lead", "")]
)
def test_match_queries_reject_injected_names(sobject: str, field: str) -> None:
    with pytest.raises(ValueError):
        build_match_queries(sobject, ["Id"], field, ["a"])


# -- instance_url_problem -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://acme.my.salesforce.com",
        "https://acme.my.salesforce.com/",
        "https://acme--uat.sandbox.my.salesforce.com",
        "http://127.0.0.1:8080",
        "http://127.5.4.3",
        "http://localhost:1234/",
        "http://[::1]:9000",
    ],
)
def test_instance_url_ok(url: str) -> None:
    assert instance_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://acme.my.salesforce.com", "https"),
        ("http://10.0.0.1", "https"),
        ("https://acme.my.salesforce.com/services/data", "path"),
        ("https://acme.my.salesforce.com?x=1", "path"),
        ("acme.my.salesforce.com", "https"),
        ("ftp://acme.my.salesforce.com", "https"),
        ("", "empty"),
        ("https://login.salesforce.com", "My Domain"),
        ("https://user:pw@acme.my.salesforce.com", "credentials"),
        ("https://acme.my.salesforce.com:notaport", "valid"),
    ],
)
def test_instance_url_problems(url: str, needle: str) -> None:
    problem = instance_url_problem(url)
    assert problem is not None and needle in problem


# -- errors and small types ----------------------------------------------------------------


def test_error_strings() -> None:
    assert str(SalesforceError("NOT_FOUND", "gone", status=404)) == "NOT_FOUND: gone"
    auth = AuthenticationError("invalid_client", "invalid client credentials", "fix the secret")
    assert str(auth) == "invalid_client: invalid client credentials (fix the secret)"
    failed = JobFailedError("750x", "InvalidBatch : Field name not found : Foo__c")
    assert failed.job_id == "750x" and "Field name not found : Foo__c" in str(failed)
    assert str(failed).startswith("JOB_FAILED: ")


def test_token_repr_hides_access_token() -> None:
    token = Token(access_token="00D!secret-token", instance_url="https://a", issued_at="1")
    assert "secret-token" not in repr(token)


def test_retry_policy_delay_bounds() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delay = policy.delay(attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert RetryPolicy(base_delay=0.0).delay(3) == 0.0


def _response(status: int, body: bytes, content_type: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers["Content-Type"] = content_type
    response.reason = "Reason"
    return response


def test_parse_error_body_shapes() -> None:
    rest = _response(
        400,
        b'[{"message":"No such column","errorCode":"INVALID_FIELD"}]',
        "application/json;charset=UTF-8",
    )
    assert parse_error_body(rest) == ("INVALID_FIELD", "No such column")
    oauth = _response(
        400, b'{"error":"invalid_client","error_description":"bad"}', "application/json"
    )
    assert parse_error_body(oauth) == ("invalid_client", "bad")
    html = _response(502, b"<html><title>502 Bad Gateway</title><body>x</body></html>", "text/html")
    code, message = parse_error_body(html)
    assert code == "HTTP_502" and "502 Bad Gateway" in message
    empty = _response(500, b"", "text/plain")
    assert parse_error_body(empty)[0] == "HTTP_500"


def test_object_info_required_on_insert_includes_lead_company() -> None:
    info = ObjectInfo.from_describe(
        {
            "name": "Lead",
            "fields": [
                {"name": "Id", "type": "id", "createable": False, "nillable": False},
                {"name": "LastName", "type": "string", "createable": True, "nillable": False},
                {"name": "Company", "type": "string", "createable": True, "nillable": True},
                {
                    "name": "HasOptedOutOfEmail",
                    "type": "boolean",
                    "createable": True,
                    "nillable": False,
                    "defaultedOnCreate": True,
                },
                {"name": "Email", "type": "email", "createable": True, "nillable": True},
                {
                    "name": "Status",
                    "type": "picklist",
                    "createable": True,
                    "nillable": False,
                    "defaultedOnCreate": True,
                    "picklistValues": [
                        {"value": "Open", "active": True},
                        {"value": "Old", "active": False},
                    ],
                },
            ],
        }
    )
    assert sorted(f.name for f in info.required_on_insert()) == ["Company", "LastName"]
    status = info.field("status")
    assert status is not None and status.picklist_values == ("Open",)
    assert info.field("EMAIL") is not None and info.field("Nope__c") is None


def test_form_encode_is_quote_plus_keeping_soql_punctuation() -> None:
    from urllib.parse import parse_qs, quote_plus

    from target_salesforce_consent.salesforce.soql import form_encode

    samples = [
        "SELECT Id, Email FROM Lead WHERE Email IN ('a@x.com', 'O\\'Brien@x.com')",
        "~_.-+%&=#?/ \t\n\x00\x7f",
        "straße 顧客 😀",
        "",
    ]
    for text in samples:
        assert form_encode(text) == quote_plus(text, QUERY_SAFE)
        assert parse_qs("q=" + form_encode(text)).get("q", [""]) == [text]  # decodes back
    assert form_encode("IN ('a@x.com', 'b')") == "IN+('a@x.com',+'b')"
