"""`credit-jobs backfill` against a real PostgreSQL (in-process `main(argv)`, the real lifecycle): a range of periods,
oldest first, each its own audited run; stops at the first failed period; bad ranges write nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.domain.limits import MAX_BALANCE, MAX_CREDITS
from tests.support.ledger import add_policy, add_users, rows, scalar


def _seed(engine: sa.Engine) -> None:
    add_policy(engine, "pro", "subscription", 100, None)
    add_users(engine, [(u, "pro", "active", False, False) for u in (1, 2, 3, 4)])


def _poison(engine: sa.Engine, user_id: str) -> None:
    """Gifts (and the balance to match) that bring the user to 50 below MAX_BALANCE: their next grant of 100 is
    refused by the database, for them alone — the ledger stays sound."""
    current = scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = :u", u=user_id)
    full, rest = divmod(MAX_BALANCE - 50 - current, MAX_CREDITS)
    amounts = [MAX_CREDITS] * full + ([rest] if rest else [])
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, cause_request_id, idempotency_key) "
                "SELECT :u, 'gift', a, a, 'poison-' || n, 'poison-' || n "
                "FROM unnest(CAST(:amounts AS bigint[])) WITH ORDINALITY AS x(a, n)"
            ),
            {"u": user_id, "amounts": amounts},
        )
        conn.execute(
            sa.text("UPDATE credit_accounts SET balance = balance + :add WHERE user_id = :u"),
            {"u": user_id, "add": sum(amounts)},
        )


def test_a_range_with_a_done_and_a_failing_period_stops_there_with_earlier_periods_committed(
    cli: Any, engine: sa.Engine
) -> None:
    _seed(engine)
    assert cli("run", "distribute-credits", "--period-key", "2026-08")[0] == 0  # done before the backfill
    _poison(engine, "4")  # 2026-09 will fail for user 4
    code, out, err = cli("backfill", "distribute-credits", "--from", "2026-08", "--to", "2026-11", "--json")
    assert code == 1
    (line,) = [line for line in err.splitlines() if not line.startswith("{")]
    assert line.startswith("credit-jobs: error: backfill stopped at period 2026-09: run ")
    assert "failed: 1 items failed" in line
    assert "rerun `--from 2026-09 --to 2026-11`" in line
    table = json.loads(out)
    assert [(r["period"], r["status"], r["granted"], r["alreadyGranted"]) for r in table] == [
        ("2026-08", "succeeded", 0, 4),  # the done period re-ran cheaply and added nothing
        ("2026-09", "failed", 3, 0),
        ("2026-10", "not run", 0, 0),
        ("2026-11", "not run", 0, 0),
    ]
    # earlier periods committed (2026-09's three good users too), later ones never started
    grants = dict(
        rows(engine, "SELECT period_key, count(*) FROM credit_grants WHERE period_key IS NOT NULL GROUP BY 1")
    )
    assert grants == {"2026-08": 4, "2026-09": 3}
    runs = rows(engine, "SELECT period_key, trigger, status FROM job_runs ORDER BY started_at")
    assert [tuple(r) for r in runs] == [
        ("2026-08", "cli", "succeeded"),
        ("2026-08", "backfill", "succeeded"),
        ("2026-09", "backfill", "failed"),
    ]


def test_a_range_runs_each_period_oldest_first_as_its_own_backfill_run(cli: Any, engine: sa.Engine) -> None:
    _seed(engine)
    code, out, err = cli("backfill", "distribute-credits", "--from", "2026-09", "--to", "2026-11")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split("\t") == ["period", "status", "granted", "already granted", "skipped", "duration"]
    assert [line.split("\t")[:4] for line in lines[1:]] == [
        [key, "succeeded", "4", "0"] for key in ("2026-09", "2026-10", "2026-11")
    ]
    runs = rows(engine, "SELECT period_key, trigger, status FROM job_runs ORDER BY started_at")
    assert [tuple(r) for r in runs] == [(k, "backfill", "succeeded") for k in ("2026-09", "2026-10", "2026-11")]
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 12


def test_a_dry_run_backfill_says_what_it_would_grant_and_grants_nothing(
    cli: Any, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(engine)
    monkeypatch.setenv("CREDITJOB_PERIOD", "weekly")  # a weekly job (its CronJob's container sets this)
    code, out, err = cli("backfill", "distribute-credits", "--from", "2025-W47", "--to", "2025-W48", "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0].split("\t")[2] == "would grant"
    assert [line.split("\t")[:3] for line in out.splitlines()[1:]] == [
        ["2025-W47", "succeeded (dry run)", "4"],
        ["2025-W48", "succeeded (dry run)", "4"],
    ]
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0


def test_a_dry_run_backfill_counts_the_users_the_real_run_would_skip(cli: Any, engine: sa.Engine) -> None:
    _seed(engine)
    add_users(engine, [(5, "pro", "active", False, True), (6, "pro", "cancelled", False, False)])  # banned, inactive
    code, dry, err = cli("backfill", "distribute-credits", "--from", "2026-11", "--to", "2026-11", "--dry-run")
    assert code == 0, err
    code, real, err = cli("backfill", "distribute-credits", "--from", "2026-11", "--to", "2026-11")
    assert code == 0, err
    # period, status, granted / would grant, already granted, skipped: the same numbers, dry or not
    assert [line.split("\t")[2:5] for line in dry.splitlines()[1:]] == [["4", "0", "2"]]
    assert [line.split("\t")[2:5] for line in real.splitlines()[1:]] == [["4", "0", "2"]]


def test_more_than_24_periods_run_with_yes(cli: Any, engine: sa.Engine) -> None:
    _seed(engine)
    code, _, err = cli("backfill", "distribute-credits", "--from", "2024-09", "--to", "2026-11", "--yes", "--dry-run")
    assert code == 0, err
    assert scalar(engine, "SELECT count(DISTINCT period_key) FROM job_runs WHERE trigger = 'backfill'") == 27


def _counts(engine: sa.Engine) -> tuple[int, int]:
    return (scalar(engine, "SELECT count(*) FROM job_runs"), scalar(engine, "SELECT count(*) FROM credit_grants"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-11", "--to", "2026-09"], "--from 2026-11 is after --to 2026-09: the range is reversed"),
        (["--from", "2026-13", "--to", "2026-11"], "--from '2026-13' is not a period key"),
        (["--from", "2026-09", "--to", "2026-9"], "--to '2026-9' is not a period key"),
        (["--from", "2026-10", "--to", "2099-01"], "--to 2099-01 is in the future"),
        (["--from", "2026-10", "--to", "2026-W48"], "are different kinds of period"),
        (["--from", "2024-09", "--to", "2026-11"], "more than 24 periods: pass --yes"),
        (["--from", "2026-09", "--to", "2026-11", "--job", "a:b"], "is not a job name"),
        # keys of another period than the job's (distribute-credits: monthly unless CREDITJOB_PERIOD says otherwise):
        # each day or week would get the whole monthly amount
        (
            ["--from", "2025-11-01", "--to", "2025-11-20"],
            "--from '2025-11-01' is a daily period key, but the job's period is monthly (distribute-credits's default; "
            "CREDITJOB_PERIOD is unset): use monthly keys, or set CREDITJOB_PERIOD=daily for a daily job",
        ),
        (["--from", "2025-W01", "--to", "2025-W03"], "is a weekly period key, but the job's period is monthly"),
    ],
)
def test_bad_ranges_exit_2_with_the_reason_and_write_nothing(
    cli: Any, engine: sa.Engine, args: list[str], message: str
) -> None:
    _seed(engine)
    assert cli("run", "distribute-credits", "--period-key", "2026-08")[0] == 0
    before = _counts(engine)
    code, out, err = cli("backfill", "distribute-credits", *args)
    assert code == 2
    (line,) = [line for line in err.splitlines() if not line.startswith("{")]
    assert message in line, line
    assert out == ""
    assert _counts(engine) == before


@pytest.mark.parametrize("usecase", ["expire-credits", "cleanup-storage", "purge-retention"])
def test_a_usecase_that_works_on_now_is_not_backfilled(cli: Any, engine: sa.Engine, usecase: str) -> None:
    code, out, err = cli("backfill", usecase, "--from", "2026-11-01", "--to", "2026-11-03")
    assert code == 2, out + err
    assert f"{usecase} cannot be backfilled" in err
    assert f"`credit-jobs run {usecase}`" in err
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0


def test_an_unknown_usecase_exits_2_and_writes_nothing(cli: Any, engine: sa.Engine) -> None:
    _seed(engine)
    code, _, err = cli("backfill", "distribute", "--from", "2026-09", "--to", "2026-11")
    assert code == 2
    assert "unknown usecase 'distribute'" in err
    assert _counts(engine) == (0, 0)


def test_a_key_of_another_period_than_creditjob_period_is_refused_by_backfill_and_rollback(
    cli: Any, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(engine)
    assert cli("run", "distribute-credits", "--period-key", "2026-08")[0] == 0
    before = _counts(engine)
    monkeypatch.setenv("CREDITJOB_PERIOD", "monthly")
    for args in (
        ["backfill", "distribute-credits", "--from", "2026-08-01", "--to", "2026-08-03"],
        ["rollback", "distribute-credits", "--period-key", "2026-08-01", "--reason", "r"],
    ):
        code, out, err = cli(*args)
        assert code == 2, args
        (line,) = [line for line in err.splitlines() if not line.startswith("{")]
        assert "is a daily period key, but the job's period is monthly (CREDITJOB_PERIOD)" in line, line
        assert out == ""
        assert _counts(engine) == before
    monkeypatch.setenv("CREDITJOB_PERIOD", "daily")  # a daily job: its keys are days
    code, _, err = cli("backfill", "distribute-credits", "--from", "2026-08-01", "--to", "2026-08-02", "--dry-run")
    assert code == 0, err
