#!/usr/bin/env python3
"""Run every check of the project from a fresh clone: ruff, mypy, pytest, the package check.

    python3 scripts/test.py [pytest arguments...]

Sets up `.venv` (first run only, or when pyproject.toml changed), installs the Meltano plugins
the end-to-end test needs (when meltano.yml changed), then runs `ruff check .`, `mypy`,
`pytest` (including the `meltano`-marked end-to-end tests) and `scripts/package_check.py`
(build, `twine check` and install each distribution into a fresh virtualenv). Every step runs
even when an earlier one failed; the exit status is non-zero when any failed. Extra arguments go
to pytest, and the package check, which is not a pytest test, is then left out (run
`python3 scripts/package_check.py` for it alone).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bootstrap

if __name__ == "__main__":
    _bootstrap.ensure_venv(__file__, sys.argv[1:])

import os
import re
import subprocess
import time

ROOT = _bootstrap.ROOT


# pytest's closing line, e.g. "==== 212 passed, 1 skipped in 61.20s ====".
_PYTEST_CLOSING = re.compile(r"^=+ .*\b(passed|failed|errors?|skipped|no tests ran)\b.* =+$")


def run(
    name: str, cmd: list[str], env: dict[str, str] | None = None, closing: list[str] | None = None
) -> tuple[str, int, float]:
    """Run one step, streaming its output; collect pytest's closing line into `closing`."""
    print(f"\n==> {name}: {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if closing is not None and _PYTEST_CLOSING.match(line.strip()):
            closing.append(line.strip())
    rc = proc.wait()
    took = time.monotonic() - start
    print(f"<== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {took:.1f} s", flush=True)
    return name, rc, took


def main(pytest_args: list[str]) -> int:
    py = sys.executable
    results = []

    # The end-to-end test runs `meltano run`; install its plugins up front so that the
    # install time shows here and not as one slow test.
    meltano = _bootstrap.meltano_executable()
    if meltano is not None:
        start = time.monotonic()
        try:
            spent = _bootstrap.ensure_meltano_plugins(meltano)
            rc = 0
        except RuntimeError as exc:
            print(f"[setup] {exc}", file=sys.stderr)
            spent, rc = time.monotonic() - start, 1
        if spent or rc:
            results.append(("meltano install", rc, spent))

    results.append(run("ruff", [py, "-m", "ruff", "check", "."]))
    results.append(run("mypy", [py, "-m", "mypy"]))
    env = _bootstrap.meltano_env()
    closing: list[str] = []
    results.append(run("pytest", [py, "-m", "pytest", *pytest_args], env=env, closing=closing))
    if pytest_args:
        print("\n==> package check: not run (pytest arguments given)", flush=True)
    else:
        script = str(ROOT / "scripts" / "package_check.py")
        results.append(run("package check", [py, script], env=env))

    print("\nSummary")
    for name, rc, took in results:
        print(f"  {name:<16} {'ok' if rc == 0 else f'FAILED (exit {rc})':<18} {took:6.1f} s")
    failed = [name for name, rc, _ in results if rc != 0]
    print(f"FAILED: {', '.join(failed)}" if failed else "All checks passed.")
    if closing:  # end on pytest's own closing line, so that it is the last line of the run
        print(closing[-1])
    return 1 if failed else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
