"""The one chunk loop every chunked usecase runs in (distribute, expire, cleanup, rollback, import, purge).

A usecase describes its work as a `ChunkedWork`; the runner, `run_chunks`, owns everything else, the same way for every
usecase: keyset position, guard checkpoint, item errors, transient conflicts, progress and the counts so far.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError

from credit_jobs.adapters.database import first_line
from credit_jobs.domain.errors import RunFailed
from credit_jobs.domain.run_model import RunContext, RunStats
from credit_jobs.usecases.db_errors import (
    TRANSIENT_SQLSTATES,
    is_item_error,
    is_transient_conflict,
    run_failed,
    sqlstate,
)

log = structlog.get_logger()

K = TypeVar("K")  # a keyset position: the key of the last item a chunk covered
R = TypeVar("R")  # what one chunk statement reports

MAX_ATTEMPTS = 4  # per chunk, for deadlocks and serialization failures
BACKOFF_SECONDS = 0.05  # doubled per attempt, times a random factor in [0.5, 1)
FAILED_SAMPLE = 20  # failed items named in the audit row (the count is always exact)


class ChunkedWork(ABC, Generic[K, R]):
    """One usecase's chunked work, as the runner sees it. Statements live in adapters; this only calls them.

    A keyset start, one chunk statement (in the runner's transaction), where a chunk ended, how to name the one item a
    one-item chunk covers, and how to add a chunk to its totals."""

    name: str  # the log prefix: "distribute" logs distribute.item_failed
    start: K  # the keyset position before every item

    @abstractmethod
    def run_chunk(self, conn: sa.Connection, after: K, limit: int) -> R:
        """Process up to `limit` items after `after`, inside the runner's transaction."""

    @abstractmethod
    def covered(self, result: R) -> tuple[K | None, int]:
        """(position of the last item the chunk covered, or None if none; how many items it covered)."""

    @abstractmethod
    def first_item(self, conn: sa.Connection, after: K) -> tuple[K, Mapping[str, int | str]] | None:
        """The one item a chunk of size 1 after `after` covers: (its position, its ids for logs and the audit row)."""

    @abstractmethod
    def add(self, result: R) -> None:
        """Add a committed chunk to the totals."""

    @abstractmethod
    def stats(self) -> RunStats:
        """The totals so far, as the run reports them (a fresh object each call)."""

    def progress(self) -> tuple[int, int | None]:
        """(items done, total if known) for the progress bar / log lines."""
        return 0, None


@dataclass
class _Failures:
    count: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)


def run_chunks(engine: sa.Engine, ctx: RunContext, work: ChunkedWork[K, R]) -> RunStats:
    """Run `work` chunk by chunk to the end; returns its totals with the isolated failed items added.

    - keyset position: each chunk starts after the last item the previous one covered;
    - checkpoint: the run's guard is checked before every chunk (`RunContext.checkpoint`);
    - item errors: a chunk that fails on its data (a constraint or data error, not a lost connection) is rolled back
      and retried as two halves (same start, smaller limit), recursively, until each failing item is alone; it is
      logged (`<usecase>.item_failed` with its ids and the reason), counted `failed`, sampled into the `failed_items`
      detail, and skipped — every other item is processed. Cost: O(k·log batch) extra statements for k bad items,
      nothing in the normal path;
    - transient conflicts: a deadlock (40P01) or serialization failure (40001) retries the same chunk, up to
      `MAX_ATTEMPTS` times with a short jittered backoff, logged as `chunk.retried`; only then does it fail the run;
    - progress and counts so far: after every chunk, `RunContext.progress` and `RunContext.record_counts`, so a run
      that fails later still records what it committed;
    - anything else (connection lost) fails the run with `RunFailed` (exit 1): the rerun resumes, every write being
      idempotent.
    """
    failures = _Failures()

    def counts() -> RunStats:
        stats = work.stats()
        if failures.count:
            stats.failed += failures.count
            stats.details["failed_item_count"] = failures.count
            stats.details["failed_items"] = list(failures.sample)
        return stats

    def attempt(after: K, limit: int) -> R:
        for attempt_no in range(1, MAX_ATTEMPTS + 1):
            try:
                with engine.begin() as conn:
                    return work.run_chunk(conn, after, limit)
            except DBAPIError as exc:
                if not is_transient_conflict(exc) or attempt_no == MAX_ATTEMPTS:
                    raise
                state = sqlstate(exc) or ""
                log.warning(
                    "chunk.retried",
                    after=str(after),
                    attempt=attempt_no,
                    sqlstate=state,
                    conflict=TRANSIENT_SQLSTATES[state],
                    reason=first_line(exc),
                )
                time.sleep(BACKOFF_SECONDS * 2 ** (attempt_no - 1) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")  # pragma: no cover

    def isolate(after: K, error: DBAPIError) -> tuple[K, bool]:
        """A one-item chunk failed: name the item, record it, step over it."""
        with engine.begin() as conn:
            item = work.first_item(conn, after)
        if item is None:  # nothing left to pick (an overlapping run holds or finished it): the walk is done
            return after, True
        position, ids = item
        reason = first_line(error)
        failures.count += 1
        if len(failures.sample) < FAILED_SAMPLE:
            failures.sample.append({**ids, "reason": reason})
        log.error(f"{work.name}.item_failed", **ids, reason=reason)
        ctx.record_counts(counts())
        return position, False

    def cover(after: K, limit: int) -> tuple[K, bool]:
        """Process up to `limit` items after `after`: (position reached, whether the items ran out)."""
        ctx.checkpoint()
        try:
            result = attempt(after, limit)
        except DBAPIError as exc:
            if not is_item_error(exc):
                if is_transient_conflict(exc):
                    raise RunFailed(
                        f"database error in the chunk after {after}: {first_line(exc)} "
                        f"(still failing after {MAX_ATTEMPTS} attempts)"
                    ) from exc
                raise run_failed(exc, f"in the chunk after {after}") from exc
            if limit == 1:
                return isolate(after, exc)
            half = limit // 2  # bisect: same start, smaller limits, until the bad items stand alone
            reached, ran_out = cover(after, half)
            return (reached, True) if ran_out else cover(reached, limit - half)
        work.add(result)
        ctx.record_counts(counts())
        ctx.progress(*work.progress())
        last, size = work.covered(result)
        if last is None:
            return after, True
        return last, size < limit

    position = work.start
    while True:
        position, ran_out = cover(position, ctx.batch_size)
        if ran_out:
            return counts()
