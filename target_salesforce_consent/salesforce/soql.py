"""SOQL quoting and URI-bounded match queries (reference §5.1)."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from urllib.parse import quote_plus

#: Salesforce's URI limit (414 above it).
MAX_URL_BYTES = 16384
#: Room kept free under max_url_bytes: Salesforce answers 431 when URI plus headers exceed
#: 16,384 bytes, and the headers (a JWT access token alone can exceed 1 KiB) are not counted.
URL_SAFETY_MARGIN = 2048
#: Limit of one string literal in a WHERE clause.
MAX_LITERAL_CHARS = 4000
#: Limit of a SOQL statement.
MAX_STATEMENT_CHARS = 100_000

_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_ESCAPE_RE = re.compile("[" + re.escape("".join(_ESCAPES)) + "]")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")


def quote(value: str) -> str:
    """A SOQL string literal: ``O'Brien`` -> ``'O\\'Brien'``."""
    return "'" + _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], value) + "'"


def check_name(name: str, what: str = "name") -> str:
    """Validate an sObject or field API name (so it cannot smuggle SOQL); return it."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid Salesforce {what}: {name!r}")
    return name


#: Characters a query string may carry as they are (RFC 3986 allows them in a query, and they
#: mean nothing to form decoding): SOQL is full of them (quotes, commas, parentheses, the @ of
#: every address). Sent raw, a match query holds about a quarter more ids, and urllib3 has far
#: fewer percent-escapes to re-check (it calls Python once per escape).
QUERY_SAFE = "'(),@:!*/"

# quote_plus(text, safe=QUERY_SAFE) for ASCII text in one C pass (a 14 KB query string
# otherwise costs a Python call per byte): safe characters stay, a space becomes "+".
_FORM_ESCAPES = {
    c: "+" if c == 32 else f"%{c:02X}"
    for c in range(128)
    if chr(c) not in string.ascii_letters + string.digits + "_.-~" + QUERY_SAFE
}


def form_encode(text: str) -> str:
    """``urllib.parse.quote_plus(text, safe=QUERY_SAFE)``: how a query string is sent."""
    return text.translate(_FORM_ESCAPES) if text.isascii() else quote_plus(text, QUERY_SAFE)


def _encoded_len(text: str) -> int:
    # Percent-encoding is per character, so encoded lengths add up.
    return len(form_encode(text))


class MatchQueryBuilder:
    """``SELECT ... FROM obj WHERE match_field IN (...) [AND cond ...]`` queries, chunked.

    Each query keeps ``len(url_prefix + "?q=" + urlencoded query)`` within ``max_url_bytes -
    URL_SAFETY_MARGIN`` and the statement within the SOQL limit. ``extra_conditions`` are
    trusted SOQL fragments. Raises ValueError for invalid names.
    """

    def __init__(
        self,
        sobject: str,
        select_fields: Sequence[str],
        match_field: str,
        *,
        extra_conditions: Sequence[str] = (),
        max_url_bytes: int = MAX_URL_BYTES,
        url_prefix: str = "",
    ) -> None:
        check_name(sobject, "object name")
        self.match_field = check_name(match_field, "field name")
        fields: list[str] = []
        seen_fields: set[str] = set()
        for name in select_fields:
            check_name(name, "field name")
            if name.lower() not in seen_fields:
                seen_fields.add(name.lower())
                fields.append(name)
        if not fields:
            raise ValueError("select_fields is empty")
        self.head = f"SELECT {', '.join(fields)} FROM {sobject} WHERE {match_field} IN ("
        self.tail = ")" + "".join(f" AND {condition}" for condition in extra_conditions)
        self.max_url_bytes = max_url_bytes
        self.budget = max_url_bytes - URL_SAFETY_MARGIN
        self.fixed = (
            len(url_prefix) + len("?q=") + _encoded_len(self.head) + _encoded_len(self.tail)
        )
        self.char_budget = MAX_STATEMENT_CHARS - len(self.head) - len(self.tail)

    def problem(self, value: str) -> str | None:
        """Why `value` cannot be matched even in a query of its own ("CODE: message")."""
        value = value.strip()
        # An escape doubles a character, a character is at most 2 UTF-16 units, and
        # percent-encoding takes at most 12 bytes for one (4 UTF-8 bytes): a value short enough
        # to fit even then needs no encoding to check.
        if 4 * len(value) <= MAX_LITERAL_CHARS and (
            self.fixed + 12 * (2 * len(value) + 2) <= self.budget
        ):
            return None
        literal = quote(value)
        # Salesforce counts characters as Java does, in UTF-16 units (an emoji counts twice).
        units = len(literal.encode("utf-16-le")) // 2 - 2
        if units > MAX_LITERAL_CHARS:
            return (
                f"STRING_TOO_LONG: {self.match_field} value has {units} characters (escapes "
                f"included, counted as Salesforce does); a Salesforce query value holds at "
                f"most {MAX_LITERAL_CHARS}"
            )
        if self.fixed + _encoded_len(literal) > self.budget or len(literal) > self.char_budget:
            return (
                f"STRING_TOO_LONG: {self.match_field} value takes "
                f"{_encoded_len(literal)} bytes once URL-encoded; a query for it cannot fit "
                f"Salesforce's {self.max_url_bytes}-byte URI limit"
            )
        return None

    def queries(self, values: Iterable[str]) -> list[str]:
        """Queries covering `values`: stripped, deduplicated case-insensitively (first spelling
        kept), empty ones dropped. Raises ValueError for a value :meth:`problem` refuses."""
        literals: list[str] = []
        seen: set[str] = set()
        for raw in values:
            value = str(raw).strip()
            key = value.lower()
            if not value or key in seen:
                continue
            seen.add(key)
            problem = self.problem(value)
            if problem is not None:
                raise ValueError(problem)
            literals.append(quote(value))

        separator = ", "
        separator_cost = _encoded_len(separator)
        queries: list[str] = []
        chunk: list[str] = []
        used, chars = self.fixed, 0
        for literal in literals:
            cost = _encoded_len(literal)
            extra = cost + (separator_cost if chunk else 0)
            extra_chars = len(literal) + (len(separator) if chunk else 0)
            if chunk and (used + extra > self.budget or chars + extra_chars > self.char_budget):
                queries.append(self.head + separator.join(chunk) + self.tail)
                chunk, used, chars = [], self.fixed, 0
                extra, extra_chars = cost, len(literal)
            chunk.append(literal)
            used += extra
            chars += extra_chars
        if chunk:
            queries.append(self.head + separator.join(chunk) + self.tail)
        return queries


def build_match_queries(
    sobject: str,
    select_fields: Sequence[str],
    match_field: str,
    values: Iterable[str],
    *,
    extra_conditions: Sequence[str] = (),
    max_url_bytes: int = MAX_URL_BYTES,
    url_prefix: str = "",
) -> list[str]:
    """The queries of :class:`MatchQueryBuilder` for `values`, in one call."""
    return MatchQueryBuilder(
        sobject,
        select_fields,
        match_field,
        extra_conditions=extra_conditions,
        max_url_bytes=max_url_bytes,
        url_prefix=url_prefix,
    ).queries(values)
