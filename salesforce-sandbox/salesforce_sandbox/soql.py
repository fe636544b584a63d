"""The SOQL subset a target sends (reference 5.1), parsed with SOQL's own escaping rules.

Supported::

    SELECT field[, field...] FROM object
      [WHERE condition]          -- AND / OR / NOT / parentheses over comparisons:
                                 --   field = | != | <> | < | <= | > | >= value
                                 --   field [NOT] IN (value, ...)
                                 --   field [NOT] LIKE 'pattern'
      [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST], ...]
      [LIMIT n] [OFFSET n]

Values: 'string' literals, numbers, true/false, null, date (2024-01-05) and datetime
(2024-01-05T10:00:00Z, 2024-01-05T10:00:00.000+02:00) literals.

String literals: a quote inside a literal can only appear escaped (``\\'``), so no value can end a
literal early. The escapes are ``\\' \\" \\\\ \\n \\r \\t \\b \\f``, plus ``\\_`` and ``\\%`` inside
LIKE patterns only; Salesforce's SOQL reference also lists the uppercase forms ``\\N \\R \\T \\B
\\F`` (same meaning). Any other backslash sequence is MALFORMED_QUERY. Text comparisons are
case-insensitive, as in Salesforce.

Limits (reference 5.1): a statement is at most 100,000 characters and a string literal at most
4,000; a field may be selected only once (case-insensitively).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from . import ids
from .errors import ApiError
from .schema import FieldDef, SObjectSchema, parse_datetime

_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f",
            "N": "\n", "R": "\r", "T": "\t", "B": "\b", "F": "\f"}
MAX_STATEMENT_CHARS = 100_000
MAX_LITERAL_CHARS = 4_000
_TEXT_FIELD_TYPES = {"string", "textarea", "phone", "url", "email", "picklist", "multipicklist",
                     "combobox", "id", "reference", "encryptedstring"}
_NUMERIC_FIELD_TYPES = {"int", "long", "double", "currency", "percent"}
_DATETIME_LIT = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})"
)
_DATE_LIT = re.compile(r"\d{4}-\d{2}-\d{2}(?![\dT])")
_NUMBER_LIT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_KEYWORDS = {"select", "from", "where", "and", "or", "not", "in", "like", "order", "by",
             "asc", "desc", "nulls", "first", "last", "limit", "offset", "true", "false",
             "null", "includes", "excludes", "group", "having", "with", "for"}
INVALID_FIELD_HINT = (
    "If you are attempting to use a custom field, be sure to append the '__c' after the custom "
    "field name. Please reference your WSDL or the describe call for the appropriate names."
)
INVALID_TYPE_HINT = (
    "If you are attempting to use a custom object, be sure to append the '__c' after the "
    "entity name. Please reference your WSDL or the describe call for the appropriate names."
)


@dataclass
class Token:
    kind: str  # ident, keyword, string, number, date, datetime, op, comma, lparen, rparen, eof
    text: str
    pos: int


@dataclass
class Literal:
    kind: str  # string, number, date, datetime, boolean, null
    value: Any
    token: Token
    raw: str = ""


@dataclass
class FieldRef:
    name: str
    token: Token
    fdef: FieldDef | None = None


@dataclass
class Comparison:
    field: FieldRef
    op: str  # = != < <= > >= in notin like notlike
    values: list[Literal]
    text_keys: frozenset[Any] | None = dataclass_field(default=None, compare=False, repr=False)


@dataclass
class BoolOp:
    op: str  # and, or, not
    items: list[Any]


@dataclass
class Query:
    text: str
    fields: list[FieldRef]
    object_token: Token
    object_name: str
    where: Any
    order_by: list[tuple[FieldRef, bool, bool | None]]
    limit: int | None
    offset: int
    schema: SObjectSchema | None = None
    offset_given: bool = False  # an OFFSET clause was written (Bulk API 2.0 refuses it)

    @property
    def field_defs(self) -> list[FieldDef]:
        return [f.fdef for f in self.fields if f.fdef is not None]


def _caret_error(text: str, pos: int, code: str, message: str) -> ApiError:
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start: line_end if line_end != -1 else len(text)]
    row = text.count("\n", 0, pos) + 1
    col = pos - line_start + 1
    full = f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{message}"
    return ApiError(400, code, full)


def caret_error(text: str, pos: int, code: str, message: str) -> ApiError:
    """Salesforce's SOQL error: the statement line, a caret under ``pos``, then ``message``."""
    return _caret_error(text, pos, code, message)


