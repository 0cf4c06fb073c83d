"""backfill: run one usecase for a range of periods, oldest first, each period its own run of the lifecycle.

Each period is an ordinary run (`run_lifecycle.execute_run`: its own run id, guard, audit row with trigger
`backfill`, logs, metrics) with its key pinned, so a period already done re-runs cheaply and reports what it added
(distribution's rerun rule), and a late grant gets the late-grant expiry (docs/credits-lifecycle.md, "Late grants").
The walk stops at the first period that does not succeed — failed (exit 1, or 2 for a configuration error met by
the run), or skipped because a live run holds it — leaving the earlier periods committed and the later ones unrun.
It lives in the lifecycle layer because it drives the lifecycle; the usecases stay unaware of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import sqlalchemy as sa

from credit_jobs.domain.contract import EXIT_FAILED, EXIT_OK, Trigger
from credit_jobs.lifecycle.run_lifecycle import RunOutcome, RunRequest, execute_run

# Runs one period: (the period's request, its position 1..n, n) -> outcome. The CLI wraps `execute_run` in a
# progress bar; tests may pass `execute_run` itself.
RunPeriod = Callable[[RunRequest, int, int], RunOutcome]


@dataclass
class BackfillResult:
    keys: list[str]
    outcomes: list[RunOutcome] = field(default_factory=list)

    @property
    def stopped_at(self) -> RunOutcome | None:
        """The period that did not succeed (the walk stopped there), if any."""
        return next((o for o in self.outcomes if o.status != "succeeded"), None)

    @property
    def exit_code(self) -> int:
        stopped = self.stopped_at
        if stopped is None:
            return EXIT_OK
        return stopped.exit_code if stopped.exit_code != EXIT_OK else EXIT_FAILED  # skipped: not done, say so


def period_requests(template: RunRequest, keys: list[str]) -> list[RunRequest]:
    """One request per key: the template's job, usecase and options, key pinned, trigger `backfill`."""
    return [replace(template, pinned_key=key, trigger=Trigger.BACKFILL.value, schedule=None) for key in keys]


def run_backfill(
    template: RunRequest,
    keys: list[str],
    engine_factory: Callable[[], sa.Engine],
    *,
    run_period: RunPeriod | None = None,
) -> BackfillResult:
    """Run every key oldest first; stop at the first period that does not succeed."""

    def default(request: RunRequest, _position: int, _count: int) -> RunOutcome:
        return execute_run(request, engine_factory)

    run = run_period or default
    result = BackfillResult(keys)
    requests = period_requests(template, keys)
    for position, request in enumerate(requests, start=1):
        outcome = run(request, position, len(requests))
        result.outcomes.append(outcome)
        if outcome.status != "succeeded":
            break
    return result
