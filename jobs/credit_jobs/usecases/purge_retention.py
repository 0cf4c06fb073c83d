"""purge-retention: delete operational history past its retention — never a grant or a ledger entry.

Reads top to bottom: for each target of `adapters.retention_sql` (finished `job_runs` older than the retention,
`stored_files` rows deleted longer ago than the retention, processed request-id claims past their replay window),
walk the due rows through the shared chunk loop (`usecases.chunk_runner`), a chunk of `batch_size` deletes per
transaction. A dry run only counts. The counts of every target are in the run's summary (`<table>_purged`, or
`would_purge_<table>`), and the counts so far are handed to the lifecycle after every chunk, so a run that fails on
the second target still records what the first deleted. Retention comes from `domain.retention.RetentionPolicy`
(CREDITJOBS_RETENTION_DAYS, CREDITJOBS_REQUEST_REPLAY_DAYS, bound by the CLI). Purging a request id ends its
replay: a retry with that id after the window applies again (docs/credits-lifecycle.md, "Retention").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from credit_jobs.adapters import retention_sql
from credit_jobs.adapters.retention_sql import Position, PurgeChunk, Target
from credit_jobs.domain.retention import RetentionPolicy
from credit_jobs.domain.run_model import RunContext, RunStats
from credit_jobs.usecases.chunk_runner import ChunkedWork, run_chunks


class _Purge(ChunkedWork[Position, PurgeChunk]):
    start = None

    def __init__(self, target: Target, cutoff: datetime, due: int) -> None:
        self.name = f"purge.{target.name}"
        self.target, self.cutoff, self.due = target, cutoff, due
        self.deleted = self.chunks = 0

    def run_chunk(self, conn: sa.Connection, after: Position, limit: int) -> PurgeChunk:
        return retention_sql.purge_chunk(conn, self.target, cutoff=self.cutoff, after=after, batch=limit)

    def covered(self, result: PurgeChunk) -> tuple[Position | None, int]:
        return result.last, result.picked

    def first_item(self, conn: sa.Connection, after: Position) -> tuple[Position, dict[str, Any]] | None:
        found = retention_sql.first_due(conn, self.target, cutoff=self.cutoff, after=after)
        return None if found is None else (found, {"table": self.target.name, "key": str(found[1])})

    def add(self, result: PurgeChunk) -> None:
        self.deleted += result.deleted
        self.chunks += 1

    def progress(self) -> tuple[int, int | None]:
        return self.deleted, self.due

    def stats(self) -> RunStats:
        return RunStats(processed=self.deleted, details={f"{self.target.name}_purged": self.deleted})


def _merge(done: RunStats, more: RunStats) -> RunStats:
    return RunStats(
        processed=done.processed + more.processed,
        failed=done.failed + more.failed,
        details={**done.details, **more.details},
    )


def purge_retention(engine: sa.Engine, ctx: RunContext, *, policy: RetentionPolicy | None = None) -> RunStats:
    policy = policy or RetentionPolicy()
    cutoffs = {
        "job_runs": policy.history_cutoff(ctx.now),
        "stored_files": policy.history_cutoff(ctx.now),
        "credit_requests": policy.request_cutoff(ctx.now),
    }
    settings: dict[str, Any] = {
        "retention_days": policy.retention_days,
        "request_replay_days": policy.request_replay_days,
    }
    with engine.connect() as conn:
        due = {t.name: retention_sql.count_due(conn, t, cutoff=cutoffs[t.name]) for t in retention_sql.TARGETS}
    if ctx.dry_run:
        return RunStats(details={**{f"would_purge_{name}": n for name, n in due.items()}, **settings})
    total = RunStats(details=dict(settings))
    for target in retention_sql.TARGETS:
        step = replace(ctx, record_counts=_recording_after(ctx, total))
        total = _merge(total, run_chunks(engine, step, _Purge(target, cutoffs[target.name], due[target.name])))
    return total


def _recording_after(ctx: RunContext, done: RunStats) -> Callable[[RunStats], None]:
    """The counts of one target's walk, handed to the lifecycle on top of what the earlier targets did."""

    def record(stats: RunStats) -> None:
        ctx.record_counts(_merge(done, stats))

    return record
