"""The bundled sample export: the target's sample data, as Didomi would deliver it."""

from __future__ import annotations

import gzip
import json
from importlib.resources import files
from pathlib import Path

from didomi_tap_helpers import TapRunner

REPO = Path(__file__).resolve().parents[2]
TARGET_SAMPLE = REPO / "target_salesforce_consent" / "sample_data" / "didomi_users.jsonl"


def _sample_root() -> Path:
    return Path(str(files("tap_didomi") / "sample_export"))


def test_sample_export_holds_the_target_sample_records() -> None:
    root = _sample_root()
    parts = sorted(root.glob("export-id=*/date=*/*/*.json.gz"))
    assert len({p.parent.parent for p in parts}) >= 3  # several partitions
    assert {p.parent.name for p in parts} == {"users", "events"}
    exported = [json.loads(line) for p in parts
                for line in gzip.decompress(p.read_bytes()).decode().splitlines()]
    expected = [json.loads(line) for line in TARGET_SAMPLE.read_text().splitlines() if line]
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(map(key, exported)) == sorted(map(key, expected))
    for p in parts:  # users in users/, events (with a `user` object) in events/
        for line in gzip.decompress(p.read_bytes()).decode().splitlines():
            assert isinstance(json.loads(line).get("user"), dict) == (p.parent.name == "events")


def test_tap_reads_the_sample_export(run_tap: TapRunner) -> None:
    run = run_tap({"export_path": str(_sample_root())})
    assert run.returncode == 0, run.stderr[-3000:]
    expected = [json.loads(line) for line in TARGET_SAMPLE.read_text().splitlines() if line]
    assert len(run.records()) == len(expected)
    assert {r["id"] for r in run.records()} == {r["id"] for r in expected}
