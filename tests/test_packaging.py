"""Both plugins, added the way a Meltano user adds them, run together in a brand-new project.

`meltano init` makes a fresh project in a temporary folder; `meltano add --from-ref` adds the
Hub definitions from `plugins/` (their `pip_url` pointed at this checkout instead of PyPI,
which is the only change), and `meltano run tap-didomi target-salesforce-consent` reads the
tap's bundled sample export into the sandbox. Nothing of the repository's own meltano.yml is
used. A second run, with the state the first one kept, must read nothing again.

The packaging of the distributions themselves (sdist, wheel, twine, fresh virtualenvs) is
checked by `scripts/package_check.py`, a step of `scripts/test.py`.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from salesforce_sandbox import DEMO_SEED, Sandbox

from tests.conftest import bootstrap_module

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
TARGET_DEFINITION = PLUGINS / "loaders" / "target-salesforce-consent--consent-pipelines.yml"
TAP_DEFINITION = PLUGINS / "extractors" / "tap-didomi--consent-pipelines.yml"
TAP_PROJECT = ROOT / "tap-didomi"
SEED = DEMO_SEED

# The Lead mapping of the repository's meltano.yml (the purpose ids of the sample data).
MAPPINGS = [
    {"id": "HasOptedOutOfEmail", "value": "purposes.marketing-9HmMn6Vt.enabled", "invert": True},
    {"id": "Didomi_Newsletter__c", "value": "purposes.newsletter-Lq3Vx8Rw.enabled"},
    {
        "id": "Didomi_Topics__c",
        "value": "purposes.marketing-9HmMn6Vt.values.topics-CFWKNVJV",
        "value_map": {"dK7rBBXk": "News", "Ab12Cd34": "Offers", "Zz9Yy8Xx": "Events"},
    },
]
OUTCOMES = {
    "updated",
    "inserted",
    "failed",
    "skipped_unchanged",
    "skipped_unmatched",
    "skipped_converted",
    "skipped_stale",
    "skipped_no_ouid",
    "skipped_filtered",
    "skipped_multiple_matches",
}

pytestmark = pytest.mark.meltano


def sample_export() -> Path:
    """The tap's bundled sample export: the folder holding its `export-id=...` folders."""
    assert (TAP_PROJECT / "pyproject.toml").exists(), "tap-didomi/ (issue 8) does not exist yet"
    for path in sorted((TAP_PROJECT / "tap_didomi").rglob("*.json.gz")):
        for parent in path.parents:
            if parent.name.startswith("export-id="):
                return parent.parent
    raise AssertionError("tap-didomi bundles no export-id=... folder of .json.gz files")


