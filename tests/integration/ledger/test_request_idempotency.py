"""Idempotency of consume, grant and void by a claimed request id, against a real PostgreSQL.

Each request id is claimed in `credit_requests` by its unique index, in the transaction that applies it: a replay
returns the first result, a reuse with any other parameter is refused naming the field, and a concurrent retry
waits on the index — shown here with two real connections, one slowed inside its transaction, the other observed
waiting in `pg_stat_activity`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.domain.errors import ConfigError, InsufficientCredits
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.consume import Consumption, consume
from credit_jobs.usecases.grant import grant
from credit_jobs.usecases.void_grant import void_grant
from tests.support.ledger import NOW, add_gift, rows, scalar

LEDGER_TABLES = ("credit_accounts", "credit_grants", "credit_entries", "credit_requests")


def ledger_counts(engine: sa.Engine) -> dict[str, int]:
    return {table: scalar(engine, f"SELECT count(*) FROM {table}") for table in LEDGER_TABLES}


def _balance(engine: sa.Engine, user_id: int) -> int:
    return int(
        scalar(engine, "SELECT coalesce(sum(balance), 0) FROM credit_accounts WHERE user_id = :u", u=str(user_id))
    )


# --- reuse with other parameters is refused; a replay returns the first result ------------------------------------


def test_a_consume_request_id_reused_for_another_user_is_refused_and_charges_nobody(engine: sa.Engine) -> None:
    add_gift(engine, 1, 50, "g1")
    add_gift(engine, 2, 50, "g2")
    first = consume(engine, "1", 10, request_id="R1")
    with pytest.raises(
        ConfigError, match=r"request id 'R1' was first used with user_id='1', this request has user_id='2'"
    ):
        consume(engine, "2", 10, request_id="R1")
    assert (_balance(engine, 1), _balance(engine, 2)) == (40, 50)
    with pytest.raises(ConfigError, match="first used with amount=10, this request has amount=11"):
        consume(engine, "1", 11, request_id="R1")
    replay = consume(engine, "1", 10, request_id="R1")
    assert (replay.replayed, replay.takes) == (True, first.takes)
    assert _balance(engine, 1) == 40
    assert check_invariants(engine).ok


def test_a_void_request_id_reused_for_another_grant_is_refused_and_replays_its_first_result(engine: sa.Engine) -> None:
    g10 = add_gift(engine, 1, 30, "g10")
    g11 = add_gift(engine, 1, 70, "g11")
    first = void_grant(engine, g10, request_id="V1")
    assert (first.voided, first.replayed) == (30, False)
    with pytest.raises(ConfigError, match=rf"request id 'V1' was first used with grant_id={g10}, .* grant_id={g11}"):
        void_grant(engine, g11, request_id="V1")
    assert scalar(engine, "SELECT remaining FROM credit_grants WHERE grant_id = :g", g=g11) == 70
    replay = void_grant(engine, g10, request_id="V1")
    assert (replay.grant_id, replay.user_id, replay.voided, replay.replayed) == (g10, "1", 30, True)
    assert _balance(engine, 1) == 70
    assert check_invariants(engine).ok


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grant_type": "purchase"}, "first used with grant_type='gift', this request has grant_type='purchase'"),
        ({"expires_in_days": 7}, "first used with expires_in_days=30, this request has expires_in_days=7"),
        ({"expires_in_days": None}, "first used with expires_in_days=30, this request has expires_in_days=None"),
        ({"user_id": "6"}, "first used with user_id='5', this request has user_id='6'"),
        ({"amount": 26}, "first used with amount=25, this request has amount=26"),
    ],
)
def test_a_grant_key_reused_with_any_other_parameter_is_refused_naming_it(
    engine: sa.Engine, change: dict[str, Any], message: str
) -> None:
    request: dict[str, Any] = {"user_id": "5", "amount": 25, "grant_type": "gift", "expires_in_days": 30}
    first = grant(engine, **request, allow_unknown_user=True, idempotency_key="invoice-1")
    before = ledger_counts(engine)
    with pytest.raises(ConfigError, match=f"idempotency key 'invoice-1' was {message}"):
        grant(engine, **(request | change), allow_unknown_user=True, idempotency_key="invoice-1")
    assert ledger_counts(engine) == before
    replay = grant(
        engine, **request, allow_unknown_user=True, idempotency_key="invoice-1"
    )  # a later retry: its own clock, same request
    assert (replay.grant_id, replay.created) == (first.grant_id, False)
    assert _balance(engine, 5) == 25


def test_one_id_names_one_request_whatever_the_operation(engine: sa.Engine) -> None:
    gift = add_gift(engine, 1, 50, "shared-id")
    with pytest.raises(ConfigError, match="first used with operation='grant', this request has operation='consume'"):
        consume(engine, "1", 10, request_id="shared-id")
    with pytest.raises(ConfigError, match="first used with operation='grant', this request has operation='void'"):
        void_grant(engine, gift, request_id="shared-id")
    assert _balance(engine, 1) == 50


@pytest.mark.parametrize("blank", ["", " ", "\t", "\u3000"])
def test_empty_or_blank_ids_are_refused_and_nothing_is_written(engine: sa.Engine, blank: str) -> None:
    gift = add_gift(engine, 1, 50, "g")
    before = ledger_counts(engine)
    with pytest.raises(ConfigError, match="request id must not be empty or blank"):
        consume(engine, "1", 10, request_id=blank)
    with pytest.raises(ConfigError, match="idempotency key must not be empty or blank"):
        grant(engine, "1", 10, grant_type="gift", allow_unknown_user=True, idempotency_key=blank)
    with pytest.raises(ConfigError, match="request id must not be empty or blank"):
        void_grant(engine, gift, request_id=blank)
    assert ledger_counts(engine) == before


def test_a_refused_request_leaves_its_id_free(engine: sa.Engine) -> None:
    add_gift(engine, 1, 5, "small")
    with pytest.raises(InsufficientCredits):
        consume(engine, "1", 10, request_id="order-9")
    with pytest.raises(ConfigError, match="no grant 424242"):
        void_grant(engine, 424242, request_id="refund-9")
    assert scalar(engine, "SELECT count(*) FROM credit_requests WHERE request_id IN ('order-9', 'refund-9')") == 0
    add_gift(engine, 1, 5, "top-up")
    assert not consume(engine, "1", 10, request_id="order-9").replayed
    assert _balance(engine, 1) == 0


def test_times_come_from_the_database_clock(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        db_before = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    gift = grant(
        engine, "1", 50, grant_type="gift", allow_unknown_user=True, idempotency_key="k", expires_in_days=2
    ).grant_id
    consume(engine, "1", 10, request_id="c")
    with engine.connect() as conn:
        db_after = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    granted_at, expires_at = rows(
        engine, "SELECT granted_at, expires_at FROM credit_grants WHERE grant_id = :g", g=gift
    )[0]
    used_at = scalar(engine, "SELECT created_at FROM credit_entries WHERE kind = 'usage'")
    assert db_before <= granted_at <= used_at <= db_after
    # In UTC: both come back in the session's zone with one tzinfo, and Python subtracts those as wall-clock times
    # (across a DST change that is 2 days ± 1 hour, although 48 hours passed).
    assert expires_at.astimezone(UTC) - granted_at.astimezone(UTC) == timedelta(days=2)


# --- concurrency --------------------------------------------------------------------------------------------------


def test_concurrent_attempts_with_one_request_id_consume_once(engine: sa.Engine) -> None:
    add_gift(engine, 1, 100, "a")
    add_gift(engine, 1, 100, "b", expires_in_days=3)
    results: list[Consumption] = []
    start = threading.Barrier(12)

    def attempt() -> None:
        start.wait()
        results.append(consume(engine, "1", 20, request_id="same-order"))

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.replayed for r in results) == [False] + [True] * 11
    assert {tuple(r.takes) for r in results} == {tuple(results[0].takes)}
    assert _balance(engine, 1) == 180
    assert scalar(engine, "SELECT count(*) FROM credit_entries WHERE kind = 'usage'") == 1
    assert check_invariants(engine).ok


class SlowedAttempt:
    """An attempt on its own engine that stops inside its transaction right after its ledger function (which
    claimed the request id) returned or raised, before its commit or rollback, until released — the retry's window.
    A refused attempt's transaction is aborted but still holds its claim's lock until the rollback."""

    def __init__(self, url: str) -> None:
        self.engine = database.create_engine(url)
        self.inside = threading.Event()
        self.release = threading.Event()
        sa.event.listen(self.engine, "after_cursor_execute", lambda *args: self._hold(str(args[2])))
        sa.event.listen(self.engine, "handle_error", lambda context: self._hold(str(context.statement)))

    def _hold(self, statement: str) -> None:
        if not self.inside.is_set() and any(f"credit_{op}(" in statement for op in ("consume", "grant", "void")):
            self.inside.set()
            self.release.wait(timeout=120)  # a bound for a broken test, not a timing assumption


def _run(target: Any) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def body() -> None:
        try:
            box.append(target())
        except Exception as exc:  # handed to the test thread
            box.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    return thread, box


def _wait_until_waiting_on_a_lock(engine: sa.Engine, thread: threading.Thread) -> bool:
    """Poll until a second credit-jobs backend waits on a lock (True), or the attempt finished unblocked (False)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        waiting = scalar(
            engine,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        )
        if waiting:
            return True
        if not thread.is_alive():
            return False
        time.sleep(0.01)
    raise AssertionError("the retry neither waited on a lock nor finished within 60 s")


