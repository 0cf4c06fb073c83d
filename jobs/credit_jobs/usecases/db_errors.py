"""How usecases classify database errors met while working through chunks.

Losing the connection (server stopped, network gone, guard session dropped) fails the run (`RunFailed`, exit 1;
the rerun resumes, since every write is idempotent). A constraint or data error in one chunk fails that chunk's
items only: it is rolled back, counted as `failed`, and the run moves on, ending as failed.
"""

from __future__ import annotations

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from credit_jobs.adapters.database import first_line
from credit_jobs.domain.errors import RunFailed


def is_item_error(error: DBAPIError) -> bool:
    return isinstance(error, IntegrityError | DataError) and not error.connection_invalidated


def run_failed(error: DBAPIError, where: str) -> RunFailed:
    return RunFailed(f"database error {where}: {first_line(error)}")
