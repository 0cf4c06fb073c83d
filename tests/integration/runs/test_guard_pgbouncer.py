"""The single-run guard through a real PgBouncer (Debian package), in transaction and session pool mode.

Seen with PgBouncer 1.18 `pool_mode = transaction`: three concurrent runs of one period all got past the
session-lock guard, the unlocks went to other backends and left the locks held, every later run of the period was
"skipped (running elsewhere)" with exit 0 while nothing ran, and runs of more than a few chunks failed with
`prepared statement "_pg3_0" already exists`. Every test here runs real `credit-jobs` processes (or the real guard)
through a PgBouncer the test starts itself, with `server_round_robin = 1` so consecutive transactions land on
different server connections.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.adapters.embedded_database import EmbeddedPostgres
from credit_jobs.adapters.run_guard import RunGuard, guard_key
from credit_jobs.usecases.check_invariants import check_invariants
from tests.support import cli_process
from tests.support.ledger import add_policy, add_users, rows, scalar
from tests.support.pgbouncer import PgBouncer, advisory_locks, start_pgbouncer

USERS = 1000
JOB = "monthly"
PERIOD = "2026-11"


@pytest.fixture(params=["transaction", "session"])
def bouncer(request: pytest.FixtureRequest, pg_server: EmbeddedPostgres, database_url: str) -> Iterator[PgBouncer]:
    proxy = start_pgbouncer(pg_server, pool_mode=request.param)
    try:
        yield proxy
    finally:
        proxy.stop()


def _db_name(database_url: str) -> str:
    return sa.engine.make_url(database_url).database or ""


def _seed(engine: sa.Engine) -> None:
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(u, "free", "active", False, False) for u in range(1, USERS + 1)])
    with engine.begin() as conn:  # an account row the first chunk must update: a test can hold its row lock
        conn.execute(sa.text("INSERT INTO credit_accounts (user_id, balance) VALUES ('1', 0)"))


@contextlib.contextmanager
def _row_locked(engine: sa.Engine, user_id: str) -> Iterator[None]:
    """Another session holds user_id's account row: a run's first chunk waits on it (a slow, live holder)."""
    with engine.connect() as blocker:
        blocker.execute(sa.text("SELECT 1 FROM credit_accounts WHERE user_id = :u FOR UPDATE"), {"u": user_id})
        yield
        blocker.rollback()


def _env(bouncer: PgBouncer, database_url: str, **extra: str) -> dict[str, str]:
    return cli_process.cli_env(
        bouncer.url(_db_name(database_url)),
        CREDITJOB_NAME=JOB,
        CREDITJOB_PERIOD_KEY=PERIOD,
        **extra,
    )


def _wait_for(what: str, condition: Callable[[], bool], *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _statuses(engine: sa.Engine) -> list[str]:
    return sorted(r.status for r in rows(engine, "SELECT status FROM job_runs"))


def test_three_concurrent_runs_through_pgbouncer_one_works_and_the_others_skip_only_while_it_lives(
    bouncer: PgBouncer, engine: sa.Engine, database_url: str, pg_server: EmbeddedPostgres
) -> None:
    _seed(engine)
    env = _env(bouncer, database_url)
    with _row_locked(engine, "1"):  # whoever wins the guard stays live (blocked on its first chunk) meanwhile
        procs = [cli_process.start(["run", "distribute-credits", "--batch-size", "50"], env) for _ in range(3)]
        _wait_for("two of three runs to step aside", lambda: sum(p.poll() is not None for p in procs) >= 2)
        finished = [p for p in procs if p.poll() is not None]
        (holder,) = [p for p in procs if p.poll() is None]
        for proc in finished:
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            assert "skipped (running elsewhere" in out, out
        assert _statuses(engine) == ["running", "skipped", "skipped"]
        # the live holder's: its run guard, and its period of the grant family, held shared (a rollback would be
        # refused; another distribution of the period may share it)
        held = advisory_locks(pg_server.url("postgres"), _db_name(database_url))
        assert sorted(mode for _, mode in held) == ["ExclusiveLock", "ShareLock"]
        assert len({pid for pid, _ in held}) == 1
        # `runs list` sees the holder's heartbeat move (committed on a connection of its own, through the proxy).
        beat = "SELECT heartbeat_at FROM job_runs WHERE status = 'running'"
        first_beat = scalar(engine, beat)
        _wait_for("the holder's heartbeat_at to advance", lambda: scalar(engine, beat) > first_beat)
    out, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    assert " succeeded" in out

    assert _statuses(engine) == ["skipped", "skipped", "succeeded"]
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == USERS
    assert scalar(engine, "SELECT count(DISTINCT user_id) FROM credit_grants") == USERS
    # Nothing is left holding the guard, so the next run of the period really runs (and finds nothing missing).
    assert advisory_locks(pg_server.url("postgres"), _db_name(database_url)) == []
    rerun = cli_process.run(["run", "distribute-credits"], env)
    assert rerun.returncode == 0, rerun.stderr
    assert " succeeded" in rerun.stdout, rerun.stdout
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == USERS
    assert check_invariants(engine).ok


def test_a_sigkilled_holder_behind_pgbouncer_is_taken_over_at_once(
    bouncer: PgBouncer, engine: sa.Engine, database_url: str, pg_server: EmbeddedPostgres
) -> None:
    _seed(engine)
    env = _env(bouncer, database_url)
    admin_url, db = pg_server.url("postgres"), _db_name(database_url)
    with _row_locked(engine, "1"):
        victim = cli_process.start(["run", "distribute-credits", "--batch-size", "50"], env)
        _wait_for("the victim to hold the guard", lambda: _statuses(engine) == ["running"])
        assert len({pid for pid, _ in advisory_locks(admin_url, db)}) == 1  # one holder: its guard and period lock
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    # The proxy closes the server connection of a client that vanished mid-transaction: the lock goes with it.
    _wait_for("the dead holder's guard to be released", lambda: advisory_locks(admin_url, db) == [], timeout=30)

    nxt = cli_process.run(["run", "distribute-credits", "--batch-size", "50"], env)
    assert nxt.returncode == 0, nxt.stderr
    assert " succeeded" in nxt.stdout, nxt.stdout
    dead = rows(engine, "SELECT status, error FROM job_runs WHERE status <> 'succeeded'")
    assert [r.status for r in dead] == ["failed"]
    assert "taken over by run" in dead[0].error
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == USERS
    assert advisory_locks(admin_url, db) == []
    assert check_invariants(engine).ok


def test_a_run_of_many_chunks_succeeds_through_pgbouncer_and_leaves_no_lock(
    bouncer: PgBouncer, engine: sa.Engine, database_url: str, pg_server: EmbeddedPostgres
) -> None:
    """50 chunks of the same statements: psycopg's automatic prepared statements would collide across backends."""
    _seed(engine)
    env = _env(bouncer, database_url)
    first = cli_process.run(["run", "distribute-credits", "--batch-size", "20"], env)
    assert first.returncode == 0, first.stderr
    assert "prepared statement" not in first.stderr
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == USERS
    assert advisory_locks(pg_server.url("postgres"), _db_name(database_url)) == []
    again = cli_process.run(["run", "distribute-credits", "--batch-size", "20"], env)
    assert again.returncode == 0, again.stderr
    assert " succeeded" in again.stdout, again.stdout  # not "skipped (running elsewhere)"
    assert _statuses(engine) == ["succeeded", "succeeded"]


