"""The README's settings table is the one `--about --format=markdown` prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
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


def test_readme_settings_table_matches_about() -> None:
    match = MARKERS.search(README.read_text())
    assert match, "README.md lacks the settings markers"
    assert match.group(1) == about_settings_table(), (
        "README settings table differs from `--about --format=markdown`; regenerate it with "
        "`python -c 'from tests.test_readme import regenerate; regenerate()'`"
    )


def regenerate() -> None:
    text = README.read_text()
    start = text.index("<!-- settings:start")
    start = text.index("-->\n", start) + 4
    end = text.index("<!-- settings:end -->")
    README.write_text(text[:start] + about_settings_table() + text[end:])
