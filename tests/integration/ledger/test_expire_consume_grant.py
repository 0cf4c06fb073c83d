"""expire-credits, consume and one-off grants against a real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from credit_jobs.domain.errors import ConfigError, InsufficientCredits
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.grant import grant
from tests.support.ledger import NOW, rows, scalar
from tests.support.runs import RunUsecase


def _gift(engine: sa.Engine, user_id: int, amount: int, key: str, expires_in_days: int | None) -> int:
    return grant(
        engine,
        str(user_id),
        amount,
        grant_type="gift",
        allow_unknown_user=True,
        idempotency_key=key,
        expires_in_days=expires_in_days,
        now=NOW - timedelta(days=10),
    ).grant_id


def test_expiry_empties_each_expired_grant_once_and_reduces_the_balance(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    old = _gift(engine, 1, 50, "a", expires_in_days=5)  # expired 5 days before NOW
    live = _gift(engine, 1, 70, "b", expires_in_days=30)
    forever = _gift(engine, 2, 20, "c", expires_in_days=None)
    outcome = run_usecase("expire-credits")
    assert outcome.status == "succeeded"
    assert outcome.stats is not None
    assert outcome.stats.credits == {"expired": 50}
    remaining = dict(rows(engine, "SELECT grant_id, remaining FROM credit_grants"))
    assert remaining == {old: 0, live: 70, forever: 20}
    assert dict(rows(engine, "SELECT user_id, balance FROM credit_accounts")) == {"1": 70, "2": 20}
    entries = rows(engine, "SELECT grant_id, kind, amount, cause_run_id FROM credit_entries")
    assert [tuple(e) for e in entries] == [(old, "expiry", 50, outcome.run_id)]
    again = run_usecase("expire-credits", pinned_key="2026-11-29")
    assert again.stats is not None
    assert again.stats.credits == {"expired": 0}
    assert check_invariants(engine).ok


def test_expiry_takes_only_what_is_left_of_a_partly_used_grant(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    _gift(engine, 1, 50, "a", expires_in_days=5)
    with engine.begin() as conn:  # used before it expired
        conn.execute(sa.text("UPDATE credit_grants SET remaining = 30"))
        conn.execute(sa.text("UPDATE credit_accounts SET balance = 30"))
        conn.execute(
            sa.text(
                "INSERT INTO credit_entries (user_id, grant_id, kind, amount, cause_request_id) "
                "SELECT user_id, grant_id, 'usage', 20, 'use-1' FROM credit_grants"
            )
        )
    outcome = run_usecase("expire-credits")
    assert outcome.stats is not None
    assert outcome.stats.credits == {"expired": 30}
    assert scalar(engine, "SELECT balance FROM credit_accounts") == 0
    assert check_invariants(engine).ok


def test_a_dry_run_of_expiry_counts_and_changes_nothing(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    _gift(engine, 1, 50, "a", expires_in_days=5)
    outcome = run_usecase("expire-credits", dry_run=True)
    assert outcome.stats is not None
    assert outcome.stats.details["would_expire_grants"] == 1
    assert scalar(engine, "SELECT remaining FROM credit_grants") == 50
    assert scalar(engine, "SELECT count(*) FROM credit_entries") == 0


def test_consumption_takes_soonest_expiring_credits_first_and_never_expiring_last(engine: sa.Engine) -> None:
    late = _gift(engine, 1, 100, "late", expires_in_days=60)
    forever = _gift(engine, 1, 100, "forever", expires_in_days=None)
    soon = _gift(engine, 1, 30, "soon", expires_in_days=20)
    result = consume(engine, "1", 80, request_id="order-1", now=NOW)
    assert result.takes == [(soon, 30), (late, 50)]
    assert dict(rows(engine, "SELECT grant_id, remaining FROM credit_grants")) == {late: 50, forever: 100, soon: 0}
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '1'") == 150
    assert check_invariants(engine).ok


def test_consumption_skips_grants_already_past_expiry(engine: sa.Engine) -> None:
    _gift(engine, 1, 100, "expired", expires_in_days=5)
    with pytest.raises(InsufficientCredits, match="0 credits available, 10 requested"):
        consume(engine, "1", 10, now=NOW)


def test_insufficient_credits_is_refused_and_takes_nothing(engine: sa.Engine) -> None:
    _gift(engine, 1, 40, "a", expires_in_days=None)
    with pytest.raises(InsufficientCredits, match="user 1 has 40 credits available, 41 requested"):
        consume(engine, "1", 41, now=NOW)
    assert scalar(engine, "SELECT balance FROM credit_accounts") == 40
    assert scalar(engine, "SELECT count(*) FROM credit_entries") == 0


def test_a_repeated_request_id_consumes_once(engine: sa.Engine) -> None:
    _gift(engine, 1, 40, "a", expires_in_days=None)
    consume(engine, "1", 10, request_id="order-7", now=NOW)
    replay = consume(engine, "1", 10, request_id="order-7", now=NOW)
    assert replay.replayed
    assert scalar(engine, "SELECT balance FROM credit_accounts") == 30
    with pytest.raises(ConfigError, match="first used with amount=10, this request has amount=12"):
        consume(engine, "1", 12, request_id="order-7", now=NOW)


def test_concurrent_consumers_never_drive_a_balance_negative(engine: sa.Engine) -> None:
    _gift(engine, 1, 100, "a", expires_in_days=None)
    _gift(engine, 1, 55, "b", expires_in_days=3)
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


def test_a_one_off_grant_is_given_once_per_idempotency_key(engine: sa.Engine) -> None:
    first = grant(engine, "9", 25, grant_type="purchase", allow_unknown_user=True, idempotency_key="invoice-1")
    second = grant(engine, "9", 25, grant_type="purchase", allow_unknown_user=True, idempotency_key="invoice-1")
    assert first.created
    assert not second.created
    assert second.grant_id == first.grant_id
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '9'") == 25
    with pytest.raises(ConfigError, match="first used with user_id='9', this request has user_id='10'"):
        grant(engine, "10", 25, grant_type="purchase", allow_unknown_user=True, idempotency_key="invoice-1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grant_type": "subscription", "idempotency_key": "k"}, "not a one-off type"),
        ({"grant_type": "gift", "idempotency_key": " "}, "idempotency key must not be empty or blank"),
        ({"grant_type": "gift", "idempotency_key": "k", "expires_in_days": 0}, "must be between 1 and 36500"),
    ],
)
def test_bad_grants_are_refused_with_a_reason(engine: sa.Engine, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        grant(engine, "1", 5, **kwargs)  # type: ignore[arg-type]
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0


def test_check_reports_a_corrupted_balance(engine: sa.Engine) -> None:
    _gift(engine, 1, 40, "a", expires_in_days=None)
    assert check_invariants(engine).ok
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE credit_accounts SET balance = 41"))
    report = check_invariants(engine)
    assert not report.ok
    assert list(report.violations) == ["balance_equals_grants"]
    assert report.violations["balance_equals_grants"][0]["user_id"] == "1"


def test_expiry_walks_many_chunks_of_grants_with_the_same_expiry_exactly_once(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    for n in range(10):  # identical expires_at: the keyset must break ties by grant id
        _gift(engine, n % 3 + 1, 10 + n, f"k{n}", expires_in_days=5)
    outcome = run_usecase("expire-credits", batch_size=3)
    assert outcome.stats is not None
    assert outcome.stats.details == {"expired_grants": 10, "chunks": 4}
    assert outcome.stats.credits == {"expired": sum(10 + n for n in range(10))}
    assert scalar(engine, "SELECT count(*) FROM credit_entries WHERE kind = 'expiry'") == 10
    assert check_invariants(engine).ok


def test_a_void_cancels_what_is_left_of_a_grant_once(engine: sa.Engine) -> None:
    from credit_jobs.usecases.void_grant import void_grant

    gift = _gift(engine, 4, 100, "refund-me", expires_in_days=None)
    consume(engine, "4", 30, request_id="spent", now=NOW)
    result = void_grant(engine, gift, request_id="refund-42", now=NOW)
    assert (result.voided, result.replayed) == (70, False)
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '4'") == 0
    replay = void_grant(engine, gift, request_id="refund-42", now=NOW)
    assert (replay.voided, replay.replayed) == (70, True)
    assert void_grant(engine, gift, request_id="refund-43", now=NOW).voided == 0
    assert scalar(engine, "SELECT count(*) FROM credit_entries WHERE kind = 'void'") == 1
    assert check_invariants(engine).ok
    with pytest.raises(ConfigError, match="no grant 999999"):
        void_grant(engine, 999_999, request_id="x")
