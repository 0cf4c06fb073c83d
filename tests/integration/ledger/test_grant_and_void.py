"""One-off grants and voids against a real PostgreSQL: once per idempotency key, bad grants refused with a reason,
a void cancels what is left once."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from credit_jobs.domain.errors import ConfigError
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.grant import grant
from tests.support.ledger import NOW, add_gift, scalar

TEN_DAYS_AGO = NOW - timedelta(days=10)  # the gifts' grant time


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


def test_a_void_cancels_what_is_left_of_a_grant_once(engine: sa.Engine) -> None:
    from credit_jobs.usecases.void_grant import void_grant

    gift = add_gift(engine, 4, 100, "refund-me", expires_in_days=None, granted_at=TEN_DAYS_AGO)
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
