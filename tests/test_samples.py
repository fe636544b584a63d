"""The bundled samples work together: sample_config.json on the sample data and seed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from salesforce_sandbox import DEMO_SEED, Sandbox

from tests.conftest import run_target, singer_lines

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "target_salesforce_consent" / "sample_data"


def test_sample_config_on_sample_data(tmp_path: Path) -> None:
    config = json.loads((ROOT / "sample_config.json").read_text())
    records = [
        json.loads(line)
        for line in (SAMPLES / "didomi_users.jsonl").read_text().splitlines()
        if line.strip()
    ]
    with Sandbox(seed=DEMO_SEED) as sandbox:
        assert (config["client_id"], config["client_secret"]) == (
            sandbox.client_id,
            sandbox.client_secret,
        )
        config["instance_url"] = sandbox.url
        config["report_path"] = str(tmp_path / "report.jsonl")
        result = run_target(config, singer_lines(records, stream="didomi_consents"))
    assert result.error is None, result.stderr
    assert len(result.report) == len(records)
    counts = Counter(line["outcome"] for line in result.report)
    # The sample data is built to show every kind of outcome a Lead configuration meets.
    for outcome in (
        "updated",
        "skipped_unchanged",
        "skipped_unmatched",
        "skipped_converted",
        "skipped_stale",
        "skipped_no_ouid",
        "skipped_filtered",
    ):
        assert counts[outcome] >= 1, counts
    assert counts["failed"] == 0
