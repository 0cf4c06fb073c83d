"""Consumption planning: which grants pay for a consumption, soonest-expiring first (invariant 4). Pure.

`credit_jobs.usecases.consume` locks the user's live grants in this order, asks `plan_consumption` how much to take
from each, and writes the result; the database CHECK on balances is the last line of defence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from credit_jobs.domain.errors import InsufficientCredits


@dataclass(frozen=True)
class LiveGrant:
    grant_id: int
    remaining: int
    expires_at: datetime | None


def consumption_order(grants: list[LiveGrant]) -> list[LiveGrant]:
    """Soonest-expiring first; grants that never expire last; ties by grant id (oldest first)."""
    return sorted(
        grants,
        key=lambda g: (g.expires_at is None, g.expires_at.timestamp() if g.expires_at else 0.0, g.grant_id),
    )


def plan_consumption(user_id: str, grants: list[LiveGrant], amount: int) -> list[tuple[int, int]]:
    """[(grant_id, credits to take)] covering `amount`; InsufficientCredits (taking nothing) if they can't."""
    if amount <= 0:
        raise ValueError("amount must be positive")
    available = sum(g.remaining for g in grants)
    if available < amount:
        raise InsufficientCredits(user_id, amount, available)
    takes: list[tuple[int, int]] = []
    left = amount
    for grant in consumption_order(grants):
        if left == 0:
            break
        take = min(grant.remaining, left)
        if take > 0:
            takes.append((grant.grant_id, take))
            left -= take
    return takes
