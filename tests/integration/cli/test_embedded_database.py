"""The embedded PostgreSQL used when no DATABASE_URL is set: starts, serves, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import psutil
import sqlalchemy as sa

from credit_jobs.adapters import embedded_database
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


def test_a_server_still_stopping_is_waited_for_before_the_next_command_uses_its_directory(tmp_path: Path) -> None:
    """The previous command's server, still shutting down on a loaded machine (status `stopping` in
    postmaster.pid): the next command waits for it to go instead of taking it for a running server."""
    stopping = subprocess.Popen(["sleep", "0.5"])  # stands in for the postmaster on its way out
    threading.Thread(target=stopping.wait, daemon=True).start()  # reaped the moment it ends (no zombie)
    (tmp_path / "postmaster.pid").write_text(f"{stopping.pid}\n{tmp_path}\n0\n5432\n/tmp\n\n0\nstopping\n")
    try:
        embedded_database._wait_until_settled(tmp_path)
        assert stopping.poll() is not None  # returned only once that process had ended
    finally:
        stopping.kill()
        stopping.wait()
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n0\n5432\n/tmp\n\n0\nready   \n")
    embedded_database._wait_until_settled(tmp_path)  # a ready server: no wait (the test would hang otherwise)
