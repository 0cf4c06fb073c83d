"""Database connections: URL checks with clear errors, the engine, and the schema-version check.

Called by the CLI (and through it by every CronJob container). A malformed or unreachable DATABASE_URL is a
configuration error (exit 2) reported in one line with the password hidden; losing the database *during* a run
is a run failure (exit 1), raised by the usecases as `RunFailed`.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from credit_jobs.adapters import schema_migrations
from credit_jobs.domain.errors import ConfigError

CONNECT_TIMEOUT_SECONDS = 5


def normalize_url(url: str) -> sa.URL:
    """Accept libpq-style `postgresql://` / `postgres://` URLs and SQLAlchemy's; always use psycopg 3."""
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise ConfigError("malformed DATABASE_URL: expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(f"DATABASE_URL uses {parsed.drivername!r}: only PostgreSQL is supported (postgresql://…)")
    return parsed.set(drivername="postgresql+psycopg")


def redact(url: sa.URL | str) -> str:
    parsed = url if isinstance(url, sa.URL) else normalize_url(url)
    return parsed.render_as_string(hide_password=True)


def first_line(error: BaseException) -> str:
    """The first meaningful line of a driver error (psycopg's messages run over several lines)."""
    original = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def create_engine(url: str, *, pool_size: int = 5) -> sa.Engine:
    parsed = normalize_url(url)
    return sa.create_engine(
        parsed,
        pool_size=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "credit-jobs"},
    )


def verify_connection(engine: sa.Engine) -> None:
    """Connect once; an unreachable server or bad credentials become a ConfigError naming the target."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except DBAPIError as exc:
        raise ConfigError(
            f"cannot connect to the database at {redact(engine.url)}: {first_line(exc)} "
            "(check DATABASE_URL and that the server is reachable)"
        ) from None


def verify_schema(engine: sa.Engine) -> None:
    """The schema must be at the head revision this code expects."""
    head = schema_migrations.head_revision()
    current = schema_migrations.current_revision(engine)
    if current != head:
        raise ConfigError(
            f"the database schema is at revision {current or 'none'}, this version needs {head}: "
            "run `credit-jobs db upgrade` (the Helm chart's migration hook does this on install/upgrade)"
        )
