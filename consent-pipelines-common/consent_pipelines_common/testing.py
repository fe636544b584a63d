"""Helpers for the plugins' tests of what a user sees on the command line (standard library
only): the logging Meltano gives a plugin declaring `structured-logging`, and its lines read
back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def structured_logging(tmp_path: Path, level: str = "WARNING") -> dict[str, str]:
    """The logging Meltano gives a plugin declaring `structured-logging`, as a file."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": "singer_sdk.logging.StructuredFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["console"]},
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    return {"SINGER_SDK_LOG_CONFIG": str(path)}


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """The lines of `stderr` that are JSON (structured log lines), parsed; others skipped."""
    found = []
    for line in stderr.splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def about_text_gaps(about_json: str, about_text: str) -> list[str]:
    """The settings of `--about --format=json` that the text `--about` leaves out, or whose
    description it leaves out (whitespace aside); empty when the text shows them all."""
    about = json.loads(about_json)
    text = " ".join(about_text.split())
    gaps = []
    for name, schema in about["settings"]["properties"].items():
        description = " ".join((schema.get("description") or "").split())
        if f"{name} (" not in text or description not in text:
            gaps.append(name)
    return gaps
