"""The API's request engine under contention, in process and as a served process, on a real PostgreSQL.

A consume that meets a row lock held by another session (a long consume, a period rollback, a stuck session) is
cancelled by the request's lock or statement timeout (`CREDITJOBS_API_LOCK_TIMEOUT_SECONDS`,
`CREDITJOBS_API_STATEMENT_TIMEOUT_SECONDS`): it answers `503 database_unavailable` with `retryable: true`, writes
nothing — its idempotency claim is rolled back with the rest — and a retry with the same `Idempotency-Key` applies
once. Local-mode runs keep a run's own timeouts on their own engine. The request pool holds a connection for every
worker thread FastAPI runs sync routes on; a request that still finds none free answers the same retryable 503.
Every assertion is on an outcome, none on a duration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from credit_jobs.adapters.database import PoolLimits
from credit_jobs.domain.period_keys import Period
from credit_jobs.domain.run_model import RunContext, RunStats, UsecaseSpec
from credit_jobs.entrypoints.api.settings import WORKER_THREADS
from credit_jobs.entrypoints.api.triggers import LocalTriggers
from credit_jobs.usecases import registry
from tests.support.api import LEDGER_TOKEN, READ_TOKEN, RUNS_TOKEN, api_client, bearer, served_api
from tests.support.ledger import add_users, scalar

WRITE = bearer(LEDGER_TOKEN)
CONSUME = "/api/v1/users/42/consume"
ORDER = {**WRITE, "Idempotency-Key": "order-9"}
SHORT = "0.5"  # seconds: long enough for an unloaded request, short enough not to slow the suite
PROBE = "probe-session-settings"
TIMEOUTS = ("lock_timeout", "statement_timeout")


def _ledger(engine: sa.Engine) -> tuple[int, ...]:
    """Everything a consume writes: grants' remaining credits, entries, claims, balances."""
    return (
        scalar(engine, "SELECT coalesce(sum(remaining), 0) FROM credit_grants"),
        scalar(engine, "SELECT count(*) FROM credit_entries"),
        scalar(engine, "SELECT count(*) FROM credit_requests"),
        scalar(engine, "SELECT coalesce(sum(balance), 0) FROM credit_accounts"),
    )


@contextmanager
def _account_locked(engine: sa.Engine, user_id: str) -> Iterator[None]:
    """Another session's open transaction holds the user's balance row (FOR UPDATE) until the block ends."""
    with engine.connect() as blocker:
        blocker.execute(sa.text("SELECT 1 FROM credit_accounts WHERE user_id = :u FOR UPDATE"), {"u": user_id})
        try:
            yield
        finally:
            blocker.rollback()


def _assert_refused_as_retryable(response: httpx.Response, *phrases: str) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert (body["success"], body["code"], body["retryable"]) == (False, "database_unavailable", True)
    assert response.headers["Retry-After"] == "2"  # seconds before the retry (DATABASE_RETRY_AFTER_SECONDS)
    for phrase in ("nothing was written", *phrases):
        assert phrase in body["error"], body["error"]


@pytest.mark.parametrize(
    ("setting", "cancelled_by"),
    [
        ("CREDITJOBS_API_LOCK_TIMEOUT_SECONDS", "canceling statement due to lock timeout"),
        # the statement timeout counts the wait for a lock too: it cancels the same blocked UPDATE
        ("CREDITJOBS_API_STATEMENT_TIMEOUT_SECONDS", "canceling statement due to statement timeout"),
    ],
)
def test_a_consume_blocked_by_a_locked_account_answers_503_writes_nothing_and_its_retry_applies_once(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine, setting: str, cancelled_by: str
) -> None:
    """The timeout is set low here; at the default (5 s lock timeout) the same request would answer the same after
    waiting 5 s, which adds nothing but time: the next test shows the defaults are what requests run with."""
    add_users(engine, [(42, "pro", "active", False, False)])
    with api_client(monkeypatch, engine, **{setting: SHORT}) as (client, _):
        granted = client.post(
            "/api/v1/users/42/grants", headers={**WRITE, "Idempotency-Key": "g"}, json={"amount": 100}
        )
        assert granted.status_code == 201, granted.text
        before = _ledger(engine)
        with _account_locked(engine, "42"):
            blocked = client.post(CONSUME, headers=ORDER, json={"amount": 30})
            during = _ledger(engine)  # plain reads never wait on a row lock
        retried = client.post(CONSUME, headers=ORDER, json={"amount": 30})
        replayed = client.post(CONSUME, headers=ORDER, json={"amount": 30})
    _assert_refused_as_retryable(blocked, cancelled_by, setting, "the same Idempotency-Key")
    assert during == before
    assert (retried.status_code, retried.json()["data"]["replayed"]) == (200, False), retried.text
    assert (replayed.status_code, replayed.json()["data"]["replayed"]) == (200, True), replayed.text
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '42'") == 70
    assert scalar(engine, "SELECT count(*) FROM credit_entries WHERE kind = 'usage'") == 1


