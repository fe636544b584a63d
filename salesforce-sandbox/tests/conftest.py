"""The sandbox tests' fixtures, defined in sandbox_helpers (a uniquely named module that mypy
checks; every distribution's tests have a `conftest` module, so mypy skips these)."""

from sandbox_helpers import client, sandbox

__all__ = ["client", "sandbox"]
