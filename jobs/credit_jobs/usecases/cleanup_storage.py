"""cleanup-storage: delete every stored file whose retention has ended, exactly once in effect.

Reads top to bottom: walk the due files by keyset `(expires_at, file_id)`, a chunk of `batch_size` per transaction;
lock the chunk's rows (`FOR UPDATE SKIP LOCKED`, so overlapping runs split the work), delete the objects in
batches (`object_storage`), then mark the deleted rows `deleted_at` (cause: the run id) and record the error of
those that could not be deleted — they stay due and count as `failed`, so the run ends failed and a later run
retries them. Deleting is idempotent: if the process dies after deleting and before committing, the next run
deletes again (a missing object counts as deleted) and records it.
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError

from credit_jobs.adapters.ledger_sql import KEYSET_START, shard_params, shard_predicate
from credit_jobs.adapters.object_storage import Storage, storage_from_env
from credit_jobs.domain.run_model import RunContext, RunStats
from credit_jobs.usecases.db_errors import run_failed

log = structlog.get_logger()

_PICK = """
SELECT file_id, uri, size_bytes, expires_at FROM stored_files
WHERE deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= :now
  AND (expires_at, file_id) > (CAST(:after_expires_at AS timestamptz), CAST(:after_file_id AS bigint)) {shard}
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

_PREVIEW = """
SELECT count(*) AS files, coalesce(sum(size_bytes), 0) AS bytes FROM stored_files
WHERE deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= :now {shard}
"""


def cleanup_storage(engine: sa.Engine, ctx: RunContext, storage: Storage | None = None) -> RunStats:
    predicate = shard_predicate("user_id", ctx.shard)
    with engine.connect() as conn:
        due = conn.execute(sa.text(_PREVIEW.format(shard=predicate)), {"now": ctx.now, **shard_params(ctx.shard)}).one()
    if ctx.dry_run:
        return RunStats(
            processed=due.files,
            details={"would_delete_files": due.files, "would_free_bytes": int(due.bytes)},
        )
    storage = storage or storage_from_env()
    deleted = failed = freed = chunks = 0
    after = KEYSET_START
    while True:
        ctx.checkpoint()
        try:
            with engine.begin() as conn:
                rows = conn.execute(
                    sa.text(_PICK.format(shard=predicate)),
                    {
                        "now": ctx.now,
                        "batch": ctx.batch_size,
                        "after_expires_at": after[0],
                        "after_file_id": after[1],
                        **shard_params(ctx.shard),
                    },
                ).all()
                if not rows:
                    break
                after = (rows[-1].expires_at, rows[-1].file_id)
                results = storage.delete_many([r.uri for r in rows])
                ok = [r for r in rows if results.get(r.uri) is None]
                bad = [r for r in rows if results.get(r.uri) is not None]
                if ok:
                    conn.execute(
                        sa.text(_MARK_DELETED), {"ids": [r.file_id for r in ok], "now": ctx.now, "run_id": ctx.run_id}
                    )
                if bad:
                    conn.execute(
                        sa.text(_MARK_FAILED),
                        {"ids": [r.file_id for r in bad], "errors": [results[r.uri] for r in bad]},
                    )
                    log.error(
                        "cleanup.delete_failed", files=len(bad), sample_uri=bad[0].uri, reason=results[bad[0].uri]
                    )
        except DBAPIError as exc:
            raise run_failed(exc, f"after deleting {deleted} files") from exc
        deleted += len(ok)
        failed += len(bad)
        freed += sum(r.size_bytes for r in ok)
        chunks += 1
        ctx.progress(deleted + failed, due.files)
    return RunStats(
        processed=deleted,
        failed=failed,
        details={"files_deleted": deleted, "bytes_freed": freed, "chunks": chunks},
    )
