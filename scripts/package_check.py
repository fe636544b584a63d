#!/usr/bin/env python3
"""Build, check and install the distributions as a user would get them.

    python3 scripts/package_check.py [--keep]

For this repository's distributions (`target-salesforce-consent` at the root, `salesforce-sandbox`
in `salesforce-sandbox/`, `tap-didomi` in `tap-didomi/`, the way-back plugins, and the plugins'
shared code `consent-pipelines-common` in `consent-pipelines-common/`):

1. build the sdist, and the wheel from that sdist, with `python -m build` (so a file missing from
   the sdist breaks the wheel too);
2. `twine check --strict` both (the metadata and README render as PyPI will show them);
3. look inside: metadata (name, version, `License-Expression: Apache-2.0`, the LICENSE file),
   every file of the package's source folder in the wheel and the sdist (sample data, the
   `py.typed` type marker), the console scripts;
4. install each wheel on its own into a fresh virtualenv (pip, dependencies from the registry)
   and run from there: `--about --format=json`, `--version`, `python -m <package> --about`, the
   sandbox's `--help`, `import consent_pipelines_common` for the shared library, and read the
   sample data and `py.typed` from the installed package. The wheels of the repository's
   distributions it depends on (directly or through another) are installed beside it.

Exit status 0 when everything holds; otherwise every problem is listed and the status is 1.
`scripts/test.py` runs this as its "package check" step. `--keep` keeps the work folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bootstrap

if __name__ == "__main__":
    _bootstrap.ensure_venv(__file__, sys.argv[1:])

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import venv
import zipfile
from dataclasses import dataclass, field
from email.parser import HeaderParser
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover (Python 3.10: the `build` package depends on tomli there)
    import tomli as tomllib

ROOT = _bootstrap.ROOT
LICENSE_EXPRESSION = "Apache-2.0"


@dataclass
class Distribution:
    """One distribution of the repository and what its built files must contain."""

    project: Path  # folder holding its pyproject.toml
    package: str  # import name
    # Console scripts and the arguments that must succeed from a fresh install.
    commands: dict[str, list[str]]
    # Patterns (relative to the package folder; `*` crosses folders) each matching a file.
    required: list[str]
    # A Singer plugin answers `python -m <package> --about`; other tools `--help`.
    singer: bool = True
    # A library has no command: `python -c "import <package>"` must work.
    library: bool = False
    # Distributions of this repository it depends on: their wheels are installed beside it.
    needs: tuple[str, ...] = ()
    name: str = ""
    version: str = ""
    scripts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        meta = tomllib.loads((self.project / "pyproject.toml").read_text())["project"]
        self.name = meta["name"]
        self.version = meta["version"]
        self.scripts = dict(meta.get("scripts", {}))

    @property
    def package_dir(self) -> Path:
        return self.project / self.package

    def source_files(self) -> list[str]:
        """Every file of the package's source folder, relative to the project folder."""
        out = []
        for path in sorted(self.package_dir.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            out.append(path.relative_to(self.project).as_posix())
        return out


# The plugins' shared code: every plugin depends on it.
COMMON = "consent-pipelines-common"


def distributions() -> list[Distribution]:
    dists = [
        Distribution(
            project=ROOT / "consent-pipelines-common",
            package="consent_pipelines_common",
            commands={},
            required=["py.typed", "cli.py"],
            singer=False,
            library=True,
        ),
        Distribution(
            project=ROOT,
            package="target_salesforce_consent",
            commands={
                "target-salesforce-consent": ["--about", "--format=json"],
            },
            required=["py.typed", "sample_data/didomi_users.jsonl"],
            needs=(COMMON,),
        ),
        Distribution(
            project=ROOT / "salesforce-sandbox",
            package="salesforce_sandbox",
            commands={"salesforce-sandbox": ["--help"]},
            required=["py.typed", "demo_seed.json"],
            singer=False,
        ),
    ]
    tap = ROOT / "tap-didomi"
    if (tap / "pyproject.toml").exists():
        dists.append(
            Distribution(
                project=tap,
                package="tap_didomi",
                commands={"tap-didomi": ["--about", "--format=json"]},
                # The bundled sample export (gzipped NDJSON) the demo and the tests read.
                required=["py.typed", "*.json.gz"],
                needs=(COMMON,),
            )
        )
    tap_sf = ROOT / "tap-salesforce-consent"
    if (tap_sf / "pyproject.toml").exists():
        dists.append(
            Distribution(
                project=tap_sf,
                package="tap_salesforce_consent",
                commands={"tap-salesforce-consent": ["--about", "--format=json"]},
                required=["py.typed"],
                needs=(COMMON, "target-salesforce-consent"),
            )
        )
    target_didomi = ROOT / "target-didomi"
    if (target_didomi / "pyproject.toml").exists():
        dists.append(
            Distribution(
                project=target_didomi,
                package="target_didomi",
                commands={"target-didomi": ["--about", "--format=json"]},
                required=["py.typed"],
                needs=(COMMON, "target-salesforce-consent", "tap-didomi"),
            )
        )
    return dists


def needed_closure(dist: Distribution, dists: list[Distribution]) -> list[str]:
    """The repository distributions `dist` needs, directly or through another, each once."""
    by_name = {d.name: d for d in dists}
    out: list[str] = []
    todo = list(dist.needs)
    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        out.append(name)
        if name in by_name:
            todo += by_name[name].needs
    return out


class Check:
    """Collects problems instead of stopping at the first one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def that(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
            print(f"  PROBLEM: {problem}", flush=True)
        return ok


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)


def step(title: str) -> float:
    print(f"--> {title}", flush=True)
    return time.monotonic()


def done(start: float) -> None:
    print(f"    ({time.monotonic() - start:.1f} s)", flush=True)


def _tail(proc: subprocess.CompletedProcess[str], n: int = 3000) -> str:
    return (proc.stdout + proc.stderr)[-n:]


def build(dist: Distribution, out: Path, check: Check) -> tuple[Path, Path] | None:
    start = step(f"{dist.name}: python -m build (sdist, then the wheel from the sdist)")
    proc = run([sys.executable, "-m", "build", "--outdir", str(out), str(dist.project)])
    done(start)
    if not check.that(proc.returncode == 0, f"{dist.name}: build failed:\n{_tail(proc)}"):
        return None
    stem = dist.name.replace("-", "_")
    sdists = sorted(out.glob(f"{stem}-*.tar.gz"))
    wheels = sorted(out.glob(f"{stem}-*.whl"))
    if not check.that(len(sdists) == 1 and len(wheels) == 1,
                      f"{dist.name}: expected one sdist and one wheel, got {sdists + wheels}"):
        return None
    return sdists[0], wheels[0]


def twine_check(dist: Distribution, files: tuple[Path, Path], check: Check) -> None:
    start = step(f"{dist.name}: twine check --strict")
    proc = run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)])
    done(start)
    check.that(proc.returncode == 0, f"{dist.name}: twine check failed:\n{_tail(proc)}")


def _matches(names: set[str] | list[str], pattern: str) -> bool:
    """Whether a name matches; `*` in the pattern matches across folders too."""
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def inspect_wheel(dist: Distribution, wheel: Path, check: Check) -> None:
    start = step(f"{dist.name}: contents of {wheel.name}")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = f"{dist.name.replace('-', '_')}-{dist.version}.dist-info"
        metadata = HeaderParser().parsestr(zf.read(f"{info}/METADATA").decode())
        # A library without console scripts has no entry_points.txt.
        entry_points = (zf.read(f"{info}/entry_points.txt").decode()
                        if f"{info}/entry_points.txt" in names else "")
    check.that(metadata["Name"] == dist.name, f"{wheel.name}: Name is {metadata['Name']}")
    check.that(metadata["Version"] == dist.version,
               f"{wheel.name}: Version {metadata['Version']} != pyproject's {dist.version}")
    check.that(metadata["License-Expression"] == LICENSE_EXPRESSION,
               f"{wheel.name}: License-Expression is {metadata['License-Expression']!r}")
    check.that(f"{info}/licenses/LICENSE" in names, f"{wheel.name}: no LICENSE in {info}/licenses")
    classifiers = metadata.get_all("Classifier") or []
    check.that(not [c for c in classifiers if c.startswith("License ::")],
               f"{wheel.name}: a License classifier next to the SPDX expression")
    missing = [f for f in dist.source_files() if f not in names]
    check.that(not missing, f"{wheel.name}: files of {dist.package}/ missing: {missing}")
    for pattern in dist.required:
        check.that(_matches(names, f"{dist.package}/{pattern}"),
                   f"{wheel.name}: nothing matches {dist.package}/{pattern}")
    for script in dist.scripts:
        check.that(f"{script} =" in entry_points, f"{wheel.name}: console script {script} missing")
    done(start)


def inspect_sdist(dist: Distribution, sdist: Path, check: Check) -> None:
    start = step(f"{dist.name}: contents of {sdist.name}")
    top = sdist.name[: -len(".tar.gz")]
    with tarfile.open(sdist) as tf:
        names = {n[len(top) + 1:] for n in tf.getnames() if n.startswith(top + "/")}
    for needed in ("LICENSE", "README.md", "pyproject.toml", "PKG-INFO"):
        check.that(needed in names, f"{sdist.name}: {needed} missing")
    missing = [f for f in dist.source_files() if f not in names]
    check.that(not missing, f"{sdist.name}: files of {dist.package}/ missing: {missing}")
    done(start)


def _venv_bin(venv_dir: Path, name: str) -> Path:
    return venv_dir / ("Scripts" if os.name == "nt" else "bin") / name


# Run inside the fresh virtualenv: where the package is installed, and which of the files it
# needs are there (read through importlib.resources, as the code does).
_PROBE = """
import importlib.resources, json, sys
pkg = sys.argv[1]
root = importlib.resources.files(pkg)
def walk(node, prefix=""):
    for child in node.iterdir():
        name = prefix + child.name
        if child.is_dir():
            yield from walk(child, name + "/")
        elif not name.endswith(".pyc"):
            yield name
print(json.dumps({"location": str(root), "files": sorted(walk(root))}))
"""


def install_and_run(dist: Distribution, wheel: Path, work: Path, check: Check,
                    beside: tuple[Path, ...] = ()) -> None:
    env_dir = work / f"venv-{dist.name}"
    start = step(f"{dist.name}: fresh virtualenv, pip install {wheel.name}")
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = _venv_bin(env_dir, "python")
    env = _bootstrap.meltano_env()  # quiet, no colour; nothing of .venv leaks in
    for leak in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(leak, None)
    env["PATH"] = os.pathsep.join([str(py.parent), env.get("PATH", "")])
    proc = run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
                str(wheel), *map(str, beside)], env=env, cwd=work)
    done(start)
    if not check.that(proc.returncode == 0, f"{dist.name}: pip install failed:\n{_tail(proc)}"):
        return

    start = step(f"{dist.name}: run the installed commands")
    for script, args in dist.commands.items():
        exe = _venv_bin(env_dir, script)
        proc = run([str(exe), *args], env=env, cwd=work)
        if not check.that(proc.returncode == 0,
                          f"{dist.name}: `{script} {' '.join(args)}` failed:\n{_tail(proc)}"):
            continue
        if "--about" in args:
            about: dict[str, Any] = json.loads(proc.stdout)
            check.that(about.get("name") == dist.name,
                       f"{script} --about: name {about.get('name')}")
            check.that(about.get("version") == dist.version,
                       f"{script} --about: version {about.get('version')} != {dist.version}")
            check.that(bool(about.get("settings", {}).get("properties")),
                       f"{script} --about: no settings")
            proc = run([str(exe), "--version"], env=env, cwd=work)
            check.that(proc.returncode == 0 and f"v{dist.version}" in proc.stdout,
                       f"`{script} --version` does not say v{dist.version}: {_tail(proc, 500)}")
        else:
            check.that(proc.stdout.lstrip().startswith("usage:"),
                       f"`{script} {' '.join(args)}` printed no usage: {_tail(proc, 500)}")

    if dist.library:
        proc = run([str(py), "-c", f"import {dist.package}"], env=env, cwd=work)
        check.that(proc.returncode == 0, f"`import {dist.package}` failed:\n{_tail(proc)}")
    elif dist.singer:
        proc = run([str(py), "-m", dist.package, "--about", "--format=json"], env=env, cwd=work)
        check.that(
            proc.returncode == 0 and json.loads(proc.stdout or "{}").get("name") == dist.name,
            f"`python -m {dist.package} --about` failed:\n{_tail(proc)}")
    else:
        proc = run([str(py), "-m", dist.package, "--help"], env=env, cwd=work)
        check.that(proc.returncode == 0 and proc.stdout.lstrip().startswith("usage:"),
                   f"`python -m {dist.package} --help` failed:\n{_tail(proc)}")

    proc = run([str(py), "-c", _PROBE, dist.package], env=env, cwd=work)
    if check.that(proc.returncode == 0, f"{dist.name}: probe failed:\n{_tail(proc)}"):
        probe = json.loads(proc.stdout)
        location = Path(probe["location"])
        check.that(env_dir in location.parents,
                   f"{dist.package} imported from {location}, not from the fresh virtualenv")
        installed = set(probe["files"])
        for pattern in dist.required:
            check.that(_matches(installed, pattern),
                       f"{dist.name}: installed {dist.package}/ lacks {pattern}")
        prefix = dist.package + "/"
        missing = [f[len(prefix):] for f in dist.source_files() if f[len(prefix):] not in installed]
        check.that(not missing, f"{dist.name}: installed {dist.package}/ lacks {missing}")
    done(start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)

    check = Check()
    work = Path(tempfile.mkdtemp(prefix="package-check-"))
    began = time.monotonic()
    try:
        dists = distributions()
        listed = [f"{d.name} {d.version} ({d.project.relative_to(ROOT).as_posix()})" for d in dists]
        print("Distributions: " + ", ".join(listed), flush=True)
        if not (ROOT / "tap-didomi" / "pyproject.toml").exists():
            print("  (tap-didomi/pyproject.toml does not exist: only the target is checked)")
        wheels: dict[str, Path] = {}
        for dist in dists:
            out = work / f"dist-{dist.name}"
            built = build(dist, out, check)
            if built is None:
                continue
            wheels[dist.name] = built[1]
            twine_check(dist, built, check)
            inspect_sdist(dist, built[0], check)
            inspect_wheel(dist, built[1], check)
            beside = tuple(wheels[n] for n in needed_closure(dist, dists) if n in wheels)
            install_and_run(dist, built[1], work, check, beside)
    finally:
        if args.keep:
            print(f"Work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    took = time.monotonic() - began
    if check.problems:
        print(f"\nPackage check FAILED ({len(check.problems)} problems, {took:.0f} s):")
        for problem in check.problems:
            print(f"  - {problem.splitlines()[0]}")
        return 1
    print(f"\nPackage check passed ({took:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
