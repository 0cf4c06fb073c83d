"""The database's clock: the one "now" a run uses for expiry, grant times, cleanup and its audit row.

Called once per run by the run lifecycle (`lifecycle.run_lifecycle`), right after the connection is verified. Using
PostgreSQL's clock means every pod, CronJob and host application judges "expired" against the same time, however
far a node's clock has drifted.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa


def database_now(engine: sa.Engine) -> datetime:
    """PostgreSQL's `now()` (timezone-aware, UTC-based)."""
    with engine.connect() as conn:
        value: datetime = conn.execute(sa.text("SELECT now()")).scalar_one()
    return value
