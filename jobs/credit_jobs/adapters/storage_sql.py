"""Statements of `cleanup-storage` over `stored_files`: the due-file preview, the chunk pick, and marking results.

Each statement runs inside the caller's transaction. The shard of a file is its owner's (`user_id`), and an ownerless
file's (user_id NULL: a system export, an orphan after account deletion) is decided by its file id as text —
`coalesce(user_id, file_id::text)` — so every due file belongs to exactly one shard.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from credit_jobs.adapters.ledger_sql import shard_params, shard_predicate
from credit_jobs.domain.sharding import Shard

SHARD_KEY = "coalesce(user_id, CAST(file_id AS text))"

_DUE = "deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= :now"

_PICK = f"""
SELECT file_id, uri, size_bytes, expires_at FROM stored_files
WHERE {_DUE}
  AND (expires_at, file_id) > (CAST(:after_expires_at AS timestamptz), CAST(:after_file_id AS bigint)) {{shard}}
ORDER BY expires_at, file_id
LIMIT :batch
FOR UPDATE SKIP LOCKED
"""

_MARK_DELETED = """
UPDATE stored_files SET deleted_at = :now, delete_run_id = :run_id, last_error = NULL
WHERE file_id = ANY(CAST(:ids AS bigint[]))
"""

_MARK_FAILED = """
UPDATE stored_files f SET last_error = e.error
FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[])) AS e(file_id, error)
WHERE f.file_id = e.file_id
"""

_PREVIEW = f"""
SELECT count(*) AS files, coalesce(sum(size_bytes), 0) AS bytes FROM stored_files WHERE {_DUE} {{shard}}
"""


@dataclass(frozen=True)
class DueFile:
    file_id: int
    uri: str
    size_bytes: int
    expires_at: datetime


def preview(conn: sa.Connection, *, shard: Shard, now: datetime) -> tuple[int, int]:
    """(files, bytes) due now in this shard."""
    sql = _PREVIEW.format(shard=shard_predicate(SHARD_KEY, shard))
    row = conn.execute(sa.text(sql), {"now": now, **shard_params(shard)}).one()
    return int(row.files), int(row.bytes)


def pick_due(
    conn: sa.Connection, *, shard: Shard, now: datetime, after: tuple[datetime, int], batch: int
) -> list[DueFile]:
    """The next `batch` due files after the keyset position, row-locked (SKIP LOCKED: overlapping runs split them)."""
    rows = conn.execute(
        sa.text(_PICK.format(shard=shard_predicate(SHARD_KEY, shard))),
        {"now": now, "batch": batch, "after_expires_at": after[0], "after_file_id": after[1], **shard_params(shard)},
    ).all()
    return [DueFile(int(r.file_id), r.uri, int(r.size_bytes), r.expires_at) for r in rows]


def mark_deleted(conn: sa.Connection, *, file_ids: list[int], now: datetime, run_id: uuid.UUID) -> None:
    if file_ids:
        conn.execute(sa.text(_MARK_DELETED), {"ids": file_ids, "now": now, "run_id": run_id})


def mark_failed(conn: sa.Connection, *, errors: dict[int, str]) -> None:
    if errors:
        conn.execute(sa.text(_MARK_FAILED), {"ids": list(errors), "errors": list(errors.values())})
