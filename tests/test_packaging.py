"""The README's Meltano route, word for word, in a brand-new project.

The commands the README and docs/ show for a Meltano project (the blocks marked
`docs-test: meltano-project`, in reading order: build the wheels into the clone's `dist/`,
`meltano init`, `meltano add --from-ref` of the Hub definitions in `plugins/`, `.env` from
`.env.example`, a first `meltano run` on the sandbox, a Contacts loader, a job and a schedule,
the cron line and the CI job's steps, the look for failed records and a full refresh) run as one
bash script in a temporary folder, against a copy of this repository. Only what a shared test
machine needs changes (tests/test_docs_commands.py: the sandbox's port, the cron line's folder).
Nothing of the repository's own meltano.yml is used.

The packaging of the distributions themselves (sdist, wheel, twine, fresh virtualenvs) is
checked by `scripts/package_check.py`, a step of `scripts/test.py`.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import bootstrap_module
from tests.test_docs_commands import (
    RunningSandbox,
    for_this_machine,
    meltano_project_script,
    repository_copy,
    run_bash,
    start_sandbox,
)

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
TARGET_DEFINITION = PLUGINS / "loaders" / "target-salesforce-consent--consent-pipelines.yml"
TAP_DEFINITION = PLUGINS / "extractors" / "tap-didomi--consent-pipelines.yml"
TAP_SF_DEFINITION = PLUGINS / "extractors" / "tap-salesforce-consent--consent-pipelines.yml"
TARGET_DIDOMI_DEFINITION = PLUGINS / "loaders" / "target-didomi--consent-pipelines.yml"
TAP_PROJECT = ROOT / "tap-didomi"

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
    assert (TAP_PROJECT / "pyproject.toml").exists(), "tap-didomi/ does not exist"
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


def _clean_env() -> dict[str, str]:
    """No setting from the caller's shell or from the repository's project leaks in."""
    env: dict[str, str] = bootstrap_module().meltano_env()
    for key in list(env):
        if key.startswith(("TAP_", "TARGET_", "SALESFORCE_", "MELTANO_")) and key not in (
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS",
        ):
            del env[key]
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class DocsRun:
    project: Path
    output: str
    sandbox: RunningSandbox
    leads_before: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def docs_run(meltano: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsRun]:
    """The documented commands, run once in a fresh folder against a sandbox."""
    base = tmp_path_factory.mktemp("fresh-meltano")
    sandbox = start_sandbox()
    try:
        leads_before = {lead["Id"]: lead for lead in sandbox_records(sandbox, "Lead")}
        repository_copy(base / "target-salesforce-consent", sandbox.url)
        project = base / "consent-project"
        script = for_this_machine(meltano_project_script(), sandbox.url)
        script = script.replace("/srv/consent-project", str(project))
        proc = run_bash(script, base, _clean_env())
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"the documented commands failed:\n{output[-8000:]}"
        yield DocsRun(project, output, sandbox, leads_before)
    finally:
        sandbox.process.terminate()
        sandbox.process.wait(timeout=30)


def sandbox_records(sandbox: RunningSandbox, sobject: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{sandbox.url}/__sandbox/records/{sobject}") as answer:
        records: list[dict[str, Any]] = json.load(answer)
    return records


def reports(project: Path, prefix: str) -> list[list[dict[str, Any]]]:
    """The rows of each report `output/<prefix><timestamp>.jsonl`, oldest run first."""
    found = sorted(p for p in (project / "output").glob(f"{prefix}*.jsonl")
                   if p.name[len(prefix)].isdigit())
    return [[json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            for p in found]


def test_added_definitions_are_the_hub_definitions(docs_run: DocsRun) -> None:
    """What `meltano add --from-ref` wrote is the definition, its PyPI pip_url included."""
    meltano_yml = yaml.safe_load((docs_run.project / "meltano.yml").read_text())
    for kind, definition in (("loaders", TARGET_DEFINITION), ("extractors", TAP_DEFINITION),
                             ("loaders", TARGET_DIDOMI_DEFINITION),
                             ("extractors", TAP_SF_DEFINITION)):
        want = yaml.safe_load(definition.read_text())
        (got,) = [p for p in meltano_yml["plugins"][kind] if p["name"] == want["name"]]
        for key in ("name", "variant", "namespace", "executable", "pip_url", "capabilities"):
            assert got[key] == want[key], key
        assert [s["name"] for s in got["settings"]] == [s["name"] for s in want["settings"]]
        sensitive = [s["name"] for s in want["settings"] if s.get("sensitive")]
        assert [s["name"] for s in got["settings"] if s.get("sensitive")] == sensitive
    loaders = [p["name"] for p in meltano_yml["plugins"]["loaders"]]
    assert loaders == ["target-salesforce-consent", "target-salesforce-consent-contacts",
                       "target-didomi"]
    extractors = {p["name"]: p for p in meltano_yml["plugins"]["extractors"]}
    assert list(extractors) == ["tap-didomi", "tap-salesforce-consent", "tap-didomi-webhooks"]
    webhooks = extractors["tap-didomi-webhooks"]
    assert webhooks["inherit_from"] == "tap-didomi"
    assert webhooks["config"]["export_path"] == ""
    assert webhooks["config"]["follow"] is True
    assert "utilities" not in meltano_yml["plugins"], "a plugin was added as a utility"


def test_meltano_runs_in_a_fresh_project(docs_run: DocsRun) -> None:
    records = export_records(sample_export())
    assert records
    assert docs_run.sandbox.client_secret not in docs_run.output
    lead_runs = reports(docs_run.project, "report-")
    # The README's run, the Contacts page's, the job, the cron line, the CI job, the full
    # refresh: the first reads the whole export, the next ones only what is new (nothing).
    assert len(lead_runs) == 6, [len(rows) for rows in lead_runs]
    first, *again, full_refresh = lead_runs
    assert len(first) == len(records), "one report line per record of the export"
    assert {row["outcome"] for row in first} <= OUTCOMES
    updated = [row for row in first if row["outcome"] == "updated"]
    assert updated, f"nothing written: {sorted({row['outcome'] for row in first})}"
    leads = {lead["Id"]: lead for lead in sandbox_records(docs_run.sandbox, "Lead")}
    assert set(leads) == set(docs_run.leads_before), "no Lead created (upsert_mode is off)"
    for row in updated:
        assert row["salesforce_ids"], row
        for lead_id in row["salesforce_ids"]:
            for name, value in row["fields"].items():
                if name == "Didomi_Topics__c":
                    assert set(str(leads[lead_id][name] or "").split(";")) == set(
                        str(value or "").split(";")
                    ), (row, leads[lead_id])
                else:
                    assert leads[lead_id][name] == value, (name, row, leads[lead_id])
    assert any(leads[i] != docs_run.leads_before[i] for i in leads), "no Lead changed"
    for rows in again:  # with the state Meltano kept: at most the newest partition again
        assert len(rows) < len(records)
        assert {r["outcome"] for r in rows} <= OUTCOMES - {"updated", "inserted", "failed"}
    assert len(full_refresh) == len(records)
    assert {r["outcome"] for r in full_refresh} <= OUTCOMES - {"updated", "inserted", "failed"}
    (contacts,) = reports(docs_run.project, "report-contacts-")
    assert len(contacts) == len(records)
    assert "no failed record" in docs_run.output


def test_the_way_back_runs_in_a_fresh_project(docs_run: DocsRun) -> None:
    """docs/two-way.md's own-project block: the sandbox's people changed nothing yet, so the
    run reads no change, after both plugins checked their settings against the sandbox and the
    Didomi emulator; the loader's own writes of the forward runs are not read back."""
    (report,) = reports(docs_run.project, "didomi-report-")
    assert report == []
    assert "tap-salesforce-consent" in docs_run.output
    assert "Writing changes of HasOptedOutOfEmail, Didomi_Newsletter__c to Didomi" \
        in docs_run.output, docs_run.output[-5000:]


