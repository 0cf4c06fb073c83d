"""The API's request-engine settings (docs/api.md, Settings): `CREDITJOBS_API_STATEMENT_TIMEOUT_SECONDS` and
`CREDITJOBS_API_LOCK_TIMEOUT_SECONDS` become the request engine's per-transaction timeouts, a bad value stops the
start with one line naming the variable, and the request pool holds a connection for every worker thread."""

from __future__ import annotations

import pytest

from credit_jobs.adapters.database import PoolLimits, SessionTimeouts
from credit_jobs.domain.errors import ConfigError
from credit_jobs.entrypoints.api.settings import WORKER_THREADS, load_api_config

TOKEN = "app:read,ledger:unit-token-0123456789abcdef0123"
VARIABLES = ("CREDITJOBS_API_STATEMENT_TIMEOUT_SECONDS", "CREDITJOBS_API_LOCK_TIMEOUT_SECONDS")


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITJOBS_API_TOKENS", TOKEN)
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def test_requests_default_to_a_30_s_statement_and_a_5_s_lock_timeout() -> None:
    assert load_api_config().request_timeouts == SessionTimeouts(statement_seconds=30, lock_seconds=5)


def test_the_timeouts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITJOBS_API_STATEMENT_TIMEOUT_SECONDS", " 12.5 ")
    monkeypatch.setenv("CREDITJOBS_API_LOCK_TIMEOUT_SECONDS", "0.25")
    assert load_api_config().request_timeouts == SessionTimeouts(statement_seconds=12.5, lock_seconds=0.25)


@pytest.mark.parametrize("variable", VARIABLES)
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("abc", "'abc' is not a number of seconds"),
        ("1_0", "'1_0' is not a number of seconds"),
        ("0", "'0' is out of range"),  # 0 would mean "no timeout": the hang these settings exist to prevent
        ("0.0001", "'0.0001' is out of range"),  # rounds to 0 ms
        ("-1", "'-1' is out of range"),
        ("nan", "'nan' is out of range"),
        ("100000", "'100000' is out of range"),
    ],
)
def test_a_bad_timeout_stops_the_start_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        load_api_config()
    message = str(refused.value)
    assert message.startswith(f"{variable}: {says}")
    assert "\n" not in message
    assert message.endswith("(see docs/api.md)")


def test_the_request_pool_has_a_connection_for_every_worker_thread() -> None:
    pool = load_api_config().request_pool
    assert pool.connections >= WORKER_THREADS


def test_pool_limits_for_threads_never_keep_more_open_than_there_are_threads() -> None:
    assert PoolLimits.for_threads(40, keep_open=10, timeout_seconds=1) == PoolLimits(10, 30, 1)
    assert PoolLimits.for_threads(4, keep_open=10, timeout_seconds=1) == PoolLimits(4, 0, 1)


def test_one_worker_enforces_every_limit_as_set() -> None:
    config = load_api_config()
    assert (config.rate_global.amount, config.rate_auth_failures.amount, config.rate_client.amount) == (500, 20, 50)


def test_workers_share_the_pods_limits_but_each_keeps_the_per_credential_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CREDITJOBS_API_MODE", "cluster")
    monkeypatch.setenv("CREDITJOBS_API_WORKERS", "3")
    monkeypatch.setenv("CREDITJOBS_API_RATE_LIMIT_GLOBAL", "500/second")
    monkeypatch.setenv("CREDITJOBS_API_RATE_LIMIT_AUTH_FAILURES", "20/minute")
    config = load_api_config()
    assert (config.rate_global.amount, config.rate_global.GRANULARITY.name) == (167, "second")  # 500/3, rounded up
    assert (config.rate_auth_failures.amount, config.rate_auth_failures.GRANULARITY.name) == (7, "minute")
    assert config.rate_client.amount == 50


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"CREDITJOBS_API_WORKERS": "2"}, "local mode runs jobs inside the API process"),
        ({"CREDITJOBS_API_WORKERS": "33", "CREDITJOBS_API_MODE": "cluster"}, "'33' is not a number of processes"),
        ({"CREDITJOBS_API_WORKERS": "-1", "CREDITJOBS_API_MODE": "cluster"}, "'-1' is not a number of processes"),
    ],
)
def test_a_worker_count_it_cannot_serve_is_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=says):
        load_api_config()
