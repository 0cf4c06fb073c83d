"""The event loop's consume (`adapters/ledger_async.py`, what the HTTP API's consume route awaits) on a real
PostgreSQL: the same answers and refusals as the library's `consume`, the engine's per-transaction timeouts, a bounded
set of connections kept open, a bounded wait for one, and a pooled connection the server dropped replaced once."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.adapters.ledger_async import AsyncLedger
from credit_jobs.domain.errors import CreditJobsError
from credit_jobs.usecases.consume import Consumption, consume, consume_async
from tests.support.ledger import add_gift, scalar

TIMEOUTS = database.SessionTimeouts(statement_seconds=30, lock_seconds=0.5, idle_in_transaction_seconds=10)


def _engine(url: str) -> sa.Engine:
    return database.create_engine(url, timeouts=TIMEOUTS)


def _ledger(engine: sa.Engine, size: int = 3, timeout_seconds: float = 10) -> AsyncLedger:
    return AsyncLedger(engine, database.PoolLimits(size=size, max_overflow=0, timeout_seconds=timeout_seconds))


def _counting_connects(ledger: AsyncLedger) -> list[int]:
    opened: list[int] = []
    connect = ledger._connect

    async def counted() -> Any:
        opened.append(1)
        return await connect()

    ledger._connect = counted  # type: ignore[method-assign]
    return opened


def _outcome(call: Callable[[], Consumption], user: str) -> tuple[str, Any]:
    """What the caller sees, with the user's name masked (each path has its own twin user)."""
    try:
        done = call()
    except CreditJobsError as exc:
        return type(exc).__name__, str(exc).replace(user, "USER")
    return "ok", ([credits for _, credits in done.takes], done.replayed)


def test_it_answers_and_refuses_as_the_library_consume(database_url: str) -> None:
    """One sequence through each path, on twin users: a consume, its replay, the key reused with another amount, too
    many credits, a smaller consume, a user without an account."""
    engine = _engine(database_url)
    ledger = _ledger(engine)
    loop = asyncio.new_event_loop()
    for user in ("user-a", "user-b"):
        add_gift(engine, user, 60, f"gift-1-{user}", 30)
        add_gift(engine, user, 40, f"gift-2-{user}", 10)

    def library(user: str, amount: int, key: str) -> Consumption:
        return consume(engine, user, amount, request_id=key)

    def on_the_loop(user: str, amount: int, key: str) -> Consumption:
        return loop.run_until_complete(consume_async(ledger, user, amount, request_id=key))

    steps = [("USER", 70, "order-1"), ("USER", 70, "order-1"), ("USER", 71, "order-1"), ("USER", 1000, "order-2")]
    steps += [("USER", 5, "order-3"), ("nobody-USER", 1, "order-4")]
    answers: dict[str, list[tuple[str, Any]]] = {}
    try:
        for user, path in (("user-a", library), ("user-b", on_the_loop)):
            answers[user] = [
                _outcome(functools.partial(path, who.replace("USER", user), amount, f"{key}-{user}"), user)
                for who, amount, key in steps
            ]
        loop.run_until_complete(ledger.close())
        balances = scalar(engine, "SELECT array_agg(balance ORDER BY user_id) FROM credit_accounts")
    finally:
        loop.close()
        engine.dispose()
    assert answers["user-b"] == answers["user-a"]
    assert answers["user-a"][:2] == [("ok", ([40, 30], False)), ("ok", ([40, 30], True))]  # soonest-expiring first
    assert [kind for kind, _ in answers["user-a"][2:]] == [
        "RequestIdReused",
        "InsufficientCredits",
        "ok",
        "NoCreditAccount",
    ]
    assert balances == [25, 25]


