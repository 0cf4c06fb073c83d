"""The HTTP API's authentication, scopes, rate limits and audit, in process against a real PostgreSQL.

The auth matrix (missing, malformed base64, wrong user, wrong password, a password with ':', rotated tokens, wrong
scope), 429 + Retry-After for the per-client, failed-auth and global limits, and the audit: one log line and one
`creditjobs_api_requests_total` count per attempt, never a secret in any line.
"""

from __future__ import annotations

import base64
import json

import pytest
import sqlalchemy as sa

from tests.support.api import (
    BASIC_PASSWORD,
    BASIC_USER,
    LEDGER_TOKEN,
    LEDGER_TOKEN_NEXT,
    READ_TOKEN,
    RUNS_TOKEN,
    SECRETS,
    api_client,
    basic,
    bearer,
    metrics_text,
)

RUNS = "/api/v1/runs"


def _b64(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"Authorization": "Basic not*base64!"}, "malformed"),
        ({"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, "malformed"),
        ({"Authorization": "Basic"}, "malformed"),
        ({"Authorization": "Bearer"}, "malformed"),
        ({"Authorization": "Digest abc"}, "unknown_scheme"),
        (basic("someone-else", BASIC_PASSWORD), "bad_credentials"),
        (basic(BASIC_USER, "wrong"), "bad_credentials"),
        (basic(BASIC_USER, BASIC_PASSWORD.split(":")[0]), "bad_credentials"),  # the seed's cut-at-':' password
        (_b64(f"{BASIC_USER}:{BASIC_PASSWORD}x".encode()), "bad_credentials"),
        (bearer(READ_TOKEN[:-1]), "bad_credentials"),
        (bearer(BASIC_PASSWORD), "bad_credentials"),  # a password is not a token
        (basic("token", READ_TOKEN), "bad_credentials"),  # nor a token a password
    ],
)
def test_refused_credentials_get_401_with_a_challenge(
    monkeypatch: pytest.MonkeyPatch,
    engine: sa.Engine,
    capsys: pytest.CaptureFixture[str],
    headers: dict[str, str],
    reason: str,
) -> None:
    with api_client(monkeypatch, engine) as (client, _):
        response = client.get(RUNS, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="credit-jobs"')
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert response.json() == {
        "success": False,
        "error": response.json()["error"],
        "code": "unauthorized",
        "retryable": False,
    }
    err = capsys.readouterr().err
    assert f'"auth_failure": "{reason}"' in err
    assert '"principal": "anonymous"' in err


@pytest.mark.parametrize(
    ("headers", "principal"),
    [
        (basic(BASIC_USER, BASIC_PASSWORD), f"basic:{BASIC_USER}"),  # ':' in the password is kept
        (bearer(READ_TOKEN), "token:reader"),
        (bearer(LEDGER_TOKEN), "token:app"),
        (bearer(LEDGER_TOKEN_NEXT), "token:app-next"),  # rotation: old and new token valid at once
        ({"Authorization": f"bearer   {READ_TOKEN}  "}, "token:reader"),  # scheme case-insensitive, spaces trimmed
    ],
)
def test_accepted_credentials(
    monkeypatch: pytest.MonkeyPatch,
    engine: sa.Engine,
    capsys: pytest.CaptureFixture[str],
    headers: dict[str, str],
    principal: str,
) -> None:
    with api_client(monkeypatch, engine) as (client, _):
        response = client.get(RUNS, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "data": []}
    assert f'"principal": "{principal}"' in capsys.readouterr().err


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("post", "/api/v1/users/1/consume", bearer(READ_TOKEN)),  # read cannot write the ledger
        ("post", "/api/v1/users/1/grants", bearer(RUNS_TOKEN)),  # runs cannot write the ledger
        ("post", "/api/v1/users/1/consume", basic(BASIC_USER, BASIC_PASSWORD)),  # the scheduler's Basic pair neither
        ("post", "/api/v1/namespaces/default/creditjobs/distribute-credits/runs", bearer(LEDGER_TOKEN)),
        ("get", "/api/distribute-credits", bearer(READ_TOKEN)),
        ("get", RUNS, bearer(RUNS_TOKEN)),  # runs does not include read
    ],
)
def test_wrong_scope_is_403_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine, method: str, path: str, headers: dict[str, str]
) -> None:
    with api_client(monkeypatch, engine) as (client, _):
        response = client.request(
            method, path, headers={**headers, "Idempotency-Key": "k-1"}, json={"amount": 5} if "users" in path else None
        )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM credit_requests")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM job_runs")).scalar_one() == 0


