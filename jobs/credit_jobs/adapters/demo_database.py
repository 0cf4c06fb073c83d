"""The statements `credit-jobs demo` needs beyond the usecases: a fresh database of its own on the embedded server,
and the two figures its summary table states.
"""

from __future__ import annotations

import sqlalchemy as sa

from credit_jobs.adapters import database


def recreate_database(server_url: str, name: str) -> None:
    """Drop database `name` (closing its sessions) and create it empty, on the server `server_url` points at."""
    admin = database.create_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()


def eligible_users(engine: sa.Engine) -> int:
    """How many users the eligibility source holds (the demo's title states the data its numbers are about)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM credit_eligibility")).scalar_one())


def total_balance(engine: sa.Engine) -> int:
    """The sum of every account's balance."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT coalesce(sum(balance), 0) FROM credit_accounts")).scalar_one())
