"""Calls of the ledger's SQL functions — the one implementation of consume, grant, void and balance (migration 0012,
docs/sql-api.md) — and their refusals as the domain's errors.

Each call runs inside the caller's transaction. The functions claim the request id, lock, decide and write; a refusal
raises with a documented SQLSTATE, which becomes the domain error every entry point already maps (exit code, HTTP
status): CJ001 `InsufficientCredits`, CJ002 `RequestIdReused`, CJ003 `NoCreditAccount`, CJ004 `UnknownUser`, CJ005 (no
such grant) and 22023 (bad input) `ConfigError`. `now` (tests that simulate time) sets `credit_jobs.simulated_now` for
this transaction only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from credit_jobs.domain.errors import (
    ConfigError,
    InsufficientCredits,
    NoCreditAccount,
    RequestIdReused,
    UnknownUser,
)


@contextmanager
def refusals(user_id: str | None = None, amount: int = 0, grant_id: int | None = None) -> Iterator[None]:
    try:
        yield
    except sa.exc.DBAPIError as exc:
        state = getattr(exc.orig, "sqlstate", None)
        diag = getattr(exc.orig, "diag", None)
        message = (getattr(diag, "message_primary", None) or str(exc.orig)).strip()
        if state == "CJ001":
            detail = getattr(diag, "message_detail", None) or "available: 0"
            raise InsufficientCredits(str(user_id), amount, int(detail.rsplit(" ", 1)[-1])) from None
        if state == "CJ002":
            raise RequestIdReused(message) from None
        if state == "CJ003":
            raise NoCreditAccount(str(user_id), amount) from None
        if state == "CJ004":
            raise UnknownUser(str(user_id)) from None
        if state == "CJ005":  # an unknown grant
            raise ConfigError(f"no grant {grant_id}: see `credit-jobs grants USER` for a user's grant ids") from None
        if state == "22023":
            raise ConfigError(message) from None
        raise


def _simulate(conn: sa.Connection, now: datetime | None) -> None:
    if now is not None:
        conn.execute(sa.text("SELECT set_config('credit_jobs.simulated_now', :now, true)"), {"now": now.isoformat()})


def consume(
    conn: sa.Connection, user_id: str, amount: int, request_id: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """`{"takes": [[grant_id, credits], …], "replayed": bool}`."""
    _simulate(conn, now)
    with refusals(user_id, amount):
        result: dict[str, Any] = conn.execute(
            sa.text("SELECT credit_consume(:user_id, :amount, :request_id)"),
            {"user_id": user_id, "amount": amount, "request_id": request_id},
        ).scalar_one()
    return result


def grant(
    conn: sa.Connection,
    user_id: str,
    amount: int,
    *,
    grant_type: str,
    idempotency_key: str,
    expires_in_days: int | None,
    allow_unknown_user: bool,
    now: datetime | None = None,
) -> tuple[int, bool]:
    """(grant id, created): `created` is False for a replay of the key's first grant."""
    _simulate(conn, now)
    with refusals(user_id, amount):
        grant_id = conn.execute(
            sa.text(
                "SELECT credit_grant(:user_id, :amount, :grant_type, :key, "
                "p_expires_in_days => :days, p_allow_unknown_user => :allow)"
            ),
            {
                "user_id": user_id,
                "amount": amount,
                "grant_type": grant_type,
                "key": idempotency_key,
                "days": expires_in_days,
                "allow": allow_unknown_user,
            },
        ).scalar_one()
    # created by this call if this transaction wrote the key's claim (a replay writes nothing)
    created = conn.execute(
        sa.text(
            "SELECT coalesce(xmin = pg_current_xact_id_if_assigned()::xid, false) FROM credit_requests "
            "WHERE request_id = :key"
        ),
        {"key": idempotency_key},
    ).scalar_one()
    return int(grant_id), bool(created)


def void(conn: sa.Connection, grant_id: int, request_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    """`{"grant_id", "user_id", "voided", "replayed"}`."""
    _simulate(conn, now)
    with refusals(grant_id=grant_id):
        result: dict[str, Any] = conn.execute(
            sa.text("SELECT credit_void(:grant_id, :request_id)"), {"grant_id": grant_id, "request_id": request_id}
        ).scalar_one()
    return result
