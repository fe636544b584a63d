"""Shared fixtures: a seeded sandbox org and a way to run the target against it.

Every test of the write path goes through the sandbox over real HTTP on loopback.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from salesforce_sandbox import Sandbox

from target_salesforce_consent.salesforce.client import RetryPolicy
from target_salesforce_consent.target import TargetSalesforceConsent

CUSTOM_FIELDS = [
    {"name": "Didomi_Newsletter__c", "type": "boolean", "label": "Newsletter consent"},
    {"name": "SMS_Opt_In__c", "type": "boolean", "label": "SMS consent"},
    {
        "name": "Didomi_Topics__c",
        "type": "multipicklist",
        "label": "Topics",
        "picklistValues": ["News", "Offers", "Events"],
        "restrictedPicklist": True,
    },
    {"name": "Didomi_Consent_Updated__c", "type": "datetime", "label": "Consent updated"},
    {"name": "Consent_Date__c", "type": "date", "label": "Consent date"},
    {"name": "Consent_Note__c", "type": "string", "length": 255, "label": "Consent note"},
    {"name": "Legacy_Flag__c", "type": "boolean", "updateable": False, "label": "Legacy"},
    {
        "name": "Didomi_User_Id__c",
        "type": "string",
        "length": 80,
        "externalId": True,
        "label": "Didomi user id",
    },
]

SEED: dict[str, Any] = {
    "org": {"client_id": "test-client-id", "client_secret": "test-client-secret-value"},
    "objects": {
        "Lead": {
            "custom_fields": CUSTOM_FIELDS,
            "records": [
                {
                    "FirstName": "Jane",
                    "LastName": "Doe",
                    "Company": "Acme",
                    "Email": "jane@example.com",
                },
                {
                    "FirstName": "John",
                    "LastName": "Roe",
                    "Company": "Acme",
                    "Email": "john@example.com",
                    "HasOptedOutOfEmail": True,
                },
                {
                    "FirstName": "Twin",
                    "LastName": "One",
                    "Company": "Acme",
                    "Email": "twin@example.com",
                },
                {
                    "FirstName": "Twin",
                    "LastName": "Two",
                    "Company": "Acme",
                    "Email": "TWIN@example.com",
                },
                {
                    "FirstName": "Conv",
                    "LastName": "Erted",
                    "Company": "Acme",
                    "Email": "converted@example.com",
                    "IsConverted": True,
                },
                {
                    "FirstName": "Quote",
                    "LastName": "O'Brien",
                    "Company": "Acme",
                    "Email": "o'brien@example.com",
                },
                {
                    "FirstName": "Keyed",
                    "LastName": "Lead",
                    "Company": "Acme",
                    "Email": "keyed@example.com",
                    "Didomi_User_Id__c": "CRM-000123",
                },
            ],
        },
        "Contact": {
            "custom_fields": CUSTOM_FIELDS,
            "records": [
                {"FirstName": "Carla", "LastName": "Contact", "Email": "carla@example.com"},
            ],
        },
    },
}


def bootstrap_module() -> ModuleType:
    """scripts/_bootstrap.py (not a package): the venv and Meltano helpers of the scripts."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "_bootstrap.py"
    spec = importlib.util.spec_from_file_location("_bootstrap", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FastTarget(TargetSalesforceConsent):
    """The real target with test timings: no backoff sleeps, immediate polling."""

    retry_policy = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=0.0)
    poll_interval = 0.0


@pytest.fixture(autouse=True)
def failed_records_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test keeps the failed records of its runs in its own folder (the default one is
    under XDG_STATE_HOME outside Meltano), so no test retries another's."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    monkeypatch.delenv("MELTANO_PROJECT_ROOT", raising=False)
    return home / "target-salesforce-consent" / "failed-records"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=copy.deepcopy(SEED)) as sb:
        yield sb


@pytest.fixture
def report_path(tmp_path: Path) -> Path:
    return tmp_path / "report.jsonl"


