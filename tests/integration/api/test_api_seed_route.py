"""The seed's route tells the truth: `/api/distribute-credits` answers with its run's result, as the template's route
did, and a failure is a retryable 5xx the scheduler sees — never `202 success: true` for a run that then failed.
A token leads to its run in either mode (in a cluster: the audit rows of the pods of the Job named after it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from credit_jobs.adapters import run_audit
from credit_jobs.entrypoints.api.triggers import ClusterTriggers
from credit_operator.cronjob_manifest import manual_job_name
from tests.support.api import BASIC_PASSWORD, BASIC_USER, basic, served_api

UNREACHABLE = "postgresql://credit:secret@127.0.0.1:1/ledger"


@pytest.fixture
def api_without_database(tmp_path: Path) -> Iterator[str]:
    """`credit-jobs api` whose database is down (nothing listens on its port): it serves, /readyz says not ready."""
    with served_api(UNREACHABLE, tmp_path / "api.log") as base:
        yield base


def test_with_the_database_down_the_seed_route_answers_a_retryable_failure(api_without_database: str) -> None:
    """The Seen: `202 success: true` while the run failed in the background."""
    answer = httpx.post(
        f"{api_without_database}/api/distribute-credits", headers=basic(BASIC_USER, BASIC_PASSWORD), timeout=60
    )
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert (body["success"], body["code"], body["retryable"]) == (False, "run_failed", True)
    assert "failed" in body["error"]
    assert "secret" not in body["error"]  # the database password never reaches a caller


def _row(job: str, host: str, status: str, shard: int = 0, shards: int = 1) -> dict[str, object]:
    return {
        "run_id": uuid.uuid4(),
        "job": job,
        "usecase": "distribute-credits",
        "period_key": "2026-11",
        "shard": shard,
        "shards": shards,
        "trigger": "manual",
        "status": status,
        "started_at": datetime.now(UTC) - timedelta(minutes=1),
        "host": host,
    }


def _insert(engine: sa.Engine, *rows: dict[str, object]) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO job_runs (run_id, job, usecase, period_key, shard, shards, trigger, status, started_at, "
                "host) VALUES (:run_id, :job, :usecase, :period_key, :shard, :shards, :trigger, :status, "
                ":started_at, :host)"
            ),
            list(rows),
        )


def test_in_a_cluster_a_token_leads_to_the_runs_of_the_job_named_after_it(engine: sa.Engine) -> None:
    """The operator names a run-now Job `<creditjob>-m-<hash of the token>`; each pod records its name (the Job's
    name and a suffix) as the run's host. (No cluster here: the rows are what those pods write.)"""
    triggers = ClusterTriggers(api=None)  # type: ignore[arg-type]  # `result` reads the database only
    token, other = "20261207T060000Z-0a1b2c3d", "20261207T060001Z-99999999"
    job = manual_job_name("monthly", token)
    assert triggers.result("billing", "monthly", token, engine).status == "pending"  # type: ignore[union-attr]
    _insert(
        engine,
        _row("monthly", f"{job}-0-x7k2p", "succeeded", shard=0, shards=2),
        _row("monthly", f"{manual_job_name('monthly', other)}-abcde", "failed"),  # another request's run
    )
    assert triggers.result("billing", "monthly", token, engine).status == "running"  # type: ignore[union-attr]
    _insert(engine, _row("monthly", f"{job}-1-q9w8e", "succeeded", shard=1, shards=2))
    done = triggers.result("billing", "monthly", token, engine)
    assert done is not None
    assert done.status == "succeeded"
    assert [run["host"] for run in done.runs] == [f"{job}-0-x7k2p", f"{job}-1-q9w8e"]
    failed = triggers.result("billing", "monthly", other, engine)
    assert failed is not None
    assert failed.status == "failed"
    assert run_audit.runs_of_job_pods(engine, job="weekly", pod_prefix=job, since=datetime.now(UTC)) == []