def test_timeouts_are_set_per_transaction_through_pgbouncer_and_never_leak(
    bouncer: PgBouncer, database_url: str
) -> None:
    url = bouncer.url(_db_name(database_url))
    timed = database.create_engine(url, timeouts=database.SessionTimeouts(statement_seconds=42, lock_seconds=3))
    plain = database.create_engine(url)
    try:
        for _ in range(6):  # round robin: several server connections
            with timed.begin() as conn:
                assert conn.execute(sa.text("SHOW lock_timeout")).scalar_one() == "3s"
                assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "42s"
            with timed.connect() as conn:  # autobegin too
                assert conn.execute(sa.text("SHOW lock_timeout")).scalar_one() == "3s"
        for _ in range(6):  # SET LOCAL: other clients of the same server connections see the server's default
            with plain.connect() as conn:
                assert conn.execute(sa.text("SHOW lock_timeout")).scalar_one() == "0"
    finally:
        timed.dispose()
        plain.dispose()


def _vacuum_dead_not_removable(database_url: str) -> tuple[int, int]:
    """(removed, dead but not yet removable) tuples of a fresh table whose 1000 rows were all deleted, per VACUUM."""
    notices: list[str] = []
    with psycopg.connect(**_libpq_params(database_url), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("DROP TABLE IF EXISTS vacuum_probe")
        conn.execute("CREATE TABLE vacuum_probe AS SELECT g AS i FROM generate_series(1, 1000) g")
        conn.execute("DELETE FROM vacuum_probe")
        conn.execute("VACUUM (VERBOSE) vacuum_probe")
    report = " ".join(notices)
    found = re.search(r"tuples: (\d+) removed, \d+ remain, (\d+) are dead but not yet removable", report)
    assert found, report
    return int(found.group(1)), int(found.group(2))


def _libpq_params(database_url: str) -> dict[str, Any]:
    url = sa.engine.make_url(database_url)
    return {"host": url.query["host"], "dbname": url.database, "user": url.username}


def test_the_guard_transaction_holds_back_no_vacuum_and_holds_no_relation_lock(
    bouncer: PgBouncer, database_url: str, pg_server: EmbeddedPostgres
) -> None:
    """What an idle-in-transaction guard costs the server (measured; docs/env-and-ops.md quotes it)."""
    engine = database.create_engine(bouncer.url(_db_name(database_url)), timeouts=database.SessionTimeouts())
    admin = sa.create_engine(pg_server.url("postgres"), poolclass=sa.pool.NullPool)
    guard = RunGuard(engine, guard_key(JOB, PERIOD, 0), heartbeat_seconds=0.3)
    try:
        assert guard.try_acquire()
        guard.start_heartbeat(uuid.uuid4())
        _wait_for("two heartbeats", lambda: guard.beats >= 2)

        def activity() -> Any:
            with admin.connect() as conn:
                return conn.execute(
                    sa.text("SELECT state, backend_xid, backend_xmin FROM pg_stat_activity WHERE pid = :p"),
                    {"p": guard.backend_pid},
                ).one()

        _wait_for("the guard to be idle between heartbeats", lambda: activity().state == "idle in transaction")
        # A transaction that never wrote (no xid) and keeps no snapshot between statements (READ COMMITTED).
        idle = activity()
        assert (idle.backend_xid, idle.backend_xmin) == (None, None)
        with admin.connect() as conn:
            locks = conn.execute(
                sa.text("SELECT locktype, mode FROM pg_locks WHERE pid = :p"), {"p": guard.backend_pid}
            ).all()
        assert {(r.locktype, r.mode) for r in locks} == {("advisory", "ExclusiveLock"), ("virtualxid", "ExclusiveLock")}

        # VACUUM's own word, with a control: a REPEATABLE READ snapshot does hold dead rows back; the guard does not.
        holder = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
        with holder.connect().execution_options(isolation_level="REPEATABLE READ") as snapshot:
            snapshot.execute(sa.text("SELECT 1"))
            assert _vacuum_dead_not_removable(database_url) == (0, 1000)
            snapshot.rollback()
        holder.dispose()
        assert _vacuum_dead_not_removable(database_url) == (1000, 0)
        assert guard.lost is False
        assert len(advisory_locks(pg_server.url("postgres"), _db_name(database_url))) == 1  # still held throughout
    finally:
        guard.release()
        engine.dispose()
        admin.dispose()
    assert advisory_locks(pg_server.url("postgres"), _db_name(database_url)) == []


def test_pgbouncer_refuses_a_wrong_password_and_an_unknown_database_as_configuration_errors(
    pg_server: EmbeddedPostgres, database_url: str
) -> None:
    """Through a proxy with password auth (auth_type = scram-sha-256, a userlist): exit 2, one line, no secret."""
    proxy = start_pgbouncer(pg_server, pool_mode="transaction", auth_type="scram-sha-256", users={"billing": "s3cret"})
    try:
        db = _db_name(database_url)
        cases = [
            (proxy.url(db, "billing", "wrong-s3cret"), "SASL authentication failed"),
            (proxy.url(db, "nobody_here", "s3cret"), "authentication failed"),
            (proxy.url("no_such_db", "postgres", "bouncer-admin"), 'database "no_such_db" does not exist'),
        ]
        for url, message in cases:
            done = cli_process.run(["run", "distribute-credits"], cli_process.cli_env(url))
            assert done.returncode == 2, done.stderr
            errors = cli_process.error_lines(done.stderr)
            assert len(errors) == 1, done.stderr
            assert message in errors[0]
            assert "s3cret" not in done.stderr
    finally:
        proxy.stop()
    with sa.create_engine(database_url, poolclass=sa.pool.NullPool).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM job_runs")).scalar_one() == 0


def test_pgbouncer_itself_refuses_startup_options_so_timeouts_never_travel_that_way(bouncer: PgBouncer) -> None:
    """Why the timeouts are `SET LOCAL` per transaction: `?options=-c lock_timeout=…` is refused outright."""
    done = subprocess.run(
        [cli_process.CLI, "runs", "list"],
        env=cli_process.cli_env(bouncer.url("postgres") + "?options=-c%20lock_timeout%3D1000"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "unsupported startup parameter: options" in done.stderr
