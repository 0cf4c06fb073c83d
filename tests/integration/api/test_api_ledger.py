"""The HTTP API's ledger and run routes in process against a real PostgreSQL: balance, consume and grants with
`Idempotency-Key` (replay → the first result, other parameters → 409, a concurrent retry applies once), and a
local-mode trigger that records a run (with its requester) through the run lifecycle, off the request thread.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from tests.support.api import (
    BASIC_PASSWORD,
    BASIC_USER,
    LEDGER_TOKEN,
    LEDGER_TOKEN_NEXT,
    READ_TOKEN,
    RUNS_TOKEN,
    api_client,
    basic,
    bearer,
)
from tests.support.ledger import add_policy, add_users, scalar

WRITE = bearer(LEDGER_TOKEN)


def _ledger_state(engine: sa.Engine) -> tuple[int, int, int]:
    return (
        scalar(engine, "SELECT count(*) FROM credit_grants"),
        scalar(engine, "SELECT count(*) FROM credit_requests"),
        scalar(engine, "SELECT coalesce(sum(balance), 0) FROM credit_accounts"),
    )


def test_grant_consume_balance_with_replays_and_conflicts(monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> None:
    add_users(engine, [(42, "pro", "active", False, False)])
    with api_client(monkeypatch, engine) as (client, _):
        granted = client.post(
            "/api/v1/users/42/grants",
            headers={**WRITE, "Idempotency-Key": "gift-1"},
            json={"amount": 100, "type": "gift", "expiresInDays": 30},
        )
        assert granted.status_code == 201, granted.text
        grant_id = granted.json()["data"]["grantId"]
        replay = client.post(
            "/api/v1/users/42/grants",
            headers={**bearer(LEDGER_TOKEN_NEXT), "Idempotency-Key": "gift-1"},  # a rotated token replays too
            json={"amount": 100, "type": "gift", "expiresInDays": 30},
        )
        assert replay.status_code == 200
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["data"] == {"grantId": grant_id, "userId": "42", "replayed": True}
        reused = client.post(
            "/api/v1/users/42/grants", headers={**WRITE, "Idempotency-Key": "gift-1"}, json={"amount": 99}
        )
        assert reused.status_code == 409
        assert reused.json()["code"] == "idempotency_key_reused"

        first = client.post(
            "/api/v1/users/42/consume", headers={**WRITE, "Idempotency-Key": "order-1"}, json={"amount": 30}
        )
        assert first.status_code == 200, first.text
        assert first.json()["data"]["takes"] == [{"grantId": grant_id, "credits": 30}]
        again = client.post(
            "/api/v1/users/42/consume", headers={**WRITE, "Idempotency-Key": "order-1"}, json={"amount": 30}
        )
        assert again.json()["data"]["replayed"] is True
        assert again.json()["data"]["takes"] == first.json()["data"]["takes"]
        other = client.post(
            "/api/v1/users/42/consume", headers={**WRITE, "Idempotency-Key": "order-1"}, json={"amount": 31}
        )
        assert other.status_code == 409
        assert other.json()["code"] == "idempotency_key_reused"
        too_many = client.post(
            "/api/v1/users/42/consume", headers={**WRITE, "Idempotency-Key": "order-2"}, json={"amount": 71}
        )
        assert too_many.status_code == 409
        assert too_many.json()["code"] == "insufficient_credits"

        balance = client.get("/api/v1/users/42/balance", headers=bearer(READ_TOKEN)).json()["data"]
    assert balance["spendable"] == 70
    assert balance["grants"][0]["remaining"] == 70
    assert balance["grants"][0]["expiresAt"] is not None
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '42'") == 70


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "code"),
    [
        ("/api/v1/users/42/consume", {}, {"amount": 5}, 400, "idempotency_key_required"),
        ("/api/v1/users/42/consume", {"Idempotency-Key": " k"}, {"amount": 5}, 422, "invalid_request"),
        ("/api/v1/users/42/consume", {"Idempotency-Key": "k"}, {"amount": 0}, 422, "invalid_request"),
        ("/api/v1/users/42/consume", {"Idempotency-Key": "k"}, {"amount": "5"}, 422, "invalid_request"),
        ("/api/v1/users/42/consume", {"Idempotency-Key": "k"}, {"amount": True}, 422, "invalid_request"),
        ("/api/v1/users/42/consume", {"Idempotency-Key": "k"}, {"amount": 5, "x": 1}, 422, "invalid_request"),
        # user ids are text kept as given: a surrounding blank or an overlong id is refused, `abc` is an id
        ("/api/v1/users/%20abc/consume", {"Idempotency-Key": "k"}, {"amount": 5}, 422, "invalid_request"),
        (f"/api/v1/users/{'x' * 256}/consume", {"Idempotency-Key": "k"}, {"amount": 5}, 422, "invalid_request"),
        ("/api/v1/users/abc/consume", {"Idempotency-Key": "k"}, {"amount": 5}, 404, "no_credit_account"),
        ("/api/v1/users/a%09b/consume", {"Idempotency-Key": "k"}, {"amount": 5}, 422, "invalid_request"),
        ("/api/v1/users/42/consume", {"Idempotency-Key": "k"}, {"amount": 5}, 404, "no_credit_account"),
        ("/api/v1/users/43/grants", {"Idempotency-Key": "k"}, {"amount": 5}, 404, "unknown_user"),
        ("/api/v1/users/42/grants", {"Idempotency-Key": "k"}, {"amount": 5, "type": "plan"}, 422, "invalid_request"),
        (
            "/api/v1/users/42/grants",
            {"Idempotency-Key": "k"},
            {"amount": 5, "expiresInDays": 0},
            422,
            "invalid_request",
        ),
    ],
)
def test_bad_ledger_requests_write_nothing(
    monkeypatch: pytest.MonkeyPatch,
    engine: sa.Engine,
    path: str,
    headers: dict[str, str],
    body: object,
    status: int,
    code: str,
) -> None:
    add_users(engine, [(42, "pro", "active", False, False)])
    before = _ledger_state(engine)
    with api_client(monkeypatch, engine) as (client, _):
        response = client.post(path, headers={**WRITE, **headers}, json=body)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.json()["success"] is False
    assert _ledger_state(engine) == before


def test_concurrent_retries_of_one_consume_apply_once(monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> None:
    add_users(engine, [(7, "pro", "active", False, False)])
    with api_client(monkeypatch, engine) as (client, _):
        client.post("/api/v1/users/7/grants", headers={**WRITE, "Idempotency-Key": "g"}, json={"amount": 50})
        start = threading.Barrier(8)

        def retry(_: int) -> tuple[int, bool]:
            start.wait()
            r = client.post(
                "/api/v1/users/7/consume", headers={**WRITE, "Idempotency-Key": "pay-1"}, json={"amount": 10}
            )
            return r.status_code, r.json()["data"]["replayed"]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(retry, range(8)))
    assert [status for status, _ in results] == [200] * 8
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 7
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '7'") == 40


def _wait_for_run(engine: sa.Engine, deadline_s: float = 60) -> sa.Row[tuple[object, ...]]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT job, trigger, status, period_key, requested_by FROM job_runs WHERE status <> 'running'")
            ).first()
        if row is not None:
            return row
        time.sleep(0.1)
    raise AssertionError("no finished run within the deadline")


def test_local_trigger_records_a_run_with_its_requester(monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> None:
    add_policy(engine, "pro", "free_tier", 100, None)
    add_users(engine, [(1, "pro", "active", False, False), (2, "pro", "active", False, False)])
    with api_client(monkeypatch, engine) as (client, _):
        response = client.post(
            "/api/v1/namespaces/billing/creditjobs/distribute-credits/runs",
            headers=bearer(RUNS_TOKEN),
            json={"periodKey": "2026-10"},
        )
        assert response.status_code == 202, response.text
        data = response.json()["data"]
        assert data["mode"] == "local"
        assert data["requestedBy"] == "token:cron"
        row = _wait_for_run(engine)
        runs = client.get("/api/v1/runs?job=distribute-credits", headers=bearer(READ_TOKEN)).json()["data"]
        one = client.get(f"/api/v1/runs/{runs[0]['jobRunId']}", headers=bearer(READ_TOKEN)).json()["data"]
    assert tuple(row) == ("distribute-credits", "manual", "succeeded", "2026-10", "token:cron")
    assert one["requestedBy"] == "token:cron"
    assert one["stats"]["granted"] == 2
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE period_key = '2026-10'") == 2


def test_seed_route_get_and_post_with_the_seed_envelope(monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> None:
    add_policy(engine, "pro", "free_tier", 100, None)
    add_users(engine, [(1, "pro", "active", False, False)])
    with api_client(monkeypatch, engine) as (client, _):
        posted = client.post("/api/distribute-credits", headers=basic(BASIC_USER, BASIC_PASSWORD))
        got = client.get("/api/distribute-credits", headers=basic(BASIC_USER, BASIC_PASSWORD))
        refused = client.post("/api/distribute-credits")
        started = client.post("/api/distribute-credits?async=true", headers=basic(BASIC_USER, BASIC_PASSWORD))
        assert started.status_code == 202, started.text
        status_url = started.json()["data"]["statusUrl"]
        deadline = time.monotonic() + 60
        while (later := client.get(status_url, headers=bearer(READ_TOKEN))).json()["data"]["status"] in (
            "pending",
            "running",
        ):
            assert time.monotonic() < deadline, later.text
            time.sleep(0.1)
    # the template's route answered with the run's result: its id and counts, once it had run
    assert (posted.status_code, posted.json()["data"]["status"]) == (200, "succeeded"), posted.text
    assert posted.json()["data"]["stats"]["granted"] == 1
    assert scalar(engine, "SELECT status FROM job_runs WHERE run_id = :r", r=posted.json()["data"]["jobRunId"]) == (
        "succeeded"
    )
    assert (got.status_code, got.json()["data"]["status"]) == (200, "succeeded")
    assert got.json()["data"]["stats"]["already_granted"] == 1  # the period's second run: nothing left to grant
    for response in (posted, got):
        assert response.json()["success"] is True
        assert response.json()["data"]["requestedBy"] == f"basic:{BASIC_USER}"
    assert later.json()["data"]["status"] == "succeeded"
    assert refused.json() == {
        "success": False,
        "error": refused.json()["error"],
        "code": "unauthorized",
        "retryable": False,
    }


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/api/v1/namespaces/billing/creditjobs/nightly/runs", None, 404, "unknown_job"),
        (
            "/api/v1/namespaces/billing/creditjobs/distribute-credits/runs",
            {"periodKey": "2026-13"},
            422,
            "invalid_request",
        ),
        (
            "/api/v1/namespaces/billing/creditjobs/distribute-credits/runs",
            {"periodKey": "2026-10-01"},
            422,
            "invalid_request",
        ),
        # Names no cluster could hold (found by fuzzing: these were queued as local runs, and a NUL failed the run)
        ("/api/v1/namespaces/%00/creditjobs/expire-credits/runs", None, 422, "invalid_request"),
        ("/api/v1/namespaces/Billing/creditjobs/expire-credits/runs", None, 422, "invalid_request"),
        ("/api/v1/namespaces/" + "n" * 64 + "/creditjobs/expire-credits/runs", None, 422, "invalid_request"),
        ("/api/v1/namespaces/billing/creditjobs/expire-credits%00/runs", None, 422, "invalid_request"),
        ("/api/v1/namespaces/billing/creditjobs/-expire-credits/runs", None, 422, "invalid_request"),
    ],
)
def test_bad_trigger_requests_start_nothing(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine, path: str, body: object, status: int, code: str
) -> None:
    with api_client(monkeypatch, engine) as (client, state):
        response = client.post(path, headers=bearer(RUNS_TOKEN), json=body)
        assert not getattr(state.triggers, "pending", [])
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0


def test_runs_routes_refuse_bad_ids_and_unknown_runs(monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> None:
    with api_client(monkeypatch, engine) as (client, _):
        bad = client.get("/api/v1/runs/not-a-uuid", headers=bearer(READ_TOKEN))
        missing = client.get("/api/v1/runs/00000000-0000-0000-0000-000000000000", headers=bearer(READ_TOKEN))
        too_many = client.get("/api/v1/runs?limit=100000", headers=bearer(READ_TOKEN))
        local = client.get("/api/v1/namespaces/billing/creditjobs/x", headers=bearer(READ_TOKEN))
        # A NUL in the job filter reached PostgreSQL and came back as 503 "database unavailable" (found by fuzzing)
        nul_job = client.get("/api/v1/runs?job=distribute%00", headers=bearer(READ_TOKEN))
        bad_namespace = client.get("/api/v1/namespaces/bill%00ing/creditjobs/x", headers=bearer(READ_TOKEN))
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_request")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (too_many.status_code, too_many.json()["code"]) == (422, "invalid_request")
    assert (local.status_code, local.json()["code"]) == (404, "not_in_cluster_mode")
    assert (nul_job.status_code, nul_job.json()["code"]) == (422, "invalid_request")
    assert "control or unprintable" in nul_job.json()["error"]
    assert (bad_namespace.status_code, bad_namespace.json()["code"]) == (422, "invalid_request")
