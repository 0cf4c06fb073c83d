"""`credit-jobs schedule`, and period-key input at the CLI edge: real processes, exit 2 with one line, no writes."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.support import cli_process
from tests.support.ledger import add_policy, add_users, scalar

FULL_WIDTH_NOVEMBER = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in "2026-11")


def _seed(engine: sa.Engine) -> None:
    add_policy(engine, "free", "free_tier", 100, 30)
    add_users(engine, [(1, "free", "active", False, False), (2, "free", "active", False, False)])


def _nothing_written(engine: sa.Engine) -> None:
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0
    assert scalar(engine, "SELECT count(*) FROM credit_entries") == 0
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        (["--period-key", FULL_WIDTH_NOVEMBER], {}, "monthly period key"),
        (["--period-key", "2026-11 "], {}, "malformed monthly period key '2026-11 '"),
        (["--period-key", "9999-12"], {}, "outside the supported years"),
        (["--period-key", "0000-01"], {}, "outside the supported years"),
        ([], {"CREDITJOB_PERIOD_KEY": "2026-W54", "CREDITJOB_PERIOD": "weekly"}, "names no real weekly period"),
        ([], {"CREDITJOB_PERIOD_KEY": "2026-11-28T13", "CREDITJOB_PERIOD": "hourly"}, "use 2026-11-28T13+00:00"),
        ([], {"CREDITJOB_SCHEDULE": "0 0 30 2 *"}, "schedule '0 0 30 2 *' never fires"),
        ([], {"CREDITJOB_SCHEDULE": "0 0 31 4 *"}, "never fires"),
    ],
)
def test_bad_period_input_exits_2_with_one_line_and_writes_nothing(
    database_url: str, engine: sa.Engine, args: list[str], extra_env: dict[str, str], message: str
) -> None:
    _seed(engine)
    done = cli_process.run(
        ["run", "distribute-credits", *args], cli_process.cli_env(database_url, CREDITJOB_NAME="m", **extra_env)
    )
    assert done.returncode == 2, done.stderr
    (line,) = cli_process.error_lines(done.stderr)
    assert message in line
    _nothing_written(engine)


def test_schedule_lists_both_fires_of_the_repeated_hour_with_distinct_keys() -> None:
    done = cli_process.run(
        [
            "schedule",
            "0 * * * *",
            "--time-zone",
            "America/New_York",
            "--period",
            "hourly",
            "--from",
            "2026-11-01T00:30:00-04:00",
            "--count",
            "3",
        ],
        cli_process.cli_env(None),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("2026-11-01T01:00:00-04:00  2026-11-01T01-04:00  (fires twice")
    assert lines[1].startswith("2026-11-01T01:00:00-05:00  2026-11-01T01-05:00  (fires twice")
    assert lines[2] == "2026-11-01T02:00:00-05:00  2026-11-01T02-05:00"


def test_schedule_json_says_which_period_each_fire_grants_and_notes_skipped_times() -> None:
    done = cli_process.run(
        [
            *("schedule", "30 2 * * *", "--time-zone", "America/New_York", "--period", "daily"),
            *("--from", "2026-03-07T12:00:00Z", "--count", "2", "--json"),
        ],
        cli_process.cli_env(None),
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["fireTime"], r["periodKey"]) for r in rows] == [
        ("2026-03-09T02:30:00-04:00", "2026-03-09"),
        ("2026-03-10T02:30:00-04:00", "2026-03-10"),
    ]
    assert rows[0]["notes"] == ["no fire at 2026-03-08T02:30: skipped by the DST change"]
    assert rows[0]["fireTimeUtc"] == "2026-03-09T06:30:00Z"


def test_schedule_defaults_to_ten_fires_from_now_in_utc() -> None:
    done = cli_process.run(["schedule", "@hourly", "--json"], cli_process.cli_env(None))
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 10
    assert all(r["periodKey"] == r["fireTime"][:7] for r in rows)  # monthly keys by default


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0 0 30 2 *"], "never fires"),
        (["0 0 1 *"], "five fields"),
        (["@daily", "--time-zone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["@daily", "--period", "fortnightly"], "unknown period 'fortnightly'"),
        (["@daily", "--from", "yesterday"], "--from 'yesterday' is not an ISO 8601 time"),
        (["@daily", "--count", "0"], "--count 0 is outside 1..1000"),
        (["@daily", "--count", "1001"], "--count 1001 is outside 1..1000"),
    ],
)
def test_schedule_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = cli_process.run(["schedule", *args], cli_process.cli_env(None))
    assert done.returncode == 2
    (line,) = cli_process.error_lines(done.stderr)
    assert message in line
    assert done.stdout == ""
