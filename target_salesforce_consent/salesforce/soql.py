"""SOQL quoting and URI-bounded match queries (reference §5.1)."""

from __future__ import annotations

import re
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


def _encoded_len(text: str) -> int:
    # requests encodes params like urlencode (quote_plus); percent-encoding is per character,
    # so encoded lengths add up.
    return len(quote_plus(text))


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
    """``SELECT ... FROM obj WHERE match_field IN (...) [AND cond ...]`` queries covering values.

    Values are stripped and deduplicated case-insensitively (first spelling kept, empty ones
    dropped). Each query keeps ``len(url_prefix + "?q=" + urlencoded query)`` within
    ``max_url_bytes - URL_SAFETY_MARGIN``. ``extra_conditions`` are trusted SOQL fragments.
    Raises ValueError for invalid names or a value that cannot fit in a query on its own.
    """
    check_name(sobject, "object name")
    check_name(match_field, "field name")
    fields: list[str] = []
    seen_fields: set[str] = set()
    for name in select_fields:
        check_name(name, "field name")
        if name.lower() not in seen_fields:
            seen_fields.add(name.lower())
            fields.append(name)
    if not fields:
        raise ValueError("select_fields is empty")

    literals: list[str] = []
    seen: set[str] = set()
    for raw in values:
        value = str(raw).strip()
        key = value.lower()
        if not value or key in seen:
            continue
        seen.add(key)
        literal = quote(value)
        if len(literal) - 2 > MAX_LITERAL_CHARS:
            raise ValueError(
                f"a {match_field} value of {len(value)} characters exceeds the SOQL limit of "
                f"{MAX_LITERAL_CHARS} characters per string literal"
            )
        literals.append(literal)
    if not literals:
        return []

    head = f"SELECT {', '.join(fields)} FROM {sobject} WHERE {match_field} IN ("
    tail = ")" + "".join(f" AND {condition}" for condition in extra_conditions)
    budget = max_url_bytes - URL_SAFETY_MARGIN
    fixed = len(url_prefix) + len("?q=") + _encoded_len(head) + _encoded_len(tail)
    separator = ", "
    separator_cost = _encoded_len(separator)
    char_budget = MAX_STATEMENT_CHARS - len(head) - len(tail)

    queries: list[str] = []
    chunk: list[str] = []
    used = fixed
    chars = 0
    for literal in literals:
        cost = _encoded_len(literal)
        if fixed + cost > budget or len(literal) > char_budget:
            raise ValueError(
                f"a {match_field} value is too long to fit in one query under the "
                f"{max_url_bytes}-byte URI limit"
            )
        extra = cost + (separator_cost if chunk else 0)
        extra_chars = len(literal) + (len(separator) if chunk else 0)
        if chunk and (used + extra > budget or chars + extra_chars > char_budget):
            queries.append(head + separator.join(chunk) + tail)
            chunk, used, chars = [], fixed, 0
            extra, extra_chars = cost, len(literal)
        chunk.append(literal)
        used += extra
        chars += extra_chars
    if chunk:
        queries.append(head + separator.join(chunk) + tail)
    return queries
