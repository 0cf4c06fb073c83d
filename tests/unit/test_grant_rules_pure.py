"""The distribution rules as pure functions: which grant families are accepted, and when a periodic grant expires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.grant_rules import DEFAULT_GRANT_FAMILY, grant_expiry, validate_grant_family

START = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.mark.parametrize("family", [DEFAULT_GRANT_FAMILY, "promo", "plan-v2", "a", "x" * 63, "0.b_c-d"])
def test_grant_families_accepted(family: str) -> None:
    assert validate_grant_family(family) == family


@pytest.mark.parametrize("family", ["", "Plan", "plan:x", " plan", "-plan", "x" * 64, "plän", "a b", "\uff11"])
def test_grant_families_refused_with_the_source_named(family: str) -> None:
    with pytest.raises(ConfigError, match=r"^--grant-family=.* is not a grant family"):
        validate_grant_family(family, source="--grant-family")


@pytest.mark.parametrize(
    ("granted_at", "expected"),
    [
        (START + timedelta(minutes=5), START + timedelta(days=30)),  # on time: anchored to the period start
        (START + timedelta(days=29, hours=23), START + timedelta(days=30)),  # late inside the validity: anchored
        (START + timedelta(days=30), START + timedelta(days=60)),  # anchored moment reached: from the grant time
        (datetime(2026, 11, 28, 12, tzinfo=UTC), datetime(2026, 12, 28, 12, tzinfo=UTC)),  # the documented backfill
    ],
)
def test_a_grant_expires_from_the_period_start_unless_that_is_already_past(
    granted_at: datetime, expected: datetime
) -> None:
    assert grant_expiry(START, granted_at, 30) == expected
    assert grant_expiry(START, granted_at, None) is None


def test_a_day_of_validity_is_24_hours_across_a_dst_change_whatever_zone_the_period_starts_in() -> None:
    # November 2026 in New York starts in EDT (UTC-4); the clocks fall back on the 1st, so 30 days later is EST
    start = datetime(2026, 10, 1, tzinfo=ZoneInfo("America/New_York"))  # 04:00Z
    assert grant_expiry(start, start, 30) == datetime(2026, 10, 31, 4, tzinfo=UTC)  # no change crossed
    november = datetime(2026, 11, 1, tzinfo=ZoneInfo("America/New_York"))  # 04:00Z, two hours before the change
    expires = grant_expiry(november, november, 30)
    assert expires == datetime(2026, 12, 1, 4, tzinfo=UTC)  # 720 hours later (wall-clock days would add one)
    assert expires is not None
    assert expires - november == timedelta(hours=720)
    late = datetime(2026, 12, 5, 12, tzinfo=ZoneInfo("America/New_York"))
    assert grant_expiry(november, late, 30) == late + timedelta(hours=720)
