"""Database connections: URL checks with clear errors, the engine and its pool, per-transaction timeouts, the schema
check.

Every engine works through a transaction-pooling proxy (PgBouncer `pool_mode=transaction`), and every connect failure
is one line with the password hidden, either a retry's to fix (exit 1) or a person's (exit 2). `create_engine`,
`verify_connection`, `SessionTimeouts` and `NetworkTimeout` give the details.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from credit_jobs.adapters import schema_migrations
from credit_jobs.domain.errors import ConfigError, RunFailed

CONNECT_TIMEOUT_SECONDS = 5

# Defaults for job runs. A chunk statement takes ~0.1 s for 5000 users (docs/performance.md) and the run's largest
# read (counting 1M users) well under a second, so 5 minutes only ever stops a runaway statement — and stays far
# below the CronJob's activeDeadlineSeconds (900 s for expire-credits, 1800 s default), leaving room for the retry.
# A row lock is normally held for one other chunk's transaction (under a second): 30 s of waiting means something
# else holds it (a stuck transaction, a manual session) — fail the chunk, exit 1, let the Job's retry try again.
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 300.0
DEFAULT_LOCK_TIMEOUT_SECONDS = 30.0
# A transaction of this project is idle between two of its statements for milliseconds (a chunk's statements follow
# each other; an API request's too); the run guard's transaction for one heartbeat (10 s) at most. A minute of
# silence means the client is gone or stranded: the server ends the session and its row locks go with it.
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 60.0
# A connection whose peer does not answer for this long is dead (keepalive probes while waiting for an answer,
# tcp_user_timeout while data we sent is unacknowledged). Long statements are not affected: a server working on one
# still answers the probes.
DEFAULT_NETWORK_TIMEOUT_SECONDS = 30.0
MAX_NETWORK_TIMEOUT_SECONDS = 3_600
MAX_TIMEOUT_SECONDS = 86_400  # a day: anything longer is a typo (PostgreSQL's own limit is ~24.8 days)

# SQLSTATEs (and, for failures during connection start-up, where libpq gives no SQLSTATE, the server's and
# libpq's English messages) that a retry cannot fix.
_CONFIG_SQLSTATES = frozenset({"28000", "28P01", "3D000", "42501"})  # auth, unknown db, no CONNECT privilege
_CONFIG_MESSAGES = (
    "password authentication failed",
    "authentication failed",  # ident / peer / PAM / certificate / LDAP
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
    "does not exist",  # database "x" / role "x" does not exist
    "no password supplied",
    "permission denied for database",
    "invalid connection option",
    "invalid integer value",
    "invalid sslmode value",
    "invalid port number",
    'missing "=" after',
    "invalid uri",
    "no such database",  # PgBouncer: database not in its [databases]
    "no such user",  # PgBouncer: user not in its auth_file
    "server does not support ssl",
    "unsupported startup parameter",  # PgBouncer refuses e.g. `options` in the URL
)


def normalize_url(url: str) -> sa.URL:
    """Accept libpq-style `postgresql://` / `postgres://` URLs and SQLAlchemy's; always use psycopg 3."""
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError("malformed DATABASE_URL: expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME") from None
    if parsed.host and "@" in parsed.host:
        # The URL splits at the first `@`: the rest of the password became the host. Show none of it.
        raise ConfigError(
            "malformed DATABASE_URL: more than one '@' before the host — a password (or user) containing '@' must "
            "write it as %40 (percent-encode it: postgresql://USER:PASS%40WORD@HOST:PORT/DBNAME)"
        )
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(f"DATABASE_URL uses {parsed.drivername!r}: only PostgreSQL is supported (postgresql://…)")
    return parsed.set(drivername="postgresql+psycopg")


_MASK = "***"
# What each engine's URL looked like as the user wrote it (scheme included), password masked: errors show this.
_SHOWN_URLS: weakref.WeakKeyDictionary[sa.Engine, str] = weakref.WeakKeyDictionary()
# What each engine's connections are opened with (the URL's parts and `connect_args`) and its per-transaction
# timeouts: `connection_parameters` / `transaction_timeouts`, for a connection opened beside the engine.
_CONNECT_ARGS: weakref.WeakKeyDictionary[sa.Engine, dict[str, Any]] = weakref.WeakKeyDictionary()
_TIMEOUTS: weakref.WeakKeyDictionary[sa.Engine, SessionTimeouts] = weakref.WeakKeyDictionary()


