"""The embedded PostgreSQL used when no DATABASE_URL is set: starts, serves, and leaves nothing behind."""

from __future__ import annotations

import psutil
import sqlalchemy as sa

from credit_jobs.adapters.embedded_database import start_embedded


def test_a_temporary_server_stops_and_removes_its_directory() -> None:
    server = start_embedded()
    parent = server.datadir.parent
    pid = server.pid
    engine = sa.create_engine(server.url())
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    engine.dispose()
    server.stop()
    assert not parent.exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
