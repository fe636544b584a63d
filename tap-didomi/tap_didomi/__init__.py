"""tap-didomi: a Singer tap for Didomi consent (batch exports and the Consents API)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tap-didomi")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
