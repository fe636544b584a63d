"""Errors the model raises; the HTTP layer turns them into Salesforce's envelopes."""

from __future__ import annotations


class ApiError(Exception):
    """A request-level error answered as a JSON array of ``{message, errorCode}``.

    ``style`` picks the envelope Salesforce uses for that API: ``"rest"`` is compact with
    ``message`` first (REST resources, reference 8.1); ``"bulk"`` is Jackson-pretty with
    ``errorCode`` first (Bulk API 2.0, reference 3.2/3.4).
    """

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        *,
        style: str = "rest",
        fields: list[str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.style = style
        self.fields = fields


class OAuthError(Exception):
    """An OAuth token endpoint error: ``{"error": ..., "error_description": ...}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


class RowError(Exception):
    """One Bulk API row failure, rendered as ``CODE:message:fields --`` (reference 3.7)."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{code}:{message}")
        self.code = code
        self.message = message
        self.fields = fields or []

    def sf_error(self) -> str:
        fields = ",".join(self.fields)
        suffix = f"{fields} --" if fields else "--"
        return f"{self.code}:{self.message}:{suffix}"


NOT_FOUND_MESSAGE = "The requested resource does not exist"
