"""Exceptions raised by the Salesforce client.

Every message is built from Salesforce's own error codes and messages plus guidance; none ever
contains an access token or a client secret (the client scrubs them before raising).
"""

from __future__ import annotations

from typing import Any


class SalesforceError(Exception):
    """A Salesforce call failed. ``str(e) == f"{code}: {message}"``."""

    def __init__(
        self, code: str, message: str, *, status: int | None = None, transient: bool = False
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.status = status
        #: True when the failure may go away by itself (network error, 5xx after retries).
        self.transient = transient
        #: For errors raised by BulkIngest.run: the IngestOutcome settled before the error.
        self.outcome: Any = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r})"


class AuthenticationError(SalesforceError):
    """The OAuth token request was refused. ``hint`` says what the user should fix."""

    def __init__(self, code: str, message: str, hint: str, *, status: int | None = None) -> None:
        super().__init__(code, message, status=status)
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.code}: {self.message} ({self.hint})"


class ApiLimitExceededError(SalesforceError):
    """403 REQUEST_LIMIT_EXCEEDED TotalRequests: the org's daily API allocation is used up."""


class JobFailedError(SalesforceError):
    """A Bulk API 2.0 job failed as a whole (non-transient, or transient after retries)."""

    def __init__(self, job_id: str, error_message: str) -> None:
        super().__init__(
            "JOB_FAILED", f"Bulk API job {job_id} failed: {error_message}", status=None
        )
        self.job_id = job_id
        self.error_message = error_message
