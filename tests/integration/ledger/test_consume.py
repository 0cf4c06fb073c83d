"""consume against a real PostgreSQL: soonest-expiring first, never past expiry, all or nothing, once per request
id, never negative under concurrent consumers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from credit_jobs.domain.errors import ConfigError, InsufficientCredits
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.consume import consume
from tests.support.ledger import NOW, add_gift, rows, scalar

TEN_DAYS_AGO = NOW - timedelta(days=10)  # the gifts' grant time


def test_consumption_takes_soonest_expiring_credits_first_and_never_expiring_last(engine: sa.Engine) -> None:
    late = add_gift(engine, 1, 100, "late", expires_in_days=60, granted_at=TEN_DAYS_AGO)
    forever = add_gift(engine, 1, 100, "forever", expires_in_days=None, granted_at=TEN_DAYS_AGO)
    soon = add_gift(engine, 1, 30, "soon", expires_in_days=20, granted_at=TEN_DAYS_AGO)
    result = consume(engine, "1", 80, request_id="order-1", now=NOW)
    assert result.takes == [(soon, 30), (late, 50)]
    assert dict(rows(engine, "SELECT grant_id, remaining FROM credit_grants")) == {late: 50, forever: 100, soon: 0}
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '1'") == 150
    assert check_invariants(engine).ok


def test_consumption_skips_grants_already_past_expiry(engine: sa.Engine) -> None:
    add_gift(engine, 1, 100, "expired", expires_in_days=5, granted_at=TEN_DAYS_AGO)
    with pytest.raises(InsufficientCredits, match="0 credits available, 10 requested"):
        consume(engine, "1", 10, now=NOW)


def test_insufficient_credits_is_refused_and_takes_nothing(engine: sa.Engine) -> None:
    add_gift(engine, 1, 40, "a", expires_in_days=None, granted_at=TEN_DAYS_AGO)
    with pytest.raises(InsufficientCredits, match="user 1 has 40 credits available, 41 requested"):
        consume(engine, "1", 41, now=NOW)
    assert scalar(engine, "SELECT balance FROM credit_accounts") == 40
    assert scalar(engine, "SELECT count(*) FROM credit_entries") == 0


def test_a_repeated_request_id_consumes_once(engine: sa.Engine) -> None:
    add_gift(engine, 1, 40, "a", expires_in_days=None, granted_at=TEN_DAYS_AGO)
    consume(engine, "1", 10, request_id="order-7", now=NOW)
    replay = consume(engine, "1", 10, request_id="order-7", now=NOW)
    assert replay.replayed
    assert scalar(engine, "SELECT balance FROM credit_accounts") == 30
    with pytest.raises(ConfigError, match="first used with amount=10, this request has amount=12"):
        consume(engine, "1", 12, request_id="order-7", now=NOW)


def test_concurrent_consumers_never_drive_a_balance_negative(engine: sa.Engine) -> None:
    add_gift(engine, 1, 100, "a", expires_in_days=None, granted_at=TEN_DAYS_AGO)
    add_gift(engine, 1, 55, "b", expires_in_days=3, granted_at=TEN_DAYS_AGO)
    outcomes: list[str] = []

    def spend(n: int) -> None:
        try:
            consume(engine, "1", 20, request_id=f"c-{n}", now=NOW - timedelta(days=9))
            outcomes.append("ok")
        except InsufficientCredits:
            outcomes.append("refused")

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 7  # 155 credits pay for seven 20-credit consumptions
    assert scalar(engine, "SELECT balance FROM credit_accounts") == 15
    assert check_invariants(engine).ok
