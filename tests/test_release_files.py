"""The release files agree with each other: versions, license, changelog, .env.example, CI.

What the built distributions contain is checked by `scripts/package_check.py`; the Meltano Hub
definitions by `tests/test_hub_definitions.py`.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
TAP = ROOT / "tap-didomi"


def pyproject(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    return data


def projects() -> list[tuple[Path, str, str]]:
    """(folder, distribution, import package) of each distribution in the repository."""
    found = [(ROOT, "target-salesforce-consent", "target_salesforce_consent")]
    if (TAP / "pyproject.toml").exists():
        found.append((TAP, "tap-didomi", "tap_didomi"))
    return found


@pytest.mark.parametrize(("project", "name", "package"), projects(), ids=[p[1] for p in projects()])
def test_version_agrees_everywhere(project: Path, name: str, package: str) -> None:
    """pyproject.toml, the installed distribution, `--version`, `python -m` and the changelog."""
    version = pyproject(project)["version"]
    assert importlib.metadata.version(name) == version, "reinstall: pip install -e"
    exe = Path(sys.executable).parent / name
    for cmd in ([str(exe), "--version"], [sys.executable, "-m", package, "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        assert out.startswith(f"{name} v{version},"), (cmd, out)
    changelog = (project / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(version)}\]( - \d{{4}}-\d\d-\d\d)?$", changelog, re.M), (
        f"{project / 'CHANGELOG.md'} has no section for {version}"
    )


@pytest.mark.parametrize(("project", "name", "package"), projects(), ids=[p[1] for p in projects()])
def test_license_is_spdx_with_the_file(project: Path, name: str, package: str) -> None:
    meta = pyproject(project)
    assert meta["license"] == "Apache-2.0"
    assert meta["license-files"] == ["LICENSE"]
    text = (project / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX" in text, "the full text"
    assert not [c for c in meta.get("classifiers", []) if c.startswith("License ::")]


def test_changelog_follows_keep_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "keepachangelog.com" in text
    headings = re.findall(r"^## \[([^\]]+)\](.*)$", text, re.M)
    assert headings[0] == ("Unreleased", ""), "the first section collects unreleased changes"
    for version, rest in headings[1:]:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
        assert re.fullmatch(r" - \d{4}-\d\d-\d\d", rest), (version, rest)
    sections = set(re.findall(r"^### (.+)$", text, re.M))
    assert sections <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    for version, _ in headings:  # every heading is a link
        assert re.search(rf"^\[{re.escape(version)}\]: https://", text, re.M), version


# Environment variables that name a setting of a plugin or the Salesforce connection.
_VARIABLE = re.compile(
    r"\b((?:SALESFORCE|TAP_DIDOMI|TARGET_SALESFORCE_CONSENT)_[A-Z0-9_]*[A-Z0-9])\b"
)


def _used_variables() -> set[str]:
    """Every such variable README.md and meltano.yml mention, and those meltano.yml reads."""
    used = set()
    for path in (ROOT / "README.md", ROOT / "meltano.yml", TAP / "README.md"):
        if path.exists():
            used |= set(_VARIABLE.findall(path.read_text()))
    meltano_refs = re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\}?", (ROOT / "meltano.yml").read_text())
    used |= {v for v in meltano_refs if not v.startswith("MELTANO_")}  # Meltano sets those
    return used


def _setting_variables() -> set[str]:
    """`<PLUGIN>_<SETTING>` for every setting of the Hub definitions (Meltano reads these)."""
    names = set()
    for path in (ROOT / "plugins").rglob("*.yml"):
        data = yaml.safe_load(path.read_text())
        prefix = data["name"].upper().replace("-", "_")
        names |= {f"{prefix}_{s['name'].upper()}" for s in data["settings"]}
    return names


def _env_example() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", text, re.M))


def test_env_example_names_every_variable_in_use() -> None:
    listed = _env_example()
    missing = _used_variables() - listed
    assert not missing, f".env.example lacks {sorted(missing)}"
    unknown = listed - _used_variables() - _setting_variables()
    assert not unknown, f".env.example names variables nothing reads: {sorted(unknown)}"


def test_ci_runs_the_readme_test_command_on_every_supported_python() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "python3 scripts/test.py" in readme
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    (job,) = workflow["jobs"].values()
    versions = job["strategy"]["matrix"]["python-version"]
    classifiers = pyproject(ROOT)["classifiers"]
    supported = [c.rsplit(" :: ", 1)[1] for c in classifiers
                 if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert versions == supported == ["3.10", "3.11", "3.12", "3.13"]
    assert pyproject(ROOT)["requires-python"] == ">=3.10"
    runs = [step.get("run", "") for step in job["steps"]]
    assert "python3 scripts/test.py" in runs


def test_pre_commit_runs_the_test_commands_checks() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    entries = {h["id"]: h["entry"] for repo in config["repos"] for h in repo["hooks"]}
    assert entries == {
        "ruff": ".venv/bin/python -m ruff check .",
        "mypy": ".venv/bin/python -m mypy",
    }
    script = (ROOT / "scripts" / "test.py").read_text()
    assert '[py, "-m", "ruff", "check", "."]' in script
    assert '[py, "-m", "mypy"]' in script
