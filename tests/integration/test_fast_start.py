"""A job pod starts fast: `credit-jobs run` checks the schema with one query (no Alembic) and never imports the
Kubernetes client, Kopf, Alembic or the ORM models — only `operator`, `trigger` and `db upgrade` need them.

The start-up time itself is measured by `bench/bench_startup.py` (no timed assertion here); this file proves the
two things that make it fast, against a real database and a real process, and that the Alembic-free schema check
gives Alembic's answers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from credit_jobs.adapters import database, schema_migrations
from credit_jobs.domain.errors import ConfigError
from tests import cli_process
from tests.cli_process import cli_env, libpq_url

# The Kubernetes client and Kopf (operator/trigger only), Alembic (db upgrade only), the ORM models (migrations
# and tests only; about a third of the CLI's import time), pydantic-settings (the operator's and the API's settings
# only: the jobs settings are a plain reader), prometheus-client (only when PUSHGATEWAY_URL is set) and the HTTP
# API's FastAPI / uvicorn / limits (`api` only).
HEAVY = (
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
    """The check above can fail: `db upgrade` does load Alembic, and the same probe reports it."""
    probe = _RUN_AND_REPORT.replace('["run", "expire-credits"]', '["db", "upgrade"]')
    done = subprocess.run(
        [sys.executable, "-c", probe, *HEAVY],
        env=cli_env(database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "code": 0,
        "loaded": ["alembic", "credit_jobs.adapters.tables"],
    }, done.stderr


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
