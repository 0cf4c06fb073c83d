"""`credit-jobs rollback distribute-credits` against a real PostgreSQL (in-process `main(argv)`, the real lifecycle):
void what is left, mark grants rolled back, redo the period with what users kept counted against the new grant."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.domain.errors import ConfigError
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.rollback_period import RollbackScope
from credit_jobs.usecases.void_grant import void_grant
from tests.support.ledger import add_policy, add_users, rows, scalar

PERIOD = "2026-11"


def _wrong_amount_went_out(engine: sa.Engine, cli: Any) -> None:
    """Plan pro grants 1000 (should have been 400); four users got it, then spent some of it."""
    add_policy(engine, "pro", "subscription", 1000, None)
    add_users(engine, [(u, "pro", "active", False, False) for u in (1, 2, 3, 4)])
    code, _, err = cli("run", "distribute-credits", "--period-key", PERIOD)
    assert code == 0, err
    consume(engine, "1", 300, request_id="spend-1")  # partly spent
    consume(engine, "2", 1000, request_id="spend-2")  # all spent: more than the right amount
    consume(engine, "4", 200, request_id="spend-4")
    grant_4 = scalar(engine, "SELECT grant_id FROM credit_grants WHERE user_id = '4'")
    void_grant(engine, grant_4, request_id="refund-4")  # an earlier manual void took the other 800 back


def _given(engine: sa.Engine) -> dict[str, int]:
    """What each user received for the period in total: every grant's amount minus what voids took back."""
    return dict(
        rows(
            engine,
            """
            SELECT g.user_id, sum(g.amount) - coalesce(sum(v.voided), 0)
            FROM credit_grants g
            LEFT JOIN (SELECT grant_id, sum(amount) AS voided FROM credit_entries WHERE kind = 'void'
                       GROUP BY grant_id) v ON v.grant_id = g.grant_id
            WHERE g.period_key = :k GROUP BY g.user_id
            """,
            k=PERIOD,
        )
    )


