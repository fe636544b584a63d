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
  order;
- `failed-records`: the listing and replay of kept failed records, run in order on a real
  store of failed records by `tests/test_trust_failed_records.py`.

What a harness must change to run a block on a shared machine is the same everywhere:
`salesforce-sandbox --port 8765` runs on a free port instead, and `127.0.0.1:8765` (in the block
and in the copy of `sample_config.json`) becomes that port; `/srv/consent-project` (the cron
line's project) becomes the test's project folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KINDS = {"repo", "fresh-venv", "sandbox", ".ci/run", "meltano-project",
         "meltano-project cron", "meltano-project ci", "failed-records", "meltano-run"}
FENCE = re.compile(r"^```(\w*)[ \t]*$", re.M)
MARKER = re.compile(r"<!-- docs-test: ([^>]*?) -->\s*$")
COMMAND_LANGS = {"bash", "sh", "shell", "console", "cron"}
DOC_PORT = "127.0.0.1:8765"
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
             ROOT / "docs" / "running-every-day.md"]
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
    return "\n".join(kept).replace("http://" + DOC_PORT, sandbox_url) + "\n"


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
