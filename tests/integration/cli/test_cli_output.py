"""The CLI as a person and a log pipeline see it: real `credit-jobs` processes, piped or in a
pseudo-terminal of a known width — the version, one event per line, values a person copies never cut, run-id
prefixes, summaries that name every count, run ids only for runs that exist, help text."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs import __version__
from tests.support import cli_process
from tests.support.ledger import add_policy, add_users, live_month, scalar

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def run_in_terminal(args: list[str], env: dict[str, str], columns: int = 80, timeout: float = 120) -> tuple[int, str]:
    """Run the real console script with stdout and stderr on a pseudo-terminal `columns` wide; (exit code, screen
    text without colour codes, lines joined by \\n)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    term_env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    term_env["TERM"] = "xterm-256color"
    process = subprocess.Popen(
        [cli_process.CLI, *args], env=term_env, stdin=follower, stdout=follower, stderr=follower, close_fds=True
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            process.kill()
            raise AssertionError(f"credit-jobs {args} produced nothing for {timeout} s")
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    code = process.wait(timeout=timeout)
    text = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n").replace("\r", "")
    return code, text


def _seed(engine: sa.Engine, users: int = 3) -> None:
    add_policy(engine, "free", "free_tier", 100, 30)
    add_users(engine, [(n, "free", "active", False, False) for n in range(1, users + 1)])


def _no_trailing_spaces(text: str) -> None:
    for line in text.splitlines():
        assert line == line.rstrip(" "), f"trailing spaces: {line!r}"  # a trailing tab is an empty TSV field


# --- the version ---------------------------------------------------------------------------------------------


def test_version_prints_the_version_and_exits_0() -> None:
    done = cli_process.run(["--version"], cli_process.cli_env(None))
    assert (done.returncode, done.stdout.strip()) == (0, f"credit-jobs {__version__}"), done.stderr


# --- help ----------------------------------------------------------------------------------------------------


def test_help_shows_no_value_type_on_flags(database_url: str) -> None:
    env = cli_process.cli_env(database_url)
    for args in (["--help"], ["run", "--help"], ["runs", "list", "--help"]):
        code, screen = run_in_terminal(args, env, columns=120)
        assert code == 0, screen
        assert "<bool>" not in screen, screen
        assert "--help" in screen


# --- one event, one line; values a person copies are never cut ------------------------------------------------


def test_piped_output_is_one_line_per_event_without_trailing_spaces(database_url: str, engine: sa.Engine) -> None:
    _seed(engine)
    long_name = "monthly-credits-for-the-enterprise-customers-of-the-european-region"
    env = cli_process.cli_env(database_url, CREDITJOB_NAME=long_name)
    env.pop("COLUMNS", None)
    done = cli_process.run(["run", "distribute-credits", "--period-key", "2026-11"], env)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert re.fullmatch(r"run [0-9a-f-]{36} succeeded: period 2026-11; .*granted=3.*", line), line
    assert len(line) > 80
    request_id = "consume-" + "0123456789abcdef" * 5
    done = cli_process.run(["consume", "1", "10", "--request-id", request_id], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"consumed 10 credits of user 1 (request {request_id})"]
    run_id = json.loads(cli_process.run(["runs", "list", "--json"], env).stdout)[0]["jobRunId"]
    for args in (["runs", "list"], ["runs", "show", run_id], ["check"], ["db", "upgrade"]):
        done = cli_process.run(args, env)
        assert done.returncode == 0, (args, done.stderr)
        _no_trailing_spaces(done.stdout)
        assert not any(c in done.stdout for c in "│┃━─"), (args, done.stdout)  # no table borders in a pipe
    shown = cli_process.run(["runs", "show", run_id], env).stdout.splitlines()
    assert f"run_id\t{run_id}" in shown
    assert f"job\t{long_name}" in shown


def test_errors_on_a_pipe_are_one_line(database_url: str, engine: sa.Engine) -> None:
    env = cli_process.cli_env(database_url)
    env.pop("COLUMNS", None)
    long_key = "2026-" + "1" * 100
    done = cli_process.run(["check", "--period-key", long_key], env)
    assert done.returncode == 2
    (line,) = cli_process.error_lines(done.stderr)
    assert line.startswith("credit-jobs: error: --period-key")
    assert len(line) > 80


def test_runs_list_in_an_80_column_terminal_never_cuts_a_run_id(database_url: str, engine: sa.Engine) -> None:
    _seed(engine)
    env = cli_process.cli_env(database_url, CREDITJOB_NAME="monthly-credits-for-the-enterprise-customers")
    for key in ("2026-10", "2026-11"):
        assert cli_process.run(["run", "distribute-credits", "--period-key", key], env).returncode == 0
    run_ids = [r["jobRunId"] for r in json.loads(cli_process.run(["runs", "list", "--json"], env).stdout)]
    code, screen = run_in_terminal(["runs", "list"], env, columns=80)
    assert code == 0, screen
    assert all(len(line) <= 80 for line in screen.splitlines()), screen
    for run_id in run_ids:
        assert run_id in screen, screen
    # Seen: words broken inside cells ("succeede d") and columns dropped silently. Whole columns go, in the
    # documented order, and a note says which (the 43-character job name leaves room for the shorter period).
    assert screen.count("succeeded") == 2, screen
    assert "…" not in screen, screen
    assert "2026-10" in screen, screen
    assert "not shown at 80 columns: job, started, finished" in " ".join(screen.split()), screen
    code, screen = run_in_terminal(["runs", "list"], env, columns=200)
    assert "monthly-credits-for-the-enterprise-customers" in screen, screen
    assert "not shown" not in screen, screen
    code, screen = run_in_terminal(["runs", "show", run_ids[0]], env, columns=80)
    assert code == 0, screen
    assert run_ids[0] in screen, screen


def test_runs_show_accepts_an_unambiguous_prefix(database_url: str, engine: sa.Engine) -> None:
    env = cli_process.cli_env(database_url)
    for usecase in ("expire-credits", "cleanup-storage", "distribute-credits"):
        assert cli_process.run(["run", usecase], env).returncode == 0
    ids = ["abcd1234-0000-4000-8000-000000000001", "abcd1234-0000-4000-8000-000000000002"]
    with engine.begin() as conn:
        for usecase, new_id in zip(("expire-credits", "cleanup-storage"), ids, strict=True):
            conn.execute(sa.text("UPDATE job_runs SET run_id = :id WHERE job = :job"), {"id": new_id, "job": usecase})
    third = str(scalar(engine, "SELECT run_id FROM job_runs WHERE job = 'distribute-credits'"))

    done = cli_process.run(["runs", "show", third[:8], "--json"], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["jobRunId"] == third
    done = cli_process.run(["runs", "show", "ABCD1234-0000-4000-8000-00000000000", "--json"], env)
    assert done.returncode == 2
    (line,) = cli_process.error_lines(done.stderr)
    assert "ambiguous" in line, line
    assert ids[0] in line, line
    assert ids[1] in line, line
    done = cli_process.run(["runs", "show", "abcd1234-0000-4000-8000-000000000002", "--json"], env)
    assert json.loads(done.stdout)["job"] == "cleanup-storage"
    unknown = "ffff" if not third.startswith("ffff") else "eeee"
    done = cli_process.run(["runs", "show", unknown], env)
    assert done.returncode == 2
    (line,) = cli_process.error_lines(done.stderr)
    assert f"no run starting with {unknown}" in line, line
    done = cli_process.run(["runs", "show", "ab"], env)
    assert done.returncode == 2
    assert "at least 4" in done.stderr


# --- summaries name what matters -------------------------------------------------------------------------------


def test_distribute_summaries_always_state_granted_already_granted_and_skipped(
    database_url: str, engine: sa.Engine
) -> None:
    _seed(engine)
    add_users(engine, [(9, "free", "active", False, True)])  # banned: skipped
    env = cli_process.cli_env(database_url)
    first = cli_process.run(["run", "distribute-credits", "--period-key", "2026-11"], env)
    assert first.returncode == 0, first.stderr
    assert "; granted=3, already_granted=0, skipped=1, " in first.stdout, first.stdout
    rerun = cli_process.run(["run", "distribute-credits", "--period-key", "2026-11"], env)
    assert rerun.returncode == 0, rerun.stderr
    assert "; granted=0, already_granted=3, skipped=1, " in rerun.stdout, rerun.stdout
    assert "warning" not in rerun.stderr


def test_a_run_over_an_empty_eligibility_source_warns(database_url: str, engine: sa.Engine) -> None:
    add_policy(engine, "free", "free_tier", 100, 30)
    env = cli_process.cli_env(database_url)
    done = cli_process.run(["run", "distribute-credits", "--period-key", "2026-11"], env)
    assert done.returncode == 0, done.stderr
    assert "; granted=0, already_granted=0, skipped=0" in done.stdout, done.stdout
    (warning,) = cli_process.error_lines(done.stderr)
    assert warning.startswith("credit-jobs: warning: the eligibility source had no users"), warning
    assert "credit_eligibility" in warning
    events = [line for line in cli_process.log_lines(done.stderr) if line["event"] == "distribute.empty_source"]
    assert len(events) == 1
    assert events[0]["level"] == "warning"
    dry = cli_process.run(["run", "distribute-credits", "--period-key", "2026-12", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "; would_grant=0" in dry.stdout, dry.stdout
    assert "granted=0, already" not in dry.stdout.replace("would_grant=0", "")
    assert len(cli_process.error_lines(dry.stderr)) == 1


def test_an_expiry_with_nothing_due_states_its_zero_counts_dry_or_not(database_url: str) -> None:
    env = cli_process.cli_env(database_url)
    dry = cli_process.run(["run", "expire-credits", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "; would_expire_grants=0, would_expire_credits=0" in dry.stdout, dry.stdout
    done = cli_process.run(["run", "expire-credits"], env)
    assert done.returncode == 0, done.stderr
    assert "; expired_grants=0" in done.stdout, done.stdout


# --- a run id only once its audit row exists -----------------------------------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.mark.parametrize(
    ("case", "args", "url_of", "code"),
    [
        ("bad period key", ["--period-key", "2026-13"], lambda url: url, 2),
        ("unreachable database", [], lambda url: "postgresql://u:p@127.0.0.1:1/nowhere", 1),
    ],
)
def test_a_run_that_never_started_names_no_run_id(
    database_url: str, engine: sa.Engine, case: str, args: list[str], url_of: Any, code: int
) -> None:
    env = cli_process.cli_env(url_of(database_url))
    done = cli_process.run(["run", "distribute-credits", *args], env)
    assert done.returncode == code, (case, done.stderr)
    (line,) = cli_process.error_lines(done.stderr)
    assert line.startswith("credit-jobs: error: distribute-credits did not start"), line
    assert not _UUID.search(line), line
    assert done.stdout == ""
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0


# --- DATABASE_URL: the password never shows, a malformed URL gets a hint -----------------------------------------


@pytest.mark.parametrize("command", [["run", "distribute-credits"], ["runs", "list"], ["check"]])
def test_a_password_in_the_query_string_is_never_printed(command: list[str]) -> None:
    secret = "s3kr1tQueryPass"
    for url in (
        f"postgresql://billing@127.0.0.1:1/billing?password={secret}",
        f"postgresql://billing@127.0.0.1:1/billing?sslmode=bogus&password={secret}",
    ):
        done = cli_process.run(command, cli_process.cli_env(None, DATABASE_URL=url))
        assert done.returncode in (1, 2), done.stderr
        assert secret not in done.stdout + done.stderr
        (line,) = cli_process.error_lines(done.stderr)
        assert "postgresql://billing@127.0.0.1:1/billing?" in line, line  # as written: scheme kept
        assert "password=***" in line, line
        if command[0] == "run":
            (end,) = [entry for entry in cli_process.log_lines(done.stderr) if entry["event"] == "run.finished"]
            assert "password=***" in end["error"]


def test_errors_show_the_url_as_written_with_the_password_masked() -> None:
    url = "postgres://billing:TopSecret9@127.0.0.1:1/billing"
    done = cli_process.run(["runs", "list"], cli_process.cli_env(None, DATABASE_URL=url))
    assert done.returncode == 1, done.stderr
    (line,) = cli_process.error_lines(done.stderr)
    assert "at postgres://billing:***@127.0.0.1:1/billing:" in line, line
    assert "TopSecret9" not in done.stderr


@pytest.mark.parametrize("command", [["run", "distribute-credits"], ["runs", "list"], ["db", "upgrade"]])
def test_an_unencoded_at_sign_in_the_password_is_one_line_with_a_hint(command: list[str]) -> None:
    url = "postgresql://billing:pa@ssw0rdTail@127.0.0.1:5432/billing"
    done = cli_process.run(command, cli_process.cli_env(None, DATABASE_URL=url))
    assert done.returncode == 2, done.stderr
    (line,) = cli_process.error_lines(done.stderr)
    assert "%40" in line, line
    assert "Traceback" not in done.stderr
    for part in ("pa@", "ssw0rd", "ssw0rdTail", "Tail@"):
        assert part not in done.stdout + done.stderr, (part, line)


# --- the ledger from a person's point of view ------------------------------------------------------------------


def test_balance_and_grants_show_a_users_spendable_credits_and_grants(database_url: str, engine: sa.Engine) -> None:
    _seed(engine, users=1)  # user 1: 100 credits of free_tier a month, expiring 30 days after the month starts
    # the processes read the database's clock: a month whose grant is live by it for 1 to 32 more days
    month = live_month(engine)
    env = cli_process.cli_env(database_url)
    assert cli_process.run(["run", "distribute-credits", "--period-key", month], env).returncode == 0
    args = ["grant", "1", "40", "--idempotency-key", "gift-1", "--expires-in-days", "40"]
    assert cli_process.run(args, env).returncode == 0
    assert cli_process.run(["grant", "1", "5", "--idempotency-key", "gift-2"], env).returncode == 0
    # the month's grant expires before the 40-day gift: the consumption takes from it
    assert cli_process.run(["consume", "1", "30", "--request-id", "c1"], env).returncode == 0

    done = cli_process.run(["balance", "1", "--json"], env)
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert (view["spendable"], view["balance"]) == (115, 115)
    assert [(g["type"], g["remaining"]) for g in view["grants"]] == [
        ("free_tier", 70),
        ("gift", 40),
        ("gift", 5),
    ]
    assert view["grants"][0]["periodKey"] == month
    assert view["grants"][0]["expiresAt"] < view["grants"][1]["expiresAt"]
    assert view["grants"][2]["expiresAt"] is None

    done = cli_process.run(["balance", "1"], env)
    lines = done.stdout.splitlines()
    assert lines[0] == "user 1: 115 credits spendable in 3 live grants"
    assert lines[1].split("\t") == ["grant id", "type", "period", "remaining", "of", "expires", "state"]
    assert [line.split("\t")[1:5] for line in lines[2:]] == [
        ["free_tier", month, "70", "100"],
        ["gift", "-", "40", "40"],
        ["gift", "-", "5", "5"],
    ]
    gift = view["grants"][2]["grantId"]
    assert cli_process.run(["void", str(gift), "--request-id", "v1"], env).returncode == 0
    done = cli_process.run(["grants", "1", "--json"], env)
    everything = json.loads(done.stdout)
    assert len(everything["grants"]) == 3
    assert {g["grantId"]: g["state"] for g in everything["grants"]}[gift] == "voided"
    assert json.loads(cli_process.run(["balance", "1", "--json"], env).stdout)["spendable"] == 110
    assert cli_process.run(["consume", "1", "70", "--request-id", "c2"], env).returncode == 0  # the month's grant
    states = [g["state"] for g in json.loads(cli_process.run(["grants", "1", "--json"], env).stdout)["grants"]]
    assert sorted(states) == ["live", "used up", "voided"]  # Seen: one state, "used up or voided", for both

    code, screen = run_in_terminal(["balance", "1"], env, columns=80)
    assert code == 0, screen
    assert "user 1: 40 credits spendable in 1 live grant\n" in screen  # Seen: "1 grants"
    code, screen = run_in_terminal(["grants", "1"], env, columns=80)
    assert code == 0, screen
    assert "user 1: 3 grants" in screen
    assert all(len(line) <= 80 for line in screen.splitlines()), screen
    # Seen: microsecond timestamps wrapped over three lines. Now to the second with the zone, each on one line.
    live_gift = next(g for g in everything["grants"] if g["grantId"] not in (gift,) and g["type"] == "gift")
    expires = datetime.fromisoformat(live_gift["expiresAt"])
    assert re.search(re.escape(f"{expires:%Y-%m-%d %H:%M:%S}") + r" [A-Z][A-Za-z0-9+:_/-]*\b", screen), screen
    assert "." not in screen.split("user 1: 3 grants", 1)[1].replace("...", ""), screen  # no fractions of seconds

    done = cli_process.run(["balance", "424242"], env)
    assert done.returncode == 2
    assert cli_process.error_lines(done.stderr) == [
        "credit-jobs: error: no user 424242: not in credit_eligibility and no credit account; check the user id"
    ]


def test_consume_for_a_user_without_an_account_is_a_usage_error(database_url: str, engine: sa.Engine) -> None:
    env = cli_process.cli_env(database_url)
    done = cli_process.run(["consume", "77", "10", "--request-id", "order-1"], env)
    assert done.returncode == 2, done.stderr
    (line,) = cli_process.error_lines(done.stderr)
    assert "user 77 has no credit account" in line, line
    assert scalar(engine, "SELECT count(*) FROM credit_requests") == 0
    assert scalar(engine, "SELECT count(*) FROM credit_accounts") == 0


def test_grant_to_a_user_the_eligibility_source_does_not_know_needs_allow_unknown_user(
    database_url: str, engine: sa.Engine
) -> None:
    env = cli_process.cli_env(database_url)
    done = cli_process.run(["grant", "88", "10", "--idempotency-key", "k1"], env)
    assert done.returncode == 2, done.stderr
    (line,) = cli_process.error_lines(done.stderr)
    assert "user 88 is not in credit_eligibility" in line, line
    assert "--allow-unknown-user" in line
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0
    assert scalar(engine, "SELECT count(*) FROM credit_requests") == 0
    done = cli_process.run(["grant", "88", "10", "--idempotency-key", "k1", "--allow-unknown-user"], env)
    assert done.returncode == 0, done.stderr
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '88'") == 10
    view = json.loads(cli_process.run(["balance", "88", "--json"], env).stdout)
    assert (view["knownUser"], view["spendable"]) == (False, 10)


# --- the progress bar says what it walks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usecase", "label"),
    [("distribute-credits", "users"), ("expire-credits", "grants"), ("cleanup-storage", "files")],
)
def test_the_progress_bar_names_what_is_walked(database_url: str, engine: sa.Engine, usecase: str, label: str) -> None:
    _seed(engine)
    env = cli_process.cli_env(database_url, LOG_FORMAT="console")
    code, screen = run_in_terminal(["run", usecase], env, columns=120)
    assert code == 0, screen
    assert f"{usecase}: {label}" in screen, screen
    assert "working" not in screen


def test_no_log_line_of_a_run_is_over_a_kilobyte_and_the_audit_row_keeps_the_whole_sample(
    database_url: str, engine: sa.Engine
) -> None:
    # 40 users with long ids who each spent 1 credit of the period's grant: rolling the period back names 20 of
    # them (the users who kept part of it) in its report
    add_policy(engine, "free", "free_tier", 100, 30)
    add_users(engine, [(f"customer-{n:03d}-" + "x" * 40, "free", "active", False, False) for n in range(40)])
    env = cli_process.cli_env(database_url)
    assert cli_process.run(["run", "distribute-credits", "--period-key", "2026-10"], env).returncode == 0
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT credit_consume(user_id, 1, 'spend-' || user_id) FROM credit_eligibility"))
    args = ["rollback", "distribute-credits", "--period-key", "2026-10", "--reason", "wrong amount"]
    done = cli_process.run(args, env)
    assert done.returncode == 0, done.stderr
    for line in done.stderr.splitlines():
        assert len(line.encode()) <= 1024, line
    (finished,) = [e for e in cli_process.log_lines(done.stderr) if e["event"] == "run.finished"]
    assert finished["not_voided_sample"][-1].endswith(" more"), finished  # the first ones, and how many more
    run = json.loads(cli_process.run(["runs", "list", "--json"], env).stdout)[0]
    assert len(run["stats"]["not_voided_sample"]) == 20


def test_in_a_terminal_a_run_prints_its_progress_and_one_summary_line_and_its_log_with_v(
    database_url: str, engine: sa.Engine
) -> None:
    """Seen: one run in an 80-column terminal printed key=value log lines of 300-5,000 characters, 17 wrapped lines
    for a one-line result. Now the structured log is at warning level in a terminal unless -v (a pipe or a pod
    still gets every event as one JSON line: test_piped_output_is_one_line_per_event_without_trailing_spaces)."""
    _seed(engine)
    env = {k: v for k, v in cli_process.cli_env(database_url).items() if k != "LOG_FORMAT"}  # the default: auto
    code, screen = run_in_terminal(["run", "distribute-credits", "--period-key", "2026-10"], env, columns=80)
    assert code == 0, screen
    lines = [line for line in screen.splitlines() if line.strip()]
    assert "run.started" not in screen, screen
    assert "run.finished" not in screen, screen
    (summary,) = [line for line in lines if line.startswith("run ")]
    assert " succeeded: period 2026-10; granted=3, already_granted=0, skipped=0" in summary, screen
    assert len(lines) <= 2, screen  # the progress bar's last state and the summary
    for verbose in (["-v", "run"], ["run", "--verbose"]):
        args = [*verbose, "distribute-credits", "--period-key", "2026-11"]
        code, screen = run_in_terminal(args, env, columns=80)
        assert code == 0, screen
        assert "run.finished" in screen, screen


# --- one embedded database per user, wherever the CLI is run from -----------------------------------------------


def test_the_embedded_database_does_not_follow_the_current_directory(tmp_path: Path) -> None:
    home = tmp_path / "data-home"
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    with cli_process.embedded_default(home) as env:

        def run_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [cli_process.CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False
            )

        done = run_in(first_dir, "run", "expire-credits")
        assert done.returncode == 0, done.stderr
        assert f"creating a new embedded PostgreSQL in {home / 'postgres'}" in done.stderr
        assert run_in(first_dir, "db", "stop").returncode == 0  # so the next command says where it starts it
        done = run_in(second_dir, "runs", "list", "--json")
        assert done.returncode == 0, done.stderr
        assert f"starting the embedded PostgreSQL in {home / 'postgres'}" in done.stderr
        assert "creating" not in done.stderr
        assert [r["job"] for r in json.loads(done.stdout)] == ["expire-credits"]
    assert not (first_dir / ".data").exists()
    assert not (second_dir / ".data").exists()


# --- the demo shows its own fresh data and explains its deliberate warnings --------------------------------------


def test_the_demo_prints_its_own_fresh_data_and_explains_the_unconfigured_plan(tmp_path: Path) -> None:
    with cli_process.embedded_default(tmp_path / "data") as env:
        _the_demo_prints_its_own_fresh_data({k: v for k, v in env.items() if k not in ("LOG_LEVEL", "LOG_FORMAT")})


def _the_demo_prints_its_own_fresh_data(env: dict[str, str]) -> None:
    seeded = cli_process.run(["demo", "seed", "--users", "400"], env, timeout=180)  # an earlier, larger seed
    assert seeded.returncode == 0, seeded.stderr
    done = cli_process.run(["demo", "--users", "150"], env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "credit-jobs demo (150 users, seed 42)" in done.stdout, done.stdout
    assert "(on purpose)" in done.stdout
    assert "no plan_credit_policies row" in done.stdout
    assert "all invariants hold" in done.stdout
    accounts = re.search(r"credits over (\d+) accounts", done.stdout)
    assert accounts, done.stdout
    assert 0 < int(accounts.group(1)) <= 150  # this demo's users, not the earlier seed's 400
    assert "warning" not in done.stderr.lower(), done.stderr  # explained in the table, not logged as a problem
