"""The single-run guard (invariant 6): a PostgreSQL *session* advisory lock per (job, period key, shard).

The lock lives on a dedicated connection held for the whole run, so it dies with its holder: when a pod is
SIGKILLed or its node vanishes, the server drops the session and the lock at once, and the Kubernetes retry takes
over instead of finding the period "held" and exiting 0 (which would silently lose the period). A heartbeat on the
same connection updates the audit row (`job_runs.heartbeat_at`, for humans and `runs list`) and notices when the
connection itself is gone, so the run stops between chunks rather than carrying on unguarded.

Needs a session-mode connection: behind a transaction-pooling proxy (PgBouncer `pool_mode=transaction`) session
locks are meaningless — point DATABASE_URL at PostgreSQL or a session-mode pool.
"""

from __future__ import annotations

import contextlib
import threading
import uuid

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError

from credit_jobs.domain.errors import RunFailed

log = structlog.get_logger()


def guard_key(job: str, period_key: str, shard: int) -> str:
    return f"credit-jobs:{job}:{period_key}:{shard}"


class RunGuard:
    """Try-lock, heartbeat, release. Not re-entrant; one per run."""

    def __init__(self, engine: sa.Engine, key: str, *, heartbeat_seconds: float = 10.0) -> None:
        self._engine = engine
        self.key = key
        self._heartbeat_seconds = heartbeat_seconds
        self._conn: sa.Connection | None = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        got = conn.execute(
            sa.text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"), {"key": self.key}
        ).scalar_one()
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def start_heartbeat(self, run_id: uuid.UUID) -> None:
        self._thread = threading.Thread(target=self._beat, args=(run_id,), name="run-guard-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, run_id: uuid.UUID) -> None:
        assert self._conn is not None
        while not self._stop.wait(self._heartbeat_seconds):
            try:
                self._conn.execute(
                    sa.text("UPDATE job_runs SET heartbeat_at = now() WHERE run_id = :run_id"),
                    {"run_id": run_id},
                )
            except SQLAlchemyError as exc:
                self._lost.set()  # first: whatever happens while reporting it, the run must stop
                log.error("run.guard_lost", reason=str(getattr(exc, "orig", exc)).splitlines()[0])
                return

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        """Raise RunFailed if the guard's session is gone (called between chunks)."""
        if self._lost.is_set():
            raise RunFailed("lost the run guard: the database session holding it ended; stopping before the next chunk")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None:
            # A lost session has already dropped the lock, and its connection refuses use until rolled back
            # (SQLAlchemy's PendingRollbackError is not a DBAPIError): any database error here means "already gone".
            with contextlib.suppress(SQLAlchemyError):
                if not self._lost.is_set():
                    self._conn.execute(
                        sa.text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), {"key": self.key}
                    )
            with contextlib.suppress(SQLAlchemyError):
                self._conn.close()
            self._conn = None