def test_concurrent_consumes_share_at_most_pool_size_connections_kept_open(database_url: str) -> None:
    engine = _engine(database_url)
    add_gift(engine, "many", 1000, "gift", 30)
    ledger = _ledger(engine, size=3)
    opened = _counting_connects(ledger)

    async def thirty() -> tuple[list[Consumption], int]:
        done = await asyncio.gather(*(consume_async(ledger, "many", 2, request_id=f"c-{i}") for i in range(30)))
        idle = len(ledger._idle)
        await ledger.close()
        return list(done), idle

    try:
        done, idle = asyncio.run(thirty())
        balance = scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = 'many'")
    finally:
        engine.dispose()
    assert [c.replayed for c in done] == [False] * 30
    assert balance == 1000 - 60
    assert (len(opened), idle) == (3, 3)  # opened once each, kept open between calls


def test_the_engines_lock_timeout_applies_and_a_caller_waits_a_bounded_time_for_a_connection(
    database_url: str,
) -> None:
    """One connection. A consume meets a row another session holds: the engine's lock timeout (0.5 s) cancels it
    and nothing is written. Meanwhile a second consume waits for the connection and gives up after the pool's
    timeout (0.1 s). Once the lock is gone, the first one's retry applies."""
    engine = _engine(database_url)
    add_gift(engine, "locked", 100, "gift", 30)
    ledger = _ledger(engine, size=1, timeout_seconds=0.1)
    claims = "SELECT count(*) FROM credit_requests"
    before = scalar(engine, claims)

    async def contended() -> list[Any]:
        first = asyncio.create_task(consume_async(ledger, "locked", 10, request_id="first"))
        await asyncio.sleep(0)  # the first takes the only connection
        second = consume_async(ledger, "locked", 10, request_id="second")
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        await ledger.close()
        return outcomes

    try:
        with engine.connect() as blocker:
            blocker.execute(sa.text("SELECT 1 FROM credit_accounts WHERE user_id = 'locked' FOR UPDATE"))
            first, second = asyncio.run(contended())
            blocker.rollback()
        written = scalar(engine, claims) - before
        retried = asyncio.run(consume_async(ledger, "locked", 10, request_id="first"))
        balance = scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = 'locked'")
    finally:
        engine.dispose()
    assert isinstance(first, sa.exc.OperationalError), first
    assert database.timed_out(first) == "lock", first
    assert isinstance(second, sa.exc.TimeoutError), second
    assert written == 0
    assert (retried.replayed, balance) == (False, 90)


def test_a_pooled_connection_the_server_dropped_is_replaced_and_the_consume_applies_once(
    database_url: str,
) -> None:
    """A failover or an idle-connection reaper ends the pooled connection's session: the next consume finds it
    closed, opens a fresh one and applies — once."""
    engine = _engine(database_url)
    add_gift(engine, "dropped", 100, "gift", 30)
    ledger = _ledger(engine)
    opened = _counting_connects(ledger)

    async def across_a_drop() -> list[Consumption]:
        before = await consume_async(ledger, "dropped", 10, request_id="before")
        (pooled,) = ledger._idle
        with engine.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pooled.info.backend_pid})
        after = await consume_async(ledger, "dropped", 10, request_id="after")
        await ledger.close()
        return [before, after]

    try:
        before, after = asyncio.run(across_a_drop())
        balance = scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = 'dropped'")
        usage = scalar(engine, "SELECT count(*) FROM credit_entries WHERE kind = 'usage'")
    finally:
        engine.dispose()
    assert (before.replayed, after.replayed) == (False, False)
    assert (balance, usage, len(opened)) == (80, 2, 2)


def test_a_server_that_is_down_fails_the_consume_as_the_engine_would() -> None:
    """Nothing listens: the connection failure is the engine's OperationalError, marked as a lost connection (the
    HTTP API answers it 503, retryable)."""
    engine = _engine("postgresql://nobody@127.0.0.1:1/none")
    ledger = _ledger(engine)
    try:
        with pytest.raises(sa.exc.OperationalError) as raised:
            asyncio.run(consume_async(ledger, "anyone", 1, request_id="down"))
    finally:
        engine.dispose()
    assert raised.value.connection_invalidated
    assert "127.0.0.1" in database.error_line(raised.value)
