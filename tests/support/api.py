"""Helpers for the HTTP API tests: credentials, an in-process app on a real database, Basic/Bearer headers, and
`credit-jobs api` as a real process on a free loopback port (`free_port`, `wait_until_serving`, `served_api`)."""

from __future__ import annotations

import base64
import dataclasses
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from credit_jobs.adapters import database
from credit_jobs.adapters.database import PoolLimits
from credit_jobs.entrypoints.api.app import ApiState, create_app
from credit_jobs.entrypoints.api.settings import load_api_config
from credit_jobs.entrypoints.api.triggers import LocalTriggers
from credit_jobs.entrypoints.cli.support import run_timeouts
from credit_jobs.entrypoints.settings import load_settings
from credit_jobs.observability.logging import configure_logging
from tests.support import cli_process
from tests.support.cli_process import cli_env

BASIC_USER = "scheduler"
BASIC_PASSWORD = "pa:ss:word-with-colons"  # the seed's template cut this at the first ':'
READ_TOKEN = "read-token-0123456789abcdef0123"
LEDGER_TOKEN = "ledger-token-0123456789abcdef01"
LEDGER_TOKEN_NEXT = "ledger-token-next-0123456789abcdef"  # a rotation: both valid at once
RUNS_TOKEN = "runs-token-0123456789abcdef0123"
TOKENS = "\n".join(
    [
        "# name:scopes:token",
        f"reader:read:{READ_TOKEN}",
        f"app:read,ledger:{LEDGER_TOKEN}",
        f"app-next:read,ledger:{LEDGER_TOKEN_NEXT}",
        "",
        f"cron:runs:{RUNS_TOKEN}",
    ]
)
SECRETS = (BASIC_PASSWORD, READ_TOKEN, LEDGER_TOKEN, LEDGER_TOKEN_NEXT, RUNS_TOKEN)


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_env(**extra: str) -> dict[str, str]:
    env = {
        "CRON_JOBS_USERNAME": BASIC_USER,
        "CRON_JOBS_PASSWORD": BASIC_PASSWORD,
        "CREDITJOBS_API_TOKENS": TOKENS,
        "CREDITJOBS_API_METRICS_PORT": str(free_port()),  # each process its own: tests run API processes side by side
    }
    env.update(extra)
    return env


@contextmanager
def api_client(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine, *, pool: PoolLimits | None = None, **env: str
) -> Iterator[tuple[TestClient, ApiState]]:
    """The real app (real auth, limits, usecases, local-mode triggers) on `engine`'s database, called in process,
    with the engines `credit-jobs api` builds: the request engine (the API's timeouts and pool, from `env`; `pool`
    replaces the pool) and an engine per local run (a run's timeouts). `engine` stays the test's (set-up, checks)."""
    for name, value in api_env(**env).items():
        monkeypatch.setenv(name, value)
    configure_logging("json", "info")  # what `credit-jobs api` does in a pod: JSON lines on stderr
    config, settings = load_api_config(), load_settings()
    if pool is not None:
        config = dataclasses.replace(config, request_pool=pool)
    url = engine.url.render_as_string(hide_password=False)
    requests = database.create_engine(url, timeouts=config.request_timeouts, pool=config.request_pool)
    triggers = LocalTriggers(lambda: database.create_engine(url, timeouts=run_timeouts(settings)), settings)
    state = ApiState(config=config, engine=requests, triggers=triggers)
    try:
        with TestClient(create_app(state)) as client:
            yield client, state
    finally:
        triggers.close()
        requests.dispose()


def metrics_text(state: ApiState) -> str:
    """What the API's metrics port serves (`credit-jobs api` serves this registry there, not on the API's port)."""
    return generate_latest(state.metrics.registry).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(base: str, process: subprocess.Popen[str], deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"credit-jobs api exited {process.returncode}: {(stderr or '')[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("credit-jobs api did not serve /healthz within the deadline")


@contextmanager
def served_api(database_url: str, log: Path, **env: str) -> Iterator[str]:
    """A real `credit-jobs api` process on a free loopback port; yields its base URL (see `served_api_process`)."""
    with served_api_process(database_url, log, **env) as (base, _):
        yield base


@contextmanager
def served_api_process(database_url: str, log: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A real `credit-jobs api` process on a free loopback port, serving /healthz (its database may be down);
    yields (base URL, process). Its JSON log lines go to the file `log` (a pipe nobody reads would fill up and stall
    a busy server); it is killed on the way out."""
    port = free_port()
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [cli_process.CLI, "api", "--port", str(port)],
            env=cli_env(database_url, **api_env(**env)),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_serving(base, process)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-2000:]}") from None
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