@pytest.fixture
def slowed(database_url: str) -> Iterator[SlowedAttempt]:
    attempt = SlowedAttempt(database_url)
    yield attempt
    attempt.release.set()
    attempt.engine.dispose()


def test_a_retry_racing_the_first_attempt_across_an_expiry_boundary_replays_it(
    engine: sa.Engine, slowed: SlowedAttempt
) -> None:
    boundary = NOW + timedelta(days=1)
    g1 = add_gift(engine, 1, 100, "g1", expires_in_days=1)  # expires at the boundary
    g2 = add_gift(engine, 1, 100, "g2", expires_in_days=30)  # B, after the boundary, could only spend this one
    a_thread, a_box = _run(lambda: consume(slowed.engine, "1", 10, request_id="R", now=boundary - timedelta(minutes=1)))
    assert slowed.inside.wait(timeout=60)
    b_thread, b_box = _run(lambda: consume(engine, "1", 10, request_id="R", now=boundary + timedelta(minutes=1)))
    b_waited = _wait_until_waiting_on_a_lock(engine, b_thread)
    slowed.release.set()
    a_thread.join()
    b_thread.join()
    (a,), (b,) = a_box, b_box
    assert isinstance(a, Consumption), a
    assert isinstance(b, Consumption), b
    assert (a.replayed, a.takes) == (False, [(g1, 10)])
    assert (b.replayed, b.takes) == (True, [(g1, 10)])
    assert b_waited
    assert [tuple(r) for r in rows(engine, "SELECT grant_id, amount FROM credit_entries WHERE kind = 'usage'")] == [
        (g1, 10)
    ]
    assert scalar(engine, "SELECT remaining FROM credit_grants WHERE grant_id = :g", g=g2) == 100
    assert _balance(engine, 1) == 190
    assert check_invariants(engine).ok


