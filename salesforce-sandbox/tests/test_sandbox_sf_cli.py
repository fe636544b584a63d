"""The Salesforce CLI (``sf``, the most used Salesforce client) against the sandbox, unchanged.

First the endpoints the CLI calls beyond the data API, over raw HTTP (userinfo is in
test_sandbox_history.py): the User row, the Organization row, the resources of a version, the
columns of a query and the Tooling API query it sends at login. Then the CLI itself: it logs in
with an access token and runs ``sf data query``, ``create|update|delete record``, ``upsert bulk``
and ``export bulk``, over https with the test CA trusted through NODE_EXTRA_CA_CERTS.

The CLI is installed from npm into a cache folder on first use (``SF_CLI_CACHE``, default
``.sf-cli`` at the repository root, gitignored): about two minutes, once. It needs ``node`` (20
or later) and ``npm`` on PATH.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from salesforce_sandbox import Sandbox
from sandbox_helpers import API, Client, seed

# The newest CLI release that runs on Node 20. Its dependency ranges float: later jsforce-node
# releases need Node 22, so the override keeps the last one that runs on Node 20.
SF_CLI_VERSION = "2.146.3"
SF_CLI_OVERRIDES = {"@jsforce/jsforce-node": "3.10.16"}
REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 1200.0
COMMAND_TIMEOUT = 180.0


# ---------------------------------------------------------------------- raw HTTP contracts


def test_user_row_by_id(client: Client) -> None:
    user_id = client.sb.integration_user_id
    resp = client.get(f"/services/data/v51.0/sobjects/User/{user_id}")
    assert resp.status_code == 200, resp.text
    row = resp.json()
    assert row["attributes"] == {"type": "User",
                                 "url": f"/services/data/v51.0/sobjects/User/{user_id}"}
    assert row["Id"] == user_id and row["Username"] == "integration@sandbox.example"
    assert row["Name"] == "Integration User" and row["IsActive"] is True
    fields = client.get(f"{API}/sobjects/User/{user_id}", params={"fields": "Username,Email"})
    assert list(fields.json()) == ["attributes", "Username", "Email"]
    missing = client.get(f"{API}/sobjects/User/0055g00000Nobdy")
    assert missing.status_code == 404 and missing.json()[0]["errorCode"] == "NOT_FOUND"
    # Users are read-only here.
    assert client.patch(f"{API}/sobjects/User/{user_id}", json={"Email": "x@example.com"}
                        ).status_code == 404


def test_organization_row(client: Client) -> None:
    resp = client.get(f"{API}/query", params={"q": (
        "SELECT Name, InstanceName, IsSandbox, TrialExpirationDate, NamespacePrefix, "
        "OrganizationType FROM Organization")})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["totalSize"] == 1
    row = body["records"][0]
    assert row["attributes"]["type"] == "Organization"
    assert {k: v for k, v in row.items() if k != "attributes"} == {
        "Name": "Salesforce Sandbox", "InstanceName": "SBX1", "IsSandbox": False,
        "TrialExpirationDate": None, "NamespacePrefix": None,
        "OrganizationType": "Enterprise Edition"}
    org_id = client.get(f"{API}/query", params={"q": "SELECT Id FROM Organization"}).json()
    token = requests.post(client.sb.url + "/services/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": client.sb.client_id,
        "client_secret": client.sb.client_secret}).json()
    assert token["id"].split("/")[-2] == org_id["records"][0]["Id"]


def test_organization_name_from_the_seed() -> None:
    data = seed()
    data["org"]["name"] = "Acme Test Org"
    with Sandbox(data) as sb:
        api = Client(sb)
        api.login()
        resp = api.get(f"{API}/query", params={"q": "SELECT Name FROM Organization"})
        assert resp.json()["records"][0]["Name"] == "Acme Test Org"


def test_resources_of_a_version(client: Client) -> None:
    resp = client.get("/services/data/v67.0")
    assert resp.status_code == 200, resp.text
    assert "Sforce-Limit-Info" in resp.headers
    body = resp.json()
    assert body["sobjects"] == "/services/data/v67.0/sobjects"
    assert body["query"] == "/services/data/v67.0/query"
    assert body["jobs"] == "/services/data/v67.0/jobs"
    assert body["identity"].endswith("/" + client.sb.integration_user_id)
    no_token = requests.get(client.sb.url + "/services/data/v67.0")
    assert no_token.status_code == 401


def test_query_columns(client: Client) -> None:
    soql = "SELECT Id, LastName, HasOptedOutOfEmail, Didomi_Newsletter__c FROM Lead"
    resp = client.get(f"{API}/query", params={"q": soql, "columns": "true"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["entityName"] == "Lead" and body["keyPrefix"] == "00Q"
    assert body["idSelected"] is True and body["groupBy"] is False
    columns = {c["columnName"]: c for c in body["columnMetadata"]}
    assert list(columns) == ["Id", "LastName", "HasOptedOutOfEmail", "Didomi_Newsletter__c"]
    assert columns["Id"]["apexType"] == "Id" and columns["Id"]["updatable"] is False
    assert columns["LastName"]["textType"] is True
    assert columns["HasOptedOutOfEmail"]["booleanType"] is True
    assert columns["Didomi_Newsletter__c"]["custom"] is True
    assert all(c["joinColumns"] == [] and c["aggregate"] is False for c in columns.values())
    bad = client.get(f"{API}/query", params={"q": "SELECT Nope FROM Lead", "columns": "true"})
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"


def test_tooling_query_for_sandbox_processes(client: Client) -> None:
    soql = ("SELECT Id,Status,SandboxName,SandboxInfoId,LicenseType,CreatedDate,CopyProgress,"
            "SandboxOrganization,SourceId,Description,EndDate,Features FROM SandboxProcess "
            "WHERE SandboxOrganization='00D5g00000Sndbx' ORDER BY CreatedDate DESC")
    resp = client.get(f"{API}/tooling/query", params={"q": soql})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"size": 0, "totalSize": 0, "done": True, "queryLocator": None,
                           "entityTypeName": "SandboxProcess", "records": []}
    other = client.get(f"{API}/tooling/query", params={"q": "SELECT Id FROM ApexClass"})
    assert other.status_code == 400 and other.json()[0]["errorCode"] == "INVALID_TYPE"


# ---------------------------------------------------------------------- the CLI itself


def sf_cli_cache() -> Path:
    return Path(os.environ.get("SF_CLI_CACHE") or REPO_ROOT / ".sf-cli")


def installed_version(sf: Path) -> str | None:
    if not sf.exists():
        return None
    done = subprocess.run([str(sf), "--version"], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT, env={**os.environ, **quiet_env()})
    words = done.stdout.split()
    return words[0].split("/")[-1] if done.returncode == 0 and words else None


def install_sf_cli() -> Path:
    """The pinned ``sf`` from the cache, installed from npm first when missing or stale."""
    cache = sf_cli_cache()
    sf = cache / "node_modules" / ".bin" / "sf"
    if installed_version(sf) == SF_CLI_VERSION:
        return sf
    npm = shutil.which("npm")
    assert npm is not None and shutil.which("node") is not None, (
        "the Salesforce CLI test needs node (20 or later) and npm on PATH; install Node.js")
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sf-cli-", dir=cache.parent))
    (staging / "package.json").write_text(json.dumps({
        "private": True, "dependencies": {"@salesforce/cli": SF_CLI_VERSION},
        "overrides": SF_CLI_OVERRIDES}, indent=2), encoding="utf-8")
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                          cwd=staging, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert done.returncode == 0, f"npm install @salesforce/cli failed:\n{done.stderr[-3000:]}"
    shutil.rmtree(cache, ignore_errors=True)
    staging.rename(cache)  # whole or not at all: a killed install leaves only the staging dir
    assert installed_version(sf) == SF_CLI_VERSION
    return sf


def quiet_env() -> dict[str, str]:
    """No telemetry, update checks or OS keychain: the CLI only talks to the sandbox (and
    leaves no background ``sf update`` behind: the updater reads SF_DISABLE_AUTOUPDATE)."""
    return {"SF_DISABLE_TELEMETRY": "true", "SF_DISABLE_AUTOUPDATE": "true",
            "SF_AUTOUPDATE_DISABLE": "true",
            "SF_SKIP_NEW_VERSION_CHECK": "true", "SF_USE_GENERIC_UNIX_KEYCHAIN": "true",
            "SF_CONTAINER_MODE": "true"}


@pytest.fixture(scope="module")
def sf_cli() -> Path:
    return install_sf_cli()


class Cli:
    """Runs ``sf`` as a user would, in its own HOME, with the token in SF_ACCESS_TOKEN."""

    def __init__(self, sf: Path, home: Path, ca_path: Path, token: str) -> None:
        self.sf = sf
        self.cwd = home
        # sf's own bin folder first: it runs itself for some hooks.
        path = os.pathsep.join([str(sf.parent), os.environ.get("PATH", "")])
        self.env = {"PATH": path, "HOME": str(home),
                    "NODE_EXTRA_CA_CERTS": str(ca_path), "SF_ACCESS_TOKEN": token,
                    **quiet_env()}

    def run(self, *args: str) -> dict[str, Any]:
        done = subprocess.run([str(self.sf), *args, "--json"], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        # The CLI redacts tokens in its JSON output; the env (with the token) is never shown.
        assert done.returncode == 0, f"sf {' '.join(args)} failed:\n{done.stdout[-3000:]}"
        return dict(json.loads(done.stdout))


@pytest.fixture
def cli_sandbox(tmp_path: Path, sf_cli: Path) -> Iterator[tuple[Sandbox, Cli]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    with Sandbox(seed(), certfile=cert_path, keyfile=key_path) as sb:
        token = requests.post(sb.url + "/services/oauth2/token", verify=str(ca_path), data={
            "grant_type": "client_credentials", "client_id": sb.client_id,
            "client_secret": sb.client_secret}).json()["access_token"]
        home = tmp_path / "home"
        home.mkdir()
        yield sb, Cli(sf_cli, home, ca_path, token)


def test_sf_cli_runs_unchanged(cli_sandbox: tuple[Sandbox, Cli]) -> None:
    sb, cli = cli_sandbox
    login = cli.run("org", "login", "access-token", "--instance-url", sb.url, "--no-prompt",
                    "--alias", "sandbox")["result"]
    assert login["username"] == "integration@sandbox.example"
    assert login["orgId"] == sb.org.org_id
    assert login["instanceUrl"].rstrip("/") == sb.url

    queried = cli.run("data", "query", "--target-org", "sandbox", "--query",
                      "SELECT Id, Email, HasOptedOutOfEmail FROM Lead ORDER BY Email")["result"]
    assert queried["totalSize"] == 3
    assert [r["Email"] for r in queried["records"]] == [
        "jane.doe@example.com", "o'brien@example.com", "old@example.com"]

    created = cli.run("data", "create", "record", "--target-org", "sandbox", "--sobject",
                      "Lead", "--values", "LastName=Cli Company=Acme Email=cli@example.com"
                      )["result"]
    new_id = created["id"]
    assert sb.record("Lead", new_id)["Email"] == "cli@example.com"
    assert sb.record("Lead", new_id)["CreatedById"] == sb.integration_user_id

    cli.run("data", "update", "record", "--target-org", "sandbox", "--sobject", "Lead",
            "--where", "Email=cli@example.com", "--values", "DoNotCall=true")
    assert sb.record("Lead", new_id)["DoNotCall"] is True
    assert [(r["Field"], r["NewValue"]) for r in sb.history("Lead", new_id)] == [
        ("created", None), ("DoNotCall", True)]

    cli.run("data", "delete", "record", "--target-org", "sandbox", "--sobject", "Lead",
            "--record-id", new_id)
    assert sb.record("Lead", new_id, include_deleted=True)["IsDeleted"] is True

    (cli.cwd / "leads.csv").write_text(
        "Didomi_Id__c,Email,LastName,Company,HasOptedOutOfEmail\n"
        "d-1,ada@example.com,Lovelace,Analytical,true\n"
        "d-2,alan@example.com,Turing,Bletchley,false\n", encoding="utf-8")
    upserted = cli.run("data", "upsert", "bulk", "--target-org", "sandbox", "--sobject", "Lead",
                       "--file", "leads.csv", "--external-id", "Didomi_Id__c", "--wait", "5"
                       )["result"]
    assert upserted["jobInfo"]["numberRecordsProcessed"] == 2
    assert upserted["jobInfo"]["numberRecordsFailed"] == 0
    by_key = {r["Didomi_Id__c"]: r for r in sb.records("Lead") if r["Didomi_Id__c"]}
    assert by_key["d-1"]["HasOptedOutOfEmail"] is True and by_key["d-2"]["LastName"] == "Turing"

    exported = cli.run("data", "export", "bulk", "--target-org", "sandbox", "--query",
                       "SELECT Id, Email FROM Lead WHERE Didomi_Id__c != null", "--output-file",
                       "out.csv", "--result-format", "csv", "--wait", "5")["result"]
    assert exported["totalSize"] == 2
    with (cli.cwd / "out.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["Email"] for r in rows) == ["ada@example.com", "alan@example.com"]

    # Everything the CLI asked was served; the one refusal is the Dev Hub probe, answered as
    # by any org that is not a Dev Hub.
    refused = [(r.method, r.path, r.query) for r in sb.requests if r.status >= 400]
    assert [q for _, _, q in refused] == ["q=SELECT%20Id%20FROM%20ScratchOrgInfo%20limit%201"]
    assert "unknown" not in sb.api_calls()
