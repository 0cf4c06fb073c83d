"""How long operational history is kept: the retention of `purge-retention` (docs/credits-lifecycle.md, "Retention").

Pure data and checks of `CREDITJOBS_RETENTION_DAYS` and `CREDITJOBS_REQUEST_REPLAY_DAYS`. Only history is ever purged —
audit rows of finished runs, rows of stored files deleted long ago, request-id claims past their replay window — never a
grant or a ledger entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from credit_jobs.domain.errors import ConfigError

DEFAULT_RETENTION_DAYS = 400  # job_runs and deleted stored_files rows: a year of audit history, plus a month
DEFAULT_REQUEST_REPLAY_DAYS = 90  # a retried request id replays for this long, then it may apply again
MAX_RETENTION_DAYS = 36_500


@dataclass(frozen=True)
class RetentionPolicy:
    retention_days: int = DEFAULT_RETENTION_DAYS
    request_replay_days: int = DEFAULT_REQUEST_REPLAY_DAYS

    def history_cutoff(self, now: datetime) -> datetime:
        """Finished runs started, and stored files deleted, before this are purged."""
        return now - timedelta(days=self.retention_days)

    def request_cutoff(self, now: datetime) -> datetime:
        """Processed request ids claimed before this are purged (a retry then applies again)."""
        return now - timedelta(days=self.request_replay_days)


def validate_days(value: int, *, source: str) -> int:
    if not 1 <= value <= MAX_RETENTION_DAYS:
        raise ConfigError(f"{source}={value} is out of range: use 1..{MAX_RETENTION_DAYS} days")
    return value