def test_a_retry_racing_a_first_attempt_that_rolls_back_proceeds(engine: sa.Engine, slowed: SlowedAttempt) -> None:
    """A consumed inside the application's transaction, which then fails and rolls back (the order was not
    placed); B, the retry, waited on A's claim all along and then spends for itself."""
    g1 = add_gift(engine, 1, 100, "g1")

    def attempt_that_rolls_back() -> str:
        with slowed.engine.connect() as conn:
            conn.begin()
            conn.execute(sa.text("SELECT credit_consume('1', 10, 'R')"))  # held here by `slowed`
            conn.rollback()
        return "rolled back"

    a_thread, a_box = _run(attempt_that_rolls_back)
    assert slowed.inside.wait(timeout=60)
    b_thread, b_box = _run(lambda: consume(engine, "1", 10, request_id="R"))
    assert _wait_until_waiting_on_a_lock(engine, b_thread)
    slowed.release.set()
    a_thread.join()
    b_thread.join()
    (a,), (b,) = a_box, b_box
    assert a == "rolled back"
    assert isinstance(b, Consumption), b
    assert (b.replayed, b.takes) == (False, [(g1, 10)])
    assert _balance(engine, 1) == 90
    assert check_invariants(engine).ok


# --- databases upgraded with request ids already in the ledger ---------------------------------------------------

