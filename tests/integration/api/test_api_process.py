"""`credit-jobs api` as a real process (uvicorn on a free loopback port) on a real PostgreSQL, as the chart runs it.

It refuses to start without credentials or with a bad token line (exit 2, one line, nothing written); served, it
answers probes, refuses bad credentials, writes the ledger idempotently, records a local run with its requester,
and stops cleanly on SIGTERM (exit 0). No secret appears in its output.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.support import cli_process
from tests.support.api import (
    BASIC_PASSWORD,
    BASIC_USER,
    LEDGER_TOKEN,
    RUNS_TOKEN,
    SECRETS,
    api_env,
    basic,
    bearer,
    free_port,
    served_api,
    wait_until_serving,
)
from tests.support.cli_process import cli_env
from tests.support.ledger import add_policy, add_users, scalar


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[str, subprocess.Popen[str], str]]:
    """The API's base URL, its process, and the base URL of its metrics port."""
    port, metrics_port = free_port(), free_port()
    env = cli_env(database_url, **api_env(CREDITJOBS_API_METRICS_PORT=str(metrics_port)))
    process = cli_process.start(["api", "--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, process)
        yield base, process, f"http://127.0.0.1:{metrics_port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "no API credentials configured"),
        ({"CRON_JOBS_USERNAME": BASIC_USER}, "CRON_JOBS_USERNAME and CRON_JOBS_PASSWORD must be set together"),
        ({"CREDITJOBS_API_TOKENS": "app:ledger:short-secret"}, "CREDITJOBS_API_TOKENS line 1 (app)"),
        ({"CREDITJOBS_API_TOKENS": f"app:admin:{LEDGER_TOKEN}"}, "scopes must be a comma-separated subset"),
        ({"CREDITJOBS_API_TOKENS_FILE": "/nonexistent/tokens"}, "CREDITJOBS_API_TOKENS_FILE: cannot read"),
        ({**api_env(), "CREDITJOBS_API_RATE_LIMIT_CLIENT": "lots"}, "CREDITJOBS_API_RATE_LIMIT_CLIENT"),
    ],
)
def test_refuses_to_start_with_one_line_and_writes_nothing(database_url: str, env: dict[str, str], says: str) -> None:
    done = cli_process.run(["api", "--port", str(free_port())], cli_env(database_url, **env), timeout=60)
    assert done.returncode == 2, done.stderr
    lines = cli_process.error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("credit-jobs: error: ")
    assert says in lines[0]
    assert "short-secret" not in done.stderr
    assert LEDGER_TOKEN not in done.stderr
    engine = sa.create_engine(database_url)
    try:
        assert scalar(engine, "SELECT count(*) FROM job_runs") == 0
        assert scalar(engine, "SELECT count(*) FROM credit_requests") == 0
    finally:
        engine.dispose()


def test_serves_the_api_and_stops_on_sigterm(served: tuple[str, subprocess.Popen[str], str], database_url: str) -> None:
    base, process, metrics_base = served
    engine = sa.create_engine(database_url)
    try:
        add_policy(engine, "pro", "free_tier", 100, None)
        add_users(engine, [(5, "pro", "active", False, False)])
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/readyz").status_code == 200
            refused = client.get("/api/v1/runs", headers=basic(BASIC_USER, "nope"))
            assert refused.status_code == 401
            assert "WWW-Authenticate" in refused.headers
            ok = client.post("/api/distribute-credits", headers=basic(BASIC_USER, BASIC_PASSWORD))
            assert ok.status_code == 200, ok.text  # the seed's route waits for its run, as the template's did
            assert ok.json()["data"]["status"] == "succeeded"
            assert scalar(engine, "SELECT count(*) FROM job_runs WHERE status = 'succeeded'") == 1
            for _ in range(2):
                consumed = client.post(
                    "/api/v1/users/5/consume",
                    headers={**bearer(LEDGER_TOKEN), "Idempotency-Key": "order-77"},
                    json={"amount": 25},
                )
                assert consumed.status_code == 200, consumed.text
            assert consumed.json()["data"]["replayed"] is True
            # metrics on their own port (what Prometheus scrapes), not on the API's
            assert client.get("/metrics").status_code == 404
            metrics = httpx.get(metrics_base + "/metrics", timeout=10).text
        assert 'creditjobs_api_requests_total{result="unauthorized",route="/api/v1/runs"} 1.0' in metrics
        assert scalar(engine, "SELECT requested_by FROM job_runs") == f"basic:{BASIC_USER}"
        assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '5'") == 75
    finally:
        engine.dispose()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]
    events = [line.get("event") for line in cli_process.log_lines(stderr)]
    assert "api.starting" in events
    assert events.count("api.request") == 5  # 401, the seed's route, two consumes, the 404 (probes log at debug)
    for secret in (*SECRETS, RUNS_TOKEN, "nope"):
        assert secret not in stderr


def test_a_run_now_job_records_its_requester_from_the_environment(database_url: str) -> None:
    """What the operator's run-now Job does with CREDITJOB_REQUESTED_BY: the audit row keeps it."""
    engine = sa.create_engine(database_url)
    try:
        done = cli_process.run(
            ["run", "expire-credits"], cli_env(database_url, CREDITJOB_REQUESTED_BY="token:scheduler"), timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert scalar(engine, "SELECT requested_by FROM job_runs") == "token:scheduler"
        bad = cli_process.run(["run", "expire-credits"], cli_env(database_url, CREDITJOB_REQUESTED_BY="a\tb"))
        assert bad.returncode == 2, bad.stderr
        assert "CREDITJOB_REQUESTED_BY" in cli_process.error_lines(bad.stderr)[0]
        assert scalar(engine, "SELECT count(*) FROM job_runs") == 1  # the refused run wrote nothing
    finally:
        engine.dispose()


def test_a_guessable_basic_password_is_warned_about_at_start_never_shown(database_url: str, tmp_path: Path) -> None:
    """The Seen: the Basic password `pass` was accepted without a word. It still is (the seed's password moves over
    as it is), with a warning line that says how to make one, and never the password itself."""
    for password, warned in (("pass", True), (BASIC_PASSWORD, False)):
        log = tmp_path / f"api-{warned}.log"
        with served_api(database_url, log, CRON_JOBS_PASSWORD=password) as base:
            assert httpx.get(base + "/api/v1/runs", auth=(BASIC_USER, password), timeout=30).status_code == 200
        lines = cli_process.log_lines(log.read_text())
        found = [line for line in lines if line["event"] == "api.weak_password"]
        assert len(found) == int(warned), lines
        if warned:
            assert found[0]["level"] == "warning"
            assert "CRON_JOBS_PASSWORD is 4 characters long" in found[0]["warning"]
            assert "openssl rand" in found[0]["warning"]
        assert f'"{password}"' not in log.read_text()
        assert f" {password} " not in log.read_text()
