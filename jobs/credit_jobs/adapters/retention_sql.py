"""Statements of `purge-retention`: count and delete, a chunk at a time, the history rows past their retention.

Each statement runs in the caller's transaction. Three targets, each walked by keyset on (its time column, its primary
key) so a run reads each row once:
- `job_runs` started before the cutoff and no longer running (a *running* row is never purged: `check` reports it);
- `stored_files` rows deleted (`deleted_at`) before the cutoff: the object is long gone, the row is history;
- `credit_requests` claims made before the replay cutoff that carry their result (processed).
Rows are picked `FOR UPDATE SKIP LOCKED` (an overlapping run takes others) and deleted by primary key. No statement
here names a grant, entry or account table: purging never touches the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class Target:
    name: str  # the table
    time_column: str
    key_column: str
    condition: str  # besides `time_column < :cutoff`


TARGETS = (
    Target("job_runs", "started_at", "run_id", "status <> 'running'"),
    Target("stored_files", "deleted_at", "file_id", "deleted_at IS NOT NULL"),
    Target("credit_requests", "created_at", "request_id", "result IS NOT NULL"),
)

Position = tuple[datetime, Any] | None  # None: before every row


@dataclass(frozen=True)
class PurgeChunk:
    last: Position
    picked: int
    deleted: int


def _where(target: Target, after: Position) -> str:
    keyset = "" if after is None else f" AND ({target.time_column}, {target.key_column}) > (:after_time, :after_key)"
    return f"WHERE {target.time_column} < :cutoff AND {target.condition}{keyset}"


def _params(cutoff: datetime, after: Position) -> dict[str, Any]:
    params: dict[str, Any] = {"cutoff": cutoff}
    if after is not None:
        params.update(after_time=after[0], after_key=after[1])
    return params


def count_due(conn: sa.Connection, target: Target, *, cutoff: datetime) -> int:
    sql = f"SELECT count(*) FROM {target.name} {_where(target, None)}"
    return int(conn.execute(sa.text(sql), _params(cutoff, None)).scalar_one())


def purge_chunk(conn: sa.Connection, target: Target, *, cutoff: datetime, after: Position, batch: int) -> PurgeChunk:
    t = target
    sql = f"""
    WITH picked AS (
        SELECT {t.time_column} AS at, {t.key_column} AS key FROM {t.name}
        {_where(t, after)}
        ORDER BY {t.time_column}, {t.key_column}
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    ), deleted AS (
        DELETE FROM {t.name} WHERE {t.key_column} = ANY(ARRAY(SELECT key FROM picked)) RETURNING 1
    ), last AS (
        SELECT at, key FROM picked ORDER BY at DESC, key DESC LIMIT 1
    )
    SELECT (SELECT count(*) FROM picked) AS picked, (SELECT count(*) FROM deleted) AS deleted,
           (SELECT at FROM last) AS last_at, (SELECT key FROM last) AS last_key
    """
    row = conn.execute(sa.text(sql), {**_params(cutoff, after), "batch": batch}).one()
    last = None if row.last_at is None else (row.last_at, row.last_key)
    return PurgeChunk(last, int(row.picked), int(row.deleted))


def first_due(conn: sa.Connection, target: Target, *, cutoff: datetime, after: Position) -> Position:
    """The one row a chunk of size 1 after `after` covers (names a row whose delete failed)."""
    t = target
    sql = (
        f"SELECT {t.time_column} AS at, {t.key_column} AS key FROM {t.name} {_where(t, after)} "
        f"ORDER BY {t.time_column}, {t.key_column} LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    row = conn.execute(sa.text(sql), _params(cutoff, after)).one_or_none()
    return None if row is None else (row.at, row.key)