def redact(url: sa.URL | str) -> str:
    """The URL for a message: the password masked wherever it was written (user info or `?password=`); a string
    keeps the scheme the user wrote (`postgres://`, `postgresql://`), not the driver name used internally."""
    parsed = url if isinstance(url, sa.URL) else normalize_url(url)
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": _MASK})
    text = parsed.render_as_string(hide_password=True).replace("password=%2A%2A%2A", f"password={_MASK}")
    if isinstance(url, str) and "://" in url:
        text = url.strip().split("://", 1)[0] + text[text.index("://") :]
    return text


def shown_url(engine: sa.Engine) -> str:
    """The engine's URL as its user wrote it, password masked (see `create_engine`)."""
    return _SHOWN_URLS.get(engine) or redact(engine.url)


def first_line(error: BaseException) -> str:
    """The first meaningful line of a driver error (psycopg's messages run over several lines); a lock or
    statement timeout also says which setting fired and what to do (the chunk was cancelled, a retry resumes)."""
    line = error_line(error)
    timeout = timed_out(error)
    if timeout == "lock":
        return (
            f"{line}: another session held a lock this run needs for longer than lock_timeout "
            "(CREDITJOBS_LOCK_TIMEOUT_SECONDS); find the blocker in pg_locks / pg_stat_activity, a retry resumes"
        )
    if timeout == "statement":
        return f"{line}: a statement ran longer than statement_timeout (CREDITJOBS_STATEMENT_TIMEOUT_SECONDS)"
    lowered = line.lower()
    if "timed out" in lowered and ("receive data" in lowered or "send data" in lowered):
        return (
            f"{line}: the database did not answer within the network timeout (CREDITJOBS_NETWORK_TIMEOUT_SECONDS): "
            "a partition or a half-open connection; the server ends the stranded session, a retry resumes"
        )
    if lowered == "connection timeout expired":  # a new connection mid-run (the pool replacing a dead one)
        return (
            f"{line}: the database accepted no connection within {CONNECT_TIMEOUT_SECONDS} s (a partition, or the "
            "server down); a retry resumes"
        )
    return line


