"""The run report: one JSON line per consent change, as the Salesforce target writes its own."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from target_didomi.reverse import Outcome


@dataclass(slots=True)
class ChangeLine:
    """One line of the report: the change, what Didomi held, and what was done."""

    stream: str
    history_id: str | None
    organization_user_id: str | None
    field: str | None
    outcome: Outcome
    salesforce_id: str | None = None
    changed_at: str | None = None
    value: bool | None = None  # the Didomi choice the change states
    event_id: str | None = None
    didomi_value: bool | None = None
    didomi_changed_at: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        line: dict[str, Any] = {
            "stream": self.stream,
            "history_id": self.history_id,
            "salesforce_id": self.salesforce_id,
            "organization_user_id": self.organization_user_id,
            "field": self.field,
            "changed_at": self.changed_at,
            "outcome": self.outcome.value,
            "value": self.value,
            "event_id": self.event_id,
            "didomi_value": self.didomi_value,
            "didomi_changed_at": self.didomi_changed_at,
            "error": self.error,
        }
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


def format_counts(counts: Counter[Outcome]) -> str:
    parts = [f"{o.value}={counts[o]}" for o in Outcome if counts[o]]
    return " ".join(parts) if parts else "no records"


class ChangeReport:
    """Appends each batch's lines to the report file (created empty when the run starts)."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.counts: Counter[Outcome] = Counter()
        self._file: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8", errors="backslashreplace")

    def write(self, lines: Iterable[ChangeLine]) -> None:
        for line in lines:
            self.counts[line.outcome] += 1
            if self._file is not None:
                self._file.write(line.to_json() + "\n")
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
