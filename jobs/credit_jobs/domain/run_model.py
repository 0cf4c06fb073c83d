"""What a usecase is handed (`RunContext`) and what it hands back (`RunStats`) — plain data, no I/O.

The run lifecycle (`credit_jobs.lifecycle.run_lifecycle`) builds the context; usecases in `credit_jobs.usecases`
fill the stats; the CLI, audit row, logs and pushed metrics all read the same stats.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from credit_jobs.domain.contract import DEFAULT_BATCH_SIZE as DEFAULT_BATCH_SIZE
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.grant_rules import DEFAULT_GRANT_FAMILY
from credit_jobs.domain.period_keys import Period, ResolvedPeriod
from credit_jobs.domain.sharding import Shard

MAX_BATCH_SIZE = 100_000


def _noop(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class RunContext:
    run_id: uuid.UUID
    job: str
    usecase: str
    period: ResolvedPeriod
    shard: Shard
    trigger: str
    now: datetime
    batch_size: int = DEFAULT_BATCH_SIZE
    dry_run: bool = False
    # Raises RunFailed when the run's guard (its database session) was lost: called between chunks.
    checkpoint: Callable[[], None] = _noop
    # Reports progress: (items done so far, total if known).
    progress: Callable[[int, int | None], None] = _noop
    # Hands the lifecycle the counts committed so far (after every chunk), so a run that fails later — database
    # lost, guard lost, a bug — still records what it did in its audit row and end-of-run line.
    record_counts: Callable[[RunStats], None] = _noop
    # Periodic grants are unique per (user, grant family, period key): the distributing job's family.
    grant_family: str = DEFAULT_GRANT_FAMILY


@dataclass
class RunStats:
    """Counts in the shared vocabulary (docs/contract.md, shared names) plus usecase-specific details."""

    processed: int = 0
    skipped: int = 0
    failed: int = 0
    credits: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "skipped": self.skipped,
            "failed": self.failed,
            **{f"credits_{kind}": amount for kind, amount in self.credits.items()},
            **self.details,
        }


@dataclass(frozen=True)
class UsecaseSpec:
    """A runnable usecase: its CLI name, default period granularity and the function doing the work.

    `grant_period_lock`: how a run holds its (grant family, period) besides its own guard — "shared" for the runs
    that write the period's grants (distributions: every job name and shard at once), "exclusive" for the run that
    takes them back (a rollback: alone). The one that comes second is refused (run_guard.RunGuard).

    `works_on_its_period`: the work depends on the period key (distribute-credits grants *that* period), so a past
    period can be run again (`backfill`). The others work on what is due at the database's now, whatever the key."""

    name: str
    default_period: Period
    run: Callable[..., RunStats]
    description: str
    grant_period_lock: Literal["shared", "exclusive"] | None = None
    works_on_its_period: bool = False


def validate_batch_size(value: int) -> int:
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise ConfigError(f"batch size {value} is out of range: use 1..{MAX_BATCH_SIZE}")
    return value