def test_per_client_limit_answers_429_with_retry_after(monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> None:
    with api_client(monkeypatch, engine, CREDITJOBS_API_RATE_LIMIT_CLIENT="3/minute") as (client, _):
        statuses = [client.get(RUNS, headers=bearer(READ_TOKEN)).status_code for _ in range(3)]
        limited = client.get(RUNS, headers=bearer(READ_TOKEN))
        other_client = client.get(RUNS, headers=basic(BASIC_USER, BASIC_PASSWORD))  # its own budget
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["code"] == "rate_limited"
    assert limited.json()["retryable"] is True
    assert other_client.status_code == 200


def test_failed_auth_budget_then_429_even_for_the_right_password(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    """Guessing is capped per client address: after the budget, even a correct guess is not checked."""
    with api_client(monkeypatch, engine, CREDITJOBS_API_RATE_LIMIT_AUTH_FAILURES="5/minute") as (client, _):
        bad = [client.get(RUNS, headers=basic(BASIC_USER, f"guess-{i}")).status_code for i in range(5)]
        right = client.get(RUNS, headers=basic(BASIC_USER, BASIC_PASSWORD))
    assert bad == [401] * 5
    assert right.status_code == 429
    assert int(right.headers["Retry-After"]) >= 1


def test_global_limit(monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> None:
    with api_client(monkeypatch, engine, CREDITJOBS_API_RATE_LIMIT_GLOBAL="4/minute") as (client, _):
        statuses = [
            client.get(RUNS, headers=bearer(READ_TOKEN) if i % 2 else basic(BASIC_USER, BASIC_PASSWORD)).status_code
            for i in range(6)
        ]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_bad_credentials_never_spend_the_global_budget_the_good_callers_share(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    """bench_api (a1): a flood of wrong tokens at the global rate got good requests 429. The global limit counts
    what reaches the database — authenticated requests — and a bad-credential flood is held by its own budget."""
    with api_client(monkeypatch, engine, CREDITJOBS_API_RATE_LIMIT_GLOBAL="4/minute") as (client, _):
        bad = [client.get(RUNS, headers=bearer("x" * 40 + str(i))).status_code for i in range(10)]
        good = [client.get(RUNS, headers=bearer(READ_TOKEN)).status_code for _ in range(5)]
    assert set(bad) <= {401, 429}
    assert good == [200, 200, 200, 200, 429]


def test_probes_need_no_credentials_and_are_not_limited(monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> None:
    with api_client(monkeypatch, engine, CREDITJOBS_API_RATE_LIMIT_GLOBAL="1/minute") as (client, _):
        assert [client.get("/healthz").status_code for _ in range(3)] == [200, 200, 200]
        assert client.get("/readyz").json() == {"success": True, "data": {"status": "ready"}}
        assert client.get("/metrics").status_code == 404  # not here: on the metrics port (test_api_process.py)
        assert client.get("/openapi.json").json()["paths"]["/api/v1/users/{user}/consume"]


def test_every_attempt_is_counted_and_logged_without_secrets(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    with api_client(monkeypatch, engine) as (client, state):
        client.get(RUNS, headers=basic(BASIC_USER, BASIC_PASSWORD))
        client.get(RUNS, headers=basic(BASIC_USER, BASIC_PASSWORD + "x"))
        client.get(RUNS, headers=bearer(LEDGER_TOKEN_NEXT[:-2]))
        client.get(RUNS, headers=bearer(RUNS_TOKEN))
        for token in (READ_TOKEN, LEDGER_TOKEN, LEDGER_TOKEN_NEXT):
            client.get(RUNS, headers=bearer(token))
        client.post(
            "/api/v1/users/7/consume", headers={**bearer(LEDGER_TOKEN), "Idempotency-Key": "o-1"}, json={"amount": 1}
        )
        metrics = metrics_text(state)
    assert 'creditjobs_api_requests_total{result="ok",route="/api/v1/runs"} 4.0' in metrics
    assert 'creditjobs_api_requests_total{result="unauthorized",route="/api/v1/runs"} 2.0' in metrics
    assert 'creditjobs_api_requests_total{result="forbidden",route="/api/v1/runs"} 1.0' in metrics
    err = capsys.readouterr().err
    assert err.count('"event": "api.request"') >= 8
    encoded = [base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()]
    for secret in (*SECRETS, *encoded, LEDGER_TOKEN_NEXT[:-2], BASIC_PASSWORD + "x"):
        assert secret not in err


def test_readyz_names_no_database_detail_to_an_unauthenticated_caller(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # a database the API cannot reach: the probe's caller learns that, and only that; the log names the cause
    unreachable = sa.create_engine(engine.url.set(username="billing_rw", port=1, database="ledger_prod"))
    with api_client(monkeypatch, unreachable) as (client, _):
        answer = client.get("/readyz")
    assert answer.status_code == 503
    body = answer.text
    for detail in ("billing_rw", "ledger_prod", "127.0.0.1", ":1", "postgresql", "host="):
        assert detail not in body, (detail, body)
    assert answer.json() == {
        "success": False,
        "error": "not ready: the database is unreachable or its schema is not current (the server log says which)",
        "code": "not_ready",
        "retryable": True,
    }
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    (line,) = [entry for entry in logged if entry["event"] == "api.not_ready"]
    assert "ledger_prod" in line["reason"]