def test_schedule_is_listed(docs_run: DocsRun) -> None:
    assert "daily-consent-sync" in docs_run.output
    assert (docs_run.project / "consent-sync.log").exists(), "the cron line wrote no log"


def _meltano_run_warning(docs_run: DocsRun, env: dict[str, str]) -> str:
    """`meltano --log-level=warning run ...` in the project, expected to fail; its output."""
    run_env = _clean_env()
    run_env.update(env)
    proc = subprocess.run(
        ["meltano", "--log-level=warning", "run", "--full-refresh", "tap-didomi",
         "target-salesforce-consent"],
        cwd=docs_run.project, env=run_env, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_a_failed_run_names_the_problem_at_log_level_warning(docs_run: DocsRun,
                                                             tmp_path: Path) -> None:
    connection = {
        "TARGET_SALESFORCE_CONSENT_INSTANCE_URL": docs_run.sandbox.url,
        "TARGET_SALESFORCE_CONSENT_CLIENT_ID": docs_run.sandbox.client_id,
        "TARGET_SALESFORCE_CONSENT_CLIENT_SECRET": docs_run.sandbox.client_secret,
        "TAP_DIDOMI_EXPORT_PATH": str(sample_export()),
    }
    bad_mapping = json.dumps([{"id": "Didomi_Newsletter__c", "value": "purposes.x.enabledd"}])
    output = _meltano_run_warning(
        docs_run, {**connection, "TARGET_SALESFORCE_CONSENT_MAPPINGS": bad_mapping})
    assert "target-salesforce-consent: error: The configuration has 1 problem(s)" in output
    assert "source path 'purposes.x.enabledd' is not valid" in output, output[-3000:]
    assert "Loader failed" in output
    assert "[info" not in output, output[-3000:]

    corrupt = tmp_path / "export-id=broken" / "date=2025-03-01" / "users" / "part-00000.json.gz"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(gzip.compress(b'{"id": "a"}\n' * 500)[:60])
    output = _meltano_run_warning(docs_run, {**connection, "TAP_DIDOMI_EXPORT_PATH": str(tmp_path)})
    assert f"tap-didomi: error: {corrupt}: corrupt gzip data" in output, output[-3000:]
    assert "unhandled error" not in output
    assert "[info" not in output, output[-3000:]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
