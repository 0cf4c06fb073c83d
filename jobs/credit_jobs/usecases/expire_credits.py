"""expire-credits: every grant past its expiry with credits left is expired exactly once.

Chunks of `batch_size` grants, one transaction each (`ledger_sql.expire_chunk`): pick with
`FOR UPDATE SKIP LOCKED`, empty the grants, write one expiry entry each, reduce balances. Overlapping runs split
the work instead of doubling it, and the partial unique index on expiry entries would refuse a second expiry of a
grant even if they did not. Expiry is judged against the run's `now` (the scheduled time when run by a CronJob is
not used: credits that expired after the fire time but before the run starts are expired too).
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError

from credit_jobs.adapters import ledger_sql
from credit_jobs.adapters.database import first_line
from credit_jobs.domain.run_model import RunContext, RunStats
from credit_jobs.usecases.db_errors import is_item_error, run_failed

log = structlog.get_logger()


def expire_credits(engine: sa.Engine, ctx: RunContext) -> RunStats:
    if ctx.dry_run:
        with engine.connect() as conn:
            preview = ledger_sql.expire_preview(conn, shard=ctx.shard, now=ctx.now)
        return RunStats(
            processed=preview.grants,
            credits={"expired": preview.credits},
            details={"would_expire_grants": preview.grants, "users": preview.users},
        )
    with engine.connect() as conn:
        pending = ledger_sql.expire_preview(conn, shard=ctx.shard, now=ctx.now).grants
    grants = credits = chunks = failed = 0
    after = ledger_sql.KEYSET_START
    while True:
        ctx.checkpoint()
        try:
            with engine.begin() as conn:
                chunk = ledger_sql.expire_chunk(
                    conn, batch=ctx.batch_size, shard=ctx.shard, now=ctx.now, run_id=ctx.run_id, after=after
                )
        except DBAPIError as exc:
            if not is_item_error(exc):
                raise run_failed(exc, f"after expiring {grants} grants") from exc
            # The same grants would be picked again: stop here and fail the run rather than loop.
            log.error("expire.chunk_failed", reason=first_line(exc))
            failed += min(ctx.batch_size, max(pending - grants, 1))
            break
        if chunk.last_grant_id is None or chunk.last_expires_at is None:
            break  # nothing left, or what is left is locked by an overlapping run that will expire it
        after = (chunk.last_expires_at, chunk.last_grant_id)
        grants += chunk.grants
        credits += chunk.credits
        chunks += 1
        ctx.progress(grants, pending)
    return RunStats(
        processed=grants,
        failed=failed,
        credits={"expired": credits},
        details={"expired_grants": grants, "chunks": chunks},
    )
