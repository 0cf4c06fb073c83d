"""A real PgBouncer (the Debian package) in front of the test suite's embedded PostgreSQL, started and stopped by tests.

`start_pgbouncer(server, pool_mode=…)` writes an ini into a temporary directory, runs `pgbouncer` in the foreground
as a child process (as the embedded server's system user when we are root: PgBouncer refuses to run as root, and
only that user can reach the server's socket directory), waits until it accepts a login, and returns a handle whose
`url(database)` routes through it over TCP. `stop()` ends it by its PID and removes the directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlalchemy as sa

from credit_jobs.adapters.embedded_database import EmbeddedPostgres

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PgBouncer:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    pool_mode: str

    def url(self, database: str, user: str = "postgres", password: str | None = None) -> str:
        """A SQLAlchemy URL through the proxy (TCP, 127.0.0.1)."""
        secret = f":{password}" if password is not None else ""
        return f"postgresql+psycopg://{user}{secret}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.workdir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # immediate shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_pgbouncer(
    server: EmbeddedPostgres,
    *,
    pool_mode: str,
    auth_type: str = "trust",
    users: dict[str, str] | None = None,
) -> PgBouncer:
    """PgBouncer on 127.0.0.1:<free port> → the embedded server's Unix socket, any database name passed through."""
    info = server._server.get_postmaster_info()
    system_user: str | None = server._server.system_user if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="credit-jobs-pgbouncer-"))
    port = _free_port()
    admin_password = "" if auth_type == "trust" else "bouncer-admin"
    entries = {"postgres": admin_password, **(users or {})}
    (workdir / "userlist.txt").write_text("".join(f'"{name}" "{secret}"\n' for name, secret in entries.items()))
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={info.socket_dir} port={info.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {workdir}
auth_type = {auth_type}
auth_file = {workdir}/userlist.txt
pool_mode = {pool_mode}
server_round_robin = 1
default_pool_size = 20
max_client_conn = 200
logfile = {workdir}/pgbouncer.log
"""
    )
    command = [PGBOUNCER, str(workdir / "pgbouncer.ini")]
    if system_user is not None:
        account = pwd.getpwnam(system_user)
        for path in [workdir, *workdir.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
        # setpriv execs (no fork), so the child's PID is PgBouncer's own.
        command = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bouncer = PgBouncer(process, port, workdir, pool_mode)
    deadline = time.monotonic() + 15
    while True:  # ready when a login through it reaches PostgreSQL
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=port,
                dbname="postgres",
                user="postgres",
                password=admin_password,
                connect_timeout=2,
            ):
                break
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = bouncer.log()
                bouncer.stop()
                raise RuntimeError(f"pgbouncer did not start (exit {process.returncode}):\n{log}") from None
            time.sleep(0.05)
    return bouncer


def advisory_locks(admin_url: str, database: str) -> list[tuple[int, str]]:
    """(pid, mode) of every advisory lock held in `database` (seen from the server, not through the proxy)."""
    engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [
                (row.pid, row.mode)
                for row in conn.execute(
                    sa.text(
                        "SELECT l.pid, l.mode FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                        "WHERE l.locktype = 'advisory' AND d.datname = :db"
                    ),
                    {"db": database},
                )
            ]
    finally:
        engine.dispose()