def base_config(sb: Sandbox, report_path: Path | None = None, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "instance_url": sb.url,
        "client_id": sb.client_id,
        "client_secret": sb.client_secret,
        "salesforce_object": "Lead",
        "mappings": [
            {"id": "HasOptedOutOfEmail", "value": "purposes.newsletter.enabled", "invert": True},
            {"id": "Didomi_Newsletter__c", "value": "purposes.newsletter.enabled"},
        ],
    }
    if report_path is not None:
        config["report_path"] = str(report_path)
    config.update(overrides)
    return config


@dataclass
class RunResult:
    stdout: str
    stderr: str
    report: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def states(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def outcomes(self) -> dict[str | None, str]:
        return {line["organization_user_id"]: line["outcome"] for line in self.report}

    def line_for(self, ouid: str) -> dict[str, Any]:
        found = [line for line in self.report if line["organization_user_id"] == ouid]
        assert len(found) == 1, f"expected one report line for {ouid}, got {found}"
        return found[0]


def singer_lines(
    records: Sequence[dict[str, Any]],
    *,
    stream: str = "users",
    state: dict[str, Any] | None = None,
) -> str:
    lines = [
        {
            "type": "SCHEMA",
            "stream": stream,
            "schema": {"type": "object", "properties": {}},
            "key_properties": [],
        },
        *({"type": "RECORD", "stream": stream, "record": r} for r in records),
    ]
    if state is not None:
        lines.append({"type": "STATE", "value": state})
    return "\n".join(json.dumps(line) for line in lines) + "\n"


def run_target(
    config: dict[str, Any],
    messages: str,
    *,
    target_class: type[TargetSalesforceConsent] = FastTarget,
) -> RunResult:
    """Run the target in-process as the CLI would: construct (the check), read, end of pipe."""
    out, err = io.StringIO(), io.StringIO()
    error: BaseException | None = None
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.INFO)
    logger = logging.getLogger(target_class.name)
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    with redirect_stdout(out), redirect_stderr(err):
        try:
            target = target_class(config=config, validate_config=True)
            target.process_lines(io.StringIO(messages))
            target.process_endofpipe()
        except Exception as exc:  # the tests assert on it
            error = exc
        finally:
            logger.removeHandler(handler)
            logger.setLevel(previous_level)
    report: list[dict[str, Any]] = []
    path = config.get("report_path")
    if path and Path(path).is_file():
        report = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    return RunResult(out.getvalue(), err.getvalue(), report, error)


def user(
    ouid: str | None,
    *,
    purposes: list[dict[str, Any]] | None = None,
    updated_at: str = "2024-06-18T16:40:03.512Z",
    **extra: Any,
) -> dict[str, Any]:
    """A user-shaped Didomi record."""
    record: dict[str, Any] = {
        "id": f"didomi-{ouid}",
        "organization_id": "acme",
        "organization_user_id": ouid,
        "version": 1,
        "created_at": "2024-03-02T09:14:55.120Z",
        "updated_at": updated_at,
        "consents": {"purposes": purposes or [], "vendors": {"enabled": [], "disabled": []}},
    }
    record.update(extra)
    return record


def event(
    ouid: str | None,
    *,
    purposes: list[dict[str, Any]],
    created_at: str = "2024-06-19T08:00:00.000Z",
    **extra: Any,
) -> dict[str, Any]:
    """An event-shaped Didomi record."""
    record: dict[str, Any] = {
        "id": f"event-{ouid}-{created_at}",
        "organization_id": "acme",
        "created_at": created_at,
        "status": "confirmed",
        "user": {"id": f"didomi-{ouid}", "organization_user_id": ouid},
        "consents": {"purposes": purposes},
    }
    record.update(extra)
    return record


def newsletter(enabled: bool | None) -> dict[str, Any]:
    return {"id": "newsletter", "enabled": enabled}
