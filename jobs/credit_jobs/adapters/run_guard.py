"""Run guard: one running run per (job, period key, shard), held by an open transaction.

The guard is a PostgreSQL *transaction* advisory lock (invariant 6), held by a transaction left open on a dedicated
connection for the whole run, so it dies with its holder. `RunGuard` says why a transaction and what it costs.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError

from credit_jobs.domain.errors import ConfigError, RunFailed

log = structlog.get_logger()

STALE_HEARTBEATS = 3  # a holder silent for this many heartbeat intervals is not live

_LOCK = "hashtextextended(:key, 0)"

# pg_locks shows an advisory bigint key as (classid, objid) = (high, low) 32 bits, objsubid 1.
_HOLDER = f"""
SELECT a.pid, a.state, extract(epoch FROM clock_timestamp() - a.state_change) AS silent_s
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = ({_LOCK} >> 32) & 4294967295 AND l.objid::bigint = {_LOCK} & 4294967295
"""


def guard_key(job: str, period_key: str, shard: int) -> str:
    return f"credit-jobs:{job}:{period_key}:{shard}"


def grant_period_key(grant_family: str, period_key: str) -> str:
    return f"credit-jobs-grants:{grant_family}:{period_key}"


@dataclass(frozen=True)
class PeriodLock:
    """The (grant family, period) a run holds besides its own guard, shared or exclusive.

    A run may hold its (grant family, period) — `grant_period_key` — in the same transaction as its guard: shared by
    every distribution of the period (any job name, any shard), exclusive by a rollback or an import.
    `RunGuard.try_acquire` takes both or neither; `RunGuard.conflict` then says which one was taken by someone else."""

    key: str
    exclusive: bool


class RunGuard:
    """Try-lock, heartbeat, release. Not re-entrant; one per run.

    Why a transaction: it works the same directly against PostgreSQL, through a session-mode pool, and through a
    transaction-pooling proxy (PgBouncer `pool_mode=transaction`), which pins a server connection to a client for as
    long as its transaction is open. A session lock behind such a proxy is taken on one server connection and
    "released" on another, so it leaks and every later run of the period skips forever. When the holder dies (SIGKILL,
    OOM, node loss) its connection closes, the server (or the proxy, which closes a server connection whose client
    vanished mid-transaction) aborts the transaction, and the lock goes with it: the Kubernetes retry takes over at
    once.

    Heartbeat (`start_heartbeat`): every `heartbeat_seconds` a thread asks the guard's connection whether it is still
    held, as `check` does (one statement at a time on that connection), and updates `job_runs.heartbeat_at` in its
    own short transaction on another connection (for `runs list` and humans).

    Costs, measured in tests/integration/runs/test_guard_pgbouncer.py and documented in docs/env-and-ops.md: the
    guard's transaction writes nothing and keeps no snapshot between statements (no xid, `backend_xmin` NULL), so it
    holds back no vacuum; it holds no relation locks, so it blocks no DDL; it counts as *idle in transaction*, so a
    server with `idle_in_transaction_session_timeout` needs a heartbeat well below it (a run refuses, exit 2, when the
    heartbeat is more than half of it)."""

    def __init__(
        self, engine: sa.Engine, key: str, *, heartbeat_seconds: float = 10.0, period_lock: PeriodLock | None = None
    ) -> None:
        self._engine = engine
        self.key = key
        self.period_lock = period_lock
        self.conflict: str | None = None  # after a False try_acquire: "run" (our guard) or "period" (the period lock)
        self._heartbeat_seconds = heartbeat_seconds
        self._conn: sa.Connection | None = None
        self._backend_pid: int | None = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._using = threading.Lock()  # the guard's connection: one statement at a time (heartbeat or check)
        self._thread: threading.Thread | None = None
        self.beats = 0  # heartbeats that reached the guard's transaction (tests and diagnostics)

    @property
    def backend_pid(self) -> int | None:
        """The server process holding the guard's transaction (for tests and diagnostics)."""
        return self._backend_pid

    def try_acquire(self) -> bool:
        """Take the lock in a transaction left open. False: a live run holds it. Raises RunFailed when the holder
        looks dead (no heartbeat), ConfigError when the server would kill the guard's idle transaction.

        A run is reported "running elsewhere" only for a live holder: when the try-lock fails, the holding backend's
        last activity is read from pg_stat_activity; a holder silent for more than 3 heartbeats (`STALE_HEARTBEATS`: a
        hung pod, a half-open connection) makes the run fail with exit 1 (retried) instead of being skipped with
        exit 0."""
        conn = self._engine.connect()  # the transaction begins here and stays open until release()
        try:
            row = conn.execute(
                sa.text(
                    f"SELECT pg_try_advisory_xact_lock({_LOCK}) AS got, pg_backend_pid() AS pid, "
                    "extract(epoch FROM current_setting('idle_in_transaction_session_timeout')::interval) AS idle_s"
                ),
                {"key": self.key},
            ).one()
            if not row.got:
                self._raise_unless_holder_live(conn)
                conn.close()
                self.conflict = "run"
                return False
            if self.period_lock is not None and not self._take_period_lock(conn, self.period_lock):
                conn.close()  # ends the transaction: our own guard goes with it
                self.conflict = "period"
                return False
            idle_limit = float(row.idle_s)
            if idle_limit and self._heartbeat_seconds * 2 > idle_limit:
                raise ConfigError(
                    f"idle_in_transaction_session_timeout is {idle_limit:g} s (the server's, or "
                    f"CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS) and the run guard's heartbeat is every "
                    f"{self._heartbeat_seconds:g} s: the guard's open transaction would be killed mid-run; set "
                    f"CREDITJOBS_HEARTBEAT_SECONDS to at most {idle_limit / 2:g} (half the timeout)"
                )
        except BaseException:
            conn.close()
            raise
        self._conn, self._backend_pid = conn, int(row.pid)
        return True

    @staticmethod
    def _take_period_lock(conn: sa.Connection, lock: PeriodLock) -> bool:
        function = "pg_try_advisory_xact_lock" if lock.exclusive else "pg_try_advisory_xact_lock_shared"
        return bool(conn.execute(sa.text(f"SELECT {function}({_LOCK})"), {"key": lock.key}).scalar_one())

    def _raise_unless_holder_live(self, conn: sa.Connection) -> None:
        conn.rollback()
        holder = conn.execute(sa.text(_HOLDER), {"key": self.key}).one_or_none()
        conn.rollback()
        if holder is None or holder.silent_s is None:
            return  # released meanwhile (a retry will take it), or another role's session we may not inspect
        limit = STALE_HEARTBEATS * self._heartbeat_seconds
        if holder.state != "active" and float(holder.silent_s) > limit:
            raise RunFailed(
                f"the run guard {self.key} is held by server process {holder.pid}, {holder.state} for "
                f"{float(holder.silent_s):.0f} s without a heartbeat (more than {limit:g} s): its run is hung or "
                f"its connection half-open; not skipping — a retry takes over once it is gone "
                f"(SELECT pg_terminate_backend({holder.pid}) ends it now)"
            )

    def start_heartbeat(self, run_id: uuid.UUID) -> None:
        self._thread = threading.Thread(target=self._beat, args=(run_id,), name="run-guard-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, run_id: uuid.UUID) -> None:
        while not self._stop.wait(self._heartbeat_seconds):
            if not self._still_held():
                return
            self.beats += 1
            try:  # for humans and `runs list`: its own short transaction on another connection
                with self._engine.begin() as conn:
                    conn.execute(
                        sa.text("UPDATE job_runs SET heartbeat_at = now() WHERE run_id = :run_id"), {"run_id": run_id}
                    )
            except SQLAlchemyError as exc:  # the guard itself is fine; the next chunk will meet a real outage
                log.warning("run.heartbeat_not_recorded", reason=str(getattr(exc, "orig", exc)).splitlines()[0])

    def _still_held(self) -> bool:
        """Ask the guard's own transaction (never committed) whether it is still there: False, and lost, if its
        session ended or moved (a proxy that does not pin transactions)."""
        if self._lost.is_set():
            return False
        assert self._conn is not None
        with self._using:
            try:
                pid = self._conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            except SQLAlchemyError as exc:
                self._lost.set()  # first: whatever happens while reporting it, the run must stop
                log.error("run.guard_lost", reason=str(getattr(exc, "orig", exc)).splitlines()[0])
                return False
        if pid != self._backend_pid:
            self._lost.set()
            log.error("run.guard_lost", reason=f"guard transaction moved from backend {self._backend_pid} to {pid}")
            return False
        return True

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        """Raise RunFailed if the guard's session is gone — asked of the session itself, one round trip, before
        every chunk and before a run records success: a run never commits a chunk, or calls itself succeeded, after
        its guard is gone (a successor may hold the period by then).

        The round trip is `SELECT pg_backend_pid()` on the guard's connection, without committing: a dead connection,
        or a transaction moved to another backend, stops the run before its next chunk, not at the next heartbeat."""
        if self._conn is not None and not self._still_held():
            raise RunFailed("lost the run guard: the database session holding it ended; stopping before the next chunk")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():  # stuck on a dead network: never touch its connection from two threads
                return
        if self._conn is not None:
            # Ending the transaction releases the lock. A lost session has already dropped it, and its connection
            # refuses use until rolled back (PendingRollbackError is no DBAPIError): any error means "already gone".
            with contextlib.suppress(SQLAlchemyError):
                self._conn.rollback()
            with contextlib.suppress(SQLAlchemyError):
                self._conn.close()
            self._conn = None
