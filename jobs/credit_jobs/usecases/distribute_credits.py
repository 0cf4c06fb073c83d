"""distribute-credits: every eligible user gets their plan's grant for the period, exactly once.

Reads top to bottom: walk the eligibility source in user-id order, one chunk of `batch_size` users per
transaction; each chunk is one statement (`ledger_sql.distribute_chunk`) that inserts the missing grants with
`ON CONFLICT DO NOTHING` and upserts the balances of the users it granted. Banned and inactive users are skipped;
eligible users whose plan has no active policy are counted and reported (count, sample ids, plan codes) — never
given free credits. A rerun of a done period adds only what is missing (users eligible since).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError

from credit_jobs.adapters import ledger_sql
from credit_jobs.adapters.database import first_line
from credit_jobs.domain.run_model import RunContext, RunStats
from credit_jobs.usecases.db_errors import is_item_error, run_failed

log = structlog.get_logger()

_BEFORE_ALL_USERS = -(2**63)


def distribute_credits(engine: sa.Engine, ctx: RunContext) -> RunStats:
    totals: dict[str, Any] = {
        "eligible": 0,
        "granted": 0,
        "already_granted": 0,
        "banned": 0,
        "inactive": 0,
        "unconfigured_plan_users": 0,
        "unconfigured_sample": [],
        "unconfigured_plans": [],
        "chunks": 0,
    }
    credits = 0
    failed = 0
    with engine.connect() as conn:
        total_users = ledger_sql.count_users(conn, ctx.shard)
    seen = 0
    after = _BEFORE_ALL_USERS
    while True:
        ctx.checkpoint()
        try:
            with engine.begin() as conn:
                chunk = ledger_sql.distribute_chunk(
                    conn,
                    after=after,
                    batch=ctx.batch_size,
                    shard=ctx.shard,
                    period_key=ctx.period.key,
                    period_start=ctx.period.starts_at,
                    now=ctx.now,
                    run_id=ctx.run_id,
                    dry_run=ctx.dry_run,
                    grant_family=ctx.grant_family,
                )
        except DBAPIError as exc:
            if not is_item_error(exc):
                raise run_failed(exc, f"in the chunk after user {after}") from exc
            # One chunk's data is bad (e.g. a policy violating a constraint): skip past it, count its users failed.
            last, size = _chunk_extent(engine, after, ctx)
            log.error("distribute.chunk_failed", after_user_id=after, users=size, reason=first_line(exc))
            failed += size
            seen += size
            if last is None:
                break
            after = last
            continue
        if chunk.last_user_id is None:
            break
        after = chunk.last_user_id
        seen += chunk.seen
        credits += chunk.credits
        totals["chunks"] += 1
        for name in ("eligible", "granted", "already_granted", "banned", "inactive"):
            totals[name] += getattr(chunk, name)
        totals["unconfigured_plan_users"] += chunk.unconfigured
        room = ledger_sql.UNCONFIGURED_SAMPLE - len(totals["unconfigured_sample"])
        totals["unconfigured_sample"] += chunk.unconfigured_sample[:room]
        totals["unconfigured_plans"] = sorted(set(totals["unconfigured_plans"]) | set(chunk.unconfigured_plans))
        ctx.progress(seen, total_users)
        log.debug("distribute.chunk_done", after_user_id=after, granted=chunk.granted, seen=seen)

    if totals["unconfigured_plan_users"]:
        log.warning(
            "distribute.unconfigured_plans",
            users=totals["unconfigured_plan_users"],
            sample_user_ids=totals["unconfigured_sample"],
            plans=totals["unconfigured_plans"],
            hint="add a plan_credit_policies row for these plans (or deactivate them); no credits were granted",
        )
    processed = totals["granted"] + totals["already_granted"]
    if ctx.dry_run:  # nothing was granted: say what would have been
        totals["would_grant"] = totals.pop("granted")
    return RunStats(
        processed=processed,
        skipped=totals["banned"] + totals["inactive"] + totals["unconfigured_plan_users"],
        failed=failed,
        credits={"granted": credits},
        details={**totals, "users_seen": seen},
    )


def _chunk_extent(engine: sa.Engine, after: int, ctx: RunContext) -> tuple[int | None, int]:
    """(last user id, size) of the chunk after `after`, read without writing (to step over a failed chunk)."""
    predicate = ledger_sql.shard_predicate("user_id", ctx.shard)
    sql = (
        "SELECT max(user_id) AS last, count(*) AS size FROM (SELECT user_id FROM credit_eligibility "
        f"WHERE user_id > :after {predicate} ORDER BY user_id LIMIT :batch) c"
    )
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(sql), {"after": after, "batch": ctx.batch_size, **ledger_sql.shard_params(ctx.shard)}
        ).one()
    return row.last, int(row.size)