def _malformed(text: str, token: Token) -> ApiError:
    shown = "<EOF>" if token.kind == "eof" else token.text
    return ApiError(400, "MALFORMED_QUERY", f"unexpected token: {shown}")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise _caret_error(text, n, "MALFORMED_QUERY",
                                   f"line 1:{n} mismatched character '<EOF>' expecting '''")
            tokens.append(Token("string", text[i + 1: j], i))
            i = j + 1
            continue
        if ch in ",()":
            kind = {",": "comma", "(": "lparen", ")": "rparen"}[ch]
            tokens.append(Token(kind, ch, i))
            i += 1
            continue
        if text.startswith(("!=", "<>", "<=", ">="), i):
            tokens.append(Token("op", text[i: i + 2], i))
            i += 2
            continue
        if ch in "=<>":
            tokens.append(Token("op", ch, i))
            i += 1
            continue
        m = _DATETIME_LIT.match(text, i)
        if m:
            tokens.append(Token("datetime", m.group(), i))
            i = m.end()
            continue
        m = _DATE_LIT.match(text, i)
        if m:
            tokens.append(Token("date", m.group(), i))
            i = m.end()
            continue
        m = _NUMBER_LIT.match(text, i)
        if m and (ch.isdigit() or ch in "+-."):
            tokens.append(Token("number", m.group(), i))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m:
            word = m.group()
            kind = "keyword" if word.lower() in _KEYWORDS else "ident"
            tokens.append(Token(kind, word, i))
            i = m.end()
            continue
        raise ApiError(400, "MALFORMED_QUERY", f"unexpected token: {ch}")
    tokens.append(Token("eof", "", n))
    return tokens


def _bad_temporal(text: str, token: Token, kind: str) -> ApiError:
    # [I] Salesforce rejects an impossible date/datetime literal (month 13, hour 25...) as
    # MALFORMED_QUERY; the exact wording is not captured.
    return _caret_error(text, token.pos, "MALFORMED_QUERY",
                        f"Invalid {kind}: {token.text}")


def decode_literal(text: str, token: Token, *, like: bool = False) -> str:
    """The value of a string literal's body; in LIKE, ``\\_``/``\\%`` stay escaped."""
    raw = token.text
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = raw[i + 1] if i + 1 < len(raw) else ""
        if nxt in _ESCAPES:
            out.append("\\" + _ESCAPES[nxt] if like and nxt == "\\" else _ESCAPES[nxt])
        elif like and nxt in "_%":
            out.append("\\" + nxt)
        else:
            raise _caret_error(
                text, token.pos, "MALFORMED_QUERY",
                f"Invalid string literal '{raw}'. Illegal character sequence '\\{nxt}' in "
                "string literal.",
            )
        i += 2
    value = "".join(out)
    if len(value) > MAX_LITERAL_CHARS:
        # [I] the 4,000-character limit is documented (reference 5.1), the message is not.
        raise _caret_error(
            text, token.pos, "MALFORMED_QUERY",
            f"String literal exceeds the maximum length of {MAX_LITERAL_CHARS} characters",
        )
    return value


