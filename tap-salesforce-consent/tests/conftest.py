"""tap-salesforce-consent's fixtures, defined in tap_sf_helpers (a uniquely named module that
mypy checks; every distribution's tests have a `conftest` module, so mypy skips this one)."""

from tap_sf_helpers import org

__all__ = ["org"]