PRE_UPGRADE_LEDGER = """
INSERT INTO credit_grants (grant_id, user_id, grant_type, amount, remaining, granted_at, expires_at,
                           cause_request_id, idempotency_key)
OVERRIDING SYSTEM VALUE VALUES
    (1, 3, 'purchase', 50, 45, :now, CAST(:now AS timestamptz) + interval '30 days', 'inv-1', 'inv-1'),
    (2, 3, 'gift', 20, 0, :now, NULL, 'inv-2', 'inv-2'),
    (3, 4, 'gift', 20, 18, :now, NULL, 'inv-3', 'inv-3');
INSERT INTO credit_entries (user_id, grant_id, kind, amount, created_at, cause_request_id) VALUES
    (3, 1, 'usage', 5, :now, 'order-1'),
    (3, 2, 'usage', 3, :now, 'order-1'),
    (3, 2, 'void', 17, :now, 'refund-1'),
    (4, 3, 'usage', 2, :now, 'order-1');
INSERT INTO credit_accounts (user_id, balance) VALUES (3, 45), (4, 18);
"""


@pytest.fixture
def pre_upgrade_url(pg_server: Any) -> Iterator[str]:
    """A database at revision 0002 (before claims) holding one-off grants, usages and a void, then upgraded."""
    from credit_jobs.adapters.schema_migrations import upgrade_schema

    admin = sa.create_engine(pg_server.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"pre_claims_{threading.get_ident()}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_server.url(name)
    try:
        upgrade_schema(url, "0002")
        legacy = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with legacy.begin() as conn:
            for statement in PRE_UPGRADE_LEDGER.strip().split(";\n"):
                conn.execute(sa.text(statement), {"now": NOW})
        legacy.dispose()
        upgrade_schema(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_request_ids_from_before_the_upgrade_replay_or_are_refused(pre_upgrade_url: str) -> None:
    engine = database.create_engine(pre_upgrade_url)
    try:
        before = ledger_counts(engine)
        replay = consume(engine, "3", 8, request_id="order-1")
        assert (replay.replayed, replay.takes) == (True, [(1, 5), (2, 3)])
        # the old per-user check let 'order-1' charge user 4 too: the claim keeps its first user
        with pytest.raises(ConfigError, match="first used with user_id='3', this request has user_id='4'"):
            consume(engine, "4", 2, request_id="order-1")
        granted = grant(
            engine, "3", 50, grant_type="purchase", allow_unknown_user=True, idempotency_key="inv-1", expires_in_days=30
        )
        assert (granted.grant_id, granted.created) == (1, False)
        never = grant(engine, "3", 20, grant_type="gift", allow_unknown_user=True, idempotency_key="inv-2")
        assert (never.grant_id, never.created) == (2, False)
        with pytest.raises(ConfigError, match="first used with expires_in_days=30, this request has expires_in_days=7"):
            grant(
                engine,
                "3",
                50,
                grant_type="purchase",
                allow_unknown_user=True,
                idempotency_key="inv-1",
                expires_in_days=7,
            )
        voided = void_grant(engine, 2, request_id="refund-1")
        assert (voided.user_id, voided.voided, voided.replayed) == ("3", 17, True)
        assert ledger_counts(engine) == before
    finally:
        engine.dispose()