def _like_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def is_kw(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "keyword" and tok.text.lower() in words

    def expect_kw(self, word: str) -> Token:
        if not self.is_kw(word):
            raise _malformed(self.text, self.peek())
        return self.take()

    def expect(self, kind: str) -> Token:
        if self.peek().kind != kind:
            raise _malformed(self.text, self.peek())
        return self.take()

    def field_ref(self) -> FieldRef:
        tok = self.peek()
        if tok.kind != "ident":
            raise _malformed(self.text, tok)
        self.take()
        return FieldRef(tok.text, tok)

    def parse(self) -> Query:
        self.expect_kw("select")
        fields = [self.field_ref()]
        while self.peek().kind == "comma":
            self.take()
            fields.append(self.field_ref())
        self.expect_kw("from")
        obj = self.expect("ident")
        where = None
        if self.is_kw("where"):
            self.take()
            where = self.condition()
        order_by: list[tuple[FieldRef, bool, bool | None]] = []
        if self.is_kw("order"):
            self.take()
            self.expect_kw("by")
            while True:
                ref = self.field_ref()
                desc = False
                nulls_first: bool | None = None
                if self.is_kw("asc", "desc"):
                    desc = self.take().text.lower() == "desc"
                if self.is_kw("nulls"):
                    self.take()
                    if not self.is_kw("first", "last"):
                        raise _malformed(self.text, self.peek())
                    nulls_first = self.take().text.lower() == "first"
                order_by.append((ref, desc, nulls_first))
                if self.peek().kind != "comma":
                    break
                self.take()
        limit = None
        offset = 0
        if self.is_kw("limit"):
            self.take()
            limit = self._int()
        offset_given = False
        if self.is_kw("offset"):
            self.take()
            offset = self._int()
            offset_given = True
        if self.peek().kind != "eof":
            raise _malformed(self.text, self.peek())
        return Query(self.text, fields, obj, obj.text, where, order_by, limit, offset,
                     offset_given=offset_given)

    def _int(self) -> int:
        tok = self.expect("number")
        if not tok.text.isdigit():
            raise _malformed(self.text, tok)
        return int(tok.text)

    def condition(self) -> Any:
        items = [self.conjunction()]
        while self.is_kw("or"):
            self.take()
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else BoolOp("or", items)

    def conjunction(self) -> Any:
        items = [self.negation()]
        while self.is_kw("and"):
            self.take()
            items.append(self.negation())
        return items[0] if len(items) == 1 else BoolOp("and", items)

    def negation(self) -> Any:
        if self.is_kw("not"):
            self.take()
            return BoolOp("not", [self.negation()])
        if self.peek().kind == "lparen":
            self.take()
            inner = self.condition()
            self.expect("rparen")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        ref = self.field_ref()
        tok = self.peek()
        if tok.kind == "op":
            self.take()
            op = "!=" if tok.text == "<>" else tok.text
            return Comparison(ref, op, [self.literal()])
        negate = False
        if self.is_kw("not"):
            self.take()
            negate = True
        if self.is_kw("in"):
            self.take()
            self.expect("lparen")
            values = [self.literal()]
            while self.peek().kind == "comma":
                self.take()
                values.append(self.literal())
            self.expect("rparen")
            return Comparison(ref, "notin" if negate else "in", values)
        if self.is_kw("like"):
            self.take()
            lit_tok = self.expect("string")
            pattern = decode_literal(self.text, lit_tok, like=True)
            return Comparison(ref, "notlike" if negate else "like",
                              [Literal("string", pattern, lit_tok, lit_tok.text)])
        raise _malformed(self.text, self.peek())

    def literal(self) -> Literal:
        tok = self.take()
        if tok.kind == "string":
            return Literal("string", decode_literal(self.text, tok), tok, tok.text)
        if tok.kind == "number":
            return Literal("number", float(tok.text), tok, tok.text)
        if tok.kind == "date":
            try:
                dt.date.fromisoformat(tok.text)
            except ValueError:
                raise _bad_temporal(self.text, tok, "date") from None
            return Literal("date", tok.text, tok, tok.text)
        if tok.kind == "datetime":
            try:
                value = parse_datetime(tok.text)
            except ValueError:
                raise _bad_temporal(self.text, tok, "datetime") from None
            return Literal("datetime", value, tok, tok.text)
        if tok.kind == "keyword" and tok.text.lower() in {"true", "false"}:
            return Literal("boolean", tok.text.lower() == "true", tok, tok.text)
        if tok.kind == "keyword" and tok.text.lower() == "null":
            return Literal("null", None, tok, tok.text)
        raise _malformed(self.text, tok)


def parse(text: str, schemas: dict[str, SObjectSchema]) -> Query:
    """Parse and validate ``text`` against the known objects; raise ApiError (400)."""
    if len(text) > MAX_STATEMENT_CHARS:
        # [I] the 100,000-character limit is documented (reference 5.1), the message is not.
        raise ApiError(400, "MALFORMED_QUERY",
                       f"Query is too long: {len(text)} characters; the maximum is "
                       f"{MAX_STATEMENT_CHARS}")
    query = _Parser(text).parse()
    schema = next((s for n, s in schemas.items() if n.lower() == query.object_name.lower()), None)
    if schema is None:
        raise ApiError(400, "INVALID_TYPE",
                       f"sObject type '{query.object_name}' is not supported. {INVALID_TYPE_HINT}")
    query.schema = schema
    query.object_name = schema.name

    def resolve(ref: FieldRef) -> FieldDef:
        name = ref.name
        prefix = schema.name.lower() + "."
        if name.lower().startswith(prefix):
            name = name[len(prefix):]
        fdef = schema.field(name)
        if fdef is None:
            raise _caret_error(
                text, ref.token.pos, "INVALID_FIELD",
                f"No such column '{name}' on entity '{schema.name}'. {INVALID_FIELD_HINT}",
            )
        ref.fdef = fdef
        return fdef

    selected: set[str] = set()
    for ref in query.fields:
        fdef = resolve(ref)
        if fdef.name.lower() in selected:
            # [I] shape of the captured DUPLICATE_FIELD error; the field is named as written.
            shown = ref.name[ref.name.find(".") + 1:] if "." in ref.name else ref.name
            raise ApiError(400, "DUPLICATE_FIELD", f"duplicate field selected: {shown}")
        selected.add(fdef.name.lower())

    def check(node: Any) -> None:
        if isinstance(node, BoolOp):
            for item in node.items:
                check(item)
            return
        fdef = resolve(node.field)
        if not fdef.filterable:
            # [I] the wording Salesforce gives for a WHERE on an anyType or long text field.
            raise _caret_error(text, node.field.token.pos, "INVALID_FIELD",
                               f"field '{fdef.name}' can not be filtered in a query call")
        for lit in node.values:
            _check_literal(text, fdef, lit, node.op)

    if query.where is not None:
        check(query.where)
    for ref, _, _ in query.order_by:
        resolve(ref)
    return query


def _check_literal(text: str, fdef: FieldDef, lit: Literal, op: str) -> None:
    if lit.kind == "null":
        return
    expected: str | None = None
    quoted = False
    if fdef.type in _TEXT_FIELD_TYPES:
        expected, quoted = "string", True
    elif fdef.type == "boolean":
        expected = "boolean"
    elif fdef.type == "datetime":
        expected = "dateTime"
    elif fdef.type == "date":
        expected = "date"
    elif fdef.type in _NUMBER_KINDS:
        expected = _NUMBER_KINDS[fdef.type]
    if expected is None:
        return
    ok = {
        "string": lit.kind == "string",
        "boolean": lit.kind == "boolean",
        "dateTime": lit.kind == "datetime",
        "date": lit.kind == "date",
    }.get(expected, lit.kind == "number")
    if not ok:
        how = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
        raise _caret_error(
            text, lit.token.pos, "INVALID_FIELD",
            f"value of filter criterion for field '{fdef.name}' must be of type {expected} "
            f"and {how}",
        )


_NUMBER_KINDS = {"int": "int", "long": "long", "double": "double", "currency": "double",
                 "percent": "double"}


def _norm_text(fdef: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    if fdef.type in {"id", "reference"} and isinstance(value, str):
        normalized = ids.normalize(value) if len(value) in (15, 18) else None
        return (normalized or value).lower()
    if isinstance(value, str):
        return value.casefold()
    return value


def _compare(fdef: FieldDef, stored: Any, op: str, lit: Literal) -> bool:
    if lit.kind == "null":
        if op in {"=", "in"}:
            return stored is None
        if op in {"!=", "notin"}:
            return stored is not None
        return False
    target = lit.value
    if fdef.type in _TEXT_FIELD_TYPES:
        left, right = _norm_text(fdef, stored), _norm_text(fdef, target)
    elif fdef.type in _NUMERIC_FIELD_TYPES:
        left, right = stored, target
    else:
        left, right = stored, target
    if op in {"=", "in"}:
        return left is not None and left == right
    if op in {"!=", "notin"}:
        return left is None or left != right
    if left is None:
        return False
    try:
        if op == "<":
            return bool(left < right)
        if op == "<=":
            return bool(left <= right)
        if op == ">":
            return bool(left > right)
        if op == ">=":
            return bool(left >= right)
    except TypeError:
        return False
    raise ValueError(op)


def _text_keys(node: Comparison, fdef: FieldDef) -> frozenset[Any] | None:
    """The normalised literals of a text `IN (...)` without nulls, computed once per node."""
    if node.text_keys is not None:  # checked first: the null scan below is O(literals)
        return node.text_keys
    if fdef.type not in _TEXT_FIELD_TYPES or any(lit.kind == "null" for lit in node.values):
        return None
    node.text_keys = frozenset(_norm_text(fdef, lit.value) for lit in node.values)
    return node.text_keys


def indexable(fdef: FieldDef) -> bool:
    """True for the fields whose ``=``/``IN`` an equality index can answer: the text ones."""
    return fdef.type in _TEXT_FIELD_TYPES


def index_key(fdef: FieldDef, value: Any) -> Any:
    """The key a stored value of an :func:`indexable` field is compared by in ``=``/``IN``.

    Two values match exactly when their keys are equal (and the stored one is not None), as
    :func:`_compare` decides; a None key stands for NULL, which only ``= null`` matches.
    """
    return _norm_text(fdef, value)


def equality_lookup(where: Any) -> tuple[FieldDef, list[Any]] | None:
    """A text ``field = '...'``/``field IN (...)`` every match must satisfy, as its field and
    the :func:`index_key` of its literals (None for ``null``); None when the WHERE has none.

    Looks at the WHERE itself and the items of its (nested) ANDs; of several, the one with
    fewest literals. Every candidate still goes through the whole WHERE (:func:`execute`).
    """
    best: tuple[FieldDef, list[Any]] | None = None
    pending = [where]
    while pending:
        node = pending.pop()
        if isinstance(node, BoolOp):
            if node.op == "and":
                pending.extend(node.items)
            continue
        if not isinstance(node, Comparison) or node.op not in {"=", "in"}:
            continue
        fdef = node.field.fdef
        if fdef is None or not indexable(fdef):
            continue
        if any(lit.kind not in {"string", "null"} for lit in node.values):
            continue  # parse() refuses these on text fields; the scan decides if one slips by
        keys = [None if lit.kind == "null" else _norm_text(fdef, lit.value)
                for lit in node.values]
        if best is None or len(keys) < len(best[1]):
            best = (fdef, keys)
    return best


def _matches(node: Any, record: dict[str, Any]) -> bool:
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(_matches(item, record) for item in node.items)
        if node.op == "or":
            return any(_matches(item, record) for item in node.items)
        return not _matches(node.items[0], record)
    fdef = node.field.fdef
    assert fdef is not None
    stored = record.get(fdef.name)
    if node.op in {"like", "notlike"}:
        rx = _like_regex(node.values[0].value)
        hit = stored is not None and rx.fullmatch(str(stored)) is not None
        return hit if node.op == "like" else not hit
    if node.op == "in":
        keys = _text_keys(node, fdef)
        if keys is not None:  # a set lookup: a target matches thousands of ids per batch
            return stored is not None and _norm_text(fdef, stored) in keys
        return any(_compare(fdef, stored, "in", lit) for lit in node.values)
    if node.op == "notin":
        return all(_compare(fdef, stored, "notin", lit) for lit in node.values)
    return _compare(fdef, stored, node.op, node.values[0])


def execute(query: Query, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The matching records (all fields), ordered and limited as the query asks."""
    rows = [r for r in records if query.where is None or _matches(query.where, r)]
    for ref, desc, nulls_first in reversed(query.order_by):
        fdef = ref.fdef
        assert fdef is not None
        key: Callable[[dict[str, Any]], Any] = _sort_key(fdef)
        present = [r for r in rows if r.get(fdef.name) is not None]
        absent = [r for r in rows if r.get(fdef.name) is None]
        present.sort(key=key, reverse=desc)
        first = nulls_first if nulls_first is not None else not desc
        rows = absent + present if first else present + absent
    rows = rows[query.offset:]
    if query.limit is not None:
        rows = rows[: query.limit]
    return rows


def _sort_key(fdef: FieldDef) -> Callable[[dict[str, Any]], Any]:
    if fdef.type in {"id", "reference"}:
        # Ids sort by their characters as they are: case is part of a 15-character Id, and
        # folding it would tie Ids that differ only in case (and break ORDER BY ..., Id paging).
        return lambda record: record.get(fdef.name)

    def key(record: dict[str, Any]) -> Any:
        value = record.get(fdef.name)
        return value.casefold() if isinstance(value, str) else value

    return key
