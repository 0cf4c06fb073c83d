"""Missed fire times → the catch-up plan: which periods to run now, which are given up. Pure (no I/O).

Called by `reconcile.py` on every pass (start-up, resync, child Job change). A fire time is *missed* when it lies
after the anchor (the latest scheduled time the world shows: child Jobs, the CronJob's status, the CreditJob's
own `status.catchUpThrough` bookkeeping, or else its creation time), its starting deadline has passed (until
then the CronJob controller may still start it, and we must not race it), and no child Job already carries its
period key. Missed fire times are grouped by period key; the newest `catchUp.maxPeriods` keys are planned
(returned oldest first, the order the ledger expects), older ones are reported as given up.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from credit_jobs.domain.schedule import Schedule

# Walking back from now over an every-minute schedule after a month of downtime would take 40 000 steps;
# past this many fire times we stop and report the periods seen so far (older ones count as given up
# without being listed one by one).
MAX_FIRES_SCANNED = 5000


@dataclass(frozen=True)
class MissedPeriod:
    """One missed period: its key and the (first) fire time of it that was missed."""

    key: str
    fire_time: datetime


@dataclass(frozen=True)
class CatchUpPlan:
    """What to do about missed fire times."""

    to_run: tuple[MissedPeriod, ...]  # oldest first, at most max_periods
    given_up: tuple[MissedPeriod, ...]  # older missed periods beyond the cap (or all of them when catch-up is off)
    through: datetime | None  # the newest missed fire time considered: the next anchor

    @property
    def missed(self) -> tuple[MissedPeriod, ...]:
        return self.given_up + self.to_run


def missed_fire_times(
    schedule: Schedule, anchor: datetime, now: datetime, starting_deadline_seconds: int
) -> list[datetime]:
    """Fire times t with anchor < t and t + deadline < now, newest first, at most MAX_FIRES_SCANNED (UTC).

    Both fires of a repeated wall-clock hour count (the CronJob controller starts both; an hourly schedule gives
    them two period keys).
    """
    cutoff = now - timedelta(seconds=starting_deadline_seconds)
    if cutoff <= anchor:
        return []
    found: list[datetime] = []
    for fire in schedule.fires_at_or_before(cutoff):
        if fire <= anchor or len(found) >= MAX_FIRES_SCANNED:
            break
        if fire < cutoff:
            found.append(fire)
    return found


def plan_catch_up(
    *,
    schedule: Schedule,
    anchor: datetime,
    now: datetime,
    starting_deadline_seconds: int,
    max_periods: int,
    covered_keys: Collection[str] = (),
) -> CatchUpPlan:
    """The catch-up plan for one CreditJob (see the module docstring for the rules)."""
    fires = missed_fire_times(schedule, anchor, now, starting_deadline_seconds)
    if not fires:
        return CatchUpPlan((), (), None)
    # Newest first; the first fire time seen per key is its newest — keep the oldest fire time of each key
    # instead, so the pinned run belongs to the start of the period as a scheduled run would have.
    by_key: dict[str, datetime] = {}
    for fire in fires:
        by_key[schedule.period_key_of(fire)] = fire
    missed = [MissedPeriod(key, fire) for key, fire in by_key.items() if key not in covered_keys]
    missed.sort(key=lambda m: m.fire_time)
    cap = max(max_periods, 0)
    to_run = tuple(missed[max(len(missed) - cap, 0) :]) if cap else ()
    given_up = tuple(missed[: len(missed) - len(to_run)])
    return CatchUpPlan(to_run=to_run, given_up=given_up, through=fires[0])
