"""A job pod starts fast: `credit-jobs run` checks the schema with one query (no Alembic) and never imports the
Kubernetes client, Kopf, Alembic or the ORM models — only `operator`, `trigger` and `db upgrade` need them — nor
Rich, pydantic or any other command's module: a `run` line goes to the run command's own Typer app
(`entrypoints/cli/run_app.py`).

The start-up time itself is measured by `bench/bench_startup.py` (no timed assertion here); this file proves the
things that make it fast, against a real database and real processes: the imports, that the Alembic-free schema
check gives Alembic's answers, and that the run command's app and the whole CLI answer every `run` line alike (exit
code, output, messages, log events).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from credit_jobs.adapters import database, schema_migrations
from credit_jobs.domain.errors import ConfigError
from tests.support import cli_process
from tests.support.cli_process import cli_env, libpq_url

# The Kubernetes client and Kopf (operator/trigger only), Alembic (db upgrade only), the ORM models (migrations
# and tests only; about a third of the CLI's import time), pydantic-settings (the operator's and the API's settings
# only: the jobs settings are a plain reader), prometheus-client (only when PUSHGATEWAY_URL is set), the HTTP
# API's FastAPI / uvicorn / limits (`api` only), Rich and pydantic (other commands; Rich also draws `run`'s progress
# bar, on a terminal only), the other commands' modules, and Click (Typer has its own).
HEAVY = (
    "click",
    "rich",
    "pydantic",
    "pydantic_core",
    "credit_jobs.entrypoints.cli.app",
    "credit_jobs.entrypoints.cli.ledger_commands",
    "credit_jobs.entrypoints.cli.ops_commands",
    "credit_operator.commands",
    "kubernetes",
    "kopf",
    "alembic",
    "credit_jobs.adapters.tables",
    "pydantic_settings",
    "prometheus_client",
    "fastapi",
    "starlette",
    "uvicorn",
    "limits",
)

HEAD = schema_migrations.head_revision()  # the newest migration

# `credit-jobs run expire-credits` through the console script's own `main`, then the heavy packages it loaded.
_RUN_AND_REPORT = """
import json, sys
from credit_jobs.entrypoints.cli import main
code = main(["run", "expire-credits"])
print(json.dumps({"code": code, "loaded": sorted(set(sys.argv[1:]) & set(sys.modules))}))
"""


def test_credit_jobs_run_imports_no_kubernetes_kopf_alembic_orm_models_settings_library_or_prometheus(
    database_url: str,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT, *HEAVY],
        env=cli_env(database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "loaded": []}, done.stderr[-2000:]


def test_the_probe_sees_a_heavy_import_when_there_is_one(database_url: str) -> None:
    """The check above can fail: `db upgrade` does load Alembic (and, through the whole Typer app, the other
    commands' modules and Rich), and the same probe reports it."""
    probe = _RUN_AND_REPORT.replace('["run", "expire-credits"]', '["db", "upgrade"]')
    done = subprocess.run(
        [sys.executable, "-c", probe, *HEAVY],
        env=cli_env(database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    assert {
        "alembic",
        "credit_jobs.adapters.tables",
        "credit_jobs.entrypoints.cli.app",
        "credit_jobs.entrypoints.cli.ledger_commands",
        "rich",
    } <= set(report["loaded"])


def test_the_static_head_is_alembics_head() -> None:
    alembic_head = ScriptDirectory.from_config(schema_migrations.alembic_config()).get_current_head()
    assert schema_migrations.head_revision() == alembic_head


def test_the_one_query_revision_is_alembics_revision(database_url: str) -> None:
    engine = database.create_engine(libpq_url(database_url))
    try:
        with engine.connect() as conn:
            expected = MigrationContext.configure(conn).get_current_revision()
        assert schema_migrations.current_revision(engine) == expected == schema_migrations.head_revision()
        database.verify_schema(engine)  # current: no error

        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0005'"))
        with pytest.raises(
            ConfigError, match=rf"at revision 0005, this version needs {HEAD}: run `credit-jobs db upgrade`"
        ):
            database.verify_schema(engine)

        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE alembic_version"))
        assert schema_migrations.current_revision(engine) is None
        with pytest.raises(ConfigError, match=rf"at revision none, this version needs {HEAD}"):
            database.verify_schema(engine)
    finally:
        engine.dispose()


def test_an_unmigrated_database_exits_2_before_writing(database_url: str) -> None:
    """A run on a database whose schema is behind refuses with one line and exit 2, and writes no audit row."""
    engine = database.create_engine(libpq_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0005'"))
        done = cli_process.run(["run", "expire-credits"], cli_process.cli_env(database_url))
        with engine.connect() as conn:
            runs = conn.execute(sa.text("SELECT count(*) FROM job_runs")).scalar_one()
    finally:
        engine.dispose()
    assert done.returncode == 2, done.stderr
    assert f"schema is at revision 0005, this version needs {HEAD}" in done.stderr
    assert runs == 0


# --- the run command's app and the whole CLI: one command --------------------------------------------------------

# The whole Typer app's own `main`, as a process: what `credit-jobs` runs for every line but a `run` line.
_WHOLE_APP_MAIN = "import sys; from credit_jobs.entrypoints.cli.app import main; sys.exit(main(sys.argv[1:]))"
_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"

# `run` lines: refused or run by the run code, help, and usage errors with Typer's messages.
RUN_LINES = {
    "an unknown usecase": ["run", "no-such-usecase"],
    "a batch size out of range": ["run", "expire-credits", "--batch-size", "0"],
    "a shard out of range": ["run", "expire-credits", "--shard", "3/2"],
    "a bad grant family": ["run", "distribute-credits", "--grant-family", "Not A Family!"],
    "a bad period key": ["run", "expire-credits", "--period-key", "not-a-key"],
    "an unreachable database": ["run", "expire-credits", "--database-url", _UNREACHABLE],
    "a dry run": ["run", "expire-credits", "--dry-run", "--batch-size=50"],
    "help": ["run", "--help"],
    "no usecase": ["run"],
    "an unknown option": ["run", "expire-credits", "--bogus"],
    "a batch size that is not a number": ["run", "expire-credits", "--batch-size", "ten"],
    "a flag given a value": ["run", "expire-credits", "--dry-run=yes"],
}


def _answer(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """What a person or a pod sees of a run: exit code, stdout, the one-line messages and the log events (run ids
    masked: each run has its own)."""
    return {
        "exit": done.returncode,
        "out": _RUN_ID.sub("<run id>", done.stdout),
        "messages": [_RUN_ID.sub("<run id>", line) for line in cli_process.error_lines(done.stderr)],
        "events": [record["event"] for record in cli_process.log_lines(done.stderr)],
    }


def _both(args: list[str], env: dict[str, str]) -> tuple[dict[str, object], dict[str, object]]:
    """The console script (the run command's app for a `run` line) and the whole app's `main`, on the same line."""
    console_script = cli_process.run(args, env)
    whole_app = subprocess.run(
        [sys.executable, "-c", _WHOLE_APP_MAIN, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return _answer(console_script), _answer(whole_app)


@pytest.mark.parametrize("args", RUN_LINES.values(), ids=RUN_LINES.keys())
def test_the_run_app_answers_a_run_line_as_the_whole_cli_does(database_url: str, args: list[str]) -> None:
    ours, whole = _both(args, cli_env(database_url))
    assert ours == whole
    assert ours["exit"] in (0, 1, 2)
    assert ours["messages"] or ours["out"]  # each line has something to compare


def test_a_bad_setting_is_refused_alike_on_both_paths(database_url: str) -> None:
    ours, whole = _both(["run", "expire-credits"], cli_env(database_url, CREDITJOBS_BATCH_SIZE="lots"))
    assert ours == whole
    assert ours["exit"] == 2
    assert ours["messages"] == [
        "credit-jobs: error: CREDITJOBS_BATCH_SIZE='lots' is not a whole number: use 1..100000 (default 5000)"
    ]
