"""The API's error type and its envelope: `{success: false, error, code, retryable}` with stable codes.

Raised by the route modules and the auth dependency; `app` turns it (and FastAPI's own validation and routing
errors) into the seed's envelope. The codes are part of the API contract (docs/api.md, "Errors"): callers branch on
`code` and `retryable`, never on the message. `ERROR_RESPONSES` documents that envelope for every 4xx and 5xx in the
OpenAPI document (instead of FastAPI's `{detail: …}`, which this API never sends).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        headers: dict[str, str] | None = None,
        auth_reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable
        self.headers = headers or {}
        self.auth_reason = auth_reason  # a 401's reason code for the audit line (never what was sent)


def envelope_error(code: str, message: str, *, retryable: bool) -> dict[str, Any]:
    return {"success": False, "error": message, "code": code, "retryable": retryable}


def envelope_ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


class ErrorEnvelope(BaseModel):
    """Every refusal and failure (the OpenAPI document's 4XX and 5XX answers)."""

    model_config = ConfigDict(extra="forbid")
    success: Literal[False]
    error: str
    code: str
    retryable: bool


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorEnvelope, "description": "Refused: see `code` (docs/api.md, Errors)."},
    "5XX": {"model": ErrorEnvelope, "description": "Failed: see `code`; `retryable` is true."},
}
