"""Schema migrations (Alembic) run programmatically: `credit-jobs db upgrade`, the Helm pre-install/pre-upgrade
hook Job, and the test suite's template database all call `upgrade_schema(url)`.

A PostgreSQL advisory lock serialises concurrent upgrades (two Helm hooks, or a CLI and a hook).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_UPGRADE_LOCK_KEY = 0x6372656469746A6F  # "creditjo"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_schema(url_or_engine: str | sa.Engine, revision: str = "head") -> str | None:
    """Upgrade the database to `revision`; returns the revision it is at afterwards."""
    engine = sa.create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    config = alembic_config()
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _UPGRADE_LOCK_KEY})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    revision_now = current_revision(engine)
    if isinstance(url_or_engine, str):
        engine.dispose()
    return revision_now
