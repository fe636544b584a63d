#!/usr/bin/env python3
"""Rebuild the bundled sample export (tap_didomi/sample_export/) from the target's sample data.

    python tap-didomi/scripts/make_sample_export.py

Each record of target_salesforce_consent/sample_data/didomi_users.jsonl goes into the first
daily partition after its updated_at (or created_at): user-shaped records into users/,
event-shaped ones (with a `user` object) into events/, split over two gzipped files when a
folder holds more than one record, as Didomi may split a partition. The gzip headers carry no
time or name, so a rebuild gives the same bytes.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

TAP_DIR = Path(__file__).resolve().parent.parent
SOURCE = TAP_DIR.parent / "target_salesforce_consent" / "sample_data" / "didomi_users.jsonl"
TARGET = TAP_DIR / "tap_didomi" / "sample_export"
EXPORT_ID = "acme-corp-sample"
PARTITIONS = ["2024-09-02", "2025-02-02", "2025-03-13", "2025-03-17", "2025-03-20"]


def main() -> None:
    folders: dict[tuple[str, str], list[str]] = {}
    for line in SOURCE.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        stamp = str(record.get("updated_at") or record.get("created_at"))[:10]
        date = next(p for p in PARTITIONS if p > stamp)
        folder = "events" if isinstance(record.get("user"), dict) else "users"
        folders.setdefault((date, folder), []).append(line)
    if TARGET.exists():
        shutil.rmtree(TARGET)
    for (date, folder), lines in sorted(folders.items()):
        out = TARGET / f"export-id={EXPORT_ID}" / f"date={date}" / folder
        out.mkdir(parents=True)
        half = (len(lines) + 1) // 2
        for index, chunk in enumerate((lines[:half], lines[half:])):
            if not chunk:
                continue
            data = "".join(line + "\n" for line in chunk).encode()
            with (out / f"part-{index:05d}.json.gz").open("wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
                packed.write(data)
    print(f"wrote {TARGET.relative_to(TAP_DIR.parent)}")


if __name__ == "__main__":
    main()
