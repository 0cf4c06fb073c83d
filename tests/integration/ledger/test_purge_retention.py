"""purge-retention against a real PostgreSQL: old history goes (finished runs, long-deleted file rows, processed
request ids past their replay window), in chunks; what is recent, running or unprocessed stays; the ledger is never
touched."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.adapters.db_clock import database_now
from credit_jobs.usecases.consume import consume
from tests.integration.conftest import RunUsecase
from tests.support.ledger import add_policy, add_users, rows, scalar


def _seed_history(engine: sa.Engine) -> None:
    """Per table: rows past the default retention (400 days; 90 for request ids) and rows that must stay."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO job_runs (run_id, job, usecase, period_key, trigger, status, started_at)
                SELECT gen_random_uuid(), 'j', 'distribute-credits', '2025-01', 'cli', s,
                       now() - make_interval(days => d)
                FROM (VALUES ('succeeded', 500), ('failed', 450), ('skipped', 403), ('succeeded', 500),
                             ('succeeded', 10), ('running', 500)) AS v(s, d)
                """
            )
        )
        conn.execute(
            sa.text(
                """
                INSERT INTO stored_files (uri, created_at, expires_at, deleted_at, delete_run_id)
                VALUES ('file:///a', now() - interval '900 days', now() - interval '800 days',
                        now() - interval '500 days', gen_random_uuid()),
                       ('file:///b', now() - interval '900 days', now() - interval '800 days',
                        now() - interval '450 days', gen_random_uuid()),
                       ('file:///c', now() - interval '900 days', now() - interval '10 days',
                        now() - interval '10 days', gen_random_uuid()),
                       ('file:///d', now() - interval '900 days', NULL, NULL, NULL)
                """
            )
        )
        conn.execute(
            sa.text(
                """
                INSERT INTO credit_requests (request_id, operation, user_id, params, result, created_at)
                VALUES ('old-1', 'consume', '1', '{}', '{}', now() - interval '100 days'),
                       ('old-2', 'consume', '1', '{}', '{}', now() - interval '91 days'),
                       ('old-unfinished', 'void', NULL, '{}', NULL, now() - interval '100 days'),
                       ('recent', 'consume', '1', '{}', '{}', now() - interval '5 days')
                """
            )
        )


def _ledger(engine: sa.Engine) -> tuple[Any, ...]:
    return tuple(
        [tuple(r) for r in rows(engine, f"SELECT * FROM {table} ORDER BY 1")]
        for table in ("credit_grants", "credit_entries", "credit_accounts")
    )


def _seed_ledger(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    """A ledger written long ago: grants, usage entries and balances all older than any retention."""
    add_policy(engine, "pro", "subscription", 100, None)
    add_users(engine, [(u, "pro", "active", False, False) for u in (1, 2, 3)])
    assert run_usecase("distribute-credits", pinned_key="2024-01").status == "succeeded"
    consume(engine, "1", 10, request_id="ancient")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE credit_grants SET granted_at = now() - interval '1000 days'"))
        conn.execute(sa.text("UPDATE credit_entries SET created_at = now() - interval '1000 days'"))
        conn.execute(sa.text("UPDATE job_runs SET started_at = started_at - interval '2000 days'"))
        conn.execute(sa.text("UPDATE credit_requests SET created_at = now() - interval '1000 days'"))


def _remaining(engine: sa.Engine) -> dict[str, list[Any]]:
    return {
        "job_runs": sorted(
            (r.status, r.age)
            for r in rows(
                engine,
                "SELECT status, (now() - started_at) > interval '400 days' AS age FROM job_runs "
                "WHERE usecase <> 'purge-retention'",
            )
        ),
        "stored_files": [r[0] for r in rows(engine, "SELECT uri FROM stored_files ORDER BY uri")],
        "credit_requests": [r[0] for r in rows(engine, "SELECT request_id FROM credit_requests ORDER BY 1")],
    }


def test_purge_deletes_old_history_in_chunks_and_never_the_ledger(
    engine: sa.Engine, run_usecase: RunUsecase, database_url: str
) -> None:
    _seed_ledger(engine, run_usecase)  # also one old distribute run and the 'ancient' request id
    _seed_history(engine)
    ledger = _ledger(engine)
    # the history above is dated by the database's clock: the purge runs at it, as it does in production
    outcome = run_usecase("purge-retention", now=database_now(engine), batch_size=2)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.stats is not None
    counts = outcome.stats.as_dict()
    assert (counts["job_runs_purged"], counts["stored_files_purged"], counts["credit_requests_purged"]) == (5, 2, 3)
    assert counts["processed"] == 10
    assert _remaining(engine) == {
        "job_runs": [("running", True), ("succeeded", False)],  # (the purge runs' own rows left out)
        "stored_files": ["file:///c", "file:///d"],
        "credit_requests": ["old-unfinished", "recent"],
    }
    assert _ledger(engine) == ledger
    # a rerun finds nothing more
    again = run_usecase("purge-retention", now=database_now(engine))
    assert again.stats is not None
    assert again.stats.processed == 0


def test_the_retention_and_replay_window_come_from_the_settings(
    cli: Any, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_history(engine)
    monkeypatch.setenv("CREDITJOBS_RETENTION_DAYS", "5")
    monkeypatch.setenv("CREDITJOBS_REQUEST_REPLAY_DAYS", "1")
    code, out, err = cli("run", "purge-retention")
    assert code == 0, err
    assert "job_runs_purged=5" in out
    assert "stored_files_purged=3" in out
    assert "credit_requests_purged=3" in out
    assert _remaining(engine)["credit_requests"] == ["old-unfinished"]


def test_a_dry_run_counts_and_deletes_nothing(cli: Any, engine: sa.Engine) -> None:
    _seed_history(engine)
    before = _remaining(engine)
    code, out, err = cli("run", "purge-retention", "--dry-run")
    assert code == 0, err
    assert "would_purge_job_runs=4" in out
    assert "would_purge_stored_files=2" in out
    assert "would_purge_credit_requests=2" in out
    assert _remaining(engine) == before


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CREDITJOBS_RETENTION_DAYS", "0"),
        ("CREDITJOBS_RETENTION_DAYS", "a year"),
        ("CREDITJOBS_REQUEST_REPLAY_DAYS", "-1"),
    ],
)
def test_a_bad_retention_exits_2_and_deletes_nothing(
    cli: Any, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    _seed_history(engine)
    before = _remaining(engine)
    monkeypatch.setenv(variable, value)
    code, _, err = cli("run", "purge-retention")
    assert code == 2
    (line,) = [line for line in err.splitlines() if not line.startswith("{")]
    assert f"{variable}=" in line
    assert "1..36500" in line
    assert _remaining(engine) == before
    assert scalar(engine, "SELECT count(*) FROM job_runs WHERE usecase <> 'purge-retention'") == 6