def error_line(error: BaseException) -> str:
    """The driver's first line of an error, as is (`first_line` adds what a job run should do about a timeout)."""
    original = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def timed_out(error: BaseException) -> Literal["lock", "statement"] | None:
    """Which of the engine's timeouts cancelled the statement (`lock_timeout`: 55P03, `statement_timeout`: 57014),
    or None for any other error — an admin's cancel is 57014 too, and a NOWAIT lock 55P03, with other messages."""
    state, line = sqlstate(error), error_line(error)
    if state == "55P03" and "lock timeout" in line:
        return "lock"
    if state == "57014" and "statement timeout" in line:
        return "statement"
    return None


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a (wrapped) driver error, or None (libpq gives none for failures while connecting)."""
    original = getattr(error, "orig", None) or error
    state = getattr(original, "sqlstate", None)
    return state if isinstance(state, str) else None


@dataclass(frozen=True)
class SessionTimeouts:
    """statement_timeout / lock_timeout / idle_in_transaction_session_timeout for every transaction of an engine
    (seconds; 0 disables the first two, as in PostgreSQL, and leaves the third to the server's own setting).

    Set with `SET LOCAL` in every transaction rather than per session (`_apply_per_transaction`). On the server's side,
    `idle_in_transaction_session_timeout` ends the session of a client that went silent mid-transaction, releasing
    its row locks (CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS, 60 s)."""

    statement_seconds: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS
    lock_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS
    idle_in_transaction_seconds: float = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        for name, value in (
            ("CREDITJOBS_STATEMENT_TIMEOUT_SECONDS", self.statement_seconds),
            ("CREDITJOBS_LOCK_TIMEOUT_SECONDS", self.lock_seconds),
            ("CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", self.idle_in_transaction_seconds),
        ):
            if not math.isfinite(value) or not 0 <= value <= MAX_TIMEOUT_SECONDS:
                raise ConfigError(
                    f"{name}={value:g} is out of range: seconds from 0 (no timeout) to {MAX_TIMEOUT_SECONDS}"
                )

    def set_local_sql(self) -> str:
        """One statement that sets the timeouts for the current transaction only (`set_config(…, true)`)."""
        settings = {"statement_timeout": self.statement_seconds, "lock_timeout": self.lock_seconds}
        if self.idle_in_transaction_seconds:  # 0: not set here, the server's own setting applies
            settings["idle_in_transaction_session_timeout"] = self.idle_in_transaction_seconds
        return "SELECT " + ", ".join(
            f"set_config('{name}', '{round(seconds * 1000)}', true)" for name, seconds in settings.items()
        )


@dataclass(frozen=True)
class NetworkTimeout:
    """How long a connection may go without an answer from the server before it counts as dead (seconds; 0 leaves
    the kernel's defaults). Set as libpq's `keepalives*` and `tcp_user_timeout` on every connection: keepalive probes
    start after a third of it idle, every sixth, four unanswered end the connection (idle + 4 intervals ≈ the
    timeout); `tcp_user_timeout` bounds sent-but-unacknowledged data (and, on Linux, the probes) by the same time.
    A parameter written in DATABASE_URL (`?keepalives_idle=…`) wins over the one derived here.

    Every connection has this deadline on the network: a connection whose peer vanished (a partition, a node lost, a
    half-open socket) fails within CREDITJOBS_NETWORK_TIMEOUT_SECONDS (30 s) instead of the kernel's ~2 h 11 min."""

    seconds: float = DEFAULT_NETWORK_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if not math.isfinite(self.seconds) or not (
            self.seconds == 0 or 3 <= self.seconds <= MAX_NETWORK_TIMEOUT_SECONDS
        ):
            raise ConfigError(
                f"CREDITJOBS_NETWORK_TIMEOUT_SECONDS={self.seconds:g} is out of range: 0 (the kernel's defaults) or "
                f"3 to {MAX_NETWORK_TIMEOUT_SECONDS} seconds"
            )

    def libpq_parameters(self) -> dict[str, int]:
        if not self.seconds:
            return {}
        return {
            "keepalives": 1,
            "keepalives_idle": max(1, round(self.seconds / 3)),
            "keepalives_interval": max(1, round(self.seconds / 6)),
            "keepalives_count": 4,
            "tcp_user_timeout": round(self.seconds * 1000),
        }


@dataclass(frozen=True)
class PoolLimits:
    """An engine's connection pool: `size` connections kept open, up to `max_overflow` more opened on demand (and
    closed when returned), and how long a checkout waits for one when all are in use before it raises
    `sqlalchemy.exc.TimeoutError`. The defaults are SQLAlchemy's (5 + 10, 30 s): enough for a CLI command or a run."""

    size: int = 5
    max_overflow: int = 10
    timeout_seconds: float = 30.0

    @property
    def connections(self) -> int:
        """The most connections the engine holds at once."""
        return self.size + self.max_overflow

    @classmethod
    def for_threads(cls, threads: int, *, keep_open: int, timeout_seconds: float) -> PoolLimits:
        """Room for `threads` callers holding one connection each at once, so none of them waits for the pool;
        at most `keep_open` of them stay open between bursts (each replica's share of max_connections)."""
        size = min(keep_open, threads)
        return cls(size=size, max_overflow=threads - size, timeout_seconds=timeout_seconds)


def create_engine(
    url: str,
    *,
    pool: PoolLimits | None = None,
    timeouts: SessionTimeouts | None = None,
    network: NetworkTimeout | None = None,
) -> sa.Engine:
    """The engine every command uses; `timeouts` (job runs, API requests) are applied to every transaction it
    begins; `pool` sizes its connection pool (default: SQLAlchemy's); `network` bounds how long any of its
    connections waits for a silent server (default: 30 s).

    `prepare_threshold=None`: psycopg would otherwise prepare a statement after 5 executions, by a name that a
    transaction-pooling proxy hands to whichever server connection comes next (`prepared statement "_pg3_0"
    already exists`). The chunk statements are large and few, so planning each one costs nothing measurable.

    The engine works through a transaction-pooling proxy (PgBouncer `pool_mode=transaction`): psycopg's automatic
    prepared statements are off (above) and `statement_timeout` / `lock_timeout` /
    `idle_in_transaction_session_timeout` are set with `SET LOCAL` in every transaction rather than per session
    (`_apply_per_transaction`).
    """
    parsed = normalize_url(url)
    pool = pool or PoolLimits()
    network_parameters = {
        name: value
        for name, value in (network or NetworkTimeout()).libpq_parameters().items()
        if name not in parsed.query  # the URL's own libpq parameters win
    }
    connect_args = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": "credit-jobs",
        "prepare_threshold": None,
        **network_parameters,
    }
    engine = sa.create_engine(
        parsed,
        pool_size=pool.size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.timeout_seconds,
        pool_pre_ping=True,
        connect_args=connect_args,
    )
    _SHOWN_URLS[engine] = redact(url)
    _CONNECT_ARGS[engine] = {**engine.dialect.create_connect_args(engine.url)[1], **connect_args}
    if timeouts is not None:
        _TIMEOUTS[engine] = timeouts
        _apply_per_transaction(engine, timeouts)
    return engine


def connection_parameters(engine: sa.Engine) -> dict[str, Any]:
    """The keyword arguments of `psycopg.connect` for a connection like the engine's own (host, database, user,
    password, the URL's libpq parameters, the connect and network timeouts, no automatic prepared statements)."""
    return dict(_CONNECT_ARGS[engine])


def transaction_timeouts(engine: sa.Engine) -> SessionTimeouts | None:
    """The per-transaction timeouts the engine applies, or None."""
    return _TIMEOUTS.get(engine)


def _apply_per_transaction(engine: sa.Engine, timeouts: SessionTimeouts) -> None:
    """`SET LOCAL` the timeouts at the start of every transaction.

    Not the startup packet's `options=-c …`: PgBouncer refuses that parameter (or, with `ignore_startup_parameters
    = options`, silently drops it) in every pool mode. Not a session `SET` either: in transaction pooling the next
    transaction may run on another server connection, and the setting would leak to other clients of this one.
    `SET LOCAL` lives exactly as long as the transaction, wherever the proxy runs it.
    """
    sql = timeouts.set_local_sql()

    dbapi_error: Any = engine.dialect.loaded_dbapi.Error

    def on_begin(conn: sa.Connection) -> None:
        # The DBAPI connection, not `conn.execute`: SQLAlchemy is still beginning this transaction (re-entering it
        # would autobegin again). psycopg opens the transaction implicitly with this statement. SQLAlchemy does not
        # wrap errors raised in this event: wrap them, so callers see the DBAPIError they handle everywhere else.
        driver: Any = conn.connection.driver_connection
        if driver.autocommit:
            return
        try:
            driver.execute(sql)
        except dbapi_error as exc:
            lost = bool(driver.closed)
            if lost:  # as SQLAlchemy does for its own statements: the pool must not hand this connection out again
                conn.invalidate(exc)
            raise DBAPIError.instance(sql, None, exc, dbapi_error, connection_invalidated=lost) from exc

    sa.event.listen(engine, "begin", on_begin)


def verify_connection(engine: sa.Engine) -> None:
    """Connect once. A failure a retry can fix raises RunFailed (exit 1); bad configuration raises ConfigError (2).

    What a retry can fix — unreachable, timeout, DNS, server starting or shutting down, too many clients — is a run
    failure (`RunFailed`, exit 1, the Job's backoffLimit retries it); what only a person can fix — a malformed URL, an
    unknown database or role, a failed authentication, a bad connection option — is a configuration error (exit 2,
    the podFailurePolicy fails the Job at once; `is_config_error`). Both are one line with the password hidden."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except DBAPIError as exc:
        target = f"cannot connect to the database at {shown_url(engine)}: {error_line(exc)}"
        if is_config_error(exc):
            raise ConfigError(f"{target} (check DATABASE_URL: database, user, password, options)") from None
        raise RunFailed(f"{target} (the server may be down or unreachable; a retry may help)") from None


def is_config_error(error: BaseException) -> bool:
    """True when only a person can fix this connect failure (auth, unknown database, bad option); else retryable."""
    state = sqlstate(error)
    if state is not None:
        return state in _CONFIG_SQLSTATES or state.startswith("28")
    original = getattr(error, "orig", None) or error
    if type(original).__name__ == "ProgrammingError":  # psycopg refuses the conninfo itself
        return True
    text = str(original).lower()
    return any(message in text for message in _CONFIG_MESSAGES)


def verify_schema(engine: sa.Engine) -> None:
    """The schema must be at the head revision this code expects."""
    head = schema_migrations.head_revision()
    current = schema_migrations.current_revision(engine)
    if current != head:
        raise ConfigError(
            f"the database schema is at revision {current or 'none'}, this version needs {head}: "
            "run `credit-jobs db upgrade` (the Helm chart's migration hook does this on install/upgrade)"
        )