def test_requests_run_with_the_api_timeouts_and_a_local_run_with_a_runs_own(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    seen: list[tuple[str, ...]] = []

    def probe(run_engine: sa.Engine, ctx: RunContext) -> RunStats:
        with run_engine.begin() as conn:
            seen.append(tuple(conn.execute(sa.text(f"SHOW {name}")).scalar_one() for name in TIMEOUTS))
        return RunStats(processed=1)

    monkeypatch.setitem(registry.USECASES, PROBE, UsecaseSpec(PROBE, Period.DAILY, probe, "test probe"))
    for variable in ("CREDITJOBS_STATEMENT_TIMEOUT_SECONDS", "CREDITJOBS_LOCK_TIMEOUT_SECONDS"):
        monkeypatch.delenv(variable, raising=False)
    with api_client(monkeypatch, engine) as (client, state):
        accepted = client.post(f"/api/v1/namespaces/billing/creditjobs/{PROBE}/runs", headers=bearer(RUNS_TOKEN))
        assert accepted.status_code == 202, accepted.text
        assert isinstance(state.triggers, LocalTriggers)
        outcome = state.triggers.pending[0].result(timeout=120)
        with state.engine.begin() as conn:
            request = tuple(conn.execute(sa.text(f"SHOW {name}")).scalar_one() for name in TIMEOUTS)
    assert outcome.status == "succeeded", outcome.error
    assert request == ("5s", "30s")  # CREDITJOBS_API_LOCK_TIMEOUT_SECONDS / _STATEMENT_ defaults
    assert seen == [("30s", "5min")]  # CREDITJOBS_LOCK_TIMEOUT_SECONDS / _STATEMENT_ defaults, as `credit-jobs run`


def _worker_threads() -> int:
    return int(anyio.to_thread.current_default_thread_limiter().total_tokens)


def test_the_request_pool_has_a_connection_for_every_worker_thread(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    """What FastAPI runs sync routes on, read from the running app's event loop; then as many connections held at
    once as there are such threads — none waits for the pool (a short pool would raise its TimeoutError)."""
    with api_client(monkeypatch, engine) as (client, state):
        assert client.portal is not None
        threads = client.portal.call(_worker_threads)
        pool = state.engine.pool
        assert isinstance(pool, QueuePool)
        with ExitStack() as stack:
            for _ in range(threads):
                stack.enter_context(state.engine.connect())
            held = pool.checkedout()
    assert threads == WORKER_THREADS
    assert state.config.request_pool.connections >= threads
    assert held == threads


def test_a_request_that_finds_no_free_connection_answers_503_and_the_next_one_is_served(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    add_users(engine, [(42, "pro", "active", False, False)])
    one = PoolLimits(size=1, max_overflow=0, timeout_seconds=0.2)
    with api_client(monkeypatch, engine, pool=one) as (client, state):
        with state.engine.connect():  # the pool's only connection, taken
            starved = client.get("/api/v1/users/42/balance", headers=bearer(READ_TOKEN))
        served = client.get("/api/v1/users/42/balance", headers=bearer(READ_TOKEN))
    _assert_refused_as_retryable(starved, "no database connection came free")
    assert served.status_code == 200, served.text


def test_the_served_api_answers_a_locked_consume_with_503_and_its_retry_applies_once(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    """`credit-jobs api` builds its request engine with the setting (the in-process tests build it the same way)."""
    add_users(engine, [(42, "pro", "active", False, False)])
    with (
        served_api(database_url, tmp_path / "api.log", CREDITJOBS_API_LOCK_TIMEOUT_SECONDS=SHORT) as base,
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        granted = client.post(
            "/api/v1/users/42/grants", headers={**WRITE, "Idempotency-Key": "g"}, json={"amount": 100}
        )
        assert granted.status_code == 201, granted.text
        with _account_locked(engine, "42"):
            blocked = client.post(CONSUME, headers=ORDER, json={"amount": 30})
        retried = client.post(CONSUME, headers=ORDER, json={"amount": 30})
    _assert_refused_as_retryable(blocked, "lock timeout", "CREDITJOBS_API_LOCK_TIMEOUT_SECONDS")
    assert (retried.status_code, retried.json()["data"]["replayed"]) == (200, False), retried.text
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '42'") == 70


def test_a_consume_after_the_server_ended_its_pooled_connection_is_served_and_applies_once(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    """A failover or an idle-session reaper ends the connection consume keeps open between requests: the next
    consume is served on a fresh one, not refused."""
    add_users(engine, [(42, "pro", "active", False, False)])
    with api_client(monkeypatch, engine) as (client, state):
        granted = client.post(
            "/api/v1/users/42/grants", headers={**WRITE, "Idempotency-Key": "g"}, json={"amount": 100}
        )
        assert granted.status_code == 201, granted.text
        first = client.post(CONSUME, headers=ORDER, json={"amount": 30})
        (pooled,) = state.ledger._idle
        scalar(engine, f"SELECT pg_terminate_backend({pooled.info.backend_pid})")
        second = client.post(CONSUME, headers={**WRITE, "Idempotency-Key": "order-10"}, json={"amount": 30})
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert second.json()["data"]["replayed"] is False
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '42'") == 40


def test_a_consume_with_the_database_down_answers_503_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with api_client(monkeypatch, nowhere) as (client, _):
        refused = client.post(CONSUME, headers=ORDER, json={"amount": 30})
    assert refused.status_code == 503, refused.text
    body = refused.json()
    assert (body["code"], body["retryable"], refused.headers["Retry-After"]) == ("database_unavailable", True, "2")
    assert body["error"].startswith("the database is unavailable: connection failed"), body["error"]
