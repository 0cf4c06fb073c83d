"""The run audit table (`job_runs`): one row per run — running, then succeeded / failed / skipped.

Written by the run lifecycle; read by `credit-jobs runs list|show`, the runbooks and the tests. Taking over from a
dead holder happens here: once a run holds the advisory lock, any row still *running* for the same
(job, period key, shard) belongs to a holder whose session has ended, so it is closed as failed, naming the run that
took over — in the same transaction that inserts the new running row (the partial unique index allows one).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class RunIdentity:
    run_id: uuid.UUID
    job: str
    usecase: str
    period_key: str
    shard: int
    shards: int
    trigger: str
    dry_run: bool
    started_at: datetime
    requested_by: str | None = None  # the API principal that asked for the run, if any


def _identity_params(run: RunIdentity) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "job": run.job,
        "usecase": run.usecase,
        "period_key": run.period_key,
        "shard": run.shard,
        "shards": run.shards,
        "trigger": run.trigger,
        "dry_run": run.dry_run,
        "started_at": run.started_at,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "requested_by": run.requested_by,
    }


_INSERT = """
INSERT INTO job_runs (run_id, job, usecase, period_key, shard, shards, trigger, status, dry_run, started_at,
                      heartbeat_at, finished_at, error, host, pid, requested_by)
VALUES (:run_id, :job, :usecase, :period_key, :shard, :shards, :trigger, :status, :dry_run, :started_at,
        :heartbeat_at, :finished_at, :error, :host, :pid, :requested_by)
"""


def start_running(engine: sa.Engine, run: RunIdentity) -> list[uuid.UUID]:
    """Insert the running row; close rows left running by dead holders. Returns the run ids taken over.

    Only a guarded run (holding the advisory lock) may take over: a dry run takes no lock, so a running row it finds
    may belong to a live run, and it leaves such rows alone.
    """
    with engine.begin() as conn:
        taken_over = (
            []
            if run.dry_run
            else [
                row.run_id
                for row in conn.execute(
                    sa.text(
                        """
                    UPDATE job_runs SET status = 'failed', finished_at = now(),
                        error = 'abandoned: its database session ended while running (its counts are those of '
                                || 'its last committed chunk); taken over by run ' || CAST(:run_id AS text)
                    WHERE job = :job AND period_key = :period_key AND shard = :shard
                      AND status = 'running' AND NOT dry_run
                    RETURNING run_id
                    """
                    ),
                    {"run_id": str(run.run_id), "job": run.job, "period_key": run.period_key, "shard": run.shard},
                )
            ]
        )
        conn.execute(
            sa.text(_INSERT),
            {
                **_identity_params(run),
                "status": "running",
                "heartbeat_at": run.started_at,
                "finished_at": None,
                "error": None,
            },
        )
    return taken_over


def record_skipped(engine: sa.Engine, run: RunIdentity, reason: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(_INSERT),
            {
                **_identity_params(run),
                "status": "skipped",
                "heartbeat_at": None,
                "finished_at": run.started_at,
                "error": reason,
            },
        )


def live_holder(engine: sa.Engine, run: RunIdentity) -> uuid.UUID | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT run_id FROM job_runs WHERE job = :job AND period_key = :pk AND shard = :shard "
                "AND status = 'running' AND NOT dry_run"
            ),
            {"job": run.job, "pk": run.period_key, "shard": run.shard},
        ).scalar_one_or_none()


def running_of_period(engine: sa.Engine, period_key: str, usecase: str) -> list[uuid.UUID]:
    """The live (not dry) runs of a usecase for a period, under any job name and shard, oldest first."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT run_id FROM job_runs WHERE usecase = :u AND period_key = :pk AND status = 'running' "
                    "AND NOT dry_run ORDER BY started_at"
                ),
                {"u": usecase, "pk": period_key},
            ).scalars()
        )


def record_counts(engine: sa.Engine, run_id: uuid.UUID, stats: dict[str, Any]) -> None:
    """A running run's counts so far (after each committed chunk): what its row keeps if the run never finishes."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE job_runs SET stats = CAST(:stats AS jsonb) WHERE run_id = :run_id AND status = 'running'"),
            {"stats": json.dumps(stats, default=str), "run_id": run_id},
        )


def finish(engine: sa.Engine, run_id: uuid.UUID, *, status: str, stats: dict[str, Any], error: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE job_runs SET status = :status, finished_at = now(), stats = CAST(:stats AS jsonb), "
                "error = :error WHERE run_id = :run_id"
            ),
            {"status": status, "stats": json.dumps(stats, default=str), "error": error, "run_id": run_id},
        )


_COLUMNS = (
    "run_id, job, usecase, period_key, shard, shards, trigger, status, dry_run, started_at, heartbeat_at, "
    "finished_at, stats, error, host, pid, requested_by"
)


def list_runs(engine: sa.Engine, *, limit: int = 20, job: str | None = None) -> list[dict[str, Any]]:
    sql = f"SELECT {_COLUMNS} FROM job_runs"
    params: dict[str, Any] = {"limit": limit}
    if job:
        sql += " WHERE job = :job"
        params["job"] = job
    sql += " ORDER BY started_at DESC, run_id LIMIT :limit"
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.text(sql), params)]


def get_run(engine: sa.Engine, run_id: uuid.UUID) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT {_COLUMNS} FROM job_runs WHERE run_id = :run_id"), {"run_id": run_id}
        ).one_or_none()
    return dict(row._mapping) if row is not None else None


def runs_of_job_pods(engine: sa.Engine, *, job: str, pod_prefix: str, since: datetime) -> list[dict[str, Any]]:
    """The audit rows of the runs a Kubernetes Job started since `since`: a pod is named `<job name>-<suffix>` and
    records its name as `host` — how a run-now token (which names its Job) leads to its runs. One row per shard."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT {_COLUMNS} FROM job_runs WHERE job = :job AND started_at >= :since "
                "AND starts_with(host, :prefix) ORDER BY shard, started_at"
            ),
            {"job": job, "since": since, "prefix": pod_prefix + "-"},
        )
        return [dict(row._mapping) for row in rows]


def run_ids_with_prefix(engine: sa.Engine, hex_prefix: str, *, limit: int) -> list[uuid.UUID]:
    """Run ids starting with `hex_prefix` (lowercase hex digits, no hyphens) — for `runs show` prefixes. A range
    over the primary key (the prefix padded with 0s and with fs), so it is an index scan, not a text match."""
    low = uuid.UUID(hex_prefix.ljust(32, "0"))
    high = uuid.UUID(hex_prefix.ljust(32, "f"))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT run_id FROM job_runs WHERE run_id BETWEEN :low AND :high ORDER BY run_id LIMIT :limit"),
            {"low": low, "high": high, "limit": limit},
        ).scalars()
        return list(rows)
