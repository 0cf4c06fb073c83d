"""Schema migrations (Alembic) run programmatically, and the start-up check that the schema is current.

`upgrade_schema(url)` upgrades to the head revision; a PostgreSQL advisory lock serialises concurrent upgrades (two Helm
hooks, or a CLI and a hook). Only it imports Alembic. It needs a session of its own (PostgreSQL directly, or PgBouncer
in session mode): the lock is held across transactions.

Every run checks the schema first (`database.verify_schema`): `head_revision()` reads the revision graph from the
versions directory's source text once (no Alembic import: it costs a job pod ~0.3 s of start-up) and
`current_revision(engine)` is one query on `alembic_version`. `tests/integration/schema/test_schema.py` proves
both agree with Alembic's own answers.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import ProgrammingError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
_UPGRADE_LOCK_KEY = 0x6372656469746A6F  # "creditjo"
# The two assignments every revision file makes at top level (Alembic's template; reviewed by hand).
_REVISION = re.compile(r"^revision\s*(?::\s*str\s*)?=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN_REVISION = re.compile(r"^down_revision\s*(?::[^=]+)?=\s*(None|['\"]([^'\"]+)['\"])", re.M)
_UNDEFINED_TABLE = "42P01"


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@functools.cache
def head_revision() -> str | None:
    """The single head of the revision graph in `versions/`: the revision no other revision builds on.

    Read from the files' text, not by importing Alembic; a graph with several heads (a merge left undone) is a
    packaging error, raised here rather than silently picking one.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(VERSIONS_DIR.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if revision is None or down is None:
            continue  # not a revision file (e.g. __init__.py)
        revisions.add(revision.group(1))
        if down.group(2):
            parents.add(down.group(2))
    heads = sorted(revisions - parents)
    if len(heads) > 1:
        raise RuntimeError(f"migrations in {VERSIONS_DIR} have several heads {heads}: merge them")
    return heads[0] if heads else None


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at (one query), or None when it was never migrated."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    except ProgrammingError as exc:
        if getattr(getattr(exc, "orig", None), "sqlstate", None) == _UNDEFINED_TABLE:
            return None
        raise
    if len(rows) > 1:  # a branched history: never the single head this code expects
        return ",".join(sorted(rows))
    return rows[0] if rows else None


def upgrade_schema(url_or_engine: str | sa.Engine, revision: str = "head") -> str | None:
    """Upgrade the database to `revision`; returns the revision it is at afterwards."""
    from alembic import command

    engine = sa.create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    config = alembic_config()
    with engine.connect() as conn:
        # A session's lock, not a transaction's: Alembic begins and commits the migrations' transaction itself, and
        # a revision that builds an index CONCURRENTLY (0011) commits it early and runs that outside any transaction.
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _UPGRADE_LOCK_KEY})
        conn.commit()
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        finally:
            conn.rollback()  # a failed revision's transaction; a no-op after success
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _UPGRADE_LOCK_KEY})
            conn.commit()
    revision_now = current_revision(engine)
    if isinstance(url_or_engine, str):
        engine.dispose()
    return revision_now
