"""Salesforce record and job ids: 15 characters, or 18 with the case-safe checksum.

Ids are 15 case-sensitive characters, or 18 characters: the 15 plus a 3-character checksum
that makes them case-insensitive. The APIs always answer with the 18-character form.
"""

from __future__ import annotations

import itertools
import re
import threading

_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-5]{3})?$")

KEY_PREFIXES: dict[str, str] = {
    "Account": "001",
    "Contact": "003",
    "Lead": "00Q",
    "User": "005",
    "Organization": "00D",
    "Individual": "0PK",
    "LeadHistory": "017",  # every field history object shares the 017 prefix
    "ContactHistory": "017",
    "SandboxProcess": "0GR",
    "Job": "750",
    "QueryLocator": "01g",
}


def to18(id15: str) -> str:
    """Append the case-insensitivity checksum to a 15-character id."""
    if len(id15) != 15:
        raise ValueError(f"not a 15-character id: {id15!r}")
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        flags = 0
        for i, ch in enumerate(chunk):
            if "A" <= ch <= "Z":
                flags |= 1 << i
        suffix += _CHECKSUM_ALPHABET[flags]
    return id15 + suffix


def normalize(record_id: str) -> str | None:
    """The canonical 18-character form of a 15- or 18-character id, or None if malformed.

    An 18-character id whose checksum does not match its first 15 characters (once their
    case is repaired from the checksum) is malformed.
    """
    if not _ID_RE.match(record_id):
        return None
    if len(record_id) == 15:
        return to18(record_id)
    # 18 characters are case-insensitive: repair the case of the first 15 from the checksum.
    head = record_id[:15]
    suffix = record_id[15:].upper()
    repaired = []
    for chunk_index, chunk in enumerate((head[0:5], head[5:10], head[10:15])):
        flags = _CHECKSUM_ALPHABET.index(suffix[chunk_index])
        for i, ch in enumerate(chunk):
            repaired.append(ch.upper() if flags & (1 << i) else ch.lower() if ch.isalpha() else ch)
    candidate = "".join(repaired)
    if to18(candidate) != candidate + suffix:
        return None
    return candidate + suffix


_ID_SHAPE_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def id_shaped(text: str) -> bool:
    """True for 15 or 18 letters and digits: what a URL segment must be to be read as an Id."""
    return _ID_SHAPE_RE.match(text) is not None


def key_prefix(record_id: str) -> str:
    return record_id[:3]


class IdFactory:
    """Hands out valid 18-character ids: prefix + zero padding + base62 counter.

    The counter never repeats, but a seed may hold any Id: :meth:`Org.new_id` skips the ones
    the org holds, so use that, not this, for an Id that must be new to the org.
    """

    def __init__(self, pod: str = "5g") -> None:
        self._pod = pod
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def new(self, prefix: str) -> str:
        with self._lock:
            n = next(self._counter)
        digits = ""
        while n:
            n, rem = divmod(n, 62)
            digits = _BASE62[rem] + digits
        body = self._pod + digits.rjust(15 - len(prefix) - len(self._pod), "0")
        return to18(prefix + body)