def test_rollback_then_redo_never_gives_more_than_the_policy_amount_in_total(cli: Any, engine: sa.Engine) -> None:
    _wrong_amount_went_out(engine, cli)
    code, out, err = cli("rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "wrong amount")
    assert code == 0, err
    assert "rolled_back=4" in out
    # the report names the users whose grant was (partly) spent and what could not be voided
    assert "3 users had already used" in out
    assert "1500 credits could not be voided" in out
    assert "user 1: grant 1, 300 credits not voided" in out
    assert "user 2: grant 2, 1000 credits not voided" in out
    assert "user 4: grant 4, 200 credits not voided" in out
    run_id = scalar(engine, "SELECT run_id FROM job_runs WHERE trigger = 'rollback'")
    voids = rows(
        engine,
        "SELECT user_id, amount, reason, cause_run_id FROM credit_entries WHERE cause_run_id = :r ORDER BY user_id",
        r=run_id,
    )
    assert [tuple(v) for v in voids] == [("1", 700, "wrong amount", run_id), ("3", 1000, "wrong amount", run_id)]
    marked = rows(engine, "SELECT user_id, remaining, rollback_kept, rollback_run_id FROM credit_grants ORDER BY 1")
    assert [tuple(m) for m in marked] == [
        ("1", 0, 300, run_id),
        ("2", 0, 1000, run_id),
        ("3", 0, 0, run_id),
        ("4", 0, 200, run_id),
    ]
    assert dict(rows(engine, "SELECT user_id, balance FROM credit_accounts")) == {"1": 0, "2": 0, "3": 0, "4": 0}

    # the fix: the right amount, then the period again
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE plan_credit_policies SET credits_per_period = 400"))
    code, out, err = cli("run", "distribute-credits", "--period-key", PERIOD)
    assert code == 0, err
    assert "granted=3, already_granted=0" in out, out
    assert "covered_by_kept=1" in out, out  # user 2 kept more than the period's amount: not "already granted"
    new = rows(
        engine,
        "SELECT user_id, amount FROM credit_grants WHERE rolled_back_at IS NULL AND period_key = :k ORDER BY 1",
        k=PERIOD,
    )
    assert [tuple(n) for n in new] == [("1", 100), ("3", 400), ("4", 200)]  # user 2 already spent 1000 ≥ 400: nothing
    assert _given(engine) == {"1": 400, "2": 1000, "3": 400, "4": 400}
    assert dict(rows(engine, "SELECT user_id, balance FROM credit_accounts")) == {"1": 100, "2": 0, "3": 400, "4": 200}
    report = check_invariants(engine, period_key=PERIOD)
    assert report.ok, report.violations
    assert report.coverage is not None
    assert report.coverage.missing == 0
    # a rerun of the redo adds nothing
    code, out, _ = cli("run", "distribute-credits", "--period-key", PERIOD)
    assert code == 0
    assert "granted=0, already_granted=3" in out, out
    assert "covered_by_kept=1" in out, out


def test_check_names_a_redo_grant_that_did_not_subtract_what_the_user_kept(cli: Any, engine: sa.Engine) -> None:
    """The over-grant a rollback racing a distribution used to leave: the redo's grant written from a
    snapshot taken before the rollback committed, so it subtracted nothing of the 300 the user kept — 300 + 400
    for a period worth 400. The run-level exclusion prevents it now; `check` still names any such row."""
    _wrong_amount_went_out(engine, cli)
    code, _, err = cli("rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "wrong amount")
    assert code == 0, err
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE plan_credit_policies SET credits_per_period = 400"))
    code, _, err = cli("run", "distribute-credits", "--period-key", PERIOD)  # the right redo: 100 for user 1
    assert code == 0, err
    report = check_invariants(engine, period_key=PERIOD)
    assert report.ok, report.violations
    assert (
        scalar(engine, "SELECT kept_earlier FROM credit_grants WHERE user_id = '1' AND rolled_back_at IS NULL") == 300
    )
    with engine.begin() as conn:  # what the racing redo wrote instead: the whole 400, nothing subtracted
        conn.execute(
            sa.text(
                "UPDATE credit_grants SET amount = 400, remaining = 400, kept_earlier = 0 "
                "WHERE user_id = '1' AND rolled_back_at IS NULL"
            )
        )
        conn.execute(sa.text("UPDATE credit_accounts SET balance = 400 WHERE user_id = '1'"))
    report = check_invariants(engine)
    assert not report.ok
    (row,) = report.violations["redo_subtracts_what_was_kept"]
    assert (row["user_id"], row["period_key"], row["subtracted"], row["kept"], row["over"]) == (
        "1",
        PERIOD,
        0,
        300,
        300,
    )


def _ledger_snapshot(engine: sa.Engine) -> tuple[Any, ...]:
    return (
        [tuple(r) for r in rows(engine, "SELECT * FROM credit_grants ORDER BY grant_id")],
        [tuple(r) for r in rows(engine, "SELECT * FROM credit_entries ORDER BY entry_id")],
        [tuple(r) for r in rows(engine, "SELECT * FROM credit_accounts ORDER BY user_id")],
    )


def test_a_second_rollback_of_the_same_period_changes_nothing(cli: Any, engine: sa.Engine) -> None:
    _wrong_amount_went_out(engine, cli)
    assert cli("rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "wrong amount")[0] == 0
    before = _ledger_snapshot(engine)
    code, out, _ = cli("rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "again")
    assert code == 0
    assert "rolled_back" not in out.replace("rolled_back=0", "")  # nothing rolled back, said as zero or not at all
    assert _ledger_snapshot(engine) == before
    assert scalar(engine, "SELECT count(*) FROM job_runs WHERE trigger = 'rollback' AND status = 'succeeded'") == 2


def test_rollback_of_some_users_only_leaves_the_others_grants(cli: Any, engine: sa.Engine) -> None:
    _wrong_amount_went_out(engine, cli)
    code, out, err = cli(
        "rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "r", "--user", "3", "--user", "1"
    )
    assert code == 0, err
    assert "rolled_back=2" in out
    rolled = [
        r[0] for r in rows(engine, "SELECT user_id FROM credit_grants WHERE rolled_back_at IS NOT NULL ORDER BY 1")
    ]
    assert rolled == ["1", "3"]
    assert check_invariants(engine).ok


def test_rollback_walks_text_user_ids_in_byte_order_one_chunk_at_a_time(cli: Any, engine: sa.Engine) -> None:
    # ids whose text ("C", byte) order is not their numeric or case-insensitive order; one grant per chunk, so every
    # chunk resumes after the previous chunk's last user id
    users = ["9", "10", "user-a", "user-B", "Z"]
    add_policy(engine, "pro", "subscription", 100, None)
    add_users(engine, [(u, "pro", "active", False, False) for u in users])
    assert cli("run", "distribute-credits", "--period-key", PERIOD)[0] == 0
    consume(engine, "user-a", 30, request_id="spend-a")
    code, out, err = cli("rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "r", "--batch-size", "1")
    assert code == 0, err
    assert "rolled_back=5" in out
    assert "credits_voided=470" in out
    assert "user user-a: grant 5, 30 credits not voided" in out
    voids = rows(engine, "SELECT user_id, amount FROM credit_entries WHERE kind = 'void' ORDER BY entry_id")
    assert [tuple(v) for v in voids] == [("10", 100), ("9", 100), ("Z", 100), ("user-B", 100), ("user-a", 70)]
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE rolled_back_at IS NULL") == 0
    assert dict(rows(engine, "SELECT user_id, balance FROM credit_accounts")) == dict.fromkeys(users, 0)
    assert check_invariants(engine).ok


def test_a_dry_run_reports_and_writes_nothing_to_the_ledger(cli: Any, engine: sa.Engine) -> None:
    _wrong_amount_went_out(engine, cli)
    before = _ledger_snapshot(engine)
    code, out, err = cli("rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "r", "--dry-run")
    assert code == 0, err
    assert "would_roll_back=4" in out
    assert "would_void_credits=1700" in out
    assert "dry run" in out
    assert _ledger_snapshot(engine) == before


def test_a_rollback_of_a_period_with_no_grants_says_there_was_nothing_to_roll_back(cli: Any, engine: sa.Engine) -> None:
    _wrong_amount_went_out(engine, cli)
    before = _ledger_snapshot(engine)
    for dry in ([], ["--dry-run"]):
        code, _, err = cli("rollback", "distribute-credits", "--period-key", "2027-05", "--reason", "r", *dry)
        assert code == 0, err
        assert "credit-jobs: warning: nothing to roll back: no grant of grant family plan for period 2027-05" in err
    assert _ledger_snapshot(engine) == before
    code, _, err = cli("rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "r")
    assert code == 0, err
    assert "nothing to roll back" not in err


def _counts(engine: sa.Engine) -> tuple[int, ...]:
    return tuple(
        scalar(engine, sql)
        for sql in (
            "SELECT count(*) FROM job_runs",
            "SELECT count(*) FROM credit_entries",
            "SELECT count(*) FROM credit_grants WHERE rolled_back_at IS NOT NULL",
            "SELECT sum(balance) FROM credit_accounts",
        )
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period-key", "2026-13", "--reason", "r"], "is not a period key"),
        (["--period-key", "2026-11-28T13+00:00", "--reason", "r"], "is not a period key"),
        (["--period-key", PERIOD, "--reason", "  "], "--reason is empty"),
        (["--period-key", PERIOD, "--reason", "two\nlines"], "one printable line"),
        # any text is a user id (`x1` is one); these are not: the domain's refusal (validate_user_id)
        (
            ["--period-key", PERIOD, "--reason", "r", "--user", " 1"],
            "the user id ' 1' has leading or trailing whitespace: remove it",
        ),
        (
            ["--period-key", PERIOD, "--reason", "r", "--user", "1\x07"],
            "the user id '1\\x07' contains control or unprintable characters",
        ),
        (["--period-key", PERIOD, "--reason", "r", "--user", "1", "--user", ""], "the user id must not be empty"),
        (["--period-key", PERIOD, "--reason", "r", "--job", "a:b"], "is not a job name"),
        (["--period-key", PERIOD, "--reason", "r", "--grant-family", "Bad Family"], "is not a grant family"),
        (["--period-key", PERIOD, "--reason", "r", "--batch-size", "0"], "batch size 0 is out of range"),
        (["--reason", "r"], "Missing option '--period-key'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    cli: Any, engine: sa.Engine, args: list[str], message: str
) -> None:
    _wrong_amount_went_out(engine, cli)
    before = _counts(engine)
    code, _, err = cli("rollback", "distribute-credits", *args)
    assert code == 2
    (line,) = [line for line in err.splitlines() if not line.startswith("{")]
    assert message in line, err
    assert _counts(engine) == before


def test_a_library_caller_passing_int_user_ids_is_refused_before_any_sql() -> None:
    # the ledger's user_id is TEXT since 0007: an int would only fail in SQL (text = smallint), mid-run
    with pytest.raises(ConfigError, match=r"the user id must be text, got int 1: pass str\(1\)"):
        RollbackScope("r", ("2", 1))  # type: ignore[arg-type]
    assert RollbackScope("r", ("1", "user-a")).users == ("1", "user-a")


def test_the_rollback_is_audited_with_its_trigger_and_counts(cli: Any, engine: sa.Engine) -> None:
    _wrong_amount_went_out(engine, cli)
    assert cli("rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "wrong amount")[0] == 0
    _code, out, _ = cli("runs", "list", "--json")
    latest = json.loads(out)[0]
    assert (latest["job"], latest["trigger"], latest["status"]) == ("distribute-credits", "rollback", "succeeded")
    shown = json.loads(cli("runs", "show", latest["jobRunId"], "--json")[1])
    stats = shown["stats"]
    assert (stats["rolled_back"], stats["credits_voided"], stats["not_voided_users"]) == (4, 1700, 3)
    assert (stats["not_voided_credits"], stats["reason"]) == (1500, "wrong amount")
    assert shown["usecase"] == "rollback-distribute-credits"


def test_migration_0008_upgrades_a_database_holding_a_ledger_and_its_period_can_then_be_rolled_back(
    cli: Any, engine: sa.Engine
) -> None:
    from alembic import command

    from credit_jobs.adapters import schema_migrations

    add_policy(engine, "pro", "subscription", 1000, None)
    add_users(engine, [(u, "pro", "active", False, False) for u in (1, 2)])
    config = schema_migrations.alembic_config()
    with engine.begin() as conn:  # a database as it was before 0008, with a distributed period and a spent credit
        config.attributes["connection"] = conn
        command.downgrade(config, "0007")
    code, _, err = cli("run", "distribute-credits", "--period-key", PERIOD)
    assert code == 2  # this version refuses the old schema before writing anything
    assert "needs 0" in err
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, "
                "cause_run_id) VALUES ('1', 'subscription', 'plan', :k, 1000, 700, gen_random_uuid()), "
                "('2', 'subscription', 'plan', :k, 1000, 1000, gen_random_uuid())"
            ),
            {"k": PERIOD},
        )
        conn.execute(
            sa.text(
                "INSERT INTO credit_entries (user_id, grant_id, kind, amount, cause_request_id) "
                "SELECT '1', grant_id, 'usage', 300, 'spend' FROM credit_grants WHERE user_id = '1'"
            )
        )
        conn.execute(sa.text("INSERT INTO credit_accounts (user_id, balance) VALUES ('1', 700), ('2', 1000)"))
    assert schema_migrations.upgrade_schema(engine) == schema_migrations.head_revision()
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE rolled_back_at IS NOT NULL") == 0
    assert check_invariants(engine).ok
    code, out, err = cli("rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "after upgrade")
    assert code == 0, err
    assert "rolled_back=2" in out
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE plan_credit_policies SET credits_per_period = 400"))
    assert cli("run", "distribute-credits", "--period-key", PERIOD)[0] == 0
    assert _given(engine) == {"1": 400, "2": 400}
    assert check_invariants(engine).ok
