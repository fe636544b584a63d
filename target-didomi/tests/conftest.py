"""target-didomi's test fixtures, defined in target_didomi_helpers (a uniquely named module
that mypy checks; every distribution's tests have a `conftest` module, so mypy skips this)."""

from target_didomi_helpers import emulator, run_target

__all__ = ["emulator", "run_target"]
