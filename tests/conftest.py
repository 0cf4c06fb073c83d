"""Session-wide fixtures: one embedded PostgreSQL per test session, one fresh migrated database per test.

A template database is migrated once (Alembic, exactly as `credit-jobs db upgrade` does); each test gets
`CREATE DATABASE … TEMPLATE` of it (≈ 20 ms) and it is dropped afterwards. Servers are stopped at session end.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from credit_jobs.adapters.embedded_database import EmbeddedPostgres, start_embedded

TEMPLATE_DB = "credit_jobs_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    server = start_embedded()
    try:
        yield server
    finally:
        server.stop()


def _admin(server: EmbeddedPostgres) -> sa.Engine:
    return sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@pytest.fixture(scope="session")
def migrated_template(pg_server: EmbeddedPostgres) -> str:
    from credit_jobs.adapters.schema_migrations import upgrade_schema

    admin = _admin(pg_server)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{TEMPLATE_DB}"'))
    admin.dispose()
    upgrade_schema(pg_server.url(TEMPLATE_DB))
    return TEMPLATE_DB


@pytest.fixture
def database_url(pg_server: EmbeddedPostgres, migrated_template: str) -> Iterator[str]:
    """A SQLAlchemy URL (postgresql+psycopg) of a fresh, migrated, empty database."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = _admin(pg_server)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"'))
    try:
        yield pg_server.url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
