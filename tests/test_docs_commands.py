"""Every command the README and docs/ show is run by a test.

A shell block (```bash, ```sh, ```cron) or a CI job (```yaml) in a document carries a marker
on the line before it, `<!-- docs-test: KIND -->`, that says which test runs it:

- `repo`: run here, with bash, from the repository's root (the two commands, pytest);
- `fresh-venv`: run here in a new virtualenv, with `REPO` naming a copy of the repository;
- `sandbox`: the sandbox's own command; run here, its printed line checked;
- `.ci/run`: each command is a line of `.ci/run`, which CI runs;
- `meltano-project` (and its `cron` and `ci` variants): run one after the other, word for
  word, in a fresh Meltano project by `tests/test_packaging.py`;
- `meltano-run`: each line is a `meltano run` of the repository's own `meltano.yml` that a
  `meltano`-marked test (`tests/test_meltano_*.py`) runs with the same plugins in the same
  order, or an `export NAME=...` of a variable that such a test sets (to its own value);
- `receiver`: the webhook receiver's start, run word for word with bash by
  `start_documented_receiver` (its own test checks `/healthz`, a token and a stored webhook;
  `tests/test_meltano_webhooks.py` fills the spool of its `meltano run` through it);
- `receiver-check`: run with bash while that receiver runs, with its client id and secret in
  the environment (`127.0.0.1:8080` becomes its address, the spool the test's folder);
- `failed-records`: the listing and replay of kept failed records, run in order on a real
  store of failed records by `tests/test_trust_failed_records.py`.

What a harness must change to run a block on a shared machine is the same everywhere:
`salesforce-sandbox --port 8765` runs on a free port instead, and `127.0.0.1:8765` (in the block
and in the copy of `sample_config.json`) becomes that port; `/srv/consent-project` (the cron
line's project) becomes the test's project folder; the Didomi emulator's `--port 8766` (and
`127.0.0.1:8766`) becomes a free port. The receiver's block likewise listens on a
free port of loopback (`--host 0.0.0.0 --port 8080` becomes `--host 127.0.0.1 --port 0`, the
port read back from its "listening on" line) and spools into the test's folder instead of
`/var/lib/didomi-webhooks`; the test, playing Didomi, reads the client secret the block generated
from the receiver process's environment.

Two things the docs describe cannot run here, so they are prose, not command blocks: a container
runtime (the container section states the image's content and the same receiver command the
`receiver` test runs) and Didomi's own API (its endpoint is named in a sentence and its body
shown as a ```json block, which is data, not a command).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KINDS = {"repo", "fresh-venv", "sandbox", ".ci/run", "meltano-project",
         "meltano-project cron", "meltano-project ci", "failed-records", "meltano-run",
         "receiver", "receiver-check"}
FENCE = re.compile(r"^```(\w*)[ \t]*$", re.M)
MARKER = re.compile(r"<!-- docs-test: ([^>]*?) -->\s*$")
COMMAND_LANGS = {"bash", "sh", "shell", "console", "cron"}
DOC_PORT = "127.0.0.1:8765"
DIDOMI_DOC_PORT = "127.0.0.1:8766"
SANDBOX_LINE = re.compile(
    r"^instance_url=(http://127\.0\.0\.1:\d+) client_id=(\S+) client_secret=(\S+)$", re.M
)


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    lang: str
    kind: str | None
    body: str

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def document_blocks(document: Path) -> list[Block]:
    """The fenced blocks of a document, with the marker on the line before each."""
    text = document.read_text()
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening or not opening.group(1):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before.strip())
        blocks.append(Block(document, i + 1, opening.group(1),
                            marker.group(1) if marker else None,
                            "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for document in DOCUMENTS for block in document_blocks(document)]


def blocks_of(kind: str) -> list[Block]:
    return [block for block in all_blocks() if block.kind == kind]


def meltano_project_script() -> str:
    """The `meltano-project` blocks in reading order (README first), as one bash script.

    cron lines run their command part; a CI job runs its `run:` steps.
    """
    order = [ROOT / "README.md", ROOT / "docs" / "configuration.md",
             ROOT / "docs" / "running-every-day.md", ROOT / "docs" / "two-way.md",
             ROOT / "docs" / "near-real-time.md"]
    parts: list[str] = []
    for document in order:
        for block in document_blocks(document):
            if block.kind == "meltano-project":
                parts.append(block.body)
            elif block.kind == "meltano-project cron":
                for line in block.body.splitlines():
                    fields = line.split(None, 5)
                    assert len(fields) == 6 and not line.startswith("#"), line
                    parts.append(fields[5] + "\n")
            elif block.kind == "meltano-project ci":
                parts.extend(ci_run_steps(block.body))
    return "".join(parts)


def ci_run_steps(workflow: str) -> list[str]:
    import yaml

    job = yaml.safe_load(workflow)
    steps = [step for job_def in job["jobs"].values() for step in job_def["steps"]]
    return [step["run"].rstrip("\n") + "\n" for step in steps if "run" in step]


def for_this_machine(script: str, sandbox_url: str) -> str:
    """The harness's substitutions (see the module docstring)."""
    kept = [line for line in script.splitlines()
            if not line.startswith("salesforce-sandbox --port 8765")]
    script = "\n".join(kept).replace("http://" + DOC_PORT, sandbox_url) + "\n"
    if DIDOMI_DOC_PORT in script:
        with socket.socket() as probe:  # a free port of loopback for the Didomi emulator
            probe.bind(("127.0.0.1", 0))
            port = str(probe.getsockname()[1])
        script = script.replace(DIDOMI_DOC_PORT, "127.0.0.1:" + port)
        script = script.replace("--port 8766", "--port " + port)
    return script


