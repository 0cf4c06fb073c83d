"""The API's error type and its envelope: `{success: false, error, code, retryable}` with stable codes.

Raised by the route modules and the auth dependency; `app` turns it (and FastAPI's own validation and routing
errors) into the seed's envelope. The codes are part of the API contract (docs/api.md, "Errors"): callers branch on
`code` and `retryable`, never on the message.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable
        self.headers = headers or {}


def envelope_error(code: str, message: str, *, retryable: bool) -> dict[str, Any]:
    return {"success": False, "error": message, "code": code, "retryable": retryable}


def envelope_ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}
