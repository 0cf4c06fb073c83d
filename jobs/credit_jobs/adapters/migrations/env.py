"""Alembic environment: runs migrations on the connection handed over by `schema_migrations.upgrade_schema`."""

from __future__ import annotations

from alembic import context

from credit_jobs.adapters.tables import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:  # pragma: no cover - only via the alembic CLI, which this project does not use
        raise RuntimeError("run migrations through `credit-jobs db upgrade`")
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
