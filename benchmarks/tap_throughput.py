"""Throughput of tap-didomi on a gzipped batch export, alone and piped into the target.

    python benchmarks/tap_throughput.py [--records 100000] [--partitions 10] [--files 4]
                                        [--matched-share 0.02] [--skip-target]

Generates a Didomi batch export of N user records (``export-id=bench/date=…/users/
part-*.json.gz``: several daily partitions, several gzipped files each; the user objects of
``benchmarks/run.py``), then runs as subprocesses and measures each one's user+system CPU
seconds and peak RSS (``os.wait4``):

* the tap alone: ``python -m tap_didomi --config cfg.json > out``;
* the tap piped into the target: ``python -m tap_didomi | python -m
  target_salesforce_consent.target`` against the sandbox, which runs in this process (its CPU
  is not in the figures). The sandbox holds a Lead for ``--matched-share`` of the users (its
  match query compares every Lead with every literal, so more Leads cost minutes of sandbox
  time without changing the target's work per record much).

Prints a table and writes it to ``benchmarks/tap_results.md``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run import Dataset, lead_for, machine_lines, start_sandbox, target_config, user_record

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "tap_results.md"


@dataclass
class Usage:
    cpu: float
    max_rss_mib: float
    wall: float
    exit_code: int


def write_export(root: Path, n: int, partitions: int, files: int, matched_share: float,
                 seed: int) -> Dataset:
    """N users over ``partitions`` days x ``files`` gzipped files; the Leads to seed."""
    rng = random.Random(seed)
    leads: list[dict[str, Any]] = []
    kinds: Counter[str] = Counter()
    per_file = -(-n // (partitions * files))
    seq = 0
    for day in range(partitions):
        folder = root / "export-id=bench" / f"date=2025-03-{day + 1:02d}" / "users"
        folder.mkdir(parents=True)
        for part in range(files):
            lines = []
            for _ in range(min(per_file, n - seq)):
                if rng.random() < matched_share:
                    ouid = f"lead{seq:07d}@example.com"
                    leads.append(lead_for(rng, ouid, seq, f"Lead{seq}"))
                    kinds["matched"] += 1
                else:
                    ouid = f"prospect{seq:07d}@example.net"
                    kinds["unmatched"] += 1
                lines.append(json.dumps(user_record(rng, ouid, seq)))
                seq += 1
            if lines:
                data = ("\n".join(lines) + "\n").encode()
                (folder / f"part-{part:05d}.json.gz").write_bytes(gzip.compress(data, 6))
    return Dataset(seq, leads, kinds)


def wait(proc: subprocess.Popen[bytes], started: float) -> Usage:
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped by wait4
    return Usage(usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, wall, code)


def run_tap_alone(config: Path, out: Path, err: Path) -> Usage:
    with out.open("wb") as fout, err.open("wb") as ferr:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "tap_didomi", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr)
        return wait(proc, started)


def run_pipeline(tap_config: Path, target_cfg: Path, work: Path) -> tuple[Usage, Usage]:
    with (work / "tap-pipe.err").open("wb") as tap_err, \
            (work / "target.err").open("wb") as target_err, \
            (work / "target.out").open("wb") as target_out:
        started = time.perf_counter()
        tap = subprocess.Popen(
            [sys.executable, "-m", "tap_didomi", "--config", str(tap_config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=tap_err)
        assert tap.stdout is not None
        target = subprocess.Popen(
            [sys.executable, "-m", "target_salesforce_consent.target", "--config",
             str(target_cfg)],
            stdin=tap.stdout, stdout=target_out, stderr=target_err)
        tap.stdout.close()  # the target holds the read end now
        tap_usage = wait(tap, started)
        target_usage = wait(target, started)
    return tap_usage, target_usage


def check(what: str, usage: Usage, err: Path) -> None:
    if usage.exit_code != 0:
        tail = err.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        sys.exit(f"{what} exited with {usage.exit_code}:\n" + "\n".join(tail))


def row(stage: str, n: int, usage: Usage) -> str:
    rate = n / usage.cpu if usage.cpu else float("inf")
    return (f"| {stage} | {n:,} | {usage.cpu:.2f} | {rate:,.0f} | {usage.max_rss_mib:.1f} | "
            f"{usage.wall:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--files", type=int, default=4, help="gzipped files per partition")
    parser.add_argument("--matched-share", type=float, default=0.02,
                        help="share of users with a Lead in the sandbox (default 0.02)")
    parser.add_argument("--skip-target", action="store_true", help="measure the tap alone")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tap-bench-") as tmp:
        work = Path(tmp)
        dataset = write_export(work / "export", args.records, args.partitions, args.files,
                               args.matched_share, args.seed)
        size_mib = sum(p.stat().st_size for p in (work / "export").rglob("*.gz")) / 2**20
        tap_cfg = work / "tap.json"
        tap_cfg.write_text(json.dumps({"export_path": str(work / "export")}))
        print(f"export: {dataset.records:,} users, {args.partitions} partitions x "
              f"{args.files} files, {size_mib:.1f} MiB gzipped", flush=True)

        alone = run_tap_alone(tap_cfg, work / "tap.out", work / "tap.err")
        check("tap-didomi", alone, work / "tap.err")
        emitted = sum(1 for line in (work / "tap.out").open("rb") if line.startswith(
            b'{"type":"RECORD"'))
        if emitted != dataset.records:
            sys.exit(f"tap-didomi emitted {emitted} records, expected {dataset.records}")
        rows = [row("tap alone (export → stdout)", dataset.records, alone)]
        print(rows[0], flush=True)

        if not args.skip_target:
            sandbox = start_sandbox(dataset)
            try:
                target_cfg = work / "target.json"
                target_cfg.write_text(json.dumps(
                    target_config(sandbox, 10_000, work / "report.jsonl", False)))
                tap_part, target_part = run_pipeline(tap_cfg, target_cfg, work)
            finally:
                sandbox.stop()
            check("tap-didomi (piped)", tap_part, work / "tap-pipe.err")
            check("target", target_part, work / "target.err")
            both = Usage(tap_part.cpu + target_part.cpu,
                         max(tap_part.max_rss_mib, target_part.max_rss_mib),
                         max(tap_part.wall, target_part.wall), 0)
            outcomes: Counter[str] = Counter(
                json.loads(line)["outcome"]
                for line in (work / "report.jsonl").read_text().splitlines() if line)
            rows += [row("tap → target: the tap", dataset.records, tap_part),
                     row("tap → target: the target", dataset.records, target_part),
                     row("tap → target: both", dataset.records, both)]
            for line in rows[1:]:
                print(line, flush=True)
            print("outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items())))

    head = ["| stage | records | CPU s | records per CPU s | peak RSS MiB | wall s |",
            "|---|---:|---:|---:|---:|---:|"]
    text = "\n".join([
        "# tap-didomi throughput",
        "",
        f"Generated by `python benchmarks/tap_throughput.py --records {args.records} "
        f"--partitions {args.partitions} --files {args.files} --matched-share "
        f"{args.matched_share}{' --skip-target' if args.skip_target else ''}`.",
        "",
        *machine_lines(),
        f"- export: {args.records:,} user objects in {args.partitions} daily partitions x "
        f"{args.files} gzipped files ({size_mib:.1f} MiB); the sandbox holds a Lead for "
        f"{len(dataset.leads):,} of them",
        "",
        "CPU is each process's own user+system time (`os.wait4`); the sandbox runs in the "
        "benchmark's process and is not counted. \"both\" adds the two processes' CPU.",
        "",
        *head,
        *rows,
        "",
    ])
    args.output.write_text(text, encoding="utf-8")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
