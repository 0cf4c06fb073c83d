"""Bad run settings, table-driven, through the real `credit-jobs run` process: each exits 2 with exactly
one error line saying what is wrong, where and how to fix it — and writes nothing (no audit row, no grant)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support import cli_process
from tests.support.ledger import add_policy, add_users, scalar

CASES: list[tuple[str, dict[str, str], list[str], str]] = [
    # (id, environment, extra arguments, text the one error line must contain)
    ("batch-size-not-a-number", {"CREDITJOBS_BATCH_SIZE": "abc"}, [], "CREDITJOBS_BATCH_SIZE='abc' is not a whole"),
    ("batch-size-zero", {"CREDITJOBS_BATCH_SIZE": "0"}, [], "CREDITJOBS_BATCH_SIZE=0 is out of range"),
    ("batch-size-huge", {"CREDITJOBS_BATCH_SIZE": "100000000"}, [], "CREDITJOBS_BATCH_SIZE=100000000 is out of range"),
    ("job-name-too-long", {"CREDITJOB_NAME": "x" * 3000}, [], "CREDITJOB_NAME is 3000 characters long"),
    ("job-name-invalid-utf8", {"CREDITJOB_NAME": "monthly\udcff"}, [], "CREDITJOB_NAME is not valid UTF-8"),
    ("job-name-blank", {"CREDITJOB_NAME": "  "}, [], "CREDITJOB_NAME is empty"),
    ("job-name-control", {"CREDITJOB_NAME": "a\tb"}, [], "CREDITJOB_NAME contains a control character"),
    ("heartbeat-zero", {"CREDITJOBS_HEARTBEAT_SECONDS": "0"}, [], "CREDITJOBS_HEARTBEAT_SECONDS=0 is out of range"),
    ("heartbeat-negative", {"CREDITJOBS_HEARTBEAT_SECONDS": "-1"}, [], "CREDITJOBS_HEARTBEAT_SECONDS=-1 is out of"),
    ("heartbeat-tiny", {"CREDITJOBS_HEARTBEAT_SECONDS": "0.001"}, [], "CREDITJOBS_HEARTBEAT_SECONDS=0.001 is out"),
    ("heartbeat-nan", {"CREDITJOBS_HEARTBEAT_SECONDS": "nan"}, [], "CREDITJOBS_HEARTBEAT_SECONDS='nan' is not"),
    ("heartbeat-text", {"CREDITJOBS_HEARTBEAT_SECONDS": "often"}, [], "CREDITJOBS_HEARTBEAT_SECONDS='often' is not"),
    ("heartbeat-huge", {"CREDITJOBS_HEARTBEAT_SECONDS": "86400"}, [], "CREDITJOBS_HEARTBEAT_SECONDS=86400 is out of"),
    ("log-level", {"LOG_LEVEL": "loud"}, [], "LOG_LEVEL='loud' is not one of debug, info, warning, error"),
    ("log-format", {"LOG_FORMAT": "xml"}, [], "LOG_FORMAT='xml' is not one of auto, json, console"),
    ("grant-family-env", {"CREDITJOB_GRANT_FAMILY": "Plan A"}, [], "CREDITJOB_GRANT_FAMILY='Plan A' is not a grant"),
    ("grant-family-option", {}, ["--grant-family", "plan:x"], "--grant-family='plan:x' is not a grant family"),
    ("grant-family-empty", {"CREDITJOB_GRANT_FAMILY": ""}, [], "CREDITJOB_GRANT_FAMILY='' is not a grant family"),
]


@pytest.mark.parametrize(("env", "args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_run_setting_exits_2_with_one_line_and_writes_nothing(
    database_url: str, engine: sa.Engine, env: dict[str, str], args: list[str], message: str
) -> None:
    add_policy(engine, "free", "free_tier", 100, 30)
    add_users(engine, [(1, "free", "active", False, False)])
    environment = cli_process.cli_env(database_url, CREDITJOB_PERIOD_KEY="2026-11", **env)
    result = cli_process.run(["run", "distribute-credits", *args], environment, timeout=60)
    assert result.returncode == 2, result.stderr
    (line,) = cli_process.error_lines(result.stderr)
    assert line.startswith("credit-jobs: error: ")
    assert message in line
    assert len(line) < 400  # a 3000-character value is not echoed back whole
    assert "Traceback" not in result.stderr
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0


def test_the_same_settings_when_valid_run(database_url: str, engine: sa.Engine) -> None:
    """The bounds accept what a real deployment sets (the other side of the table above)."""
    add_policy(engine, "free", "free_tier", 100, 30)
    add_users(engine, [(1, "free", "active", False, False)])
    environment = cli_process.cli_env(
        database_url,
        CREDITJOB_PERIOD_KEY="2026-11",
        CREDITJOB_NAME="m" * 253,
        CREDITJOBS_BATCH_SIZE="100000",
        CREDITJOBS_HEARTBEAT_SECONDS="1",
        LOG_LEVEL="WARNING",
        CREDITJOB_GRANT_FAMILY="plan-v2",
    )
    result = cli_process.run(["run", "distribute-credits"], environment, timeout=60)
    assert result.returncode == 0, result.stderr
    assert scalar(engine, "SELECT grant_family FROM credit_grants") == "plan-v2"
