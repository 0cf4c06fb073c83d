"""How usecases classify database errors met while working through chunks.

- An item error — a constraint or data error that is not a lost connection — belongs to the chunk's data: the
  chunk is rolled back and bisected until the offending items are isolated (`is_item_error`).
- A deadlock (40P01) or serialization failure (40001) belongs to the timing of overlapping runs: the chunk is
  retried as it was, a bounded number of times (`is_transient_conflict`).
- Anything else — losing the connection (server stopped, network gone, guard session dropped) — fails the run
  (`RunFailed`, exit 1; the rerun resumes, since every write is idempotent).
"""

from __future__ import annotations

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from credit_jobs.adapters.database import first_line
from credit_jobs.domain.errors import RunFailed

TRANSIENT_SQLSTATES = {"40P01": "deadlock", "40001": "serialization failure"}


def is_item_error(error: DBAPIError) -> bool:
    return isinstance(error, IntegrityError | DataError) and not error.connection_invalidated


def sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


def is_transient_conflict(error: DBAPIError) -> bool:
    return not error.connection_invalidated and sqlstate(error) in TRANSIENT_SQLSTATES


def run_failed(error: DBAPIError, where: str) -> RunFailed:
    return RunFailed(f"database error {where}: {first_line(error)}")
