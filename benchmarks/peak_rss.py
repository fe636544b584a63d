"""Run a Python module or script in this process and record its peak RSS (VmHWM) at exit.

    python benchmarks/peak_rss.py OUT_FILE (-m MODULE | SCRIPT) [ARGS...]

A child's ``ru_maxrss`` (from ``wait4``) is not its own peak on Linux: exec carries over the
high-water mark of the process it replaced, and a child of the benchmark starts as a copy of
the benchmark, sandbox and generated data included. ``VmHWM`` in ``/proc/self/status`` belongs
to the new address space only, so this wrapper writes it (KiB) to OUT_FILE when the program
ends, however it ends.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def _write_peak(out: Path) -> None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            out.write_text(line.split()[1])


def main() -> None:
    out = Path(sys.argv[1])
    atexit.register(_write_peak, out)
    if sys.argv[2] == "-m":
        sys.argv = [sys.argv[3], *sys.argv[4:]]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[2:]
        runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
