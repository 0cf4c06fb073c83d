"""Running the real `credit-jobs` console script as an OS process, as a CronJob container would."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CLI = str(Path(sys.executable).with_name("credit-jobs"))


def libpq_url(sqlalchemy_url: str) -> str:
    """The URL as an operator would put it in a Secret: plain `postgresql://`."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def cli_env(database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITJOB", "DATABASE_URL", "PUSHGATEWAY"))}
    env["LOG_FORMAT"] = "json"
    if database_url is not None:
        env["DATABASE_URL"] = libpq_url(database_url)
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def log_lines(stderr: str) -> list[dict[str, Any]]:
    lines = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def error_lines(stderr: str) -> list[str]:
    """What a person reads: every stderr line that is not a JSON log record."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


@contextlib.contextmanager
def embedded_default(home: Path, **extra: str) -> Iterator[dict[str, str]]:
    """The environment of a user with no DATABASE_URL whose data lives in `home` (the embedded default); the server
    the commands leave running is stopped at the end with `credit-jobs db stop`, as a user would."""
    env = {k: v for k, v in cli_env(None, **extra).items() if k != "DATABASE_URL"}
    env["CREDITJOBS_DATA_DIR"] = str(home)
    try:
        yield env
    finally:
        stopped = run(["db", "stop"], env, timeout=90)
        assert stopped.returncode == 0, stopped.stderr
