"""cleanup-storage: delete every stored file whose retention has ended, exactly once in effect.

Reads top to bottom: walk the due files by keyset `(expires_at, file_id)` through the shared chunk loop
(`usecases.chunk_runner`), a chunk of `batch_size` per transaction; lock the chunk's rows (`FOR UPDATE SKIP LOCKED`,
so overlapping runs split the work), delete the objects in batches (`object_storage`), then mark the deleted rows
`deleted_at` (cause: the run id) and record the error of those that could not be deleted — they stay due and count
as `failed`, so the run ends failed and a later run retries them. Deleting is idempotent: if the process dies after
deleting and before committing, the next run deletes again (a missing object counts as deleted) and records it.
Sharded runs split files by owner, ownerless files by file id (`adapters.storage_sql`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import structlog

from credit_jobs.adapters import storage_sql
from credit_jobs.adapters.ledger_sql import KEYSET_START
from credit_jobs.adapters.object_storage import Storage, storage_for
from credit_jobs.domain.run_model import RunContext, RunStats
from credit_jobs.usecases.chunk_runner import ChunkedWork, run_chunks

log = structlog.get_logger()

Position = tuple[datetime, int]


@dataclass(frozen=True)
class CleanupChunk:
    last: Position | None
    picked: int
    deleted: int
    failed: int
    freed: int


class _Cleanup(ChunkedWork[Position, CleanupChunk]):
    name = "cleanup"
    start = KEYSET_START

    def __init__(self, ctx: RunContext, storage: Storage, due_files: int) -> None:
        self.ctx = ctx
        self.storage = storage
        self.due_files = due_files
        self.deleted = self.failed = self.freed = self.chunks = 0

    def run_chunk(self, conn: sa.Connection, after: Position, limit: int) -> CleanupChunk:
        ctx = self.ctx
        rows = storage_sql.pick_due(conn, shard=ctx.shard, now=ctx.now, after=after, batch=limit)
        if not rows:
            return CleanupChunk(None, 0, 0, 0, 0)
        results = self.storage.delete_many([r.uri for r in rows])
        ok = [r for r in rows if results.get(r.uri) is None]
        errors = {r.file_id: str(results[r.uri]) for r in rows if results.get(r.uri) is not None}
        storage_sql.mark_deleted(conn, file_ids=[r.file_id for r in ok], now=ctx.now, run_id=ctx.run_id)
        storage_sql.mark_failed(conn, errors=errors)
        if errors:
            first = next(r for r in rows if r.file_id in errors)
            log.error("cleanup.delete_failed", files=len(errors), sample_uri=first.uri, reason=errors[first.file_id])
        last = rows[-1]
        return CleanupChunk(
            (last.expires_at, last.file_id), len(rows), len(ok), len(errors), sum(r.size_bytes for r in ok)
        )

    def covered(self, result: CleanupChunk) -> tuple[Position | None, int]:
        return result.last, result.picked

    def first_item(self, conn: sa.Connection, after: Position) -> tuple[Position, dict[str, int]] | None:
        rows = storage_sql.pick_due(conn, shard=self.ctx.shard, now=self.ctx.now, after=after, batch=1)
        return ((rows[0].expires_at, rows[0].file_id), {"file_id": rows[0].file_id}) if rows else None

    def add(self, result: CleanupChunk) -> None:
        self.deleted += result.deleted
        self.failed += result.failed
        self.freed += result.freed
        self.chunks += 1

    def progress(self) -> tuple[int, int | None]:
        return self.deleted + self.failed, self.due_files

    def stats(self) -> RunStats:
        return RunStats(
            processed=self.deleted,
            failed=self.failed,
            details={"files_deleted": self.deleted, "bytes_freed": self.freed, "chunks": self.chunks},
        )


def cleanup_storage(engine: sa.Engine, ctx: RunContext, storage: Storage | None = None) -> RunStats:
    with engine.connect() as conn:
        files, size = storage_sql.preview(conn, shard=ctx.shard, now=ctx.now)
    if ctx.dry_run:
        return RunStats(details={"would_delete_files": files, "would_free_bytes": size})
    return run_chunks(engine, ctx, _Cleanup(ctx, storage or storage_for(None, None), files))
