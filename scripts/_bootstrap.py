"""Shared set-up for `scripts/demo.py` and `scripts/test.py` (standard library only).

`ensure_venv()` creates or reuses `.venv` in the repository root, installs the package with
its `test` and `meltano` extras, the plugins' shared code in `consent-pipelines-common/`, the tap
in `tap-didomi/` with its `test` and `s3` extras and the Salesforce sandbox in
`salesforce-sandbox/` (all editable) when a `pyproject.toml` changed since
the last install, and then re-executes the calling script under `.venv`'s Python.
`ensure_meltano_plugins()` runs
`meltano install` when `meltano.yml` or either `pyproject.toml` changed since the last one.
Both are idempotent: a second run with nothing changed installs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
EXTRAS = "test,meltano"
TAP_DIR = ROOT / "tap-didomi"
TAP_EXTRAS = "test,s3"
SANDBOX_DIR = ROOT / "salesforce-sandbox"
SANDBOX_EXTRAS = "test"
TAP_SF_DIR = ROOT / "tap-salesforce-consent"
TAP_SF_EXTRAS = "test"
TARGET_DIDOMI_DIR = ROOT / "target-didomi"
COMMON_DIR = ROOT / "consent-pipelines-common"
_MARKER = VENV / ".target-salesforce-consent-install"
_MELTANO_MARKER = ROOT / ".meltano" / ".target-salesforce-consent-install"
_REEXEC_FLAG = "TARGET_SALESFORCE_CONSENT_BOOTSTRAPPED"

# Plugin virtualenvs that `meltano install` must have produced.
_MELTANO_VENVS = (
    ROOT / ".meltano" / "extractors" / "tap-didomi" / "venv",
    ROOT / ".meltano" / "loaders" / "target-salesforce-consent" / "venv",
    ROOT / ".meltano" / "extractors" / "tap-salesforce-consent" / "venv",
    ROOT / ".meltano" / "loaders" / "target-didomi" / "venv",
)


def _bin(venv_dir: Path, name: str) -> Path:
    if os.name == "nt":
        return venv_dir / "Scripts" / (name + (".exe" if name != "activate" else ""))
    return venv_dir / "bin" / name


def venv_python() -> Path:
    return _bin(VENV, "python")


def venv_bin(name: str) -> Path:
    return _bin(VENV, name)


def _digest(*paths: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes() if p.exists() else b"<missing>")
    return h.hexdigest()


def _in_venv() -> bool:
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_venv(script: str, argv: list[str]) -> None:
    """Make sure the code below this call runs under `.venv` with the package installed."""
    if sys.version_info < (3, 10):  # noqa: UP036 (this may run under an old python3)
        sys.exit(f"Python 3.10 or newer is required (this is {sys.version.split()[0]}).")

    want = _digest(ROOT / "pyproject.toml", TAP_DIR / "pyproject.toml",
                   SANDBOX_DIR / "pyproject.toml", TAP_SF_DIR / "pyproject.toml",
                   TARGET_DIDOMI_DIR / "pyproject.toml", COMMON_DIR / "pyproject.toml",
                   extra=f"{EXTRAS};{TAP_EXTRAS};{SANDBOX_EXTRAS};{TAP_SF_EXTRAS}")
    py = venv_python()
    if not py.exists():
        say(f"[setup] creating virtualenv {VENV.relative_to(ROOT)}/ ...")
        try:
            venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
        except Exception as exc:
            sys.exit(
                f"Could not create {VENV}: {exc}\n"
                "On Debian/Ubuntu install the venv module first: apt-get install python3-venv"
            )
    have = _MARKER.read_text().strip() if _MARKER.exists() else ""
    if have != want:
        # The shared code first: every plugin depends on it and it is on no registry. Then the
        # sandbox: pip 23 resolves the loader's test extra to it only in this order.
        editables = ["./consent-pipelines-common", f"./salesforce-sandbox[{SANDBOX_EXTRAS}]",
                     f".[{EXTRAS}]",
                     f"./tap-salesforce-consent[{TAP_SF_EXTRAS}]", f"./tap-didomi[{TAP_EXTRAS}]",
                     "./target-didomi"]
        say(f"[setup] pip install -e {' -e '.join(editables)} into .venv "
            "(first run: a minute or two) ...")
        cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
        for editable in editables:
            cmd += ["-e", editable]
        rc = subprocess.call(cmd, cwd=ROOT)
        if rc != 0:
            sys.exit(f"[setup] pip install failed (exit {rc})")
        _MARKER.write_text(want + "\n")

    if _in_venv():
        return
    if os.environ.get(_REEXEC_FLAG) == "1":
        sys.exit(f"[setup] re-exec under {py} did not run inside .venv; giving up")
    env = dict(os.environ, **{_REEXEC_FLAG: "1"})
    env.pop("PYTHONHOME", None)
    args = [str(py), script, *argv]
    if os.name == "nt":  # os.execve does not replace the process on Windows
        sys.exit(subprocess.call(args, env=env))
    os.execve(str(py), args, env)


def meltano_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for non-interactive, quiet Meltano runs."""
    env = dict(os.environ if base is None else base)
    env.setdefault("MELTANO_SEND_ANONYMOUS_USAGE_STATS", "false")
    env.setdefault("NO_COLOR", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop(_REEXEC_FLAG, None)
    return env


def meltano_executable() -> Path | None:
    """The `meltano` next to the running interpreter (normally `.venv/bin/meltano`)."""
    cand = Path(sys.executable).parent / ("meltano.exe" if os.name == "nt" else "meltano")
    if cand.exists():
        return cand
    cand = venv_bin("meltano")
    return cand if cand.exists() else None


@contextlib.contextmanager
def meltano_project_lock() -> Iterator[None]:
    """Serialise Meltano runs of the demo and the tests in this project.

    Two `meltano run`s in one project share `.meltano/run/<plugin>/` (the tap's discovered
    catalog is rewritten there), so concurrent runs can read each other's half-written files.
    """
    path = ROOT / ".meltano" / ".scripts.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_meltano_plugins(meltano: Path, quiet: bool = False) -> float:
    """Run `meltano install` unless nothing it depends on changed. Returns seconds spent."""
    with meltano_project_lock():
        return _ensure_meltano_plugins(meltano, quiet)


def _ensure_meltano_plugins(meltano: Path, quiet: bool) -> float:
    import time

    want = _digest(ROOT / "meltano.yml", ROOT / "pyproject.toml", TAP_DIR / "pyproject.toml",
                   TAP_SF_DIR / "pyproject.toml", TARGET_DIDOMI_DIR / "pyproject.toml",
                   COMMON_DIR / "pyproject.toml")
    have = _MELTANO_MARKER.read_text().strip() if _MELTANO_MARKER.exists() else ""
    if have == want and all(v.exists() for v in _MELTANO_VENVS):
        return 0.0
    if not quiet:
        say("[setup] meltano install (tap-didomi, target-salesforce-consent, "
            "tap-salesforce-consent, target-didomi) ...")
    start = time.monotonic()
    proc = subprocess.run(
        [str(meltano), "--log-level=warning", "install"],
        cwd=ROOT, env=meltano_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout)
        raise RuntimeError(f"meltano install failed (exit {proc.returncode})")
    _MELTANO_MARKER.parent.mkdir(parents=True, exist_ok=True)
    _MELTANO_MARKER.write_text(want + "\n")
    return time.monotonic() - start
