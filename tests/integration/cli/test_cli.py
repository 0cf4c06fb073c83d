"""The `credit-jobs` CLI: commands, output, exit codes and log fields (in-process `main(argv)` and real processes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.usecases.check_invariants import CHECKS
from tests.support import cli_process
from tests.support.ledger import add_policy, add_users, scalar


def _seed(engine: sa.Engine) -> None:
    add_policy(engine, "free", "free_tier", 100, 30)
    add_users(engine, [(1, "free", "active", False, False), (2, "free", "active", False, True)])


def test_run_then_list_and_show_the_run(cli: Any, engine: sa.Engine) -> None:
    _seed(engine)
    code, out, _ = cli("run", "distribute-credits", "--period-key", "2026-11")
    assert code == 0
    assert "succeeded: period 2026-11" in out
    code, out, _ = cli("runs", "list", "--json")
    assert code == 0
    (listed,) = json.loads(out)
    assert (listed["job"], listed["status"], listed["periodKey"]) == ("distribute-credits", "succeeded", "2026-11")
    code, out, _ = cli("runs", "show", listed["jobRunId"], "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["stats"]["granted"] == 1
    assert shown["stats"]["banned"] == 1


def test_runs_show_of_an_unknown_or_malformed_id_is_a_usage_error(cli: Any) -> None:
    code, _, err = cli("runs", "show", "not-a-uuid")
    assert code == 2
    assert "is not a run id" in err
    code, _, err = cli("runs", "show", "00000000-0000-0000-0000-000000000000")
    assert code == 2
    assert "no run 00000000-0000-0000-0000-000000000000" in err


def test_check_passes_on_a_sound_ledger_and_exits_1_listing_violations(cli: Any, engine: sa.Engine) -> None:
    _seed(engine)
    cli("run", "distribute-credits", "--period-key", "2026-11")
    code, out, _ = cli("check", "--json")
    assert code == 0
    assert json.loads(out)["ok"] is True
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE credit_accounts SET balance = balance + 1"))
    code, out, _ = cli("check", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["violations"]["balance_equals_grants"][0]["userId"] == "1"


def test_consume_and_grant_from_the_command_line(cli: Any, engine: sa.Engine) -> None:
    add_users(engine, [(5, "free", "active", False, False)])
    code, out, _ = cli("grant", "5", "30", "--idempotency-key", "support-ticket-9", "--type", "adjustment")
    assert code == 0
    assert "granted: grant" in out
    code, out, _ = cli("consume", "5", "20", "--request-id", "r1")
    assert code == 0
    code, _, err = cli("consume", "5", "20")
    assert code == 1
    assert "user 5 has 10 credits available, 20 requested; nothing was consumed" in err
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '5'") == 10
    grant_id = scalar(engine, "SELECT grant_id FROM credit_grants WHERE user_id = '5'")
    code, out, _ = cli("void", str(grant_id), "--request-id", "ticket-9-refund")
    assert code == 0
    assert f"voided 10 credits of grant {grant_id} (user 5)" in out
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '5'") == 0
    code, _, err = cli("void", "424242", "--request-id", "nope")
    assert code == 2
    assert "no grant 424242" in err


def test_demo_seed_is_deterministic_and_idempotent(cli: Any, engine: sa.Engine) -> None:
    assert cli("demo", "seed", "--users", "500", "--seed", "7")[0] == 0
    first = scalar(
        engine,
        "SELECT md5(string_agg(user_id || plan_code || status || is_banned, ',' ORDER BY user_id)) "
        "FROM credit_eligibility",
    )
    assert cli("demo", "seed", "--users", "500", "--seed", "7")[0] == 0
    assert scalar(engine, "SELECT count(*) FROM credit_eligibility") == 500
    assert scalar(engine, "SELECT count(*) FROM credit_eligibility WHERE is_banned") > 0
    assert scalar(engine, "SELECT count(*) FROM credit_eligibility WHERE plan_code = 'legacy-gold'") > 0
    again = scalar(
        engine,
        "SELECT md5(string_agg(user_id || plan_code || status || is_banned, ',' ORDER BY user_id)) "
        "FROM credit_eligibility",
    )
    assert again == first


def test_the_demo_runs_the_whole_flow_and_ends_with_sound_invariants(cli: Any) -> None:
    code, out, _ = cli("demo", "--users", "300")
    assert code == 0
    assert "all invariants hold" in out
    assert "distribute-credits (rerun)" in out


def test_every_log_line_of_a_run_carries_the_run_fields(database_url: str, engine: sa.Engine) -> None:
    _seed(engine)
    env = cli_process.cli_env(
        database_url,
        CREDITJOB_NAME="monthly-credits",
        CREDITJOB_SCHEDULE="0 0 1 * *",
        CREDITJOB_TIME_ZONE="Asia/Shanghai",
        CREDITJOB_PERIOD="monthly",
    )
    done = cli_process.run(["run", "distribute-credits", "--batch-size", "1"], env)
    assert done.returncode == 0, done.stderr
    lines = cli_process.log_lines(done.stderr)
    assert len(lines) >= 3
    for line in lines:
        assert line["creditjob"] == "monthly-credits"  # the metrics' and the operator's name for it
        assert line["usecase"] == "distribute-credits"
        assert line["trigger"] == "schedule"
        assert line["shard"] == 0
        assert len(line["job_run_id"]) == 36
        assert line["period_key"] == lines[-1]["period_key"]
        assert line["timestamp"].endswith("Z")
    end = lines[-1]
    assert end["event"] == "run.finished"
    assert end["status"] == "succeeded"
    assert isinstance(end["duration_s"], float)
    assert (end["processed"], end["skipped"], end["failed"], end["credits_granted"]) == (1, 1, 0, 100)


def test_the_human_output_of_runs_list_and_check(cli: Any, engine: sa.Engine) -> None:
    _seed(engine)
    cli("run", "distribute-credits", "--period-key", "2026-11")
    code, out, _ = cli("runs", "list")
    assert code == 0
    run_id = json.loads(cli("runs", "list", "--json")[1])[0]["jobRunId"]
    header, line = out.splitlines()  # piped: tab-separated, nothing truncated
    assert header.split("\t")[:2] == ["run id", "job"]
    fields = line.split("\t")
    assert fields[:6] == [run_id, "distribute-credits", "2026-11", "0/1", "cli", "succeeded"]
    code, out, _ = cli("check")
    assert code == 0
    assert out.count(": ok") == len(CHECKS)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE credit_accounts SET balance = balance + 5"))
    code, out, _ = cli("check")
    assert code == 1
    assert "1 violating rows" in out


@pytest.mark.parametrize(
    ("limit", "bound"),
    [
        ("-1", "-1 is not in the range 1<=x<=10000."),
        ("0", "0 is not in the range 1<=x<=10000."),
        ("10001", "10001 is not in the range 1<=x<=10000."),
    ],
)
def test_runs_list_refuses_a_limit_out_of_range_with_one_line(cli: Any, limit: str, bound: str) -> None:
    code, out, err = cli("runs", "list", "--limit", limit)
    assert code == 2
    assert err.splitlines() == [f"credit-jobs: error: Invalid value for '--limit': {bound}"]
    assert out == ""
