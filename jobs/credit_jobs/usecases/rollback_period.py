"""rollback distribute-credits: take a whole period's grants back, so the period can be distributed again.

The unconsumed remainder of each grant is voided; credits already spent are never clawed back, and the redo subtracts
them from the new grant. `rollback_usecase` says how it runs beside distributions and what it does;
docs/credits-lifecycle.md ("Rolling a period back") shows a whole rollback and redo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import sqlalchemy as sa
import structlog

from credit_jobs.adapters import rollback_sql
from credit_jobs.domain.contract import DISTRIBUTE_CREDITS, ROLLBACK_DISTRIBUTE, USECASE_PERIODS
from credit_jobs.domain.requests import validate_user_id
from credit_jobs.domain.run_model import RunContext, RunStats, UsecaseSpec
from credit_jobs.usecases.chunk_runner import ChunkedWork, run_chunks

log = structlog.get_logger()


@dataclass(frozen=True)
class RollbackScope:
    """What to roll back besides the period: why (stored on every void entry) and, optionally, only these users.

    `--user` limits the rollback to some users (text ids, as the ledger holds them since migration 0007)."""

    reason: str
    users: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # the ids are compared with the ledger's TEXT user_id: an int (a pre-0007 caller) would fail in SQL, mid-run
        if self.users is not None:
            for user in self.users:
                validate_user_id(user)


@dataclass
class RollbackTotals:
    grants: int = 0
    voided: int = 0
    kept: int = 0
    not_voided_users: int = 0
    not_voided_sample: list[dict[str, Any]] = field(default_factory=list)
    chunks: int = 0


class _Rollback(ChunkedWork[str | None, rollback_sql.RollbackChunk]):
    name = "rollback"
    start = None

    def __init__(self, ctx: RunContext, scope: RollbackScope, total: int) -> None:
        self.ctx, self.scope, self.total = ctx, scope, total
        self.users = list(scope.users) if scope.users is not None else None
        self.totals = RollbackTotals()

    def run_chunk(self, conn: sa.Connection, after: str | None, limit: int) -> rollback_sql.RollbackChunk:
        ctx = self.ctx
        return rollback_sql.rollback_chunk(
            conn,
            period_key=ctx.period.key,
            grant_family=ctx.grant_family,
            after=after,
            batch=limit,
            users=self.users,
            now=ctx.now,
            run_id=ctx.run_id,
            reason=self.scope.reason,
            dry_run=ctx.dry_run,
        )

    def covered(self, result: rollback_sql.RollbackChunk) -> tuple[str | None, int]:
        return result.last_user_id, result.grants

    def first_item(self, conn: sa.Connection, after: str | None) -> tuple[str | None, dict[str, int | str]] | None:
        found = rollback_sql.first_grant_user_after(
            conn, period_key=self.ctx.period.key, grant_family=self.ctx.grant_family, after=after, users=self.users
        )
        return None if found is None else (found[0], {"user_id": found[0], "grant_id": found[1]})

    def add(self, chunk: rollback_sql.RollbackChunk) -> None:
        t = self.totals
        t.chunks += 1
        t.grants += chunk.grants
        t.voided += chunk.voided
        t.kept += chunk.kept
        t.not_voided_users += len(chunk.not_voided)
        room = rollback_sql.NOT_VOIDED_SAMPLE - len(t.not_voided_sample)
        t.not_voided_sample += chunk.not_voided[:room]
        # per-chunk timings at debug level (LOG_LEVEL=debug; bench/bench_rollback.py --chunks reads them)
        log.debug(
            "rollback.chunk_done",
            last_user_id=chunk.last_user_id,
            grants=chunk.grants,
            done=t.grants,
            pick_s=round(chunk.pick_s, 4),
            apply_s=round(chunk.apply_s, 4),
        )

    def progress(self) -> tuple[int, int | None]:
        return self.totals.grants, self.total

    def stats(self) -> RunStats:
        t = self.totals
        details: dict[str, Any] = {
            "reason": self.scope.reason,
            # users whose grant was partly (or wholly) used or expired: these credits could not be voided
            "not_voided_users": t.not_voided_users,
            "not_voided_credits": t.kept,
            "not_voided_sample": list(t.not_voided_sample),
            "chunks": t.chunks,
            **({"only_users": len(self.users)} if self.users is not None else {}),
        }
        if self.ctx.dry_run:
            return RunStats(details={"would_roll_back": t.grants, "would_void_credits": t.voided, **details})
        return RunStats(processed=t.grants, credits={"voided": t.voided}, details={"rolled_back": t.grants, **details})


def rollback_period(engine: sa.Engine, ctx: RunContext, *, scope: RollbackScope) -> RunStats:
    users = list(scope.users) if scope.users is not None else None
    with engine.connect() as conn:
        total = rollback_sql.count_period_grants(
            conn, period_key=ctx.period.key, grant_family=ctx.grant_family, users=users
        )
    work = _Rollback(ctx, scope, total)
    stats = run_chunks(engine, ctx, work)
    if work.totals.grants == 0:
        log.info("rollback.nothing_to_roll_back", hint="no live grant of this period and family (already rolled back?)")
    if work.totals.not_voided_users:
        log.warning(
            "rollback.not_voided",
            users=work.totals.not_voided_users,
            credits=work.totals.kept,
            sample=work.totals.not_voided_sample[:5],
            hint="spent credits are not clawed back; a redo of the period subtracts them from the new grant",
        )
    return stats


def rollback_usecase(scope: RollbackScope) -> UsecaseSpec:
    """The usecase the lifecycle runs for one `credit-jobs rollback distribute-credits` command.

    It runs inside the run lifecycle like any usecase (entrypoints/cli/ops_commands.py): its own run id and audit row
    (trigger `rollback`), the distributing job's guard key — (job, period key, shard 0) — and it holds its (grant
    family, period) exclusively, which every distribution of that family and period holds shared, whatever its job
    name or shard: a rollback and a distribution of the same period never run at once, and whichever comes second is
    refused (the rollback exits 2; the distribution is skipped, exit 0, as for any live holder). So a redo never
    computes what a user kept from a snapshot taken before the rollback committed.

    The work (`rollback_period`) walks the period's live grants (the job's grant family) in user-id order through the
    shared chunk loop (`usecases.chunk_runner`), one chunk per transaction (`adapters.rollback_sql.rollback_chunk`):
    each grant's unconsumed remainder is voided (a `void` entry with the reason and this run's id), the grant is
    marked rolled back with what the user kept, and balances drop in the same statement. Credits already spent are
    not clawed back (the ledger never goes negative); they are reported — count, total and a sample of users — and
    the redo subtracts them from the new grant (docs/credits-lifecycle.md, "Rolling a period back"). Idempotent: a
    second rollback finds no live grant of the period and changes nothing."""
    return UsecaseSpec(
        ROLLBACK_DISTRIBUTE,
        USECASE_PERIODS[DISTRIBUTE_CREDITS],
        partial(rollback_period, scope=scope),
        "Void the unconsumed remainder of a period's grants and mark them rolled back.",
        grant_period_lock="exclusive",
    )
