"""Distribution rules as pure data and checks: grant families (one periodic grant per user, family and period) and
the validity of a late grant (docs/credits-lifecycle.md, "One grant per period" and "Late grants").

`validate_grant_family` is the one check of `CREDITJOB_GRANT_FAMILY` and `--grant-family`; `grant_expiry` is the
reference the SQL in `adapters.ledger_sql` implements.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from credit_jobs.domain.errors import ConfigError

# The family a distributing job grants in unless configured otherwise: "the plan's credits for the period".
DEFAULT_GRANT_FAMILY = "plan"
# Lower-case token, no ':' — rows the 0006 migration found duplicated are told apart by a flag, never by a family,
# and a family name stays safe in log lines, label values and keys.
GRANT_FAMILY_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62})")


def validate_grant_family(value: str, *, source: str = "CREDITJOB_GRANT_FAMILY") -> str:
    if not GRANT_FAMILY_PATTERN.fullmatch(value):
        shown = value if len(value) <= 80 else value[:80] + "…"
        raise ConfigError(
            f"{source}={shown!r} is not a grant family: use 1-63 characters of a-z, 0-9, '.', '_', '-', starting "
            f"with a letter or digit (default {DEFAULT_GRANT_FAMILY!r})"
        )
    return value


def grant_expiry(period_start: datetime, granted_at: datetime, expiry_days: int | None) -> datetime | None:
    """When a periodic grant expires: `expiry_days` after the period start, unless that moment has already passed
    when the grant is written (a late grant: backfill, catch-up, rerun) — then `expiry_days` after the grant time.

    Each grant is written once, so its expiry is fixed then; a rerun never moves an existing grant's expiry.
    A day is 24 hours of elapsed time, whatever zone the instants carry: a period starting at midnight in New York
    before the fall-back change expires at 23:00 local time after it (the SQL in `adapters.ledger_sql` likewise).
    """
    if expiry_days is None:
        return None
    validity = timedelta(days=expiry_days)
    anchored = period_start.astimezone(UTC) + validity  # UTC: aware arithmetic in a zone would count wall-clock days
    return anchored if anchored > granted_at else granted_at.astimezone(UTC) + validity
