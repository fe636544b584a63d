"""A no-op singer-sdk target: the baseline of the performance benchmark.

It reads the same Singer input as the real target through the same singer-sdk machinery
(message parsing, sink routing, batching by ``batch_size_rows``, STATE handling) and discards
every record. Run it as ``python benchmarks/noop_target.py --config cfg.json < input``.
"""

from __future__ import annotations

from typing import Any

from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import PluginCapabilities, TargetCapabilities
from singer_sdk.sinks import BatchSink
from singer_sdk.target_base import Target


class NoopSink(BatchSink):
    """Keeps nothing: records are dropped as they arrive, batches are empty."""

    def process_record(self, record: dict, context: dict) -> None:
        del record, context

    def process_batch(self, context: dict) -> None:
        del context


class NoopTarget(Target):
    """Discards every record."""

    name = "target-noop"
    default_sink_class = NoopSink
    # The real target's capabilities, so both get the same built-in settings.
    capabilities = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.STRUCTURED_LOGGING,
        TargetCapabilities.VALIDATE_RECORDS,
    ]
    config_jsonschema = th.PropertiesList(
        th.Property("note", th.StringType, description="Unused."),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_parallelism = 1  # as the real target


if __name__ == "__main__":
    NoopTarget.cli()
