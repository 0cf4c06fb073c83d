"""Claim a request id or replay its first use: the idempotency step every per-request ledger operation starts with.

Called by `consume`, `grant` and `void_grant` first thing inside their transaction. The claim is a row in
`credit_requests` keyed by the request id (`adapters.request_ledger.claim`): a concurrent retry of the same request
waits on that unique index until the first attempt commits (then replays its result) or rolls back (then proceeds).
A reuse of the id with any other parameter is refused (`domain.requests.reuse_refusal`), naming the field.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from credit_jobs.adapters import request_ledger
from credit_jobs.domain.requests import reuse_refusal


def claim_or_replay(
    conn: sa.Connection,
    *,
    request_id: str,
    operation: str,
    user_id: str | None,
    params: dict[str, Any],
    what: str = "request id",
) -> dict[str, Any] | None:
    """None: the id is now claimed by this request — apply it and record its result. Otherwise the first use's
    result (a replay); a ConfigError if the id was first used with other parameters."""
    if request_ledger.claim(conn, request_id=request_id, operation=operation, user_id=user_id, params=params):
        return None
    first = request_ledger.first_use(conn, request_id)
    refusal = reuse_refusal(
        request_id,
        operation=operation,
        params=params,
        first_operation=first.operation,
        first_params=first.params,
        what=what,
    )
    if refusal is not None:
        raise refusal
    return first.result