@dataclass
class RunningSandbox:
    url: str
    client_id: str
    client_secret: str
    process: subprocess.Popen[str]


def start_sandbox(command: str = "salesforce-sandbox --port 8765") -> RunningSandbox:
    """The documented command, on a free port; its printed line read back."""
    argv = command.split()
    assert argv[:2] == ["salesforce-sandbox", "--port"], command
    exe = Path(sys.executable).parent / "salesforce-sandbox"
    process = subprocess.Popen([str(exe), "--port", "0", *argv[3:]], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        match = SANDBOX_LINE.match(line.strip())
        if match:
            for ready in process.stdout:
                if ready.strip() == "ready":
                    return RunningSandbox(match.group(1), match.group(2), match.group(3),
                                          process)
    process.kill()
    raise AssertionError("salesforce-sandbox printed no instance_url=... line")


@pytest.fixture()
def sandbox() -> Iterator[RunningSandbox]:
    running = start_sandbox()
    try:
        yield running
    finally:
        running.process.terminate()
        running.process.wait(timeout=30)


def repository_copy(dest: Path, sandbox_url: str) -> Path:
    """The repository's files (tracked and new, not ignored); sample_config.json on the sandbox."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    config = dest / "sample_config.json"
    config.write_text(config.read_text().replace("http://" + DOC_PORT, sandbox_url))
    return dest


def run_bash(script: str, cwd: Path, env: dict[str, str],
             timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    # Background jobs of the script (a sandbox) end with it.
    wrapped = "set -eo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script
    return subprocess.run(["bash", "-c", wrapped], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _env_with(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TAP_DIDOMI_", "TARGET_SALESFORCE_CONSENT_", "SALESFORCE_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    return env


# -- every block is run somewhere --------------------------------------------------------------


def test_every_command_block_says_which_test_runs_it() -> None:
    untested = [block.name for block in all_blocks()
                if block.lang in COMMAND_LANGS and block.kind not in KINDS]
    assert not untested, f"command blocks without a <!-- docs-test: KIND --> marker: {untested}"
    unknown = [block.name for block in all_blocks()
               if block.kind is not None and block.kind not in KINDS]
    assert not unknown, unknown


def test_meltano_run_blocks_are_run_by_the_meltano_tests() -> None:
    tests = " ".join(path.read_text() for path in (ROOT / "tests").glob("test_meltano_*.py"))
    blocks = blocks_of("meltano-run")
    assert blocks
    for block in blocks:
        for line in block.body.splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] == ["export"]:
                (assignment,) = words[1:]
                name = assignment.split("=", 1)[0]
                assert re.search(f'"{re.escape(name)}"', tests), \
                    f"{block.name}: no meltano test sets {name}"
                continue
            assert words[:2] == ["meltano", "run"], f"{block.name}: {line!r}"
            plugins = r",\s*".join(f'"{re.escape(name)}"' for name in words[2:])
            assert re.search(plugins, tests), f"{block.name}: no meltano test runs {line!r}"


def test_ci_run_blocks_are_lines_of_ci_run() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    blocks = blocks_of(".ci/run")
    assert blocks
    for block in blocks:
        for line in block.body.splitlines():
            command = line.split("#", 1)[0].strip()
            assert command in ci, f"{block.name}: {command!r} is not run by .ci/run"


def test_the_packaging_test_runs_the_meltano_project_blocks() -> None:
    script = meltano_project_script()
    assert "meltano init" in script and "meltano run" in script
    packaging = (ROOT / "tests" / "test_packaging.py").read_text()
    assert "meltano_project_script()" in packaging


def test_sandbox_block_prints_the_documented_line() -> None:
    (block,) = blocks_of("sandbox")
    running = start_sandbox(block.body.strip())
    try:
        shown = block.document.read_text().split(block.body, 1)[1]
        documented = SANDBOX_LINE.search(shown)
        assert documented, f"{block.name}: the printed line is not shown after the command"
        assert (documented.group(2), documented.group(3)) == (
            running.client_id, running.client_secret)
        assert documented.group(1) == "http://" + DOC_PORT
    finally:
        running.process.terminate()
        running.process.wait(timeout=30)


# -- the webhook receiver ----------------------------------------------------------------------


RECEIVER_SUBSTITUTIONS = {
    "--spool /var/lib/didomi-webhooks": "--spool {spool}",
    "--host 0.0.0.0": "--host 127.0.0.1",
    "--port 8080": "--port 0",
}
RECEIVER_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+) ")


@dataclass
class RunningReceiver:
    url: str
    client_id: str
    client_secret: str
    shell: subprocess.Popen[str]
    receiver_pid: int
    lines: list[str]

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def token(self) -> str:
        answer = requests.post(self.url + "/oauth/token", timeout=30, data={
            "grant_type": "client_credentials", "client_id": self.client_id,
            "client_secret": self.client_secret})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def stop(self) -> int | None:
        """SIGTERM to the receiver (the block's shell then ends with its status)."""
        try:
            os.kill(self.receiver_pid, signal.SIGTERM)
            return self.shell.wait(timeout=60)
        finally:
            if self.shell.poll() is None:
                os.killpg(self.shell.pid, signal.SIGKILL)
                self.shell.wait(timeout=30)


def _process_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = [root]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def _receiver_environment(shell_pid: int) -> tuple[int, dict[str, str]]:
    """The receiver's process id and environment (what the block's exports gave it)."""
    for pid in _process_tree(shell_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"didomi-webhook-receiver" in cmdline:
            pairs = (item.split("=", 1) for item in environ.decode().split("\0") if "=" in item)
            return pid, dict(pairs)
    raise AssertionError("no didomi-webhook-receiver process under the block's shell")


def start_documented_receiver(spool: Path) -> RunningReceiver:
    """The `receiver` block, word for word but for the substitutions of the module docstring."""
    (block,) = blocks_of("receiver")
    script = block.body
    for documented, here in RECEIVER_SUBSTITUTIONS.items():
        assert script.count(documented) == 1, f"{block.name}: expected {documented!r} once"
        script = script.replace(documented, here.format(spool=shlex.quote(str(spool))))
    env = {k: v for k, v in _env_with(Path(sys.executable).parent).items()
           if not k.startswith("DIDOMI_WEBHOOK_")}
    shell = subprocess.Popen(["bash", "-c", "set -eo pipefail\n" + script], cwd=spool.parent,
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    listening: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert shell.stdout is not None
        for line in shell.stdout:
            lines.append(line)
            match = RECEIVER_LISTENING.search(line)
            if match:
                listening.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(60) or not listening:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(timeout=30)
        raise AssertionError(f"{block.name}: the receiver did not start:\n{''.join(lines)}")
    pid, environment = _receiver_environment(shell.pid)
    return RunningReceiver(listening[0], environment["DIDOMI_WEBHOOK_CLIENT_ID"],
                           environment["DIDOMI_WEBHOOK_CLIENT_SECRET"], shell, pid, lines)


def test_receiver_block_serves_health_tokens_and_stores_webhooks(tmp_path: Path) -> None:
    spool = tmp_path / "didomi-webhooks"
    receiver = start_documented_receiver(spool)
    try:
        health = requests.get(receiver.url + "/healthz", timeout=30)
        assert health.status_code == 200 and health.json()["stored"] == 0, health.text
        assert receiver.client_id == "didomi-webhooks"
        assert re.fullmatch(r"[0-9a-f]{64}", receiver.client_secret)  # openssl rand -hex 32
        refused = requests.post(receiver.url + "/oauth/token", timeout=30, data={
            "grant_type": "client_credentials", "client_id": receiver.client_id,
            "client_secret": "not-the-generated-secret"})
        assert refused.status_code == 401
        body = {"type": "user.updated", "parameters": {"new_entity": {
            "id": "didomi-user-1", "organization_user_id": "jane.doe@example.com"}}}
        stored = requests.post(receiver.url + "/webhooks/didomi", json=body, timeout=30,
                               headers={"Authorization": f"Bearer {receiver.token()}"})
        assert stored.status_code == 200 and stored.json()["status"] == "stored", stored.text
        assert (spool / "webhooks.sqlite3").is_file()
    finally:
        status = receiver.stop()
    assert status == 0, receiver.output[-3000:]
    assert receiver.client_secret not in receiver.output


def test_receiver_check_block_stores_a_webhook_that_the_tap_reads(tmp_path: Path) -> None:
    (block,) = blocks_of("receiver-check")
    spool = tmp_path / "didomi-webhooks"
    receiver = start_documented_receiver(spool)
    try:
        script = block.body.replace("http://127.0.0.1:8080", receiver.url)
        script = script.replace("/var/lib/didomi-webhooks", shlex.quote(str(spool)))
        env = {k: v for k, v in _env_with(Path(sys.executable).parent).items()
               if not k.startswith("DIDOMI_WEBHOOK_")}
        env.update(DIDOMI_WEBHOOK_CLIENT_ID=receiver.client_id,
                   DIDOMI_WEBHOOK_CLIENT_SECRET=receiver.client_secret)
        proc = run_bash(script, tmp_path, env, timeout=300)
    finally:
        status = receiver.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '"status": "stored"' in proc.stdout.replace('":"', '": "'), proc.stdout[:3000]
    records = [json.loads(line) for line in proc.stdout.splitlines()
               if line.startswith('{"type":"RECORD"') or line.startswith('{"type": "RECORD"')]
    assert [(r["stream"], r["record"]["parameters"]["new_entity"]["organization_user_id"])
            for r in records] == [("webhooks", "jane.doe@example.com")], proc.stdout[-3000:]
    assert status == 0 and receiver.client_secret not in proc.stdout + proc.stderr


# -- running them ------------------------------------------------------------------------------


REPO_BLOCKS = blocks_of("repo")


@pytest.mark.meltano
@pytest.mark.parametrize("block", REPO_BLOCKS, ids=[b.name for b in REPO_BLOCKS])
def test_repo_block_runs(block: Block) -> None:
    proc = run_bash(block.body, ROOT, _env_with(Path(sys.executable).parent))
    assert proc.returncode == 0, f"{block.name}:\n{(proc.stdout + proc.stderr)[-6000:]}"


@pytest.mark.meltano
def test_fresh_venv_blocks_run(tmp_path: Path, sandbox: RunningSandbox) -> None:
    blocks = blocks_of("fresh-venv")
    assert blocks
    repo = repository_copy(tmp_path / "target-salesforce-consent", sandbox.url)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    env = _env_with(env_dir / "bin")
    env["REPO"] = str(repo)
    work = tmp_path / "work"
    work.mkdir()
    script = for_this_machine("".join(b.body for b in blocks), sandbox.url)
    proc = run_bash(script, work, env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "Run: " in output and "updated=" in output, output[-3000:]
    assert sandbox.client_secret not in output
