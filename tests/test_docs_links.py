"""Every relative link of the README, docs/ and each distribution's README leads somewhere.

A link to a file must name a file or folder of the repository; a link with an anchor
(`page.md#section`, `#section`) must name a heading of that page, spelt as GitHub makes its
anchors (lower case, punctuation dropped, spaces to hyphens, `-1`, `-2` for repeats). Links to
other sites are not followed (the tests reach only loopback).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = ["salesforce-sandbox", "tap-didomi", "tap-salesforce-consent", "target-didomi"]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *(ROOT / name / "README.md" for name in DISTRIBUTIONS)]

FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose_lines(text: str, *, keep_code: bool = False) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1, inline code removed unless kept."""
    lines: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line if keep_code else INLINE_CODE.sub("", line)))
    return lines


def links(document: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for number, line in prose_lines(document.read_text()):
        found.extend((number, target) for target in INLINE_LINK.findall(line))
        reference = REFERENCE_LINK.match(line)
        if reference:
            found.append((number, reference.group(1)))
    return found


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading (its text without Markdown markup)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[`*]|<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    seen: dict[str, int] = {}
    result: set[str] = set()
    for _, line in prose_lines(document.read_text(), keep_code=True):
        heading = HEADING.match(line)
        if not heading:
            continue
        anchor = github_anchor(heading.group(1))
        count = seen.get(anchor, 0)
        result.add(anchor if count == 0 else f"{anchor}-{count}")
        seen[anchor] = count + 1
    return result


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    broken: list[str] = []
    for number, target in links(document):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        destination = (document.parent / unquote(path_part)).resolve() if path_part else document
        where = f"{document.relative_to(root)}:{number}: {target}"
        if not destination.exists():
            broken.append(f"{where} (no such file)")
        elif root not in destination.parents and destination != root:
            broken.append(f"{where} (outside the repository)")
        elif anchor and destination.suffix == ".md" and unquote(anchor) not in anchors(
                destination):
            broken.append(f"{where} (no heading with that anchor)")
    return broken


def test_documents_exist() -> None:
    missing = [str(d.relative_to(ROOT)) for d in DOCUMENTS if not d.is_file()]
    assert not missing, missing


@pytest.mark.parametrize("document", DOCUMENTS, ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS])
def test_relative_links_resolve(document: Path) -> None:
    broken = broken_links(document)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_checker_finds_a_broken_file_an_unknown_anchor_and_keeps_good_links(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    docs = repo / "docs"
    docs.mkdir(parents=True)
    (docs / "other.md").write_text("# Other\n\n## 1. Run the receiver\n")
    (repo / "README.md").write_text("# Readme\n")
    (tmp_path / "outside.md").write_text("# Outside\n")
    page = docs / "probe.md"
    page.write_text("# Probe: the `links` check\n\n## Again\n\n## Again\n\n"
                    "[a](missing.md) [b](other.md#no-such-heading) "
                    "[c](other.md#1-run-the-receiver) [d](#probe-the-links-check) "
                    "[e](#again-1) [f](https://example.com/x.md) "
                    "[g](../README.md) [h](../../outside.md) `[i](inline-code.md)`\n\n"
                    "[ref]: ../missing-too.md\n\n```\n[j](fenced.md)\n```\n")
    broken = broken_links(page, repo)
    assert [line.split(": ", 1)[1] for line in broken] == [
        "missing.md (no such file)",
        "other.md#no-such-heading (no heading with that anchor)",
        "../../outside.md (outside the repository)",
        "../missing-too.md (no such file)",
    ]
