"""Stop the CLI's embedded PostgreSQL once nobody has used it for CREDITJOBS_EMBEDDED_IDLE_SECONDS.

Every `credit-jobs` command on the embedded default holds a shared `flock` on `<data home>/postgres.in-use` for its
whole life and touches the file (`hold_in_use`). The watcher (`python -m credit_jobs.adapters.embedded_idle HOME`,
started detached by `ensure_watcher`; one per data home, by its own lock) polls at most every 10 s: the server
counts as used while a command holds the lock, since the file was last touched, and while any client session is
open on it (`psql` from `credit-jobs db shell`, an app given `credit-jobs db url`). Idle for the whole time, it takes
the lock exclusively and stops the server — so a command starting at that moment waits for the stop and starts the
server again, and never sees it vanish mid-command.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from credit_jobs.adapters.embedded_database import running_server_url, stop_persistent

IN_USE = "postgres.in-use"
WATCH_LOCK = "postgres.idle-watch"
IDLE_SECONDS = "postgres.idle-seconds"  # the latest command's CREDITJOBS_EMBEDDED_IDLE_SECONDS: the one that applies
MAX_POLL_SECONDS = 10.0


def hold_in_use(home: Path) -> int:
    """Mark the server of `home` as used by this process until it exits (the lock goes with the process); waits
    while a stop is under way. Returns the lock's file descriptor (kept open on purpose)."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / IN_USE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.utime(fd)
    return fd


def ensure_watcher(home: Path, idle_seconds: float) -> None:
    """Start the idle watcher of `home` unless one runs (its lock is held); either way `idle_seconds` applies from
    now on."""
    (home / IDLE_SECONDS).write_text(f"{idle_seconds:g}\n")
    fd = os.open(home / WATCH_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # a watcher holds it
    finally:
        os.close(fd)  # released: the watcher takes it itself (a second one started meanwhile just exits)
    subprocess.Popen(
        [sys.executable, "-m", "credit_jobs.adapters.embedded_idle", str(home)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # no terminal's signals, outlives the command
        close_fds=True,
    )


def stop_now(home: Path) -> bool:
    """`credit-jobs db stop`: stop the server of `home` and its watcher now; False when the server was not running."""
    stopped = stop_persistent(home / "postgres")
    try:
        pid = int((home / WATCH_LOCK).read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid and _is_watcher(pid):
        os.kill(pid, signal.SIGTERM)
    return stopped


def _is_watcher(pid: int) -> bool:
    try:
        return b"embedded_idle" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _client_sessions(url: str) -> int:
    """Client sessions open on the server, other than this one's (0 when it cannot be asked)."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5, application_name="credit-jobs idle watch") as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def _idle_seconds(home: Path) -> float:
    try:
        return float((home / IDLE_SECONDS).read_text())
    except (OSError, ValueError):
        return 1800.0  # the documented default


def watch(home: Path) -> None:
    """Poll until the server of `home` stops, or stop it once unused for the idle time."""
    datadir, in_use = home / "postgres", home / IN_USE
    quiet_since = time.time()
    while True:
        idle_seconds = _idle_seconds(home)
        time.sleep(min(MAX_POLL_SECONDS, max(idle_seconds / 10, 0.2)))
        url = running_server_url(datadir)
        if url is None:
            return  # stopped by `credit-jobs db stop` (or gone)
        fd = os.open(in_use, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                quiet_since = time.time()  # a command is running
                continue
            if _client_sessions(url):
                quiet_since = time.time()
                continue
            quiet_since = max(quiet_since, os.stat(fd).st_mtime)  # a command that came and went between polls
            if time.time() - quiet_since >= idle_seconds:
                stop_persistent(datadir)  # under the exclusive lock: no command starts meanwhile
                return
        finally:
            os.close(fd)


def main(argv: list[str]) -> int:
    home = Path(argv[0])
    fd = os.open(home / WATCH_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another watcher of this home
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    watch(home)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
