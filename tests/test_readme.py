"""The settings table of docs/configuration.md is the one `--about --format=markdown` prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CONFIGURATION = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
MARKERS = re.compile(r"<!-- settings:start.*?-->\n(.*?)<!-- settings:end -->", re.S)


def about_settings_table() -> str:
    about = subprocess.run(
        [sys.executable, "-m", "target_salesforce_consent.target", "--about", "--format=markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    section = about.split("## Settings", 1)[1]
    rows = [line for line in section.strip().splitlines() if line.startswith("|")]
    return "\n".join(rows) + "\n"


def test_settings_table_matches_about() -> None:
    match = MARKERS.search(CONFIGURATION.read_text())
    assert match, "docs/configuration.md lacks the settings markers"
    assert match.group(1) == about_settings_table(), (
        "The settings table of docs/configuration.md differs from `--about --format=markdown`; "
        "regenerate it with "
        "`python -c 'from tests.test_readme import regenerate; regenerate()'`"
    )


def regenerate() -> None:
    text = CONFIGURATION.read_text()
    start = text.index("<!-- settings:start")
    start = text.index("-->\n", start) + 4
    end = text.index("<!-- settings:end -->")
    CONFIGURATION.write_text(text[:start] + about_settings_table() + text[end:])