def export_records(export: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted(export.rglob("*.json*")):
        opener: Any = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


@pytest.fixture(scope="module")
def meltano() -> Path:
    exe = bootstrap_module().meltano_executable()
    assert exe is not None, "meltano is not installed next to this Python: python3 scripts/test.py"
    return Path(exe)


@pytest.fixture()
def sandbox() -> Iterator[Any]:
    sb = Sandbox(seed=str(SEED)).start(host="127.0.0.1", port=0)
    try:
        yield sb
    finally:
        sb.stop()


def _clean_env() -> dict[str, str]:
    """No setting from the caller's shell or from the repository's project leaks in."""
    env: dict[str, str] = bootstrap_module().meltano_env()
    for key in list(env):
        if key.startswith(("TAP_", "TARGET_", "SALESFORCE_", "MELTANO_")) and key not in (
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS",
        ):
            del env[key]
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    return env


def _meltano(
    meltano: Path, args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(meltano), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"meltano {' '.join(args)}:\n{(proc.stdout + proc.stderr)[-6000:]}"
    return proc


def _local_definition(definition: Path, pip_url: Path, out: Path) -> Path:
    """The Hub definition unchanged, but installed from this checkout rather than PyPI."""
    data = yaml.safe_load(definition.read_text())
    assert data["pip_url"] == data["name"], "the definition installs the PyPI distribution"
    data["pip_url"] = str(pip_url)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def project(meltano: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Meltano project with both plugins added from their definitions."""
    base = tmp_path_factory.mktemp("fresh-meltano")
    env = _clean_env()
    _meltano(meltano, ["init", "project", "--no_usage_stats"], base, env)
    project = base / "project"
    loader = _local_definition(TARGET_DEFINITION, ROOT, base / "loader.yml")
    _meltano(meltano, ["add", "--plugin-type", "loader", "target-salesforce-consent",
                       "--from-ref", str(loader)], project, env)
    assert (TAP_PROJECT / "pyproject.toml").exists(), "tap-didomi/ (issue 8) does not exist yet"
    extractor = _local_definition(TAP_DEFINITION, TAP_PROJECT, base / "extractor.yml")
    _meltano(meltano, ["add", "--plugin-type", "extractor", "tap-didomi",
                       "--from-ref", str(extractor)], project, env)
    added = yaml.safe_load((project / "meltano.yml").read_text())["plugins"]
    assert set(added) == {"loaders", "extractors"}, added  # each once, of its own type
    return project


def test_added_definitions_are_the_hub_definitions(project: Path) -> None:
    """What `meltano add --from-ref` wrote is the definition, apart from pip_url."""
    meltano_yml = yaml.safe_load((project / "meltano.yml").read_text())
    for kind, definition in (("loaders", TARGET_DEFINITION), ("extractors", TAP_DEFINITION)):
        want = yaml.safe_load(definition.read_text())
        (got,) = meltano_yml["plugins"][kind]
        assert got["name"] == want["name"] and got["variant"] == want["variant"]
        assert got["namespace"] == want["namespace"]
        assert got["executable"] == want["executable"]
        assert got["capabilities"] == want["capabilities"]
        assert [s["name"] for s in got["settings"]] == [s["name"] for s in want["settings"]]
        sensitive = [s["name"] for s in want["settings"] if s.get("sensitive")]
        assert [s["name"] for s in got["settings"] if s.get("sensitive")] == sensitive


def test_meltano_run_in_a_fresh_project(
    meltano: Path, project: Path, sandbox: Any, tmp_path: Path
) -> None:
    export = sample_export()
    records = export_records(export)
    assert records, export
    report = tmp_path / "report.jsonl"
    env = _clean_env()
    env.update(
        {
            "TAP_DIDOMI_EXPORT_PATH": str(export),
            "TARGET_SALESFORCE_CONSENT_INSTANCE_URL": sandbox.url,
            "TARGET_SALESFORCE_CONSENT_CLIENT_ID": sandbox.client_id,
            "TARGET_SALESFORCE_CONSENT_CLIENT_SECRET": sandbox.client_secret,
            "TARGET_SALESFORCE_CONSENT_SALESFORCE_OBJECT": "Lead",
            "TARGET_SALESFORCE_CONSENT_MAPPINGS": json.dumps(MAPPINGS),
            "TARGET_SALESFORCE_CONSENT_CONSENT_TIMESTAMP_FIELD": "Didomi_Consent_Updated__c",
            "TARGET_SALESFORCE_CONSENT_REPORT_PATH": str(report),
        }
    )
    leads_before = {lead["Id"]: lead for lead in sandbox.records("Lead")}

    proc = _meltano(meltano, ["run", "tap-didomi", "target-salesforce-consent"], project, env)
    output = proc.stdout + proc.stderr
    assert sandbox.client_secret not in output
    assert sandbox.client_id not in output

    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    assert len(rows) == len(records), "one report line per record of the export"
    assert {row["outcome"] for row in rows} <= OUTCOMES
    updated = [row for row in rows if row["outcome"] == "updated"]
    assert updated, f"nothing written: {sorted({row['outcome'] for row in rows})}"
    leads = {lead["Id"]: lead for lead in sandbox.records("Lead")}
    assert set(leads) == set(leads_before), "no Lead created (upsert_mode is off)"
    for row in updated:
        assert row["salesforce_ids"], row
        for lead_id in row["salesforce_ids"]:
            for name, value in row["fields"].items():
                if name == "Didomi_Topics__c":
                    assert set(str(leads[lead_id][name] or "").split(";")) == set(
                        str(value or "").split(";")
                    ), (row, leads[lead_id])
                elif name != "Didomi_Consent_Updated__c":
                    assert leads[lead_id][name] == value, (name, row, leads[lead_id])
    assert any(leads[i] != leads_before[i] for i in leads), "no Lead changed"

    # A second run, with the state Meltano kept: the tap skips what it read (at most the newest
    # partition comes again), and what comes again changes nothing in Salesforce.
    second_report = tmp_path / "report-second.jsonl"
    env["TARGET_SALESFORCE_CONSENT_REPORT_PATH"] = str(second_report)
    _meltano(meltano, ["run", "tap-didomi", "target-salesforce-consent"], project, env)
    again = second_report.read_text().splitlines() if second_report.exists() else []
    again_rows = [json.loads(line) for line in again if line.strip()]
    assert len(again_rows) < len(rows), "the second run read the whole export again"
    assert {r["outcome"] for r in again_rows} <= OUTCOMES - {"updated", "inserted", "failed"}
    assert {lead["Id"]: lead for lead in sandbox.records("Lead")} == leads


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
