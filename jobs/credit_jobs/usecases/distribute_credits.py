"""distribute-credits: every eligible user gets their plan's grant for the period, exactly once.

Reads top to bottom: walk the eligibility source in user-id order through the shared chunk loop
(`usecases.chunk_runner`), one chunk of `batch_size` users per transaction; each chunk is one statement
(`ledger_sql.distribute_chunk`) that inserts the missing grants with `ON CONFLICT DO NOTHING` and upserts the
balances of the users it granted. Banned and inactive users are skipped; eligible users whose plan has no active
policy are counted and reported (count, sample ids, plan codes) — never given free credits. A user whose grant the
database refuses (e.g. a balance that would pass its bound) is isolated by the chunk loop and named; everyone else
is granted. A rerun of a done period adds only what is missing (users eligible since, users fixed since).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
import structlog

from credit_jobs.adapters import ledger_sql
from credit_jobs.domain.run_model import RunContext, RunStats
from credit_jobs.usecases.chunk_runner import ChunkedWork, run_chunks

log = structlog.get_logger()

# Before every user id: ids are non-empty text (domain.requests.validate_user_id; a CHECK since migration 0007).
_BEFORE_ALL_USERS = ""


@dataclass
class DistributeTotals:
    eligible: int = 0
    granted: int = 0
    already_granted: int = 0
    covered_by_kept: int = 0  # a redo after a rollback: users who had kept the period's amount
    banned: int = 0
    inactive: int = 0
    unconfigured_plan_users: int = 0
    unconfigured_sample: list[str] = field(default_factory=list)
    unconfigured_plans: list[str] = field(default_factory=list)
    chunks: int = 0
    credits: int = 0
    users_seen: int = 0


class _Distribute(ChunkedWork[str, ledger_sql.DistributeChunk]):
    name = "distribute"
    start = _BEFORE_ALL_USERS

    def __init__(self, ctx: RunContext, total_users: int) -> None:
        self.ctx = ctx
        self.total_users = total_users
        self.totals = DistributeTotals()

    def run_chunk(self, conn: sa.Connection, after: str, limit: int) -> ledger_sql.DistributeChunk:
        ctx = self.ctx
        return ledger_sql.distribute_chunk(
            conn,
            after=after,
            batch=limit,
            shard=ctx.shard,
            period_key=ctx.period.key,
            period_start=ctx.period.starts_at,
            now=ctx.now,
            run_id=ctx.run_id,
            dry_run=ctx.dry_run,
            grant_family=ctx.grant_family,
        )

    def covered(self, result: ledger_sql.DistributeChunk) -> tuple[str | None, int]:
        return result.last_user_id, result.seen

    def first_item(self, conn: sa.Connection, after: str) -> tuple[str, dict[str, int | str]] | None:
        user_id = ledger_sql.first_user_after(conn, after=after, shard=self.ctx.shard)
        return None if user_id is None else (user_id, {"user_id": user_id})

    def add(self, chunk: ledger_sql.DistributeChunk) -> None:
        t = self.totals
        t.users_seen += chunk.seen
        t.credits += chunk.credits
        t.chunks += 1
        t.eligible += chunk.eligible
        t.granted += chunk.granted
        t.already_granted += chunk.already_granted
        t.covered_by_kept += chunk.covered_by_kept
        t.banned += chunk.banned
        t.inactive += chunk.inactive
        t.unconfigured_plan_users += chunk.unconfigured
        room = ledger_sql.UNCONFIGURED_SAMPLE - len(t.unconfigured_sample)
        t.unconfigured_sample += chunk.unconfigured_sample[:room]
        t.unconfigured_plans = sorted(set(t.unconfigured_plans) | set(chunk.unconfigured_plans))
        log.debug("distribute.chunk_done", last_user_id=chunk.last_user_id, granted=chunk.granted, seen=t.users_seen)

    def progress(self) -> tuple[int, int | None]:
        return self.totals.users_seen, self.total_users

    def stats(self) -> RunStats:
        t = self.totals
        details: dict[str, object] = {
            "eligible": t.eligible,
            "already_granted": t.already_granted,
            **({"covered_by_kept": t.covered_by_kept} if t.covered_by_kept else {}),
            "banned": t.banned,
            "inactive": t.inactive,
            "unconfigured_plan_users": t.unconfigured_plan_users,
            "unconfigured_sample": list(t.unconfigured_sample),
            "unconfigured_plans": list(t.unconfigured_plans),
            "chunks": t.chunks,
            "users_seen": t.users_seen,
        }
        skipped = t.banned + t.inactive + t.unconfigured_plan_users
        if self.ctx.dry_run:  # nothing was granted: say what would have been (skipping writes nothing: as is)
            return RunStats(
                skipped=skipped,
                details={"would_grant": t.granted, "would_grant_credits": t.credits, **details},
            )
        return RunStats(
            processed=t.granted + t.already_granted + t.covered_by_kept,
            skipped=skipped,
            credits={"granted": t.credits},
            details={"granted": t.granted, **details},
        )


def distribute_credits(engine: sa.Engine, ctx: RunContext) -> RunStats:
    with engine.connect() as conn:
        total_users = ledger_sql.count_users(conn, ctx.shard)
    work = _Distribute(ctx, total_users)
    stats = run_chunks(engine, ctx, work)
    t = work.totals
    if t.users_seen == 0:  # an unfed (or wrongly replaced) eligibility source looks like success otherwise
        log.warning(
            "distribute.empty_source",
            hint="credit_eligibility had no users: check that your application feeds it; nothing was granted",
        )
    if t.unconfigured_plan_users:
        log.warning(
            "distribute.unconfigured_plans",
            users=t.unconfigured_plan_users,
            sample_user_ids=t.unconfigured_sample,
            plans=t.unconfigured_plans,
            hint="add a plan_credit_policies row for these plans (or deactivate them); no credits were granted",
        )
    return stats
