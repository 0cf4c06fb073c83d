"""expire-credits: every grant past its expiry with credits left is expired exactly once.

Chunks of `batch_size` grants through the shared chunk loop (`usecases.chunk_runner`), one transaction each
(`ledger_sql.expire_chunk`): pick with `FOR UPDATE SKIP LOCKED`, lock the affected accounts in user-id order, empty
the grants, write one expiry entry each, reduce balances. Overlapping runs split the work instead of doubling it
(and wait for each other's accounts instead of deadlocking); the partial unique index on expiry entries would refuse
a second expiry of a grant even if they did not. A grant the database refuses to expire is isolated and named; the
others expire. Expiry is judged against the run's `now` — the database's clock at run start — not the scheduled time
(credits that expired after the fire time but before the run starts are expired too) and not the pod's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from credit_jobs.adapters import ledger_sql
from credit_jobs.domain.run_model import RunContext, RunStats
from credit_jobs.usecases.chunk_runner import ChunkedWork, run_chunks

Position = tuple[datetime, int]


@dataclass
class ExpireTotals:
    grants: int = 0
    credits: int = 0
    chunks: int = 0


class _Expire(ChunkedWork[Position, ledger_sql.ExpireChunk]):
    name = "expire"
    start = ledger_sql.KEYSET_START

    def __init__(self, ctx: RunContext, pending: int) -> None:
        self.ctx = ctx
        self.pending = pending
        self.totals = ExpireTotals()

    def run_chunk(self, conn: sa.Connection, after: Position, limit: int) -> ledger_sql.ExpireChunk:
        ctx = self.ctx
        return ledger_sql.expire_chunk(conn, batch=limit, shard=ctx.shard, now=ctx.now, run_id=ctx.run_id, after=after)

    def covered(self, result: ledger_sql.ExpireChunk) -> tuple[Position | None, int]:
        if result.last_expires_at is None or result.last_grant_id is None:
            return None, 0  # nothing left, or what is left is locked by an overlapping run that will expire it
        return (result.last_expires_at, result.last_grant_id), result.grants

    def first_item(self, conn: sa.Connection, after: Position) -> tuple[Position, dict[str, int | str]] | None:
        found = ledger_sql.first_due_grant_after(conn, shard=self.ctx.shard, now=self.ctx.now, after=after)
        if found is None:
            return None
        position, grant_id, user_id = found
        return position, {"grant_id": grant_id, "user_id": user_id}

    def add(self, result: ledger_sql.ExpireChunk) -> None:
        self.totals.grants += result.grants
        self.totals.credits += result.credits
        self.totals.chunks += 1

    def progress(self) -> tuple[int, int | None]:
        return self.totals.grants, self.pending

    def stats(self) -> RunStats:
        t = self.totals
        return RunStats(
            processed=t.grants,
            credits={"expired": t.credits},
            details={"expired_grants": t.grants, "chunks": t.chunks},
        )


def expire_credits(engine: sa.Engine, ctx: RunContext) -> RunStats:
    with engine.connect() as conn:
        preview = ledger_sql.expire_preview(conn, shard=ctx.shard, now=ctx.now)
    if ctx.dry_run:  # nothing is expired: say only what would be
        return RunStats(
            details={
                "would_expire_grants": preview.grants,
                "would_expire_credits": preview.credits,
                "would_expire_users": preview.users,
            },
        )
    return run_chunks(engine, ctx, _Expire(ctx, preview.grants))
